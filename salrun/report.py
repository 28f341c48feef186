"""`salrun report`: a run or sweep folder -> summary table (pandas) and figures.

Loading gives two pandas frames that the table and salrun.figures share:
  runs     one row per run: run, group, method, the swept settings, command, model, status,
           success (bool), metric (the task's test metric; `mle` for the chaos study), final, chance,
           wall_seconds, log_sensitivity, max_gap
  metrics  metrics.csv of every run, long format, with run and group columns added
The terminal output is salrun.console's.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from salrun.console import note, print_table
from salrun.launch import sweep_jobs
from salrun.results import RunFolderError, read_metrics, read_sweep_plan, read_summary, write_atomic
from salrun.settings import ConfigError

CHAOS_BELOW = -0.1  # the chaos agreement is judged while the MLE is below this (issue 3)
TABLE_FORMATS = {"csv": ".csv", "json": ".json", "markdown": ".md"}


class Collection:
    """The runs of one run folder or one sweep folder."""
    def __init__(self, path: Path, kind: str, runs, metrics, keys: list[str]):
        self.path, self.kind, self.runs, self.metrics, self.keys = path, kind, runs, metrics, keys
        self.pending = 0  # jobs of a sweep still running that have written no summary yet


def _parse_overrides(text) -> dict[str, str]:
    pairs = {}
    for token in str(text if isinstance(text, str) else "").split():
        key, sep, value = token.partition("=")
        if sep and not key.lstrip("+~").startswith("hydra"):
            pairs[key.lstrip("+~")] = value
    return pairs


def _read_metrics(folder: Path):
    path = folder / "metrics.csv"
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


def _run_row(summary: dict, metrics) -> dict:
    final = summary.get("final") or {}
    metric = summary.get("metric") or ("mle" if summary.get("command") == "lyapunov" else None)
    row = {key: summary.get(key) for key in ("method", "command", "model", "task", "seed", "status")}
    row["success"] = summary.get("success")
    row["metric"] = metric
    row["final"] = final.get(metric, float("nan")) if metric else float("nan")
    row["chance"] = summary.get("chance", float("nan"))
    row["wall_seconds"] = summary.get("wall_seconds", float("nan"))
    row["log_sensitivity"] = final.get("log_sensitivity", float("nan"))
    row["max_gap"] = _max_gap(metrics) if summary.get("command") == "lyapunov" and metrics is not None \
        else float("nan")
    return row


def _job_folder(sweep: Path, output, index: int) -> Path:
    """A job's folder: the path sweep.csv recorded, or the same name inside PATH (a moved sweep)."""
    candidates = []
    if isinstance(output, str) and output:
        candidates += [sweep / Path(output).name, Path(output)]
    candidates.append(sweep / str(index))
    return next((c for c in candidates if c.is_dir()), candidates[0])


def load_collection(path: Path) -> Collection:
    """Read a run folder or a sweep folder; RunFolderError if it is neither or a file is corrupt."""
    path = Path(path)
    if not path.exists():
        raise RunFolderError(f"{path} does not exist")
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder (give a run folder or a sweep folder)")
    rows, frames, keys, pending = [], [], [], 0
    if (path / "sweep.csv").is_file() or (path / "sweep.yaml").is_file():
        kind = "sweep"
        rows, frames, keys, pending = _load_sweep(path)
    elif (path / "summary.json").is_file():
        kind = "run"
        summary = _summary(path)
        if not (path / "metrics.csv").is_file():
            raise RunFolderError(f"{path} has no metrics.csv")
        metrics = _read_metrics(path)
        rows.append(_run_row(summary, metrics))
        frames.append(metrics.assign(run=0))
    else:
        raise RunFolderError(f"{path} is neither a run folder (summary.json) nor a sweep folder (sweep.csv)")
    runs = pd.DataFrame(rows)
    runs.insert(0, "run", range(len(runs)))
    runs["method"] = runs["method"].fillna("?").astype(str)
    # True or False for every run (a summary says true/false/null, a sweep table "True"/""):
    # a run that failed, diverged or never finished is not a success.
    runs["success"] = runs["success"].map(lambda v: v is True or str(v).lower() == "true").astype(bool)
    known = runs["command"].dropna()  # a job that wrote no summary ran the sweep's command
    runs["command"] = runs["command"].fillna(known.mode().iloc[0] if len(known) else "train")
    runs["group"] = [", ".join([r["method"], *(f"{k}={r[k]}" for k in keys)]) for r in runs.to_dict("records")]
    metrics = pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=["step", "metric", "value", "layer", "run"])
    metrics["group"] = metrics["run"].map(runs.set_index("run")["group"])
    runs.attrs["keys"] = keys  # the swept settings, for salrun.figures
    collection = Collection(path, kind, runs, metrics, keys)
    collection.pending = pending
    return collection


def _load_sweep(path: Path) -> tuple[list[dict], list, list[str], int]:
    """A sweep's runs, their metrics, the settings it varied and how many jobs have no summary yet."""
    rows, frames, keys, pending = [], [], [], 0
    if (path / "sweep.csv").is_file():
        try:
            table = pd.read_csv(path / "sweep.csv", dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise RunFolderError(f"{path / 'sweep.csv'} is unreadable: {str(err).splitlines()[0]}") from None
    else:
        table, pending = _running_sweep_table(path)
    if "status" not in table.columns or not len(table):
        raise RunFolderError(f"{path / 'sweep.csv'} is not a sweep table (no status column or no rows)")
    settings = [_parse_overrides(text) for text in table.get("overrides", [""] * len(table))]
    for setting in settings:
        keys += [k for k in setting if k not in keys]
    keys = [k for k in keys if k not in ("seed", "method")
            and len({s.get(k, "") for s in settings}) > 1]
    for index, record in enumerate(table.to_dict("records")):
        folder = _job_folder(path, record.get("output"), index)
        if (folder / "summary.json").is_file():
            summary = _summary(folder)
        else:  # the job never wrote its summary: the sweep table says what happened
            summary = {k: record.get(k) or settings[index].get(k) for k in ("method", "seed", "command")}
            summary["wall_seconds"] = pd.to_numeric(record.get("wall_seconds") or float("nan"), errors="coerce")
        # The job writes its own summary last: it is newer than a sweep table still being written.
        summary["status"] = summary.get("status") or record["status"] or "failed"
        metrics = _read_metrics(folder) if (folder / "metrics.csv").is_file() else None
        row = _run_row(summary, metrics)
        row.update({k: settings[index].get(k, "") for k in keys})
        rows.append(row)
        if metrics is not None:
            frames.append(metrics.assign(run=index))
    return rows, frames, keys, pending


def _running_sweep_table(path: Path):
    """The table of a sweep that has not written sweep.csv yet (still running, or killed): its
    grid from sweep.yaml and the jobs that wrote a summary; and how many have not."""

    try:
        jobs = sweep_jobs(read_sweep_plan(path)["overrides"])
    except ConfigError as err:
        raise RunFolderError(f"{path / 'sweep.yaml'}: {err}") from None
    done = [i for i in range(len(jobs)) if (path / str(i) / "summary.json").is_file()]
    if not done:
        raise RunFolderError(f"{path}: no job of this sweep has finished yet ({len(jobs)} planned)")
    table = pd.DataFrame([{"overrides": " ".join(o for o in jobs[i] if not o.startswith("hydra.")),
                           "status": "", "output": str(path / str(i))} for i in done], dtype=str)
    return table, len(jobs) - len(done)


def _finite(values):
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers[numbers.notna() & (numbers.abs() != float("inf"))]


def summary_table(collection: Collection):
    """One row per group (method and the other swept settings), over seeds.

    success_rate counts every run (a failed or diverged run is not a success); final_mean and
    final_std are over the runs that completed (status ok); wall_seconds is the mean per run."""
    rows = []
    for group, runs in collection.runs.groupby("group", sort=False):
        first = runs.iloc[0]
        row = {"method": first["method"], **{k: first[k] for k in collection.keys}}
        row["command"] = first["command"]
        row["runs"] = len(runs)
        row["ok"] = int((runs["status"] == "ok").sum())
        trained = runs["command"] != "lyapunov"
        successes = runs["success"]
        row["successes"] = int(successes.sum()) if trained.any() else None
        row["success_rate"] = float(successes.mean()) if trained.any() else None
        done = runs[runs["status"] == "ok"]
        metrics = done["metric"].dropna().unique()
        row["metric"] = "/".join(map(str, metrics)) if len(metrics) else first["metric"]
        final = _finite(done["final"])
        row["final_mean"] = float(final.mean()) if len(final) else None
        row["final_std"] = float(final.std(ddof=1)) if len(final) > 1 else None
        chance = _finite(runs["chance"])
        row["chance"] = float(chance.iloc[0]) if len(chance) else None
        wall = _finite(runs["wall_seconds"])
        row["wall_seconds"] = float(wall.mean()) if len(wall) else None
        if not trained.any():
            log_s = _finite(done["log_sensitivity"])
            row["log_sensitivity_mean"] = float(log_s.mean()) if len(log_s) else None
            gap = _finite(runs["max_gap"])
            row["max_gap"] = float(gap.max()) if len(gap) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _show(value, digits: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return format(value, digits) if isinstance(value, float) else str(value)


def display_rows(table) -> tuple[list[str], list[list[str]]]:
    """The table as text cells, for the rich table and for markdown."""
    records = table.to_dict("records")
    keys = [c for c in table.columns if c not in {
        "method", "command", "runs", "ok", "successes", "success_rate", "metric", "final_mean", "final_std",
        "chance", "wall_seconds", "log_sensitivity_mean", "max_gap"}]
    chaos = set(table["command"]) == {"lyapunov"}
    metrics = set(table["metric"].dropna())
    header = ["method", *keys, "ok"]
    if chaos:
        header += ["final MLE", "final log-sensitivity", f"max gap (MLE < {CHAOS_BELOW})"]
    else:
        single = len(metrics) == 1
        header += ["success", f"final {next(iter(metrics))}" if single else "final metric", "chance"]
    header.append("wall s/run")
    cells = []
    for r in records:
        final = _show(r["final_mean"], ".3g")
        if _show(r["final_std"]) != "–":
            final += f" ± {_show(r['final_std'], '.2g')}"
        line = [str(r["method"]), *(_show(r[k]) for k in keys), f"{r['ok']}/{r['runs']}"]
        if chaos:
            line += [final, _show(r.get("log_sensitivity_mean"), ".3g"), _show(r.get("max_gap"), ".3g")]
        else:
            if _show(r["successes"]) == "–":
                success = "–"
            else:
                success = f"{int(r['successes'])}/{r['runs']} ({r['success_rate']:.0%})"
            line += [success, final if single else f"{r['metric']} {final}", _show(r["chance"], ".3g")]
        line.append(_show(r["wall_seconds"], ".3g"))
        cells.append(line)
    return header, cells


TABLE_NOTES = {
    "train": "final: mean ± std over the runs that completed; success: runs that met the task's criterion, "
             "out of all runs (seeds)",
    "lyapunov": "final: mean ± std over the runs that completed; max gap: largest |log-sensitivity − MLE| "
                f"over the logged steps with MLE < {CHAOS_BELOW}",
}


def format_table(table, fmt: str) -> str:
    """csv and json carry the numbers (json: a list of objects); markdown the rounded cells."""
    if fmt == "csv":
        return table.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        records = [{k: (None if v is None or v != v else v) for k, v in r.items()} for r in table.to_dict("records")]
        return json.dumps(records, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n"
    header, cells = display_rows(table)
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(escape, line)) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def print_report(collection: Collection, table) -> None:
    header, cells = display_rows(table)
    runs = collection.runs
    ok = int((runs["status"] == "ok").sum())
    title = (f"salrun report: {collection.kind} {collection.path} — {len(runs)} run(s), {ok} ok, "
             f"{len(table)} group(s)")
    kind = "lyapunov" if set(table["command"]) == {"lyapunov"} else "train"
    notes = [f"  run {r['run']} ({r['group']}, seed {r['seed']}): {r['status']}"
             for r in runs[runs["status"] != "ok"].to_dict("records")]
    print_table(title, TABLE_NOTES[kind], header, cells, notes)


def make_report(path: Path, fmt: str | None = None, table_file: Path | None = None,
                figures_dir: Path | None = None, figures: bool = True) -> None:
    """`salrun report`: the rich table on stdout, or the table in `fmt` (on stdout, or in
    `table_file`); PNG figures into `figures_dir` (default PATH/figures). Raises RunFolderError
    for a bad PATH, a corrupt file or bad options (all checked before anything is written)."""
    if fmt is not None and fmt not in TABLE_FORMATS:
        raise RunFolderError(f"--format must be one of {', '.join(TABLE_FORMATS)}, got {fmt!r}")
    if table_file is not None and fmt is None:
        by_suffix = {suffix: name for name, suffix in TABLE_FORMATS.items()}
        fmt = by_suffix.get(Path(table_file).suffix.lower())
        if fmt is None:
            raise RunFolderError(f"--table {table_file}: give --format, or end the name in .csv, .json or .md")
    if table_file is not None and Path(table_file).is_dir():
        raise RunFolderError(f"--table {table_file} is a folder")
    collection = load_collection(path)
    directory = Path(figures_dir) if figures_dir is not None else Path(path) / "figures"
    if figures and directory.exists() and not directory.is_dir():
        raise RunFolderError(f"--figures {directory} is a file")
    table = summary_table(collection)
    if collection.pending:
        note(f"sweep in progress (no sweep.csv yet): {collection.pending} more job(s) have no summary "
             "and are left out")
    text = format_table(table, fmt) if fmt is not None else None
    if table_file is not None:  # written first: a bad FILE fails before anything is printed
        try:
            Path(table_file).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(table_file), text)
        except OSError as error:
            raise RunFolderError(f"--table {table_file} cannot be written: {error.strerror or error}") from None
    if text is None or table_file is not None:
        print_report(collection, table)
    if text is not None and table_file is None:
        print(text, end="")
    if table_file is not None:
        note(f"table: {table_file}")
    if figures:
        from salrun.figures import make_figures

        try:
            made = make_figures(collection.runs, collection.metrics, directory)
        except OSError as error:
            raise RunFolderError(f"figures cannot be written to {directory}: {error.strerror or error}") from None
        names = ", ".join(p.name for p in made) or "none (no data for any figure)"
        note(f"figures in {directory}: {names}")
