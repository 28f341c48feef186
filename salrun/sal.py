"""Sensitivity Adjustment Learning: the local per-neuron rule of SCIENCE.md §2.

Each neuron keeps a moving average s̄_j of its sensitivity (keep-rate β,
batch mean per update). While s̄_j < target it climbs the gradient of
ln s_j with its own input held fixed; nothing is back-propagated:

    Δw_j = η·g_j·(w_j/‖w_j‖² + (f''/f')(U_j)·x),   Δθ_j = η·g_j·(f''/f')(U_j)

with g_j = 1 below target and 0 (one-sided gate) or -1 (two-sided) above.
For tanh, f''/f' = -2·o_j. Use it after each optimizer step:

    sal = SAL(model)           # any Linear → Tanh model, or a salrun model
    loss.backward(); optimizer.step(); sal.step()
"""
from __future__ import annotations

import torch
from torch import nn

from salrun.activity import LayerActivity, Probe, probe_for
from salrun.sensitivity import log_sensitivity_gradient, sensitivity
from salrun.settings import SALSettings


class SAL:
    def __init__(self, model: nn.Module, settings: SALSettings | None = None, probe: Probe | None = None,
                 **overrides):
        if settings is None:
            settings = SALSettings(**overrides)
        elif overrides:
            raise TypeError("give either settings or keyword overrides, not both")
        self.settings = settings
        self.probe = probe if probe is not None else probe_for(model)
        self.averages: list[torch.Tensor] = []  # s̄_j per layer, created on the first step

    def layers(self) -> list[LayerActivity]:
        return self.probe.layers(self.settings.include_output, self.settings.rnn_inputs)

    @torch.no_grad()
    def step(self) -> None:
        """Update every layer from the activity of the forward passes since the last step."""
        cfg = self.settings
        for i, layer in enumerate(self.layers()):
            s = sensitivity(layer.output, layer.weights, layer.activation)
            batch_mean = s.mean(0)
            if i == len(self.averages):
                self.averages.append(batch_mean.clone())
            else:
                self.averages[i].mul_(cfg.beta).add_(batch_mean, alpha=1 - cfg.beta)
            gate = (self.averages[i] < cfg.target).to(s.dtype)
            if cfg.gate == "two_sided":
                gate = 2 * gate - 1
            grads, bias_grad = log_sensitivity_gradient(
                layer.weights, layer.inputs, layer.output, layer.activation,
                sample_weight=s if cfg.objective == "linear" else None,
            )
            step = cfg.lr * gate
            for w, grad, mask in zip(layer.weights, grads, layer.masks or [None] * len(grads)):
                update = step[:, None] * grad
                w.add_(update if mask is None else update * mask)
            if layer.bias is not None:
                layer.bias.add_(step * bias_grad)
        self.probe.clear()

    def state_dict(self) -> dict:
        return {"averages": [a.clone() for a in self.averages]}

    def load_state_dict(self, state: dict) -> None:
        self.averages = [a.clone() for a in state["averages"]]
