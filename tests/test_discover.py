"""Issue 16: a researcher discovers the config and the runs describe themselves."""
import pytest
import yaml

import salrun
from salrun.settings import KINDS, describe, presets

from test_cli import assert_usage_error


def test_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"salrun {salrun.__version__}"


def test_config_prints_the_resolved_config_and_runs_nothing(run_cli, tmp_path):
    result = run_cli("config", "method=none", "model.depth=3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["experiment"] == "deep_ffn" and cfg["model"]["depth"] == 3 and cfg["method"] == {"name": "none"}
    assert not any(tmp_path.iterdir())  # no run folder
    chaos = yaml.safe_load(run_cli("config", "--command", "lyapunov").stdout)
    assert chaos["experiment"] == "chaos" and "lyapunov" in chaos


def test_config_refuses_bad_input(run_cli):
    assert_usage_error(run_cli("config", "model.depth=0"), "model.depth")
    assert_usage_error(run_cli("config", "--command", "sweep"), "--command")


def test_list_describes_every_choice(run_cli):
    for kind in KINDS:
        result = run_cli("list", f"{kind}s")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert [line.split()[0] for line in lines] == list(describe(kind))
        assert all(len(line.split()) > 2 for line in lines)  # every entry has a description
    listed = run_cli("list", "presets").stdout
    assert "paper_long_lag" in listed and "300-step lag" in listed  # from the YAML file's comment
    assert "clusters" in run_cli("list").stdout
    assert_usage_error(run_cli("list", "bogus"), "bogus")


def test_every_entry_and_preset_has_a_description():
    for kind in KINDS:
        for name, text in describe(kind).items():
            # without a docstring, dataclass's own would show: "SpiralsSettings(train_size: int = ...)"
            assert text.endswith(".") and "Settings(" not in text, (kind, name, text)
    assert all(presets().values())


def test_help_ends_with_the_groups_and_presets(run_cli):
    tail = run_cli("--help").stdout.split("Groups")[-1]
    for kind in KINDS:
        for name in describe(kind):
            assert name in tail
    for name in presets():
        assert name in tail


def test_readme_lists_every_choice():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    groups = readme.split("Groups: ")[1].split("Stable keys")[0]
    for kind in KINDS:
        for name in describe(kind):
            assert name in groups, (kind, name)


def test_summary_says_where_it_is_and_what_made_it(run_cli, tmp_path):
    import json
    from datetime import datetime, timezone

    import torch

    from conftest import TINY_FFN

    out = tmp_path / "run"
    result = run_cli("train", *TINY_FFN, "method=none", "--out", str(out), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["folder"] == str(out.resolve())
    assert summary["overrides"] == [*TINY_FFN, "method=none"]
    assert yaml.safe_load((out / "overrides.yaml").read_text()) == [*TINY_FFN, "method=none"]
    assert summary["versions"]["salrun"] == salrun.__version__ and summary["versions"]["torch"] == torch.__version__
    assert summary["versions"]["python"].count(".") == 2
    started = datetime.fromisoformat(summary["started"])
    assert started.tzinfo is not None and abs((datetime.now(timezone.utc) - started).total_seconds()) < 300
    assert summary["host"] and summary["device"] == "cpu"


@pytest.mark.parametrize("how", [[], ["--ensemble"]], ids=["hydra", "ensemble"])
def test_sweep_jobs_record_their_overrides(run_cli, tmp_path, how):
    import json

    from conftest import TINY_FFN

    out = tmp_path / "sweep"
    result = run_cli("sweep", *TINY_FFN, "seed=0,1", "--out", str(out), *how)
    assert result.returncode == 0, result.stderr
    for job in (0, 1):
        recorded = yaml.safe_load((out / str(job) / "overrides.yaml").read_text())
        assert f"seed={job}" in recorded
        assert json.loads((out / str(job) / "summary.json").read_text())["overrides"] == recorded


def test_nonfinite_values_are_null_and_named(tmp_path):
    import json

    from salrun.results import RunWriter

    RunWriter(tmp_path).write_summary({"status": "diverged", "final": {"loss": float("nan"),
                                                                      "log_sensitivity": float("-inf"), "mle": 0.5}})
    text = (tmp_path / "summary.json").read_text()
    assert "inf" not in text.replace("nonfinite", "") and "NaN" not in text

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    summary = json.loads(text, parse_constant=refuse)
    assert summary["final"] == {"loss": None, "log_sensitivity": None, "mle": 0.5}
    assert summary["nonfinite"] == ["final.loss", "final.log_sensitivity"]


def test_layer_is_an_integer_in_metrics_csv(tmp_path):
    import csv

    import numpy as np
    import torch

    from salrun.results import RunWriter

    writer = RunWriter(tmp_path)
    writer.log(1, "grad_norm", 0.5, np.int64(2))
    writer.log(1, "sensitivity_rms", 0.5, torch.tensor(3))
    writer.log(1, "loss", 0.1)
    writer.flush_metrics()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [row["layer"] for row in rows] == ["2", "3", ""]


def test_load_model_takes_a_run_folder_or_its_model_pt(run_cli, tmp_path):
    import pytest
    import torch

    from conftest import TINY_RNN
    from salrun import load_model
    from salrun.results import RunFolderError

    out = tmp_path / "run"
    assert run_cli("train", *TINY_RNN, "--out", str(out), "--quiet").returncode == 0
    from_folder, from_file = load_model(out), load_model(out / "model.pt")
    assert from_folder.settings.hidden == 8
    assert all(torch.equal(a, b) for a, b in zip(from_folder.state_dict().values(), from_file.state_dict().values()))
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "junk.pt").write_text("not a model")
    for bad, words in [(empty, "holds no model.pt"), (tmp_path / "missing", "no such file"),
                       (tmp_path / "junk.pt", "not a salrun model")]:
        with pytest.raises(RunFolderError, match=words) as caught:
            load_model(bad)
        assert "\n" not in str(caught.value)


def test_default_run_folders_never_collide(tmp_path):
    """Two runs started at once (in the same second, most of the time) get two folders."""
    import json
    import os
    import subprocess
    import sys

    from conftest import TINY_FFN

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for attempt in range(3):  # the clock's second can tick between the starts: try again then
        cwd = tmp_path / str(attempt)
        cwd.mkdir()
        starts = [subprocess.Popen([sys.executable, "-m", "salrun", "train", *TINY_FFN, "--json"], cwd=cwd, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in starts]
        assert [p.returncode for p in starts] == [0, 0], outputs
        folders = [json.loads(stdout)["folder"] for stdout, _ in outputs]
        assert folders[0] != folders[1]
        names = sorted(p.name for p in (cwd / "outputs" / "train").iterdir())
        assert len(names) == 2 and all((cwd / "outputs" / "train" / n / "summary.json").is_file() for n in names)
        if names[1] == names[0] + "_1":  # they did start in the same second: the case this test is for
            return
    raise AssertionError(f"three tries never started two runs in the same second: {names}")


def test_a_claimed_default_name_moves_on(tmp_path):
    from salrun.cli import make_out_dir

    base = tmp_path / "outputs" / "train" / "2026-01-01_00-00-00"
    assert make_out_dir(base, claim=True) == base
    assert make_out_dir(base, claim=True) == base.with_name(base.name + "_1")
    assert make_out_dir(base, claim=True) == base.with_name(base.name + "_2")
    assert make_out_dir(base) == base  # --out DIR: an existing empty folder is used as it is
