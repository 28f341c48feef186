"""`salrun report` across folders, with 95% intervals and --against, on small hand-made run
folders (known successes and final values), checked against scipy and published values."""
import io
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

from conftest import TINY_FFN, salrun
from salrun import stats
from salrun.results import to_json


def wilson(k, n):
    ci = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


def scipy_bootstrap(*samples, statistic):
    result = scipy_stats.bootstrap(samples, statistic, method="percentile", n_resamples=20000, random_state=1,
                                   vectorized=False)
    return result.confidence_interval.low, result.confidence_interval.high


# --- the intervals ------------------------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(0, 5), (4, 5), (5, 5), (1, 10), (81, 263)])
def test_wilson_matches_scipy(k, n):
    assert stats.wilson(k, n) == pytest.approx(wilson(k, n), abs=1e-12)
    assert stats.wilson(0, 0) is None


@pytest.mark.parametrize("a,b,published", [
    ((56, 70), (48, 80), (0.0524, 0.3339)),  # Newcombe 1998, Stat. Med. 17:873, Table II, method 10
    ((9, 10), (3, 10), (0.1705, 0.8090)),
])
def test_newcombe_matches_the_published_intervals_and_the_formula(a, b, published):
    low, high = stats.newcombe(*a, *b)
    assert (low, high) == pytest.approx(published, abs=5e-5)
    (l1, u1), (l2, u2), p1, p2 = wilson(*a), wilson(*b), a[0] / a[1], b[0] / b[1]
    assert low == pytest.approx(p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
    assert high == pytest.approx(p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def test_bootstrap_intervals_match_scipy_and_are_reproducible():
    rng = np.random.default_rng(7)
    x, y = rng.normal(1.0, 0.5, 10), rng.normal(0.2, 0.3, 8)
    width = np.ptp(x)
    assert stats.bootstrap_mean(x) == pytest.approx(scipy_bootstrap(x, statistic=np.mean), abs=0.03 * width)
    assert stats.bootstrap_mean(x) == stats.bootstrap_mean(list(x))  # fixed seed: the same table every time
    difference = scipy_bootstrap(x, y, statistic=lambda a, b: np.mean(a) - np.mean(b))
    assert stats.bootstrap_difference(x, y) == pytest.approx(difference, abs=0.03 * width)
    assert stats.bootstrap_mean([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert stats.bootstrap_mean([1.0]) is None and stats.bootstrap_difference([1.0, 2.0], [1.0]) is None


# --- hand-made run folders ----------------------------------------------------------------------

def fake_run(folder, method, seed, success, final, depth=None, overrides=None, status="ok"):
    """A run folder as salrun writes it, with the summary fields the report reads."""
    folder.mkdir(parents=True)
    config = {"experiment": "deep_ffn", "model": {"name": "mlp", "depth": 30 if depth is None else depth},
              "method": {"name": method}, "seed": seed, "threads": 1}
    if overrides is None:
        overrides = [f"method={method}", f"seed={seed}"] + ([f"model.depth={depth}"] if depth is not None else [])
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "metrics.csv").write_text(f"step,metric,value,layer\n10,accuracy,{final},\n")
    (folder / "summary.json").write_text(to_json({
        "status": status, "command": "train", "method": method, "seed": seed, "model": "mlp", "task": "spirals",
        "metric": "accuracy", "final": {"accuracy": final}, "success": success, "chance": 0.5,
        "wall_seconds": 1.0, "overrides": overrides}))
    return overrides


def fake_sweep(folder, jobs):
    """jobs: (method, seed, depth, success, final) per job; final None: the job never started."""
    folder.mkdir(parents=True)
    rows = []
    for i, (method, seed, depth, success, final) in enumerate(jobs):
        overrides = [f"method={method}", f"model.depth={depth}", f"seed={seed}"]
        if final is not None:
            fake_run(folder / str(i), method, seed, success, final, depth, overrides)
        rows.append({"overrides": " ".join(overrides), "status": "ok" if final is not None else "not started",
                     "output": str(folder / str(i))})
    pd.DataFrame(rows).to_csv(folder / "sweep.csv", index=False)
    (folder / "sweep.yaml").write_text(yaml.safe_dump({"command": "train", "overrides": [], "launcher": "basic"}))
    return folder


SAL = [0.9, 0.8, 0.95, 0.7, 0.85]
NONE = [0.5, 0.6, 0.55, 0.5, 0.52]


@pytest.fixture
def sweep(tmp_path):
    """sal wins 4/5 and none 1/5 at depth 10; at depth 5 only sal ran, and 2 of its jobs never started."""
    jobs = [("sal", s, 10, s != 3, SAL[s]) for s in range(5)] + [("none", s, 10, s == 0, NONE[s]) for s in range(5)]
    jobs += [("sal", s, 5, True, 0.9 if s < 3 else None) for s in range(5)]
    return fake_sweep(tmp_path / "sweep", jobs)


def report(*args):
    result = salrun("report", *map(str, args))
    assert result.returncode == 0, result.stderr
    return result


def json_rows(*args):
    return json.loads(report(*args, "--format", "json", "--no-figures").stdout)


def row_of(rows, method, depth):
    (row,) = [r for r in rows if r["method"] == method and r["model.depth"] == depth]
    return row


def test_intervals_in_json_and_csv_and_the_compact_text(sweep):
    rows = json_rows(sweep)
    assert [(r["method"], r["model.depth"]) for r in rows] == [("sal", 5), ("sal", 10), ("none", 10)]
    sal = row_of(rows, "sal", 10)
    assert (sal["successes"], sal["runs"]) == (4, 5)
    assert (sal["success_lo"], sal["success_hi"]) == pytest.approx(wilson(4, 5))
    assert sal["final_mean"] == pytest.approx(np.mean(SAL))
    assert (sal["final_lo"], sal["final_hi"]) == pytest.approx(scipy_bootstrap(np.array(SAL), statistic=np.mean),
                                                              abs=0.03 * np.ptp(SAL))
    csv = pd.read_csv(io.StringIO(report(sweep, "--format", "csv", "--no-figures").stdout))
    assert {"success_lo", "success_hi", "final_lo", "final_hi", "not_started"} <= set(csv.columns)
    low, high = wilson(4, 5)
    text = report(sweep, "--no-figures").stdout
    assert f"4/5 (80%, {100 * low:.0f}–{100 * high:.0f}%)" in text  # 4/5 (80%, 38–96%)
    markdown = report(sweep, "--format", "markdown", "--no-figures").stdout
    assert f"4/5 (80%, {100 * low:.0f}–{100 * high:.0f}%)" in markdown


def test_jobs_that_never_started_are_counted_apart_not_as_failures(sweep):
    shallow = row_of(json_rows(sweep), "sal", 5)
    assert (shallow["runs"], shallow["ok"], shallow["not_started"]) == (3, 3, 2)
    assert shallow["success_rate"] == 1.0  # 3 of the 3 that ran, not 3 of 5
    text = report(sweep, "--no-figures").stdout
    assert "2 not started" in text and "failed" not in text


def test_against_gives_each_methods_difference_in_the_same_setting(sweep):
    rows = json_rows(sweep, "--against", "sal")
    none, sal, shallow = row_of(rows, "none", 10), row_of(rows, "sal", 10), row_of(rows, "sal", 5)
    assert none["success_diff"] == pytest.approx(1 / 5 - 4 / 5)
    (l1, u1), (l2, u2) = wilson(1, 5), wilson(4, 5)
    assert none["success_diff_lo"] == pytest.approx(-0.6 - math.hypot(0.2 - l1, u2 - 0.8))
    assert none["success_diff_hi"] == pytest.approx(-0.6 + math.hypot(u1 - 0.2, 0.8 - l2))
    assert none["final_diff"] == pytest.approx(np.mean(NONE) - np.mean(SAL))
    expected = scipy_bootstrap(np.array(NONE), np.array(SAL), statistic=lambda a, b: np.mean(a) - np.mean(b))
    assert (none["final_diff_lo"], none["final_diff_hi"]) == pytest.approx(expected, abs=0.03 * np.ptp(SAL))
    assert sal["success_diff"] is None and shallow["final_diff"] is None  # the reference itself
    text = report(sweep, "--against", "sal", "--no-figures").stdout
    assert "Δ success vs sal" in text and "-60 pp" in text and "reference" in text


def test_against_an_absent_method_exits_2_with_one_line(sweep):
    result = salrun("report", str(sweep), "--against", "spectral", "--no-figures")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--against spectral" in lines[0] and "sal, none" in lines[0]


def test_several_folders_merge_by_the_settings_that_differ(tmp_path):
    runs = tmp_path / "train"
    fake_run(runs / "a", "sal", 0, True, 0.9, depth=5)
    fake_run(runs / "b", "sal", 1, False, 0.6, depth=5)
    fake_run(runs / "c", "sal", 0, True, 0.8)  # no override: the config's default depth, 30
    fake_run(runs / "d", "none", 0, False, 0.5, depth=5)
    rows = json_rows(*sorted(runs.iterdir()))
    assert [(r["method"], r["model.depth"], r["runs"]) for r in rows] == [("sal", 5, 2), ("none", 5, 1),
                                                                          ("sal", 30, 1)]
    (runs / "figures").mkdir()  # not a run: skipped among several, with a note
    result = salrun("report", str(runs / "*"), "--format", "json", "--no-figures")  # a quoted glob
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == rows and "skipped 1" in result.stderr
    result = salrun("report", str(tmp_path / "nothing*"), "--no-figures")
    assert result.returncode == 2 and result.stderr.strip().endswith("matches nothing")


def test_a_run_given_twice_counts_once_and_figures_go_to_the_common_parent(sweep, tmp_path):
    result = report(sweep, sweep / "0", "--format", "json")
    assert row_of(json.loads(result.stdout), "sal", 10)["runs"] == 5
    assert (tmp_path / "figures" / "success_against_setting.png").is_file()


def test_typed_values_feed_back_as_overrides(sweep):
    # docs/reproduce.sh prints a setting from the json back into an override: it must parse to the same value.
    from salrun.collect import _typed

    for row in json_rows(sweep):
        assert _typed(str(row["model.depth"])) == row["model.depth"]


@pytest.mark.slow
def test_ctrl_c_on_a_sweep_records_the_jobs_it_never_began_as_not_started(tmp_path):
    out = tmp_path / "sweep"
    process = subprocess.Popen([sys.executable, "-m", "salrun", "sweep", "seed=0,1,2", *TINY_FFN, "train.steps=400",
                                "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "0" / "metrics.csv").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    statuses = list(pd.read_csv(out / "sweep.csv").status)
    assert statuses[1:] == ["not started", "not started"] and statuses[0] in ("ok", "interrupted")
    (row,) = json_rows(out)
    assert (row["runs"], row["not_started"]) == (1, 2)
