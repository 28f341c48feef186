"""Initialisations that researchers use instead of SAL's small random weights (docs/SCIENCE.md §4).

They are registered (salrun/settings.py) as the `init` config group (`method=sal
init=orthogonal`), and the methods of the same name (`method=orthogonal`, an
init and nothing else) call the same functions. Each rewrites, in place, the weights
that carry the signal through depth or time: every hidden layer of the MLP
(the first included), the recurrent matrix and bias of the RNN. The readout
and the RNN's input weights keep the model's own init.

- orthogonal (Saxe et al. 2014): W = gain·Q with Q orthogonal (semi-orthogonal
  for a non-square layer), so every singular value is `gain`.
- critical (Schoenholz et al. 2017): W ~ N(0, σ_w²/n_in), θ ~ N(0, σ_b²), with σ_w
  on the mean-field χ₁ = 1 line for tanh (`salrun.meanfield`).
- lsuv (Mishkin & Matas 2016): orthonormal weights, then layer by layer,
  W ← W/√Var(W h + θ) on a data batch until the variance is within 1 ± tol.

Random draws use torch's global RNG (seeded by the job), so the job's data
stream is the same whichever init runs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from salrun.meanfield import critical_sigma_w
from salrun.models import ElmanRNN, MLP
from salrun.settings import CriticalSettings, LSUVSettings, OrthogonalSettings

Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # rows → (inputs, targets) of the task


def _signal_weights(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(weight, bias, fan_in) of every matrix an init rewrites."""
    if isinstance(model, ElmanRNN):
        return [(model.weight_hh, model.bias, model.settings.hidden * model.settings.density)]
    if isinstance(model, MLP):
        return [(m.weight, m.bias, m.weight.shape[1]) for m in model.hidden_linears()]
    raise TypeError(f"no initialisation knows the model {type(model).__name__}")


def _masked(model: nn.Module) -> None:
    if isinstance(model, ElmanRNN):
        model.apply_mask_()


def random_(model: nn.Module, settings=None, sample: Sampler | None = None) -> None:
    """The model's own small random weights (model.init): nothing to change."""


@torch.no_grad()
def orthogonal_(model: nn.Module, settings: OrthogonalSettings, sample: Sampler | None = None) -> None:
    for weight, _, _ in _signal_weights(model):
        nn.init.orthogonal_(weight, gain=settings.gain)
    _masked(model)  # a sparse RNN keeps its mask: its W_hh is then only near-orthogonal


@torch.no_grad()
def critical_(model: nn.Module, settings: CriticalSettings, sample: Sampler | None = None) -> None:
    sigma_w = critical_sigma_w(settings.sigma_b)
    for weight, bias, fan_in in _signal_weights(model):
        weight.normal_(0.0, sigma_w / max(fan_in, 1.0) ** 0.5)
        if settings.sigma_b > 0:
            bias.normal_(0.0, settings.sigma_b)
        else:
            bias.zero_()
    _masked(model)


@torch.no_grad()
def lsuv_(model: nn.Module, settings: LSUVSettings, sample: Sampler | None = None) -> list[float]:
    """Returns the output variance of each hidden layer after rescaling."""
    if sample is None:
        raise ValueError("lsuv needs a data sampler")
    if not isinstance(model, MLP):
        raise TypeError("LSUV is feed-forward only: it needs an MLP")
    orthogonal_(model, OrthogonalSettings(gain=1.0))
    h = sample(settings.samples)[0].to(next(model.parameters()).device)
    variances = []
    for layer in model.hidden_linears():  # views of the stacked weights: rescaling one rescales the model's
        # Earlier layers are final, so only this layer is recomputed while it is rescaled.
        for _ in range(settings.max_iter):
            variance = float(layer(h).var())
            if abs(variance - 1.0) < settings.tol or variance < 1e-12:
                break
            layer.weight.div_(variance ** 0.5)
        variances.append(float(layer(h).var()))
        h = torch.tanh(layer(h))
    return variances
