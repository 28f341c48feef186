"""salrun.figures.success_against_setting: success rate against a swept number, per method."""
import pandas as pd
import pytest

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
                    rows.append({"method": method, "model.depth": str(depth), "task": task, "seed": seed,
                                 "status": "ok", "success": ok, "final": 0.9 if ok else 0.5})
    return rows


def test_success_rate_is_plotted_against_the_numeric_setting_per_method_and_task():
    def succeeds(method, depth, task, seed):  # sal: wins at every depth; none: seeds < 100/depth
        return method == "sal" or seed < 100 // depth
    runs = sweep_runs(["model.depth", "task"], grid(["sal", "none"], [300, 50, 100], ["a", "b"], succeeds))
    figure = success_against_setting(runs, pd.DataFrame())
    axes = figure.axes
    assert len(axes) == 4  # success and final metric, for task a and task b
    rates = {line.get_label(): list(line.get_ydata()) for line in axes[0].get_lines()}
    assert rates["sal"] == [100.0, 100.0, 100.0]
    assert rates["none"] == [50.0, 25.0, 0.0]  # sorted by depth: 50 (seeds 0, 1 of 4), 100 (seed 0), 300
    assert [t.get_text() for t in axes[2].get_xticklabels()] == ["50", "100", "300"]
    assert {axes[0].get_title(), axes[1].get_title()} == {"task=a", "task=b"}


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
