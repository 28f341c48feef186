"""What a person sees on the terminal (rich): the progress bar, the summary of a run or a
sweep and the table of `salrun report`. No pandas here: `salrun.report` builds the tables."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

SHOWN_METRICS = ("loss", "test_loss", "accuracy", "nmse", "log_sensitivity", "mle", "spectral_radius")


@contextmanager
def progress_bar(description: str, total: int):
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}"))
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, status="")

        def update(done: int, metrics: dict) -> None:
            status = "  ".join(f"{k} {metrics[k]:.3g}" for k in SHOWN_METRICS if k in metrics)
            bar.update(task, completed=done, status=status)

        yield update


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(summary: dict, out: Path) -> None:
    table = Table(title=f"salrun {summary['command']}: {summary['status']}", show_header=False)
    for key in ("experiment", "model", "task", "method", "seed", "steps", "wall_seconds", "startup_seconds"):
        table.add_row(key, _fmt(summary.get(key)))
    for key, value in (summary.get("final") or {}).items():
        table.add_row(key, _fmt(value))
    if "success" in summary:
        table.add_row("success", f"{summary['success']} ({summary['criterion']}; chance {summary['chance']:.3g})")
    if summary.get("error"):
        table.add_row("error", summary["error"])
    table.add_row("run folder", str(out))
    Console().print(table)


def print_sweep(rows: list[dict], overrides: list[list[str]], out: Path) -> None:
    """The sweep's table: one column per override that varies across the jobs (the rest is
    the same for all and in sweep.yaml), then status, success, the metrics and any error."""
    settings = [dict(o.lstrip("+~").partition("=")[::2] for o in job) for job in overrides]
    varying = [key for key in dict.fromkeys(k for job in settings for k in job)
               if len({job.get(key) for job in settings}) > 1]
    table = Table(title=f"sweep: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} jobs ok")
    metric_keys = [k for k in SHOWN_METRICS if any(k in r for r in rows)]
    errors = any(r.get("error") for r in rows)
    for column in varying:
        table.add_column(column)
    table.add_column("status", no_wrap=True, min_width=len("interrupted"))
    for column in ["success", *metric_keys]:
        table.add_column(column)
    if errors:
        table.add_column("error", overflow="fold", min_width=20)
    for job, row in zip(settings, rows):
        shown = ["status", "success", *metric_keys, *(["error"] if errors else [])]
        table.add_row(*(job.get(key, "") for key in varying), *(_fmt(row.get(c, "")) for c in shown))
    console = _wide(Console())
    console.print(table)
    console.print(f"table: {out / 'sweep.csv'}", highlight=False, soft_wrap=True)


def _wide(console: Console) -> Console:
    """A file or a pipe gets the whole table, not one folded to 80 characters."""
    return console if console.is_terminal else Console(width=max(console.width, 160))


def print_table(title: str, caption: str, header: list[str], cells: list[list[str]], notes: list[str]) -> None:
    """`salrun report`'s table, then one line per note (the runs that did not complete)."""
    table = Table(title=title, caption=caption)
    for column in header:
        table.add_column(column, overflow="fold")
    for line in cells:
        table.add_row(*line)
    console = _wide(Console())
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)


def note(message: str) -> None:
    """A message on stderr, unwrapped, so that stdout holds only the table."""
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)
