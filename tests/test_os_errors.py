"""OS errors in one line (issue 26): a full disk (ENOSPC), a read-only folder (EROFS), a name
too long (ENAMETOOLONG) and too many open files (EMFILE) end a run with one line on stderr and
exit 1 (a sweep job: a failed row in sweep.csv), leave no temporary file, and lose nothing
already written. The full-disk and read-only cases mount a small tmpfs: root only, skipped
elsewhere."""
import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_FFN, salrun, summary_of

# A checkpoint (weights and Adam's two moments, about 3 MB) that cannot fit in 2 MB, written at step 3.
BIG_CHECKPOINT = ["model.depth=3", "model.width=300", "train.steps=6", "train.log_every=3",
                  "train.checkpoint_every=3", "threads=1"]


def error_line(result, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salrun: error: "), result.stderr
    return lines[0]


def no_temporary_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def mount_or_skip(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", *args], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount failed: {done.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount_or_skip("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={disk / 'fill'}", "bs=4k"], capture_output=True)


def test_a_full_disk_ends_the_run_in_one_line_and_keeps_what_was_written(small_disk):
    out = small_disk / "run"
    line = error_line(salrun("train", *BIG_CHECKPOINT, "--out", str(out), "-q"))
    assert "No space left on device" in line
    no_temporary_files(small_disk)
    summary = summary_of(out)  # small enough to be written after the checkpoint failed
    assert summary["status"] == "failed" and summary["steps"] == 3
    text = (out / "metrics.csv").read_text()
    assert text.endswith("\n") and {row["step"] for row in csv.DictReader(text.splitlines())} == {"1", "3"}


def test_a_disk_already_full_gives_one_line(small_disk):
    fill(small_disk)
    out = small_disk / "run"
    assert "No space left on device (ENOSPC)" in error_line(salrun("train", *TINY_FFN, "--out", str(out), "-q"))
    no_temporary_files(small_disk)
    result = salrun("sweep", *TINY_FFN, "seed=0,1", "--out", str(small_disk / "sweep"), "-q")
    assert "No space left on device (ENOSPC)" in error_line(result)


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweep_jobs_that_fill_the_disk_are_failed_rows(small_disk, launcher):
    out = small_disk / "sweep"
    result = salrun("sweep", *BIG_CHECKPOINT, "seed=0,1", "--launcher", launcher, "--out", str(out), "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [row["status"] for row in rows] == ["failed", "failed"]
    assert all("No space left on device" in row["error"] for row in rows)
    no_temporary_files(small_disk)


def test_resume_in_a_read_only_folder_gives_one_line(tmp_path):
    out = tmp_path / "run"
    assert salrun("train", *TINY_FFN, "--out", str(out), "-q").returncode == 0
    summary = summary_of(out)
    summary["status"] = "interrupted"  # a run to continue
    (out / "summary.json").write_text(__import__("json").dumps(summary))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    mount_or_skip("--bind", str(out), str(out))
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(out)], capture_output=True).returncode != 0:
            pytest.skip("a read-only bind mount is not possible here")
        line = error_line(salrun("train", "--resume", str(out)))
        assert "Read-only file system (EROFS)" in line
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        subprocess.run(["umount", "-l", str(out)], check=False)


def test_names_too_long_give_one_line(tmp_path):
    long = "x" * 300
    assert "File name too long (ENAMETOOLONG)" in error_line(salrun("train", "--resume", long, cwd=tmp_path))
    assert "File name too long" in error_line(salrun("report", long, cwd=tmp_path))
    assert "File name too long" in error_line(salrun("train", *TINY_FFN, "--out", f"{long}/run", cwd=tmp_path), 2)


def test_too_many_open_files_gives_one_line(tmp_path):
    """Every descriptor taken (the limit lowered after the imports): the run's first open fails with EMFILE."""
    script = textwrap.dedent(f"""
        import os, resource, sys
        import salrun.cli, salrun.jobs, salrun.launch, salrun.console  # torch, Hydra, rich: before the limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        os.close(held.pop())  # one left for the config files Hydra reads
        sys.argv = ["salrun", "train", *{TINY_FFN!r}, "--out", {str(tmp_path / 'run')!r}, "-q"]
        salrun.cli.main()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "Too many open files (EMFILE)" in error_line(result)
    no_temporary_files(tmp_path)
