"""Methods: what acts on the network besides plain back-propagation.

A method may act at initialisation (`on_init`), after each optimizer step
(`after_step`) or inside the loss (`loss_term`). `none` does nothing, `sal`
runs SAL during the whole training, `spectral` scales the weights once
before learning.
"""
from __future__ import annotations

import torch
from torch import nn

from salrun.activity import Probe
from salrun.models import ElmanRNN, MLP
from salrun.sal import SAL
from salrun.settings import SALSettings, SpectralSettings


class Method:
    def __init__(self, settings):
        self.settings = settings

    def on_init(self, model: nn.Module, probe: Probe) -> None:
        """Called once, after the model is built and before the first step."""

    def after_step(self) -> None:
        """Called after every optimizer step."""

    def loss_term(self, model: nn.Module) -> torch.Tensor | None:
        """Added to the task loss before back-propagation."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NoMethod(Method):
    pass


class SALMethod(Method):
    settings: SALSettings

    def on_init(self, model, probe):
        self.sal = SAL(model, self.settings, probe=probe)

    def after_step(self):
        self.sal.step()

    def state_dict(self):
        return self.sal.state_dict()

    def load_state_dict(self, state):
        self.sal.load_state_dict(state)


def rms_gain(weight: torch.Tensor) -> torch.Tensor:
    """‖W‖_F/√n_in: the root of E‖Wδ‖²/‖δ‖² for a random δ.

    The feed-forward stand-in for a spectral radius: for a large square
    random matrix it equals the spectral radius, and it is the RMS
    sensitivity of the layer at U = 0.
    """
    return weight.norm() / weight.shape[1] ** 0.5


def spectral_radius(weight: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvals(weight.double()).abs().max().to(weight.dtype)


class SpectralMethod(Method):
    """Scale before learning: the recurrent matrix to spectral radius ρ,
    each hidden feed-forward matrix to an RMS gain (see `rms_gain`) of ρ."""

    settings: SpectralSettings

    @torch.no_grad()
    def on_init(self, model, probe):
        rho = self.settings.rho
        if isinstance(model, ElmanRNN):
            model.weight_hh.mul_(rho / spectral_radius(model.recurrent_weight()))
        elif isinstance(model, MLP):
            for linear in model.hidden_linears():
                linear.weight.mul_(rho / rms_gain(linear.weight))
        else:
            raise TypeError(f"spectral scaling does not know the model {type(model).__name__}")


METHODS: dict[str, type[Method]] = {
    "none": NoMethod,
    "sal": SALMethod,
    "spectral": SpectralMethod,
}
def make_method(name: str, settings) -> Method:
    return METHODS[name](settings)
