"""`salrun report`: the summary table from real (tiny) runs, its formats, the figures, bad paths."""
import io
import json
import shutil

import pandas as pd
import pytest

from conftest import TINY_CHAOS, TINY_FFN, TINY_RNN, salrun, summary_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAIN_FIGURES = {"learning_curves.png", "gradient_profile.png", "sensitivity_rms.png"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2 methods x 2 seeds sweep of a tiny deep net."""
    out = tmp_path_factory.mktemp("report") / "sweep"
    result = salrun("sweep", "method=sal,none", "seed=0,1", *TINY_FFN, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def sweep_copy(sweep, tmp_path):
    """A private copy of the sweep (its job folders are found inside it, not at the recorded paths)."""
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("figures"))
    return copy


def expected_groups(folder):
    """Per method, from the job summaries: runs, successes, mean final test metric."""
    jobs = pd.read_csv(folder / "sweep.csv")
    expected = {}
    for status, job in zip(jobs.status, jobs.output):
        job_folder = folder / job.split("/")[-1]
        summary = summary_of(job_folder) if (job_folder / "summary.json").exists() else {}
        entry = expected.setdefault(jobs.method[list(jobs.output).index(job)], {"runs": 0, "wins": 0, "finals": []})
        entry["runs"] += 1
        entry["wins"] += bool(summary.get("success"))
        if status == "ok":
            entry["finals"].append(summary["final"][summary["metric"]])
    return expected


def csv_table(folder, *extra):
    result = salrun("report", str(folder), "--format", "csv", "--no-figures", *extra)
    assert result.returncode == 0, result.stderr
    return pd.read_csv(io.StringIO(result.stdout)).set_index("method")


def assert_matches_summaries(table, folder):
    expected = expected_groups(folder)
    assert set(table.index) == set(expected)
    for method, entry in expected.items():
        row = table.loc[method]
        assert row.runs == entry["runs"]
        assert row.successes == entry["wins"]
        assert row.success_rate == pytest.approx(entry["wins"] / entry["runs"])
        assert row.final_mean == pytest.approx(sum(entry["finals"]) / len(entry["finals"]))
        assert row.metric == "accuracy" and row.chance == pytest.approx(0.5)
        assert row.wall_seconds > 0


def test_sweep_table_has_one_row_per_method_computed_from_the_summaries(sweep):
    table = csv_table(sweep)
    assert len(table) == 2 and set(table.ok) == {2}
    assert_matches_summaries(table, sweep)
    assert table.loc["sal", "final_std"] >= 0


def test_success_rate_counts_every_seed_and_a_job_that_never_finished(sweep_copy):
    jobs = pd.read_csv(sweep_copy / "sweep.csv")
    first_sal, second_sal = [o.split("/")[-1] for o in jobs.output[jobs.method == "sal"]]
    summary = summary_of(sweep_copy / first_sal)
    summary["success"] = True
    (sweep_copy / first_sal / "summary.json").write_text(json.dumps(summary))
    for name in ("summary.json", "metrics.csv"):  # this job died before writing anything
        (sweep_copy / second_sal / name).unlink()
    jobs.loc[jobs.output.str.endswith(f"/{second_sal}"), "status"] = "failed"
    jobs.to_csv(sweep_copy / "sweep.csv", index=False)

    table = csv_table(sweep_copy)
    assert table.loc["sal", "runs"] == 2 and table.loc["sal", "ok"] == 1
    assert table.loc["sal", "success_rate"] == pytest.approx(0.5)
    assert_matches_summaries(table, sweep_copy)


def test_grouping_by_another_swept_setting_typed_and_in_numeric_order(tmp_path):
    out = tmp_path / "sweep"
    assert salrun("sweep", "model.depth=10,2", *TINY_FFN[1:], "--out", str(out), "--quiet").returncode == 0
    result = salrun("report", str(out), "--format", "json", "--no-figures")
    rows = json.loads(result.stdout)
    # Numbers, not strings, and 2 before 10 (text would sort "10" first).
    assert [(r["method"], r["model.depth"], r["runs"]) for r in rows] == [("sal", 2, 1), ("sal", 10, 1)]
    table = salrun("report", str(out), "--format", "csv", "--no-figures").stdout
    assert table.splitlines()[1].startswith("sal,2,") and table.splitlines()[2].startswith("sal,10,")


def test_every_format_parses_and_table_file_takes_the_suffix(sweep, tmp_path):
    by_csv = csv_table(sweep)
    rows = json.loads(salrun("report", str(sweep), "--format", "json", "--no-figures").stdout)
    assert {r["method"]: r["success_rate"] for r in rows} == by_csv.success_rate.to_dict()
    markdown = salrun("report", str(sweep), "--format", "markdown", "--no-figures").stdout.strip().splitlines()
    assert len(markdown) == 2 + len(by_csv) + 2  # the table, a blank line and where its runs came from
    assert all(line.startswith("|") and line.endswith("|") for line in markdown[:-2])
    assert markdown[-2] == "" and "made by `salrun sweep" in markdown[-1]
    assert "success" in markdown[0] and "chance" in markdown[0]

    result = salrun("report", str(sweep), "--table", str(tmp_path / "t" / "table.json"), "--no-figures")
    assert result.returncode == 0, result.stderr
    assert "sal" in result.stdout  # the rich table still prints
    assert len(json.loads((tmp_path / "t" / "table.json").read_text())) == 2
    result = salrun("report", str(sweep), "--format", "csv", "--table", str(tmp_path / "table.txt"), "--no-figures")
    assert pd.read_csv(tmp_path / "table.txt").shape[0] == 2
    assert not (sweep / "figures").exists()  # every report here ran with --no-figures


def assert_pngs(folder, names):
    assert {p.name for p in folder.iterdir()} == set(names)
    for name in names:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name


def test_sweep_report_prints_the_table_and_writes_the_figures(sweep_copy):
    result = salrun("report", str(sweep_copy))
    assert result.returncode == 0, result.stderr
    assert "salrun report" in result.stdout and "none" in result.stdout and "0/2" in result.stdout
    assert_pngs(sweep_copy / "figures", TRAIN_FIGURES | {"success_rate.png"})


def test_single_runs_make_only_the_figures_their_data_supports(run_cli, tmp_path):
    chaos, rnn = tmp_path / "chaos", tmp_path / "rnn"
    assert run_cli("lyapunov", *TINY_CHAOS, "--out", str(chaos), "--quiet").returncode == 0
    assert run_cli("train", *TINY_RNN, "--out", str(rnn), "--quiet").returncode == 0

    result = run_cli("report", str(chaos), "--format", "json", "--figures", str(tmp_path / "chaos_figures"))
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["metric"] == "mle" and row["success_rate"] is None
    assert row["final_mean"] == pytest.approx(summary_of(chaos)["final"]["mle"])
    assert "max_gap" in row
    assert_pngs(tmp_path / "chaos_figures", {"sensitivity_vs_mle.png"})
    assert not (chaos / "figures").exists()

    assert run_cli("report", str(rnn)).returncode == 0
    assert_pngs(rnn / "figures", TRAIN_FIGURES)  # one run: no success-rate chart

    # pivot counts successes: a chaos run has none, so it is one line, exit 2, and no table is written
    pivot = run_cli("report", str(chaos), "--format", "pivot", "--table", str(tmp_path / "p.md"), "--no-figures")
    assert pivot.returncode == 2 and "train runs only" in pivot.stderr
    assert len(pivot.stderr.strip().splitlines()) == 1 and not (tmp_path / "p.md").exists()


def corrupt(folder, name, text):
    (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("make_path,words", [
    (lambda tmp, run: tmp / "missing", ["does not exist"]),
    (lambda tmp, run: corrupt(tmp, "file.txt", "x") / "file.txt", ["not a folder"]),
    (lambda tmp, run: tmp, ["neither a run folder"]),
    (lambda tmp, run: corrupt(run, "summary.json", "{broken"), ["summary.json"]),
    (lambda tmp, run: corrupt(run, "summary.json", "[1, 2]"), ["summary.json"]),
    (lambda tmp, run: corrupt(run, "metrics.csv", ""), ["metrics.csv"]),
    (lambda tmp, run: corrupt(run, "metrics.csv", "step,metric,value,layer\n1,loss,abc,\n"), ["metrics.csv"]),
    (lambda tmp, run: corrupt(run, "metrics.csv", "a,b\n1,2\n"), ["metrics.csv"]),
])
def test_bad_path_exits_2_with_one_line(sweep, tmp_path, make_path, words):
    run = tmp_path / "run"
    shutil.copytree(sweep / "0", run)
    path = make_path(tmp_path, run)
    result = salrun("report", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salrun: error:"), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not (path / "figures").exists() if path.is_dir() else True


@pytest.mark.parametrize("args,word", [
    (["--format", "xml"], "--format"),
    (["--table", "out.txt"], "--table"),
])
def test_bad_options_exit_2_with_one_line(sweep, args, word):
    result = salrun("report", str(sweep), *args, "--no-figures")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and word in result.stderr


def test_corrupt_job_in_a_sweep_exits_2(sweep_copy):
    corrupt(sweep_copy / "1", "metrics.csv", "")
    (sweep_copy / "sweep.csv").write_text((sweep_copy / "sweep.csv").read_text())
    result = salrun("report", str(sweep_copy))
    assert result.returncode == 2 and "metrics.csv" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    corrupt(sweep_copy, "sweep.csv", "")
    result = salrun("report", str(sweep_copy))
    assert result.returncode == 2 and "sweep.csv" in result.stderr


def test_missing_path_argument_exits_2_with_one_line():
    result = salrun("report")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "salrun: error: report needs PATH, a run folder or a sweep folder (or several, or a glob)"]


def test_a_jobs_own_summary_beats_a_stale_sweep_table(sweep_copy):
    # A sweep still running (or killed) holds the table of its start; its jobs' summaries are newer.
    table = pd.read_csv(sweep_copy / "sweep.csv")
    table["status"] = "interrupted"
    table.to_csv(sweep_copy / "sweep.csv", index=False)
    statuses = {summary_of(sweep_copy / str(i))["status"] for i in range(len(table))}
    report = csv_table(sweep_copy)
    assert statuses == {"ok"} and (report.ok == report.runs).all()
    (sweep_copy / "0" / "summary.json").unlink()  # a job with no summary: the table's word stands
    report = csv_table(sweep_copy)
    assert report.ok.sum() == len(table) - 1


def test_a_sweep_without_its_table_yet_reports_the_jobs_that_finished(sweep_copy):
    # sweep.csv is written when the sweep ends; until then sweep.yaml holds the grid.
    (sweep_copy / "sweep.csv").unlink()
    (sweep_copy / "0" / "summary.json").unlink()  # a job still running
    result = salrun("report", str(sweep_copy), "--format", "csv", "--no-figures")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(io.StringIO(result.stdout)).set_index("method")
    assert table.runs.sum() == 3 and (table.ok == table.runs).all()
    assert "1 more job(s) have no summary" in result.stderr
    for i in (1, 2, 3):
        (sweep_copy / str(i) / "summary.json").unlink()
    result = salrun("report", str(sweep_copy), "--no-figures")
    assert result.returncode == 2 and "no job of this sweep has finished yet (4 planned)" in result.stderr
