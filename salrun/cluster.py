"""SLURM clusters without accounting (no slurmdbd, as on a one-node cluster).

submitit asks `sacct` for its jobs' states, every few seconds at first and then every
minute or more. Without accounting each call fails and prints four lines (sacct's own
and submitit's warning three times over), for as long as the sweep runs. Ask once
before the sweep; if accounting is disabled, say so in one line and stop the calls:
submitit then learns that a job ended from the result file the job writes, as it
does first anyway; only a job killed outright (SIGKILL: out of memory, a node failure)
writes none, and the sweep waits for it.
"""
from __future__ import annotations

import subprocess
import sys


def quiet_sacct() -> None:
    try:
        probe = subprocess.run(["sacct", "--noheader", "--jobs", "0"], capture_output=True, text=True,
                               timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return  # no sacct here (submitit will fail to submit and say why), or it hangs: leave it
    if "accounting storage is disabled" not in probe.stderr.lower():
        return
    from submitit.slurm.slurm import SlurmJob

    SlurmJob.watcher._make_command = lambda: None  # no command: submitit's update() skips the call
    print("salrun: SLURM accounting is disabled (sacct fails), so job states come from the jobs' result files; "
          "a job killed outright (out of memory, a node failure) leaves the sweep waiting", file=sys.stderr)
