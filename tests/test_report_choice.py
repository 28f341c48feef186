"""`salrun report` options that the docs scripts used to compute themselves (issue 27): --judged,
--best [--per], --where, --format overrides and --against with --pair-by; on hand-made run folders
whose curves and successes are known."""
import json

import pytest
import yaml

from conftest import salrun
from salrun.collect import load_collection, select
from salrun.report import best_rows, format_table, summary_table
from salrun.results import RunFolderError, to_json


def run(folder, method, seed, curve, experiment="bench_a", metric="accuracy", settings=None, status="ok"):
    """A run folder: `curve` the test metric at steps 10, 20, …; judged on the mean of the last 2;
    threshold 0.9 (accuracy) or 0.1 (nmse, lower is better)."""
    settings = settings or {}
    folder.mkdir(parents=True)
    higher = metric == "accuracy"
    threshold, chance = (0.9, 0.5) if higher else (0.1, 1.0)
    judged = sum(curve[-2:]) / 2
    config = {"model": {"name": "mlp"}, "method": {"name": method, **settings.get("method", {})}, "seed": seed}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rows = "".join(f"{10 * (i + 1)},{metric},{v},\n" for i, v in enumerate(curve))
    (folder / "metrics.csv").write_text("step,metric,value,layer\n" + rows)
    overrides = [f"experiment={experiment}", f"method={method}", f"seed={seed}",
                 *(f"method.{k}={v}" for k, v in settings.get("method", {}).items())]
    (folder / "summary.json").write_text(to_json({
        "status": status, "command": "train", "experiment": experiment, "method": method, "seed": seed,
        "model": "mlp", "task": "spirals", "metric": metric, "final": {metric: curve[-1]}, "judged": judged,
        "success": (judged >= threshold) if higher else (judged < threshold), "chance": chance,
        "threshold": threshold, "steps": 10 * len(curve), "wall_seconds": 1.0, "overrides": overrides}))
    return folder


def test_judged_best_and_reached_once(tmp_path):
    runs = [run(tmp_path / "a", "sal", 0, [0.6, 0.95, 0.92, 0.94]),   # success, judged 0.93
            run(tmp_path / "b", "sal", 1, [0.7, 0.96, 0.85, 0.80]),   # reached 0.96, then lost: judged 0.825
            run(tmp_path / "c", "sal", 2, [0.5, 0.6, 0.55, 0.6])]     # never reached
    (row,) = summary_table(load_collection(runs), judged=True).to_dict("records")
    assert row["judged_mean"] == pytest.approx((0.93 + 0.825 + 0.575) / 3)
    assert (row["judged_min"], row["judged_max"]) == pytest.approx((0.575, 0.93))
    assert row["best_mean"] == pytest.approx((0.95 + 0.96 + 0.6) / 3)
    assert (row["reached"], row["lost"], row["successes"]) == (2, 1, 1)
    text = format_table(summary_table(load_collection(runs), judged=True), "markdown")
    assert "| reached once | reached, then lost |" in text and "0.777 (0.575–0.930)" in text


def test_best_of_a_lower_is_better_metric_is_its_minimum(tmp_path):
    (row,) = summary_table(load_collection([run(tmp_path / "a", "sal", 0, [0.5, 0.05, 0.2, 0.3], metric="nmse")]),
                           judged=True).to_dict("records")
    assert row["best_mean"] == pytest.approx(0.05) and row["reached"] == 1 and row["lost"] == 1


def rho_sweep(tmp_path):
    """spectral at rho 1.0, 1.1, 1.2 on two tasks' experiments: success rates and finals known."""
    curves = {("a", 1.0): [[0.5, 0.95], [0.5, 0.5]], ("a", 1.1): [[0.9, 0.95], [0.9, 0.92]],
              ("a", 1.2): [[0.9, 0.99], [0.9, 0.99]],   # 2/2 as 1.1, higher mean final: the best of a
              ("b", 1.0): [[0.9, 0.91], [0.9, 0.93]], ("b", 1.1): [[0.9, 0.91], [0.9, 0.93]],  # a tie: the first
              ("b", 1.2): [[0.5, 0.5], [0.5, 0.5]]}
    return [run(tmp_path / f"{e}_{rho}_{seed}", "spectral", seed, curve, experiment=f"bench_{e}",
                settings={"method": {"rho": rho}})
            for (e, rho), seeds in curves.items() for seed, curve in enumerate(seeds)]


def test_best_per_group_by_success_then_mean_final(tmp_path):
    collection = load_collection(rho_sweep(tmp_path))
    assert set(collection.keys) == {"experiment", "method.rho"}
    chosen = best_rows(summary_table(collection), collection.runs, ["experiment"])
    assert [(r["experiment"], r["method.rho"]) for r in chosen.to_dict("records")] == [("bench_a", 1.2),
                                                                                         ("bench_b", 1.0)]
    overall = best_rows(summary_table(collection), collection.runs, [])
    assert overall["method.rho"].tolist() == [1.2]


def test_where_and_the_overrides_format_print_the_choice(tmp_path):
    folders = rho_sweep(tmp_path)
    result = salrun("report", *map(str, folders), "--best", "--where", "experiment=bench_b", "--format", "overrides",
                    "--no-figures")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "method.rho=1.0\n"
    collection = select(load_collection(folders), ["method.rho=1.1"])
    assert set(collection.runs["method.rho"]) == {1.1} and set(collection.metrics["run"]) <= set(collection.runs["run"])
    with pytest.raises(RunFolderError, match="no run has it"):
        select(load_collection(folders), ["method.rho=7"])


@pytest.mark.parametrize("args,message", [
    (["--where", "colour=red"], "--where colour=red: give KEY=VALUE with KEY a setting"),
    (["--pair-by", "experiment"], "--pair-by pairs rows for --against"),
    (["--against", "spectral", "--pair-by", "colour"], "--pair-by colour: not a setting"),
    (["--per", "experiment"], "--per chooses within groups for --best"),
])
def test_bad_choice_options_exit_2_with_one_line(tmp_path, args, message):
    result = salrun("report", *map(str, rho_sweep(tmp_path)[:2]), *args, "--no-figures")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"salrun: error: {result.stderr.split('error: ', 1)[1].strip()}"]
    assert message in result.stderr


def test_against_pairs_methods_tuned_apart_by_the_key_named(tmp_path):
    """Each method at its own tuned setting on two presets: paired by experiment, not by every setting."""
    folders = []
    for e, (sal, none) in {"a": ([0.95, 0.95, 0.95], [0.5, 0.95, 0.5]), "b": ([0.92] * 3, [0.93] * 3)}.items():
        folders += [run(tmp_path / f"{e}_sal_{s}", "sal", s, [v, v], f"bench_{e}", settings={"method": {"lr": 0.01}})
                    for s, v in enumerate(sal)]
        folders += [run(tmp_path / f"{e}_none_{s}", "none", s, [v, v], f"bench_{e}", settings={"method": {"lr": 0.0}})
                    for s, v in enumerate(none)]
    collection = load_collection(folders)
    unpaired = summary_table(collection, against="sal")
    assert unpaired["success_diff"].isna().all()  # no setting holds both methods
    rows = summary_table(collection, against="sal", pair_by="experiment").to_dict("records")
    none_a = next(r for r in rows if r["method"] == "none" and r["experiment"] == "bench_a")
    assert none_a["success_diff"] == pytest.approx(1 / 3 - 1)
    assert none_a["final_diff"] == pytest.approx((0.5 + 0.95 + 0.5) / 3 - 0.95)
    none_b = next(r for r in rows if r["method"] == "none" and r["experiment"] == "bench_b")
    assert none_b["success_diff"] == 0 and none_b["final_diff"] == pytest.approx(0.01)
    data = json.loads(format_table(summary_table(collection, against="sal", pair_by="experiment"), "json"))
    assert {r["experiment"] for r in data} == {"bench_a", "bench_b"}
