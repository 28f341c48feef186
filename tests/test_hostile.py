"""Property-based hostile input for `salrun train` (hypothesis): random keys, wrong types,
extreme numbers, long strings, bad --out paths. Every case ends in a valid run or in exit 2
with one line and no traceback. In-process through Typer's runner; the valid cases run the
tiny FFN so the whole file stays within seconds."""
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import TINY_FFN
from salrun.cli import app
from salrun.jobs import EXIT_CODES

# Keys whose every accepted value keeps the tiny run tiny (sizes and step counts are left out).
CHEAP_KEYS = ["seed", "optim.lr", "optim.momentum", "optim.clip", "optim.name", "method.lr", "method.beta",
              "method.target", "method.gate", "method.objective", "model.init.scale", "model.init.distribution",
              "task.noise", "device", "train.checkpoint_every", "method", "model", "task"]
RANDOM_KEYS = st.from_regex(r"\A[a-z_]{1,12}(\.[a-z_]{1,12}){0,2}\Z")
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "-0.5", "1e308", "-1e308", "nan", "inf", "-inf", "true", "null", "[]", "{}",
                     "[1,2]", "{a: 1}", "''", "abc", "cpu", "sgd", "two_sided", "rnn", "1.5", "0.9999", "1"]),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    # Not st.floats: a job sets flush-denormal on the CPU, which breaks hypothesis's float drawing in-process.
    st.sampled_from(["5e-324", "1e-300", "-0.0", "1.7976931348623157e+308", "1e309", "0.001", "3.14", "-2.5"]),
    st.text(alphabet="abcxyz_-.:/ ", min_size=200, max_size=2000).map(lambda s: f"'{s}'"),
)
OVERRIDE = st.tuples(st.one_of(st.sampled_from(CHEAP_KEYS), RANDOM_KEYS), VALUES).map("=".join)


def check_outcome(result, out: Path) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("salrun: error: "), result.stderr
        assert not (out / "summary.json").exists()
        return
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert EXIT_CODES[summary["status"]] == result.exit_code
    assert summary["status"] in ("ok", "diverged"), summary  # a config that passes checks must not crash


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=3))
def test_hostile_overrides_end_in_a_run_or_one_line(tmp_path_factory, overrides):
    out = tmp_path_factory.mktemp("hostile") / "run"
    result = CliRunner().invoke(app, ["train", *TINY_FFN, "train.steps=2", *overrides, "--out", str(out), "-q"])
    check_outcome(result, out)


@pytest.mark.parametrize("relative", [
    "file",         # an existing file
    "file/run",     # below a file
    "x" * 300,      # a name too long for the file system
    "/proc/salrun-run",  # read-only even for root
])
def test_bad_out_paths_exit_2_with_one_line(tmp_path, relative):
    (tmp_path / "file").write_text("keep")
    out = tmp_path / relative
    result = CliRunner().invoke(app, ["train", *TINY_FFN, "--out", str(out), "-q"])
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert len(result.stderr.strip().splitlines()) == 1 and "--out" in result.stderr
    assert (tmp_path / "file").read_text() == "keep"


def test_values_that_look_numeric_but_are_not_finite_are_rejected():
    for value in ("nan", "inf", "1e309"):
        result = CliRunner().invoke(app, ["train", *TINY_FFN, f"optim.lr={value}"])
        assert result.exit_code == 2 and "optim.lr" in result.stderr, (value, result.stderr)
    assert math.isinf(float("1e309"))


@pytest.mark.parametrize("override", ["method=[1,2]", "model=[mlp,rnn]", "task=[]"])
def test_a_list_for_a_config_group_is_one_line(tmp_path, override):
    """Found by the property test above: Hydra reads a list given to a group as several of its
    configs and raised a TypeError on numbers; salrun refuses it first."""
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", *TINY_FFN, override, "--out", str(out), "-q"])
    check_outcome(result, out)
    assert result.exit_code == 2 and "takes one choice" in result.stderr, result.stderr
