"""Guarding the machine: the memory preflight refuses sizes that cannot fit, and a second
signal (or one that no step boundary answers within 10 s) always stops a job.

Every salrun process here runs under an address-space limit, so that a regression
fails the test instead of taking the machine down."""
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TINY_FFN, summary_of
from salrun.launch import compose, parallel_jobs
from salrun.memory import BASE_BYTES, check, estimate, total
from salrun.settings import ConfigError, job_settings

LIMIT = 4_000_000_000  # bytes of address space per salrun process


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def salrun(*args: str, script: str | None = None) -> subprocess.Popen:
    # The host's memory is under test: on a GPU machine the model would be checked against the GPU's.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "salrun", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL, preexec_fn=limited)


# -- the memory preflight --------------------------------------------------------------------------

HUGE = {  # the commands of issue 18, each of which once filled a 24 GB machine, and the key to lower
    "batch": (["train.batch_size=100000000"], "lower train.batch_size"),
    "lag": (["experiment=long_lag", "task.lag=1000000"], "lower task.test_size"),
    "depth": (["model.depth=100000", "model.width=512"], "lower model.width"),
    "width": (["model.width=100000000"], "lower model.width"),
}


@pytest.mark.parametrize("name", HUGE)
def test_sizes_that_cannot_fit_exit_2_at_once_with_no_folder(tmp_path, name):
    overrides, advice = HUGE[name]
    started = time.monotonic()
    process = salrun("train", *overrides, "train.steps=1", "--out", str(tmp_path / "run"))
    _, stderr = process.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert process.returncode == 2, stderr
    # Refused before anything is built: well under what building these sizes would take. The bound
    # leaves room for a loaded machine, where the process start alone took 3.4 s.
    assert elapsed < 10.0, f"{elapsed:.1f} s"
    line, = stderr.strip().splitlines()
    assert line.startswith("salrun: error: needs about ") and advice in line and "--no-memory-check" in line
    assert not (tmp_path / "run").exists()


def test_the_largest_term_names_its_keys():
    terms = estimate(job_settings("train", compose("train", ["train.batch_size=1000000"])))
    assert terms[0].name == "activations" and terms[0].lower == "train.batch_size"
    assert terms == sorted(terms, key=lambda t: -t.bytes)
    assert total(terms) == BASE_BYTES + sum(t.bytes for t in terms)
    doubled = estimate(job_settings("train", compose("train", ["train.batch_size=2000000"])))
    assert doubled[0].bytes == 2 * terms[0].bytes
    rnn = estimate(job_settings("train", compose("train", ["experiment=long_lag", "task.lag=100000"])))
    assert rnn[0].product == "task.lag × model.hidden × task.test_size"
    chaos = estimate(job_settings("lyapunov", compose("lyapunov", ["model.hidden=100000"])))
    assert chaos[0].lower == "model.hidden"


def test_the_override_runs_it_anyway(tmp_path):
    # The preflight no longer stops it; the allocation itself then fails, under the limit.
    process = salrun("train", *HUGE["width"][0], "train.steps=1", "--no-memory-check", "--out", str(tmp_path / "run"))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1 and "needs about" not in stderr, stderr
    assert summary_of(tmp_path / "run")["status"] == "failed"


# The machine as seen by a sweep in the tests: 8 GB available, shared by its jobs.
EIGHT_GB = textwrap.dedent("""
    import sys
    import salrun.memory
    from salrun.cli import main

    salrun.memory.available = lambda: [(8e9, "available", True)]
    sys.argv = ["salrun", *sys.argv[1:]]
    main()
""")


def test_a_sweep_counts_the_jobs_that_run_at_once(tmp_path, monkeypatch):
    assert parallel_jobs("joblib", {"n_jobs": 3}, 8) == 3
    assert parallel_jobs("joblib", {"n_jobs": 3}, 2) == 2
    assert parallel_jobs("submitit_local", {}, 5) == 5 and parallel_jobs("basic", {}, 5) == 1
    # about 2 GB a job (3 layers × 8 wide × 4M rows): one fits in 8 GB, four at once do not
    grid = [*TINY_FFN, "device=cpu", "train.batch_size=4000000", "seed=0,1,2,3"]
    monkeypatch.setattr("salrun.memory.available", lambda: [(8e9, "available", True)])
    jobs = [job_settings("train", compose("train", [*grid[:-1], f"seed={seed}"])) for seed in range(4)]
    assert 1.6e9 < total(estimate(jobs[0])) < 3.2e9
    check(jobs, workers=1)
    with pytest.raises(ConfigError, match="for 4 jobs at once"):
        check(jobs, workers=4)
    process = salrun("sweep", *grid, "--launcher", "joblib", "hydra.launcher.n_jobs=4", "--out",
                     str(tmp_path / "sweep"), script=EIGHT_GB)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "for 4 jobs at once" in stderr, stderr
    assert not (tmp_path / "sweep").exists()


def test_a_cluster_job_is_checked_against_its_own_memory(tmp_path):
    process = salrun("sweep", *TINY_FFN, "train.batch_size=100000000", "seed=0,1", "--launcher", "slurm_cpu",
                     "hydra.launcher.mem_gb=8", "--out", str(tmp_path / "sweep"))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "8.59 GB per job (hydra.launcher.mem_gb=8, GiB)" in stderr, stderr
    assert not (tmp_path / "sweep").exists()


# -- the two-signal rule ----------------------------------------------------------------------------

# salrun train whose step 3 (or whose set-up) never ends, and lets no KeyboardInterrupt
# through, as a long torch call holds off Python's signal handlers.
STUCK = textwrap.dedent("""
    import sys, time
    import salrun.engines as engines
    from salrun.cli import main

    def stuck(*args, **kwargs):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                time.sleep(end - time.monotonic())
            except KeyboardInterrupt:
                pass
        raise SystemExit("never stopped")

    where, *argv = sys.argv[1:]
    if where == "setup":
        engines.build_network = stuck
    else:
        real = engines.SingleEngine.step
        engines.SingleEngine.step = lambda self, step, *a: stuck() if step == 3 else real(self, step, *a)
    sys.argv = ["salrun", "train", *argv]
    main()
""")


def wait_for(path, process, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_sigint_stops_a_stuck_step_at_once(tmp_path):
    out = tmp_path / "run"
    process = salrun("step", *TINY_FFN, "train.log_every=1", "--out", str(out), "--quiet", script=STUCK)
    wait_for(out / "metrics.csv", process)
    time.sleep(1.0)  # step 3 has begun
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert process.poll() is None  # the first signal waits for the step to end
    process.send_signal(signal.SIGINT)
    second = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - second < 3.0, stderr
    assert stderr.count("stopping at the end of this step; Ctrl-C again to stop now") == 1
    summary = summary_of(out)
    assert summary["status"] == "interrupted" and summary["steps"] == 2
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_one_sigterm_in_a_stuck_setup_stops_within_about_10_s(tmp_path):
    out = tmp_path / "run"
    process = salrun("setup", *TINY_FFN, "--out", str(out), "--quiet", script=STUCK)
    wait_for(out / "config.yaml", process)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert process.returncode == 130, stderr
    assert 9.0 < elapsed < 12.0, f"{elapsed:.1f} s"  # it waited the grace period for a step boundary
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
