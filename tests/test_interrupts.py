"""Real signals to a real `salrun train` process: SIGTERM (how SLURM preempts) and SIGINT (Ctrl-C)."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import TINY_FFN, summary_of
from salrun.jobs import run_job
from salrun.results import read_config

LONG = [*TINY_FFN, "train.steps=150", "train.log_every=10", "train.checkpoint_every=50"]


def start(out, *extra):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "salrun", "train", *LONG, *extra, "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)


def interrupt_once_running(process, out, signum):
    deadline = time.monotonic() + 120
    while not (out / "metrics.csv").exists():  # the job has started stepping
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_keeps_metrics_and_checkpoints(run_cli, tmp_path, signum):
    out = tmp_path / "run"
    returncode, stderr = interrupt_once_running(start(out), out, signum)
    assert returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = summary_of(out)
    assert summary["status"] == "interrupted" and 1 <= summary["steps"] < 150
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics.step.max() <= summary["steps"] and {"loss", "accuracy"} <= set(metrics.metric)
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == summary["steps"]  # written at the step boundary after the signal
    if signum != signal.SIGTERM:
        return
    # Resume through the CLI; the result equals a run that was never stopped.
    resumed = run_cli("train", "--resume", str(out), "--json")
    assert resumed.returncode == 0, resumed.stderr
    whole = run_job("train", read_config(out), tmp_path / "whole")
    assert summary_of(out)["final"] == whole["final"]
    assert (out / "metrics.csv").read_text() == (tmp_path / "whole" / "metrics.csv").read_text()
