"""Run and sweep folders read back into the two pandas frames that `salrun report` and
salrun.figures share:

  runs     one row per run: run, folder, group, method, the settings that differ between the
           runs (typed: depth 5 is the number 5), command, model, task, seed, status, success
           (bool), metric (the task's test metric; `mle` for the chaos study), final, chance,
           wall_seconds, log_sensitivity, max_gap; and how the test metric went on the way: judged
           (the mean of the last evaluations that success was judged on), best (the best
           evaluation) and reached (whether any evaluation met the task's threshold)
  metrics  metrics.csv of every run, long format, with run and group columns added

Several folders (run folders and sweep folders, in any mix) merge into one collection. A run
records file (`salrun report --format runs`: the runs frame as CSV, one row a run, no metrics) reads
back as the runs it holds, so that tables can be made again from small committed files (issue 31).
"""
from __future__ import annotations

import csv
import glob
import json
import os
from pathlib import Path

import pandas as pd

from salrun.results import (NOT_STARTED, RunFolderError, read_config, read_metrics, read_sweep_plan,
                            read_summary)
from salrun.settings import ConfigError

CHAOS_BELOW = -0.1  # the chaos agreement is judged while the MLE is below this (issue 3)
# Overrides that never make a group: seeds are what a group is taken over, the method has its own
# column, and the thread count does not change what is computed.
NOT_SETTINGS = {"seed", "method", "threads"}
PAIRABLE = ("experiment", "task", "model")  # what a run's summary names besides the settings that differ
# A run record's columns besides the settings (salrun report --format runs; every other column is a setting).
RECORD_COLUMNS = ["method", "command", "experiment", "model", "task", "seed", "status", "success", "metric", "final",
                  "chance", "wall_seconds", "log_sensitivity", "judged", "higher_is_better", "best", "reached",
                  "max_gap", "commit", "made_by"]


class NothingToReport(RunFolderError):
    """PATH is no run folder and no sweep folder (or a sweep with no finished job yet)."""


class DamagedRun(RunFolderError):
    """A run whose metrics.csv is cut (mid-line) or stops short of the steps its summary.json counts."""


class Collection:
    """The runs of one or more run and sweep folders."""
    def __init__(self, paths: list[Path], kinds: list[str], runs, metrics, keys: list[str], pending: int,
                 skipped: list[Path], damaged: list[str] | None = None):
        self.paths, self.kinds, self.runs, self.metrics, self.keys = paths, kinds, runs, metrics, keys
        self.pending = pending  # jobs of a sweep still running that have written no summary yet
        self.skipped = skipped  # folders among several PATHs that hold no runs
        self.damaged = damaged or []  # why each damaged run was left out (DamagedRun's messages)

    def describe(self) -> str:
        if len(self.paths) == 1:
            return f"{self.kinds[0]} {self.paths[0]}"
        counts = {kind: self.kinds.count(kind) for kind in dict.fromkeys(self.kinds)}
        return f"{len(self.paths)} folders ({', '.join(f'{n} {kind}(s)' for kind, n in counts.items())})"


def expand(paths: list[Path]) -> list[Path]:
    """PATHs as given; one that does not exist but holds * ? or [ is a glob (quoted, so the shell
    left it), expanded here in sorted order."""
    found = []
    for path in map(str, paths):
        if not Path(path).exists() and any(c in path for c in "*?["):
            matches = sorted(glob.glob(path))
            if not matches:
                raise RunFolderError(f"{path} matches nothing")
            found += map(Path, matches)
        else:
            found.append(Path(path))
    return list(dict.fromkeys(found))


def _typed(text: str):
    """An override's value as Hydra types it: int, float, bool, null, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false", "null"):
        return None if lowered == "null" else lowered == "true"
    return text.strip("'\"")


def _parse_overrides(overrides) -> dict[str, str]:
    tokens = overrides if isinstance(overrides, list) else str(overrides if isinstance(overrides, str) else "").split()
    pairs = {}
    for token in map(str, tokens):
        key, sep, value = token.partition("=")
        if sep and not key.lstrip("+~").startswith("hydra"):
            pairs[key.lstrip("+~")] = value
    return pairs


def _config_value(config: dict, key: str):
    """A setting in a resolved config: `model.depth` → 5; a group (`task`) → its choice's name."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, dict):
        return value.get("name")
    return str(value) if isinstance(value, list) else value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_whole(path: Path) -> None:
    """DamagedRun if metrics.csv was cut: salrun appends whole rows that end in a newline and
    have the header's fields, so a cut shows at the file's end (a cut inside a number would
    otherwise read as a smaller number). Only the head and the tail are read."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline().decode(errors="replace")
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return  # the reader below names the problem
    if not tail:
        return
    last = tail.rstrip("\n").rsplit("\n", 1)[-1]
    if not tail.endswith("\n"):
        raise DamagedRun(f"{path} is cut mid-line (its last row, {last[:40]!r}, has no end)")
    width, fields = (len(next(csv.reader([line]), [])) for line in (header, last))
    if fields != width:
        raise DamagedRun(f"{path} is cut: its last row has {fields} of {width} fields")


def _check_steps(folder: Path, summary: dict, metrics) -> None:
    """DamagedRun if a completed run's metrics.csv stops short of its summary: a run that ended
    ok logged every final metric at its last step (summary.json's `steps`)."""
    steps = summary.get("steps")
    if summary.get("status") != "ok" or not isinstance(steps, int) or metrics is None:
        return
    level = metrics[metrics["layer"].isna()]
    last = level["step"].max() if len(level) else None
    logged = set(level.loc[level["step"] == steps, "metric"])
    missing = [m for m in (summary.get("final") or {}) if m not in logged]
    if last != steps:
        what = f"ends at step {int(last)}" if last is not None else "holds no rows"
    elif missing:
        what = f"lacks {', '.join(missing)} at step {steps}"
    else:
        return
    raise DamagedRun(f"{folder / 'metrics.csv'} {what}, short of the {steps} steps summary.json counts "
                     "(cut, or not this run's)")


def _read_metrics(folder: Path):
    path = folder / "metrics.csv"
    _check_whole(path)
    try:
        frame = read_metrics(folder)
        missing = {"step", "metric", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"missing column(s) {', '.join(sorted(missing))}")
        frame["step"] = pd.to_numeric(frame["step"])
        frame["value"] = pd.to_numeric(frame["value"])
        frame["layer"] = pd.to_numeric(frame["layer"]) if "layer" in frame else float("nan")
        frame["metric"] = frame["metric"].astype(str)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        raise RunFolderError(f"{path} is unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return frame[["step", "metric", "value", "layer"]]


def _summary(folder: Path) -> dict:
    summary = read_summary(folder)
    if not isinstance(summary, dict) or "status" not in summary:
        raise RunFolderError(f"{folder / 'summary.json'} is not a run summary (no status)")
    return summary


def _max_gap(metrics) -> float:
    """Largest |log_sensitivity - mle| over the logged steps where mle < CHAOS_BELOW."""
    level = metrics[metrics["layer"].isna()].pivot_table(index="step", columns="metric", values="value")
    if not {"mle", "log_sensitivity"} <= set(level.columns):
        return float("nan")
    below = level[level["mle"] < CHAOS_BELOW]
    return float((below["log_sensitivity"] - below["mle"]).abs().max()) if len(below) else float("nan")


def _on_the_way(summary: dict, metrics, metric) -> dict:
    """higher_is_better (the summary's, else: the threshold lies above chance), the best evaluation
    of the run's test metric, and whether any evaluation met the task's threshold (None where the
    summary names no threshold: a lyapunov run)."""
    threshold, chance = summary.get("threshold"), summary.get("chance")
    if not isinstance(threshold, (int, float)):
        return {"higher_is_better": None, "best": float("nan"), "reached": None}
    higher = summary.get("higher_is_better", isinstance(chance, (int, float)) and chance < threshold)
    curve = finite(metrics.loc[(metrics["metric"] == metric) & metrics["layer"].isna(), "value"]) \
        if metrics is not None else []
    if not len(curve):
        return {"higher_is_better": higher, "best": float("nan"), "reached": False}
    met = curve >= threshold if higher else curve < threshold
    return {"higher_is_better": higher, "best": float(curve.max() if higher else curve.min()),
            "reached": bool(met.any())}


def _run_row(folder: Path, summary: dict, metrics, overrides, made_by: str | None = None) -> dict:
    """One run's row; `overrides` and `config` (the resolved config, None if never written) are
    read by _settings and then dropped. `made_by`: the sweep's command (else the run's own)."""
    final = summary.get("final") or {}
    metric = summary.get("metric") or ("mle" if summary.get("command") == "lyapunov" else None)
    config = read_config(folder) if (folder / "config.yaml").is_file() else None
    if isinstance(config, dict) and summary.get("experiment"):  # the preset is a setting too (--pair-by experiment)
        config = {**config, "experiment": summary["experiment"]}
    row = {"folder": str(folder), "overrides": overrides, "config": config}
    row.update({key: summary.get(key) for key in ("method", "command", "experiment", "model", "task", "seed",
                                                   "status")})
    row["success"] = summary.get("success")
    row["metric"] = metric
    row["final"] = final.get(metric, float("nan")) if metric else float("nan")
    row["chance"] = summary.get("chance", float("nan"))
    row["wall_seconds"] = summary.get("wall_seconds", float("nan"))
    row["log_sensitivity"] = final.get("log_sensitivity", float("nan"))
    row["judged"] = summary.get("judged", float("nan"))
    row.update(_on_the_way(summary, metrics, metric))
    row["max_gap"] = _max_gap(metrics) if summary.get("command") == "lyapunov" and metrics is not None \
        else float("nan")
    row["commit"] = summary.get("commit")
    given = overrides if isinstance(overrides, list) else str(overrides or "").split()
    row["made_by"] = made_by or " ".join(["salrun", str(summary.get("command") or "train"), *map(str, given)])
    return row


def sweep_command(plan: dict) -> str:
    """The command line of a sweep plan (sweep.yaml): what `salrun sweep` was given, less --out."""
    words = ["salrun", "sweep", *plan["overrides"]]
    words += ["--command", plan["command"]] if plan["command"] != "train" else []
    words += ["--launcher", plan["launcher"]] if plan["launcher"] != "basic" else []
    return " ".join(words)


def _job_folder(sweep: Path, output, index: int) -> Path:
    """A job's folder: the path sweep.csv recorded, or the same name inside PATH (a moved sweep)."""
    candidates = []
    if isinstance(output, str) and output:
        candidates += [sweep / Path(output).name, Path(output)]
    candidates.append(sweep / str(index))
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _load_folder(path: Path, damaged: list[str]) -> tuple[str, list[dict], list, int]:
    """One PATH: its kind (run or sweep), run rows, metric frames (run = index in the rows) and
    how many jobs of a sweep still running have no summary. A sweep's damaged jobs are left out,
    their reasons added to `damaged`; a damaged run folder raises DamagedRun."""
    if not path.exists():
        raise RunFolderError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() == ".csv":
        rows = _load_records(path)
        return "records file", rows, [], 0
    if not path.is_dir():
        raise NothingToReport(f"{path} is not a folder (give a run folder, a sweep folder or a run records .csv)")
    if (path / "sweep.csv").is_file() or (path / "sweep.yaml").is_file():
        return ("sweep", *_load_sweep(path, damaged))
    if (path / "summary.json").is_file():
        summary = _summary(path)
        if not (path / "metrics.csv").is_file():
            raise RunFolderError(f"{path} has no metrics.csv")
        metrics = _read_metrics(path)
        _check_steps(path, summary, metrics)
        overrides = summary.get("overrides") if isinstance(summary.get("overrides"), list) else []
        return "run", [_run_row(path, summary, metrics, overrides)], [metrics.assign(run=0)], 0
    raise NothingToReport(f"{path} is neither a run folder (summary.json) nor a sweep folder (sweep.csv)")


def _load_records(path: Path) -> list[dict]:
    """The rows of a run records file (salrun report --format runs), typed as a folder's rows are:
    its `settings` (JSON, the settings that differed, typed) act as the overrides and the config."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} is unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}") \
            from None
    missing = [c for c in ["settings", *RECORD_COLUMNS] if c not in table.columns]
    if missing or not len(table):
        raise RunFolderError(f"{path} is not a salrun run records file (salrun report --format runs): "
                             + (f"no column {', '.join(missing[:3])}" if missing else "no rows"))
    number = lambda text: float(text) if text != "" else float("nan")  # noqa: E731  (repr-exact floats)
    flag = lambda text: {"True": True, "False": False}.get(text)  # noqa: E731
    rows = []
    for index, record in enumerate(table.to_dict("records")):
        try:
            settings = json.loads(record["settings"] or "{}")
        except ValueError:
            raise RunFolderError(f"{path}: row {index + 1}'s settings are not JSON") from None
        row = {"folder": f"{path}#{index}", "overrides": [f"{k}=" for k in settings], "config": _nested(settings)}
        row.update({k: record[k] or None for k in ("method", "command", "experiment", "model", "task", "status",
                                                   "metric", "commit", "made_by")})
        row["seed"] = _typed(record["seed"]) if record["seed"] != "" else None
        row["success"], row["reached"], row["higher_is_better"] = (flag(record[k]) for k in
                                                                   ("success", "reached", "higher_is_better"))
        row.update({k: number(record[k]) for k in ("final", "chance", "wall_seconds", "log_sensitivity", "judged",
                                                   "best", "max_gap")})
        rows.append(row)
    return rows


def _nested(settings: dict) -> dict:
    """{"task": "adding", "task.lag": 50} as a config _config_value reads: {"task": {"name": "adding", "lag": 50}}."""
    config: dict = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {} if part not in node else {"name": node[part]}
            node = node[part]
        if isinstance(node.get(leaf), dict):
            node[leaf]["name"] = value
        else:
            node[leaf] = value
    return config


def _load_sweep(path: Path, damaged: list[str]) -> tuple[list[dict], list, int]:
    rows, frames, pending = [], [], 0
    try:
        made_by = sweep_command(read_sweep_plan(path)) if (path / "sweep.yaml").is_file() else None
    except RunFolderError:  # a damaged plan: each run says what it was given
        made_by = None
    if (path / "sweep.csv").is_file():
        try:
            table = pd.read_csv(path / "sweep.csv", dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{path / 'sweep.csv'} is unreadable: {str(err).splitlines()[0]}") from None
    else:
        table, pending = _running_sweep_table(path)
    if "status" not in table.columns or not len(table):
        raise RunFolderError(f"{path / 'sweep.csv'} is not a sweep table (no status column or no rows)")
    for index, record in enumerate(table.to_dict("records")):
        folder = _job_folder(path, record.get("output"), index)
        overrides = record.get("overrides", "")
        if (folder / "summary.json").is_file():
            summary = _summary(folder)
        else:  # the job never wrote its summary: the sweep table says what happened
            given = _parse_overrides(overrides)
            summary = {k: record.get(k) or given.get(k) for k in ("method", "seed", "command")}
            summary["wall_seconds"] = pd.to_numeric(record.get("wall_seconds") or float("nan"), errors="coerce")
            # No folder: the sweep stopped before the job began (tables older than the
            # `not started` status say `failed` there).
            summary["status"] = (record["status"] or "failed") if folder.is_dir() else NOT_STARTED
        # The job writes its own summary last: it is newer than a sweep table still being written.
        try:
            metrics = _read_metrics(folder) if (folder / "metrics.csv").is_file() else None
            _check_steps(folder, summary, metrics)
        except DamagedRun as err:  # never drawn beside the complete runs: left out, and said so
            damaged.append(str(err))
            continue
        rows.append(_run_row(folder, summary, metrics, overrides, made_by))
        if metrics is not None:
            frames.append(metrics.assign(run=len(rows) - 1))
    # A job with no summary ran the sweep's command, and the others' method where the sweep did not vary it.
    known = pd.Series([row["command"] for row in rows]).dropna()
    methods = {row["method"] for row in rows} - {None, ""}
    only = methods.pop() if len(methods) == 1 else None
    for row in rows:
        row["command"] = row["command"] or (known.mode().iloc[0] if len(known) else _planned_command(path))
        row["method"] = row["method"] or only
    return rows, frames, pending


def _planned_command(path: Path) -> str:
    try:
        return read_sweep_plan(path)["command"]
    except RunFolderError:  # a sweep older than sweep.yaml ran train unless told otherwise
        return "train"


def _running_sweep_table(path: Path):
    """The table of a sweep that has not written sweep.csv yet (still running, or killed): its
    grid from sweep.yaml and the jobs that wrote a summary; and how many have not."""
    from salrun.launch import sweep_jobs  # Hydra: only for a sweep without its table yet

    try:
        jobs = sweep_jobs(read_sweep_plan(path)["overrides"])
    except ConfigError as err:
        raise RunFolderError(f"{path / 'sweep.yaml'}: {err}") from None
    done = [i for i in range(len(jobs)) if (path / str(i) / "summary.json").is_file()]
    if not done:
        raise NothingToReport(f"{path}: no job of this sweep has finished yet ({len(jobs)} planned)")
    table = pd.DataFrame([{"overrides": " ".join(o for o in jobs[i] if not o.startswith("hydra.")),
                           "status": "", "output": str(path / str(i))} for i in done], dtype=str)
    return table, len(jobs) - len(done)


def _settings(rows: list[dict]) -> list[str]:
    """The settings that differ between the runs of a command, as columns of the rows: every key
    that some run overrides, valued from each run's resolved config (so a run that left it at its default
    has the default), or from the override where no config was written (a job that never ran).
    Numbers stay numbers; a setting with both ints and floats is all floats."""
    given = [_parse_overrides(row.pop("overrides")) for row in rows]
    candidates = [k for k in dict.fromkeys(k for pairs in given for k in pairs) if k not in NOT_SETTINGS]
    for row, pairs in zip(rows, given):
        config = row.pop("config")
        for key in candidates:
            if config is not None:
                row[key] = _config_value(config, key)
            else:
                row[key] = _typed(pairs[key]) if key in pairs else None
    # A setting that differs only between train and lyapunov runs (each command's own defaults) says
    # nothing the command does not.
    by_command = {c: [row for row in rows if row.get("command") == c] for c in {row.get("command") for row in rows}}
    own = {c: {k for k in candidates if len({repr(row[k]) for row in these}) > 1} for c, these in by_command.items()}
    keys = [k for k in candidates if any(k in mine for mine in own.values())]
    for row in rows:  # a lyapunov setting in a train run's row is the schema's default, not a choice
        row.update({k: None for k in keys if k not in own[row.get("command")]} if len(own) > 1 else {})
    for key in keys:
        values = [row[key] for row in rows if row[key] is not None]
        if all(map(_is_number, values)) and any(isinstance(v, float) for v in values):
            for row in rows:
                row[key] = None if row[key] is None else float(row[key])
    for row in rows:  # every setting some run overrides, for the run records (--format runs)
        row["settings"] = {k: row[k] for k in candidates if row[k] is not None}
    return keys


def started(runs):
    """The runs that began (not the jobs a stopped sweep never reached)."""
    return runs[runs["status"] != NOT_STARTED]


def finite(values):
    """The values that are finite numbers (NaN, ±inf and text dropped)."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers[numbers.notna() & (numbers.abs() != float("inf"))]


def finals(runs):
    """The final test metric of the runs that completed (status ok), finite values only."""
    return finite(runs.loc[runs["status"] == "ok", "final"]).to_numpy(dtype=float)


def sort_key(value) -> tuple:
    """Numbers in numeric order, then text, then missing values."""
    if _is_number(value) and value == value:
        return 0, float(value), ""
    return (1, 0.0, str(value)) if value is not None else (2, 0.0, "")


def load_collection(paths: list[Path]) -> Collection:
    """Read run and sweep folders into one collection; RunFolderError if a PATH is neither
    (among several PATHs such a folder is skipped) or a file is corrupt."""
    paths = expand(paths)
    rows, frames, kinds, found, skipped, damaged, pending = [], [], [], [], [], [], 0
    for path in paths:
        try:
            kind, new_rows, new_frames, waiting = _load_folder(path, damaged)
        except NothingToReport:
            if len(paths) == 1:
                raise
            skipped.append(path)
            continue
        except DamagedRun as err:  # one PATH: exit 2 (the caller); among several: left out, with a note
            if len(paths) == 1:
                raise
            damaged.append(str(err))
            continue
        seen = {str(Path(row["folder"]).resolve()) for row in rows}
        keep = [i for i, row in enumerate(new_rows) if str(Path(row["folder"]).resolve()) not in seen]
        offset = len(rows)
        place = {old: offset + new for new, old in enumerate(keep)}  # a run given twice counts once
        rows += [new_rows[i] for i in keep]
        frames += [frame.assign(run=place[frame["run"].iloc[0]]) for frame in new_frames
                   if len(frame) and frame["run"].iloc[0] in place]
        kinds.append(kind)
        found.append(path)
        pending += waiting
    if not rows and damaged:
        raise DamagedRun(damaged[0] + (f" (and {len(damaged) - 1} more damaged run(s))" if len(damaged) > 1 else ""))
    if not rows:
        raise RunFolderError(f"no run folder or sweep folder among {len(paths)} PATH(s)")
    keys = _settings(rows)
    runs = pd.DataFrame(rows)
    for key in keys:  # object columns: an int with a missing value would otherwise turn float
        runs[key] = pd.Series([row[key] for row in rows], dtype=object)
    runs.insert(0, "run", range(len(runs)))
    runs["method"] = runs["method"].fillna("?").astype(str)
    # True or False for every run (a summary says true/false/null, a sweep table "True"/""):
    # a run that failed, diverged or never finished is not a success.
    runs["success"] = runs["success"].map(lambda v: v is True or str(v).lower() == "true").astype(bool)
    label = lambda v: "null" if v is None else str(v)  # noqa: E731
    mixed = runs["command"].nunique() > 1  # train and lyapunov runs never share a group
    runs["group"] = [", ".join([*([r["command"]] if mixed else []), r["method"], *(f"{k}={label(r[k])}" for k in keys)])
                     for r in runs.to_dict("records")]
    # Settings in numeric order, methods in the order they first appear within a setting.
    records = runs.to_dict("records")
    order = sorted(range(len(runs)), key=lambda i: [records[i]["command"], *(sort_key(records[i][k]) for k in keys)])
    runs = runs.iloc[order].reset_index(drop=True)
    metrics = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=["step", "metric", "value", "layer", "run"])
    metrics["group"] = metrics["run"].map(runs.set_index("run")["group"])
    runs.attrs["keys"] = keys  # the settings that differ, for salrun.figures
    return Collection(found, kinds, runs, metrics, keys, pending, skipped, damaged)


def select(collection: Collection, where: list[str]) -> Collection:
    """The runs whose KEY (a setting that differs, or experiment, task, model, method, seed) equals
    VALUE for every `KEY=VALUE` of `where`; RunFolderError for a malformed pair, an unknown KEY or
    no run left."""
    runs = collection.runs
    for item in where:
        key, _, value = item.partition("=")
        if not value or key not in {*collection.keys, *PAIRABLE, "method", "seed"}:
            raise RunFolderError(f"--where {item}: give KEY=VALUE with KEY a setting that differs "
                                 f"({', '.join(collection.keys) or 'none'}) or one of "
                                 f"{', '.join([*PAIRABLE, 'method', 'seed'])}")
        wanted = _typed(value)
        runs = runs[runs[key].map(lambda v: v == wanted or str(v) == value)]
        if not len(runs):
            raise RunFolderError(f"--where {item}: no run has it")
    if len(runs) == len(collection.runs):
        return collection
    keep = set(runs["run"])
    runs = runs.copy()
    runs.attrs["keys"] = collection.keys
    return Collection(collection.paths, collection.kinds, runs, collection.metrics[collection.metrics["run"].isin(keep)],
                      collection.keys, collection.pending, collection.skipped, collection.damaged)
