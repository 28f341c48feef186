"""Sweeps on a real SLURM cluster (scripts/slurm-local.sh brings one up on this machine).

The tests marked slurm are skipped where there is no cluster; SALRUN_REQUIRE_SLURM=1 (set
by .ci/run) turns the skip into a failure, so that CI cannot pass without running them.
Each test's jobs carry one name; at its end its sweeps are stopped and whatever is left
of its jobs is cancelled."""
import os
import shutil
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest

from conftest import summary_of

# One CPU and 1 GB per job: the presets ask for more than a laptop's one-node cluster has.
SMALL_JOBS = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
FFN = ["model.depth=3", "model.width=8", "threads=1"]


def _cluster_problem() -> str:
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH"
    probe = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        return f"sinfo failed: {probe.stderr.strip()}"
    if not any(state.startswith(("idle", "mixed", "allocated")) for state in probe.stdout.split()):
        return f"no node is up (sinfo: {' '.join(probe.stdout.split()) or 'no nodes'})"
    return ""


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem and os.environ.get("SALRUN_REQUIRE_SLURM") == "1":
        pytest.fail(f"SALRUN_REQUIRE_SLURM=1 but there is no usable SLURM cluster: {problem}")
    if problem:
        pytest.skip(f"no SLURM cluster ({problem}); scripts/slurm-local.sh up starts one")


class Sweeps:
    """Starts `salrun sweep --launcher slurm_cpu` processes whose jobs carry one name, so that
    the end of a test can stop the sweeps and cancel whatever is left of their jobs."""

    def __init__(self):
        self.name = f"salrun-test-{uuid.uuid4().hex[:8]}"
        self.processes: list[subprocess.Popen] = []

    def start(self, out, *overrides) -> subprocess.Popen:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        process = subprocess.Popen(
            [sys.executable, "-m", "salrun", "sweep", *overrides, "--launcher", "slurm_cpu", *SMALL_JOBS,
             f"hydra.launcher.name={self.name}", "--out", str(out), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def run(self, out, *overrides) -> tuple[int, str]:
        return finish(self.start(out, *overrides))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
        subprocess.run(["scancel", f"--name={self.name}"], capture_output=True, timeout=30)


@pytest.fixture
def sweeps(cluster):
    started = Sweeps()
    yield started
    started.stop()


def finish(process, timeout=180) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


@pytest.mark.slurm
def test_sweep_runs_as_slurm_jobs_and_says_once_that_accounting_is_off(sweeps, tmp_path):
    out = tmp_path / "sweep"
    code, stderr = sweeps.run(out, "seed=0,1", *FFN, "train.steps=6", "train.log_every=3")
    assert code == 0, stderr
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.status) == ["ok", "ok"] and sorted(table.seed) == [0, 1]
    scripts = list((out / ".submitit").glob("*/*_submission.sh"))
    assert scripts and "#SBATCH --array=0-1" in scripts[0].read_text()  # one array, submitted by sbatch
    assert "sacct error" not in stderr and stderr.count("accounting") <= 1, stderr


@pytest.mark.slurm
def test_preempted_job_is_requeued_and_ends_as_if_never_stopped(sweeps, tmp_path, run_cli):
    run = [*FFN, "train.steps=6000", "train.log_every=100", "train.checkpoint_every=200"]
    out = tmp_path / "sweep"
    started = sweeps.start(out, "seed=0", *run)
    checkpoint = out / "0" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():  # the job is running and has a checkpoint to come back to
        assert started.poll() is None, started.communicate()
        assert time.monotonic() < deadline, "the job did not write a checkpoint within 120 s"
        time.sleep(0.1)
    # submitit's preemption signal (sbatch --signal=USR2@...): it requeues the job and exits.
    subprocess.run(["scancel", "--signal=USR2", f"--name={sweeps.name}"], check=True, timeout=30)
    reference = run_cli("train", "seed=0", *run, "--out", str(tmp_path / "reference"), "--quiet")
    assert reference.returncode == 0, reference.stderr
    code, stderr = finish(started)
    assert code == 0, stderr
    summary = summary_of(out / "0")
    assert summary["status"] == "ok"
    assert 0 < summary["resumed_from_step"] < 6000
    logs = "".join(p.read_text() for p in (out / ".submitit").glob("*/*_log.err"))
    assert "this job is preempted" in logs
    assert (out / "0" / "config.yaml").read_bytes() == (tmp_path / "reference" / "config.yaml").read_bytes()
    assert (out / "0" / "metrics.csv").read_bytes() == (tmp_path / "reference" / "metrics.csv").read_bytes()


@pytest.mark.slurm
def test_failed_job_is_recorded_while_the_other_completes(sweeps, tmp_path):
    out = tmp_path / "sweep"
    (out / "1").mkdir(parents=True)  # job 1's folder already holds another run: the job refuses it
    (out / "1" / "config.yaml").write_text("seed: 99\n")
    code, stderr = sweeps.run(out, "seed=0,1", *FFN, "train.steps=6", "train.log_every=3")
    assert code == 1, stderr
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.status) == ["ok", "failed"] and table.output[1] == str(out / "1")
    assert summary_of(out / "0")["seed"] == 0
    assert (out / "1" / "config.yaml").read_text() == "seed: 99\n"  # and left it alone


@pytest.mark.parametrize("accounting", ["disabled", "on"])
def test_sacct_is_asked_once_and_polled_only_where_accounting_is_on(tmp_path, monkeypatch, capsys, accounting):
    """No cluster needed: a stand-in sacct answers as SLURM does with and without slurmdbd."""
    from submitit.slurm.slurm import SlurmJob

    from salrun.cluster import quiet_sacct

    fake = tmp_path / "sacct"
    fake.write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n" if accounting == "disabled"
                    else "#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    watcher = SlurmJob.watcher
    monkeypatch.setattr(watcher, "_registered", {"12_0"})
    monkeypatch.setattr(watcher, "_make_command", watcher._make_command)  # restored after the test
    quiet_sacct()
    command = watcher._make_command()
    assert (command is None) == (accounting == "disabled")
    assert capsys.readouterr().err.count("accounting is disabled") == (accounting == "disabled")
