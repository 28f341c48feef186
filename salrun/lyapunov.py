"""Lyapunov exponents of a tanh RNN h_t = tanh(W_ih x_t + W_hh h_{t-1} + θ).

The maximum Lyapunov exponent (MLE) is measured in the tangent space: a
perturbation v is carried by the analytic one-step Jacobian
J_t = diag(1 - h_t²)·W_hh, renormalised every step, and the log growth is
averaged after a transient (natural log, per step). The same pass measures
the log-sensitivity of the same steps, so the two are comparable.
`mle_two_trajectory` is an independent finite-difference estimate, for tests.
`max_lyapunov_ensemble` measures several networks (seeds) in one batched
pass: the same products, one bmm per step for all of them.

`lyapunov_spectrum` estimates the top-k exponents λ_1 ≥ … ≥ λ_k by QR
(Benettin): k tangent vectors are carried by J_t and re-orthonormalised
every step, Q_t R_t = J_t Q_{t-1}; λ_i is the time average of ln |R_t[i, i]|.
Its first column is exactly the renormalised vector of the MLE, so λ_1 is
the MLE. `lyapunov_spectrum_ensemble` does the same for E networks at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from salrun.neurons import row_norm_sq


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
                 generator: torch.Generator | None = None, v: torch.Tensor | None = None) -> ChaosMeasurement:
    """MLE and log-sensitivity along the trajectory from states h (batch, hidden).

    `inputs` is (transient + steps, batch, inputs) or None for an autonomous net.
    The log-sensitivity uses the recurrent weights: the gain from h_{t-1} to h_t
    that the MLE measures. `v` is the initial perturbation (random if None).
    """
    total = transient + steps
    drive = _drive(w_ih, bias, inputs, total, h.shape[0])
    if v is None:
        v = torch.randn(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    v = v / v.norm(dim=-1, keepdim=True)
    w_t = w_hh.T
    # Per step only what the tangent dynamics need; logs and sums once at the end.
    growth = torch.empty(steps, h.shape[0], 1, dtype=h.dtype, device=h.device)
    slope_sq = torch.zeros_like(h)
    batch = h.shape[0]
    hv = torch.cat([h, v])  # state and tangent vector meet the same W: one product per step
    for t in range(total):
        hv = hv @ w_t
        h = hv[:batch].add_(drive[t]).tanh_()
        slope = 1 - h * h
        v = hv[batch:].mul_(slope)
        norm = torch.linalg.vector_norm(v, dim=1, keepdim=True, out=growth[t - transient] if t >= transient else None)
        v.div_(norm)
        if t >= transient:
            slope_sq.addcmul_(slope, slope)
    mle = float(growth.log().sum(0).mean() / steps)
    log_sens = float(0.5 * torch.log((slope_sq * row_norm_sq([w_hh])).mean() / steps))
    return ChaosMeasurement(mle, log_sens, h)


@torch.no_grad()
def max_lyapunov_ensemble(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                          inputs: torch.Tensor | None, transient: int, steps: int,
                          generator: torch.Generator | None = None,
                          v: torch.Tensor | None = None) -> list[ChaosMeasurement]:
    """`max_lyapunov` for E networks at once: w_hh (E, n, n), w_ih (E, n, k), bias (E, n),
    h and v (E, batch, n), inputs (transient + steps, E, batch, k) or None.
    Member e gets exactly the estimate `max_lyapunov` gives for its slices."""
    total = transient + steps
    members, batch = h.shape[0], h.shape[1]
    if inputs is None or inputs.shape[-1] == 0:
        drive = bias[None, :, None, :].expand(total, members, batch, -1)
    else:
        drive = torch.einsum("temk,enk->temn", inputs, w_ih) + bias[None, :, None, :]
    if v is None:
        v = torch.randn(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    v = v / v.norm(dim=-1, keepdim=True)
    w_t = w_hh.transpose(1, 2)
    growth = torch.empty(steps, members, batch, 1, dtype=h.dtype, device=h.device)
    slope_sq = torch.zeros_like(h)
    hv = torch.cat([h, v], dim=1)  # state and tangent vector meet the same W: one bmm per step
    for t in range(total):
        hv = torch.bmm(hv, w_t)
        h = hv[:, :batch].add_(drive[t]).tanh_()
        slope = 1 - h * h
        v = hv[:, batch:].mul_(slope)
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True, out=growth[t - transient] if t >= transient else None)
        v.div_(norm)
        if t >= transient:
            slope_sq.addcmul_(slope, slope)
    mle = (growth.log().sum(0)[..., 0].mean(1) / steps).tolist()
    norm_sq = w_hh.pow(2).sum(-1)[:, None, :]  # (E, 1, n)
    log_sens = (0.5 * torch.log((slope_sq * norm_sq).mean((1, 2)) / steps)).tolist()
    return [ChaosMeasurement(m, s, h[e]) for e, (m, s) in enumerate(zip(mle, log_sens))]


@dataclass
class SpectrumMeasurement:
    exponents: list[float]      # λ_1 ≥ … ≥ λ_k, mean over trajectories (λ_1 is the MLE)
    log_sensitivity: float      # as in ChaosMeasurement
    state: torch.Tensor         # the final states, to continue from

    @property
    def mle(self) -> float:
        return self.exponents[0]


@torch.no_grad()
def lyapunov_spectrum(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                      inputs: torch.Tensor | None, transient: int, steps: int, k: int,
                      generator: torch.Generator | None = None,
                      basis: torch.Tensor | None = None) -> SpectrumMeasurement:
    """Top-k Lyapunov exponents along the trajectory from states h (batch, hidden), by QR.

    Arguments as in `max_lyapunov`; `basis` (batch, k, hidden) holds the initial tangent
    vectors as rows (random if None; they are orthonormalised first)."""
    members = lyapunov_spectrum_ensemble(
        w_hh[None], w_ih[None], bias[None], h[None], None if inputs is None else inputs[:, None], transient, steps,
        k, generator, None if basis is None else basis[None])
    return members[0]


@torch.no_grad()
def lyapunov_spectrum_ensemble(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                               inputs: torch.Tensor | None, transient: int, steps: int, k: int,
                               generator: torch.Generator | None = None,
                               basis: torch.Tensor | None = None) -> list[SpectrumMeasurement]:
    """`lyapunov_spectrum` for E networks at once (shapes as in `max_lyapunov_ensemble`;
    `basis` is (E, batch, k, hidden)). Per step: one bmm carries the states and the k
    tangent vectors of every trajectory, one batched QR re-orthonormalises them."""
    total = transient + steps
    members, batch, n = h.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the hidden size {n}, got {k}")
    if inputs is None or inputs.shape[-1] == 0:
        drive = bias[None, :, None, :].expand(total, members, batch, -1)
    else:
        drive = torch.einsum("temk,enk->temn", inputs, w_ih) + bias[None, :, None, :]
    if basis is None:
        basis = torch.randn(members, batch, k, n, generator=generator, dtype=h.dtype, device=h.device)
    q = torch.linalg.qr(basis.transpose(-1, -2)).Q.transpose(-1, -2)  # orthonormal rows
    w_t = w_hh.transpose(1, 2)
    growth = torch.empty(steps, members, batch, k, dtype=h.dtype, device=h.device)
    slope_sq = torch.zeros_like(h)
    # Row t·(k+1) of each trajectory is its state, the k rows after it its tangent vectors:
    # all meet the same W, so one bmm per step moves them all.
    hq = torch.cat([h[:, :, None, :], q], dim=2).reshape(members, batch * (k + 1), n)
    for t in range(total):
        hq = torch.bmm(hq, w_t).view(members, batch, k + 1, n)
        h = hq[:, :, 0].add_(drive[t]).tanh_()
        slope = 1 - h * h
        tangent = hq[:, :, 1:].mul_(slope[:, :, None, :])
        q, r = torch.linalg.qr(tangent.transpose(-1, -2))
        if t >= transient:
            growth[t - transient] = torch.diagonal(r, dim1=-2, dim2=-1).abs()
            slope_sq.addcmul_(slope, slope)
        hq = torch.cat([h[:, :, None, :], q.transpose(-1, -2)], dim=2).reshape(members, batch * (k + 1), n)
    exponents = (growth.log().sum(0).mean(1) / steps).tolist()  # (E, k)
    norm_sq = w_hh.pow(2).sum(-1)[:, None, :]
    log_sens = (0.5 * torch.log((slope_sq * norm_sq).mean((1, 2)) / steps)).tolist()
    return [SpectrumMeasurement(e, s, h[i]) for i, (e, s) in enumerate(zip(exponents, log_sens))]


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
