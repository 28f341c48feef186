"""Probe metrics (train.probes=true, salrun/probes.py) and the figures that draw them; and the
benchmark summary figure (success_by_pair). Figures are checked on their data, axes and labels."""
import math

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_FFN, TINY_RNN, salrun
from salrun.collect import load_collection
from salrun.figures import depth_drift, layer_maps, make_figures, sensitivity_percentiles, success_by_pair
from salrun.probes import PERCENTILES
from salrun.settings import batch_key, job_settings
from salrun.launch import compose


def train(tmp_path, name, *overrides):
    result = salrun("train", *overrides, "--out", str(tmp_path / name), "--quiet")
    assert result.returncode == 0, result.stderr
    return pd.read_csv(tmp_path / name / "metrics.csv")


def test_probes_are_off_by_default_and_change_nothing_that_is_trained(tmp_path):
    plain = train(tmp_path, "plain", *TINY_FFN)
    probed = train(tmp_path, "probed", *TINY_FFN, "train.probes=true")
    assert not plain["metric"].str.startswith(("tangent_gain", "sensitivity_p")).any()
    shared = probed[probed["metric"].isin(set(plain["metric"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(shared, plain)  # the same numbers, row for row
    steps = sorted(plain.loc[plain["metric"] == "accuracy", "step"])
    gains = probed[probed["metric"] == "tangent_gain"]
    assert sorted(gains["step"].unique()) == steps and gains.groupby("step").size().tolist() == [3] * len(steps)
    wide = probed[probed["metric"].str.startswith("sensitivity_p")].pivot_table(
        index=["step", "layer"], columns="metric", values="value")
    ordered = wide[[f"sensitivity_p{q}" for q in PERCENTILES]].to_numpy()
    assert (np.diff(ordered, axis=1) >= 0).all()  # percentiles in order
    rms = probed[probed["metric"] == "sensitivity_rms"].set_index(["step", "layer"])["value"]
    # the smallest neuron's batch mean sits below the RMS over neurons and batch
    assert (wide["sensitivity_p0"] <= rms.loc[wide.index] + 1e-6).all()


def test_an_rnn_probes_per_time_step_and_a_probed_run_trains_alone(tmp_path):
    probed = train(tmp_path, "rnn", *TINY_RNN, "train.probes=true")
    per_step = probed[(probed["metric"] == "tangent_gain") & (probed["step"] == 6)]
    steps = probed[(probed["metric"] == "sensitivity_rms") & (probed["step"] == 6)]
    assert len(per_step) == len(steps) > 5 and per_step["value"].map(math.isfinite).all()
    settings = job_settings("train", compose("train", [*TINY_FFN, "train.probes=true"]))
    assert batch_key(settings) is None
    assert batch_key(job_settings("train", compose("train", TINY_FFN))) is not None


def probe_frames(groups=("sal", "none"), layers=3, steps=(1, 10, 20)):
    """Two groups of two runs; tangent gain per layer = +0.1 (sal) or -0.5 (none) at every step."""
    runs, rows = [], []
    for g, method in enumerate(groups):
        for seed in range(2):
            run = len(runs)
            runs.append({"run": run, "group": method, "method": method, "command": "train", "metric": "accuracy",
                         "status": "ok", "success": True, "final": 0.9, "chance": 0.5, "model": "mlp"})
            for step in steps:
                rows.append((run, method, step, "accuracy", 0.5 + step / 100, np.nan))
                for layer in range(layers):
                    rows.append((run, method, step, "tangent_gain", 0.1 if method == "sal" else -0.5, layer))
                    rows.append((run, method, step, "sensitivity_rms", 1.0 if method == "sal" else 0.5, layer))
                    rows.append((run, method, step, "grad_norm", 10.0 ** -(layer + 1), layer))
                    for q in PERCENTILES:
                        rows.append((run, method, step, f"sensitivity_p{q}", 0.5 + q / 100 + seed * 0.1, layer))
    runs = pd.DataFrame(runs)
    runs.attrs["keys"] = []
    return runs, pd.DataFrame(rows, columns=["run", "group", "step", "metric", "value", "layer"])


def test_depth_drift_sums_the_layers_gains():
    runs, metrics = probe_frames()
    gain_ax, metric_ax = depth_drift(runs, metrics).axes
    sal, none = [line for line in gain_ax.get_lines() if line.get_label().startswith(("sal", "none"))]
    assert list(sal.get_xdata()) == [1, 10, 20] and list(sal.get_ydata()) == pytest.approx([0.3] * 3)
    assert list(none.get_ydata()) == pytest.approx([-1.5] * 3)
    dashed = [line for line in gain_ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert [list(d.get_ydata()) for d in dashed] == [pytest.approx([0.0] * 3), pytest.approx([3 * math.log(0.5)] * 3)]
    assert gain_ax.get_xlabel() == "training step" and "summed over layers" in gain_ax.get_ylabel()
    assert metric_ax.get_ylabel() == "test accuracy"
    assert depth_drift(runs, metrics[metrics["metric"] != "tangent_gain"]) is None  # no probes, no figure


def test_layer_maps_hold_each_metric_per_layer_and_step():
    runs, metrics = probe_frames()
    figure = layer_maps(runs, metrics)
    images = [ax.images[0] for ax in figure.axes if ax.images]
    assert len(images) == 6  # 2 groups x (gradient, ln RMS(s), tangent gain)
    grad = images[0].get_array()
    assert grad.shape == (3, 3) and grad[:, 0].tolist() == pytest.approx([-1, -2, -3])  # log10, layer rows
    assert images[2].get_array()[0, 0] == pytest.approx(0.1) and images[5].get_array()[0, 0] == pytest.approx(-0.5)
    low, high = images[5].get_clim()
    assert low == -high  # the gains' colour scale is centred on 0
    assert "layer" in figure.axes[0].get_ylabel() and figure.axes[0].get_xlabel() == "training step"


def test_sensitivity_percentiles_draw_median_and_bands_per_layer():
    runs, metrics = probe_frames()
    first, last = sensitivity_percentiles(runs, metrics).axes[:2]
    sal = next(line for line in last.get_lines() if line.get_label().startswith("sal"))
    assert list(sal.get_xdata()) == [0, 1, 2] and list(sal.get_ydata()) == pytest.approx([1.05] * 3)  # mean of 2 seeds
    assert "step 20" in sal.get_label() and "step 1" in next(
        line.get_label() for line in first.get_lines() if line.get_label().startswith("sal"))
    assert len(last.collections) == 4  # two bands a group
    assert last.get_yscale() == "log" and "sensitivity" in last.get_ylabel()


def test_success_by_pair_places_each_method_per_preset():
    rows = []
    for preset in ("bench_a", "bench_b"):
        for method, wins in (("none", 1), ("sal", 4)):
            for seed in range(5):
                rows.append({"experiment": preset, "method": method, "seed": seed, "status": "ok",
                             "success": seed < wins, "final": 0.9 if seed < wins else 0.5,
                             "command": "train", "metric": "accuracy", "chance": 0.5})
    runs = pd.DataFrame(rows)
    runs["run"] = range(len(runs))
    runs.attrs["pair_by"] = "experiment"
    figure = success_by_pair(runs, None)
    rate = figure.axes[0]
    (container,) = rate.containers
    assert list(container.lines[0].get_ydata()) == pytest.approx([20, 80])
    assert [t.get_text() for t in rate.get_xticklabels()] == ["none", "sal"]
    assert rate.get_title() == "bench_a" and "Wilson" in rate.get_ylabel()
    runs.attrs["pair_by"] = None
    assert success_by_pair(runs, None) is None


def test_report_draws_the_probe_figures_of_a_probed_run(tmp_path):
    train(tmp_path, "probed", *TINY_FFN, "train.probes=true")
    collection = load_collection([tmp_path / "probed"])
    made = {p.name for p in make_figures(collection.runs, collection.metrics, tmp_path / "figures")}
    assert {"depth_drift.png", "layer_maps.png", "sensitivity_percentiles.png"} <= made
