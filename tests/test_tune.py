"""salrun tune: an Optuna study in the tune folder that a rerun continues and a killed tune resumes."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TINY_FFN, summary_of
from test_cli import assert_usage_error

optuna = pytest.importorskip("optuna")

SPACE = ["method.lr=tag(log, interval(0.001, 0.1))", "method.target=choice(1.0, 1.05)"]


def trial_rows(folder):
    with open(folder / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_four_trial_tune_resumes_to_six(run_cli, tmp_path):
    first = run_cli("tune", *TINY_FFN, *SPACE, "--trials", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (out,) = (tmp_path / "outputs" / "tune").iterdir()  # the default folder: outputs/tune/STUDY
    assert [r["state"] for r in trial_rows(out)] == ["complete"] * 4
    started = {n: summary_of(out / "trials" / str(n) / "seed_100")["started"] for n in range(4)}
    again = run_cli("tune", *TINY_FFN, *SPACE, "--trials", "6", cwd=tmp_path)  # the same command, more trials
    assert again.returncode == 0, again.stderr
    assert "trial 0 " not in again.stderr and "trial 4 " in again.stderr and "trial 5 " in again.stderr
    rows = trial_rows(out)  # from trial 5 on, the median pruner may stop one
    assert [r["number"] for r in rows] == [str(n) for n in range(6)]
    assert {r["state"] for r in rows} <= {"complete", "pruned"}
    assert {n: summary_of(out / "trials" / str(n) / "seed_100")["started"] for n in range(4)} == started
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 6
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == pytest.approx(study.best_value) and best["seeds"] == [100, 101]
    # the objective is the mean over the tuning seeds of each run's judged metric
    trial = best["number"]
    judged = [summary_of(out / "trials" / str(trial) / f"seed_{s}")["judged"] for s in (100, 101)]
    assert best["value"] == pytest.approx(sum(judged) / 2)
    assert f"seed=0,1,2,3,4,5,6,7,8,9" in again.stdout  # how to report the choice, on other seeds


@pytest.mark.slow
def test_a_killed_tune_resumes(tmp_path):
    out = tmp_path / "tune"
    args = [sys.executable, "-m", "salrun", "tune", "model.depth=3", "model.width=8", "threads=1",
            "train.steps=1500", "train.log_every=100", "train.checkpoint_every=50", "method.lr=interval(0.005, 0.02)",
            "--trials", "1", "--out", str(out), "--no-prune", "-q"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    checkpoint = out / "trials" / "0" / "seed_101" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()
    os.killpg(process.pid, signal.SIGKILL)  # no handler runs: the trial stays "running" in the study
    process.wait()
    study = optuna.load_study(study_name=json.loads((out / "tune.json").read_text())["study"],
                              storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["RUNNING"]
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [r["state"] for r in trial_rows(out)] == ["complete"]  # the same trial, not a new one
    for seed in (100, 101):
        summary = summary_of(out / "trials" / "0" / f"seed_{seed}")
        assert summary["status"] == "ok" and summary["steps"] == 1500
        assert summary["resumed_from_step"] >= 50  # from its checkpoint, not from step 0


def test_a_hopeless_trial_is_pruned(tmp_path):
    from salrun import tune

    plan = tune.plan_of([*TINY_FFN], {"method.lr": {"choice": [0.01]}}, [100, 101], "accuracy", "maximize",
                        "pruning", f"sqlite:///{tmp_path / 'study.db'}", 2, "basic", True, 6)
    plan.update(prune_after=1, warmup=0)
    session = tune.Tune.create(tmp_path, plan)
    dist = tune.distributions(plan["space"])
    perfect = optuna.trial.create_trial(params={"method.lr": 0.01}, distributions=dist, value=1.0,
                                        intermediate_values={1: 1.0, 3: 1.0, 6: 1.0})
    session.study().add_trial(perfect)
    (number,) = session.ask(1)
    result = tune.run_trial(tmp_path, number)
    assert result["state"] == "pruned"
    summary = summary_of(tmp_path / "trials" / str(number) / "seed_100")
    assert summary["status"] == "pruned" and summary["steps"] == 1 and "pruned by salrun tune" in summary["error"]
    assert session.study().trials[number].state == optuna.trial.TrialState.PRUNED


def test_tune_refuses_bad_input(run_cli, tmp_path):
    assert_usage_error(run_cli("tune", *TINY_FFN, *SPACE, "--trials", "2", "--seeds", "1,100", cwd=tmp_path),
                       "--seeds 1", "reported")
    assert_usage_error(run_cli("tune", *TINY_FFN, "--trials", "2", cwd=tmp_path), "nothing to search")
    assert_usage_error(run_cli("tune", *TINY_FFN, *SPACE, "seed=3", "--trials", "2", cwd=tmp_path), "--seeds")
    assert_usage_error(run_cli("tune", *TINY_FFN, "method.lr=interval(-1, 1)", "--trials", "2", cwd=tmp_path),
                       "method.lr")
    assert_usage_error(run_cli("tune", *TINY_FFN, *SPACE, cwd=tmp_path), "--trials")
    assert_usage_error(run_cli("tune", *TINY_FFN, *SPACE, "--trials", "2", "--metric", "grad", cwd=tmp_path),
                       "--direction")
    assert_usage_error(run_cli("tune", *TINY_FFN, "method.lr=glob(*)", "--trials", "2", cwd=tmp_path), "glob")
    assert not (tmp_path / "outputs").exists()


def test_tune_help_has_an_example(run_cli):
    result = run_cli("tune", "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout and "salrun tune model.depth=10" in result.stdout


def test_on_a_cluster_the_study_is_a_journal_file(tmp_path):
    """SQLite's locks are not safe on a network file system: SLURM launchers get Optuna's JournalStorage."""
    from salrun import tune

    url = tune.storage_url(None, tmp_path, "slurm_cpu")
    assert url == f"journal:{tmp_path / 'study.journal'}"
    assert tune.storage_url(None, tmp_path, "joblib") == f"sqlite:///{tmp_path / 'study.db'}"
    plan = tune.plan_of([*TINY_FFN], {"method.lr": {"interval": [0.005, 0.02], "log": True, "int": False}},
                        [100], "accuracy", "maximize", "journal", url, 1, "slurm_cpu", False, 6)
    session = tune.Tune.create(tmp_path, plan)
    (number,) = session.ask(1)
    assert tune.run_trial(tmp_path, number)["state"] == "complete"
    assert (tmp_path / "study.journal").is_file()
    assert tune.Tune(tmp_path).study().best_trial.number == number


def test_without_optuna_one_line_names_the_extra(monkeypatch):
    from salrun import tune
    from salrun.settings import ConfigError

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(ConfigError, match=r"^salrun tune needs optuna: pip install 'salrun\[tune\]'$"):
        tune.require_optuna()


def test_a_folder_holds_one_tune(tmp_path):
    from salrun import tune
    from salrun.settings import ConfigError

    def plan(lr_high):
        return tune.plan_of([*TINY_FFN], {"method.lr": {"interval": [0.005, lr_high], "log": True, "int": False}},
                            [100], "accuracy", "maximize", "one", f"sqlite:///{tmp_path / 'study.db'}", 1, "basic",
                            True, 6)

    tune.Tune.create(tmp_path, plan(0.02))
    tune.Tune.create(tmp_path, dict(plan(0.02), trials=3))  # the same tune, more trials
    assert json.loads((tmp_path / "tune.json").read_text())["trials"] == 3
    with pytest.raises(ConfigError, match="holds another tune"):
        tune.Tune.create(tmp_path, plan(0.05))
