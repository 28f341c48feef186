"""A real sweep through hydra-submitit-launcher's local executor: separate processes started by
submitit, the same code path as SLURM without the cluster."""
import pandas as pd
import pytest

from conftest import TINY_FFN


@pytest.mark.slow
def test_sweep_through_submitit_local(run_cli, tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "seed=0,1", *TINY_FFN, "--launcher", "submitit_local",
                     "hydra.launcher.timeout_min=5", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.status) == ["ok", "ok"] and sorted(table.seed) == [0, 1]
    assert any((out / ".submitit").iterdir())  # submitit's own job folders: it really ran them
    assert all((out / str(i) / "checkpoint.pt").is_file() for i in (0, 1))


def test_slurm_presets_compose():
    from hydra import compose, initialize_config_dir

    from salrun.launch import LAUNCHERS, config_dir

    assert {"slurm_cpu", "slurm_gpu"} <= set(LAUNCHERS)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 1, 3)
