"""Methods: what acts on the network besides plain back-propagation.

A method may act at initialisation (`on_init`), after each optimizer step
(`after_step`) or inside the loss (`loss_term`). `none` does nothing, `sal`
runs SAL during the whole training, `spectral` scales the weights once
before learning, `orthogonal`, `critical` and `lsuv` are initialisations only
(the code of `salrun.inits`, which the `init` group also uses), `flossing`
drives the top-k Lyapunov exponents toward 0 before and/or in bursts during
training.
"""
from __future__ import annotations

import torch
from torch import nn

from salrun.activity import Probe
from salrun.flossing import flossing_loss, lyapunov_exponents
from salrun.models import ElmanRNN, MLP
from salrun.sal import SAL
from salrun.settings import FlossingSettings, SALSettings, SpectralSettings, entry


class TaskSampler:
    """Batches of the task's training data for a method (LSUV, flossing), from a generator
    of their own, so that the training batches are the same whichever method runs."""

    def __init__(self, task, seed: int, device: torch.device | str = "cpu"):
        self.task, self.device = task, device
        self.generator = torch.Generator().manual_seed(seed + 7_919)  # any fixed offset from the job's seed

    def __call__(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.task.train_batch(rows, self.generator)
        return x.to(self.device), y.to(self.device)


class Method:
    """A method that does nothing (`none`); the others override what they need. A new method is
    a subclass and its settings dataclass, registered in salrun/settings.py (`registered`)."""

    reads_activity = False  # True: the next after_step reads the probe's record of the training forwards before it

    def __init__(self, settings):
        self.settings = settings

    def on_init(self, model: nn.Module, probe: Probe, sample: TaskSampler | None = None) -> None:
        """Called once, after the model is built and before the first step; `sample`
        gives task data to the methods that need it."""

    def after_step(self) -> None:
        """Called after every optimizer step."""

    def loss_term(self, model: nn.Module) -> torch.Tensor | None:
        """Added to the task loss before back-propagation."""
        return None

    def scale_rate(self, factor: float) -> None:
        """This step's factor of the method's own rate (a sal_schedule); a method without one ignores it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SALMethod(Method):
    settings: SALSettings

    @property
    def reads_activity(self) -> bool:  # with method.update_every = m, one step in m
        return self.sal.reads_next

    def on_init(self, model, probe, sample=None):
        self.sal = SAL(model, self.settings, probe=probe)

    def after_step(self):
        self.sal.step()

    def scale_rate(self, factor):
        self.sal.rate_scale = factor

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
    def on_init(self, model, probe, sample=None):
        rho = self.settings.rho
        if isinstance(model, ElmanRNN):
            model.weight_hh.mul_(rho / spectral_radius(model.recurrent_weight()))
        elif isinstance(model, MLP):
            for linear in model.hidden_linears():
                linear.weight.mul_(rho / rms_gain(linear.weight))
        else:
            raise TypeError(f"spectral scaling does not know the model {type(model).__name__}")


class InitMethod(Method):
    """An initialisation and nothing else: the init of the same name, as `init=<name>` runs it."""

    init_name = ""

    def on_init(self, model, probe, sample=None):
        entry("init", self.init_name).load()(model, self.settings, sample)


class OrthogonalMethod(InitMethod):
    init_name = "orthogonal"


class CriticalMethod(InitMethod):
    init_name = "critical"


class LSUVMethod(InitMethod):
    init_name = "lsuv"


class FlossingMethod(Method):
    """Gradient flossing (Engelken 2023): Adam steps on Σ_{i≤k} λ_i² (`salrun.flossing`),
    on task sequences, `pre_steps` of them before training (mode before or both) and
    `burst` of them after every `every` training steps (mode during or both)."""

    settings: FlossingSettings

    def on_init(self, model, probe, sample=None):
        if not isinstance(model, ElmanRNN):
            raise TypeError("gradient flossing applies to RNNs")
        if sample is None:
            raise ValueError("gradient flossing needs task sequences")
        self.model, self.sample, self.steps = model, sample, 0
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.settings.floss_lr)
        self.exponents: torch.Tensor | None = None  # λ of the last flossing step, (trajectories, k)
        if self.settings.mode in ("before", "both"):
            self.floss(self.settings.pre_steps)

    def floss(self, steps: int) -> None:
        for _ in range(steps):
            x, _ = self.sample(self.settings.trajectories)
            exponents = lyapunov_exponents(self.model, x, self.settings.k)
            self.optimizer.zero_grad(set_to_none=True)
            flossing_loss(exponents).backward()
            self.optimizer.step()
            self.model.apply_mask_()
            self.exponents = exponents.detach()
        self.optimizer.zero_grad(set_to_none=True)

    def after_step(self):
        self.steps += 1
        if self.settings.mode in ("during", "both") and self.steps % self.settings.every == 0:
            self.floss(self.settings.burst)

    def state_dict(self):
        return {"steps": self.steps, "optimizer": self.optimizer.state_dict(),
                "data": self.sample.generator.get_state()}

    def load_state_dict(self, state):
        self.steps = state["steps"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.sample.generator.set_state(state["data"])
