"""`salrun report` checks what it reads (issue 26): a metrics.csv cut mid-line, or one that stops
short of the steps summary.json counts, is flagged with one line naming the file: exit 2 for a
single PATH, left out with a note among several runs. It is never drawn beside complete runs."""
import json
import shutil

import pytest

from conftest import TINY_FFN, salrun

RUN = [*TINY_FFN, "train.steps=12", "train.log_every=3"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("checks") / "sweep"
    assert salrun("sweep", *RUN, "seed=0,1,2", "--out", str(out), "-q").returncode == 0
    return out


def copy(source, target):
    shutil.copytree(source, target)
    return target


def cut_mid_line(metrics):
    text = metrics.read_text()
    metrics.write_text(text[:-8])  # inside the last row's number


def cut_fields(metrics):
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:-1]) + ",".join(lines[-1].split(",")[:2]) + "\n")


def cut_at_line(metrics):
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(line for line in lines if not line.startswith("12,")))


@pytest.mark.parametrize("cut, expected", [(cut_mid_line, "is cut mid-line"),
                                           (cut_fields, "is cut: its last row has 2 of 4 fields"),
                                           (cut_at_line, "ends at step 9, short of the 12 steps")])
def test_a_single_damaged_run_exits_2_with_one_line(sweep, tmp_path, cut, expected):
    run = copy(sweep / "0", tmp_path / "run")
    assert salrun("report", str(run), "--no-figures").returncode == 0
    cut(run / "metrics.csv")
    result = salrun("report", str(run), "--no-figures")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(run / "metrics.csv") in lines[0]


def test_the_last_steps_rows_cut_short_are_flagged(sweep, tmp_path):
    run = copy(sweep / "0", tmp_path / "run")
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:-1]))  # the last row of step 12 (a whole line) is gone
    result = salrun("report", str(run), "--no-figures")
    assert result.returncode == 2 and "at step 12, short of the 12 steps" in result.stderr


def test_among_several_a_damaged_run_is_left_out_with_a_note(sweep, tmp_path):
    runs = [copy(sweep / str(i), tmp_path / f"run{i}") for i in range(3)]
    cut_mid_line(runs[1] / "metrics.csv")
    result = salrun("report", *map(str, runs), "--format", "json", "--no-figures")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert [row["runs"] for row in table] == [2]  # the complete two, never the cut one
    assert f"left out: {runs[1] / 'metrics.csv'} is cut mid-line" in result.stderr


def test_a_damaged_job_of_a_sweep_is_left_out_with_a_note(sweep, tmp_path):
    copied = copy(sweep, tmp_path / "sweep")
    cut_at_line(copied / "2" / "metrics.csv")
    result = salrun("report", str(copied), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [row["runs"] for row in json.loads(result.stdout)] == [2]
    assert "left out:" in result.stderr and "ends at step 9" in result.stderr
    assert (copied / "figures" / "learning_curves.png").is_file()


def test_an_interrupted_run_may_end_before_its_last_logged_step(sweep, tmp_path):
    """Only a completed run must have logged its last step: an interrupted one stops where it stopped."""
    run = copy(sweep / "0", tmp_path / "run")
    cut_at_line(run / "metrics.csv")
    summary = json.loads((run / "summary.json").read_text())
    summary.update(status="interrupted", steps=10)
    (run / "summary.json").write_text(json.dumps(summary))
    assert salrun("report", str(run), "--no-figures").returncode == 0
