"""Which Linear's output went straight into which function, read from one forward pass.

SAL's layers are (nn.Linear → tanh) pairs; `Tracer` finds them from what the
forward pass computes, never from the order the modules were declared in.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

TANH = {torch.tanh, torch.Tensor.tanh, F.tanh}
SIGMOID = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid}
SUBTRACT = {torch.sub, torch.Tensor.sub, torch.Tensor.__sub__}


class Tracer(TorchFunctionMode):
    """Watches one forward pass: which Linear's output went straight into which function.

    A TorchFunctionMode sees functional tanh (torch.tanh, F.tanh, Tensor.tanh) as well
    as nn.Tanh (which calls torch.tanh) and F.linear (which nn.Linear calls), whatever
    the forward does, with no tracing restrictions (torch.fx cannot follow a Python loop
    over time steps of data-dependent length). Tensors are matched by identity; those
    whose id it notes are kept alive for the pass, so an id is never reused."""

    def __init__(self, weights: dict[int, nn.Linear], tanhs: list[nn.Tanh], recurrent: list[nn.Module]):
        super().__init__()
        self.weights = weights
        self.linear_calls: dict[nn.Linear, list[tuple]] = {}  # per call: (x, U, o or None)
        self.made_by: dict[int, tuple[nn.Linear, int]] = {}    # id(U) -> (Linear, call index)
        self.sigmoids: dict[int, tuple[nn.Linear, int]] = {}   # id(sigmoid(U)) -> (Linear, call)
        self.pairs: list[tuple[nn.Linear, int, str, torch.Tensor]] = []  # (Linear, call, activation, o)
        self.consumers: dict[nn.Linear, str] = {}
        self.order: list[nn.Module] = []  # Linears and recurrent modules, by first call
        self.calls: dict[nn.Tanh, int] = {}  # each nn.Tanh's calls in the pass
        self.tanh_of: dict[int, nn.Tanh] = {}  # id(o) -> the nn.Tanh that made it
        self.keep: list[torch.Tensor] = []
        self._hooks = [t.register_forward_hook(self._tanh_hook) for t in tanhs]
        self._hooks += [m.register_forward_pre_hook(self._recurrent_hook) for m in recurrent]

    def _recurrent_hook(self, module, _args):
        if module not in self.order:
            self.order.append(module)

    def _tanh_hook(self, module, _args, out):
        self.calls[module] = self.calls.get(module, 0) + 1
        self.tanh_of[id(out)] = module
        self.keep.append(out)

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        first = args[0] if args else next(iter(kwargs.values()), None)
        if func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            linear = self.weights.get(id(weight))
            if linear is not None:
                calls = self.linear_calls.setdefault(linear, [])
                if not calls:
                    self.order.append(linear)
                calls.append((first, out, None))
                self.made_by[id(out)] = (linear, len(calls) - 1)
                return out
        source = self.made_by.get(id(first)) if isinstance(first, torch.Tensor) else None
        if source is not None:
            if func in TANH:
                self.pairs.append((*source, "tanh", out))
            elif func in SIGMOID:
                self.sigmoids[id(out)] = source
                self.keep.append(out)
            self.consumers.setdefault(source[0], getattr(func, "__name__", str(func)))
        elif func in SUBTRACT and id(first) in self.sigmoids and len(args) > 1 and _is_half(args[1]):
            self.pairs.append((*self.sigmoids[id(first)], "sigmoid_shifted", out))
        return out

    def pairs_by_linear(self) -> dict[nn.Linear, list[tuple[str, nn.Tanh | None]]]:
        """Per Linear, one (activation, the nn.Tanh that made o or None) per paired call;
        each call's o is filled into `linear_calls`."""
        found: dict[nn.Linear, list] = {}
        for linear, call, activation, o in self.pairs:
            x, u, _ = self.linear_calls[linear][call]
            self.linear_calls[linear][call] = (x, u, o)
            found.setdefault(linear, []).append((activation, self.tanh_of.get(id(o))))
        return found

    def consumer(self, linear: nn.Linear) -> str:
        return self.consumers.get(linear, "the model's output (or nothing that torch functions see)")

    def summary(self, names: dict[nn.Module, str]) -> list[str]:
        return [f"{names[linear]} → {self.consumer(linear)}" for linear in self.linear_calls]


def _is_half(value) -> bool:
    return isinstance(value, (int, float)) and value == 0.5
