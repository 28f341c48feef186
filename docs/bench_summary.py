"""The summary of docs/BENCHMARKS.md from the report sweeps' JSON tables (docs/bench.sh's `tables` part).

    python docs/bench_summary.py DOCS OUT PRESET...

Reads DOCS/report/PRESET_METHOD.json (one `salrun report --format json` row per sweep) and
DOCS/choices.txt, prints the Markdown table (success with its Wilson 95% interval, the mean
final test metric with its bootstrap 95% interval), then each method's difference from SAL on
the same preset (success: Newcombe's 95% interval; mean final metric: bootstrap 95% interval of
the difference, from the runs in OUT/report/PRESET/METHOD), and draws DOCS/summary.png: per
preset, the success rate and the mean final metric of each method, with their intervals.
The methods' tuned settings differ, so `salrun report --against` (which pairs rows of the same
setting) cannot pair them; this pairs them by preset.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from salrun import stats
from salrun.collect import finals, load_collection, started

METHODS = ("none", "sal", "spectral", "orthogonal", "critical", "flossing")
FAMILY = {"bench_adding": "bench_adding_100", "bench_copy": "bench_copy_100"}  # tuned at the smallest T


def _interval(lo, hi, fmt: str) -> str:
    return "" if lo is None or hi is None else f" [{lo:{fmt}}, {hi:{fmt}}]"


def load(docs: Path, presets: list[str]) -> dict[str, dict[str, dict]]:
    """preset -> method -> its report row (absent where the sweep left no report)."""
    rows: dict[str, dict[str, dict]] = {}
    for preset in presets:
        rows[preset] = {}
        for method in METHODS:
            path = docs / "report" / f"{preset}_{method}.json"
            if path.is_file():
                rows[preset][method] = json.loads(path.read_text())[0]
    return rows


def table(docs: Path, rows: dict[str, dict[str, dict]]) -> str:
    choices = dict(line.split(": ", 1) for line in (docs / "choices.txt").read_text().splitlines() if ": " in line)
    lines = ["| preset | method | tuned choice | successes | success rate (Wilson 95%) "
             "| mean final metric (bootstrap 95%) | chance |", "|---|---|---|---|---|---|---|"]
    for preset, methods in rows.items():
        tuned = FAMILY.get(preset.rsplit("_", 1)[0], preset)
        for method in METHODS:
            row = methods.get(method)
            if row is None:
                lines.append(f"| {preset} | {method} | | (no report) | | | |")
                continue
            rate = "–" if row["success_rate"] is None else (
                f"{row['success_rate']:.2f}" + _interval(row.get("success_lo"), row.get("success_hi"), ".2f"))
            final = "–" if row["final_mean"] is None else (
                f"{row['final_mean']:.4g}" + _interval(row.get("final_lo"), row.get("final_hi"), ".3g"))
            lines.append(f"| {preset} | {method} | {choices.get(f'{tuned} {method}', '').strip()} "
                         f"| {row['successes']}/{row['runs']} | {rate} | {row['metric']} {final} "
                         f"| {row['chance']:.3g} |")
    return "\n".join(lines)


def against_sal(out: Path, rows: dict[str, dict[str, dict]]) -> str:
    """Each method's difference from SAL on the same preset: method − sal."""
    lines = ["| preset | method | success − sal's (Newcombe 95%) | mean final − sal's (bootstrap 95%) |",
             "|---|---|---|---|"]
    for preset, methods in rows.items():
        if "sal" not in methods:
            continue
        runs = {m: load_collection([out / "report" / preset / m]).runs for m in methods}
        ref, ref_final = methods["sal"], finals(started(runs["sal"]))
        for method in METHODS:
            row = methods.get(method)
            if method == "sal" or row is None:
                continue
            rate = stats.newcombe(row["successes"], row["runs"], ref["successes"], ref["runs"])
            final = finals(started(runs[method]))
            diff = stats.bootstrap_difference(final, ref_final)
            rate_cell = "–" if rate is None else (f"{row['successes'] / row['runs'] - ref['successes'] / ref['runs']:+.2f}"
                                                  + _interval(*rate, "+.2f"))
            final_cell = "–" if not (len(final) and len(ref_final)) else (
                f"{row['metric']} {final.mean() - ref_final.mean():+.3g}" + ("" if diff is None else _interval(*diff, "+.3g")))
            lines.append(f"| {preset} | {method} | {rate_cell} | {final_cell} |")
    return "\n".join(lines)


def _errors(values, lows, highs):
    """matplotlib's asymmetric error bars; zero-length where a row has no interval."""
    below = [0.0 if lo is None or v is None else v - lo for v, lo in zip(values, lows)]
    above = [0.0 if hi is None or v is None else hi - v for v, hi in zip(values, highs)]
    return [below, above]


def figure(rows: dict[str, dict[str, dict]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    presets = list(rows)
    fig = Figure(figsize=(2.3 * len(presets), 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(presets), squeeze=False)
    for column, preset in enumerate(presets):
        methods = [m for m in METHODS if m in rows[preset]]
        got = [rows[preset][m] for m in methods]
        x = [METHODS.index(m) for m in methods]  # every method keeps its slot in every panel
        rate, final = axes[0][column], axes[1][column]
        values = [r["success_rate"] or 0.0 for r in got]
        rate.bar(x, values, color="tab:blue", alpha=0.7,
                 yerr=_errors(values, [r.get("success_lo") for r in got], [r.get("success_hi") for r in got]),
                 capsize=3)
        rate.set_ylim(0, 1.05)
        rate.set_title(preset.removeprefix("bench_"), fontsize=9)
        means = [r["final_mean"] for r in got]
        shown = [m if m is not None else float("nan") for m in means]
        final.errorbar(x, shown, yerr=_errors(means, [r.get("final_lo") for r in got],
                                              [r.get("final_hi") for r in got]), fmt="o", capsize=3)
        if got:
            final.axhline(got[0]["chance"], color="grey", linestyle=":", linewidth=1)
            final.set_ylabel(f"final test {got[0]['metric']}", fontsize=8)
            if got[0]["metric"] == "mse":  # the errors span decades
                final.set_yscale("log")
        for ax in (rate, final):
            ax.set_xlim(-0.6, len(METHODS) - 0.4)
            ax.set_xticks(range(len(METHODS)), METHODS, rotation=60, fontsize=7)
            ax.tick_params(axis="y", which="both", labelsize=7)
    axes[0][0].set_ylabel("success rate (Wilson 95%)", fontsize=8)
    fig.suptitle("success (Wilson 95%) and mean final metric (bootstrap 95%); dotted: chance", fontsize=9)
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python docs/bench_summary.py DOCS OUT PRESET...", file=sys.stderr)
        return 2
    docs, out, presets = Path(argv[0]), Path(argv[1]), argv[2:]
    if not (docs / "choices.txt").is_file():
        print(f"bench_summary.py: no {docs / 'choices.txt'}: run the choose part first", file=sys.stderr)
        return 2
    rows = load(docs, presets)
    if not any(rows.values()):
        print(f"bench_summary.py: no report tables in {docs / 'report'}: run the report part first", file=sys.stderr)
        return 2
    print(table(docs, rows))
    print("\nEach method against SAL on the same preset (method − sal; for mse, negative is better):\n")
    print(against_sal(out, rows))
    figure(rows, docs / "summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
