"""Tables made again from committed files (issue 31): `salrun report --format runs` writes the run
records, `salrun report NAME.csv` reads them back into the same table, markdown says which commit
and which command made its runs, and `--fill` (behind `bash docs/reproduce.sh tables`) rewrites
the blocks between markers, leaving a file that is already filled unchanged."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import salrun
from test_report_choice import run

ROOT = Path(__file__).resolve().parent.parent


def fixture_runs(tmp_path, commit="abc1234"):
    """sal and spectral at two rho values, three seeds each, with a recorded commit."""
    curves = {("sal", None): [[0.6, 0.95], [0.6, 0.97], [0.6, 0.5]],
              ("spectral", 1.0): [[0.6, 0.91], [0.6, 0.5], [0.5, 0.5]],
              ("spectral", 1.1): [[0.6, 0.93], [0.6, 0.94], [0.6, 0.92]]}
    folders = []
    for (method, rho), seeds in curves.items():
        for seed, curve in enumerate(seeds):
            settings = {"method": {"rho": rho}} if rho is not None else None
            folder = run(tmp_path / f"{method}_{rho}_{seed}", method, seed, curve, settings=settings)
            summary = json.loads((folder / "summary.json").read_text())
            (folder / "summary.json").write_text(json.dumps({**summary, "commit": commit}))
            folders.append(str(folder))
    return folders


def test_records_read_back_into_the_same_table(tmp_path):
    folders = fixture_runs(tmp_path)
    records = tmp_path / "runs.csv"
    made = salrun("report", *folders, "--format", "runs", "--table", str(records), "--no-figures")
    assert made.returncode == 0, made.stderr
    assert len(records.read_text().splitlines()) == 1 + 9 and "folder" not in records.read_text().splitlines()[0]
    for options in (["--format", "csv"], ["--against", "sal", "--format", "csv"], ["--judged", "--format", "csv"],
                    ["--best", "--format", "overrides"], ["--where", "method=spectral", "--format", "markdown"]):
        from_folders = salrun("report", *folders, *options, "--no-figures")
        from_records = salrun("report", str(records), *options, "--no-figures")
        assert from_records.returncode == 0, from_records.stderr
        assert from_records.stdout == from_folders.stdout, options
    assert "method.rho=1.1" in salrun("report", str(records), "--best", "--format", "overrides").stdout
    # Records of two parts, merged later, still tell their settings apart (every overridden setting is kept).
    parts = [tmp_path / "rho1.0.csv", tmp_path / "rho1.1.csv"]
    for part, rho in zip(parts, ("1.0", "1.1")):
        mine = [f for f in folders if f"spectral_{rho}_" in f]
        salrun("report", *mine, "--format", "runs", "--table", str(part), "--no-figures")
    spectral = [f for f in folders if "spectral" in f]
    assert salrun("report", *map(str, parts), "--format", "csv", "--no-figures").stdout == \
        salrun("report", *spectral, "--format", "csv", "--no-figures").stdout


def test_markdown_says_which_commit_and_command_made_the_runs(tmp_path):
    folders = fixture_runs(tmp_path)
    text = salrun("report", *folders, "--format", "markdown", "--no-figures").stdout
    assert "Runs measured on commit abc1234; made by `" in text
    assert "`salrun train experiment=bench_a method=sal seed=0`" in text  # a run folder's own command
    older = fixture_runs(tmp_path / "older", commit=None)
    text = salrun("report", *older, "--format", "markdown", "--no-figures").stdout
    assert "Commit not recorded" in text


def test_pivot_puts_each_methods_successes_under_its_column(tmp_path):
    import csv
    import io

    folders = fixture_runs(tmp_path)
    pivot = salrun("report", *folders, "--format", "pivot", "--no-figures")
    assert pivot.returncode == 0, pivot.stderr
    lines = [line.strip("|").split(" | ") for line in pivot.stdout.splitlines() if line.startswith("| ")]
    header, rows = [c.strip() for c in lines[0]], [[c.strip() for c in row] for row in lines[1:]]
    assert header[0] == "method.rho" and sorted(header[1:]) == ["sal", "spectral"]
    long = list(csv.DictReader(io.StringIO(salrun("report", *folders, "--format", "csv", "--no-figures").stdout)))
    for r in long:  # every group's count sits in its method's column, on its setting's row, and only there
        row = next(row for row in rows if row[0] == (r["method.rho"] and format(float(r["method.rho"]), "g") or "–"))
        assert row[header.index(r["method"])] == f"{r['successes']}/{r['runs']}"
    assert [row[0] for row in rows] == ["1", "1.1", "–"]  # numbers in order, then the rows without the setting
    assert "Runs measured on commit abc1234" in pivot.stdout


def test_fill_rewrites_the_blocks_and_nothing_else(tmp_path):
    records = tmp_path / "runs.csv"
    salrun("report", *fixture_runs(tmp_path), "--format", "runs", "--table", str(records), "--no-figures")
    marker = f"<!-- salrun report {records} --against sal --format markdown --no-figures -->"
    doc = tmp_path / "doc.md"
    doc.write_text(f"# A page\n\nText before.\n\n{marker}\nstale table\n<!-- /salrun report -->\n\nText after.\n")
    filled = salrun("report", "--fill", str(doc))
    assert filled.returncode == 0, filled.stderr
    text = doc.read_text()
    table = salrun("report", str(records), "--against", "sal", "--format", "markdown", "--no-figures").stdout
    assert text == f"# A page\n\nText before.\n\n{marker}\n{table}<!-- /salrun report -->\n\nText after.\n"
    assert "stale" not in text and "| spectral | 1.1 |" in text
    before = doc.stat().st_mtime_ns
    again = salrun("report", "--fill", str(doc))
    assert again.returncode == 0 and "unchanged" in again.stderr
    assert doc.read_text() == text and doc.stat().st_mtime_ns == before


def test_fill_includes_a_committed_table_and_refuses_a_missing_one(tmp_path):
    table = tmp_path / "summary.md"
    table.write_text("| method | success |\n|---|---|\n| sal | 3/5 |\n")
    doc = tmp_path / "doc.md"
    doc.write_text(f"Intro.\n<!-- include {table} -->\ntyped by hand\n<!-- /include -->\nEnd.\n")
    assert salrun("report", "--fill", str(doc)).returncode == 0
    assert doc.read_text() == f"Intro.\n<!-- include {table} -->\n{table.read_text()}<!-- /include -->\nEnd.\n"
    table.unlink()
    before = doc.read_text()
    result = salrun("report", "--fill", str(doc))
    assert result.returncode == 2 and "include" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert doc.read_text() == before


def test_a_block_that_cannot_be_made_is_one_line_and_nothing_is_written(tmp_path):
    doc = tmp_path / "doc.md"
    for marker, says in [(f"<!-- salrun report {tmp_path / 'gone.csv'} --format markdown -->", "does not exist"),
                         (f"<!-- salrun report {tmp_path} --format csv -->", "give --format markdown")]:
        doc.write_text(f"{marker}\nold\n<!-- /salrun report -->\n")
        result = salrun("report", "--fill", str(doc))
        assert result.returncode == 2 and says in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert doc.read_text() == f"{marker}\nold\n<!-- /salrun report -->\n"
    assert salrun("report", "--fill", str(doc), str(tmp_path)).returncode == 2  # --fill takes no PATH
    (tmp_path / "plain.md").write_text("no marker\n")
    assert "no '<!-- salrun report" in salrun("report", "--fill", str(tmp_path / "plain.md")).stderr


def test_reproduce_tables_fills_a_fixture_and_leaves_it_unchanged_the_second_time(tmp_path):
    """`bash docs/reproduce.sh tables` on a small fixture (TABLE_DOCS names the files to fill)."""
    records = tmp_path / "runs.csv"
    salrun("report", *fixture_runs(tmp_path), "--format", "runs", "--table", str(records), "--no-figures")
    doc = tmp_path / "doc.md"
    doc.write_text(f"<!-- salrun report {records} --format markdown --no-figures -->\n<!-- /salrun report -->\n")
    env = {**os.environ, "TABLE_DOCS": str(doc), "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for _ in range(2):
        done = subprocess.run(["bash", str(ROOT / "docs" / "reproduce.sh"), "tables"], capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "| sal |" in doc.read_text() and "Runs measured on commit abc1234" in doc.read_text()
    assert "unchanged" in done.stderr


def test_the_committed_docs_are_what_their_markers_make(tmp_path):
    """The docs' generated blocks match the committed run records: `bash docs/reproduce.sh tables`
    on a clean checkout changes nothing."""
    docs = [p for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
            if "<!-- salrun report" in p.read_text() or "<!-- include " in p.read_text()]
    assert docs
    for path in docs:
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        result = salrun("report", "--fill", str(copy), cwd=ROOT)  # the markers' paths are the repository's
        assert result.returncode == 0, result.stderr
        assert copy.read_text() == path.read_text(), f"{path.name} is not what its markers make"


def test_a_run_records_the_commit_of_its_source(tmp_path):
    from conftest import TINY_FFN, summary_of

    done = salrun("train", *TINY_FFN, "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True)
    commit = summary_of(tmp_path / "run")["commit"]
    if head.returncode != 0:  # not a git checkout
        assert commit is None
    else:
        assert commit in (head.stdout.strip(), head.stdout.strip() + "-dirty")
    text = salrun("report", str(tmp_path / "run"), "--format", "markdown", "--no-figures").stdout
    assert f"Runs measured on commit {commit};" in text


def test_benchmarks_render_writes_the_csvs_rows_as_the_markdown_block(tmp_path):
    """`python benchmarks/run.py --render CSV` (the cost tables that the README and COMPARISON include)."""
    import csv

    table = tmp_path / "cost.csv"
    rows = [{"benchmark": "peer_cost", "case": "rnn a|b", "baseline_s": "0.010", "measured_s": "0.012",
             "ratio": "1.200", "target": "<=1.10", "met": "NO", "note": "BPTT+SAL / BPTT"},
            {"benchmark": "peer_cost_run", "case": "rnn", "baseline_s": "6.1", "measured_s": "13.5", "ratio": "2.2",
             "target": "", "met": "", "note": "a run"}]
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--render", str(table)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = table.with_suffix(".md").read_text().splitlines()
    for row, line in zip(rows, lines[2:4]):
        assert line == "| " + " | ".join(v.replace("|", "\\|") for v in row.values()) + " |"
    assert "not recorded" in lines[-1]
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--render", str(tmp_path / "no.csv")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
