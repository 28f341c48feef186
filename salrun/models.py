"""A deep tanh MLP and a tanh Elman RNN; settings dataclass in, tensors out.

Both report their own activity to SAL (`layer_activity`): the MLP its hidden
layers after the first as one stacked layer (their weights are one tensor),
the RNN its time steps stacked, since one weight matrix serves every step.
"""
from __future__ import annotations

import math
import typing

import torch
from torch import nn
from torch.nn import functional as F

from salrun.activity import LayerActivity, SequenceActivity, Steps, stack_kept
from salrun.settings import InitSettings, MLPSettings, RNNSettings


def init_weights_(weight: torch.Tensor, init: InitSettings, fan_in: float | None = None,
                  generator: torch.Generator | None = None) -> None:
    """Random weights whose rows have an expected norm of `init.scale`."""
    fan_in = fan_in if fan_in is not None else weight.shape[1]
    with torch.no_grad():
        if init.distribution == "uniform":
            bound = init.scale * math.sqrt(3.0 / max(fan_in, 1))
            weight.uniform_(-bound, bound, generator=generator)
        else:
            weight.normal_(0.0, init.scale / math.sqrt(max(fan_in, 1)), generator=generator)


def init_bias_(bias: torch.Tensor, init: InitSettings, generator: torch.Generator | None = None) -> None:
    with torch.no_grad():
        if init.bias_scale == 0:
            bias.zero_()
        elif init.distribution == "uniform":
            bias.uniform_(-init.bias_scale, init.bias_scale, generator=generator)
        else:
            bias.normal_(0.0, init.bias_scale, generator=generator)


class LayerView(typing.NamedTuple):
    """One layer of the MLP as views of its stacked parameters: reading and writing them in place
    (`weight.mul_`, an init) moves the model's numbers; calling it is F.linear. No gradient flows
    through a view: `MLP.weight_grads()` gives each layer's gradient."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _ReadAhead:
    """A model that reports its own activity and stacks it for its reader (SAL's step): when the next
    training pass is read (`prepare_activity`), the pass stacks what it recorded as it ends, while that
    is in cache; the same stack at SAL's step, after the backward, cost 2-4x as much (paper_deep_ffn)."""

    _activity_read = False  # the next training pass is read: it stacks as it ends
    _block: torch.Tensor | None = None  # the recorded pass stacked, kept for the next stack (stack_kept)
    _stacked = False  # _block holds the recorded pass

    def prepare_activity(self, read: bool) -> None:
        """Whether the training passes until the next clear_activity are read (by SAL's next step)."""
        self._activity_read = read

    def _stack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The recorded pass as one block: stacked once per pass, into storage kept from pass to pass."""
        if not self._stacked:
            with torch.no_grad():
                self._block = stack_kept(tensors, self._block)
            self._stacked = True
        return self._block

    def __getstate__(self):
        """Copies and pickles (deepcopy, AveragedModel) carry no stack, and nobody reads theirs."""
        return {**super().__getstate__(), "_activity_read": False, "_block": None, "_stacked": False}


class MLP(_ReadAhead, nn.Module):
    """`depth` hidden tanh layers of `width` neurons and a linear readout.

    The hidden layers after the first are one (depth-1, width, width) weight `w_hidden` and one
    (depth-1, width) bias `b_hidden`; the first layer (`w_first`, `b_first`, its fan-in the
    input's) and the readout (`w_out`, `b_out`) stand apart. Six tensors in all, whatever the
    depth: the optimizer runs over six, and SAL updates the stack with batched operations
    (`layer_activity` reports it as one stacked layer). `linears()` gives per-layer views.
    The names are those of the ensemble's `salrun.ensemble.StackedMLP`, less its member dimension.
    """

    def __init__(self, input_size: int, output_size: int, settings: MLPSettings,
                 generator: torch.Generator | None = None):
        super().__init__()
        n, depth = settings.width, settings.depth
        self.settings = settings
        self.w_first, self.b_first = nn.Parameter(torch.empty(n, input_size)), nn.Parameter(torch.empty(n))
        self.w_hidden = nn.Parameter(torch.empty(depth - 1, n, n))
        self.b_hidden = nn.Parameter(torch.empty(depth - 1, n))
        self.w_out, self.b_out = nn.Parameter(torch.empty(output_size, n)), nn.Parameter(torch.empty(output_size))
        layers = self.linears()
        for layer in layers:
            _torch_linear_draws(layer)
        for layer in layers:
            init_weights_(layer.weight, settings.init, generator=generator)
            init_bias_(layer.bias, settings.init, generator=generator)
        self._inputs: list[torch.Tensor] = []
        self._outputs: list[list[torch.Tensor]] = []
        self._names = tuple(f"hidden.{k}" for k in range(1, depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        h = torch.tanh(torch.addmm(self.b_first, rows, self.w_first.T))
        outputs = [h]
        # Unbind once (w_hidden[k] per layer would put a select per layer in the backward), and the
        # transposes with it: addmm on them skips F.linear's transpose per layer (measured ≈ 9% of
        # a depth-300 width-32 step).
        for w_t, b in zip(self.w_hidden.mT.unbind(0), self.b_hidden.unbind(0)):
            h = torch.tanh(torch.addmm(b, h, w_t))
            outputs.append(h)
        if self.training:  # kept as made (no copy, no per-layer detach)
            self._inputs.append(rows)
            self._outputs.append(outputs)
            if self._activity_read and len(self._outputs) == 1:  # stacked while in cache (_ReadAhead)
                self._stack(outputs)
        return torch.addmm(self.b_out, h, self.w_out.T).reshape(*x.shape[:-1], -1)

    def linears(self) -> list[LayerView]:
        """Every layer, the readout last, as views of the stacked parameters."""
        hidden = [LayerView(w, b) for w, b in zip(self.w_hidden.detach().unbind(0), self.b_hidden.detach().unbind(0))]
        return [LayerView(self.w_first.detach(), self.b_first.detach()), *hidden,
                LayerView(self.w_out.detach(), self.b_out.detach())]

    def hidden_linears(self) -> list[LayerView]:
        return self.linears()[:-1]

    def weight_grads(self) -> list[torch.Tensor | None]:
        """∂L/∂W of each layer (readout last), views of the stacked gradients; None where there is none."""
        hidden = self.w_hidden.grad
        return [self.w_first.grad, *(hidden.unbind(0) if hidden is not None else [None] * self.w_hidden.shape[0]),
                self.w_out.grad]

    @torch.no_grad()
    def layer_activity(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        """The first layer, then the other hidden layers as one stacked layer (x_l = o_{l-1}: one
        stack of every layer's output serves as both), then the readout if asked. Valid until the
        next training forward, whose stack reuses the block's storage (`stack_kept`)."""
        if not self._outputs:
            return []
        if len(self._outputs) == 1:
            chain = self._stack(self._outputs[0])  # (depth, rows, width)
        else:
            chain = torch.cat([torch.stack(outputs) for outputs in self._outputs], 1)
        x = self._inputs[0].detach() if len(self._inputs) == 1 else torch.cat(self._inputs).detach()
        layers = [LayerActivity([self.w_first], [x], chain[0], self.b_first, "tanh", [None], "hidden.0")]
        if self._names:
            layers.append(LayerActivity([self.w_hidden], [chain[:-1]], chain[1:], self.b_hidden, "tanh", [None],
                                        f"hidden.1-{len(self._names)}", names=self._names))
        if include_output:
            last = chain[-1]
            layers.append(LayerActivity([self.w_out], [last], F.linear(last, self.w_out, self.b_out), self.b_out,
                                        "linear", [None], "readout"))
        return layers

    def clear_activity(self) -> None:
        self._inputs, self._outputs, self._stacked = [], [], False

    def __getstate__(self):
        """Copies and pickles (deepcopy, AveragedModel) carry no recorded activity."""
        return {**super().__getstate__(), "_inputs": [], "_outputs": []}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _unstacked_to_stacked(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _torch_linear_draws(layer: LayerView) -> None:
    """The draws of nn.Linear's own init (its reset_parameters), from torch's global RNG, which the
    MLP once built of nn.Linear modules made: the init overwrites the values, but the global
    stream that later draws (orthogonal, critical) read is then the same as before."""
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(layer.weight.shape[1]) if layer.weight.shape[1] > 0 else 0
    nn.init.uniform_(layer.bias, -bound, bound)


def _unstacked_to_stacked(state: dict, prefix: str) -> None:
    """A state_dict of the MLP before its hidden layers were stacked (an nn.Sequential: `0.weight`,
    `2.weight`, …, the readout last), rewritten in place under the stacked names."""
    old = sorted(int(key[len(prefix):].split(".")[0]) for key in state
                 if key.startswith(prefix) and key[len(prefix):].split(".")[0].isdigit() and key.endswith(".weight"))
    if not old:
        return
    weights = [state.pop(f"{prefix}{k}.weight") for k in old]
    biases = [state.pop(f"{prefix}{k}.bias") for k in old]
    state[f"{prefix}w_first"], state[f"{prefix}b_first"] = weights[0], biases[0]
    state[f"{prefix}w_out"], state[f"{prefix}b_out"] = weights[-1], biases[-1]
    n = weights[-1].shape[1]
    state[f"{prefix}w_hidden"] = torch.stack(weights[1:-1]) if len(old) > 2 else weights[0].new_empty(0, n, n)
    state[f"{prefix}b_hidden"] = torch.stack(biases[1:-1]) if len(old) > 2 else biases[0].new_empty(0, n)


class ElmanRNN(_ReadAhead, nn.Module):
    """h_t = tanh(W_ih x_t + W_hh h_{t-1} + θ), h_{-1} = 0; output read from the last state.

    `density` < 1 keeps a fixed random fraction of the recurrent weights
    (the others are zero forever; SAL and the optimizer respect the mask).
    """

    def __init__(self, input_size: int, output_size: int, settings: RNNSettings,
                 generator: torch.Generator | None = None):
        super().__init__()
        n = settings.hidden
        self.settings = settings
        self.weight_ih = nn.Parameter(torch.empty(n, input_size))
        self.weight_hh = nn.Parameter(torch.empty(n, n))
        self.bias = nn.Parameter(torch.empty(n))
        self.readout = nn.Linear(n, output_size)
        mask = (torch.rand(n, n, generator=generator) < settings.density).float()
        self.register_buffer("mask", mask if settings.density < 1 else None)
        input_init = InitSettings(settings.init.distribution, settings.input_scale, 0.0)
        init_weights_(self.weight_ih, input_init, generator=generator)
        init_weights_(self.weight_hh, settings.init, fan_in=n * settings.density, generator=generator)
        init_bias_(self.bias, settings.init, generator=generator)
        init_weights_(self.readout.weight, settings.init, generator=generator)
        init_bias_(self.readout.bias, settings.init, generator=generator)
        self.apply_mask_()
        self.read_steps = 1  # > 1: the readout of each of the last read_steps states (copy memory)
        self._inputs: torch.Tensor | None = None
        self._states: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None

    @torch.no_grad()
    def apply_mask_(self) -> None:
        if self.mask is not None:
            self.weight_hh.mul_(self.mask)

    def recurrent_weight(self) -> torch.Tensor:
        return self.weight_hh if self.mask is None else self.weight_hh * self.mask

    def run(self, x: torch.Tensor, h: torch.Tensor | None = None, keep_state_grads: bool = False) -> list[torch.Tensor]:
        """States h_0 … h_{T-1} for inputs x of shape (T, batch, inputs)."""
        w_hh = self.recurrent_weight()
        drive = torch.nn.functional.linear(x, self.weight_ih, self.bias)  # all steps in one matmul
        if h is None:
            h = x.new_zeros(x.shape[1], self.settings.hidden)
        states = [h]
        # unbind once: the backward of each drive[t] would be a select writing a full-size
        # zero tensor per step (O(T²) memory traffic); unbind's backward stacks once.
        for drive_t in drive.unbind(0):
            h = torch.tanh(torch.addmm(drive_t, h, w_hh.T))
            if keep_state_grads and h.requires_grad:
                h.retain_grad()
            states.append(h)
        if self.training:
            self._inputs = x.detach()
            self._states = states
            self._stacked = False
            if self._activity_read:  # stacked while in cache (_ReadAhead)
                self._stack(states)
        return states[1:]

    def forward(self, x: torch.Tensor, keep_state_grads: bool = False) -> torch.Tensor:
        """The readout of the last state (batch, outputs); with read_steps > 1, of each of
        the last read_steps states (read_steps, batch, outputs)."""
        states = self.run(x, keep_state_grads=keep_state_grads)
        last = states[-1]
        if self.training:
            self._last = last.detach()
        if self.read_steps > 1:
            return self.readout(torch.stack(states[-self.read_steps:]))
        return self.readout(last)

    def recorded_states(self) -> list[torch.Tensor]:
        """h_0 … h_{T-1} of the last training forward (with their .grad if kept)."""
        return self._states[1:]

    def layer_activity(self, include_output: bool = False, rnn_inputs: str = "all") -> list[LayerActivity]:
        """The recurrent layer, its steps stacked (valid until the next training forward, whose stack
        reuses the block's storage: `stack_kept`), then the readout if asked."""
        if self._inputs is None:
            return []
        # one copy of the states, h_{-1} first (a detach per state cost more: 300 ops)
        states = Steps.block(self._stack(self._states))
        if rnn_inputs == "all":
            weights, drive, masks = [self.weight_ih, self.weight_hh], self._inputs, [None, self.mask]
        else:
            weights, drive, masks = [self.weight_hh], None, [self.mask]
        layers: list[LayerActivity] = [SequenceActivity(weights, states, drive, self.bias, "tanh", masks, "recurrent")]
        if include_output and self._last is not None:
            readout = self.readout
            layers.append(LayerActivity([readout.weight], [self._last], readout(self._last).detach(),
                                        readout.bias, "linear", [None], "readout"))
        return layers

    def clear_activity(self) -> None:
        self._inputs, self._states, self._last, self._stacked = None, [], None, False
