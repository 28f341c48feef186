"""Tasks: data, loss, test metric, success criterion and chance level (docs/SCIENCE.md §5).

Feed-forward tasks (`spirals`, `clusters`, `digits`) hold a fixed train and test set.
Sequence tasks draw fresh sequences each batch (the test set is fixed) and
make the information cross `task.lag` recurrent steps:
- `lag_sign`, `lag_analog`: the input of t = 0 is read from the state at t = lag;
- `adding` (Hochreiter & Schmidhuber 1997, as in Le et al. 2015): the sum of the
  two marked values of lag + 1 steps, one mark in each half;
- `copy_memory` (Hochreiter & Schmidhuber 1997, as in Arjovsky et al. 2016): 10
  symbols, each recalled lag steps after it was shown;
- `delayed_xor`: the XOR of the ±1 bits of t = 0 and t = 1, read at t = lag;
- `xor_stream` (gradient flossing's delayed XOR, Engelken 2023): a bit every step, the XOR
  of the bits lag and 2·lag steps back read at every step;
- `seq_digits`: scikit-learn's digits read pixel by pixel or row by row, then lag blanks
  (a fixed train and test set, as the feed-forward tasks).
Sequences are shaped (time, batch, inputs). Each task is registered with its settings
in salrun/settings.py; here it is built from them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from salrun.settings import (COPY_SYMBOLS, AddingSettings, ClustersSettings, CopyMemorySettings, DelayedXORSettings,
                             DigitsSettings, LagSettings, SeqDigitsSettings, SpiralsSettings,
                             XORStreamSettings)


@dataclass
class Task:
    name: str
    input_size: int
    output_size: int
    sequential: bool
    metric: str               # name of the test metric
    higher_is_better: bool
    chance: float             # the test metric of a guess that ignores the input
    threshold: float          # success: the test metric reaches this
    criterion: str            # the success criterion in words
    read_steps: int = 1       # sequence tasks: outputs read from the last read_steps states

    def succeeded(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value >= self.threshold if self.higher_is_better else value < self.threshold

    # Subclasses implement these.
    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, prediction: torch.Tensor, target: torch.Tensor) -> float:
        raise NotImplementedError


class ClassificationTask(Task):
    """A fixed train and test set of labelled samples (N, inputs), or with `sequential` of
    sequences (N, time, inputs), handed out time-first as the RNN reads them."""

    def __init__(self, name: str, x_train, y_train, x_test, y_test, classes: int, threshold: float,
                 sequential: bool = False):
        chance = float(torch.bincount(y_test, minlength=classes).max()) / len(y_test)
        super().__init__(name, x_train.shape[-1], classes, sequential, "accuracy", True, chance, threshold,
                         f"test accuracy >= {threshold}")
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test

    def _shaped(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1) if self.sequential else x

    def train_batch(self, batch_size, generator):
        index = torch.randint(len(self.x_train), (batch_size,), generator=generator)
        return self._shaped(self.x_train[index]), self.y_train[index]

    def test_set(self):
        return self._shaped(self.x_test), self.y_test

    def loss(self, prediction, target):
        return F.cross_entropy(prediction, target)

    def evaluate(self, prediction, target):
        return float((prediction.argmax(1) == target).float().mean())


def two_spirals(n: int, generator: torch.Generator, turns: float = 1.5, noise: float = 0.0):
    """n points per arm on two interleaved spirals in the unit disc."""
    t = torch.rand(2 * n, generator=generator).sqrt()
    label = torch.arange(2 * n) % 2
    angle = t * turns * 2 * math.pi + label * math.pi
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], 1)
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator)
    return x, label


def make_spirals(settings: SpiralsSettings) -> ClassificationTask:
    # The data set is part of the task, not of the run: a fixed seed.
    generator = torch.Generator().manual_seed(12345)
    x_train, y_train = two_spirals(settings.train_size // 2, generator, noise=settings.noise)
    x_test, y_test = two_spirals(settings.test_size // 2, generator, noise=settings.noise)
    return ClassificationTask("spirals", x_train, y_train, x_test, y_test, 2, threshold=0.9)


def two_clusters(n: int, generator: torch.Generator):
    """n points per class from N(±(0.7, 0.7), 0.5²·I): linearly separable up to a
    Bayes accuracy of about 0.976, so it asks depth to carry the input, not to shape it."""
    label = torch.arange(2 * n) % 2
    x = 0.5 * torch.randn(2 * n, 2, generator=generator) + 0.7 * (2 * label[:, None] - 1)
    return x, label


def make_clusters(settings: ClustersSettings) -> ClassificationTask:
    generator = torch.Generator().manual_seed(12345)
    x_train, y_train = two_clusters(settings.train_size // 2, generator)
    x_test, y_test = two_clusters(settings.test_size // 2, generator)
    return ClassificationTask("clusters", x_train, y_train, x_test, y_test, 2, threshold=0.9)


def _digits(settings: DigitsSettings):
    """scikit-learn's digits as intensities in [0, 1] (N, 64), their labels, and the held-out
    split: the same `test_size` images for every run, the others train."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(12345))
    return x, y, order[settings.test_size:], order[:settings.test_size]


def make_digits(settings: DigitsSettings) -> ClassificationTask:
    x, y, train, test = _digits(settings)
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    return ClassificationTask("digits", x[train], y[train], x[test], y[test], 10, threshold=0.9)


class SequentialDigits(ClassificationTask):
    """The digits as sequences, the stand-in for the field's pixel-by-pixel MNIST (which
    cannot be downloaded here): 64 pixel intensities in [0, 1], one per step, or 8 rows of 8;
    then `lag` steps of zeros (blank background) before the class is read from the last state."""

    def __init__(self, settings: SeqDigitsSettings):
        x, y, train, test = _digits(settings)
        x = x.reshape(len(x), 64, 1) if settings.read == "pixel" else x.reshape(len(x), 8, 8)
        x = torch.cat([x, x.new_zeros(len(x), settings.lag, x.shape[2])], 1)
        super().__init__("seq_digits", x[train], y[train], x[test], y[test], 10, threshold=0.9, sequential=True)


class LagTask(Task):
    """Remember the input of t = 0 for `lag` steps; later inputs are zero or noise."""

    analog = False

    def __init__(self, settings: LagSettings):
        if self.analog:
            # Predicting the mean scores nmse = 1; success explains 90% of the variance.
            super().__init__("lag_analog", 1, 1, True, "nmse", False, 1.0, 0.1,
                             "test MSE < 10% of the target variance")
        else:
            super().__init__("lag_sign", 1, 1, True, "accuracy", True, 0.5, 0.95, "sign accuracy >= 0.95")
        self.lag, self.noise = settings.lag, settings.noise
        self._test = self._sample(settings.test_size, torch.Generator().manual_seed(54321))

    def _sample(self, batch_size: int, generator: torch.Generator):
        if self.analog:
            first = torch.rand(batch_size, generator=generator) * 2 - 1
        else:
            first = torch.randint(2, (batch_size,), generator=generator).float() * 2 - 1
        x = torch.zeros(self.lag + 1, batch_size, 1)
        if self.noise > 0:
            x[1:] = self.noise * torch.randn(self.lag, batch_size, 1, generator=generator)
        x[0, :, 0] = first
        return x, first[:, None]

    def train_batch(self, batch_size, generator):
        return self._sample(batch_size, generator)

    def test_set(self):
        return self._test

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    def evaluate(self, prediction, target):
        if self.analog:
            return float(F.mse_loss(prediction, target) / target.var(unbiased=False))
        return float((torch.sign(prediction) == target).float().mean())


class SequenceTask(Task):
    """Fresh sequences every batch from `_sample`; a fixed test set of `test_size` of them."""

    def _sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _make_test_set(self, test_size: int) -> None:
        self._test = self._sample(test_size, torch.Generator().manual_seed(54321))

    def train_batch(self, batch_size, generator):
        return self._sample(batch_size, generator)

    def test_set(self):
        return self._test


class AddingTask(SequenceTask):
    """Two channels over lag + 1 steps: values U(0, 1) and a marker that is 1 at one step of
    the first half and one of the second; the target is the sum of the two marked values."""

    def __init__(self, settings: AddingSettings):
        # Always answering 1, the target's mean, scores its variance: 2 × 1/12.
        super().__init__("adding", 2, 1, True, "mse", False, 1 / 6, 0.01, "test MSE < 0.01 (chance 1/6)")
        self.lag = settings.lag
        self._make_test_set(settings.test_size)

    def _sample(self, batch_size, generator):
        length = self.lag + 1
        half = length // 2
        values = torch.rand(length, batch_size, generator=generator)
        first = torch.randint(half, (batch_size,), generator=generator)
        second = half + torch.randint(length - half, (batch_size,), generator=generator)
        marks = torch.zeros(length, batch_size)
        rows = torch.arange(batch_size)
        marks[first, rows] = 1.0
        marks[second, rows] = 1.0
        target = values[first, rows] + values[second, rows]
        return torch.stack([values, marks], -1), target[:, None]

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    def evaluate(self, prediction, target):
        return float(F.mse_loss(prediction, target))


class CopyMemoryTask(SequenceTask):
    """Inputs one-hot over 10 categories (0 blank, 1-8 symbols, 9 delimiter): 10 random
    symbols at t = 0..9, blanks, the delimiter at t = lag - 1, blanks while the net
    recalls symbol i at t = lag + i. Scored at the 10 recall steps only."""

    categories, alphabet = 10, 8

    def __init__(self, settings: CopyMemorySettings):
        # A guess ignores the input: 1 symbol in 8 (cross-entropy ln 8).
        super().__init__("copy_memory", self.categories, self.alphabet, True, "accuracy", True,
                         1 / self.alphabet, 0.95, "recalled-symbol accuracy >= 0.95", read_steps=COPY_SYMBOLS)
        self.lag = settings.lag
        self._make_test_set(settings.test_size)

    def _sample(self, batch_size, generator):
        symbols = torch.randint(self.alphabet, (COPY_SYMBOLS, batch_size), generator=generator)  # 0..7
        codes = torch.zeros(self.lag + COPY_SYMBOLS, batch_size, dtype=torch.long)
        codes[:COPY_SYMBOLS] = symbols + 1
        codes[self.lag - 1] = self.categories - 1
        return F.one_hot(codes, self.categories).float(), symbols

    def loss(self, prediction, target):
        return F.cross_entropy(prediction.reshape(-1, self.alphabet), target.reshape(-1))

    def evaluate(self, prediction, target):
        return float((prediction.argmax(-1) == target).float().mean())


class SignTask(SequenceTask):
    """±1 targets, fitted by MSE and scored by sign accuracy."""

    def loss(self, prediction, target):
        return F.mse_loss(prediction, target)

    def evaluate(self, prediction, target):
        return float((torch.sign(prediction) == target).float().mean())


class DelayedXORTask(SignTask):
    """±1 bits a at t = 0 and b at t = 1, zeros (or noise) after; the target at t = lag is
    XOR(a, b) as ±1 (+1 when they differ), so both bits must be kept, not just their sum."""

    def __init__(self, settings: DelayedXORSettings):
        super().__init__("delayed_xor", 1, 1, True, "accuracy", True, 0.5, 0.95, "sign accuracy >= 0.95")
        self.lag, self.noise = settings.lag, settings.noise
        self._make_test_set(settings.test_size)

    def _sample(self, batch_size, generator):
        bits = torch.randint(2, (2, batch_size), generator=generator).float() * 2 - 1
        x = torch.zeros(self.lag + 1, batch_size, 1)
        if self.noise > 0:
            x[2:] = self.noise * torch.randn(self.lag - 1, batch_size, 1, generator=generator)
        x[:2, :, 0] = bits
        return x, (-bits[0] * bits[1])[:, None]


class XORStreamTask(SignTask):
    """Gradient flossing's delayed XOR (Engelken 2023): a fresh ±1 bit b_t every step; at every
    step t ≥ 2·lag the target is XOR(b_{t−lag}, b_{t−2·lag}) as ±1 (+1 when they differ), read
    from each of those states and scored over all of them. Engelken's bits are 0/1 with a
    logistic readout; ours are ±1 with the MSE of delayed_xor."""

    def __init__(self, settings: XORStreamSettings):
        self.lag, self.length = settings.lag, settings.length
        super().__init__("xor_stream", 1, 1, True, "accuracy", True, 0.5, 0.95, "sign accuracy >= 0.95",
                         read_steps=self.length - 2 * self.lag)
        self._make_test_set(settings.test_size)

    def _sample(self, batch_size, generator):
        bits = torch.randint(2, (self.length, batch_size), generator=generator).float() * 2 - 1
        d = self.lag
        return bits[..., None], (-bits[d:self.length - d] * bits[:self.length - 2 * d])[..., None]


class LagSign(LagTask):
    """The sign of a ±1 input of t = 0, read at t = lag."""


class LagAnalog(LagTask):
    """The value of a U(-1, 1) input of t = 0, read at t = lag."""

    analog = True
