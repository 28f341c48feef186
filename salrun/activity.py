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

Nothing is copied: the tensors are those the forward pass made anyway. SAL's
hooks act on the module instances SAL was built on only: a copy of the model
(deepcopy, AveragedModel, pickle) never feeds the original's SAL. An adapted
nn.RNN runs its layers one at a time in a recorded pass, so every layer's
states are read as computed (nn.RNN returns the top layer's only).
"""
from __future__ import annotations

import contextlib
import weakref

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
    names: tuple[str, ...] = ()  # a stack of len(names) equal layers along a leading dimension (salrun's MLP)

    def chunks(self, rows: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """(inputs, output) in row blocks; the data is already in one block here."""
        yield self.inputs, self.output

    def shapes(self) -> list[tuple[str, int]]:
        """(name, neurons) of each layer it holds."""
        neurons = self.weights[0].shape[-2]
        return [(name, neurons) for name in self.names] if self.names else [(self.name, neurons)]

    def per_layer(self) -> list["LayerActivity"]:
        """Each layer it holds as its own LayerActivity (views, no copies): a stack's layers, or itself."""
        if not self.names:
            return [self]
        bias = self.bias.unbind(0) if self.bias is not None else [None] * len(self.names)
        weights, inputs, outputs = [w.unbind(0) for w in self.weights], [x.unbind(0) for x in self.inputs], \
            self.output.unbind(0)
        return [LayerActivity([w[k] for w in weights], [x[k] for x in inputs], outputs[k], bias[k], self.activation,
                              list(self.masks), name) for k, name in enumerate(self.names)]


def per_layer(layers: list[LayerActivity]) -> list[LayerActivity]:
    """One LayerActivity per layer, stacks unfolded (for the per-layer metrics and options)."""
    return [one for layer in layers for one in layer.per_layer()]


def chained(layers: list[LayerActivity]) -> list[bool]:
    """Whether each layer's input is the previous layer's output (the same storage, so a tangent
    carried up the stack passes from one to the next); the first layer's is not."""
    return [False] + [layer.inputs[0].data_ptr() == below.output.data_ptr() for below, layer in zip(layers, layers[1:])]


def stack_kept(tensors: list[torch.Tensor], kept: torch.Tensor | None, dim: int = 0) -> torch.Tensor:
    """torch.stack(tensors, dim), written into `kept` where it fits (shape, dtype, device), else into new
    storage; the caller keeps the result for its next stack. A model stacks its recording so, once
    per forward, into memory it keeps from step to step: a fresh block of a step's activations
    faults its pages in at every step (measured: the stack of paper_long_lag's 302 states 0.1 ms
    into kept storage, 0.4-1.5 ms into new). The block is then valid until the next forward."""
    like = tensors[0]
    shape = (*like.shape[:dim], len(tensors), *like.shape[dim:])
    if kept is None or (kept.shape, kept.dtype, kept.device) != (shape, like.dtype, like.device):
        return torch.stack(tensors, dim)
    return torch.stack(tensors, dim, out=kept)


class Kept:
    """Temporaries of the data's size kept from step to step, by shape, dtype and device: a fresh one
    faults its pages in at every step, as a fresh stack would (`stack_kept`). Shapes that change from
    step to step (sequence lengths) keep at most `limit` at a time."""

    def __init__(self, limit: int = 4):
        self.limit = limit
        self._kept: dict[tuple, torch.Tensor] = {}

    def like(self, tensor: torch.Tensor) -> torch.Tensor:
        """Room for a contiguous tensor of `tensor`'s shape, dtype and device, its values arbitrary.
        One temporary per shape: a caller is done with it before asking again."""
        key = (tensor.shape, tensor.dtype, tensor.device)
        kept = self._kept.get(key)
        if kept is None:
            if len(self._kept) >= self.limit:
                self._kept.clear()
            kept = self._kept[key] = torch.empty_like(tensor, memory_format=torch.contiguous_format)
        return kept


class Steps:
    """[h_{-1}, h_0, …, h_{T-1}] as the forward made them, without a tensor per step: the first
    state (batch, hidden) and the others in one (T, batch, hidden) tensor (nn.RNN's output), or
    all of them in one (T + 1, batch, hidden) block (`Steps.block`), whose windows of previous
    states are views."""

    __slots__ = ("first", "rest", "whole")

    def __init__(self, first: torch.Tensor, rest: torch.Tensor, whole: torch.Tensor | None = None):
        self.first, self.rest, self.whole = first, rest, whole

    @classmethod
    def block(cls, whole: torch.Tensor) -> "Steps":
        """The states of one (T + 1, batch, hidden) tensor, h_{-1} first."""
        return cls(whole[0], whole[1:], whole)

    def __len__(self) -> int:
        return self.rest.shape[0] + 1

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.first if index == 0 else self.rest[index - 1]

    def previous(self, start: int, stop: int) -> torch.Tensor:
        """The states before steps start … stop-1: (stop - start, batch, hidden)."""
        if self.whole is not None:
            return self.whole[start:stop]
        if start > 0:
            return self.rest[start - 1:stop - 1]
        return torch.cat([self.first[None], self.rest[:stop - 1]])


class SequenceActivity(LayerActivity):
    """A recurrent layer whose steps are kept as the forward pass made them.

    `states` is [h_{-1}, h_0, …, h_{T-1}] (`Steps`, each (batch, hidden)) and `drive_inputs`
    the external inputs (T, batch, inputs), or None when only the recurrent
    weights count; `add` appends the sequence of a further forward pass. `inputs`
    and `output` stack the steps on demand (a copy, for metrics); SAL reads
    `chunks`, which never holds more than `rows` stacked rows, so it keeps no
    second copy of the per-step activations.
    """

    def __init__(self, weights, states: Steps, drive_inputs: torch.Tensor | None, bias,
                 activation: str = "tanh", masks=None, name: str = ""):
        self.weights, self.bias, self.activation, self.name = weights, bias, activation, name
        self.masks = masks if masks is not None else [None] * len(weights)
        self.segments: list[tuple[Steps, torch.Tensor | None]] = []
        self.add(states, drive_inputs)

    def add(self, states: Steps, drive_inputs: torch.Tensor | None) -> None:
        self.segments.append((states, drive_inputs if len(self.weights) > 1 else None))

    @staticmethod
    def _block(states: Steps, drive_inputs, start: int, stop: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        hidden = states.first.shape[-1]
        previous = states.previous(start, stop).reshape(-1, hidden)
        output = states.rest[start:stop].reshape(-1, hidden)
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
            per = steps if rows <= 0 else max(1, rows // max(states.first.shape[0], 1))
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


def _as(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Activity in the weights' dtype: a forward under autocast (bf16) records bf16 tensors."""
    return t if t.dtype == weight.dtype else t.to(weight.dtype)


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
        params = self.linear._parameters  # not .weight: nn.Module.__getattr__ is slow, and this runs per layer
        weight = params["weight"]
        o = _as(os_[0] if len(os_) == 1 else torch.cat(os_), weight)
        if self.recompute and self.activation != "linear":
            o = activate(o, self.activation)
        x = _as(xs[0] if len(xs) == 1 else torch.cat(xs), weight)
        return LayerActivity([weight], [x], o, params["bias"], self.activation, [None], self.name)

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
        like = p["weight_hh"]
        previous = _as(torch.cat(self.previous), like)
        if rnn_inputs == "all":
            weights, inputs = [p["weight_ih"], like], [_as(torch.cat(self.inputs), like), previous]
        else:
            weights, inputs = [like], [previous]
        return LayerActivity(weights, inputs, _as(torch.cat(self.outputs), like), bias, "tanh",
                             [None] * len(weights), self.name)

    def recorded(self) -> bool:
        return bool(self.outputs)

    def clear(self) -> None:
        self.inputs.clear()
        self.previous.clear()
        self.outputs.clear()

    def line(self) -> str:
        return f"{self.name} (RNNCell, {self.cell.hidden_size} neurons) → tanh; inputs [x_t, h_t-1]"


# -- the probe ------------------------------------------------------------------------------

class _Switch:
    """Whether a pass is recorded, shared by a probe's hooks: a pass in training mode (with grad or under
    torch.no_grad(): SAL alone, without backprop, needs no graph), while the probe lives. Hooks hold
    this, not the probe: a SAL that is gone records nothing."""

    __slots__ = ("probe", "__weakref__")

    def __init__(self, probe):
        self.probe = weakref.ref(probe)

    def __call__(self, module: nn.Module, output: bool = False) -> bool:
        """`output`: the module is the model's (linear) output layer, recorded only when SAL adapts it."""
        probe = self.probe()
        return module.training and probe is not None and probe.reading and (probe.record_output or not output)


class _Hook:
    """A hook of SAL's, bound to the module instance it was registered on.

    Copies of the model never feed the original's SAL: copy.deepcopy (and so
    torch.optim.swa_utils.AveragedModel) and pickling turn it into an inert hook, and a
    shallow copy, which shares the module's hook dict, is ignored (`module is owner`).
    An nn.DataParallel replica (a shallow copy per device) is refused: its activity
    belongs to SAL, and SAL cannot gather it."""

    __slots__ = ("owner", "fn")

    def __init__(self, owner: nn.Module, fn):
        self.owner, self.fn = owner, fn

    def __call__(self, module, *args):
        if module is self.owner:
            return self.fn(module, *args)
        if getattr(module, "_is_replica", False) and module.training:
            raise RuntimeError(REPLICA)
        return None

    def __deepcopy__(self, memo):
        return _Inert()

    def __reduce__(self):
        return _Inert, ()

    @property
    def __name__(self):  # torch.jit.script reads a hook's name first: say what to do instead
        raise RuntimeError(SCRIPT_HOOKS)


class _Inert:
    """SAL's hook on a copy of the model: does nothing."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        return None

    @property
    def __name__(self):
        raise RuntimeError(SCRIPT_HOOKS)


REPLICA = ("SAL cannot record an nn.DataParallel replica (a copy of the model per device): run the model on one "
           "device, or one process per device (DistributedDataParallel) with a SAL each")
SCRIPT_HOOKS = ("torch.jit.script cannot compile SAL's forward hooks: script (or copy) the model with them "
                "off, `with sal.paused(): scripted = torch.jit.script(model)`; the scripted model is not adapted")


class HookProbe:
    """Forward hooks that record each layer's activity in training mode, until `clear`.

    nn.RNN and nn.RNNCell are hooked at once. The Linear → activation pairs are
    found on the first forward pass of the model (a `Tracer` watches it), or taken
    from `layers`. Where a Linear and its nn.Tanh sit side by side in an
    nn.Sequential (whose forward feeds each child's output to the next), the Tanh's
    output is the layer's o and, when a Linear follows, that Linear's input: one hook
    per layer instead of two (hooks are most of the cost of a thin layer).
    Elsewhere the Linear's hook records x and U, and o = f(U) is computed at the step.

    One path: the traced pass records what the hooks of the later passes record (the
    calls of each Linear module, in training mode), whatever ran first (`describe` in
    eval mode, a training step).
    """

    def __init__(self, model: nn.Module, layers: list | None = None):
        self.model = model
        self.names = {m: name or type(m).__name__ for name, m in model.named_modules()}
        self._handles: list = []
        self._units: list = []
        self._hidden: list | None = None  # the units less the output layer
        self._found: list[str] = []   # what the tracer saw, for messages and describe()
        self._left_alone: list[str] = []
        self._refusal: str | None = None  # a pattern SAL cannot adapt, found by the traced pass
        self._tracer: Tracer | None = None
        self._trace_handles: list = []
        self._switch = _Switch(self)
        # Set by SAL before the passes that its next step reads: whether they are read at all (not with
        # update_every = m at the m - 1 steps between), and the output layer (include_output) with them.
        self.reading = True
        self.record_output = True
        self._rnns: list[_RNNRecorder] = []
        self.traced = layers is not None
        _refuse_script(model, self.names)
        if layers is not None:
            self._explicit(layers)
            return
        _refuse_unsupported(model, self.names)
        for module in model.modules():
            self._hook_recurrent(module)
        if any(isinstance(m, nn.Linear) for m in model.modules()):
            probe = weakref.ref(self)
            self._trace_handles = [
                model.register_forward_pre_hook(_Hook(model, lambda m, args: probe() and probe()._start_trace())),
                model.register_forward_hook(_Hook(model, lambda m, args, out: probe() and probe()._end_trace(m, out)),
                                            always_call=True)]
        else:
            self.traced = True
            if not self._units:
                raise ValueError(f"{SUPPORTED}; {type(model).__name__} has none: {_inventory(model)}")

    # -- nn.RNN and nn.RNNCell -------------------------------------------------------------

    def _hook_recurrent(self, module: nn.Module) -> bool:
        name = self.names[module]
        if isinstance(module, (nn.RNN, nn.RNNCell)):
            _refuse_unsupported(module, {module: name})
            _refuse_reparametrized(module, name)
        if isinstance(module, nn.RNN):
            if not isinstance(module, _LayerwiseRNN) and type(module).forward is not nn.RNN.forward:
                raise TypeError(f"SAL cannot read the layers of {name!r}, an nn.RNN subclass with its own forward "
                                f"({type(module).__name__}): name the other layers with SAL(model, layers=[...])")
            units = [RNNLayer(name, module, k) for k in range(module.num_layers)]
            self._rnns.append(_LayerwiseRNN.attach(module, _RNNRecorder(module, units, self._switch)))
        elif isinstance(module, nn.RNNCell):
            units = [CellLayer(name, module)]
            hook = self._cell_hook(units[0], self._switch)
            self._handles.append(module.register_forward_hook(_Hook(module, hook), with_kwargs=True))
        else:
            return False
        self._units += units
        return True

    @staticmethod
    def _cell_hook(unit: CellLayer, recording: _Switch):
        def hook(cell, args, kwargs, out):
            if not recording(cell):
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
        weights: dict[int, str] = {}
        for item in layers:
            target, activation = item if isinstance(item, tuple) else (item, "tanh")
            module = by_name.get(target) if isinstance(target, str) else target
            if not isinstance(module, nn.Module) or module not in self.names:
                raise ValueError(f"layers: {target!r} is not a module of the model")
            if activation not in ("tanh", "sigmoid_shifted", "linear"):
                raise ValueError(f"layers: activation must be 'tanh', 'sigmoid_shifted' or 'linear', "
                                 f"got {activation!r}")
            name = self.names[module]
            if isinstance(module, nn.Linear):
                _refuse_reparametrized(module, name)
                other = weights.setdefault(id(module.weight), name)
                if other != name:
                    raise ValueError(_tied(other, name))
                unit = LinearLayer(name, module, activation, recompute=True)
                self._units.append(unit)
                hook = self._linear_hook(unit, unit.inputs, self._switch)
                self._handles.append(module.register_forward_hook(_Hook(module, hook)))
            elif not self._hook_recurrent(module):
                raise TypeError(f"layers: {name!r} is an nn.{type(module).__name__}; "
                                "give nn.Linear, nn.RNN or nn.RNNCell modules (or their names)")
        if not self._units:
            raise ValueError("layers is empty: name at least one nn.Linear, nn.RNN or nn.RNNCell")

    @staticmethod
    def _linear_hook(unit: LinearLayer, inputs: list | None, recording: _Switch):
        """Records x (unless `inputs` is None: x comes from the layer before) and U."""
        outputs = unit.outputs

        output = unit.activation == "linear"

        def hook(linear, args, out):
            if recording(linear, output):
                if inputs is not None:
                    inputs.append(_rows(args[0]))
                if unit.recompute:
                    outputs.append(_rows(out))
        return hook

    @staticmethod
    def _activation_hook(outputs: list, recording: _Switch):
        def hook(module, _args, out):
            if recording(module):
                outputs.append(_rows(out))
        return hook

    def _start_trace(self) -> None:
        if not self.traced:
            linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
            tanhs = [m for m in self.model.modules() if isinstance(m, nn.Tanh)]
            recurrent = [m for m in self.model.modules() if isinstance(m, (nn.RNN, nn.RNNCell))]
            self._tracer = Tracer(linears, tanhs, recurrent)
            self._tracer.__enter__()

    def _end_trace(self, model: nn.Module, out) -> None:
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return
        tracer.__exit__(None, None, None)
        if out is None:  # the forward raised: trace the next one
            return
        self._settle()
        self._build(tracer, record=self._switch(model))
        if self._refusal:
            raise ValueError(self._refusal)

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
        for linear in tracer.functional - set(tracer.linear_calls):
            self._left_alone.append(f"{self.names[linear]}: its weight is used only by F.linear outside its own "
                                    "forward, which SAL's hooks do not see: call the module instead")
        for linear, calls in tracer.linear_calls.items():
            name, used = self.names[linear], pairs.get(linear, [])
            activations = {activation for activation, _ in used}
            if linear in tracer.dropped:
                self._refusal = (f"SAL cannot adapt {name!r}: its output goes through dropout into tanh, so the tanh "
                                 "neuron's input is not W·x + θ (in training) and the rule has no neuron to adapt. "
                                 "Put the dropout on the Linear's input or after the tanh, or name the layers to "
                                 "adapt with SAL(model, layers=[...])")
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
        if last_plain is not None and _weight_maker(last_plain) is None:
            chosen[last_plain] = LinearLayer(self.names[last_plain], last_plain, "linear", recompute=True)
        elif last_plain is not None:
            self._left_alone.append(f"{self.names[last_plain]} (the output layer): its weight is computed by "
                                    f"{_weight_maker(last_plain)}")
        self._refusal = self._refusal or _shared_or_reparametrized(chosen, self.names)
        if self._refusal:
            return
        for linear, unit in chosen.items():
            calls = tracer.linear_calls[linear]
            before = neighbours[linear][0] if linear in neighbours else None
            feeder = by_tanh.get(before)  # its Tanh's output is this Linear's input
            if feeder is not None and tracer.calls.get(before) == len(calls):
                unit.inputs = feeder.outputs
            else:
                feeder = None
            if feeder is None or unit.recompute:
                hook = self._linear_hook(unit, unit.inputs if feeder is None else None, self._switch)
                self._handles.append(linear.register_forward_hook(_Hook(linear, hook)))
            if not unit.recompute:
                tanh = neighbours[linear][1]
                self._handles.append(tanh.register_forward_hook(_Hook(tanh, self._activation_hook(unit.outputs, self._switch))))
            for x, u, o in calls if record and (self.record_output or unit.activation != "linear") else ():
                if feeder is None:
                    unit.inputs.append(_rows(x))
                unit.outputs.append(_rows(u if unit.recompute else o))
        order = {m: k for k, m in enumerate(tracer.order)}
        self._hidden = None
        self._units = sorted([*self._units, *chosen.values()], key=lambda u: order.get(u.module, len(order)))
        self._found = tracer.summary(self.names)
        for linear in tracer.functional & set(chosen):
            self._left_alone.append(f"the calls of F.linear with {self.names[linear]}'s weight outside its forward "
                                    "(SAL's hooks see only its own calls)")

    # -- what SAL reads -----------------------------------------------------------------------

    def _layer_units(self, include_output: bool) -> list:
        if self._refusal:
            raise ValueError(self._refusal)
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
        units = self._layer_units(include_output)
        found = [layer for layer in (unit.activity(rnn_inputs) for unit in units) if layer is not None]
        if found and len(found) < len(units):
            self._refuse_partial(units)
        return found

    def _refuse_partial(self, units: list) -> None:
        """SAL keeps one average per layer, indexed by the layers' order: every step needs them all."""
        missing = [unit.name for unit in units if not unit.recorded()]
        raise ValueError(f"SAL layer(s) {', '.join(map(repr, missing))} recorded nothing since the last sal.step() "
                         "while others did: SAL keeps one average per layer and updates them all at each step. "
                         "Call sal.step() after passes that run every layer, or name the layers that always run "
                         "with SAL(model, layers=[...])")

    def describe(self) -> list[str]:
        if self._refusal:
            return [f"refused: {self._refusal}"]
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
        for recorder in self._rnns:
            _LayerwiseRNN.detach(recorder)

    @contextlib.contextmanager
    def paused(self):
        """Forward passes inside record nothing and dispatch no hook of this probe, for steps whose
        activity nothing reads: a module with a hook leaves torch's fast call path (measured: ≈ 1.4 ms
        a step for a 300-layer MLP, a tenth of its step). A copy or a torch.jit.script of the model
        made inside carries no hook of SAL's."""
        held = []
        for handle in self._handles + self._trace_handles:
            for hooks in (handle.hooks_dict_ref(), *(ref() for ref in handle.extra_dict_ref)):
                if hooks is not None and handle.id in hooks:
                    held.append((hooks, handle.id, hooks.pop(handle.id)))
        for recorder in self._rnns:
            _LayerwiseRNN.detach(recorder)
        try:
            yield
        finally:
            for hooks, key, hook in held:
                hooks[key] = hook
            for recorder in self._rnns:
                _LayerwiseRNN.attach(recorder.owner, recorder)


class _RNNRecorder:
    """What SAL's layers of one nn.RNN record: per layer, its input sequence, first state and states."""

    __slots__ = ("owner", "units", "recording")

    def __init__(self, owner: nn.RNN, units: list[RNNLayer], recording: _Switch):
        self.owner, self.units, self.recording = owner, units, recording

    def __call__(self, k: int, sequence: torch.Tensor, h0: torch.Tensor, states: torch.Tensor) -> None:
        """Layer k's pass, time first: sequence (T, batch, inputs), h0 (batch, hidden), states (T, batch, hidden)."""
        unit = self.units[k]
        dtype = unit.rnn._flat_weights[k * (4 if unit.rnn.bias else 2)].dtype
        if states.dtype != dtype or sequence.dtype != dtype or h0.dtype != dtype:  # autocast
            sequence, h0, states = sequence.to(dtype), h0.to(dtype), states.to(dtype)
        unit.segments.append((Steps(h0.detach(), states.detach()), sequence.detach()))


class _LayerwiseRNN(nn.RNN):
    """An nn.RNN that SAL adapts: in a recorded pass (training mode, grad enabled) it runs its layers
    one at a time, each with nn.RNN's own kernel (torch.rnn_tanh, one layer) and the dropout between
    layers as nn.RNN applies it, so that SAL reads every layer's input and states as they were
    computed; nn.RNN returns the top layer's states only. Any other pass is nn.RNN's.

    SAL sets this class on the instances it adapts (`attach`). A copy (copy.deepcopy, AveragedModel,
    pickling, torch.save) is a plain nn.RNN, and prints as one."""

    plain: type = nn.RNN  # the class the instance had
    classes: dict[type, type] = {}  # plain class -> its layerwise class

    @staticmethod
    def attach(rnn: nn.RNN, recorder: _RNNRecorder) -> _RNNRecorder:
        if not isinstance(rnn, _LayerwiseRNN):
            plain = type(rnn)
            if plain not in _LayerwiseRNN.classes:
                _LayerwiseRNN.classes[plain] = _LayerwiseRNN if plain is nn.RNN else type(
                    f"Layerwise{plain.__name__}", (_LayerwiseRNN, plain), {"plain": plain})
            rnn.__class__ = _LayerwiseRNN.classes[plain]
        recorders = rnn.__dict__.setdefault("_sal_recorders", [])
        if recorder not in recorders:
            recorders.append(recorder)
        return recorder

    @staticmethod
    def detach(recorder: _RNNRecorder) -> None:
        rnn = recorder.owner
        recorders = rnn.__dict__.get("_sal_recorders", [])
        if recorder in recorders:
            recorders.remove(recorder)
        if not recorders and isinstance(rnn, _LayerwiseRNN):
            rnn.__class__ = rnn.plain
            rnn.__dict__.pop("_sal_recorders", None)

    def _get_name(self) -> str:
        return self.plain.__name__

    def __reduce_ex__(self, protocol):
        """Copies and pickles are of the plain class, without SAL's recorders."""
        func, args, state, *rest = super().__reduce_ex__(protocol)
        state = {k: v for k, v in state.items() if k != "_sal_recorders"}
        return (func, (self.plain, *args[1:]), state, *rest)

    def forward(self, input, hx=None):
        recorders = [r for r in self.__dict__.get("_sal_recorders", ()) if r.owner is self and r.recording(self)]
        if not recorders:
            if getattr(self, "_is_replica", False) and self.training:
                raise RuntimeError(REPLICA)
            return super().forward(input, hx)
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise TypeError(f"SAL cannot read a PackedSequence passed to {recorders[0].units[0].name!r}: "
                            "pad the batch")
        self._update_flat_weights()
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            hx = None if hx is None else hx.unsqueeze(1)
        batch = input.shape[0 if self.batch_first else 1]
        if hx is None:
            hx = input.new_zeros(self.num_layers, batch, self.hidden_size)
        self.check_forward_args(input, hx, None)
        per = 4 if self.bias else 2
        sequence, last = input, []
        for k in range(self.num_layers):
            states, h_n = torch.rnn_tanh(sequence, hx[k:k + 1], self._flat_weights[k * per:(k + 1) * per],
                                         self.bias, 1, 0.0, True, False, self.batch_first)
            for recorder in recorders:
                if self.batch_first:
                    recorder(k, sequence.transpose(0, 1), hx[k], states.transpose(0, 1))
                else:
                    recorder(k, sequence, hx[k], states)
            last.append(h_n)
            sequence = states
            if self.dropout > 0 and k + 1 < self.num_layers:
                sequence = F.dropout(sequence, self.dropout, True)
        hidden = torch.cat(last) if len(last) > 1 else last[0]
        if not batched:
            states, hidden = states.squeeze(0 if self.batch_first else 1), hidden.squeeze(1)
        return states, hidden


def _refuse_script(model: nn.Module, names: dict[nn.Module, str]) -> None:
    for module in model.modules():
        if isinstance(module, torch.jit.ScriptModule):
            where = "" if module is model else f" ({names.get(module, type(module).__name__)!r})"
            raise TypeError(f"SAL cannot adapt a TorchScript module{where}: its forward runs outside Python, where "
                            "SAL cannot see or record it. Build SAL on the eager model, and script it for "
                            "inference inside `with sal.paused():`")


def _weight_maker(module: nn.Module) -> str | None:
    """What computes a module's weights when they are not plain parameters (weight_norm, spectral_norm):
    a parametrization (torch.nn.utils.parametrize) or the pre-hook of the old torch.nn.utils.weight_norm."""
    parametrizations = module.__dict__.get("_modules", {}).get("parametrizations")
    if parametrizations is not None:
        return " and ".join(sorted({type(p).__name__.strip("_") for plist in parametrizations.values()
                                    for p in plist}))
    old = [type(h).__name__ for h in module._forward_pre_hooks.values()
           if type(h).__name__ in ("WeightNorm", "SpectralNorm")]
    return old[0] if old else None


def _refuse_reparametrized(module: nn.Module, name: str) -> None:
    maker = _weight_maker(module)
    if maker is not None:
        raise ValueError(
            f"SAL cannot adapt {name!r}: its weight is computed by {maker} from other parameters, and SAL's rule "
            "moves the weight itself (for weight_norm, its norm is SAL's ‖w_j‖, which the rule raises "
            "towards sensitivity 1). Remove the parametrization from that layer, or leave it out: "
            "name the layers to adapt with SAL(model, layers=[...])")


def _tied(first: str, second: str) -> str:
    return (f"SAL cannot adapt {first!r} and {second!r}: they share one weight tensor (tied weights), and SAL's "
            "rule moves a weight from the neurons of one layer. Untie them, or adapt one of them: "
            f"SAL(model, layers=[{first!r}, ...])")


def _shared_or_reparametrized(chosen: dict[nn.Linear, LinearLayer], names: dict[nn.Module, str]) -> str | None:
    """The refusal for the layers SAL would adapt, if one has a computed weight or shares it."""
    owner: dict[int, nn.Linear] = {}
    for linear, unit in chosen.items():
        try:
            _refuse_reparametrized(linear, names[linear])
        except ValueError as error:
            return str(error)
        other = owner.setdefault(id(linear.weight), linear)
        if other is not linear:
            return _tied(names[other], names[linear])
    return None


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
    """For models that report their own activity (`layer_activity`). A model may also take
    `prepare_activity(read)`: whether the training passes until the next clear are read, so that it
    can ready what the reader needs while the pass runs (salrun's MLP and ElmanRNN stack what they
    record as the pass ends, `models._ReadAhead`)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._reading = False

    @property
    def reading(self) -> bool:
        return self._reading

    @reading.setter
    def reading(self, read: bool) -> None:
        self._reading = read
        prepare = getattr(self.model, "prepare_activity", None)
        if prepare is not None:
            prepare(read)

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
