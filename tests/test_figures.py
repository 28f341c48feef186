"""salrun.figures.success_against_setting: success rate against a swept number, per method, with
95% intervals, methods offset in proportion to the spacing of the x values."""
import math

import pandas as pd
import pytest
from scipy.stats import binomtest

from salrun.figures import make_figures, success_against_setting


def sweep_runs(keys, rows):
    runs = pd.DataFrame(rows)
    runs["command"], runs["metric"], runs["chance"] = "train", "accuracy", 0.5
    runs["run"] = range(len(runs))
    runs["group"] = [", ".join([r["method"], *(f"{k}={r[k]}" for k in keys)]) for r in runs.to_dict("records")]
    runs.attrs["keys"] = keys
    return runs


def grid(methods, depths, tasks, succeeds):
    rows = []
    for method in methods:
        for depth in depths:
            for task in tasks:
                for seed in range(4):
                    ok = succeeds(method, depth, task, seed)
                    rows.append({"method": method, "model.depth": depth, "task": task, "seed": seed,
                                 "status": "ok", "success": ok, "final": 0.9 if ok else 0.5})
    return rows


def series(ax):
    """Per method: x, y and the (low, high) of each error bar, from the errorbar containers."""
    found = {}
    for container in ax.containers:
        line, _, (bars,) = container.lines
        segments = [(float(s[0][1]), float(s[1][1])) for s in bars.get_segments()]
        found[container.get_label()] = (list(line.get_xdata()), list(line.get_ydata()), segments)
    return found


def test_success_rate_is_plotted_against_the_numeric_setting_per_method_and_task():
    def succeeds(method, depth, task, seed):  # sal: wins at every depth; none: seeds < 100/depth
        return method == "sal" or seed < 100 // depth
    runs = sweep_runs(["model.depth", "task"], grid(["sal", "none"], [300, 50, 100], ["a", "b"], succeeds))
    figure = success_against_setting(runs, pd.DataFrame())
    axes = figure.axes
    assert len(axes) == 4  # success and final metric, for task a and task b
    rates = series(axes[0])
    assert rates["sal"][1] == [100.0, 100.0, 100.0]
    assert rates["none"][1] == [50.0, 25.0, 0.0]  # sorted by depth: 50 (seeds 0, 1 of 4), 100 (seed 0), 300
    for wins, (low, high) in zip([2, 1, 0], rates["none"][2]):  # Wilson 95% intervals, as scipy has them
        expected = binomtest(wins, 4).proportion_ci(method="wilson")
        assert (low, high) == pytest.approx((100 * expected.low, 100 * expected.high))
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["50", "100", "300"]
    assert {axes[0].get_title(), axes[1].get_title()} == {"task=a", "task=b"}


@pytest.mark.parametrize("depths,log", [([3, 5, 10], False), ([10, 100, 1000], True)])
def test_methods_are_offset_by_a_fraction_of_the_spacing_of_the_x_values(depths, log):
    runs = sweep_runs(["model.depth"], grid(["sal", "none", "spectral"], depths, ["a"], lambda *a: True))
    figure = success_against_setting(runs, pd.DataFrame())
    ax = figure.axes[1]
    assert ax.get_xscale() == ("log" if log else "linear")
    scale = (lambda x: math.log(x)) if log else (lambda x: x)
    gap = min(scale(b) - scale(a) for a, b in zip(depths, depths[1:]))
    xs = {method: x for method, (x, _, _) in series(ax).items()}
    for i, depth in enumerate(depths):
        at = sorted(scale(xs[method][i]) for method in xs)
        # every method near its own x (depth 5 stays nearer 5 than 3.5), and apart from each other
        assert all(abs(x - scale(depth)) <= 0.15 * gap for x in at)
        assert at[0] < at[1] < at[2]


def test_no_figure_without_a_numeric_swept_setting():
    runs = sweep_runs(["task"], grid(["sal", "none"], [10], ["a", "b"], lambda *a: True))
    assert success_against_setting(runs, pd.DataFrame()) is None


@pytest.mark.parametrize("methods,expected", [(["sal", "none"], True), ([f"m{i}" for i in range(9)], False)])
def test_per_group_figures_are_left_out_of_crowded_sweeps(tmp_path, methods, expected):
    runs = sweep_runs(["model.depth"], grid(methods, [10, 20], ["a"], lambda m, d, t, s: s < 2))
    made = {p.name for p in make_figures(runs, pd.DataFrame(columns=["step", "metric", "value", "layer", "run",
                                                                     "group"]), tmp_path)}
    assert "success_against_setting.png" in made
    assert ("success_rate.png" in made) is expected


def test_success_rate_bars_carry_wilson_and_bootstrap_intervals():
    from matplotlib.container import ErrorbarContainer

    from salrun.figures import success_rate
    from salrun.stats import bootstrap_mean

    rows = grid(["sal", "none"], [10], ["a"], lambda m, d, t, s: m == "sal" and s < 3)
    for i, row in enumerate(rows):
        row["final"] = 0.5 + 0.1 * i  # every run its own value
    runs = sweep_runs(["model.depth"], rows)
    rates_ax, finals_ax = success_rate(runs, pd.DataFrame()).axes
    def bars(ax):
        return [c.lines[2][0].get_segments()[0] for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (sal_rate, none_rate) = bars(rates_ax)
    for segment, wins in ((sal_rate, 3), (none_rate, 0)):
        expected = binomtest(wins, 4).proportion_ci(method="wilson")
        assert (segment[0][1], segment[1][1]) == pytest.approx((100 * expected.low, 100 * expected.high))
    (sal_final, _) = bars(finals_ax)
    assert (sal_final[0][1], sal_final[1][1]) == pytest.approx(bootstrap_mean([0.5, 0.6, 0.7, 0.8]))
