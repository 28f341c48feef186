"""Members as a batch dimension (DESIGN.md, "Ensembles"): train runs of one shape that differ
only in per-member settings train as one batched model.

Each member is first built exactly as a single run builds it (`jobs._network`: its seed, its
init, its method's `on_init`, so spectral scaling, orthogonal, critical and LSUV need nothing
here), then the members' parameters are stacked along a leading member dimension S. A step is
one batched forward and backward (baddbmm), one batched optimizer step and one batched SAL
update; every per-member setting (the optimizer's lr and momentum, SAL's rate, target, gate
and β) is a tensor of S values. Each member keeps its own data stream (its generator), so
its numbers are those of its single run, up to float rounding (tests/test_ensemble.py).

A member whose loss or weights stop being finite is frozen: its parameters are zeroed, its
rates set to 0 and its loss left out, so the others go on untouched (members share no
arithmetic: every op is batched over the member dimension, never reduced across it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from salrun.methods import Method, SALMethod
from salrun.models import MLP, ElmanRNN
from salrun.neurons import log_sensitivity

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the single run uses


def batchable(method: Method) -> bool:
    """SAL, or a method that acts only before training (an init): nothing per step but SAL batches."""
    kind = type(method)
    return isinstance(method, SALMethod) or (kind.after_step is Method.after_step
                                             and kind.loss_term is Method.loss_term)


def _per_member(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(S,) values shaped to broadcast over a stacked tensor (S, …)."""
    return values.reshape(-1, *[1] * (like.dim() - 1))


class StackedMLP(nn.Module):
    """S MLPs of one shape: the first layer (S, width, in), the equal hidden layers
    (S, depth-1, width, width), the readout (S, out, width); inputs (S, batch, in)."""

    def __init__(self, members: list[MLP]):
        super().__init__()
        linears = [m.linears() for m in members]

        def stack(index, part):
            return nn.Parameter(torch.stack([getattr(ls[index], part).detach() for ls in linears]).clone())

        self.w_first, self.b_first = stack(0, "weight"), stack(0, "bias")
        self.w_out, self.b_out = stack(-1, "weight"), stack(-1, "bias")
        hidden = [ls[1:-1] for ls in linears]
        self.w_hidden = nn.Parameter(torch.stack([torch.stack([l.weight.detach() for l in h]) for h in hidden])
                                     if hidden[0] else self.w_first.new_zeros(len(members), 0, 1, 1))
        self.b_hidden = nn.Parameter(torch.stack([torch.stack([l.bias.detach() for l in h]) for h in hidden])
                                     if hidden[0] else self.b_first.new_zeros(len(members), 0, 1))
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

    def member_state(self, s: int) -> dict[str, torch.Tensor]:
        """Member s's parameters under the names of its single MLP's state_dict."""
        depth = self.w_hidden.shape[1] + 1
        state = {"0.weight": self.w_first[s], "0.bias": self.b_first[s],
                 f"{2 * depth}.weight": self.w_out[s], f"{2 * depth}.bias": self.b_out[s]}
        for layer in range(1, depth):
            state[f"{2 * layer}.weight"] = self.w_hidden[s, layer - 1]
            state[f"{2 * layer}.bias"] = self.b_hidden[s, layer - 1]
        return {name: value.detach().clone() for name, value in state.items()}

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
        self.inputs: torch.Tensor | None = None

    def recurrent_weight(self) -> torch.Tensor:
        return self.weight_hh if self.mask is None else self.weight_hh * self.mask

    def forward(self, x: torch.Tensor, keep_state_grads: bool = False) -> torch.Tensor:
        w_hh = self.recurrent_weight().mT
        drive = torch.matmul(x, self.weight_ih.mT[:, None]) + self.bias[:, None, None]
        h = x.new_zeros(x.shape[0], x.shape[2], self.weight_hh.shape[1])
        states = [h]
        for drive_t in drive.unbind(1):  # see ElmanRNN.run
            h = torch.tanh(torch.baddbmm(drive_t, h, w_hh))
            if keep_state_grads and h.requires_grad:
                h.retain_grad()
            states.append(h)
        if self.training:
            self.inputs, self.states = x.detach(), states
        if self.read_steps > 1:
            read = torch.stack(states[-self.read_steps:], 1)  # (S, read, batch, hidden)
            return torch.matmul(read, self.w_out.mT[:, None]) + self.b_out[:, None, None]
        return torch.baddbmm(self.b_out[:, None], h, self.w_out.mT)

    def member_state(self, s: int) -> dict[str, torch.Tensor]:
        state = {"weight_ih": self.weight_ih[s], "weight_hh": self.weight_hh[s], "bias": self.bias[s],
                 "readout.weight": self.w_out[s], "readout.bias": self.b_out[s]}
        if self.mask is not None:
            state["mask"] = self.mask[s]
        return {name: value.detach().clone() for name, value in state.items()}

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
    """Per-member settings of the batched optimizer and SAL, (S,) each; SAL's rate is 0 for a
    member without SAL."""

    lr: torch.Tensor
    momentum: torch.Tensor
    sal_lr: torch.Tensor
    target: torch.Tensor
    beta: torch.Tensor
    two_sided: torch.Tensor  # bool

    def freeze(self, s: int) -> None:
        self.lr[s] = self.sal_lr[s] = 0


class BatchedOptimizer:
    """torch.optim.Adam / SGD (their defaults otherwise) over stacked tensors, with a
    learning rate (and SGD momentum) per member."""

    def __init__(self, params: list[nn.Parameter], name: str, rates: MemberRates, clip: float):
        self.params, self.name, self.rates, self.clip = params, name, rates, clip
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.clip > 0:  # clip_grad_norm_ per member: the norm over all of that member's gradients
            total = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
            scale = (self.clip / (total + 1e-6)).clamp(max=1.0)
            grads = [g * _expand(scale, g) for g in grads]
        self.steps += 1
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

    def reset_member(self, s: int) -> None:
        for state in self.state:
            for value in state.values():
                value[s] = 0


class BatchedSAL:
    """SAL (sal.py, objective log, tanh, hidden layers only) over members: the moving average,
    gate and update of sal.py with SAL's rate, target, gate and β per member."""

    def __init__(self, model: StackedMLP | StackedRNN, rates: MemberRates, rnn_inputs: str = "all"):
        self.model, self.rates, self.rnn_inputs = model, rates, rnn_inputs
        self.averages: list[torch.Tensor | None] = []

    def _rate(self, index: int, mean_s: torch.Tensor) -> torch.Tensor:
        """Update s̄ of block `index` ((S, …, neurons)) from this batch's mean; returns η·g."""
        if index == len(self.averages):
            self.averages.append(mean_s.clone())
        else:
            beta = _expand(self.rates.beta, mean_s)
            self.averages[index].mul_(beta).add_((1 - beta) * mean_s)
        average = self.averages[index]
        gate = (average < _expand(self.rates.target, average)).to(average.dtype)
        gate = torch.where(_expand(self.rates.two_sided, gate), 2 * gate - 1, gate)
        return _expand(self.rates.sal_lr, gate) * gate

    @staticmethod
    def _update(weights: list[torch.Tensor], inputs: list[torch.Tensor], o: torch.Tensor, bias: torch.Tensor,
                step: torch.Tensor, norm_sq: torch.Tensor, masks: list[torch.Tensor | None]) -> None:
        """W ← (1 + η g/‖w‖²)·W + aᵀx with a = -2·η g·o/rows, θ ← θ + Σ_rows a; (…, rows, n) blocks."""
        radial = step / norm_sq.clamp_min(1e-30)
        a = o * (step * (-2.0 / o.shape[-2])).unsqueeze(-2)
        for w, x, mask in zip(weights, inputs, masks):
            data = torch.matmul(a.mT, x)
            if mask is None:
                w.mul_((1 + radial).unsqueeze(-1)).add_(data)
            else:
                w.add_((w * radial.unsqueeze(-1)).add_(data).mul_(mask))
        bias.add_(a.sum(-2))

    @torch.no_grad()
    def step(self) -> None:
        model = self.model
        if isinstance(model, StackedMLP):
            o_first, o_hidden = model.outputs[0], torch.stack(model.outputs[1:], 1)
            blocks = [([model.w_first], [model.inputs], o_first, model.b_first),
                      ([model.w_hidden], [torch.stack(model.outputs[:-1], 1)], o_hidden, model.b_hidden)]
            if model.w_hidden.shape[1] == 0:
                blocks = blocks[:1]
            for index, (weights, inputs, o, bias) in enumerate(blocks):
                norm = torch.linalg.vector_norm(weights[0], dim=-1)
                step = self._rate(index, (1 - o.square().mean(-2)) * norm)
                self._update(weights, inputs, o, bias, step, norm * norm, [None])
        else:
            states = model.states
            o = torch.stack(states[1:], 1).flatten(1, 2)          # (S, time·batch, hidden)
            previous = torch.stack(states[:-1], 1).flatten(1, 2)
            if self.rnn_inputs == "all":
                weights, inputs, masks = [model.weight_ih, model.weight_hh], [model.inputs.flatten(1, 2), previous], \
                    [None, model.mask]
            else:
                weights, inputs, masks = [model.weight_hh], [previous], [model.mask]
            norm_sq = sum(w.square().sum(-1) for w in weights)
            step = self._rate(0, (1 - o.square()).mean(-2) * norm_sq.sqrt())
            self._update(weights, inputs, o, model.bias, step, norm_sq, masks)


def log_sensitivity_per_member(s: torch.Tensor) -> list[float]:
    """ln RMS(s) of each member's neurons; s is (S, …)."""
    return [float(log_sensitivity(member)) for member in s]


class MembersDiffer(ValueError):
    """The runs cannot train as one batched model (the message says why)."""


SHARED = ("model", "task", "train")  # config sections that every member must share, less the init values


def _shape_key(s) -> tuple:
    model = {k: v for k, v in s.config["model"].items() if k not in ("init", "input_scale")}
    sal = s.method.settings if s.method.name == "sal" else None
    return (s.model.name, repr(model), repr(s.config["task"]), repr(s.config["train"]), s.root.optim.name,
            s.root.optim.clip, s.root.device, sal is None or (sal.objective, sal.include_output) == ("log", False),
            sal.rnn_inputs if sal is not None else None)


class EnsembleTrainer:
    """S train runs (their JobSettings) as one batched model, step by step, with each member's
    metrics logged to its own RunWriter exactly as `jobs.train` logs them."""

    def __init__(self, settings: list, writers: list, dtype: torch.dtype | None = None):
        from salrun import jobs

        keys = {_shape_key(s) for s in settings}
        sal_inputs = {key[-1] for key in keys} - {None}
        if len({key[:-2] for key in keys}) > 1 or len(sal_inputs) > 1:
            raise MembersDiffer("the runs differ in more than per-member settings (seed, init, method, "
                                "SAL's rate/target/gate/beta, rho, the optimizer's lr and momentum)")
        if not all(key[-2] for key in keys):
            raise MembersDiffer("SAL with objective=linear or include_output=true does not batch")
        self.settings, self.writers = settings, writers
        self.task = settings[0].task.entry.load()(settings[0].task.settings)
        self.nets = [jobs._network(s, self.task.input_size, self.task.output_size, self.task) for s in settings]
        for net in self.nets:
            if not batchable(net.method):
                raise MembersDiffer(f"method {type(net.method).__name__} acts during training and does not batch")
        self.device = self.nets[0].device
        model = stack_models([net.model for net in self.nets]).to(self.device)
        self.model = model.to(dtype) if dtype is not None else model
        like = self.model.bias if isinstance(self.model, StackedRNN) else self.model.b_first
        sal = [s.method.settings if s.method.name == "sal" else None for s in settings]
        self.rates = MemberRates(
            lr=_per_member([s.root.optim.lr for s in settings], like),
            momentum=_per_member([s.root.optim.momentum for s in settings], like),
            sal_lr=_per_member([x.lr if x else 0.0 for x in sal], like),
            target=_per_member([x.target if x else 1.0 for x in sal], like),
            beta=_per_member([x.beta if x else 0.0 for x in sal], like),
            two_sided=torch.tensor([bool(x) and x.gate == "two_sided" for x in sal], device=like.device))
        first = settings[0].root
        self.optimizer = BatchedOptimizer(list(self.model.parameters()), first.optim.name, self.rates, first.optim.clip)
        self.sal = BatchedSAL(self.model, self.rates, next((x.rnn_inputs for x in sal if x), "all")) \
            if any(sal) else None
        x_test, y_test = self.task.test_set()
        self.test = (self._cast(x_test).expand(len(settings), *x_test.shape).to(self.device), self._cast(y_test).to(self.device))
        self.alive = [True] * len(settings)
        self.outcome: list[dict | None] = [None] * len(settings)  # a frozen member's summary fields

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.model.b_out.dtype) if t.is_floating_point() else t

    # -- isolation ------------------------------------------------------------------------

    @torch.no_grad()
    def freeze(self, s: int, step: int, what: str) -> None:
        """Member s diverged: record it and zero it out, so that it costs the others nothing."""
        self.alive[s] = False
        self.outcome[s] = {"status": "diverged", "error": f"{what} is not finite at step {step}",
                           "diverged_step": step}
        for p in self.model.parameters():
            p[s] = 0
        self.rates.freeze(s)
        self.optimizer.reset_member(s)
        if self.sal is not None:
            for average in self.sal.averages:
                average[s] = 0

    # -- a step ---------------------------------------------------------------------------

    def _losses(self, x, y, log_now: bool) -> list[torch.Tensor | None]:
        self.model.train()
        sequential = self.task.sequential
        prediction = self.model(x, keep_state_grads=log_now) if sequential else self.model(x)
        return [self.task.loss(prediction[s], y[s]) if alive else None for s, alive in enumerate(self.alive)]

    def step(self, step: int, log_now: bool) -> list[torch.Tensor | None]:
        """One batched BP (BPTT) step; returns each member's loss (None for a frozen member)."""
        batch = [self.task.train_batch(self.settings[s].root.train.batch_size, net.generator)
                 for s, net in enumerate(self.nets)]
        x = self._cast(torch.stack([b[0] for b in batch])).to(self.device)
        y = self._cast(torch.stack([b[1] for b in batch])).to(self.device)
        losses = self._losses(x, y, log_now)
        finite = torch.stack([l.detach() if l is not None else x.new_zeros(()) for l in losses]).isfinite().tolist()
        if not all(finite):  # freeze those members and redo the forward: NaNs would reach the backward
            for s in [s for s, ok in enumerate(finite) if not ok]:
                self.freeze(s, step, "the loss")
            losses = self._losses(x, y, log_now)
        for p in self.model.parameters():
            p.grad = None
        live = [l for l in losses if l is not None]
        if not live:
            return losses
        torch.stack(live).sum().backward()
        if log_now:
            self._layer_metrics(step)
        self.optimizer.step()
        if self.sal is not None:
            self.sal.step()
        if isinstance(self.model, StackedRNN):
            self.model.apply_mask_()
        return losses

    @torch.no_grad()
    def _layer_metrics(self, step: int) -> None:
        model = self.model
        if isinstance(model, StackedRNN):
            states = model.states[1:]
            grads = torch.stack([h.grad.norm(dim=2).mean(1) for h in states], 1).tolist()  # (S, time)
            o = torch.stack(states, 1)                                                   # (S, time, batch, n)
            s_all = (1 - o * o) * model.recurrent_weight().norm(dim=2)[:, None, None, :]
            rms = s_all.square().mean((2, 3)).sqrt().tolist()
        else:
            grads = model.grad_norms().tolist()
            s_all = model.sensitivities()
            rms = s_all.square().mean((2, 3)).sqrt().tolist()
        log_s = log_sensitivity_per_member(s_all)
        for s, writer in enumerate(self.writers):
            if not self.alive[s]:
                continue
            for index, value in enumerate(grads[s]):
                writer.log(step, "grad_norm", value, index)
            for index, value in enumerate(rms[s]):
                writer.log(step, "sensitivity_rms", value, index)
            writer.log(step, "log_sensitivity", log_s[s])

    @torch.no_grad()
    def evaluate(self, step: int, losses: list[torch.Tensor | None]) -> None:
        """Each living member's test metric and loss, logged with its training loss."""
        self.model.eval()
        prediction = self.model(self.test[0])
        finite = torch.stack([p.flatten(1).isfinite().all(1) for p in self.model.parameters()]).all(0).tolist()
        metric = self.task.metric
        for s, writer in enumerate(self.writers):
            if not self.alive[s]:
                continue
            if not finite[s]:
                self.freeze(s, step, "a weight")
                continue
            writer.log_many(step, {"loss": losses[s].item(), "test_loss": float(self.task.loss(prediction[s], self.test[1])),
                                   metric: self.task.evaluate(prediction[s], self.test[1])})
            writer.flush_metrics()
