"""Members as a batch dimension (README.md, "Ensembles"): S models of one shape stacked along a
leading member dimension, with the optimizer and SAL batched over it.

`stack_models` stacks S salrun MLPs or ElmanRNNs (built and initialised as their single runs
build them); a step is then one batched forward and backward (baddbmm), one `BatchedOptimizer`
step (Adam or SGD, as torch's) and one `BatchedSAL` update (sal.py's rule), with every
per-member setting (the optimizer's lr and momentum in `MemberRates`, SAL's in a `salrun.rule.Rule`) a
tensor of S values. Members share no arithmetic: every op is batched over the member
dimension or runs in blocks of members (SAL's sums and products: member by member on a CPU, so
that a member's block of activity stays in cache through them; all at once on a GPU), never reduced across it, so a member zeroed out
(frozen) costs the others nothing.
salrun.engines.StackedEngine drives them for the one training loop (salrun.training.Run).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from salrun.activity import Kept, stack_kept
from salrun.models import MLP, ElmanRNN
from salrun.neurons import log_sensitivity
from salrun.rule import Rule

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the single run uses


def per_member(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(S,) values shaped to broadcast over a stacked tensor (S, …)."""
    return values.reshape(-1, *[1] * (like.dim() - 1))


class StackedMLP(nn.Module):
    """S MLPs of one shape: the first layer (S, width, in), the equal hidden layers
    (S, depth-1, width, width), the readout (S, out, width); inputs (S, batch, in)."""

    NAMES = ("w_first", "b_first", "w_hidden", "b_hidden", "w_out", "b_out")  # the single MLP's, member-first

    def __init__(self, members: list[MLP]):
        super().__init__()
        for name in self.NAMES:
            setattr(self, name, nn.Parameter(torch.stack([getattr(m, name).detach() for m in members]).clone()))
        self.outputs: list[torch.Tensor] = []
        self.inputs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.baddbmm(self.b_first[:, None], x, self.w_first.mT))
        outputs = [h]
        # unbind once (not w_hidden[:, l] per layer: a select per layer in the backward)
        for w, b in zip(self.w_hidden.unbind(1), self.b_hidden.unbind(1)):
            h = torch.tanh(torch.baddbmm(b[:, None], h, w.mT))
            outputs.append(h)
        if self.training:
            self.inputs, self.outputs = x.detach(), [o.detach() for o in outputs]
        return torch.baddbmm(self.b_out[:, None], h, self.w_out.mT)

    def member_views(self, s: int, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Member s's slices of `tensors` (laid out like this model's parameters, by their names:
        the parameters, or an optimizer's state) under the names of its single MLP's parameters."""
        return {name: tensor[s] for name, tensor in tensors.items()}

    def grad_norms(self) -> torch.Tensor:
        """‖∂L/∂W‖ of each Linear, (S, depth + 1)."""
        hidden = self.w_hidden.grad.flatten(2).norm(dim=2)
        return torch.cat([self.w_first.grad.flatten(1).norm(dim=1)[:, None], hidden,
                          self.w_out.grad.flatten(1).norm(dim=1)[:, None]], 1)

    def sensitivities(self) -> torch.Tensor:
        """s_j of every hidden neuron of the last training forward, (S, depth, batch, width)."""
        norms = torch.cat([self.w_first.norm(dim=2)[:, None], self.w_hidden.norm(dim=3)], 1)
        o = torch.stack(self.outputs, 1)
        return (1 - o * o) * norms[:, :, None, :]


class StackedRNN(nn.Module):
    """S Elman RNNs of one shape; inputs (S, time, batch, in). Masks are per member."""

    def __init__(self, members: list[ElmanRNN]):
        super().__init__()

        def stack(get):
            return nn.Parameter(torch.stack([get(m).detach() for m in members]).clone())

        self.weight_ih, self.weight_hh = stack(lambda m: m.weight_ih), stack(lambda m: m.weight_hh)
        self.bias = stack(lambda m: m.bias)
        self.w_out, self.b_out = stack(lambda m: m.readout.weight), stack(lambda m: m.readout.bias)
        masked = members[0].mask is not None
        self.register_buffer("mask", torch.stack([m.mask for m in members]) if masked else None)
        self.read_steps = members[0].read_steps
        self.states: list[torch.Tensor] = []
        self.block: torch.Tensor | None = None
        self.inputs: torch.Tensor | None = None

    def recurrent_weight(self) -> torch.Tensor:
        return self.weight_hh if self.mask is None else self.weight_hh * self.mask

    def forward(self, x: torch.Tensor, keep_state_grads: bool = False) -> torch.Tensor:
        """x (S, time, batch, in). The drive is computed time-major, so that unbind(0) and its
        backward (one stack) move contiguous blocks; the states are copied, as the loop makes
        them, into one member-major block that SAL reads without stacking them."""
        w_hh = self.recurrent_weight().mT
        drive = torch.matmul(x.transpose(0, 1), self.weight_ih.mT) + self.bias[:, None]  # (time, S, batch, n)
        h = x.new_zeros(x.shape[0], x.shape[2], self.weight_hh.shape[1])
        record = self.training
        block = x.new_empty(x.shape[0], x.shape[1] + 1, *h.shape[1:]) if record else None
        if record:
            block[:, 0] = 0  # h_{-1}; the loop writes the rest (a zero fill of the whole block costs a pass)
        states = [h]
        for t, drive_t in enumerate(drive.unbind(0), 1):
            h = torch.tanh(torch.baddbmm(drive_t, h, w_hh))
            if keep_state_grads and h.requires_grad:
                h.retain_grad()
            if record:
                block[:, t].copy_(h.detach())
            states.append(h)
        if record:
            self.inputs, self.states, self.block = x.detach(), states, block
        if self.read_steps > 1:
            read = torch.stack(states[-self.read_steps:], 1)  # (S, read, batch, hidden)
            return torch.matmul(read, self.w_out.mT[:, None]) + self.b_out[:, None, None]
        return torch.baddbmm(self.b_out[:, None], h, self.w_out.mT)

    NAMES = {"weight_ih": "weight_ih", "weight_hh": "weight_hh", "bias": "bias", "w_out": "readout.weight",
             "b_out": "readout.bias", "mask": "mask"}

    def member_views(self, s: int, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """As StackedMLP.member_views, under the names of a single ElmanRNN's."""
        return {self.NAMES[name]: tensor[s] for name, tensor in tensors.items() if tensor is not None}

    def apply_mask_(self) -> None:
        if self.mask is not None:
            with torch.no_grad():
                self.weight_hh.mul_(self.mask)


def stack_models(models: list[nn.Module]) -> StackedMLP | StackedRNN:
    kinds = {type(m) for m in models}
    if kinds == {MLP}:
        return StackedMLP(models)
    if kinds == {ElmanRNN}:
        return StackedRNN(models)
    raise TypeError(f"an ensemble stacks salrun MLPs or ElmanRNNs of one kind, got {sorted(k.__name__ for k in kinds)}")


@dataclass
class MemberRates:
    """The batched optimizer's per-member settings, (S,) each."""

    lr: torch.Tensor
    momentum: torch.Tensor

    def freeze(self, s: int) -> None:
        self.lr[s] = 0


class BatchedOptimizer:
    """torch.optim.Adam / SGD (their defaults otherwise) over stacked tensors, with a
    learning rate (and SGD momentum) per member. While every member has the same ones, torch's
    own fused optimizer runs over the stacked tensors (one kernel instead of ≈ 8 passes); once
    they differ (given so, or a member frozen) the per-member update below takes over its state."""

    def __init__(self, params: list[nn.Parameter], name: str, rates: MemberRates, clip: float):
        self.params, self.name, self.rates, self.clip = params, name, rates, clip
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]  # m, v (Adam) or buffer (SGD)
        self.shared = self._shared_optimizer()

    def _shared_optimizer(self) -> torch.optim.Optimizer | None:
        lr, momentum = self.rates.lr, self.rates.momentum
        if not (bool((lr == lr[0]).all()) and bool((momentum == momentum[0]).all())):
            return None
        fused = all(p.device.type in ("cpu", "cuda") for p in self.params)
        if self.name == "adam":
            return torch.optim.Adam(self.params, lr=float(lr[0]), fused=fused)
        return torch.optim.SGD(self.params, lr=float(lr[0]), momentum=float(momentum[0]), fused=fused)

    def states(self) -> list[dict[str, torch.Tensor]]:
        """Each parameter's state under this class's keys (m and v, or buffer), wherever it lives."""
        if self.shared is None:
            return self.state
        names = {"exp_avg": "m", "exp_avg_sq": "v", "momentum_buffer": "buffer"}
        return [{names[key]: value for key, value in self.shared.state.get(p, {}).items()
                 if key in names and value is not None} for p in self.params]

    def _unshare(self) -> None:
        if self.shared is not None:
            self.state, self.shared = self.states(), None

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.clip > 0:  # clip_grad_norm_ per member: the norm over all of that member's gradients
            total = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
            scale = (self.clip / (total + 1e-6)).clamp(max=1.0)
            # in place, as clip_grad_norm_ does: a scaled copy of the stacked gradients is a fresh block
            # of their size at every step (20 MB at 16 members of paper_deep_ffn), its pages faulted in
            for g in grads:
                g.mul_(_expand(scale, g))
        self.steps += 1
        if self.shared is not None:
            for p, g in zip(self.params, grads):
                p.grad = g
            self.shared.step()
            return
        for p, g, state in zip(self.params, grads, self.state):
            lr = _expand(self.rates.lr, p)
            if self.name == "sgd":
                if "buffer" in state:
                    state["buffer"].mul_(_expand(self.rates.momentum, p)).add_(g)
                else:
                    state["buffer"] = g.clone()
                p.sub_(lr * state["buffer"])
                continue
            (beta1, beta2), t = ADAM_BETAS, self.steps
            if not state:
                state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            m, v = state["m"], state["v"]
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(ADAM_EPS)
            p.sub_((lr / (1 - beta1 ** t)) * m / denom)

    def set_lr(self, lr: torch.Tensor) -> None:
        """Each member's learning rate for the next steps (a schedule's)."""
        self.rates.lr.copy_(lr)
        if self.shared is not None:  # shared only while every member's rate is the same
            for group in self.shared.param_groups:
                group["lr"] = float(lr[0])

    def reset_member(self, s: int) -> None:
        """After its rates were set to 0: a frozen member's state is zeroed."""
        self._unshare()
        for state in self.state:
            for value in state.values():
                value[s] = 0


class BatchedSAL:
    """SAL (objective log, tanh, hidden layers only) over members: the rule of salrun.rule, with
    SAL's rate, target, gate, band and β one value per member."""

    def __init__(self, model: StackedMLP | StackedRNN, rule: Rule, rnn_inputs: str = "all"):
        self.model, self.rule, self.rnn_inputs = model, rule, rnn_inputs
        self.averages: list[torch.Tensor | None] = []
        # The MLP's stacked outputs and the temporaries of their size, kept from step to step: fresh
        # blocks of 20 MB (16 members of paper_deep_ffn) faulted their pages in at every step, which
        # cost more than the arithmetic (stack 12 ms, o·o 11 ms, of a 41 ms step of SAL's).
        self._chain: torch.Tensor | None = None
        self._kept = Kept()

    def _rate(self, index: int, mean_s: torch.Tensor) -> torch.Tensor:
        """Update s̄ of block `index` ((S, …, neurons)) from this batch's mean; returns η·g."""
        if index == len(self.averages):
            self.averages.append(mean_s.clone())
        else:
            self.rule.blend_(self.averages[index], mean_s)
        return self.rule.rate(self.averages[index])

    def _apply(self, weights: list[torch.Tensor], data: list[torch.Tensor], bias: torch.Tensor, sum_o: torch.Tensor,
               rows: int, step: torch.Tensor, norm_sq: torch.Tensor, mean_s: torch.Tensor,
               masks: list[torch.Tensor | None]) -> None:
        """W ← (1 + η g/‖w‖²)·W + c·(oᵀx), θ ← θ + c·Σ_rows o, with c = -2·η g/rows per neuron;
        `data` holds each oᵀx and sum_o Σ_rows o. c scales the rows of oᵀx, not o itself: no
        temporary of o's size (an RNN's o holds every step of every member)."""
        radial = self.rule.radial(step, norm_sq, mean_s).unsqueeze(-1)
        c = step * (-2.0 / rows)
        for w, d, mask in zip(weights, data, masks):
            d = d.mul_(c.unsqueeze(-1))
            if mask is None:
                w.mul_(1 + radial).add_(d)
            else:
                w.add_((w * radial).add_(d).mul_(mask))
        bias.add_(sum_o.mul_(c))

    def _mean_slope(self, o: torch.Tensor) -> torch.Tensor:
        """mean over rows of f'(U) = 1 - o², a sum of o·o along the rows, o·o in kept memory; a norm
        along the rows makes no temporary, but torch's norm over a dimension that is not the last is
        10x slower (measured at 16 members of paper_deep_ffn: 19 ms against 1.9 for the (299, 16, 32, 32) chain)."""
        return 1 - torch.mul(o, o, out=self._kept.like(o)).sum(-2) / o.shape[-2]

    @staticmethod
    def _blocks(members: int, like: torch.Tensor) -> list[slice]:
        """The members whose sums and products run together: one at a time on a CPU, so that a member's
        block of activity stays in cache through them (over all members at once the 20 MB of 16
        members of paper_deep_ffn were read from memory at each pass); all at once elsewhere (a GPU),
        where a step costs its count of kernel launches (member by member, 256 members' SAL was some
        3,000 launches a step)."""
        size = 1 if like.device.type == "cpu" else members
        return [slice(start, start + size) for start in range(0, members, size)]

    def _hidden_step(self, model: StackedMLP) -> None:
        """The equal hidden layers, in blocks of members (`_blocks`), as the single SAL updates a stack
        (`SAL._group_step`): a member's outputs (depth, rows, width) are one block of a member-major
        stack, its o_l and x_l = o_{l-1} views of it, and it moves by one baddbmm into the member's
        (contiguous) weights; a block of several members by one batched matmul."""
        chain = self._chain = stack_kept(model.outputs, self._chain, dim=1)  # (S, depth, rows, width)
        w, bias = model.w_hidden, model.b_hidden                            # (S, L, n, n), (S, L, n)
        rows = chain.shape[-2]
        norm = torch.linalg.vector_norm(w, dim=-1)
        blocks = self._blocks(len(chain), chain)
        mean_s = torch.cat([self._mean_slope(chain[block, 1:]) for block in blocks]) * norm
        step = self._rate(1, mean_s)
        scale = self.rule.radial(step, norm * norm, mean_s).add_(1).unsqueeze(-1)  # w <- (1 + radial)·w + …
        c = step * (-2.0 / rows)
        for block in blocks:
            members, o = chain[block], chain[block, 1:]
            a = torch.mul(o, c[block, :, None, :], out=self._kept.like(o))
            if len(members) == 1:
                w[block][0].mul_(scale[block][0]).baddbmm_(a[0].mT, members[0, :-1])
            else:  # x = members[:, :-1] is not one (S·L, rows, n) view: a 4-D product, then the add
                w[block].mul_(scale[block]).add_(torch.matmul(a.mT, members[:, :-1]))
            bias[block].add_(a.sum(-2))

    def _member_sums(self, o: torch.Tensor, inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor,
                                                                                  torch.Tensor]:
        """Each oᵀx, Σ_rows o and Σ_rows o² of (S, rows, n) blocks, in blocks of members (`_blocks`):
        on a CPU one member's block (an RNN's every step) stays in cache through its four
        reductions, where four reductions over all members' blocks read them from memory four
        times (measured at 16 members of paper_long_lag: 8 ms against 15). xᵀo is transposed rather
        than oᵀx computed: for a one-wide input that is a matrix-vector product, which bmm runs slowly.
        Σ o² is a sum of o·o in kept memory, as the single SAL takes it: the diagonal of oᵀo is a
        matmul (250 µs against 45 for one member of paper_long_lag), a norm over rows is slower still."""
        data, sums, squares = [[] for _ in inputs], [], []
        for block in self._blocks(len(o), o):
            part = o[block]
            for found, x in zip(data, inputs):
                found.append((x[block].mT @ part).mT)
            sums.append(part.sum(-2))
            squares.append(torch.mul(part, part, out=self._kept.like(part)).sum(-2))
        return [torch.cat(found) for found in data], torch.cat(sums), torch.cat(squares)

    @torch.no_grad()
    def step(self) -> None:
        model = self.model
        if isinstance(model, StackedMLP):
            o, x = model.outputs[0], model.inputs  # the first layer: (S, rows, width), (S, rows, inputs)
            norm = torch.linalg.vector_norm(model.w_first, dim=-1)
            mean_s = self._mean_slope(o) * norm
            step = self._rate(0, mean_s)
            self._apply([model.w_first], [torch.matmul(o.mT, x)], model.b_first, o.sum(-2), o.shape[-2], step,
                        norm * norm, mean_s, [None])
            if model.w_hidden.shape[1] > 0:
                self._hidden_step(model)
        else:
            chain = model.block                     # (S, time + 1, batch, hidden), h_{-1} first
            o, previous = chain[:, 1:].flatten(1, 2), chain[:, :-1].flatten(1, 2)
            if self.rnn_inputs == "all":
                weights, inputs, masks = [model.weight_ih, model.weight_hh], [model.inputs.flatten(1, 2), previous], \
                    [None, model.mask]
            else:
                weights, inputs, masks = [model.weight_hh], [previous], [model.mask]
            data, sum_o, sum_squares = self._member_sums(o, inputs)
            rows = o.shape[-2]
            norm_sq = sum(w.square().sum(-1) for w in weights)
            mean_s = (1 - sum_squares / rows) * norm_sq.sqrt()
            step = self._rate(0, mean_s)
            self._apply(weights, data, model.bias, sum_o, rows, step, norm_sq, mean_s, masks)


def log_sensitivity_per_member(s: torch.Tensor) -> list[float]:
    """ln RMS(s) of each member's neurons; s is (S, …)."""
    return [float(log_sensitivity(member)) for member in s]
