"""The thread default (issue 26): `threads=0` runs a job on one torch thread, since the presets'
nets are too small for a second to pay and a busy core makes every-core torch many times slower
(benchmarks/threads.py measures it); `threads=N` still sets N."""
import pytest
import torch

from conftest import TINY_FFN
from salrun.jobs import run_job
from salrun.launch import compose
from salrun.runtime import DEFAULT_THREADS


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads, expected", [(0, DEFAULT_THREADS), (2, 2)])
def test_a_job_runs_on_the_threads_it_is_given(tmp_path, restore_threads, threads, expected):
    torch.set_num_threads(3)  # whatever ran before in this process
    cfg = compose("train", [o for o in TINY_FFN if not o.startswith("threads")] + [f"threads={threads}"])
    assert run_job("train", cfg, tmp_path / "run")["status"] == "ok"
    assert torch.get_num_threads() == expected


def test_the_default_is_one_thread():
    assert DEFAULT_THREADS == 1
    assert compose("train", [])["threads"] == 0
