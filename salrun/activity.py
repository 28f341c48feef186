"""What each neuron layer saw during the last forward pass.

SAL and the sensitivity metrics need, per layer, its input x, its output o
and its weights. A model either reports them itself (`layer_activity`, as
the RNN does, with its time steps stacked) or a `HookProbe` collects them
from a plain Linear → Tanh stack, so a user's own model works unchanged.
Nothing is copied: the tensors are those the forward pass made anyway.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

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

    def chunks(self, rows: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """(inputs, output) in row blocks; the data is already in one block here."""
        yield self.inputs, self.output


class SequenceActivity(LayerActivity):
    """A recurrent layer whose steps are kept as the forward pass made them.

    `states` is [h_{-1}, h_0, …, h_{T-1}] (each (batch, hidden)) and `drive_inputs`
    the external inputs (T, batch, inputs), or None when only the recurrent
    weights count. `inputs` and `output` stack the steps on demand (a copy, for
    metrics); SAL reads `chunks`, which never holds more than `rows` stacked rows,
    so it keeps no second copy of the per-step activations.
    """

    def __init__(self, weights, states: list[torch.Tensor], drive_inputs: torch.Tensor | None, bias,
                 activation: str = "tanh", masks=None, name: str = ""):
        self.weights, self.bias, self.activation, self.name = weights, bias, activation, name
        self.masks = masks if masks is not None else [None] * len(weights)
        self.states, self.drive_inputs = states, drive_inputs

    def _block(self, start: int, stop: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        hidden = self.states[0].shape[-1]
        window = self.states[start:stop + 1]
        both = window[0] if len(window) == 1 else torch.stack(window)  # steps start-1 … stop-1
        previous, output = both[:-1].reshape(-1, hidden), both[1:].reshape(-1, hidden)
        if self.drive_inputs is None:
            return [previous], output
        return [self.drive_inputs[start:stop].flatten(0, 1), previous], output

    @property
    def inputs(self) -> list[torch.Tensor]:  # type: ignore[override]
        return self._block(0, len(self.states) - 1)[0]

    @property
    def output(self) -> torch.Tensor:  # type: ignore[override]
        return self._block(0, len(self.states) - 1)[1]

    def chunks(self, rows: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        steps = len(self.states) - 1
        per = steps if rows <= 0 else max(1, rows // max(self.states[0].shape[0], 1))
        for start in range(0, steps, per):
            yield self._block(start, min(start + per, steps))


class Probe(Protocol):
    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]: ...

    def clear(self) -> None: ...


_LAYER_NAMES = [f"layer{k}" for k in range(1024)]


class HookProbe:
    """Forward hooks on each Linear; a Linear followed by a Tanh is a tanh layer.

    Calls are recorded only in training mode and accumulate until `clear`,
    so a Linear applied at every time step of a user's RNN loop yields one
    layer with its steps stacked. The last Linear not followed by a Tanh is
    the output layer (linear activation). In an nn.Sequential whose Tanh
    feeds the next Linear directly, that Linear's input is the Tanh's output:
    it is not recorded twice, and the Linear needs no hook of its own (one
    hook per layer instead of two: hooks are most of the cost of a thin layer).
    """

    def __init__(self, model: nn.Module):
        modules = [m for m in model.modules() if not list(m.children())]
        feeders = _sequential_feeders(model)
        self._pairs: list[tuple[nn.Linear, bool]] = []
        self._x: dict[int, list[torch.Tensor]] = {}
        self._o: dict[int, list[torch.Tensor]] = {}
        self._handles = []
        tanh_layer: dict[int, int] = {}  # id(Tanh) -> the layer whose output it is
        for i, module in enumerate(modules):
            if not isinstance(module, nn.Linear):
                continue
            nxt = modules[i + 1] if i + 1 < len(modules) else None
            is_tanh = isinstance(nxt, nn.Tanh)
            k = len(self._pairs)
            self._pairs.append((module, is_tanh))
            self._o[k] = []
            source = tanh_layer.get(id(feeders.get(id(module))))
            self._x[k] = self._o[source] if source is not None else []
            if source is None or not is_tanh:
                self._handles.append(module.register_forward_hook(
                    self._record_input(k, module, record_input=source is None, record_output=not is_tanh)))
            if is_tanh:
                tanh_layer[id(nxt)] = k
                self._handles.append(nxt.register_forward_hook(self._record_output(k, nxt)))
        if not any(is_tanh for _, is_tanh in self._pairs):
            raise ValueError("the model has no Linear followed by Tanh: SAL has no neurons to adapt")

    def _record_input(self, k: int, module: nn.Module, record_input: bool, record_output: bool):
        def hook(_module, args, out):
            if module.training:
                if record_input:
                    x = args[0].detach()
                    self._x[k].append(x if x.dim() == 2 else x.reshape(-1, x.shape[-1]))
                if record_output:
                    self._o[k].append(out.detach().reshape(-1, out.shape[-1]))
        return hook

    def _record_output(self, k: int, module: nn.Module):
        def hook(_module, _args, out):
            if module.training:
                o = out.detach()
                self._o[k].append(o if o.dim() == 2 else o.reshape(-1, o.shape[-1]))
        return hook

    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        found = []
        last_linear = max((k for k, (_, t) in enumerate(self._pairs) if not t), default=None)
        xs_of, os_of = self._x, self._o
        for k, (linear, is_tanh) in enumerate(self._pairs):
            xs, os_ = xs_of[k], os_of[k]
            if not xs or not (is_tanh or (include_output and k == last_linear)):
                continue
            params = linear._parameters  # not linear.weight: nn.Module.__getattr__ is slow, and this runs per layer
            found.append(LayerActivity(
                [params["weight"]], [xs[0] if len(xs) == 1 else torch.cat(xs)],
                os_[0] if len(os_) == 1 else torch.cat(os_), params["bias"],
                "tanh" if is_tanh else "linear", [None], _LAYER_NAMES[k] if k < len(_LAYER_NAMES) else f"layer{k}",
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


def _sequential_feeders(model: nn.Module) -> dict[int, nn.Module]:
    """id(Linear) -> the Tanh right before it in an nn.Sequential that runs its children
    in order: that Tanh's output is the Linear's input."""
    feeders = {}
    for parent in model.modules():
        if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
            children = list(parent.children())
            for before, module in zip(children, children[1:]):
                if isinstance(before, nn.Tanh) and isinstance(module, nn.Linear):
                    feeders[id(module)] = before
    return feeders


def probe_for(model: nn.Module) -> Probe:
    return ModelProbe(model) if hasattr(model, "layer_activity") else HookProbe(model)
