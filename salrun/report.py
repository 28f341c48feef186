"""What a person sees: the progress bar and the summary tables (rich)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

SHOWN_METRICS = ("loss", "test_loss", "accuracy", "nmse", "log_sensitivity", "mle", "spectral_radius")


@contextmanager
def progress_bar(description: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    for key in ("experiment", "model", "task", "method", "seed", "steps", "wall_seconds"):
        table.add_row(key, _fmt(summary.get(key)))
    for key, value in (summary.get("final") or {}).items():
        table.add_row(key, _fmt(value))
    if "success" in summary:
        table.add_row("success", f"{summary['success']} ({summary['criterion']}; chance {summary['chance']:.3g})")
    if summary.get("error"):
        table.add_row("error", summary["error"])
    table.add_row("run folder", str(out))
    Console().print(table)


def print_sweep(rows: list[dict], out: Path) -> None:
    table = Table(title=f"sweep: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} jobs ok")
    metric_keys = [k for k in SHOWN_METRICS if any(k in r for r in rows)]
    for column in ["overrides", "status", "success", *metric_keys]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_fmt(row.get(c, "")) for c in ["overrides", "status", "success", *metric_keys]))
    Console().print(table)
    Console().print(f"table: {out / 'sweep.csv'}")
