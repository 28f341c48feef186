"""95% intervals for `salrun report`: Wilson's score interval for a success rate, Newcombe's
hybrid score interval for the difference of two rates, and percentile bootstrap intervals for a
mean and for the difference of two means.

The bootstrap draws RESAMPLES resamples from a generator seeded with SEED on every call, so a
table is the same each time it is made, and a group's interval does not depend on which other
groups are in the report. Each group's runs are resampled on their own (independent samples).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
Z = NormalDist().inv_cdf(0.5 + LEVEL / 2)  # 1.95996...
RESAMPLES = 10_000
SEED = 0
Interval = tuple[float, float]


def wilson(successes: int, n: int) -> Interval | None:
    """Wilson's score interval for successes/n (Wilson 1927); None for n = 0."""
    if n == 0:
        return None
    p, z2 = successes / n, Z * Z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # The bounds at 0 and n are exactly 0 and 1; the formula leaves rounding dust there.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def newcombe(successes: int, n: int, ref_successes: int, ref_n: int) -> Interval | None:
    """Interval for the difference of two independent rates, successes/n − ref_successes/ref_n:
    Newcombe's hybrid score interval (1998, method 10), from each rate's Wilson interval."""
    if n == 0 or ref_n == 0:
        return None
    p, q = successes / n, ref_successes / ref_n
    (p_lo, p_hi), (q_lo, q_hi) = wilson(successes, n), wilson(ref_successes, ref_n)
    return (p - q - math.hypot(p - p_lo, q_hi - q), p - q + math.hypot(p_hi - p, q - q_lo))


def _resampled_means(values, rng) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)


def _percentiles(samples: np.ndarray) -> Interval:
    low, high = np.percentile(samples, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(low), float(high)


def bootstrap_mean(values) -> Interval | None:
    """Percentile bootstrap interval of the mean; None for fewer than 2 values."""
    if len(values) < 2:
        return None
    return _percentiles(_resampled_means(values, np.random.default_rng(SEED)))


def bootstrap_difference(values, ref_values) -> Interval | None:
    """Percentile bootstrap interval of mean(values) − mean(ref_values), each resampled on its own;
    None unless both have 2 or more values."""
    if len(values) < 2 or len(ref_values) < 2:
        return None
    rng = np.random.default_rng(SEED)
    return _percentiles(_resampled_means(values, rng) - _resampled_means(ref_values, rng))
