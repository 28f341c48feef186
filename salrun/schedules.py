"""Rate schedules: the factor that multiplies a rate at each training step.

The shapes are torch.optim.lr_scheduler's (tests/test_schedules.py checks each against it):
`constant`, `cosine` (CosineAnnealingLR over the whole run), `step` (StepLR) and
`warmup_cosine` (LinearLR for `warmup` steps, then CosineAnnealingLR over the rest, as
SequentialLR chains them). A factor is a pure function of the step, so a resumed run and each
member of an ensemble get the same rates as a single run that was never stopped, with no state
to save. `t` counts the optimizer steps already taken (0 for the first step), `total` the run's
steps. The config groups `schedule` (the optimizer's learning rate) and `sal_schedule` (SAL's
own rate η) choose one each.
"""
from __future__ import annotations

import math


def constant(settings, t: int, total: int) -> float:
    return 1.0


def _cosine(t: int, span: int, floor: float) -> float:
    return floor + (1 - floor) * (1 + math.cos(math.pi * min(t, span) / max(span, 1))) / 2


def cosine(settings, t: int, total: int) -> float:
    return _cosine(t, total, settings.min_factor)


def step(settings, t: int, total: int) -> float:
    return settings.gamma ** (t // settings.every)


def warmup_cosine(settings, t: int, total: int) -> float:
    warmup = settings.warmup
    if t < warmup:
        return settings.start_factor + (1 - settings.start_factor) * t / warmup
    return _cosine(t - warmup, total - warmup, settings.min_factor)
