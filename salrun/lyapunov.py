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

`on_attractor` is what the chaos study reports: the estimate from fresh
random states, in float64, after a transient, so that it describes the
attractor the network has now, never a state left over from earlier weights
(a contracting net's state underflows to exactly 0 in float32 and stays there
after 0 has turned unstable).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from salrun.neurons import log_sensitivity

DEAD_RMS = 1e-6  # a state this small has collapsed onto the fixed point h = 0 (tanh'(0) = 1 exactly)


@dataclass
class ChaosMeasurement:
    mle: float                  # mean over trajectories
    log_sensitivity: float      # ln RMS recurrent sensitivity over the same steps and trajectories
    state: torch.Tensor         # the final states, to continue from
    mle_std: float = 0.0        # spread of the per-trajectory MLE (std over trajectories)


@dataclass
class SpectrumMeasurement:
    exponents: list[float]      # λ_1 ≥ … ≥ λ_k, mean over trajectories (λ_1 is the MLE)
    log_sensitivity: float      # as in ChaosMeasurement
    state: torch.Tensor         # the final states, to continue from
    mle_std: float = 0.0        # as in ChaosMeasurement, for λ_1

    @property
    def mle(self) -> float:
        return self.exponents[0]


def _drive(w_ih: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor | None, steps: int,
                    batch: int) -> torch.Tensor:
    """W_ih x_t + θ for every step, member and trajectory: (steps, E, batch, hidden)."""
    if inputs is None or inputs.shape[-1] == 0:
        return bias[None, :, None, :].expand(steps, bias.shape[0], batch, -1)
    return torch.einsum("temk,enk->temn", inputs, w_ih) + bias[None, :, None, :]


def _log_sensitivity(slope_sq_sum: torch.Tensor, w_hh: torch.Tensor, steps: int) -> list[float]:
    """Per member, ln RMS of s = f'(U)·‖w_j‖ over the steps, trajectories and neurons whose
    Σ_t f'² is `slope_sq_sum` (E, batch, n)."""
    s_sq = slope_sq_sum / steps * w_hh.pow(2).sum(-1)[:, None, :]  # per trajectory and neuron: mean_t s²
    return [float(log_sensitivity(member.sqrt())) for member in s_sq]


def _mean_std(per_trajectory: torch.Tensor) -> tuple[list, list[float]]:
    """Per member: the mean over the trajectories (dim 1) of per-trajectory exponents (E, batch, k),
    and the std over the trajectories of the first (the MLE)."""
    first = per_trajectory[:, :, 0]
    std = first.std(1) if first.shape[1] > 1 else torch.zeros_like(first[:, 0])
    return per_trajectory.mean(1).tolist(), std.tolist()


@torch.no_grad()
def max_lyapunov(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                 inputs: torch.Tensor | None, transient: int, steps: int,
                 generator: torch.Generator | None = None, v: torch.Tensor | None = None) -> ChaosMeasurement:
    """MLE and log-sensitivity along the trajectory from states h (batch, hidden).

    `inputs` is (transient + steps, batch, inputs) or None for an autonomous net.
    The log-sensitivity uses the recurrent weights: the gain from h_{t-1} to h_t
    that the MLE measures. `v` is the initial perturbation (random if None).
    """
    members = max_lyapunov_ensemble(w_hh[None], w_ih[None], bias[None], h[None],
                                    None if inputs is None else inputs[:, None], transient, steps, generator,
                                    None if v is None else v[None])
    return members[0]


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
    drive = _drive(w_ih, bias, inputs, total, batch)
    if v is None:
        v = torch.randn(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    v = v / v.norm(dim=-1, keepdim=True)
    w_t = w_hh.transpose(1, 2)
    # Per step only what the tangent dynamics need; logs and sums once at the end.
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
    mle, std = _mean_std(growth.log().sum(0) / steps)
    return [ChaosMeasurement(m[0], s, h[e], d)
            for e, (m, s, d) in enumerate(zip(mle, _log_sensitivity(slope_sq, w_hh, steps), std))]


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
    drive = _drive(w_ih, bias, inputs, total, batch)
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
    exponents, std = _mean_std(growth.log().sum(0) / steps)  # (E, k) and (E,)
    return [SpectrumMeasurement(e, s, h[i], d)
            for i, (e, s, d) in enumerate(zip(exponents, _log_sensitivity(slope_sq, w_hh, steps), std))]


@torch.no_grad()
def mle_two_trajectory(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, h: torch.Tensor,
                       inputs: torch.Tensor | None, transient: int, steps: int, epsilon: float = 1e-7,
                       generator: torch.Generator | None = None) -> float:
    """Finite-difference MLE: a twin trajectory kept at distance ε, renormalised each step."""
    total = transient + steps
    drive = _drive(w_ih[None], bias[None], None if inputs is None else inputs[:, None], total,
                            h.shape[0])[:, 0]
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


def random_states(trajectories: int, hidden: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh initial states, uniform in ±1: (trajectories, hidden), float32 on the CPU."""
    return torch.rand(trajectories, hidden, generator=generator) * 2 - 1


def state_rms(states: torch.Tensor) -> torch.Tensor:
    """RMS of each trajectory's states (..., batch, hidden) over time and neurons: (batch,).
    Below DEAD_RMS the trajectory has collapsed onto h = 0."""
    return states.pow(2).mean(-1).reshape(-1, states.shape[-2]).mean(0).sqrt()


@torch.no_grad()
def on_attractor(w_hh: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, trajectories: int, transient: int,
                 steps: int, k: int = 1, generator: torch.Generator | None = None
                 ) -> ChaosMeasurement | SpectrumMeasurement:
    """The MLE (k = 1) or the top-k spectrum of the net as it is now, on its attractor.

    `trajectories` fresh states uniform in ±1 (and fresh N(0, 1) input if W_ih has
    columns) run `transient` steps before `steps` are averaged, in float64: no state
    from an earlier measurement or from the adapting trajectories is reused, so a
    fixed point that has turned unstable cannot hold them, and a contracting net's
    state reaches its fixed point without underflowing to exactly 0 first.
    Random numbers come from `generator` on the CPU, whatever the device."""
    device, f64 = w_hh.device, torch.float64
    w_hh, w_ih, bias = (t.detach().to(f64) for t in (w_hh, w_ih, bias))
    n, input_size = w_ih.shape

    def draw(*shape):
        return torch.randn(*shape, generator=generator, dtype=f64).to(device)

    h = random_states(trajectories, n, generator).to(device, f64)
    inputs = draw(transient + steps, trajectories, input_size) if input_size else None
    if k == 1:
        return max_lyapunov(w_hh, w_ih, bias, h, inputs, transient, steps, v=draw(trajectories, n))
    return lyapunov_spectrum(w_hh, w_ih, bias, h, inputs, transient, steps, k, basis=draw(trajectories, k, n))
