"""The library as a user meets it: the public names in a fresh interpreter, and every
script of examples/ run for a few steps."""
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_public_names_in_a_fresh_interpreter():
    code = """
import sys
import salrun
assert "torch" not in sys.modules, "import salrun must not import torch"
from salrun import SAL, SALSettings, sensitivity, log_sensitivity, load_model
import torch
s = sensitivity(torch.tensor([[0.0, 0.5]]), [torch.eye(2)])
assert torch.allclose(s, torch.tensor([[1.0, 0.75]])), s
assert abs(float(log_sensitivity(torch.ones(3))) ) < 1e-12
assert salrun.sensitivity is sensitivity and callable(salrun.log_sensitivity)
assert SAL(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh()), SALSettings(lr=0.1)).settings.lr == 0.1
assert load_model.__module__ == "salrun.jobs"
assert sorted(salrun.__all__) == sorted(["SAL", "SALSettings", "sensitivity", "log_sensitivity", "load_model"])
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_unknown_name_is_an_attribute_error():
    import salrun

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        salrun.nope


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {"mlp", "functional", "rnn_adding", "rnn_cell", "log_sensitivity"}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_a_few_steps(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra = ["--lag", "5"] if "rnn" in script.stem else []
    monkeypatch.setattr(sys, "argv", [str(script), "--steps", "3", *extra])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "step    3" in out or "step     3" in out, out
    if script.stem == "log_sensitivity":
        lines = (tmp_path / "sensitivity.csv").read_text().splitlines()
        assert lines[0] == "step,layer,sensitivity_rms,log_sensitivity" and len(lines) == 1 + 2 * 3
