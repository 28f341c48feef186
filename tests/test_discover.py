"""Issue 16: a researcher discovers the config and the runs describe themselves."""
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
