"""Sweeps through Hydra's multirun with the basic and joblib launchers."""
import pandas as pd
import pytest

from conftest import TINY_FFN


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweep_writes_one_row_per_job(run_cli, tmp_path, launcher):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "method=sal,none", "seed=0,1", *TINY_FFN, "--launcher", launcher,
                     "hydra.launcher.n_jobs=2" if launcher == "joblib" else "seed=0,1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4
    assert set(table.status) == {"ok"}
    assert set(zip(table.method, table.seed)) == {("sal", 0), ("sal", 1), ("none", 0), ("none", 1)}
    for folder in table.output:
        assert (tmp_path / "sweep" / folder.split("/")[-1] / "summary.json").is_file()


def test_failed_job_is_recorded_and_the_sweep_goes_on(run_cli, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", *TINY_FFN, "optim.name=sgd", "optim.lr=0.01,1e38", "train.steps=30", "train.log_every=1",
                     "--out", str(out), "--quiet")
    assert result.returncode == 3  # a job diverged and none failed otherwise (issue 16)
    table = pd.read_csv(out / "sweep.csv").set_index("overrides")
    assert len(table) == 2
    statuses = sorted(table.status)
    assert statuses == ["diverged", "ok"]
    assert table.loc[table.status == "diverged", "error"].str.contains("not finite").all()


def test_bad_grid_point_stops_the_sweep_before_it_runs(run_cli, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "model.depth=2,0", *TINY_FFN[1:], "--out", str(out))
    assert result.returncode == 2
    assert "model.depth" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (out / "sweep.csv").exists()


def test_sweep_resume_skips_completed_jobs_and_reruns_the_rest(tmp_path):
    """In-process (Typer's runner) to keep it quick; the basic launcher runs jobs in this process."""
    from typer.testing import CliRunner

    from salrun.cli import app

    def sweep(*args):
        return CliRunner().invoke(app, ["sweep", *args, "--out", str(out), "--quiet"])

    out = tmp_path / "sweep"
    first = sweep("seed=0,1,2", *TINY_FFN)
    assert first.exit_code == 0, first.stderr
    done = (out / "0" / "summary.json").read_bytes()
    (out / "1" / "summary.json").unlink()  # killed before it finished
    (out / "2" / "summary.json").write_text('{"status": "failed", "error": "node died"}')
    refused = sweep("seed=0,1,2", *TINY_FFN)
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    changed = sweep("seed=0,5", *TINY_FFN, "--resume")
    assert changed.exit_code == 2 and "recorded grid" in changed.stderr
    resumed = CliRunner().invoke(app, ["sweep", "--resume", "--out", str(out), "--quiet"])
    assert resumed.exit_code == 0, resumed.stderr
    assert (out / "0" / "summary.json").read_bytes() == done  # skipped, not rerun
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.status) == ["ok"] * 3 and list(table.seed) == [0, 1, 2]
    assert "resumed_from_step" in (out / "2" / "summary.json").read_text()  # continued from its checkpoint
    missing = CliRunner().invoke(app, ["sweep", "--resume", "--out", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no sweep.yaml" in missing.stderr
