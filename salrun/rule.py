"""The SAL rule's per-neuron decisions, in one place: the moving average s̄_j, the gate g_j,
the rate η·g_j and the radial coefficient of the objective.

    s̄_j ← β·s̄_j + (1-β)·m_j          (m_j the batch mean of s_j; geometric: in ln s)
    g_j  = GATES[gate](s̄_j, target)   (one-sided, two-sided, proportional, dead band)
    Δw_j = η·g_j·(w_j/‖w_j‖² + (f''/f')(U_j)·x),   Δθ_j = η·g_j·(f''/f')(U_j)

sal.py (one layer, or a group of equal layers with a layer dimension) and ensemble.py (members
stacked, with a member dimension) both call `Rule`; only how the data term oᵀx is summed
differs between them. A setting is a number, or a tensor of one value per member that
broadcasts over the leading dimension. Adding a gate is a line in `GATES` and its name in
`SALSettings.gate`: every path, the batched one included, then runs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch

Value = Union[float, torch.Tensor]


def _one_sided(average: torch.Tensor, target: Value, band: Value) -> torch.Tensor:
    return (average < target).to(average.dtype)


def _two_sided(average: torch.Tensor, target: Value, band: Value) -> torch.Tensor:
    return 2 * (average < target).to(average.dtype) - 1


def _proportional(average: torch.Tensor, target: Value, band: Value) -> torch.Tensor:
    """Full rate far from target, proportional to ln(target/s̄) within `band` (ours, docs/DEPTH.md)."""
    return (torch.log(target / average) / band).clamp(-1, 1)


def _dead_band(average: torch.Tensor, target: Value, band: Value) -> torch.Tensor:
    """Two-sided outside |ln(target/s̄)| > band, at rest inside it (ours): a neuron held at the
    edge stops stepping back and forth across its target."""
    error = torch.log(target / average)
    return torch.sign(error) * (error.abs() > band).to(average.dtype)


GATES: dict[str, Callable[[torch.Tensor, Value, Value], torch.Tensor]] = {
    "one_sided": _one_sided, "two_sided": _two_sided, "proportional": _proportional,
    "dead_band": _dead_band}


def _along(value: Value, like: torch.Tensor) -> Value:
    """A per-member value (S,) shaped to broadcast over a member-first tensor (S, …); a number as it is."""
    return value.reshape(-1, *[1] * (like.dim() - 1)) if isinstance(value, torch.Tensor) else value


@dataclass
class Rule:
    """SAL's settings as the rule reads them: numbers (one run) or (S,) tensors (members)."""

    lr: Value
    target: Value
    beta: Value
    band: Value
    gate: str | Sequence[str]          # one gate, or one per member
    average: str = "arithmetic"        # arithmetic, or geometric (s̄ blends ln s)
    objective: str = "log"             # the gradient of ln s, or of s (the radial term scales by s̄'s batch mean)
    _masks: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, settings, scale: float = 1.0) -> "Rule":
        """The rule of one run's SALSettings, its rate times `scale` (a sal_schedule's factor)."""
        return cls(settings.lr * scale, settings.target, settings.beta, settings.band, settings.gate, settings.average,
                   settings.objective)

    @classmethod
    def members(cls, settings: Sequence, like: torch.Tensor) -> "Rule":
        """The rule of S members (their SALSettings, None for a member without SAL: rate 0), as
        tensors on `like`'s device and dtype. The members share the average and the objective."""
        def values(name, default):
            return torch.tensor([getattr(s, name) if s is not None else default for s in settings],
                                dtype=like.dtype, device=like.device)

        shared = {(s.average, s.objective) for s in settings if s is not None} or {("arithmetic", "log")}
        if len(shared) > 1:
            raise ValueError("members of one batched SAL share its average and objective")
        average, objective = shared.pop()
        return cls(values("lr", 0.0), values("target", 1.0), values("beta", 0.0), values("band", 1.0),
                   tuple(s.gate if s is not None else "one_sided" for s in settings), average, objective)

    def blend_(self, average: torch.Tensor, batch_mean: torch.Tensor) -> None:
        """s̄ ← β·s̄ + (1-β)·m in place; the geometric average blends ln s̄ instead."""
        beta = _along(self.beta, average)
        if self.average == "geometric":
            average.log_().mul_(beta).add_((1 - beta) * batch_mean.log()).exp_()
        elif isinstance(beta, torch.Tensor):
            average.mul_(beta).add_((1 - beta) * batch_mean)
        else:
            average.mul_(beta).add_(batch_mean, alpha=1 - beta)

    def rate(self, average: torch.Tensor, target: Value | None = None) -> torch.Tensor:
        """η·g_j for every neuron of `average` (a layer's, a group's (L, …) or members' (S, …));
        `target` overrides the settings' (layer_target's per-layer targets)."""
        target = _along(self.target, average) if target is None else target
        band = _along(self.band, average)
        if isinstance(self.gate, str):
            g = GATES[self.gate](average, target, band)
        else:
            g = torch.zeros_like(average)
            for name, mask in self._member_masks(average.device).items():
                g = torch.where(_along(mask, average), GATES[name](average, target, band), g)
        return _along(self.lr, average) * g

    def radial(self, rate: torch.Tensor, norm_sq: torch.Tensor, mean_s: torch.Tensor) -> torch.Tensor:
        """The radial term's per-neuron coefficient: w_j ← (1 + radial_j)·w_j. For the objective
        s (not ln s) the gradient is s times ln s's: its radial part scales by the batch mean of s."""
        radial = rate / norm_sq.clamp_min(1e-30)
        return radial * mean_s if self.objective == "linear" else radial

    def freeze(self, member: int) -> None:
        """A frozen member's rate is 0: its weights stay where they are."""
        self.lr[member] = 0

    def _member_masks(self, device: torch.device) -> dict[str, torch.Tensor]:
        if not self._masks:
            for name in dict.fromkeys(self.gate):
                self._masks[name] = torch.tensor([g == name for g in self.gate], device=device)
        return self._masks
