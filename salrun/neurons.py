"""Sensitivity math (docs/SCIENCE.md §1-2): pure tensor functions, no state, no I/O.

(Not named sensitivity.py: `salrun.sensitivity` is the public function.)

A neuron j has weights w_j (one row of W), bias θ_j, input x and output
o_j = f(U_j) with U_j = w_j·x + θ_j. Its sensitivity is s_j = f'(U_j)·‖w_j‖.
Every function here works on a batch: x is (n, inputs), o is (n, neurons).
A neuron's weights may be split into blocks (an RNN neuron sees external and
recurrent inputs through two matrices); the row norm then spans all blocks.
"""
from __future__ import annotations

from typing import Sequence

import torch

ACTIVATIONS = ("tanh", "sigmoid_shifted", "linear")


def activate(u: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "tanh":
        return torch.tanh(u)
    if activation == "sigmoid_shifted":  # the paper-era sigmoid, range (-0.5, 0.5)
        return torch.sigmoid(u) - 0.5
    if activation == "linear":
        return u
    raise ValueError(f"unknown activation {activation!r}")


def derivative(o: torch.Tensor, activation: str) -> torch.Tensor:
    """f'(U) written in terms of the output o = f(U)."""
    if activation == "tanh":
        return 1 - o * o
    if activation == "sigmoid_shifted":
        return 0.25 - o * o
    if activation == "linear":
        return torch.ones_like(o)
    raise ValueError(f"unknown activation {activation!r}")


def curvature_ratio(o: torch.Tensor, activation: str) -> torch.Tensor:
    """f''(U)/f'(U) in terms of o: -2·o for tanh and for the shifted sigmoid."""
    if activation in ("tanh", "sigmoid_shifted"):
        return -2 * o
    if activation == "linear":
        return torch.zeros_like(o)
    raise ValueError(f"unknown activation {activation!r}")


# Floor of f' in the mean-log form: tanh's 1 - o² is exactly 0 in float32 once |U| > ~9
# (f' < 6e-8); a floor keeps ln f' finite without letting one saturated sample dominate.
MIN_SLOPE = 1e-12


def slope_statistic(slope: torch.Tensor, average: str = "arithmetic") -> torch.Tensor:
    """What the batch mean of s_j averages per row: f' (arithmetic) or ln f' (geometric)."""
    if average == "arithmetic":
        return slope
    if average == "geometric":
        return torch.log(slope.clamp_min(MIN_SLOPE))
    raise ValueError(f"unknown average {average!r}")


def from_statistic(mean: torch.Tensor, average: str = "arithmetic") -> torch.Tensor:
    """The mean of `slope_statistic` back to a mean slope: mean f', or exp(mean ln f')."""
    return mean if average == "arithmetic" else torch.exp(mean)


def mean_sensitivity(slope: torch.Tensor, norm: torch.Tensor, average: str = "arithmetic") -> torch.Tensor:
    """Batch mean of s_j = f'(U_j)·‖w_j‖ over the rows (dim -2): arithmetic, or the geometric
    exp(mean ln s_j) = exp(mean ln f')·‖w_j‖ (the mean-log form of docs/SCIENCE.md §1)."""
    return from_statistic(slope_statistic(slope, average).mean(-2), average) * norm


def tangent_log_gains(weights: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor], chained: Sequence[bool],
                      activation: str, generator: torch.Generator) -> torch.Tensor:
    """Per layer of a feed-forward stack, the mean over the batch of ln(‖J_l δ‖/‖δ‖), J_l =
    diag(f'(U_l))·W_l, for a tangent vector δ propagated from a random direction at the first
    layer's input: the log gain on the direction the signal (and, transposed, the gradient)
    takes, which can lie far below ln RMS(s) when the layers' Jacobians are not isotropic.
    A layer whose input is not the previous layer's output starts from a fresh random δ."""
    gains, delta = [], None
    for w, o, chain in zip(weights, outputs, chained):
        if delta is None or not chain or delta.shape[1] != w.shape[1]:
            delta = torch.randn(o.shape[0], w.shape[1], generator=generator).to(o)
            delta = delta / delta.norm(dim=1, keepdim=True)
        delta = derivative(o, activation) * (delta @ w.T)
        norm = delta.norm(dim=1).clamp_min(1e-30)
        gains.append(torch.log(norm).mean())
        delta = delta / norm[:, None]
    return torch.stack(gains)


def row_norm_sq(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖w_j‖² over all weight blocks of each neuron, shape (neurons,)."""
    total = torch.linalg.vecdot(weights[0], weights[0])
    for w in weights[1:]:
        total.add_(torch.linalg.vecdot(w, w))
    return total


def sensitivity(o: torch.Tensor, weights: Sequence[torch.Tensor], activation: str = "tanh") -> torch.Tensor:
    """s_j = f'(U_j)·‖w_j‖ for each sample and neuron, shape like o."""
    return derivative(o, activation) * row_norm_sq(weights).sqrt()


def log_sensitivity(s: torch.Tensor, kind: str = "rms") -> torch.Tensor:
    """Log-sensitivity of a set of neurons: ln RMS(s) (default) or mean of ln s."""
    if kind == "rms":
        return 0.5 * torch.log(s.pow(2).mean())
    if kind == "meanlog":
        return torch.log(s).mean()
    raise ValueError(f"unknown log-sensitivity kind {kind!r}")


def log_sensitivity_gradient(
    weights: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    o: torch.Tensor,
    activation: str = "tanh",
    sample_weight: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Batch mean of ∂ln s_j/∂w_j and ∂ln s_j/∂θ_j with each input held fixed.

        ∂ln s_j/∂w_j = w_j/‖w_j‖² + (f''/f')(U_j)·x,   ∂ln s_j/∂θ_j = (f''/f')(U_j)

    `inputs[k]` is the input seen through `weights[k]`. `sample_weight` (n,
    neurons) weights each sample's term per neuron; with s itself it turns
    the gradient of ln s into the gradient of s (s·∇ln s).
    """
    n = o.shape[0]
    ratio = curvature_ratio(o, activation)
    # A neuron with no nonzero weight (possible in a sparse RNN) has no radial direction.
    norm_sq = row_norm_sq(weights).clamp_min(1e-30)
    if sample_weight is None:
        radial_coef = 1.0 / norm_sq
    else:
        radial_coef = sample_weight.mean(0) / norm_sq
        ratio = ratio * sample_weight
    grads = [radial_coef[:, None] * w + ratio.T @ x / n for w, x in zip(weights, inputs)]
    return grads, ratio.mean(0)
