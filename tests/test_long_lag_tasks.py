"""The standard long-lag benchmarks: adding problem, copy memory, delayed XOR."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_task
from salrun.models import ElmanRNN
from salrun.settings import COPY_SYMBOLS, InitSettings, RNNSettings


def task(name, lag, test_size=2000):
    return make_task(name, lag=lag, test_size=test_size)


def batch(t, rows=500, seed=0):
    return t.train_batch(rows, torch.Generator().manual_seed(seed))


# --- adding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("lag", [2, 9, 40])
def test_adding_has_one_mark_in_each_half_and_sums_the_marked_values(lag):
    t = task("adding", lag)
    x, y = batch(t)
    length = lag + 1
    assert x.shape == (length, 500, 2) and y.shape == (500, 1)
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(marks.unique().tolist()) <= {0.0, 1.0}
    half = length // 2
    assert torch.equal(marks[:half].sum(0), torch.ones(500))
    assert torch.equal(marks[half:].sum(0), torch.ones(500))
    assert torch.allclose(y[:, 0], (values * marks).sum(0))


def test_adding_chance_is_the_mse_of_answering_the_mean():
    t = task("adding", 30, test_size=20000)
    x, y = t.test_set()
    guess = torch.ones_like(y)  # E[sum of two U(0,1)]
    assert t.evaluate(guess, y) == pytest.approx(t.chance, rel=0.03)
    assert not t.succeeded(t.evaluate(guess, y))
    assert t.succeeded(t.evaluate(y, y))


def test_adding_needs_both_values():
    t = task("adding", 30, test_size=20000)
    x, y = t.test_set()
    marks = x[..., 1]
    first_only = (x[..., 0] * marks * (torch.arange(31)[:, None] < 15)).sum(0, keepdim=True).T + 0.5
    assert t.evaluate(first_only, y) > 0.05  # one value and the mean of the other: far from success


# --- copy memory ------------------------------------------------------------------------------

@pytest.mark.parametrize("lag", [COPY_SYMBOLS + 1, 30])
def test_copy_memory_layout(lag):
    t = task("copy_memory", lag)
    x, y = batch(t, rows=300)
    assert x.shape == (lag + COPY_SYMBOLS, 300, 10)
    assert y.shape == (COPY_SYMBOLS, 300) and y.dtype == torch.long
    codes = x.argmax(-1)
    assert torch.equal(x.sum(-1), torch.ones(lag + COPY_SYMBOLS, 300))  # one-hot
    assert torch.equal(codes[:COPY_SYMBOLS], y + 1)  # the symbols, 1..8
    assert ((y >= 0) & (y < 8)).all()
    assert (codes[lag - 1] == 9).all()  # the delimiter, just before the recall starts
    rest = torch.cat([codes[COPY_SYMBOLS:lag - 1], codes[lag:]])
    assert (rest == 0).all()  # blanks everywhere else
    # Symbol i, shown at t = i, is read at the i-th of the last 10 steps: t = lag + i.
    recall_times = torch.arange(lag + COPY_SYMBOLS)[-t.read_steps:]
    assert torch.equal(recall_times - torch.arange(COPY_SYMBOLS), torch.full((COPY_SYMBOLS,), lag))


def test_copy_memory_chance_and_an_oracle():
    t = task("copy_memory", 20)
    x, y = t.test_set()
    oracle = F.one_hot(x.argmax(-1)[:COPY_SYMBOLS] - 1, 8).float()
    assert t.evaluate(oracle, y) == 1.0
    uniform = torch.zeros(COPY_SYMBOLS, y.shape[1], 8)
    assert float(t.loss(uniform, y)) == pytest.approx(math.log(8))
    guess = torch.zeros_like(uniform)
    guess[..., 3] = 1  # always the same symbol
    assert t.evaluate(guess, y) == pytest.approx(t.chance, abs=0.02)


def test_copy_memory_through_the_rnn():
    t = task("copy_memory", 12, test_size=16)
    model = ElmanRNN(t.input_size, t.output_size, RNNSettings(hidden=8, init=InitSettings()),
                     torch.Generator().manual_seed(0))
    model.read_steps = t.read_steps
    x, y = t.test_set()
    out = model(x)
    assert out.shape == (COPY_SYMBOLS, 16, 8)
    t.loss(out, y).backward()
    assert model.weight_hh.grad.abs().sum() > 0


# --- delayed XOR ------------------------------------------------------------------------------

def test_delayed_xor_target_is_the_xor_of_the_first_two_bits():
    t = make_task("delayed_xor", lag=7, test_size=10, noise=0.0)
    x, y = batch(t)
    a, b = x[0, :, 0], x[1, :, 0]
    assert set(a.unique().tolist()) == {-1.0, 1.0} and set(b.unique().tolist()) == {-1.0, 1.0}
    assert (x[2:] == 0).all()
    assert torch.equal(y[:, 0] > 0, a != b)


def test_delayed_xor_is_not_solved_by_either_bit_alone():
    t = task("delayed_xor", 5)
    x, y = t.test_set()
    for bit in (0, 1):
        accuracy = t.evaluate(x[bit], y)
        assert accuracy == pytest.approx(t.chance, abs=0.05)
    assert t.evaluate(-x[0] * x[1], y) == 1.0


def test_delayed_xor_noise_comes_after_the_bits():
    t = make_task("delayed_xor", lag=6, test_size=10, noise=0.5)
    x, _ = batch(t, rows=200)
    assert set(x[:2].unique().tolist()) == {-1.0, 1.0}
    assert x[2:].std() == pytest.approx(0.5, rel=0.15)


# --- shared -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["adding", "copy_memory", "delayed_xor"])
def test_test_set_is_fixed_and_batches_are_fresh(name):
    a, b = task(name, 12, test_size=50), task(name, 12, test_size=50)
    assert torch.equal(a.test_set()[0], b.test_set()[0])
    generator = torch.Generator().manual_seed(0)
    first, second = a.train_batch(50, generator)[0], a.train_batch(50, generator)[0]
    assert not torch.equal(first, second)
