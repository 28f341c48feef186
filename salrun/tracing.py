"""Which Linear's output went straight into which function, read from one forward pass.

SAL's layers are (nn.Linear → tanh) pairs; `Tracer` finds them from what the
forward pass computes, never from the order the modules were declared in, and
the same way in training and in eval mode: a dropout with p > 0 between a
Linear and its tanh breaks the pair in both (in eval it returns its input, in
training a new tensor).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

TANH = {torch.tanh, torch.Tensor.tanh, F.tanh}
SIGMOID = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid}
SUBTRACT = {torch.sub, torch.Tensor.sub, torch.Tensor.__sub__}
DROPOUT = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
           torch.dropout, torch.alpha_dropout, torch.feature_dropout, torch.feature_alpha_dropout}
REFLECTED = {"add", "sub", "mul", "truediv", "matmul", "pow"}  # Tensor.__radd__ … names the add


class Tracer(TorchFunctionMode):
    """Watches one forward pass: which Linear's output went straight into which function.

    A TorchFunctionMode sees functional tanh (torch.tanh, F.tanh, Tensor.tanh) as well
    as nn.Tanh (which calls torch.tanh) and F.linear (which nn.Linear calls), whatever
    the forward does, with no tracing restrictions (torch.fx cannot follow a Python loop
    over time steps of data-dependent length). Tensors are matched by identity; those
    whose id it notes are kept alive for the pass, so an id is never reused.

    An F.linear call made inside an nn.Linear's forward is that module's call, whatever
    its weight is (a weight computed by a parametrization, or one tensor shared by two
    modules); one made elsewhere with a module's weight is noted as functional (`functional`):
    SAL's hooks, which record the later passes, would not see it."""

    def __init__(self, linears: list[nn.Linear], tanhs: list[nn.Tanh], recurrent: list[nn.Module]):
        super().__init__()
        self.weights = {id(m._parameters["weight"]): m for m in linears if "weight" in m._parameters}
        self.linear_calls: dict[nn.Linear, list[tuple]] = {}  # per call: (x, U, o or None)
        self.made_by: dict[int, tuple[nn.Linear, int]] = {}    # id(U) -> (Linear, call index)
        self.sigmoids: dict[int, tuple[nn.Linear, int]] = {}   # id(sigmoid(U)) -> (Linear, call)
        self.pairs: list[tuple[nn.Linear, int, str, torch.Tensor]] = []  # (Linear, call, activation, o)
        self.consumers: dict[nn.Linear, str] = {}
        self.dropouts: dict[int, nn.Linear] = {}  # id(dropout(U)) -> the Linear that made U
        self.dropped: set[nn.Linear] = set()  # Linears whose output went through dropout into tanh
        self.functional: set[nn.Linear] = set()  # Linears whose weight F.linear used outside their forward
        self.order: list[nn.Module] = []  # Linears and recurrent modules, by first call
        self.calls: dict[nn.Tanh, int] = {}  # each nn.Tanh's calls in the pass
        self.tanh_of: dict[int, nn.Tanh] = {}  # id(o) -> the nn.Tanh that made it
        self.keep: list[torch.Tensor] = []
        self._running: list[nn.Linear] = []  # the nn.Linear modules whose forward is running
        self._hooks = [t.register_forward_hook(self._tanh_hook) for t in tanhs]
        self._hooks += [m.register_forward_pre_hook(self._recurrent_hook) for m in recurrent]
        for m in linears:
            self._hooks += [m.register_forward_pre_hook(self._enter_linear),
                            m.register_forward_hook(self._leave_linear, always_call=True)]

    def _enter_linear(self, module, _args):
        self._running.append(module)

    def _leave_linear(self, module, _args, _out):
        if self._running and self._running[-1] is module:
            self._running.pop()

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
            linear = self._running[-1] if self._running else None
            if linear is None:
                weight = args[1] if len(args) > 1 else kwargs.get("weight")
                if id(weight) in self.weights:
                    self.functional.add(self.weights[id(weight)])
                return out
            calls = self.linear_calls.setdefault(linear, [])
            if not calls:
                self.order.append(linear)
            calls.append((first, out, None))
            self.made_by[id(out)] = (linear, len(calls) - 1)
            return out
        source = self._source(args, kwargs)
        if source is not None:
            if func in TANH and source[2] is first:
                self.pairs.append((*source[:2], "tanh", out))
            elif func in SIGMOID and source[2] is first:
                self.sigmoids[id(out)] = source[:2]
                self.keep.append(out)
            elif func in DROPOUT and source[2] is first and _dropout_p(args, kwargs) > 0:
                if out is first:
                    # eval mode: dropout returned U itself. Hand on a view, a tensor other than U, as
                    # training mode would: the tanh after it sees a dropped U, not U.
                    out = out.view_as(out)
                self.dropouts[id(out)] = source[0]
                self.keep.append(out)
            self.consumers.setdefault(source[0], _function_name(func))
        elif func in TANH and id(first) in self.dropouts:
            self.dropped.add(self.dropouts[id(first)])
        elif func in SUBTRACT and id(first) in self.sigmoids and len(args) > 1 and _is_half(args[1]):
            self.pairs.append((*self.sigmoids[id(first)], "sigmoid_shifted", out))
        return out

    def _source(self, args, kwargs) -> tuple[nn.Linear, int, torch.Tensor] | None:
        """(Linear, call, U) for the first argument that is some Linear's output U."""
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor):
                source = self.made_by.get(id(value))
                if source is not None:
                    return (*source, value)
            elif isinstance(value, (list, tuple)):  # torch.cat([U, …]), torch.stack
                for item in value:
                    if isinstance(item, torch.Tensor) and id(item) in self.made_by:
                        return (*self.made_by[id(item)], item)
        return None

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


def _function_name(func) -> str:
    """`add` for Tensor.__add__, Tensor.__radd__ and torch.add; `dropout` for F.dropout."""
    name = getattr(func, "__name__", str(func)).strip("_")
    reflected = name.removeprefix("r")
    return reflected if name.startswith("r") and reflected in REFLECTED else name


def _dropout_p(args, kwargs) -> float:
    p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
    return float(p) if isinstance(p, (int, float)) else 1.0


def _is_half(value) -> bool:
    return isinstance(value, (int, float)) and value == 0.5
