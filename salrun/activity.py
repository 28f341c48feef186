"""What each neuron layer saw during the last forward pass.

SAL and the sensitivity metrics need, per layer, its input x, its output o
and its weights. A model either reports them itself (`layer_activity`, as
the RNN does, with its time steps stacked) or a `HookProbe` collects them
from a plain Linear → Tanh stack, so a user's own model works unchanged.
Nothing is copied: the tensors are those the forward pass made anyway.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn


@dataclass
class LayerActivity:
    """One layer of neurons: o = f(Σ_k W_k x_k + θ), batch (and time) stacked."""

    weights: list[torch.Tensor]
    inputs: list[torch.Tensor]
    output: torch.Tensor
    bias: torch.Tensor | None
    activation: str = "tanh"
    masks: list[torch.Tensor | None] = field(default_factory=list)  # fixed zeros of sparse W_k
    name: str = ""


class Probe(Protocol):
    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]: ...

    def clear(self) -> None: ...


class HookProbe:
    """Forward hooks on each Linear; a Linear followed by a Tanh is a tanh layer.

    Calls are recorded only in training mode and accumulate until `clear`,
    so a Linear applied at every time step of a user's RNN loop yields one
    layer with its steps stacked. The last Linear not followed by a Tanh is
    the output layer (linear activation).
    """

    def __init__(self, model: nn.Module):
        modules = [m for m in model.modules() if not list(m.children())]
        self._pairs: list[tuple[nn.Linear, bool]] = []
        self._x: dict[int, list[torch.Tensor]] = {}
        self._o: dict[int, list[torch.Tensor]] = {}
        self._handles = []
        for i, module in enumerate(modules):
            if not isinstance(module, nn.Linear):
                continue
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            is_tanh = isinstance(nxt, nn.Tanh)
            k = len(self._pairs)
            self._pairs.append((module, is_tanh))
            self._x[k], self._o[k] = [], []
            self._handles.append(module.register_forward_hook(self._record_input(k, module, record_output=not is_tanh)))
            if is_tanh:
                self._handles.append(nxt.register_forward_hook(self._record_output(k, nxt)))
        if not any(is_tanh for _, is_tanh in self._pairs):
            raise ValueError("the model has no Linear followed by Tanh: SAL has no neurons to adapt")

    def _record_input(self, k: int, module: nn.Module, record_output: bool):
        def hook(_module, args, out):
            if module.training:
                self._x[k].append(args[0].detach().reshape(-1, args[0].shape[-1]))
                if record_output:
                    self._o[k].append(out.detach().reshape(-1, out.shape[-1]))
        return hook

    def _record_output(self, k: int, module: nn.Module):
        def hook(_module, _args, out):
            if module.training:
                self._o[k].append(out.detach().reshape(-1, out.shape[-1]))
        return hook

    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        found = []
        last_linear = max((k for k, (_, t) in enumerate(self._pairs) if not t), default=None)
        for k, (linear, is_tanh) in enumerate(self._pairs):
            if not self._x[k] or not (is_tanh or (include_output and k == last_linear)):
                continue
            cat = (lambda xs: xs[0] if len(xs) == 1 else torch.cat(xs))
            found.append(LayerActivity(
                weights=[linear.weight], inputs=[cat(self._x[k])], output=cat(self._o[k]),
                bias=linear.bias, activation="tanh" if is_tanh else "linear", masks=[None], name=f"layer{k}",
            ))
        return found

    def clear(self) -> None:
        for k in self._x:
            self._x[k].clear()
            self._o[k].clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class ModelProbe:
    """For models that report their own activity (`layer_activity`)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        return self.model.layer_activity(include_output=include_output, rnn_inputs=rnn_inputs)

    def clear(self) -> None:
        self.model.clear_activity()


def probe_for(model: nn.Module) -> Probe:
    return ModelProbe(model) if hasattr(model, "layer_activity") else HookProbe(model)
