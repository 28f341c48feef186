"""A deep tanh MLP and a tanh Elman RNN; settings dataclass in, tensors out.

The MLP is a plain Linear → Tanh stack, so SAL sees into it with hooks like
any user model. The RNN reports its own activity with the time steps
stacked (`layer_activity`), since one weight matrix serves every step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from salrun.activity import LayerActivity, SequenceActivity
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


def _share_storage(params: list[nn.Parameter]) -> None:
    """Make equal-shaped parameters consecutive slices of one tensor (values kept).

    Each stays its own Parameter (optimizers, state_dict and hooks see no
    change), but SAL can then update a whole stack of layers with a few
    batched operations on a strided view instead of a loop over layers.
    """
    if len(params) < 2:
        return
    block = torch.stack([p.detach() for p in params])
    for p, view in zip(params, block):
        p.data = view


class MLP(nn.Sequential):
    """`depth` hidden tanh layers of `width` neurons and a linear readout."""

    def __init__(self, input_size: int, output_size: int, settings: MLPSettings,
                 generator: torch.Generator | None = None):
        layers: list[nn.Module] = []
        size = input_size
        for _ in range(settings.depth):
            layers += [nn.Linear(size, settings.width), nn.Tanh()]
            size = settings.width
        layers.append(nn.Linear(size, output_size))
        super().__init__(*layers)
        self.settings = settings
        self._share_hidden_storage()
        for linear in self.linears():
            init_weights_(linear.weight, settings.init, generator=generator)
            init_bias_(linear.bias, settings.init, generator=generator)

    def _share_hidden_storage(self) -> None:
        hidden = self.hidden_linears()
        _share_storage([m.weight for m in hidden[1:]])
        _share_storage([m.bias for m in hidden])

    def _apply(self, fn, *args, **kwargs):
        """Conversions (.to, .double) replace every parameter's data; share it again."""
        result = super()._apply(fn, *args, **kwargs)
        self._share_hidden_storage()
        return result

    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    def hidden_linears(self) -> list[nn.Linear]:
        return self.linears()[:-1]


class ElmanRNN(nn.Module):
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
        if self._inputs is None:
            return []
        detached = [h.detach() for h in self._states]  # views, not copies
        if rnn_inputs == "all":
            weights, drive, masks = [self.weight_ih, self.weight_hh], self._inputs, [None, self.mask]
        else:
            weights, drive, masks = [self.weight_hh], None, [self.mask]
        layers: list[LayerActivity] = [SequenceActivity(weights, detached, drive, self.bias, "tanh", masks, "recurrent")]
        if include_output and self._last is not None:
            readout = self.readout
            layers.append(LayerActivity([readout.weight], [self._last], readout(self._last).detach(),
                                        readout.bias, "linear", [None], "readout"))
        return layers

    def clear_activity(self) -> None:
        self._inputs, self._states, self._last = None, [], None
