"""The peers and long-lag tasks through the config layer, `salrun train` and `salrun sweep`."""
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import TINY_CHAOS, TINY_FFN, TINY_RNN, summary_of
from salrun.jobs import load_model, run_job
from salrun.launch import compose
from salrun.settings import ConfigError, job_settings

FFN = ["model.depth=3", "model.width=8"]
RNN = ["experiment=long_lag", "model.hidden=8"]


@pytest.mark.parametrize("overrides,words", [
    (["method=orthogonal", "method.gain=-1"], ["method.gain", "> 0"]),
    (["method=orthogonal", "method.gain=0"], ["method.gain"]),
    (["init=orthogonal", "init.gain=-0.5"], ["init.gain"]),
    (["method=critical", "method.sigma_b=-0.1"], ["method.sigma_b"]),
    (["init=critical", "init.sigma_b=50"], ["init.sigma_b"]),
    (["method=lsuv", "method.tol=0"], ["method.tol"]),
    (["method=lsuv", "method.max_iter=0"], ["method.max_iter"]),
    (["method=lsuv", "method.samples=1"], ["method.samples"]),
    (["init=lsuv", "init.samples=abc"], ["init.samples"]),
    (["method=flossing"], ["model=rnn", "model=mlp"]),
    (["method=orthogonal", "init=critical"], ["itself an initialisation"]),
    (["init=bogus"], ["bogus"]),
    (RNN + ["method=flossing", "method.k=9"], ["method.k", "model.hidden (8)"]),
    (RNN + ["method=flossing", "method.k=0"], ["method.k"]),
    (RNN + ["method=flossing", "method.mode=sometimes"], ["method.mode"]),
    (RNN + ["method=flossing", "method.every=0"], ["method.every"]),
    (RNN + ["method=flossing", "method.burst=0"], ["method.burst"]),
    (RNN + ["method=flossing", "method.floss_lr=-1"], ["method.floss_lr"]),
    (RNN + ["method=flossing", "method.pre_steps=0"], ["method.pre_steps", "mode=both"]),
    (RNN + ["method=flossing", "method.trajectories=0"], ["method.trajectories"]),
    (RNN + ["method=lsuv"], ["feed-forward", "model=mlp"]),
    (RNN + ["init=lsuv"], ["feed-forward"]),
    (RNN + ["task=adding", "task.lag=1"], ["task.lag", ">= 2", "adding"]),
    (RNN + ["task=copy_memory", "task.lag=10"], ["task.lag", ">= 11", "copy_memory"]),
    (RNN + ["task=delayed_xor", "task.lag=1"], ["task.lag", ">= 2"]),
    (FFN + ["task=adding"], ["model=rnn"]),
    (FFN + ["task=copy_memory"], ["model=rnn"]),
])
def test_bad_settings_are_config_errors(overrides, words):
    with pytest.raises(ConfigError) as err:
        job_settings("train", compose("train", overrides))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("command,overrides,word", [
    ("lyapunov", ["init=lsuv"], "train"),
    ("lyapunov", ["method=flossing"], "train"),
    ("lyapunov", ["method=lsuv"], "train"),
])
def test_lyapunov_refuses_what_needs_train(command, overrides, word):
    with pytest.raises(ConfigError, match=word):
        job_settings(command, compose(command, overrides))


def test_good_combinations_validate():
    for overrides in (["method=sal", "init=orthogonal"], ["method=sal", "init=critical"], ["method=sal", "init=lsuv"],
                      ["method=spectral", "init=orthogonal"], RNN + ["method=flossing", "method.k=8"],
                      RNN + ["method=flossing", "init=critical", "task=copy_memory", "task.lag=11"],
                      RNN + ["method=sal", "init=orthogonal", "task=delayed_xor", "task.lag=2"]):
        job_settings("train", compose("train", overrides))
    job_settings("lyapunov", compose("lyapunov", ["method=critical"]))
    job_settings("lyapunov", compose("lyapunov", ["method=sal", "init=orthogonal"]))


@pytest.mark.slow
def test_lyapunov_starts_sal_from_an_orthogonal_init(run_cli, tmp_path):
    # An orthogonal W_hh with gain 2 has every eigenvalue of modulus 2: the study starts there
    # (spectral radius measured before the first SAL update), and SAL then lowers it.
    def radius(*args):
        result = run_cli("lyapunov", *TINY_CHAOS, *args, "--out", str(tmp_path / str(len(args))), "-q")
        assert result.returncode == 0, result.stderr
        metrics = pd.read_csv(tmp_path / str(len(args)) / "metrics.csv")
        return metrics[metrics.metric == "spectral_radius"].sort_values("step").value.to_numpy()
    orthogonal, plain = radius("init=orthogonal", "init.gain=2.0"), radius()
    assert abs(orthogonal[0] - 2.0) < 1e-5 and abs(plain[0] - 2.0) > 0.05
    assert orthogonal[-1] < orthogonal[0]


def test_a_config_without_init_is_the_random_init():
    cfg = compose("train", FFN)
    del cfg["init"]  # a run folder written before the init group existed
    job_settings("train", cfg)


@pytest.mark.parametrize("args,word", [
    (["method=orthogonal", "method.gain=-1"], "method.gain"),
    (["method=flossing"], "model=rnn"),
    (["experiment=long_lag", "method=flossing", "method.k=40"], "method.k"),
    (["experiment=long_lag", "task=copy_memory", "task.lag=5"], "task.lag"),
])
def test_cli_exits_2_with_one_line(run_cli, tmp_path, args, word):
    result = run_cli("train", *args, "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert word in result.stderr
    assert not (tmp_path / "run").exists()


def test_settings_stay_free_of_torch():
    code = "import sys, salrun.settings; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _train(tmp_path, overrides, name="run"):
    cfg = compose("train", overrides + ["threads=1", "train.log_every=1"])
    summary = run_job("train", cfg, tmp_path / name)
    assert summary["status"] == "ok", summary.get("error")
    return summary, load_model(tmp_path / name / "model.pt")


def test_sal_starts_from_the_chosen_init(tmp_path):
    # Rates 0: the saved weights are the initial ones.
    frozen = ["optim.lr=0", "method.lr=0", "train.steps=1", "model.hidden=12", "task.lag=5", "task.test_size=10"]
    _, model = _train(tmp_path, ["experiment=long_lag", "method=sal", "init=orthogonal", "init.gain=1.3"] + frozen)
    w = model.weight_hh.detach()
    assert torch.allclose(w @ w.T, 1.69 * torch.eye(12), atol=1e-4)
    _, default = _train(tmp_path, ["experiment=long_lag", "method=sal"] + frozen, name="default")
    row_norms = default.weight_hh.detach().norm(dim=1)
    assert row_norms.mean() == pytest.approx(0.3, rel=0.15)  # the paper's small random weights, unchanged


def test_copy_memory_model_reloads_with_its_readout_steps(tmp_path):
    summary, model = _train(tmp_path, RNN + ["task=copy_memory", "task.lag=11", "task.test_size=10",
                                             "train.steps=2", "method=orthogonal"])
    assert model.read_steps == 10 and summary["metric"] == "accuracy" and summary["chance"] == 0.125


@pytest.mark.slow
def test_long_lag_tasks_sweep_with_flossing(run_cli, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "experiment=paper_long_lag", "method=flossing", "task=adding,copy_memory,delayed_xor",
                     "task.lag=12", "model.hidden=8", "task.test_size=20", "train.steps=4", "train.log_every=2",
                     "method.pre_steps=2", "method.every=2", "method.burst=1", "method.k=2", "threads=1",
                     "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "sweep.csv")
    assert set(table.status) == {"ok"} and set(table.method) == {"flossing"}
    assert sorted(o.split("task=")[1].split(",")[0].split(" ")[0] for o in table.overrides) == [
        "adding", "copy_memory", "delayed_xor"]


@pytest.mark.slow
def test_init_methods_sweep_in_depth(run_cli, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "experiment=paper_deep_ffn", "method=orthogonal,critical,lsuv", "model.depth=4",
                     "model.width=8", "train.steps=4", "train.log_every=2", "threads=1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "sweep.csv")
    assert sorted(table.method) == ["critical", "lsuv", "orthogonal"] and set(table.status) == {"ok"}


def test_a_preset_tunes_flossing_in_a_sweep_with_other_methods():
    # Keys of another method: `++` adds them where the chosen method lacks them, and they are ignored there.
    for method in ("sal", "flossing"):
        job_settings("train", compose("train", ["experiment=paper_long_lag", f"method={method}", "++method.k=3"]))


@pytest.mark.slow
def test_train_cli_runs_flossing_from_a_critical_init(run_cli, tmp_path):
    args = TINY_RNN + ["method=flossing", "init=critical", "method.pre_steps=2", "method.every=2", "method.burst=1",
                       "method.k=3", "task=delayed_xor"]
    result = run_cli("train", *args, "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    summary = summary_of(tmp_path / "run")
    assert summary["status"] == "ok" and summary["method"] == "flossing" and summary["init"] == "critical"


def _stop_at(step):
    def progress(done, latest):
        if done == step:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("overrides", [
    TINY_RNN + ["method=flossing", "method.pre_steps=2", "method.every=2", "method.burst=1", "method.k=2"],
    TINY_FFN + ["method=sal", "init=lsuv", "init.samples=32"],
])
def test_resumed_peer_run_matches_an_uninterrupted_one(tmp_path, overrides):
    cfg = compose("train", overrides + ["train.steps=8", "train.log_every=1", "train.checkpoint_every=3"])
    whole = run_job("train", cfg, tmp_path / "whole")
    stopped = run_job("train", cfg, tmp_path / "run", _stop_at(5))
    assert stopped["status"] == "interrupted"
    resumed = run_job("train", cfg, tmp_path / "run", resume=True)
    assert resumed["status"] == "ok" and resumed["resumed_from_step"] == 5
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
