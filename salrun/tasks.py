"""Tasks: data, loss, test metric, success criterion and chance level (SCIENCE.md §5).

Feed-forward tasks (`spirals`, `digits`) hold a fixed train and test set.
Sequence tasks (`lag_sign`, `lag_analog`) draw fresh sequences each batch:
the informative input arrives at t = 0 and the target is read from the
state at t = lag, so the information crosses `lag` recurrent steps.
Sequences are shaped (time, batch, inputs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from salrun.settings import ConfigError, TaskSettings


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
    def __init__(self, name: str, x_train, y_train, x_test, y_test, classes: int, threshold: float):
        chance = float(torch.bincount(y_test, minlength=classes).max()) / len(y_test)
        super().__init__(name, x_train.shape[1], classes, False, "accuracy", True, chance, threshold,
                         f"test accuracy >= {threshold}")
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test

    def train_batch(self, batch_size, generator):
        index = torch.randint(len(self.x_train), (batch_size,), generator=generator)
        return self.x_train[index], self.y_train[index]

    def test_set(self):
        return self.x_test, self.y_test

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


def make_spirals(settings: TaskSettings) -> ClassificationTask:
    # The data set is part of the task, not of the run: a fixed seed.
    generator = torch.Generator().manual_seed(12345)
    x_train, y_train = two_spirals(settings.train_size // 2, generator, noise=settings.noise)
    x_test, y_test = two_spirals(settings.test_size // 2, generator, noise=settings.noise)
    return ClassificationTask("spirals", x_train, y_train, x_test, y_test, 2, threshold=0.9)


def make_digits(settings: TaskSettings) -> ClassificationTask:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(12345))
    test_size = min(settings.test_size, len(x) // 3)
    test, train = order[:test_size], order[test_size:]
    return ClassificationTask("digits", x[train], y[train], x[test], y[test], 10, threshold=0.9)


class LagTask(Task):
    """Remember the input of t = 0 for `lag` steps; later inputs are zero or noise."""

    def __init__(self, name: str, lag: int, noise: float, test_size: int, analog: bool):
        if analog:
            # Predicting the mean scores nmse = 1; success explains 90% of the variance.
            super().__init__(name, 1, 1, True, "nmse", False, 1.0, 0.1, "test MSE < 10% of the target variance")
        else:
            super().__init__(name, 1, 1, True, "accuracy", True, 0.5, 0.95, "sign accuracy >= 0.95")
        self.lag, self.noise, self.analog = lag, noise, analog
        self._test = self._sample(test_size, torch.Generator().manual_seed(54321))

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


TASKS = {
    "spirals": make_spirals,
    "digits": make_digits,
    "lag_sign": lambda s: LagTask("lag_sign", s.lag, s.noise, s.test_size, analog=False),
    "lag_analog": lambda s: LagTask("lag_analog", s.lag, s.noise, s.test_size, analog=True),
}


def make_task(settings: TaskSettings) -> Task:
    if settings.name not in TASKS:
        raise ConfigError(f"unknown task {settings.name!r} (choose from: {', '.join(TASKS)})")
    return TASKS[settings.name](settings)
