"""`salrun report`: run and sweep folders -> one summary table (pandas), with 95% intervals,
and figures. salrun.collect reads the folders; salrun.stats computes the intervals; the
terminal output is salrun.console's.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pandas as pd
from rich.markup import escape

from salrun import stats
from salrun.collect import (CHAOS_BELOW, PAIRABLE, RECORD_COLUMNS, Collection, finals, finite, load_collection, select,
                            started)
from salrun.console import note, print_table
from salrun.results import NOT_STARTED, RunFolderError, write_atomic

TABLE_FORMATS = {"csv": ".csv", "json": ".json", "markdown": ".md"}  # and the others (never by suffix)
OTHER_FORMATS = ("pivot", "overrides", "runs")
AGAINST_COLUMNS = ["success_diff", "success_diff_lo", "success_diff_hi", "final_diff", "final_diff_lo",
                   "final_diff_hi"]
JUDGED_COLUMNS = ["judged_mean", "judged_min", "judged_max", "best_mean", "reached", "lost"]


def _pair(interval, names: tuple[str, str]) -> dict:
    return dict(zip(names, interval if interval is not None else (None, None)))


def summary_table(collection: Collection, against: str | None = None, pair_by: str | None = None,
                  judged: bool = False):
    """One row per group (method and the settings that differ), over seeds.

    runs counts the jobs that started (`not_started`: those a stopped sweep never began).
    success_rate counts every started run (a failed or diverged run is not a success), with
    Wilson's 95% interval; final_mean and final_std are over the runs that completed (status
    ok), with a percentile bootstrap 95% interval of the mean; wall_seconds is the mean per run.
    `against`: a reference method; the other methods' differences from it in the same setting (or,
    with `pair_by`, with the same value of that one column: a preset whose methods were tuned apart).
    `judged`: how the test metric went on the way (JUDGED_COLUMNS): the judged value (mean of the
    last evaluations) of the completed runs, mean, min and max; the mean of their best evaluations;
    the started runs that met the threshold at some evaluation, and those of them that did not succeed."""
    rows, samples = [], []
    for group, members in collection.runs.groupby("group", sort=False):
        first = members.iloc[0]
        runs = started(members)
        row = {"method": first["method"], **{k: first[k] for k in collection.keys}}
        row["command"] = first["command"]
        row["runs"] = len(runs)
        row["ok"] = int((runs["status"] == "ok").sum())
        row["not_started"] = len(members) - len(runs)
        trained = first["command"] != "lyapunov"  # a group holds one command (salrun.collect)
        row["successes"] = int(runs["success"].sum()) if trained else None
        row["success_rate"] = float(runs["success"].mean()) if trained and len(runs) else None
        row.update(_pair(stats.wilson(row["successes"], len(runs)) if trained else None, ("success_lo", "success_hi")))
        metrics = runs.loc[runs["status"] == "ok", "metric"].dropna().unique()
        row["metric"] = "/".join(map(str, metrics)) if len(metrics) else first["metric"]
        final = finals(runs)
        row["final_mean"] = float(final.mean()) if len(final) else None
        row["final_std"] = float(final.std(ddof=1)) if len(final) > 1 else None
        row.update(_pair(stats.bootstrap_mean(final), ("final_lo", "final_hi")))
        chance = finite(runs["chance"])
        row["chance"] = float(chance.iloc[0]) if len(chance) else None
        wall = finite(runs["wall_seconds"])
        row["wall_seconds"] = float(wall.mean()) if len(wall) else None
        if not trained:
            log_s = finite(runs.loc[runs["status"] == "ok", "log_sensitivity"])
            row["log_sensitivity_mean"] = float(log_s.mean()) if len(log_s) else None
            gap = finite(runs["max_gap"])
            row["max_gap"] = float(gap.max()) if len(gap) else None
        if judged:
            row.update(_judged(runs) if trained else dict.fromkeys(JUDGED_COLUMNS))
        if pair_by is not None:
            row[pair_by] = first[pair_by]
        rows.append(row)
        samples.append(final)
    if against is not None:
        _differences(rows, samples, [pair_by] if pair_by is not None else collection.keys, against)
    table = pd.DataFrame(rows)
    for key in collection.keys:  # keep 5 an int where a group lacks the setting (pandas would make 5.0)
        table[key] = pd.Series([row[key] for row in rows], dtype=object)
    return table


def _judged(runs) -> dict:
    ok = runs[runs["status"] == "ok"]
    values, best = finite(ok["judged"]), finite(ok["best"])
    reached = runs["reached"].map(lambda v: v is True)
    return {"judged_mean": float(values.mean()) if len(values) else None,
            "judged_min": float(values.min()) if len(values) else None,
            "judged_max": float(values.max()) if len(values) else None,
            "best_mean": float(best.mean()) if len(best) else None,
            "reached": int(reached.sum()), "lost": int((reached & ~runs["success"]).sum())}


def best_rows(table, runs, per: list[str]):
    """The tuned choice: in each group of rows with the same values of `per` (all rows as one
    group without), the row with the highest success rate, then the best mean final metric
    (highest, or lowest for a metric where lower is better); a tie keeps the first row."""
    higher = runs.dropna(subset=["metric"]).groupby("metric")["higher_is_better"].first().to_dict()

    def rank(index):
        row = table.loc[index]
        final = row["final_mean"] if not _missing(row["final_mean"]) else float("-inf")
        sign = 1 if higher.get(row["metric"], True) is not False else -1
        return (row["success_rate"] if not _missing(row["success_rate"]) else -1.0,
                sign * final if final != float("-inf") else final)

    groups = table.groupby([table[k].map(repr) for k in per], sort=False) if per else [(None, table)]
    chosen = [max(members.index, key=rank) for _, members in groups]  # max keeps the first of equals
    return table.loc[sorted(chosen)].reset_index(drop=True)


def overrides_lines(table, keys: list[str]) -> str:
    """Each row's settings as overrides, one line a row: `key=value ...` (the KEYs that the row has)."""
    lines = [" ".join(f"{k}={r[k]}" for k in keys if not _missing(r[k])) for r in table.to_dict("records")]
    return "\n".join(lines) + "\n"


def _differences(rows: list[dict], samples: list, keys: list[str], against: str) -> None:
    """Each row's success-rate difference from the `against` method's row of the same setting
    (Newcombe's interval) and its mean-final difference (bootstrap interval); None for the
    reference itself and where the setting has no reference runs."""
    setting = lambda row: (row["command"], *(repr(row[k]) for k in keys))  # noqa: E731
    reference = {setting(row): (row, final) for row, final in zip(rows, samples) if row["method"] == against}
    for row, final in zip(rows, samples):
        row.update(dict.fromkeys(AGAINST_COLUMNS))
        ref, ref_final = reference.get(setting(row), (None, None))
        if ref is None or row is ref:
            continue
        if row["success_rate"] is not None and ref["success_rate"] is not None:
            row["success_diff"] = row["success_rate"] - ref["success_rate"]
            row.update(_pair(stats.newcombe(row["successes"], row["runs"], ref["successes"], ref["runs"]),
                             ("success_diff_lo", "success_diff_hi")))
        if len(final) and len(ref_final):
            row["final_diff"] = float(final.mean() - ref_final.mean())
            row.update(_pair(stats.bootstrap_difference(final, ref_final), ("final_diff_lo", "final_diff_hi")))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _show(value, digits: str = ".4g") -> str:
    if _missing(value):
        return "–"
    return format(value, digits) if isinstance(value, float) else str(value)


def _interval(low, high, digits: str = ".3g", signed: bool = False) -> str:
    if _missing(low):
        return ""
    spec = ("+" if signed else "") + digits
    return f" [{format(low, spec)}, {format(high, spec)}]"


def _success_cell(r) -> str:
    """4/5 (80%, 38–96%): successes out of runs, the rate and its Wilson interval."""
    if _missing(r["successes"]) or not r["runs"]:
        return "–"
    return (f"{int(r['successes'])}/{r['runs']} ({r['success_rate']:.0%}, "
            f"{100 * r['success_lo']:.0f}–{100 * r['success_hi']:.0f}%)")


def display_rows(table, against: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The table as text cells, for the rich table and for markdown."""
    records = table.to_dict("records")
    keys = [c for c in table.columns if c not in {
        "method", "command", "runs", "ok", "not_started", "successes", "success_rate", "success_lo", "success_hi",
        "metric", "final_mean", "final_std", "final_lo", "final_hi", "chance", "wall_seconds",
        "log_sensitivity_mean", "max_gap", *AGAINST_COLUMNS, *JUDGED_COLUMNS}]
    judged = "judged_mean" in table.columns
    chaos = set(table["command"]) == {"lyapunov"}
    metrics = set(table["metric"].dropna())
    single = len(metrics) == 1
    mixed = table["command"].nunique() > 1
    header = [*(["command"] if mixed else []), "method", *keys, "ok"]
    if chaos:
        header += ["final MLE", "final log-sensitivity", f"max gap (MLE < {CHAOS_BELOW})"]
    else:
        header += ["success", f"final {next(iter(metrics))}" if single else "final metric", "chance"]
        header += ["judged (min–max)", "best evaluation (mean)", "reached once", "reached, then lost"] if judged else []
    header.append("wall s/run")
    if against is not None:
        header += [] if chaos else [f"Δ success vs {against}"]
        header.append(f"Δ final vs {against}")
    cells = []
    for r in records:
        final = _show(r["final_mean"], ".3g") + _interval(r["final_lo"], r["final_hi"])
        started = f"{r['ok']}/{r['runs']}" + (f" ({r['not_started']} not started)" if r["not_started"] else "")
        line = [*([r["command"]] if mixed else []), str(r["method"]), *(_show(r[k]) for k in keys), started]
        if chaos:
            line += [final, _show(r.get("log_sensitivity_mean"), ".3g"), _show(r.get("max_gap"), ".3g")]
        else:
            line += [_success_cell(r), final if single else f"{r['metric']} {final}", _show(r["chance"], ".3g")]
            if judged:
                line += [_show(r["judged_mean"], ".3f") + ("" if _missing(r["judged_min"]) else
                                                          f" ({r['judged_min']:.3f}–{r['judged_max']:.3f})"),
                         _show(r["best_mean"], ".3f"), _show(r["reached"]), _show(r["lost"])]
        line.append(_show(r["wall_seconds"], ".3g"))
        if against is not None:
            reference = r["method"] == against
            if not chaos:
                line.append("reference" if reference else "–" if _missing(r["success_diff"]) else
                            f"{100 * r['success_diff']:+.0f} pp"
                            + _interval(100 * r["success_diff_lo"], 100 * r["success_diff_hi"], ".0f", True))
            line.append("reference" if reference else _show(r["final_diff"], "+.3g")
                        + _interval(r["final_diff_lo"], r["final_diff_hi"], signed=True))
        cells.append(line)
    return header, cells


_FINAL = f"final: mean over the runs that completed [percentile bootstrap 95% interval, {stats.RESAMPLES} resamples]"
TABLE_NOTES = {
    "train": f"{_FINAL}; success: runs that met the task's criterion out of all runs (seeds) that started "
             "(rate, Wilson 95% interval)",
    "lyapunov": f"{_FINAL}; max gap: largest |log-sensitivity − MLE| over the logged steps with MLE < {CHAOS_BELOW}",
}
JUDGED_NOTE = ("judged: the value success was judged on (mean of the last train.success_window evaluations) "
               "over the completed runs, mean (min–max); best evaluation: their mean; reached once: runs "
               "with an evaluation that met the threshold; reached, then lost: those that did not succeed")
AGAINST_NOTE = ("Δ: method − {0} in the same setting; success in percentage points [Newcombe's 95% interval], "
                "final [bootstrap 95% interval]")


def _order(value):
    """Sort numbers before text, numbers by value: depth 50, 100, 300 in that order."""
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def pivot_lines(table, keys: list[str]) -> list[list[str]]:
    """Successes out of runs, a row per setting (`keys`), a column per method: the table at a glance."""
    if set(table["command"]) != {"train"}:
        raise RunFolderError("--format pivot counts successes: give it train runs only")
    methods = list(dict.fromkeys(table["method"]))
    cells: dict[tuple, dict] = {}
    for r in table.to_dict("records"):
        cells.setdefault(tuple(r[k] for k in keys), {})[r["method"]] = f"{int(r['successes'])}/{r['runs']}"
    rows = sorted(cells, key=lambda values: tuple(map(_order, values)))
    return [[*keys, *map(str, methods)]] + [[*map(_show, values), *(cells[values].get(m, "–") for m in methods)]
                                            for values in rows]


def format_table(table, fmt: str, against: str | None = None, keys: list[str] = ()) -> str:
    """csv and json carry the numbers (json: a list of objects); markdown the rounded cells; pivot
    (markdown) the successes, a column per method; overrides each row's settings (`keys`) as
    `key=value` words, a line a row."""
    if fmt == "overrides":
        return overrides_lines(table, keys)
    if fmt == "csv":
        return table.to_csv(index=False, lineterminator="\n")
    if fmt == "json":
        records = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in table.to_dict("records")]
        return json.dumps(records, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n"
    if fmt == "pivot":
        header, *cells = pivot_lines(table, keys)
    else:
        header, cells = display_rows(table, against)
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(escape, line)) + " |" for line in cells]
    return "\n".join(lines) + "\n"


def run_records(runs) -> str:
    """The runs as a run records file (CSV, one row a run: RECORD_COLUMNS and `settings`, the
    settings its overrides name, as a JSON object), which `salrun report` reads back: small enough to
    commit beside the table it makes."""
    records = runs.reindex(columns=RECORD_COLUMNS).copy()
    # Every setting that some run overrides, not only those that differ here: records of two sweeps
    # merged later must still tell a task or a rho apart. Typed, in JSON: depth 5 stays the number 5.
    settings = [json.dumps({k: v for k, v in r.items() if not _missing(v)}, default=str) for r in runs["settings"]]
    records.insert(1, "settings", settings)
    return records.to_csv(index=False, lineterminator="\n")


def provenance(runs) -> str:
    """One line under a markdown table: the commit its runs were measured on, and the commands that
    made them (a sweep's command as sweep.yaml holds it, pins included)."""
    commits = runs["commit"].map(lambda c: c if isinstance(c, str) and c else None)
    known = commits.dropna().value_counts(sort=False)
    if len(known) == 1 and known.iloc[0] == len(runs):
        measured = f"Runs measured on commit {known.index[0]}"
    elif len(known):
        measured = "Runs measured on commits " + ", ".join(f"{c} ({n} runs)" for c, n in known.items())
    else:
        measured = "Commit not recorded (runs made before salrun recorded it)"
    unknown = int(commits.isna().sum())
    if len(known) and unknown:
        measured += f"; {unknown} runs without a recorded commit"
    made = [m for m in dict.fromkeys(runs["made_by"]) if isinstance(m, str) and m]
    return measured + ("; made by " + " and ".join(f"`{m}`" for m in made) if made else "") + ".\n"


FILL = re.compile(r"(<!-- (salrun report[^\n]*?) -->\n)(.*?)(<!-- /salrun report -->)", re.S)
# A table that salrun report wrote once from run folders that are gone (no run records were kept then):
# the block is that committed file, so the page still carries no typed number.
INCLUDE = re.compile(r"(<!-- include ([^\s>]+) -->\n)(.*?)(<!-- /include -->)", re.S)


def has_markers(text: str) -> bool:
    """Whether `text` holds a block that `fill_markers` fills."""
    return bool(FILL.search(text) or INCLUDE.search(text))


def fill_markers(text: str, run) -> str:
    """`text` with each block between `<!-- salrun report ARGS -->` and `<!-- /salrun report -->`
    replaced by what `run(ARGS as words)` prints: the marker holds the exact command, so the
    command beside a table is the one that made it; and each block between `<!-- include FILE -->`
    and `<!-- /include -->` by FILE (relative to the working folder). RunFolderError for a block
    that cannot be made."""
    def replace(match) -> str:
        words = shlex.split(match.group(2))[2:]
        if "--format" not in words or words[words.index("--format") + 1:][:1] not in (["markdown"], ["pivot"]):
            raise RunFolderError(f"marker '{match.group(2)}': give --format markdown or pivot (the block is "
                                 "markdown)")
        if any(w in words for w in ("--fill", "--table")):
            raise RunFolderError(f"marker '{match.group(2)}': --fill and --table do not belong in a marker")
        return match.group(1) + run(words) + match.group(4)

    def include(match) -> str:
        try:
            return match.group(1) + Path(match.group(2)).read_text() + match.group(4)
        except OSError as error:
            raise RunFolderError(f"marker 'include {match.group(2)}': {error.strerror or error}") from None
    return INCLUDE.sub(include, FILL.sub(replace, text))


def print_report(collection: Collection, table, against: str | None = None) -> None:
    header, cells = display_rows(table, against)
    runs = collection.runs
    ok, waiting = int((runs["status"] == "ok").sum()), runs[runs["status"] == NOT_STARTED]
    title = (f"salrun report: {collection.describe()} — {len(runs) - len(waiting)} run(s), {ok} ok, "
             + (f"{len(waiting)} not started, " if len(waiting) else "") + f"{len(table)} group(s)")
    kind = "lyapunov" if set(table["command"]) == {"lyapunov"} else "train"
    caption = TABLE_NOTES[kind] + ("; " + AGAINST_NOTE.format(against) if against else "") \
        + ("; " + JUDGED_NOTE if "judged_mean" in table.columns else "")
    notes = [f"  {r['folder']} ({r['group']}, seed {r['seed']}): {r['status']}"
             for r in runs[~runs["status"].isin(["ok", NOT_STARTED])].to_dict("records")]
    if len(waiting):
        notes.append(f"  not started (the sweep stopped first): {len(waiting)} job(s) of "
                     + ", ".join(f"{group} ({n})" for group, n in waiting["group"].value_counts(sort=False).items()))
    plain = lambda text: escape(str(text))  # noqa: E731  (rich would read "[0.4, 0.6]" as markup)
    print_table(plain(title), plain(caption), [plain(h) for h in header], [list(map(plain, line)) for line in cells],
                [plain(n) for n in notes])


def _check_options(fmt: str | None, table_file: Path | None) -> str | None:
    if fmt is not None and fmt not in (*TABLE_FORMATS, *OTHER_FORMATS):
        raise RunFolderError(f"--format must be one of {', '.join([*TABLE_FORMATS, *OTHER_FORMATS])}, got {fmt!r}")
    if table_file is not None and fmt is None:
        by_suffix = {suffix: name for name, suffix in TABLE_FORMATS.items()}
        fmt = by_suffix.get(Path(table_file).suffix.lower())
        if fmt is None:
            raise RunFolderError(f"--table {table_file}: give --format, or end the name in .csv, .json or .md")
    if table_file is not None and Path(table_file).is_dir():
        raise RunFolderError(f"--table {table_file} is a folder")
    return fmt


def _figures_dir(collection: Collection, figures_dir: Path | None) -> Path:
    """--figures, else PATH/figures for one PATH (NAME_figures beside a records file NAME.csv),
    else figures/ in the folder that holds them all."""
    if figures_dir is not None:
        return Path(figures_dir)
    if len(collection.paths) == 1:
        path = collection.paths[0]
        return path.parent / f"{path.stem}_figures" if path.is_file() else path / "figures"
    parents = [p.resolve().parent.parts for p in collection.paths]
    common = next((n for n in range(min(map(len, parents))) if len({p[n] for p in parents}) > 1),
                  min(map(len, parents)))
    return Path(*parents[0][:common]) / "figures"


def _check_choice(collection: Collection, against: str | None, pair_by: str | None, best: bool,
                  per: list[str]) -> None:
    runs = collection.runs
    if against is not None and against not in set(runs["method"]):
        raise RunFolderError(f"--against {against}: no run of that method (methods: "
                             f"{', '.join(dict.fromkeys(runs['method']))})")
    if pair_by is not None and against is None:
        raise RunFolderError("--pair-by pairs rows for --against: give --against METHOD too")
    for option, key in [("--pair-by", pair_by), *(("--per", k) for k in per)]:
        if key is not None and key not in {*collection.keys, *PAIRABLE}:
            raise RunFolderError(f"{option} {key}: not a setting of these runs (settings that differ: "
                                 f"{', '.join(collection.keys) or 'none'}; or {', '.join(PAIRABLE)})")
    if per and not best:
        raise RunFolderError("--per chooses within groups for --best: give --best too")
    if best and set(runs["command"]) != {"train"}:
        raise RunFolderError("--best chooses among train runs (by success rate): these include lyapunov runs")


def make_report(paths: list[Path], fmt: str | None = None, table_file: Path | None = None,
                figures_dir: Path | None = None, figures: bool = True, against: str | None = None,
                pair_by: str | None = None, judged: bool = False, best: bool = False, per: list[str] = (),
                where: list[str] = ()) -> None:
    """`salrun report`: the rich table on stdout, or the table in `fmt` (on stdout, or in
    `table_file`); PNG figures into `figures_dir`. `where` keeps the runs with those settings;
    `best` keeps the best row (per value of the `per` settings). Raises RunFolderError for a bad
    PATH, a corrupt file or bad options (all checked before anything is written)."""
    fmt = _check_options(fmt, table_file)
    collection = select(load_collection(paths), list(where))
    _check_choice(collection, against, pair_by, best, list(per))
    directory = _figures_dir(collection, figures_dir)
    if figures and directory.exists() and not directory.is_dir():
        raise RunFolderError(f"--figures {directory} is a file")
    table = summary_table(collection, against, pair_by, judged)
    if best:
        table = best_rows(table, collection.runs, list(per))
    collection.runs.attrs["pair_by"] = pair_by  # salrun.figures draws the methods per value of it
    if collection.skipped:
        note(f"skipped {len(collection.skipped)} PATH(s) that hold no run or sweep: "
             + ", ".join(map(str, collection.skipped)))
    for reason in collection.damaged:
        note(f"left out: {reason}")
    if collection.pending:
        note(f"sweep in progress (no sweep.csv yet): {collection.pending} more job(s) have no summary "
             "and are left out")
    fixed = {item.split("=", 1)[0] for item in where}
    if fmt == "runs":
        text = run_records(collection.runs)
    else:
        text = format_table(table, fmt, against, [k for k in collection.keys if k not in fixed]) if fmt is not None \
            else None
    if fmt in ("markdown", "pivot"):
        text += "\n" + provenance(collection.runs)
    if table_file is not None:  # written first: a bad FILE fails before anything is printed
        try:
            Path(table_file).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(table_file), text)
        except OSError as error:
            raise RunFolderError(f"--table {table_file} cannot be written: {error.strerror or error}") from None
    if text is None or table_file is not None:
        print_report(collection, table, against)
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
