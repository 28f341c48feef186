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
    assert result.returncode == 1
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
