"""The bench_* presets (issue 14): the field's budgets, a cited source, and a tiny run of each on
every path it takes (single run, ensemble, flossing)."""
import re
from pathlib import Path

import pytest

from salrun import jobs
from salrun.launch import compose
from salrun.settings import config_dir, job_settings, presets

BENCH = sorted(p.stem for p in Path(config_dir(), "experiment").glob("bench_*.yaml"))
TINY = ["train.steps=3", "train.log_every=1", "model.hidden=4", "task.test_size=10", "threads=1", "device=cpu",
        "method.pre_steps=1", "method.every=2", "method.burst=1"]


def test_the_benchmark_has_its_seven_presets():
    assert BENCH == ["bench_adding_100", "bench_adding_200", "bench_adding_400", "bench_copy_100", "bench_copy_200",
                     "bench_seq_digits", "bench_xor"]


@pytest.mark.parametrize("preset", BENCH)
def test_preset_runs_at_the_fields_budget_and_cites_its_source(preset):
    s = job_settings("train", compose("train", [f"experiment={preset}"]))
    assert s.root.train.steps >= 10_000 and s.root.train.batch_size == 20 and s.root.optim.clip == 1.0
    assert s.model.name == "rnn"
    description = presets()[preset]
    assert re.search(r"\b20\d\d\b", description) and ("Arjovsky" in description or "Engelken" in description)


@pytest.mark.parametrize("preset", BENCH)
@pytest.mark.parametrize("method", ["sal", "flossing"])
def test_preset_trains_at_tiny_size(preset, method, tmp_path):
    cfg = compose("train", [f"experiment={preset}", f"method={method}", *TINY])
    summary = jobs.run_job("train", cfg, tmp_path / "run")
    assert summary["status"] == "ok", summary.get("error")
    assert summary["steps"] == 3 and "judged" in summary


@pytest.mark.parametrize("preset", ["bench_seq_digits", "bench_xor", "bench_copy_100"])
def test_preset_trains_as_an_ensemble(preset, tmp_path):
    cfgs = [compose("train", [f"experiment={preset}", f"method={m}", f"seed={i}", *TINY])
            for i, m in enumerate(["sal", "none", "orthogonal"])]
    summaries = jobs.run_jobs("train", cfgs, [tmp_path / str(i) for i in range(3)])
    assert [s["status"] for s in summaries] == ["ok"] * 3
    assert all(s["steps"] == 3 and "judged" in s for s in summaries)
