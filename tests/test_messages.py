"""The messages of issue 26: each bad input gets one readable line on stderr and exit 2, never a
parser's exception name, Python's integer-string limit or a traceback."""
import json

import pytest
import yaml

from conftest import salrun


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("salrun: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["config", "módel.dépth=3"], "a key is written in ASCII (letters, digits, _ and .) (did you mean model.depth?)"),
    (["config", "task=spírals"], "is read only in quotes (task='spírals') (did you mean spirals?)"),
    (["config", "method="], "method= names no method; choose from: none, sal, spectral"),
    (["config", "seed=" + "9" * 10_000], "seed= is followed by 10,000 characters; no setting takes more than 1,000"),
    (["config", "experiment=" + "a" * 10_000], "experiment= is followed by 10,000 characters"),
    (["train", "model=rnn"], "model=rnn has no key model.depth, which the preset experiment=deep_ffn sets; "
                             "choose a preset made for model=rnn ("),
    (["config", "~model.depth"], "~model.depth would delete model.depth"),
    (["sweep", "~train.steps", "seed=0,1"], "~train.steps would delete train.steps"),
    (["report", "--json", "."], "no such option --json (use --format json)"),
    (["config", "--json"], "no such option --json (use --format json)"),
    (["list", "--json"], "no such option --json (use --format json)"),
])
def test_one_readable_line(tmp_path, args, expected):
    line = one_error_line(salrun(*args, "--out", str(tmp_path / "out")) if args[0] in ("train", "sweep")
                          else salrun(*args))
    assert expected in line
    for raw in ("LexerNoViableAltException", "set_int_max_str_digits", "Could not find", "did you mean model.density"):
        assert raw not in line
    assert not (tmp_path / "out").exists()


def test_a_typed_unknown_key_keeps_its_suggestion():
    assert "did you mean model.density?" in one_error_line(salrun("lyapunov", "model.depth=3"))


def test_quoted_unicode_reaches_the_schema():
    assert "unknown task 'spírals' (did you mean spirals?)" in one_error_line(salrun("config", "task='spírals'"))


def test_config_and_list_speak_json():
    config = salrun("config", "--format", "json", "train.steps=3")
    assert config.returncode == 0 and json.loads(config.stdout)["train"]["steps"] == 3
    listed = salrun("list", "methods", "--format", "json")
    assert listed.returncode == 0 and "sal" in json.loads(listed.stdout)["methods"]
    assert yaml.safe_load(salrun("config", "train.steps=3").stdout)["train"]["steps"] == 3


def test_no_experiment_is_still_allowed():
    result = salrun("config", "~experiment")
    assert result.returncode == 0 and yaml.safe_load(result.stdout)["experiment"] is None
