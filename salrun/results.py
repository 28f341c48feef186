"""Run folders: writing them atomically, reading them back, sweep tables.

    DIR/config.yaml   the resolved config
    DIR/metrics.csv   long format: step, metric, value, layer
    DIR/summary.json  status, command, experiment, method, seed, steps, wall_seconds, final metrics, ...
    DIR/model.pt      final state_dict with the settings needed to rebuild the model
    DIR/checkpoint.pt train only: the latest consistent state, to resume from (see jobs.py)

Every file is written to a temporary name and renamed, so a killed run
leaves the last complete version, never a truncated one.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import socket
from pathlib import Path
from typing import Any, Iterable

import yaml

METRIC_COLUMNS = ("step", "metric", "value", "layer")
NOT_STARTED = "not started"  # a sweep job's status when the sweep stopped before the job began


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary name, then rename it over `path`. If the write fails (a full
    disk), the temporary file is removed and `path` keeps its last complete version."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def append_whole(path: Path, text: str, sync: bool = False) -> None:
    """Append `text` (whole rows) to `path`; if the write fails (a full disk), cut the file back
    to its length before, so that it never ends in half a row."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _jsonable(value: Any, where: str, nonfinite: list[str]) -> Any:
    """Strict JSON: a NaN or an infinity becomes null, and its key is added to `nonfinite`
    (a string such as "-inf" would break every reader that expects a number)."""
    if isinstance(value, float) and not math.isfinite(value):
        nonfinite.append(where)
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v, f"{where}.{k}" if where else str(k), nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]", nonfinite) for i, v in enumerate(value)]
    return value


def to_json(data: dict) -> str:
    """`data` as JSON; with a `nonfinite` list naming the keys (dotted: final.loss) whose value was NaN or ±inf."""
    nonfinite: list[str] = []
    plain = _jsonable({k: v for k, v in data.items() if k != "nonfinite"}, "", nonfinite)
    if nonfinite:
        plain["nonfinite"] = nonfinite
    return json.dumps(plain, indent=2, allow_nan=False) + "\n"


class RunWriter:
    """Writes the run folder's files. Metric rows are appended to metrics.csv (each flush
    writes only the rows logged since the last), so logging costs the same at step 20,000
    as at step 1; a checkpoint records `row_count`, and a resumed run keeps that many."""

    def __init__(self, directory: Path, keep_rows: int = 0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.row_count = 0                  # rows in metrics.csv and pending
        self._latest: dict[str, float] = {}
        self._history: dict[str, list[float]] = {}  # every value of each network-level metric
        # The first flush rewrites metrics.csv with these (dropping what a killed run logged after
        # its checkpoint); later flushes append.
        self.pending: list = [METRIC_COLUMNS, *(self._read_rows(keep_rows) if keep_rows else [])]
        self._appending = False
        for step, metric, value, layer in self.pending[1:]:
            self._count(metric, float(value), layer)

    @property
    def metrics_path(self) -> Path:
        return self.directory / "metrics.csv"

    def _read_rows(self, count: int) -> list[list[str]]:
        try:
            with open(self.metrics_path, newline="") as handle:
                rows = list(csv.reader(handle))[1:count + 1]
        except (OSError, csv.Error) as err:
            raise RunFolderError(f"{self.metrics_path} is unreadable: {err}") from None
        if len(rows) < count:
            raise RunFolderError(f"{self.metrics_path} holds {len(rows)} rows, fewer than its checkpoint's {count}")
        return rows

    def _count(self, metric: str, value: float, layer) -> None:
        self.row_count += 1
        if layer == "":
            self._latest[metric] = value
            self._history.setdefault(metric, []).append(value)

    def log(self, step: int, metric: str, value: float, layer: int | None = None) -> None:
        row = (step, metric, float(value), "" if layer is None else int(layer))
        self.pending.append(row)
        self._count(metric, row[2], row[3])

    def log_many(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.log(step, name, value)

    def latest(self) -> dict[str, float]:
        """The last value of each network-level metric (those without a layer)."""
        return dict(self._latest)

    def history(self, metric: str) -> list[float]:
        """Every logged value of a network-level metric, oldest first (a resumed run's included)."""
        return list(self._history.get(metric, []))

    def flush_metrics(self, sync: bool = False) -> None:
        """Append the rows logged since the last flush; `sync`: make them durable (before a checkpoint)."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self.pending)
        if not self._appending:
            write_atomic(self.metrics_path, buffer.getvalue())
            self._appending = True
        else:
            append_whole(self.metrics_path, buffer.getvalue(), sync)
        self.pending = []

    def write_overrides(self, overrides: list[str]) -> None:
        """DIR/overrides.yaml: the overrides as given, as Hydra records them for a sweep job."""
        write_atomic(self.directory / "overrides.yaml", yaml.safe_dump(list(overrides), sort_keys=False))

    def write_config(self, config: dict) -> None:
        write_atomic(self.directory / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def write_summary(self, summary: dict) -> None:
        write_atomic(self.directory / "summary.json", to_json(summary))

    def save_model(self, payload: dict) -> None:
        self._save_torch("model.pt", payload)

    def save_checkpoint(self, payload: dict) -> None:
        self._save_torch("checkpoint.pt", payload)

    def _save_torch(self, name: str, payload: dict) -> None:
        import torch  # the CLI reads sweep plans through this module before torch is needed

        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomic(self.directory / name, buffer.getvalue())


class RunFolderError(ValueError):
    """A run folder is missing, empty or unreadable."""


def os_error_line(err: OSError) -> str:
    """An OS error as one line: what failed, the file, and the errno's name (ENOSPC, EROFS, ...)."""
    name = errno.errorcode.get(err.errno or 0, "")
    what = err.strerror or str(err) or type(err).__name__
    where = f": {err.filename}" if err.filename else ""
    return f"{what}{f' ({name})' if name else ''}{where}"


class FolderBusy(RunFolderError):
    """Another salrun process is writing the folder."""


RUN_FILES = ("config.yaml", "summary.json", "metrics.csv", "checkpoint.pt", "model.pt")
SWEEP_FILES = ("sweep.yaml", "sweep.csv")
LOCK = ".salrun.lock"  # held (flock) by the process that writes the folder; gone when it ends


def folder_kind(directory: Path) -> str | None:
    """What a folder holds: "sweep" (sweep.yaml or sweep.csv), "run" (a run's files) or None."""
    directory = Path(directory)
    if any((directory / name).is_file() for name in SWEEP_FILES):
        return "sweep"
    if any((directory / name).is_file() for name in RUN_FILES):
        return "run"
    return None


def check_folder_kind(directory: Path, kind: str) -> None:
    """RunFolderError if `directory` holds the other kind: a run folder refuses a sweep, a
    sweep folder a run (their files would mix, and `salrun report` would read only one)."""
    found = folder_kind(directory)
    if found is not None and found != kind:
        raise RunFolderError(f"{directory} holds a {found}; a {kind} needs a folder of its own "
                             "(choose another --out)")


class FolderClaim:
    """This process's claim on a run or sweep folder: an exclusive flock on DIR/.salrun.lock.
    The kernel drops the lock when the process ends, even by kill -9, so a claim never goes
    stale; `release` removes the lock file."""

    def __init__(self, directory: Path, fd: int):
        self.directory, self.fd = Path(directory), fd

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):  # unlink while still locked, so no one locks a removed file
            (self.directory / LOCK).unlink()
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> FolderClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_folder(directory: Path, kind: str, what: str = "") -> FolderClaim:
    """Claim `directory` (made if missing) for one writer of `kind` ("run" or "sweep") before
    anything is written to it. FolderBusy (one line) if another process holds it; RunFolderError
    if it holds the other kind; OSError if the folder cannot be written (read-only, full).
    `what` says who holds the claim (e.g. "salrun train"), for the other writer's message."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise FolderBusy(f"{directory} is in use by another process ({holder or 'salrun'}); wait for it "
                             "to end or choose another folder") from None
        try:  # the holder before us may have removed the file between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    claim = FolderClaim(directory, fd)
    try:
        check_folder_kind(directory, kind)
        os.ftruncate(fd, 0)
        os.write(fd, f"{what or 'salrun ' + kind}, pid {os.getpid()} on {socket.gethostname()}\n".encode())
    except BaseException:
        claim.release()
        raise
    return claim


def read_summary(directory: Path) -> dict:
    path = Path(directory) / "summary.json"
    if not path.is_file():
        raise RunFolderError(f"{directory} has no summary.json (not a run folder, or the run never started)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path} is unreadable: {err}") from None


def read_config(directory: Path) -> dict:
    path = Path(directory) / "config.yaml"
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise RunFolderError(f"{path} is unreadable: {str(err).splitlines()[0]}") from None


def read_metrics(directory: Path):
    import pandas as pd  # only `salrun report` reads metrics back

    return pd.read_csv(Path(directory) / "metrics.csv")


def write_sweep_plan(directory: Path, command: str, overrides: list[str], launcher: str) -> None:
    """DIR/sweep.yaml: the grid as given, so that `salrun sweep --resume` reruns the same jobs
    (Hydra numbers job folders by their place in the grid)."""
    plan = {"command": command, "overrides": list(overrides), "launcher": launcher}
    write_atomic(Path(directory) / "sweep.yaml", yaml.safe_dump(plan, sort_keys=False))


def read_sweep_plan(directory: Path) -> dict:
    path = Path(directory) / "sweep.yaml"
    if not path.is_file():
        raise RunFolderError(f"{directory} has no sweep.yaml (not a sweep folder, or one made before --resume "
                             "existed)")
    try:
        plan = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RunFolderError(f"{path} is unreadable: {str(err).splitlines()[0]}") from None
    if not (isinstance(plan, dict) and isinstance(plan.get("command"), str) and isinstance(plan.get("launcher"), str)
            and isinstance(plan.get("overrides"), list) and all(isinstance(o, str) for o in plan["overrides"])):
        raise RunFolderError(f"{path} is not a salrun sweep plan")
    return plan


def sweep_rows(jobs: Iterable[tuple[list[str], Path]]) -> list[dict]:
    """One row per job: overrides, status, final metrics, output folder."""
    rows = []
    for overrides, directory in jobs:
        row: dict[str, Any] = {"overrides": " ".join(overrides)}
        try:
            summary = read_summary(directory)
        except RunFolderError as err:
            # A launcher makes a job's folder when the job starts: without one, the sweep was
            # stopped (Ctrl-C) before this job's turn, which is no failure of the job.
            summary = {"status": "failed", "error": str(err)} if Path(directory).is_dir() else {"status": NOT_STARTED}
        row["status"] = summary.get("status", "failed")
        for key in ("experiment", "method", "seed", "steps", "wall_seconds", "success", "error"):
            if key in summary:
                row[key] = summary[key]
        for name, value in (summary.get("final") or {}).items():
            row[name] = value
        row["output"] = str(directory)
        rows.append(row)
    return rows


def write_table(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(Path(path), buffer.getvalue())
