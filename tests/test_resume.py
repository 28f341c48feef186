"""Checkpoints, resume and determinism (in-process: the job layer and the CLI through Typer's runner)."""
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_FFN, TINY_RNN, summary_of
from salrun.cli import app
from salrun.jobs import CHECKPOINT, run_job
from salrun.launch import compose

STEPS = ["train.steps=10", "train.log_every=2", "train.checkpoint_every=5"]
CASES = {"ffn": TINY_FFN + STEPS, "rnn": TINY_RNN + STEPS}


class HardKill(BaseException):
    """Stands in for kill -9: nothing in the job catches it, so no summary and no last checkpoint."""


def stop_at(step: int, error: type[BaseException]):
    def progress(done: int, latest: dict) -> None:
        if done == step:
            raise error
    return progress


def metrics(folder: Path) -> str:
    return (folder / "metrics.csv").read_text()


@pytest.fixture(scope="module", params=sorted(CASES))
def uninterrupted(request, tmp_path_factory):
    cfg = compose("train", CASES[request.param])
    folder = tmp_path_factory.mktemp(request.param) / "whole"
    summary = run_job("train", cfg, folder)
    assert summary["status"] == "ok"
    return cfg, folder, summary


def test_same_config_and_seed_give_identical_metrics(uninterrupted, tmp_path):
    cfg, folder, _ = uninterrupted
    again = run_job("train", cfg, tmp_path / "again")
    assert metrics(tmp_path / "again") == metrics(folder)
    assert again["final"] == summary_of(folder)["final"]
    other_seed = run_job("train", {**cfg, "seed": cfg["seed"] + 1}, tmp_path / "other")
    assert other_seed["final"] != again["final"]  # the comparison can fail


def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(uninterrupted, tmp_path):
    cfg, folder, whole = uninterrupted
    out = tmp_path / "run"
    stopped = run_job("train", cfg, out, stop_at(7, KeyboardInterrupt))
    assert stopped["status"] == "interrupted" and stopped["steps"] == 7
    assert torch.load(out / CHECKPOINT, weights_only=False)["step"] == 7  # written on interrupt
    assert metrics(out) != metrics(folder)
    resumed = run_job("train", cfg, out, resume=True)
    assert resumed["status"] == "ok" and resumed["resumed_from_step"] == 7 and resumed["steps"] == 10
    assert resumed["final"] == whole["final"]
    assert metrics(out) == metrics(folder)
    saved = [torch.load(f / "model.pt", weights_only=False)["state_dict"] for f in (out, folder)]
    assert all(torch.equal(saved[0][k], saved[1][k]) for k in saved[1])


def test_hard_kill_resumes_from_the_last_periodic_checkpoint(uninterrupted, tmp_path):
    cfg, folder, whole = uninterrupted
    out = tmp_path / "run"
    with pytest.raises(HardKill):
        run_job("train", cfg, out, stop_at(8, HardKill))
    assert not (out / "summary.json").exists()
    assert torch.load(out / CHECKPOINT, weights_only=False)["step"] == 5
    resumed = run_job("train", cfg, out, resume=True)
    assert resumed["resumed_from_step"] == 5 and resumed["final"] == whole["final"]
    assert metrics(out) == metrics(folder)  # rows logged after step 5 were replaced, not duplicated


def test_resume_without_a_checkpoint_starts_from_step_0(uninterrupted, tmp_path):
    cfg, folder, whole = uninterrupted
    out = tmp_path / "run"
    with pytest.raises(HardKill):
        run_job("train", {**cfg, "train": {**cfg["train"], "checkpoint_every": 0}}, out, stop_at(3, HardKill))
    (out / CHECKPOINT).unlink(missing_ok=True)
    (out / "config.yaml").write_text((folder / "config.yaml").read_text())
    assert run_job("train", cfg, out, resume=True)["final"] == whole["final"]


# The CLI: `salrun train --resume DIR`, and every way DIR can be wrong.

def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salrun: error: "), result.stderr
    for word in words:
        assert word in lines[0]


def test_cli_resume_continues_an_interrupted_run(uninterrupted, tmp_path):
    cfg, folder, whole = uninterrupted
    out = tmp_path / "run"
    run_job("train", cfg, out, stop_at(4, KeyboardInterrupt))
    result = invoke("train", "--resume", str(out), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert summary_of(out)["final"] == whole["final"] and metrics(out) == metrics(folder)
    assert_one_line_error(invoke("train", "--resume", str(out)), "already completed")


@pytest.fixture(scope="module")
def stopped_once(tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped") / "run"
    run_job("train", compose("train", CASES["ffn"]), out, stop_at(3, KeyboardInterrupt))
    return out


@pytest.fixture
def stopped_run(stopped_once, tmp_path):
    return Path(shutil.copytree(stopped_once, tmp_path / "stopped"))


def test_resume_rejects_overrides_and_out(stopped_run):
    before = metrics(stopped_run)
    assert_one_line_error(invoke("train", "--resume", str(stopped_run), "seed=3"), "no overrides")
    assert_one_line_error(invoke("train", "--resume", str(stopped_run), "--out", "x"), "--out")
    assert metrics(stopped_run) == before


@pytest.mark.parametrize("damage,word", [
    (lambda d: d / "missing", "no such folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no config.yaml"),
    (lambda d: (d / "file").write_text("x") or d / "file", "no such folder"),
])
def test_resume_of_a_missing_or_empty_folder_names_the_problem(tmp_path, damage, word):
    assert_one_line_error(invoke("train", "--resume", str(damage(tmp_path))), word)


@pytest.mark.parametrize("name,content,word", [
    ("config.yaml", "model: [unclosed\n", "unreadable"),
    ("config.yaml", "- just\n- a list\n", "not a salrun config"),
    ("config.yaml", "model: {name: mlp}\n", "not a salrun train config"),
    ("config.yaml", "", "not a salrun train config"),
    ("summary.json", "{\"status\": \"ok\"", "unreadable"),
    ("summary.json", "{\"status\": \"diverged\", \"diverged_step\": 2}", "diverged"),
    (CHECKPOINT, "not a torch file", "unreadable"),
    (CHECKPOINT, {"step": 3}, "not a salrun checkpoint"),
])
def test_resume_of_a_corrupt_folder_names_the_problem_and_keeps_it(stopped_run, name, content, word):
    path = stopped_run / name
    if isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_text(content)
    before = {p.name: p.read_bytes() for p in stopped_run.iterdir()}
    assert_one_line_error(invoke("train", "--resume", str(stopped_run)), word)
    assert {p.name: p.read_bytes() for p in stopped_run.iterdir()} == before


def test_resume_refuses_a_checkpoint_from_another_config(stopped_run):
    config = stopped_run / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    assert_one_line_error(invoke("train", "--resume", str(stopped_run)), "differs")
