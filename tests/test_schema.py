"""One schema (salrun.settings), one composer (Hydra's) and one registry per extension point."""
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_FFN
from salrun.jobs import run_job
from salrun.launch import compose, compose_grid, config_dir, sweep_jobs
from salrun.methods import Method
from salrun.results import RunWriter
from salrun.settings import REGISTRY, ConfigError, RootSettings, defaults, job_settings, register

REGISTERED = [(kind, name) for kind, entries in REGISTRY.items() for name in entries]


@pytest.mark.parametrize("kind,name", REGISTERED)
def test_every_choice_composes_to_its_schema_defaults(kind, name):
    cfg = compose("train", ["~experiment", f"{kind}={name}"])
    assert cfg[kind] == {"name": name, **defaults(REGISTRY[kind][name].settings)}
    assert {k: cfg[k] for k in defaults(RootSettings)} == defaults(RootSettings)


def test_yaml_holds_presets_only():
    conf = Path(config_dir())
    assert set(yaml.safe_load((conf / "config.yaml").read_text())) == {"defaults"}
    assert not any((conf / kind).exists() for kind in REGISTRY)  # the registry is the only list of choices


@pytest.mark.parametrize("overrides,words", [
    (["device=gpu"], ["device", "gpu"]),
    (["seed=-1"], ["seed", "[0, 2**63)"]),
    (["seed=18446744073709543697"], ["seed", "[0, 2**63)"]),  # found by tests/test_hostile.py: torch's seed overflowed
    (["threads=1.5"], ["threads", "integer"]),
    (["optim.lr=010"], ["optim.lr", "'010'"]),  # Hydra reads 010 as a string, not as 10
])
def test_root_keys_are_typed(overrides, words):
    with pytest.raises(ConfigError) as err:
        job_settings("train", compose("train", overrides))
    assert all(word in str(err.value) for word in words)


@pytest.mark.parametrize("overrides,key", [
    (["task=digits", "task.noise=0.1"], "task.noise"),
    (["task=digits", "task.train_size=100"], "task.train_size"),
    (["task=clusters", "++task.noise=0.1"], "task.noise"),
    (["experiment=long_lag", "task=adding", "++task.noise=0.1"], "task.noise"),
])
def test_a_key_the_task_ignores_is_an_error(overrides, key):
    with pytest.raises(ConfigError, match=key):
        job_settings("train", compose("train", overrides))


def test_device_gpu_exits_2_before_any_folder_is_made(run_cli, tmp_path):
    result = run_cli("train", "device=gpu", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["salrun: error: device must be one of auto, cpu, cuda, got 'gpu'"]
    assert not (tmp_path / "run").exists()


def test_a_sweep_with_a_bad_grid_point_exits_2_before_it_runs(run_cli, tmp_path):
    result = run_cli("sweep", *TINY_FFN, "optim.lr=010,0.1", "--out", str(tmp_path / "sweep"))
    assert result.returncode == 2 and "optim.lr" in result.stderr
    assert not (tmp_path / "sweep").exists()


GRID = ["experiment=paper_long_lag,long_lag", "method=sal,flossing,none", "++method.k=3", "task.lag=20,30",
        "seed=0,1", "optim.lr=1e-4", "+extra=1"]


def test_the_grid_composes_as_hydra_composes_each_job():
    jobs = [[o for o in job if not o.startswith("hydra")] for job in sweep_jobs(GRID)]
    assert len(jobs) == 24
    grid = compose_grid("train", jobs)
    assert grid == [compose("train", job) for job in jobs]
    assert {(c["experiment"], c["method"]["name"], c["task"]["lag"]) for c in grid} == {
        (e, m, lag) for e in ("paper_long_lag", "long_lag") for m in ("sal", "flossing", "none") for lag in (20, 30)}
    assert all(c["extra"] == 1 and c["optim"]["lr"] == 1e-4 for c in grid)


@pytest.mark.parametrize("overrides,words", [
    (["model.nope=1"], ["model.nope"]),
    (["method=nope"], ["method", "nope"]),
    (["~seed", "seed=1"], []),
])
def test_the_grid_refuses_what_hydra_refuses(overrides, words):
    with pytest.raises(ConfigError) as err:
        compose_grid("train", [["seed=0"], overrides])
    assert all(word in str(err.value) for word in words)


# -- the registry ------------------------------------------------------------------------------

@dataclass
class ShrinkSettings:
    factor: float = 0.5


class ShrinkMethod(Method):
    """A toy method: scales every weight by `factor` after each optimizer step."""

    def on_init(self, model, probe, sample=None):
        self.model, self.steps = model, 0

    @torch.no_grad()
    def after_step(self):
        self.steps += 1
        for p in self.model.parameters():
            p.mul_(self.settings.factor)


def test_a_method_added_through_the_registry_alone_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY, "method", dict(REGISTRY["method"]))
    register("method", "shrink", ShrinkSettings, ShrinkMethod)
    cfg = compose("train", [*TINY_FFN, "method=shrink", "method.factor=0.0", "train.steps=2"])
    assert cfg["method"] == {"name": "shrink", "factor": 0.0}
    summary = run_job("train", cfg, tmp_path / "run")
    assert summary["status"] == "ok" and summary["method"] == "shrink"
    weights = torch.load(tmp_path / "run" / "model.pt", weights_only=False)["state_dict"]
    assert all(float(w.abs().max()) == 0 for w in weights.values())  # the method acted
    with pytest.raises(ConfigError, match="method.factor"):
        job_settings("train", compose("train", ["method=shrink", "method.factor=abc"]))


# -- metrics.csv is appended to --------------------------------------------------------------------

def test_metrics_are_appended_not_rewritten(tmp_path):
    writer = RunWriter(tmp_path)
    writer.log_many(1, {"loss": 1.0, "accuracy": 0.5})
    writer.flush_metrics()
    path = tmp_path / "metrics.csv"
    path.write_text(path.read_text().replace("1,loss,1.0,", "1,loss,7.0,"))  # a flush must not rewrite it
    writer.log(2, "loss", 0.5)
    writer.flush_metrics()
    assert path.read_text() == "step,metric,value,layer\n1,loss,7.0,\n1,accuracy,0.5,\n2,loss,0.5,\n"
    assert writer.row_count == 3 and writer.latest() == {"loss": 0.5, "accuracy": 0.5}


def test_a_resumed_writer_keeps_the_rows_its_checkpoint_counted(tmp_path):
    writer = RunWriter(tmp_path)
    for step in range(4):
        writer.log(step, "loss", float(step))
        writer.log(step, "grad_norm", 1.0, 0)
    writer.flush_metrics()
    resumed = RunWriter(tmp_path, keep_rows=5)
    resumed.flush_metrics()
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 6  # the header and 5 rows
    assert resumed.row_count == 5 and resumed.latest() == {"loss": 2.0}
    with pytest.raises(Exception, match="fewer than its checkpoint"):
        RunWriter(tmp_path, keep_rows=9)


def test_a_checkpoint_that_holds_the_rows_themselves_still_resumes(tmp_path):
    """Checkpoints written before metric_rows held every row; a run requeued across the upgrade continues."""
    cfg = compose("train", [*TINY_FFN, "train.steps=6", "train.log_every=1", "train.checkpoint_every=2"])
    whole = run_job("train", cfg, tmp_path / "whole")

    def stop(done, latest):
        if done == 4:
            raise KeyboardInterrupt
    run_job("train", cfg, tmp_path / "run", stop)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["rows"] = [("old", "row")] * checkpoint.pop("metric_rows")
    torch.save(checkpoint, path)
    resumed = run_job("train", cfg, tmp_path / "run", resume=True)
    assert resumed["resumed_from_step"] == 4 and resumed["final"] == whole["final"]
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
