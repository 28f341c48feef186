"""The CLI's Hydra-free first look at a config (`quick_compose`) agrees with Hydra's compose,
so that a bad value fails fast, with the same message, and a good config is never refused."""
import subprocess
import sys
from pathlib import Path

import pytest

from salrun.jobs import validate
from salrun.launch import compose, config_dir, quick_compose
from salrun.settings import ConfigError

CONF = Path(config_dir())
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [(group, p.stem) for group in ("model", "task", "method", "init")
                 for p in sorted((CONF / group).glob("*.yaml"))]


def agree(command, overrides):
    quick = quick_compose(command, overrides)
    assert quick is not None, overrides
    assert quick == compose(command, overrides)
    return quick


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("command", ["train", "lyapunov"])
def test_every_preset_composes_as_hydra_does(command, experiment):
    agree(command, [f"experiment={experiment}", "seed=3", "optim.lr=1e-4", "device=cpu"])


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_group_option_composes_as_hydra_does(group, option):
    agree("train", [f"{group}={option}", "train.steps=7"])
    agree("train", ["experiment=long_lag", f"{group}={option}"])  # the command line beats the preset


@pytest.mark.parametrize("overrides", [
    ["method=sal", "++method.rho=1.1"],                      # added where the method lacks the key
    ["method=spectral", "++method.rho=1.1"],                 # overridden where it has it
    ["experiment=paper_long_lag", "method=flossing", "++method.rho=1.1", "++method.k=8", "task.lag=50"],
    ["++seed=4", "++model.depth=7"],
])
def test_add_or_override_keys_compose_as_hydra_does(overrides):
    agree("train", overrides)


@pytest.mark.parametrize("overrides,message", [
    (["model.depth=0"], "model.depth must be >= 1, got 0"),
    (["experiment=chaos", "lyapunov.k=500"], None),
    (["method.lr=-1"], None),
    (["train.steps=abc"], None),
])
def test_bad_values_give_hydras_message(overrides, message):
    command = "lyapunov" if "experiment=chaos" in overrides else "train"
    errors = []
    for cfg in (quick_compose(command, overrides), compose(command, overrides)):
        with pytest.raises(ConfigError) as err:
            validate(command, cfg)
        errors.append(str(err.value))
    assert errors[0] == errors[1]
    assert message is None or errors[0] == message


@pytest.mark.parametrize("overrides", [["+extra=1"], ["model.nope=1"], ["model=nope"], ["seed=1,2"], ["~seed"],
                                       ["optim.lr=[1,2]"], ["hydra.job.name=x"], ["train.steps=1_000"],
                                       ["++method=sal"], ["++model=3"], ["++hydra.job.name=x"]])
def test_what_only_hydra_can_tell_is_left_to_hydra(overrides):
    assert quick_compose("train", overrides) is None


def test_a_bad_value_exits_2_without_importing_hydra(tmp_path):
    code = ("import sys, runpy; sys.argv = ['salrun', 'train', 'model.depth=0', '--out', sys.argv[1]]\n"
            "try:\n    runpy.run_module('salrun', run_name='__main__')\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('HYDRA' if 'hydra' in sys.modules else 'NO_HYDRA', 'TORCH' if 'torch' in sys.modules else '')")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bad")], capture_output=True, text=True)
    assert result.stdout.split() == ["EXIT", "2", "NO_HYDRA"]
    assert result.stderr.strip() == "salrun: error: model.depth must be >= 1, got 0"
