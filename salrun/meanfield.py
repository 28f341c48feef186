"""Mean-field signal propagation in deep tanh nets (Poole et al. 2016; Schoenholz et al. 2017).

With W_ij ~ N(0, σ_w²/n_in) and θ_i ~ N(0, σ_b²), the pre-activation variance of
a wide layer settles on the fixed point q* of the length map

    q = σ_w² E[tanh(√q z)²] + σ_b²,        z ~ N(0, 1),

and a small perturbation grows by χ₁ = σ_w² E[tanh'(√q* z)²] per layer. χ₁ = 1 is
the edge of chaos: ordered below (gradients vanish), chaotic above (they explode).
`critical_sigma_w` solves χ₁ = 1 for σ_w at a given σ_b. Gaussian expectations are
a trapezoid sum on a dense grid (the integrands are smooth, so it converges fast);
both roots are found by bisection. No torch: plain numpy.
"""
from __future__ import annotations

import math

import numpy as np

_Z = np.linspace(-10.0, 10.0, 4001)
_WEIGHT = np.exp(-_Z**2 / 2)
_WEIGHT /= _WEIGHT.sum()  # E[1] = 1 exactly: at q = 0, χ₁ = σ_w² with no rounding offset


def gaussian_mean(f, q: float) -> float:
    """E[f(√q z)] for z ~ N(0, 1)."""
    return float(np.sum(_WEIGHT * f(math.sqrt(max(q, 0.0)) * _Z)))


def _tanh_sq(u):
    return np.tanh(u) ** 2


def _slope_sq(u):
    return (1 - np.tanh(u) ** 2) ** 2


def _bisect(f, lo: float, hi: float, tol: float = 1e-13) -> float:
    """A root of f in [lo, hi], where f(lo) and f(hi) differ in sign (or one is 0)."""
    f_lo = f(lo)
    if abs(f_lo) < 1e-14:
        return lo
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0) and f_mid != 0:
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi - lo < tol * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def fixed_point_q(sigma_w: float, sigma_b: float) -> float:
    """q*: the stable fixed point of the length map (0 when σ_b = 0 and σ_w ≤ 1)."""
    def gap(q: float) -> float:
        return sigma_w**2 * gaussian_mean(_tanh_sq, q) + sigma_b**2 - q

    upper = sigma_w**2 + sigma_b**2  # E[tanh²] < 1, so the map lies below q for q ≥ upper
    if sigma_b == 0:
        if sigma_w <= 1:
            return 0.0  # the map's slope at 0 is σ_w² ≤ 1: only q = 0
        lower = 1e-12  # the slope at 0 is σ_w² > 1, so gap > 0 just above 0
        return _bisect(gap, lower, upper)
    return _bisect(gap, 0.0, upper)


def chi_1(sigma_w: float, sigma_b: float) -> float:
    """χ₁ = σ_w² E[tanh'(√q* z)²]: the mean squared one-layer gain of a perturbation."""
    return sigma_w**2 * gaussian_mean(_slope_sq, fixed_point_q(sigma_w, sigma_b))


def critical_sigma_w(sigma_b: float, low: float = 1.0, high: float = 100.0) -> float:
    """σ_w on the χ₁ = 1 line for tanh at bias scale σ_b (σ_b = 0: σ_w = 1).

    χ₁ ≤ 1 at σ_w = 1 (tanh' ≤ 1) and grows with σ_w, so the root lies in [1, high]."""
    if sigma_b < 0:
        raise ValueError(f"sigma_b must be >= 0, got {sigma_b}")
    return _bisect(lambda w: chi_1(w, sigma_b) - 1.0, low, high, tol=1e-12)
