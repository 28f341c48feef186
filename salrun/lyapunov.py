"""Lyapunov exponents of a tanh RNN h_t = tanh(W_ih x_t + W_hh h_{t-1} + θ).

The maximum Lyapunov exponent (MLE) is measured in the tangent space: a
perturbation v is carried by the analytic one-step Jacobian
J_t = diag(1 - h_t²)·W_hh, renormalised every step, and the log growth is
averaged after a transient (natural log, per step). The same pass measures
the log-sensitivity of the same steps, so the two are comparable.
`mle_two_trajectory` is an independent finite-difference estimate, for tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from salrun.sensitivity import row_norm_sq


@dataclass
class ChaosMeasurement:
    mle: float                  # mean over trajectories
    log_sensitivity: float      # ln RMS recurrent sensitivity over the same steps and trajectories
    state: torch.Tensor         # the final states, to continue from


def _drive(w_ih: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor | None, steps: int, batch: int) -> torch.Tensor:
    """W_ih x_t + θ for every step: (steps, batch, hidden)."""
    if inputs is None or inputs.shape[-1] == 0:
        return bias.expand(steps, batch, -1)
    return torch.nn.functional.linear(inputs, w_ih, bias)


@torch.no_grad()
def max_lyapunov(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                 inputs: torch.Tensor | None, transient: int, steps: int,
                 generator: torch.Generator | None = None) -> ChaosMeasurement:
    """MLE and log-sensitivity along the trajectory from states h (batch, hidden).

    `inputs` is (transient + steps, batch, inputs) or None for an autonomous net.
    The log-sensitivity uses the recurrent weights: the gain from h_{t-1} to h_t
    that the MLE measures.
    """
    total = transient + steps
    drive = _drive(w_ih, bias, inputs, total, h.shape[0])
    v = torch.randn(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    v = v / v.norm(dim=1, keepdim=True)
    w_t = w_hh.T
    log_growth = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
    gain_sq = torch.zeros((), dtype=h.dtype, device=h.device)
    norm_sq = row_norm_sq([w_hh])
    for t in range(total):
        h = torch.tanh(torch.addmm(drive[t], h, w_t))
        slope = 1 - h * h
        v = slope * (v @ w_t)
        norm = v.norm(dim=1, keepdim=True)
        v = v / norm
        if t >= transient:
            log_growth += norm[:, 0].log()
            gain_sq += (slope * slope * norm_sq).mean()
    mle = float(log_growth.mean() / steps)
    log_sens = float(0.5 * torch.log(gain_sq / steps))
    return ChaosMeasurement(mle, log_sens, h)


@torch.no_grad()
def mle_two_trajectory(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                       inputs: torch.Tensor | None, transient: int, steps: int, epsilon: float = 1e-7,
                       generator: torch.Generator | None = None) -> float:
    """Finite-difference MLE: a twin trajectory kept at distance ε, renormalised each step."""
    total = transient + steps
    drive = _drive(w_ih, bias, inputs, total, h.shape[0])
    d = torch.randn(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    twin = h + epsilon * d / d.norm(dim=1, keepdim=True)
    log_growth = torch.zeros(h.shape[0], dtype=h.dtype, device=h.device)
    for t in range(total):
        h = torch.tanh(torch.addmm(drive[t], h, w_hh.T))
        twin = torch.tanh(torch.addmm(drive[t], twin, w_hh.T))
        gap = (twin - h).norm(dim=1, keepdim=True)
        twin = h + (twin - h) * (epsilon / gap)
        if t >= transient:
            log_growth += (gap[:, 0] / epsilon).log()
    return float(log_growth.mean() / steps)
