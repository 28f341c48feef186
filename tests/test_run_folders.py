"""Run and sweep folders are claimed by one writer at a time and keep their kind (issue 26):
a second writer fails fast with one line and exit 2 before writing anything; a run folder
refuses a sweep and a sweep folder a run; a grid point given twice is refused."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_FFN, salrun
from salrun.results import LOCK, FolderBusy, RunFolderError, claim_folder


def listing(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salrun: error: "), result.stderr
    return lines[0]


def test_a_claim_is_exclusive_and_released(tmp_path):
    folder = tmp_path / "run"
    with claim_folder(folder, "run", "salrun train"):
        assert (folder / LOCK).is_file()
        with pytest.raises(FolderBusy, match="in use by another process \\(salrun train, pid"):
            claim_folder(folder, "run")
    assert not (folder / LOCK).exists()
    claim_folder(folder, "run").release()  # free again


def test_a_killed_writer_leaves_no_claim(tmp_path):
    """The lock is the kernel's (flock): kill -9 of the holder frees the folder at once."""
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from salrun.results import claim_folder; "
                               f"c = claim_folder({str(folder)!r}, 'run'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusy):
        claim_folder(folder, "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    claim_folder(folder, "run").release()


def test_a_second_run_into_a_folder_in_use_exits_2_and_writes_nothing(tmp_path):
    """Two `salrun train --out DIR` at once: the second fails before writing anything."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 1\n")  # what the first writer has written so far
    before = listing(folder)
    with claim_folder(folder, "run", "salrun train"):
        result = salrun("train", *TINY_FFN, "method=none", "seed=2", "--out", str(folder), "-q")
        after = listing(folder)
    assert result.returncode == 2
    assert "in use by another process (salrun train, pid" in one_error_line(result)
    assert "Traceback" not in result.stderr
    assert {k: v for k, v in after.items() if k != LOCK} == before  # nothing written, nothing removed


def test_the_library_path_claims_too(tmp_path):
    from salrun.jobs import run_job
    from salrun.launch import compose

    folder = tmp_path / "run"
    cfg = compose("train", TINY_FFN)
    with claim_folder(folder, "run"):
        with pytest.raises(FolderBusy):
            run_job("train", cfg, folder)
        assert [p.name for p in folder.iterdir()] == [LOCK]
    summary = run_job("train", cfg, folder)
    assert summary["status"] == "ok" and not (folder / LOCK).exists()


def test_a_run_refuses_a_sweep_folder(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.yaml").write_text("command: train\noverrides: []\nlauncher: basic\n")
    before = listing(folder)
    result = salrun("train", *TINY_FFN, "--out", str(folder), "-q")
    assert result.returncode == 2
    assert "holds a sweep; a run needs a folder of its own" in one_error_line(result)
    assert listing(folder) == before


def test_a_sweep_refuses_a_run_folder(tmp_path):
    folder = tmp_path / "run"
    assert salrun("train", *TINY_FFN, "--out", str(folder), "-q").returncode == 0
    before = listing(folder)
    result = salrun("sweep", *TINY_FFN, "seed=0,1", "--out", str(folder), "-q")
    assert result.returncode == 2
    assert "holds a run; a sweep needs a folder of its own" in one_error_line(result)
    assert listing(folder) == before
    # an interrupted run (no summary yet) is a run folder too
    (folder / "summary.json").unlink()
    assert salrun("sweep", *TINY_FFN, "seed=0,1", "--out", str(folder), "-q").returncode == 2


def test_the_claim_checks_the_kind_under_the_lock(tmp_path):
    (tmp_path / "sweep.csv").write_text("overrides,status\n")
    with pytest.raises(RunFolderError, match="holds a sweep"):
        claim_folder(tmp_path, "run")
    assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize("grid", [["seed=0,0"], ["experiment=deep_ffn,deep_ffn"]])
def test_a_grid_point_given_twice_is_refused(tmp_path, grid):
    out = tmp_path / "sweep"
    result = salrun("sweep", *TINY_FFN, *grid, "--out", str(out), "-q")
    assert result.returncode == 2
    assert "jobs 0 and 1 of the grid are the same run" in one_error_line(result)
    assert not out.exists()


def test_a_sweep_in_use_refuses_a_second_sweep(tmp_path):
    out = tmp_path / "sweep"
    with claim_folder(out, "sweep", "salrun sweep"):
        result = salrun("sweep", *TINY_FFN, "seed=0,1", "--out", str(out), "-q")
    assert result.returncode == 2
    assert "in use by another process (salrun sweep" in one_error_line(result)
    assert sorted(p.name for p in out.iterdir()) == []


def test_lock_file_is_gone_after_runs_and_sweeps(tmp_path):
    out = tmp_path / "sweep"
    assert salrun("sweep", *TINY_FFN, "seed=0,1", "--out", str(out), "-q").returncode == 0
    assert not list(out.rglob(LOCK))
    assert os.listdir(out / "0")
