"""A joblib sweep whose process dies (kill -9) leaves no worker running (issue 26): each worker
sees its parent gone, stops its job as SIGTERM would (summary `interrupted`, a checkpoint to
resume from) and exits; loky's resource trackers then end too."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_workers_stop_when_the_sweep_process_is_killed(tmp_path):
    out = tmp_path / "sweep"
    sweep = subprocess.Popen([sys.executable, "-m", "salrun", "sweep", "model.depth=3", "model.width=8",
                              "train.steps=1000000", "train.log_every=1000", "threads=1", "seed=0,1",
                              "--launcher", "joblib", "--out", str(out), "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not all((out / str(i) / "metrics.csv").is_file() for i in (0, 1)):
            assert sweep.poll() is None and time.monotonic() < deadline, "the jobs never started"
            time.sleep(0.5)
        workers = children(sweep.pid)
        assert len(workers) >= 2
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        deadline = time.monotonic() + 40
        while [w for w in workers if Path(f"/proc/{w}").exists()] and time.monotonic() < deadline:
            time.sleep(0.5)
        alive = [w for w in workers if Path(f"/proc/{w}").exists()]
        assert not alive, f"still running after the sweep died: {alive}"
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    for i in (0, 1):
        summary = json.loads((out / str(i) / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert (out / str(i) / "checkpoint.pt").is_file()
