"""Gradient flossing (R. Engelken, NeurIPS 2023, arXiv:2312.17306).

The top-k Lyapunov exponents of an RNN along its trajectories are estimated by
QR (Benettin): an orthonormal frame Q (n × k) is carried by the one-step
Jacobian J_t = diag(1 - h_t²)·W_hh and re-orthonormalised each step,
Q_t R_t = J_t Q_{t-1}, and λ_i = mean_t ln|R_t,ii|. The flossing loss Σ_i λ_i²
is differentiated through the QR and the trajectory, so Adam steps on it drive
the exponents toward 0 (neither vanishing nor exploding gradients).

Cost per time step: one n×n by n×k product and a QR of n×k per trajectory,
O(n²k + nk²), on top of the forward pass, and a backward pass through all of it.
"""
from __future__ import annotations

import torch

from salrun.models import ElmanRNN


def lyapunov_exponents(model: ElmanRNN, x: torch.Tensor, k: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """λ_1 … λ_k per trajectory, (batch, k), differentiable w.r.t. the weights.

    x is (time, batch, inputs); the net starts from h = 0 as in training. Natural
    log per step, averaged over every step of x."""
    w = model.recurrent_weight()
    drive = torch.nn.functional.linear(x, model.weight_ih, model.bias)
    steps, batch, n = x.shape[0], x.shape[1], w.shape[0]
    start = torch.randn(batch, n, k, generator=generator).to(device=x.device, dtype=w.dtype)
    q = torch.linalg.qr(start)[0]
    h = x.new_zeros(batch, n, dtype=w.dtype)
    log_growth = x.new_zeros(batch, k, dtype=w.dtype)
    for drive_t in drive.unbind(0):  # not drive[t]: see ElmanRNN.run
        h = torch.tanh(torch.addmm(drive_t, h, w.T))
        q, r = torch.linalg.qr((1 - h * h).unsqueeze(-1) * torch.matmul(w, q))
        log_growth = log_growth + torch.diagonal(r, dim1=-2, dim2=-1).abs().clamp_min(1e-30).log()
    return log_growth / steps


def flossing_loss(exponents: torch.Tensor) -> torch.Tensor:
    """Σ_i λ_i², averaged over trajectories."""
    return exponents.pow(2).sum(-1).mean()
