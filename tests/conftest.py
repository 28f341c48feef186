import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from salrun.settings import choose

# Small, CPU-sized versions of the presets.
TINY_FFN = ["model.depth=3", "model.width=8", "train.steps=6", "train.log_every=3", "threads=1"]
TINY_RNN = ["experiment=long_lag", "model.hidden=8", "task.lag=5", "task.test_size=50", "train.steps=6",
            "train.log_every=3", "threads=1"]
TINY_CHAOS = ["model.hidden=20", "lyapunov.sal_steps=6", "lyapunov.log_every=3", "lyapunov.transient=10",
              "lyapunov.measure_steps=20", "threads=1"]


def salrun(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "salrun", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture
def run_cli():
    return salrun


def make_task(name: str, **values):
    """Task `name` built from its registered settings, with `values` for some of them."""
    task = choose("task", {"name": name, **values})
    return task.entry.load()(task.settings)


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())
