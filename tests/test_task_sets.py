"""Tasks that measure what they claim (issue 14): test sets of at least 1,000 distinct
samples at the defaults, the sequential digits, gradient flossing's delayed XOR, and success
judged on the mean of the last evaluations in the single run and in an ensemble."""
import csv

import pytest
import torch

from conftest import make_task, summary_of
from salrun.training import train_outcome
from salrun.models import ElmanRNN
from salrun.results import RunWriter
from salrun.settings import REGISTRY, InitSettings, RNNSettings


def _distinct(x: torch.Tensor, sequential: bool) -> int:
    rows = x.transpose(0, 1) if sequential else x
    return len(torch.unique(rows.reshape(rows.shape[0], -1), dim=0))


@pytest.mark.parametrize("name", sorted(REGISTRY["task"]))
def test_every_test_set_holds_1000_distinct_samples_at_the_defaults(name):
    t = make_task(name)
    x, y = t.test_set()
    assert _distinct(x, t.sequential) >= 1000


def test_without_noise_the_lag_tasks_have_a_handful_of_test_sequences():
    """Why the noise is on by default: a ±1 pulse and zeros are 2 sequences."""
    assert _distinct(make_task("lag_sign", lag=20, noise=0.0).test_set()[0], True) == 2
    assert _distinct(make_task("delayed_xor", lag=20, noise=0.0).test_set()[0], True) == 4


# --- seq_digits ---------------------------------------------------------------------------------

@pytest.mark.parametrize("read, steps, inputs", [("pixel", 64, 1), ("row", 8, 8)])
def test_seq_digits_reads_the_image_then_blanks(read, steps, inputs):
    t = make_task("seq_digits", read=read, lag=3)
    x, y = t.test_set()
    assert t.sequential and t.input_size == inputs and t.output_size == 10
    assert x.shape == (steps + 3, 1000, inputs) and y.shape == (1000,) and y.dtype == torch.long
    assert (x[steps:] == 0).all() and 0 <= x.min() and x.max() <= 1
    # The same image, read either way: pixel t is row t // 8, column t % 8.
    rows = make_task("seq_digits", read="row", lag=0).test_set()[0]
    assert torch.equal(x[:steps].transpose(0, 1).reshape(1000, 64), rows.transpose(0, 1).reshape(1000, 64))


def test_seq_digits_splits_797_train_1000_test_disjoint_and_as_digits():
    seq, flat = make_task("seq_digits"), make_task("digits")
    assert len(seq.x_train) == 797 and len(seq.x_test) == 1000
    assert torch.equal(seq.y_test, flat.y_test)  # the same held-out images as the feed-forward task
    train = {tuple(r) for r in seq.x_train.reshape(797, -1).tolist()}
    test = {tuple(r) for r in seq.x_test.reshape(1000, -1).tolist()}
    # sklearn's digits hold a few duplicate images; all but those are on one side only
    assert len(train & test) <= 5
    x, y = seq.train_batch(16, torch.Generator().manual_seed(0))
    assert x.shape == (64, 16, 1) and y.shape == (16,)


def test_seq_digits_trains_through_the_rnn():
    t = make_task("seq_digits", read="row", lag=2, test_size=50)
    model = ElmanRNN(t.input_size, t.output_size, RNNSettings(hidden=8, init=InitSettings()),
                     torch.Generator().manual_seed(0))
    x, y = t.train_batch(10, torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (10, 10)
    t.loss(out, y).backward()
    assert model.weight_hh.grad.abs().sum() > 0


def test_digits_test_size_must_leave_images_to_train(run_cli):
    result = run_cli("config", "task=digits", "task.test_size=1750")
    assert result.returncode == 2 and "task.test_size must be <=" in result.stderr
    assert "Traceback" not in result.stderr


# --- xor_stream ---------------------------------------------------------------------------------

def test_xor_stream_targets_the_xor_of_the_bits_lag_and_twice_lag_back():
    lag, length = 4, 30
    t = make_task("xor_stream", lag=lag, length=length, test_size=20)
    x, y = t.train_batch(64, torch.Generator().manual_seed(1))
    assert x.shape == (length, 64, 1) and set(x.unique().tolist()) == {-1.0, 1.0}
    assert t.read_steps == length - 2 * lag and y.shape == (t.read_steps, 64, 1)
    bits = x[..., 0]
    for i, time in enumerate(range(2 * lag, length)):  # the i-th read state is h_time
        assert torch.equal(y[i, :, 0] > 0, bits[time - lag] != bits[time - 2 * lag])
    assert t.evaluate(bits[lag:length - lag, :, None], y) == pytest.approx(0.5, abs=0.05)  # one bit alone: chance


def test_xor_stream_length_must_exceed_twice_the_lag(run_cli):
    result = run_cli("config", "experiment=long_lag", "task=xor_stream", "task.lag=10", "task.length=20")
    assert result.returncode == 2 and "task.length must be > 2 × task.lag" in result.stderr


# --- success on the mean of the last evaluations ------------------------------------------------

def test_success_is_judged_on_the_mean_of_the_last_window(tmp_path):
    t = make_task("lag_sign", lag=5, test_size=10)
    writer = RunWriter(tmp_path)
    for step, accuracy in enumerate([0.5, 1.0, 0.5, 1.0, 1.0, 1.0]):
        writer.log(step, "accuracy", accuracy)
    last_one = train_outcome(t, writer, 1)
    assert last_one["success"] and last_one["judged"] == 1.0
    five = train_outcome(t, writer, 5)  # (1 + 0.5 + 1 + 1 + 1) / 5 = 0.9 < 0.95
    assert not five["success"] and five["judged"] == pytest.approx(0.9)
    assert train_outcome(t, writer, 3)["success"]
    assert train_outcome(t, writer, 50)["judged"] == pytest.approx(5 / 6)  # all there are
    assert five["threshold"] == t.threshold  # what the summary's readers test the judged value against


def _judged_from_metrics(folder, metric, window):
    with open(folder / "metrics.csv") as handle:
        values = [float(r["value"]) for r in csv.DictReader(handle) if r["metric"] == metric and not r["layer"]]
    return sum(values[-window:]) / window


RUN = ["experiment=long_lag", "model.hidden=6", "task.lag=5", "task.test_size=30", "train.steps=12",
       "train.log_every=2", "threads=1", "train.success_window=3"]


def test_single_run_and_ensemble_members_judge_the_same_window(run_cli, tmp_path):
    single = run_cli("train", *RUN, "--out", str(tmp_path / "single"), "--quiet")
    assert single.returncode == 0, single.stderr
    swept = run_cli("sweep", *RUN, "seed=0,1", "--ensemble", "--out", str(tmp_path / "sweep"))
    assert swept.returncode == 0, swept.stderr
    folders = [tmp_path / "single", tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"]
    for folder in folders:
        summary = summary_of(folder)
        assert summary["judged"] == pytest.approx(_judged_from_metrics(folder, "accuracy", 3))
        assert summary["success"] == (summary["judged"] >= 0.95)
        assert "mean of the last 3 evaluations" in summary["criterion"]
    assert summary_of(folders[1])["judged"] == pytest.approx(summary_of(folders[0])["judged"], abs=1e-5)
