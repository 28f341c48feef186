"""Figures for `salrun report`: pandas frames in, PNG files out (matplotlib's Agg canvas).

Every figure function takes the two frames that `salrun.collect.load_collection` builds,

    runs     one row per run: run, group, command, model, status, success, metric, final, chance
    metrics  long format: run, group, step, metric, value, layer (NaN for network-level rows)

and returns a matplotlib Figure, or None when the data does not support that figure (for
example no Lyapunov runs, or no per-layer rows). `make_figures` writes the ones that exist.
Curves are the mean over a group's runs (its seeds); the shaded band spans their min to max. The success
figures show 95% intervals (salrun.stats): Wilson for rates, bootstrap for mean final metrics.
"""
from __future__ import annotations

import io
from pathlib import Path

from salrun import stats
from salrun.collect import finals, started
from salrun.settings import REGISTRY, Entry

_NO_ENTRY = Entry(object, "")  # a model no longer registered: drawn per layer

METRIC_LABELS = {
    "accuracy": "test accuracy",
    "nmse": "test NMSE (MSE / target variance, log scale)",
    "test_loss": "test loss",
}


def _canvas(width: float, height: float):
    """A figure on matplotlib's Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _figure(columns: int = 1, width: float = 6.4, height: float = 4.4, sharey: bool = False):
    figure = _canvas(width * columns, height)
    axes = [figure.add_subplot(1, columns, 1)]
    axes += [figure.add_subplot(1, columns, i + 1, sharey=axes[0] if sharey else None) for i in range(1, columns)]
    return figure, axes


def _colors(groups) -> dict:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"].colors
    return {group: palette[i % len(palette)] for i, group in enumerate(groups)}


def _widths(groups) -> dict:
    """Earlier groups draw thicker, so that identical curves (same start) stay visible."""
    return {group: max(1.2, 3.0 - 0.5 * i) for i, group in enumerate(groups)}


def _curve(ax, frame, color, label: str, linestyle: str = "-", geometric: bool = False,
           linewidth: float = 1.5) -> None:
    """Mean over runs at each x (geometric for log axes), band from min to max."""
    import numpy as np

    values = frame.assign(value=np.log(frame["value"]) if geometric else frame["value"])
    stats = values.groupby("x")["value"].agg(["mean", "min", "max"]).sort_index()
    if geometric:
        stats = np.exp(stats)
    runs = frame["run"].nunique()
    marker = "o" if len(stats) <= 12 else None
    ax.plot(stats.index, stats["mean"], color=color, linestyle=linestyle, marker=marker, markersize=4,
            linewidth=linewidth,
            label=f"{label} (n={runs})" if label else None)
    if runs > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, linewidth=0)


def _network_rows(metrics, name: str, runs=None):
    rows = metrics[(metrics["metric"] == name) & metrics["layer"].isna()]
    if runs is not None:
        rows = rows[rows["run"].isin(runs)]
    return rows.rename(columns={"step": "x"})


def _legend(ax, **kwargs) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", **kwargs)


def learning_curves(runs, metrics):
    """Test metric against training step, one panel per metric, chance level dashed."""
    trained = runs[(runs["command"] == "train") & runs["metric"].notna()]
    names = [m for m in trained["metric"].unique() if len(_network_rows(metrics, m, trained["run"]))]
    if not names:
        return None
    figure, axes = _figure(len(names))
    colors, widths = _colors(runs["group"].unique()), _widths(runs["group"].unique())
    for ax, name in zip(axes, names):
        these = trained[trained["metric"] == name]
        chances = these.groupby("group", sort=False)["chance"].first()
        for group, members in these.groupby("group", sort=False):
            _curve(ax, _network_rows(metrics, name, members["run"]), colors[group], group,
                   geometric=name == "nmse", linewidth=widths[group])
            if chances.nunique() > 1:
                ax.axhline(chances[group], color=colors[group], linestyle="--", linewidth=1)
        if chances.nunique() == 1 and chances.notna().all():
            ax.axhline(chances.iloc[0], color="black", linestyle="--", linewidth=1, zorder=1,
                       label=f"chance ({chances.iloc[0]:.3g})")
        elif chances.nunique() > 1:
            ax.plot([], [], color="gray", linestyle="--", label="chance (group colour)")
        if name == "nmse":
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(METRIC_LABELS.get(name, f"test {name}"))
        ax.set_title(f"Learning curves: {name} (line = mean over seeds, band = min–max)", fontsize="medium")
        ax.grid(alpha=0.3)
        _legend(ax)
    return figure


def sensitivity_vs_mle(runs, metrics):
    """Chaos study: log-sensitivity and the maximum Lyapunov exponent over SAL updates, and
    one against the other (they agree on the diagonal while the MLE is negative)."""
    chaos = runs[runs["command"] == "lyapunov"]
    mle = _network_rows(metrics, "mle", chaos["run"])
    log_s = _network_rows(metrics, "log_sensitivity", chaos["run"])
    if mle.empty or log_s.empty:
        return None
    figure, (over_time, scatter) = _figure(2)
    colors = _colors(runs["group"].unique())
    for group, members in chaos.groupby("group", sort=False):
        _curve(over_time, mle[mle["run"].isin(members["run"])], colors[group], group)
        _curve(over_time, log_s[log_s["run"].isin(members["run"])], colors[group], "", linestyle="--")
        paired = mle.merge(log_s, on=["run", "x"], suffixes=("_mle", "_log_s"))
        paired = paired[paired["run"].isin(members["run"])]
        scatter.scatter(paired["value_log_s"], paired["value_mle"], s=14, color=colors[group], alpha=0.7,
                        label=group)
    over_time.axhline(0, color="black", linewidth=1, linestyle=":")
    over_time.plot([], [], color="gray", linestyle="-", label="MLE (solid)")
    over_time.plot([], [], color="gray", linestyle="--", label="log-sensitivity (dashed)")
    over_time.set_xlabel("SAL update")
    over_time.set_ylabel("exponent (natural log, per time step)")
    over_time.set_title("Log-sensitivity and MLE over SAL updates (0 = edge of chaos)", fontsize="medium")
    over_time.grid(alpha=0.3)
    _legend(over_time)
    both = list(mle["value"]) + list(log_s["value"])
    low, high = min(both), max(both)
    pad = 0.05 * (high - low or 1)
    scatter.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=1,
                 label="MLE = log-sensitivity")
    scatter.axhline(0, color="black", linewidth=1, linestyle=":")
    scatter.set_xlabel("log-sensitivity  ln RMS(s) (per time step)")
    scatter.set_ylabel("maximum Lyapunov exponent (per time step)")
    scatter.set_title("Each logged step of each run", fontsize="medium")
    scatter.grid(alpha=0.3)
    _legend(scatter)
    return figure


def gradient_profile(runs, metrics):
    """Per-layer gradient norm at each run's first and last logged step (for an RNN the
    'layer' is the time step); log scale, geometric mean over seeds."""
    rows = metrics[(metrics["metric"] == "grad_norm") & metrics["layer"].notna()]
    if rows.empty:
        return None
    from matplotlib.ticker import MaxNLocator

    bounds = rows.groupby("run")["step"].agg(["min", "max"])
    figure, axes = _figure(2, sharey=True)
    colors, widths = _colors(runs["group"].unique()), _widths(runs["group"].unique())
    models = set(runs.loc[runs["run"].isin(rows["run"]), "model"].dropna())
    recurrent = bool(models) and all(REGISTRY["model"].get(m, _NO_ENTRY).through_time for m in models)
    dropped = False
    for ax, (edge, title) in zip(axes, [("min", "first logged step"), ("max", "last logged step")]):
        at = rows[rows["step"] == rows["run"].map(bounds[edge])]
        dropped |= bool((at["value"] <= 0).any())
        at = at[at["value"] > 0].rename(columns={"layer": "x"})
        for group, frame in at.groupby("group", sort=False):
            steps = sorted(frame["step"].unique())
            label = f"{group}, step {steps[0]:.0f}" + ("…" if len(steps) > 1 else "")
            _curve(ax, frame, colors[group], label, geometric=True, linewidth=widths[group])
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("time step t (0 = the first input)" if recurrent else "layer (0 = nearest the input, last = readout)")
        ax.set_ylabel("‖∂loss/∂h_t‖, batch mean (log scale)" if recurrent else "‖∂loss/∂W‖ of the layer (log scale)")
        ax.set_title(f"Gradient norm per {'time step' if recurrent else 'layer'}: {title}", fontsize="medium")
        ax.grid(alpha=0.3)
        _legend(ax)
    if dropped:
        figure.suptitle("zero gradients (underflow) are not drawn on the log scale", fontsize="small")
    return figure


def sensitivity_rms(runs, metrics):
    """RMS sensitivity of the network's neurons over training (exp of log_sensitivity)."""
    import numpy as np

    trained = runs[runs["command"] == "train"]
    log_s = _network_rows(metrics, "log_sensitivity", trained["run"])
    if log_s.empty:
        return None
    figure, (ax,) = _figure(1, width=7.5)
    colors, widths = _colors(runs["group"].unique()), _widths(runs["group"].unique())
    for group, members in trained.groupby("group", sort=False):
        frame = log_s[log_s["run"].isin(members["run"])]
        if len(frame):
            _curve(ax, frame.assign(value=np.exp(frame["value"])), colors[group], group, geometric=True,
                   linewidth=widths[group])
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="s = 1 (gain 1 per layer / step)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("RMS sensitivity over neurons (log scale)")
    ax.set_title("Sensitivity over training (line = geometric mean over seeds, band = min–max)",
                 fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    _legend(ax)
    return figure


def success_rate(runs, metrics):
    """Success rate per group over seeds, and the final test metric against the chance level."""
    import numpy as np

    trained = runs[runs["command"] == "train"]
    if len(trained) < 2:
        return None
    groups = list(trained["group"].unique())
    figure, (rates, finals_ax) = _figure(2, width=max(4.0, 0.9 * len(groups) + 2.5), height=4.8)
    colors = _colors(runs["group"].unique())
    x = np.arange(len(groups))
    names = [g.replace(", ", "\n") for g in groups]
    for i, group in enumerate(groups):
        members = started(trained[trained["group"] == group])
        if not len(members):
            continue
        wins = int(members["success"].sum())
        rate, interval = _rate(members)
        rates.bar(i, rate, color=colors[group], width=0.7, yerr=_yerr([rate], [interval]), capsize=4)
        rates.annotate(f"{wins}/{len(members)}", (i, interval[1]), ha="center", va="bottom", fontsize="small",
                       xytext=(0, 2), textcoords="offset points")
        values = finals(members)
        if len(values):
            mean, interval = _final(members)
            finals_ax.bar(i, mean, color=colors[group], width=0.7, alpha=0.6, yerr=_yerr([mean], [interval]),
                          capsize=4)
            finals_ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values,
                              color="black", s=10, zorder=3, label="one seed" if i == 0 else None)
        chance = members["chance"].astype(float).dropna()
        if len(chance):
            finals_ax.hlines(chance.iloc[0], i - 0.45, i + 0.45, color="red", linestyle="--", linewidth=1.5,
                             label="chance level" if "chance level" not in finals_ax.get_legend_handles_labels()[1]
                             else None, zorder=4)
    rates.set_ylim(0, 112)
    finals_ax.margins(y=0.15)  # room for the legend above the bars
    rates.set_ylabel("success rate over seeds (%)")
    rates.set_title("Runs that met the task's success criterion (bar: Wilson 95% interval)", fontsize="medium")
    metric_names = trained["metric"].dropna().unique()
    metric = metric_names[0] if len(metric_names) == 1 else "test metric"
    finals_ax.set_ylabel(f"final {METRIC_LABELS.get(metric, metric).replace(', log scale', '')}")
    finals_ax.set_title("Final test metric: mean, bootstrap 95% interval, dots = seeds", fontsize="medium")
    for ax in (rates, finals_ax):
        ax.set_xticks(x, names, fontsize="small")
        ax.grid(alpha=0.3, axis="y")
    _legend(finals_ax)
    return figure


def _numeric(values) -> list[float] | None:
    """The distinct numbers of a setting (runs without it left aside); None unless 2 or more."""
    present = [v for v in values if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return None
    numbers = sorted({float(v) for v in present if v == v})
    return numbers if len(numbers) >= 2 else None


def _x_positions(xs: list[float], methods: int):
    """The x scale and each method's positions: a log scale when the values are positive and span
    more than a decade; methods spread sideways by a fraction of the smallest gap between x values
    (on the scale drawn), so that a point never looks like another value's."""
    import numpy as np

    log = xs[0] > 0 and xs[-1] / xs[0] > 10
    scale = np.log(xs) if log else np.asarray(xs)
    gap = float(np.diff(scale).min())
    spread = np.linspace(-0.12, 0.12, methods) * gap if methods > 1 else np.zeros(1)
    return log, [np.exp(scale + s) if log else scale + s for s in spread]


def success_against_setting(runs, metrics):
    """Success rate against a swept numeric setting (depth, lag, …), one line per method and one
    panel per value of the other swept settings (task, …); below, the mean final test metric.
    Bars: 95% intervals (Wilson for the rate, bootstrap for the mean). The swept settings are
    `runs.attrs["keys"]` (set by `salrun.collect.load_collection`)."""
    from matplotlib.ticker import NullLocator

    trained = started(runs[runs["command"] == "train"])
    keys = list(runs.attrs.get("keys", []))
    numeric = {k: _numeric(trained[k]) for k in keys} if len(trained) else {}
    x_key = next((k for k, xs in numeric.items() if xs is not None), None)
    if x_key is None:
        return None
    xs, others = numeric[x_key], [k for k in keys if k != x_key]
    panels = list(dict.fromkeys(zip(*(trained[k] for k in others)))) if others else [()]
    methods = list(trained["method"].unique())
    colors = _colors(methods)
    log, positions = _x_positions(xs, len(methods))
    figure = _canvas(max(4.8, 1.2 * len(xs) + 2) * len(panels), 8.0)
    grid = figure.subplots(2, len(panels), squeeze=False, sharex=True)
    for column, panel in enumerate(panels):
        rates_ax, final_ax = grid[0][column], grid[1][column]
        subset = trained[[tuple(values) == panel for values in zip(*(trained[k] for k in others))]] if others \
            else trained
        for where, method in zip(positions, methods):
            rows = subset[subset["method"] == method]
            points = {"rate": ([], [], []), "final": ([], [], [])}
            for x, at in zip(where, (rows[rows[x_key].map(lambda v, x=x: v is not None and float(v) == x)]
                                     for x in xs)):
                if not len(at):
                    continue
                for name, (value, interval) in (("rate", _rate(at)), ("final", _final(at))):
                    points[name][0].append(x)
                    points[name][1].append(value)
                    points[name][2].append(interval)
            for ax, (x, values, intervals) in ((rates_ax, points["rate"]), (final_ax, points["final"])):
                ax.errorbar(x, values, yerr=_yerr(values, intervals), marker="o", capsize=3, color=colors[method],
                            label=method)
        chance = subset["chance"].astype(float).dropna()
        if len(chance):
            final_ax.axhline(chance.iloc[0], color="red", linestyle="--", linewidth=1.2, label="chance level")
        metric_names = subset["metric"].dropna().unique()
        metric = metric_names[0] if len(metric_names) == 1 else "test metric"
        title = ", ".join(f"{k}={v}" for k, v in zip(others, panel))
        rates_ax.set_title(title or "success rate", fontsize="medium")
        rates_ax.set_ylim(-5, 105)
        rates_ax.set_ylabel("success rate over seeds (%), Wilson 95%")
        final_ax.set_ylabel(f"mean final {METRIC_LABELS.get(metric, metric)}, bootstrap 95%")
        if metric in ("nmse", "test_loss") and (subset["final"].astype(float) > 0).all():
            final_ax.set_yscale("log")
        if log:
            final_ax.set_xscale("log")
        final_ax.set_xticks(xs, [f"{x:g}" for x in xs])
        final_ax.xaxis.set_minor_locator(NullLocator())
        final_ax.set_xlabel(x_key + (" (log scale)" if log else ""))
        for ax in (rates_ax, final_ax):
            ax.grid(alpha=0.3)
    _legend(grid[0][0], loc="best")
    _legend(grid[1][0], loc="best")
    return figure


def _rate(runs) -> tuple[float, tuple[float, float]]:
    """Success rate of the runs (%) and its Wilson 95% interval."""
    low, high = stats.wilson(int(runs["success"].sum()), len(runs))
    return 100 * float(runs["success"].mean()), (100 * low, 100 * high)


def _final(runs) -> tuple[float, tuple[float, float] | None]:
    """Mean final metric of the completed runs (NaN if none) and its bootstrap 95% interval."""
    values = finals(runs)
    return (float(values.mean()) if len(values) else float("nan")), stats.bootstrap_mean(values)


def _yerr(values, intervals):
    """matplotlib's asymmetric error bars from (low, high) intervals; none where there is none."""
    import numpy as np

    pairs = [(v - i[0], i[1] - v) if i is not None else (0.0, 0.0) for v, i in zip(values, intervals)]
    return np.clip(np.array(pairs, dtype=float).T.reshape(2, len(values)), 0, None)


# -- per-layer probes (train.probes=true, salrun.probes) ---------------------------------------

PROBE_GROUPS = 4  # the per-layer maps draw the first groups; more would not be readable


def _layer_grid(metrics, name: str, run_ids):
    """A metric per layer (rows) and step (columns), mean over the runs given."""
    rows = metrics[(metrics["metric"] == name) & metrics["layer"].notna() & metrics["run"].isin(run_ids)]
    return rows.pivot_table(index="layer", columns="step", values="value", aggfunc="mean")


def _probed(runs, metrics):
    """The train runs that recorded probe metrics, and their groups in order."""
    ids = set(metrics.loc[metrics["metric"] == "tangent_gain", "run"])
    probed = runs[runs["run"].isin(ids) & (runs["command"] == "train")]
    return probed, list(probed["group"].unique())


def depth_drift(runs, metrics):
    """What a deep run's drift follows: the log gain of the whole stack over training, summed over
    layers (the tangent gain, and ln RMS(s) dashed), beside the test metric."""
    import numpy as np

    probed, groups = _probed(runs, metrics)
    if not groups:
        return None
    figure, (gain_ax, metric_ax) = _figure(2)
    colors = _colors(runs["group"].unique())
    for group in groups:
        ids = probed.loc[probed["group"] == group, "run"]
        tangent = _layer_grid(metrics, "tangent_gain", ids).sum()
        log_rms = np.log(_layer_grid(metrics, "sensitivity_rms", ids)).sum()
        gain_ax.plot(tangent.index, tangent.values, color=colors[group], marker="o" if len(tangent) <= 12 else None,
                     label=f"{group} (n={len(ids)})")
        gain_ax.plot(log_rms.index, log_rms.values, color=colors[group], linestyle="--")
        metric = probed.loc[probed["group"] == group, "metric"].iloc[0]
        _curve(metric_ax, _network_rows(metrics, metric, ids), colors[group], group, geometric=metric == "nmse")
        metric_ax.set_ylabel(METRIC_LABELS.get(metric, f"test {metric}"))
    gain_ax.axhline(0, color="black", linewidth=1, linestyle=":")
    gain_ax.plot([], [], color="gray", label="Σ tangent log gain (solid)")
    gain_ax.plot([], [], color="gray", linestyle="--", label="Σ ln RMS(s) (dashed)")
    gain_ax.set_xlabel("training step")
    gain_ax.set_ylabel("summed over layers (natural log)")
    gain_ax.set_title("Log gain of the whole stack (mean over seeds)", fontsize="medium")
    metric_ax.set_xlabel("training step")
    metric_ax.set_title("Test metric (line = mean over seeds, band = min–max)", fontsize="medium")
    for ax in (gain_ax, metric_ax):
        ax.grid(alpha=0.3)
        _legend(ax)
    return figure


LAYER_MAPS = [("grad_norm", "log10 ‖∂loss/∂W‖", "viridis"), ("sensitivity_rms", "ln RMS(s)", "coolwarm"),
              ("tangent_gain", "tangent log gain", "coolwarm")]


def layer_maps(runs, metrics):
    """Per layer (rows) and step (columns), one row of panels per group (the first PROBE_GROUPS):
    the gradient norm (log10), ln RMS(s) and the tangent log gain, mean over seeds; the two gains
    on one colour scale centred on 0 (gain 1)."""
    import numpy as np

    probed, groups = _probed(runs, metrics)
    if not groups:
        return None
    groups = groups[:PROBE_GROUPS]
    figure = _canvas(5.0 * len(LAYER_MAPS), 3.6 * len(groups))
    grid = figure.subplots(len(groups), len(LAYER_MAPS), squeeze=False)
    for row, group in enumerate(groups):
        ids = probed.loc[probed["group"] == group, "run"]
        for ax, (name, label, cmap) in zip(grid[row], LAYER_MAPS):
            values = _layer_grid(metrics, name, ids)
            if values.empty:
                ax.set_axis_off()
                continue
            data = np.log10(values.clip(lower=1e-30)) if name == "grad_norm" else \
                np.log(values) if name == "sensitivity_rms" else values
            limit = None if name == "grad_norm" else max(float(np.nanmax(np.abs(data.to_numpy()))), 1e-3)
            image = ax.imshow(data.to_numpy(), aspect="auto", origin="lower", cmap=cmap, interpolation="nearest",
                              extent=[data.columns.min(), data.columns.max(), -0.5, len(data) - 0.5],
                              **({} if limit is None else {"vmin": -limit, "vmax": limit}))
            figure.colorbar(image, ax=ax, label=label)
            ax.set_title(f"{label} (mean over {len(ids)} seed(s))", fontsize="small")
            ax.set_xlabel("training step")
            ax.set_ylabel("layer (RNN: time step)")
        grid[row][0].set_ylabel(f"{group.replace(', ', chr(10))}\nlayer (RNN: time step)", fontsize="x-small")
    return figure


def sensitivity_percentiles(runs, metrics):
    """The neurons' sensitivities per layer at the first and the last logged step: the median,
    the 10th-90th percentile band and the min-max band over each layer's neurons (mean over seeds)."""
    from salrun.probes import PERCENTILES

    probed, groups = _probed(runs, metrics)
    if not groups or not (metrics["metric"] == "sensitivity_p50").any():
        return None
    figure, axes = _figure(2, sharey=True)
    colors = _colors(runs["group"].unique())
    for ax, edge, title in zip(axes, (min, max), ("first logged step", "last logged step")):
        for group in groups:
            ids = probed.loc[probed["group"] == group, "run"]
            at = {q: _layer_grid(metrics, f"sensitivity_p{q}", ids) for q in PERCENTILES}
            step = edge(at[50].columns)
            cut = {q: grid[step] for q, grid in at.items()}
            ax.plot(cut[50].index, cut[50].values, color=colors[group], label=f"{group}, step {step:.0f}")
            ax.fill_between(cut[10].index, cut[10].values, cut[90].values, color=colors[group], alpha=0.3,
                            linewidth=0)
            ax.fill_between(cut[0].index, cut[0].values, cut[100].values, color=colors[group], alpha=0.12,
                            linewidth=0)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="s = 1")
        ax.set_yscale("log")
        ax.set_xlabel("layer (0 = nearest the input; RNN: time step)")
        ax.set_ylabel("neuron sensitivity s_j (batch mean, log scale)")
        ax.set_title(f"Sensitivity per neuron: median, 10–90% and min–max, {title}", fontsize="medium")
        ax.grid(alpha=0.3)
        _legend(ax)
    return figure


def success_by_pair(runs, metrics):
    """With `report --against M --pair-by KEY`: per value of KEY (a preset), each method's success
    rate (Wilson 95%) and mean final metric (bootstrap 95%), chance dotted; every method keeps
    its place in every panel. `runs.attrs["pair_by"]` names KEY (salrun.report sets it)."""
    key = runs.attrs.get("pair_by")
    trained = started(runs[runs["command"] == "train"])
    if key is None or key not in trained or not len(trained):
        return None
    values, methods = list(dict.fromkeys(trained[key])), list(dict.fromkeys(trained["method"]))
    figure = _canvas(max(4.0, 2.3 * len(values)), 5.6)
    grid = figure.subplots(2, len(values), squeeze=False)
    for column, value in enumerate(values):
        rate_ax, final_ax = grid[0][column], grid[1][column]
        subset = trained[trained[key] == value]
        here = [(i, subset[subset["method"] == m]) for i, m in enumerate(methods) if (subset["method"] == m).any()]
        for ax, measure in ((rate_ax, _rate), (final_ax, _final)):
            points = [(i, *measure(members)) for i, members in here]
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=_yerr([p[1] for p in points], [p[2] for p in points]), fmt="o", capsize=3)
        chance = subset["chance"].astype(float).dropna()
        if len(chance):
            final_ax.axhline(chance.iloc[0], color="grey", linestyle=":", linewidth=1)
        metric = subset["metric"].dropna().iloc[0] if subset["metric"].notna().any() else "test metric"
        if metric in ("mse", "nmse") and (subset["final"].astype(float) > 0).all():
            final_ax.set_yscale("log")
        rate_ax.set_title(f"{value}", fontsize="small")
        rate_ax.set_ylim(-5, 105)
        final_ax.set_ylabel(f"mean final {metric}", fontsize="small")
        for ax in (rate_ax, final_ax):
            ax.set_xlim(-0.6, len(methods) - 0.4)
            ax.set_xticks(range(len(methods)), methods, rotation=60, fontsize="small")
            ax.grid(alpha=0.3, axis="y")
    grid[0][0].set_ylabel("success rate (%), Wilson 95%")
    figure.suptitle(f"Per {key}: success (Wilson 95%) and mean final metric (bootstrap 95%); dotted: chance",
                    fontsize="small")
    return figure


FIGURES = {
    "learning_curves.png": learning_curves,
    "sensitivity_vs_mle.png": sensitivity_vs_mle,
    "gradient_profile.png": gradient_profile,
    "sensitivity_rms.png": sensitivity_rms,
    "success_rate.png": success_rate,
    "success_against_setting.png": success_against_setting,
    "success_by_pair.png": success_by_pair,
    "depth_drift.png": depth_drift,
    "layer_maps.png": layer_maps,
    "sensitivity_percentiles.png": sensitivity_percentiles,
}


# Figures with a line or bar per group; past MAX_GROUPS groups they are unreadable, and a sweep
# that large is summed up by success_against_setting and the table.
MAX_GROUPS = 16
PER_GROUP = {"learning_curves.png", "gradient_profile.png", "sensitivity_rms.png", "success_rate.png",
             "depth_drift.png", "sensitivity_percentiles.png"}


def make_figures(runs, metrics, directory: Path) -> list[Path]:
    """Write every figure the data supports into `directory`; returns their paths."""
    from salrun.results import write_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    crowded = runs["group"].nunique() > MAX_GROUPS
    for name, draw in FIGURES.items():
        if crowded and name in PER_GROUP:
            continue
        figure = draw(runs, metrics)
        if figure is None:
            continue
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        write_atomic(directory / name, buffer.getvalue())
        made.append(directory / name)
    return made
