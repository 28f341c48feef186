"""What each neuron layer saw during the forward passes since SAL's last step.

SAL and the sensitivity metrics need, per layer, its input x, its output o
and its weights. A model either reports them itself (`layer_activity`, as
salrun's ElmanRNN does, with its time steps stacked) or a `HookProbe` reads
them from any PyTorch model:

- an nn.Linear whose output goes straight into tanh (nn.Tanh, torch.tanh,
  F.tanh, Tensor.tanh) or into a sigmoid shifted by -0.5 is a layer; which
  Linear feeds which activation is read from what the first forward pass
  computes (`salrun.tracing`), never from the order the modules were declared in;
- nn.RNN and nn.RNNCell with nonlinearity="tanh" are layers by their type
  (each of an nn.RNN's stacked layers is one).

Nothing is copied: the tensors are those the forward pass made anyway.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from salrun.neurons import activate
from salrun.tracing import Tracer

SUPPORTED = ("SAL adapts an nn.Linear whose output goes straight into tanh (nn.Tanh, torch.tanh, F.tanh, "
             "Tensor.tanh) or into sigmoid(.) - 0.5, and nn.RNN / nn.RNNCell with nonlinearity='tanh'")


@dataclass
class LayerActivity:
    """One layer of neurons: o = f(Σ_k W_k x_k + θ), batch (and time) stacked.

    `bias` may be a list: the neuron's bias is then their sum (nn.RNN's
    bias_ih + bias_hh), and SAL splits its update equally between them."""

    weights: list[torch.Tensor]
    inputs: list[torch.Tensor]
    output: torch.Tensor
    bias: torch.Tensor | list[torch.Tensor] | None
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
    weights count; `add` appends the sequence of a further forward pass. `inputs`
    and `output` stack the steps on demand (a copy, for metrics); SAL reads
    `chunks`, which never holds more than `rows` stacked rows, so it keeps no
    second copy of the per-step activations.
    """

    def __init__(self, weights, states: list[torch.Tensor], drive_inputs: torch.Tensor | None, bias,
                 activation: str = "tanh", masks=None, name: str = ""):
        self.weights, self.bias, self.activation, self.name = weights, bias, activation, name
        self.masks = masks if masks is not None else [None] * len(weights)
        self.segments: list[tuple[list[torch.Tensor], torch.Tensor | None]] = []
        self.add(states, drive_inputs)

    def add(self, states: list[torch.Tensor], drive_inputs: torch.Tensor | None) -> None:
        self.segments.append((states, drive_inputs if len(self.weights) > 1 else None))

    @staticmethod
    def _block(states, drive_inputs, start: int, stop: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        hidden = states[0].shape[-1]
        window = states[start:stop + 1]
        both = window[0] if len(window) == 1 else torch.stack(window)  # steps start-1 … stop-1
        previous, output = both[:-1].reshape(-1, hidden), both[1:].reshape(-1, hidden)
        if drive_inputs is None:
            return [previous], output
        return [drive_inputs[start:stop].flatten(0, 1), previous], output

    def _whole(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        blocks = [self._block(states, drive, 0, len(states) - 1) for states, drive in self.segments]
        if len(blocks) == 1:
            return blocks[0]
        return ([torch.cat(parts) for parts in zip(*(inputs for inputs, _ in blocks))],
                torch.cat([output for _, output in blocks]))

    @property
    def inputs(self) -> list[torch.Tensor]:  # type: ignore[override]
        return self._whole()[0]

    @property
    def output(self) -> torch.Tensor:  # type: ignore[override]
        return self._whole()[1]

    def chunks(self, rows: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        for states, drive in self.segments:
            steps = len(states) - 1
            per = steps if rows <= 0 else max(1, rows // max(states[0].shape[0], 1))
            for start in range(0, steps, per):
                yield self._block(states, drive, start, min(start + per, steps))


class Probe(Protocol):
    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]: ...

    def clear(self) -> None: ...

    def describe(self) -> list[str]: ...


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A recorded tensor as (rows, features), detached (a view where possible)."""
    t = t.detach()
    return t if t.dim() == 2 else t.reshape(-1, t.shape[-1])


# -- the layers a probe reads -------------------------------------------------------------

class LinearLayer:
    """An nn.Linear and the activation its output goes into. Its output o is either
    recorded by a hook on the activation module (`outputs` holds o) or computed
    from the Linear's own output U (`outputs` holds U, `recompute`)."""

    def __init__(self, name: str, linear: nn.Linear, activation: str, recompute: bool):
        self.name, self.linear, self.activation, self.recompute = name, linear, activation, recompute
        self.module = linear
        self.inputs: list[torch.Tensor] = []   # may be the list of the layer before (a chain)
        self.outputs: list[torch.Tensor] = []

    def activity(self, rnn_inputs: str) -> LayerActivity | None:
        xs, os_ = self.inputs, self.outputs
        if not xs or not os_:
            return None
        o = os_[0] if len(os_) == 1 else torch.cat(os_)
        if self.recompute and self.activation != "linear":
            o = activate(o, self.activation)
        params = self.linear._parameters  # not .weight: nn.Module.__getattr__ is slow, and this runs per layer
        return LayerActivity([params["weight"]], [xs[0] if len(xs) == 1 else torch.cat(xs)], o, params["bias"],
                             self.activation, [None], self.name)

    def recorded(self) -> bool:
        return bool(self.outputs)

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()

    def line(self) -> str:
        how = "computed from its output" if self.recompute else "read from the activation module"
        into = ("the output (a linear layer, adapted only with include_output=True)" if self.activation == "linear"
                else self.activation)
        return f"{self.name} (Linear {self.linear.in_features}→{self.linear.out_features}) → {into}; o {how}"


class RNNLayer:
    """Layer `index` of an nn.RNN: inputs [x_t, h_{t-1}] through weight_ih_l{index} and
    weight_hh_l{index}; bias bias_ih + bias_hh."""

    activation = "tanh"

    def __init__(self, name: str, rnn: nn.RNN, index: int):
        self.name, self.rnn, self.index = f"{name}.l{index}" if rnn.num_layers > 1 else name, rnn, index
        self.module = rnn
        self.segments: list[tuple[list[torch.Tensor], torch.Tensor]] = []

    def _params(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        p, k = self.rnn._parameters, self.index
        bias = [p[f"bias_ih_l{k}"], p[f"bias_hh_l{k}"]] if self.rnn.bias else None
        return [p[f"weight_ih_l{k}"], p[f"weight_hh_l{k}"]], bias

    def activity(self, rnn_inputs: str) -> LayerActivity | None:
        if not self.segments:
            return None
        weights, bias = self._params()
        weights = weights if rnn_inputs == "all" else weights[1:]
        (states, drive), *more = self.segments
        layer = SequenceActivity(weights, states, drive, bias, "tanh", None, self.name)
        for states, drive in more:
            layer.add(states, drive)
        return layer

    def recorded(self) -> bool:
        return bool(self.segments)

    def clear(self) -> None:
        self.segments.clear()

    def line(self) -> str:
        return f"{self.name} (nn.RNN layer {self.index}, {self.rnn.hidden_size} neurons) → tanh; inputs [x_t, h_t-1]"


class CellLayer:
    """An nn.RNNCell driven by the user's loop: each call is one step, inputs [x_t, h_{t-1}]."""

    activation = "tanh"

    def __init__(self, name: str, cell: nn.RNNCell):
        self.name, self.cell = name, cell
        self.module = cell
        self.inputs: list[torch.Tensor] = []
        self.previous: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def activity(self, rnn_inputs: str) -> LayerActivity | None:
        if not self.outputs:
            return None
        p = self.cell._parameters
        bias = [p["bias_ih"], p["bias_hh"]] if self.cell.bias else None
        previous = torch.cat(self.previous)
        if rnn_inputs == "all":
            weights, inputs = [p["weight_ih"], p["weight_hh"]], [torch.cat(self.inputs), previous]
        else:
            weights, inputs = [p["weight_hh"]], [previous]
        return LayerActivity(weights, inputs, torch.cat(self.outputs), bias, "tanh", [None] * len(weights),
                             self.name)

    def recorded(self) -> bool:
        return bool(self.outputs)

    def clear(self) -> None:
        self.inputs.clear()
        self.previous.clear()
        self.outputs.clear()

    def line(self) -> str:
        return f"{self.name} (RNNCell, {self.cell.hidden_size} neurons) → tanh; inputs [x_t, h_t-1]"


# -- the probe ------------------------------------------------------------------------------

class HookProbe:
    """Forward hooks that record each layer's activity in training mode, until `clear`.

    nn.RNN and nn.RNNCell are hooked at once. The Linear → activation pairs are
    found on the first forward pass of the model (a `Tracer` watches it), or taken
    from `layers`. Where a Linear and its nn.Tanh sit side by side in an
    nn.Sequential (whose forward feeds each child's output to the next), the Tanh's
    output is the layer's o and, when a Linear follows, that Linear's input: one hook
    per layer instead of two (hooks are most of the cost of a thin layer).
    Elsewhere the Linear's hook records x and U, and o = f(U) is computed at the step.
    """

    def __init__(self, model: nn.Module, layers: list | None = None):
        self.model = model
        self.names = {m: name or type(m).__name__ for name, m in model.named_modules()}  # by module: survives deepcopy
        self._handles: list = []
        self._units: list = []
        self._hidden: list | None = None  # the units less the output layer
        self._found: list[str] = []   # what the tracer saw, for messages and describe()
        self._left_alone: list[str] = []
        self._tracer: Tracer | None = None
        self._trace_handles: list = []
        self.traced = layers is not None
        if layers is not None:
            self._explicit(layers)
            return
        _refuse_unsupported(model, self.names)
        for module in model.modules():
            self._hook_recurrent(module)
        if any(isinstance(m, nn.Linear) for m in model.modules()):
            self._trace_handles = [model.register_forward_pre_hook(self._start_trace),
                                   model.register_forward_hook(self._end_trace, always_call=True)]
        else:
            self.traced = True
            if not self._units:
                raise ValueError(f"{SUPPORTED}; {type(model).__name__} has none: {_inventory(model)}")

    # -- nn.RNN and nn.RNNCell -------------------------------------------------------------

    def _hook_recurrent(self, module: nn.Module) -> bool:
        name = self.names[module]
        if isinstance(module, (nn.RNN, nn.RNNCell)):
            _refuse_unsupported(module, {module: name})
        if isinstance(module, nn.RNN):
            units = [RNNLayer(name, module, k) for k in range(module.num_layers)]
            self._handles.append(module.register_forward_hook(self._rnn_hook(units), with_kwargs=True))
        elif isinstance(module, nn.RNNCell):
            units = [CellLayer(name, module)]
            self._handles.append(module.register_forward_hook(self._cell_hook(units[0]), with_kwargs=True))
        else:
            return False
        self._units += units
        return True

    def _rnn_hook(self, units: list[RNNLayer]):
        def hook(rnn, args, kwargs, out):
            if not rnn.training:
                return
            x = args[0] if args else kwargs["input"]
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            if isinstance(x, nn.utils.rnn.PackedSequence):
                raise TypeError(f"SAL cannot read a PackedSequence passed to {units[0].name}: pad the batch")
            x, output = x.detach(), out[0].detach()
            if x.dim() == 2:  # unbatched (T, inputs)
                x, output, hx = x[:, None], output[:, None], None if hx is None else hx[:, None]
            elif rnn.batch_first:
                x, output = x.transpose(0, 1), output.transpose(0, 1)
            h0 = hx.detach() if hx is not None else x.new_zeros(rnn.num_layers, x.shape[1], rnn.hidden_size)
            sequence = x
            for unit in units:
                # nn.RNN returns the top layer's states only: a lower layer's are recomputed (its
                # weights are those of this forward pass: the optimizer has not stepped yet).
                states = output if unit is units[-1] else _tanh_layer(unit, sequence, h0[unit.index])
                unit.segments.append(([h0[unit.index], *states.unbind(0)], sequence))
                sequence = states
        return hook

    @staticmethod
    def _cell_hook(unit: CellLayer):
        def hook(cell, args, kwargs, out):
            if not cell.training:
                return
            x = args[0] if args else kwargs["input"]
            hx = args[1] if len(args) > 1 else kwargs.get("hx")
            o = _rows(out)
            unit.inputs.append(_rows(x))
            unit.previous.append(_rows(hx) if hx is not None else torch.zeros_like(o))
            unit.outputs.append(o)
        return hook

    # -- Linear → activation ------------------------------------------------------------------

    def _explicit(self, layers: list) -> None:
        by_name = dict(self.model.named_modules())
        for item in layers:
            target, activation = item if isinstance(item, tuple) else (item, "tanh")
            module = by_name.get(target) if isinstance(target, str) else target
            if not isinstance(module, nn.Module) or module not in self.names:
                raise ValueError(f"layers: {target!r} is not a module of the model")
            if activation not in ("tanh", "sigmoid_shifted", "linear"):
                raise ValueError(f"layers: activation must be 'tanh', 'sigmoid_shifted' or 'linear', "
                                 f"got {activation!r}")
            if isinstance(module, nn.Linear):
                unit = LinearLayer(self.names[module], module, activation, recompute=True)
                self._units.append(unit)
                self._handles.append(module.register_forward_hook(self._linear_hook(unit, unit.inputs)))
            elif not self._hook_recurrent(module):
                raise TypeError(f"layers: {self.names[module]!r} is an nn.{type(module).__name__}; "
                                "give nn.Linear, nn.RNN or nn.RNNCell modules (or their names)")
        if not self._units:
            raise ValueError("layers is empty: name at least one nn.Linear, nn.RNN or nn.RNNCell")

    @staticmethod
    def _linear_hook(unit: LinearLayer, inputs: list | None):
        """Records x (unless `inputs` is None: x comes from the layer before) and U."""
        outputs = unit.outputs

        def hook(linear, args, out):
            if linear.training:
                if inputs is not None:
                    inputs.append(_rows(args[0]))
                if unit.recompute:
                    outputs.append(_rows(out))
        return hook

    @staticmethod
    def _activation_hook(outputs: list):
        def hook(module, _args, out):
            if module.training:
                outputs.append(_rows(out))
        return hook

    def _start_trace(self, _model, _args):
        if not self.traced:
            weights = {id(m.weight): m for m in self.model.modules() if isinstance(m, nn.Linear)}
            tanhs = [m for m in self.model.modules() if isinstance(m, nn.Tanh)]
            recurrent = [m for m in self.model.modules() if isinstance(m, (nn.RNN, nn.RNNCell))]
            self._tracer = Tracer(weights, tanhs, recurrent)
            self._tracer.__enter__()

    def _end_trace(self, model, _args, out):
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return
        tracer.__exit__(None, None, None)
        if out is None:  # the forward raised: trace the next one
            return
        self._settle()
        self._build(tracer, record=model.training)

    def _settle(self) -> None:
        """The layers are fixed from here on (SAL's averages are indexed by them)."""
        self.traced = True
        for handle in self._trace_handles:
            handle.remove()
        self._trace_handles = []

    def _build(self, tracer: Tracer, record: bool) -> None:
        """Layers from the traced calls, in the order they first ran, with their hooks;
        the traced pass's activity is recorded like that of the passes that follow."""
        neighbours = _sequential_neighbours(self.model)
        pairs = tracer.pairs_by_linear()
        chosen: dict[nn.Linear, LinearLayer] = {}
        by_tanh: dict[nn.Module, LinearLayer] = {}  # layers whose o is read from their nn.Tanh's hook
        last_plain = None
        for linear, calls in tracer.linear_calls.items():
            name, used = self.names[linear], pairs.get(linear, [])
            activations = {activation for activation, _ in used}
            if not used:
                if last_plain is not None:
                    self._left_alone.append(f"{self.names[last_plain]}: its output goes into "
                                            f"{tracer.consumer(last_plain)}")
                last_plain = linear
            elif len(used) < len(calls) or len(activations) > 1:
                self._left_alone.append(f"{name}: {len(used)} of its {len(calls)} calls go into "
                                        f"{'/'.join(sorted(activations))}, the others elsewhere")
            else:
                # o is read from the Tanh's hook only where an nn.Sequential fixes the data flow
                # and that Tanh serves this Linear alone; anywhere else o = f(U), exact too.
                tanh = neighbours.get(linear, (None, None))[1]
                direct = tanh is not None and all(made_by is tanh for _, made_by in used) \
                    and tracer.calls.get(tanh) == len(calls)
                chosen[linear] = LinearLayer(name, linear, activations.pop(), recompute=not direct)
                if direct:
                    by_tanh[tanh] = chosen[linear]
        if last_plain is not None:
            chosen[last_plain] = LinearLayer(self.names[last_plain], last_plain, "linear", recompute=True)
        for linear, unit in chosen.items():
            calls = tracer.linear_calls[linear]
            before = neighbours[linear][0] if linear in neighbours else None
            feeder = by_tanh.get(before)  # its Tanh's output is this Linear's input
            if feeder is not None and tracer.calls.get(before) == len(calls):
                unit.inputs = feeder.outputs
            else:
                feeder = None
            if feeder is None or unit.recompute:
                self._handles.append(linear.register_forward_hook(
                    self._linear_hook(unit, unit.inputs if feeder is None else None)))
            if not unit.recompute:
                self._handles.append(neighbours[linear][1].register_forward_hook(self._activation_hook(unit.outputs)))
            for x, u, o in calls if record else ():
                if feeder is None:
                    unit.inputs.append(_rows(x))
                unit.outputs.append(_rows(u if unit.recompute else o))
        order = {m: k for k, m in enumerate(tracer.order)}
        self._hidden = None
        self._units = sorted([*self._units, *chosen.values()], key=lambda u: order.get(u.module, len(order)))
        self._found = tracer.summary(self.names)

    # -- what SAL reads -----------------------------------------------------------------------

    def _layer_units(self, include_output: bool) -> list:
        if not self.traced:
            if not any(unit.recorded() for unit in self._units):
                return []
            # Only the model's nn.RNN / nn.RNNCell ran (its forward did not): where its
            # Linears' outputs go is unknown, so they are left alone.
            self._settle()
            self._left_alone.append("every nn.Linear: the model's own forward never ran, so SAL could not "
                                    "see where their outputs go")
        if self._hidden is None:  # fixed once traced; this runs every step
            self._hidden = [u for u in self._units if u.activation != "linear"]
        if not self._hidden:
            raise ValueError(f"{SUPPORTED}; the forward pass of {type(self.model).__name__} ran none: "
                             + "; ".join(self._found or self._left_alone or [_inventory(self.model)])
                             + ". Name the layers with SAL(model, layers=[...])")
        return self._units if include_output else self._hidden

    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        found = []
        for unit in self._layer_units(include_output):
            layer = unit.activity(rnn_inputs)
            if layer is not None:
                found.append(layer)
        return found

    def describe(self) -> list[str]:
        if not self.traced:
            return ["not known yet: SAL reads the Linear → tanh layers from the model's first forward pass"]
        lines = [unit.line() for unit in self._layer_units(True)]
        return lines + [f"left alone: {line}" for line in self._left_alone]

    def clear(self) -> None:
        for unit in self._units:
            unit.clear()

    def remove(self) -> None:
        for handle in self._handles + self._trace_handles:
            handle.remove()

    @contextlib.contextmanager
    def paused(self):
        """Forward passes inside record nothing and dispatch no hook of this probe, for steps whose
        activity nothing reads: a module with a hook leaves torch's fast call path (measured: ≈ 1.4 ms
        a step for a 300-layer MLP, a tenth of its step)."""
        held = []
        for handle in self._handles:
            hooks = handle.hooks_dict_ref()
            if hooks is not None and handle.id in hooks:
                held.append((hooks, handle.id, hooks.pop(handle.id)))
        try:
            yield
        finally:
            for hooks, key, hook in held:
                hooks[key] = hook


def _tanh_layer(unit: RNNLayer, sequence: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The states of one tanh nn.RNN layer over `sequence` (T, batch, inputs)."""
    (w_ih, w_hh), bias = unit._params()
    with torch.no_grad():
        drive = F.linear(sequence, w_ih, None if bias is None else bias[0] + bias[1])
        states = []
        for t in range(sequence.shape[0]):
            h = torch.tanh(torch.addmm(drive[t], h, w_hh.T))
            states.append(h)
    return torch.stack(states)


UNSUPPORTED = (nn.LSTM, nn.GRU, nn.LSTMCell, nn.GRUCell)


def _refuse_unsupported(model: nn.Module, names: dict[nn.Module, str]) -> None:
    """Recurrent modules SAL cannot adapt get one error, rather than being skipped in silence."""
    for module in model.modules():
        name, kind = names.get(module, type(module).__name__), type(module).__name__
        if isinstance(module, UNSUPPORTED) or (isinstance(module, (nn.RNN, nn.RNNCell))
                                               and module.nonlinearity != "tanh"):
            extra = f" (nonlinearity={module.nonlinearity!r})" if hasattr(module, "nonlinearity") else ""
            raise TypeError(f"{SUPPORTED}; {name!r} is an nn.{kind}{extra}. "
                            "To adapt other layers only, name them: SAL(model, layers=[...])")
        if isinstance(module, nn.RNN):
            if module.bidirectional:
                raise TypeError(f"SAL does not support a bidirectional nn.RNN ({name!r}): "
                                "use two nn.RNN modules, one on the reversed sequence")
            if module.dropout > 0 and module.num_layers > 1:
                raise TypeError(f"SAL does not support an nn.RNN with dropout between its layers ({name!r}): "
                                "stack single-layer nn.RNN modules with nn.Dropout between them")


def _sequential_neighbours(model: nn.Module) -> dict[nn.Module, tuple[nn.Module | None, nn.Module | None]]:
    """Linear -> (the child before it, the child after it) in an nn.Sequential that
    runs its children in order: the one before's output is the Linear's input, and the
    Linear's output is the next one's input."""
    found = {}
    for parent in model.modules():
        if isinstance(parent, nn.Sequential) and type(parent).forward is nn.Sequential.forward:
            children = list(parent.children())
            for k, module in enumerate(children):
                if isinstance(module, nn.Linear):
                    found[module] = (children[k - 1] if k > 0 else None,
                                         children[k + 1] if k + 1 < len(children) else None)
    return found


def _inventory(model: nn.Module) -> str:
    kinds = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
    return "it holds " + (", ".join(kinds) if kinds else "no modules")


class ModelProbe:
    """For models that report their own activity (`layer_activity`)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def layers(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        return self.model.layer_activity(include_output=include_output, rnn_inputs=rnn_inputs)

    def clear(self) -> None:
        self.model.clear_activity()

    def describe(self) -> list[str]:
        return [f"{type(self.model).__name__} reports its own layers (layer_activity)"]


def probe_for(model: nn.Module, layers: list | None = None) -> Probe:
    if hasattr(model, "layer_activity"):
        if layers is not None:
            raise ValueError(f"{type(model).__name__} reports its own layers: leave out layers=")
        return ModelProbe(model)
    return HookProbe(model, layers)
