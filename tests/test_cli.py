"""The command line contract (README.md: run folders, exit codes, one-line errors)."""
import json

import pandas as pd
import pytest
import torch
import yaml

from conftest import TINY_CHAOS, TINY_FFN, TINY_RNN, summary_of

CONTRACT_FILES = {"config.yaml", "metrics.csv", "summary.json", "model.pt"}


def assert_usage_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("override,word", [
    ("foo=1", "foo"),
    ("model.nonsense=1", "model.nonsense"),
    ("model.depth=abc", "model.depth"),
    ("model.width=1.5", "model.width"),
    ("method=bogus", "bogus"),
    ("experiment=bogus", "bogus"),
    ("model.depth=0", "model.depth"),
    ("optim.lr=-0.1", "optim.lr"),
    ("method.lr=-1", "method.lr"),
    ("method.gate=sometimes", "method.gate"),
    ("model.depth=[1", "[1"),
])
def test_bad_train_config_exits_2_with_one_line(run_cli, tmp_path, override, word):
    result = run_cli("train", override, "--out", str(tmp_path / "run"))
    assert_usage_error(result, word)
    assert not (tmp_path / "run").exists()  # nothing ran


def test_zero_lag_is_rejected(run_cli, tmp_path):
    assert_usage_error(run_cli("train", "experiment=long_lag", "task.lag=0"), "task.lag")


def test_rho_must_be_positive(run_cli):
    assert_usage_error(run_cli("train", "method=spectral", "method.rho=-1"), "method.rho")


def test_task_and_model_must_match(run_cli):
    assert_usage_error(run_cli("train", "task=lag_sign"), "model=rnn")
    assert_usage_error(run_cli("lyapunov", "model=mlp"), "model=rnn")


def test_out_that_is_a_file_is_rejected(run_cli, tmp_path):
    target = tmp_path / "taken"
    target.write_text("precious")
    assert_usage_error(run_cli("train", "--out", str(target)), "is a file")
    assert target.read_text() == "precious"


def test_out_holding_a_run_is_not_overwritten(run_cli, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", *TINY_FFN, "--out", str(out), "--quiet").returncode == 0
    before = (out / "summary.json").read_text()
    assert_usage_error(run_cli("train", *TINY_FFN, "--out", str(out)), "already holds")
    assert (out / "summary.json").read_text() == before


def test_train_writes_the_run_folder(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *TINY_FFN, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert CONTRACT_FILES <= {p.name for p in out.iterdir()}
    printed = json.loads(result.stdout)
    assert printed == summary_of(out)
    assert printed["status"] == "ok" and printed["steps"] == 6 and printed["method"] == "sal"
    assert printed["experiment"] == "deep_ffn" and isinstance(printed["success"], bool)
    assert {"loss", "accuracy", "test_loss", "log_sensitivity"} <= set(printed["final"])
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == ["step", "metric", "value", "layer"]
    assert sorted(metrics.step.unique()) == [1, 3, 6]
    per_layer = metrics[metrics.metric == "grad_norm"]
    assert sorted(per_layer.layer.unique()) == [0, 1, 2, 3]  # 3 hidden layers and the readout
    assert len(metrics[metrics.metric == "sensitivity_rms"].layer.unique()) == 3
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["depth"] == 3 and config["method"]["name"] == "sal"


def test_saved_model_rebuilds(run_cli, tmp_path):
    from salrun.jobs import load_model

    out = tmp_path / "run"
    assert run_cli("train", *TINY_RNN, "--out", str(out), "--quiet").returncode == 0
    model = load_model(out / "model.pt")
    assert model.settings.hidden == 8
    assert model(torch.zeros(4, 2, 1)).shape == (2, 1)


def test_rnn_training_logs_per_time_step(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *TINY_RNN, "method=none", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(out / "metrics.csv")
    steps_logged = metrics[(metrics.metric == "grad_norm") & (metrics.step == 6)].layer
    assert sorted(steps_logged) == list(range(6))  # lag 5: six time steps
    assert json.loads(result.stdout)["method"] == "none"


def test_spectral_method_sets_the_radius(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("lyapunov", *TINY_CHAOS, "method=spectral", "method.rho=0.7", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(out / "metrics.csv")
    radius = metrics[metrics.metric == "spectral_radius"].value
    assert radius.sub(0.7).abs().max() < 1e-4  # set before learning, nothing changes it afterwards


def test_lyapunov_logs_mle_and_log_sensitivity(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("lyapunov", *TINY_CHAOS, "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["experiment"] == "chaos" and summary["steps"] == 6
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics[metrics.metric == "mle"].step) == {0, 3, 6}
    assert set(metrics[metrics.metric == "log_sensitivity"].step) == {0, 3, 6}


def test_divergence_exits_3_and_keeps_metrics(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", *TINY_FFN, "optim.name=sgd", "optim.lr=1e38", "train.steps=50",
                     "train.log_every=1", "--out", str(out), "--quiet")
    assert result.returncode == 3, result.stderr
    summary = summary_of(out)
    assert summary["status"] == "diverged" and summary["diverged_step"] >= 1
    assert len(pd.read_csv(out / "metrics.csv")) > 0


def test_help_lists_commands(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "lyapunov", "sweep"):
        assert command in result.stdout
