"""What computes a training step for `salrun.training.Run`: one network (`SingleEngine`), or S
networks of one shape stacked along a member dimension (`StackedEngine`, salrun.ensemble).

Both build every member's network the same way (`build_network`: its seed, init and method's
`on_init`), log each member's per-layer metrics and evaluations to its own writer, and report a
member whose loss or weights stop being finite in `diverged` ({member: (step, what)}) instead of
raising: the loop decides what that means. A stacked member found diverged is frozen (zeroed,
rate 0) and the others go on; its numbers are those of its single run up to float rounding
(tests/test_ensemble.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from salrun import probes
from salrun.activity import per_layer, probe_for
from salrun.ensemble import (BatchedOptimizer, BatchedSAL, MemberRates, StackedMLP, StackedRNN,
                             log_sensitivity_per_member, per_member, stack_models)
from salrun.methods import Method, SALMethod, TaskSampler
from salrun.models import ElmanRNN
from salrun.neurons import log_sensitivity, sensitivity
from salrun.results import RunWriter
from salrun.rule import Rule
from salrun.runtime import prepare, resolve_device, set_rng_state
from salrun.settings import JobSettings, batch_key


class MembersDiffer(ValueError):
    """The runs cannot train as one batched model (the message says why)."""


def check_batchable(settings: list[JobSettings]) -> None:
    """MembersDiffer unless these runs can train as one batched model (`salrun.settings.batch_key`)."""
    keys = [batch_key(s) for s in settings]
    if not all(keys):
        raise MembersDiffer("a method or option that does not declare that it batches runs alone")
    if len(set(keys)) > 1:
        raise MembersDiffer("the runs differ in more than per-member settings (seed, init, method, "
                            "SAL's rate/target/gate/band/beta, rho, the optimizer's lr and momentum)")


@dataclass
class Network:
    """A run's seeded model on its device, its init and method applied."""

    model: torch.nn.Module
    probe: Any
    method: Method
    generator: torch.Generator   # the job's data stream
    device: torch.device


def build_network(s: JobSettings, input_size: int, output_size: int, task=None) -> Network:
    """Seed every RNG, set the threads, build the model on its device, then the init and the
    method act on it (a task gives them its data: LSUV, flossing)."""
    generator = prepare(s.root.seed, s.root.threads)
    device = resolve_device(s.root.device)
    model = s.model.entry.load()(input_size, output_size, s.model.settings, generator=generator).to(device)
    if task is not None and task.read_steps > 1:
        model.read_steps = task.read_steps
    probe = probe_for(model)
    sample = TaskSampler(task, s.root.seed, device) if task is not None else None
    s.init.entry.load()(model, s.init.settings, sample)
    method = s.method.entry.load()(s.method.settings)
    method.on_init(model, probe, sample)
    return Network(model, probe, method, generator, device)


def make_optimizer(s: JobSettings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam and SGD with their multi-tensor kernels: the MLP has 602 parameters, and the default
    per-parameter loop on the CPU is most of a step (measured: benchmarks/run.py --only loops)."""
    optim, params = s.root.optim, list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, fused=fused, foreach=None if fused else True)
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, fused=fused, foreach=None if fused else True)


class SingleEngine:
    """One run: its network, torch's optimizer and the method's hooks."""

    def __init__(self, s: JobSettings, task, net: Network, optimizer: torch.optim.Optimizer):
        self.settings, self.task, self.net, self.optimizer = s, task, net, optimizer
        self.test = tuple(t.to(net.device) for t in task.test_set())
        self.alive = [True]
        self.diverged: dict[int, tuple[int, str]] = {}

    @classmethod
    def build(cls, s: JobSettings, checkpoint: dict | None = None) -> "SingleEngine":
        """The run of `s` as it starts, or as `checkpoint` left it."""
        task = s.task.entry.load()(s.task.settings)  # its data come from fixed seeds of their own
        net = build_network(s, task.input_size, task.output_size, task)
        optimizer = make_optimizer(s, net.model)
        if checkpoint is not None:
            net.model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            net.method.load_state_dict(checkpoint["method"])
            set_rng_state(net.generator, checkpoint["rng"])
        return cls(s, task, net, optimizer)

    def export(self, s: int) -> tuple[Network, torch.optim.Optimizer]:
        return self.net, self.optimizer

    def scale_rates(self, optimizer_factor: float, sal_factor: float) -> None:
        """The schedules' factors of the learning rate and of the method's own rate, for this step."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.root.optim.lr * optimizer_factor
        self.net.method.scale_rate(sal_factor)

    def step(self, step: int, log_now: bool, writers: list[RunWriter | None]) -> list[torch.Tensor | None]:
        """One BP (BPTT) step with the method's loss term and update; the per-layer metrics are
        read between backward and the update, on the gradients of this step."""
        s, net, task = self.settings, self.net, self.task
        model = net.model
        if not model.training:  # train() walks every module: 3 ms a step for the 300-layer MLP
            model.train()
        net.probe.clear()
        x, y = (t.to(net.device) for t in task.train_batch(s.root.train.batch_size, net.generator))
        quiet = not (log_now or net.method.reads_activity) and hasattr(net.probe, "paused")
        with net.probe.paused() if quiet else contextlib.nullcontext():
            prediction = model(x, keep_state_grads=log_now) if task.sequential else model(x)
        loss = task.loss(prediction, y)
        extra = net.method.loss_term(model)
        if extra is not None:
            loss = loss + extra
        if not torch.isfinite(loss):
            self.alive[0] = False
            self.diverged[0] = (step, "the loss")
            return [None]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if log_now and writers[0] is not None:
            layer_metrics(net, writers[0], step)
            if s.root.train.probes:
                probes.record(net, writers[0], step)
        if s.root.optim.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.root.optim.clip)
        self.optimizer.step()
        net.method.after_step()
        if hasattr(model, "apply_mask_"):
            model.apply_mask_()
        return [loss]

    @torch.no_grad()
    def evaluate(self, step: int, losses: list[torch.Tensor | None], writers: list[RunWriter | None]) -> None:
        net, task, test = self.net, self.task, self.test
        net.model.eval()
        prediction = net.model(test[0])
        test_loss = float(task.loss(prediction, test[1]))
        metric = task.evaluate(prediction, test[1])
        if not all(torch.isfinite(p).all() for p in net.model.parameters()):
            self.alive[0] = False
            self.diverged[0] = (step, "a weight")
            return
        writers[0].log_many(step, {"loss": losses[0].item(), "test_loss": test_loss, task.metric: metric})
        writers[0].flush_metrics()


@torch.no_grad()
def layer_metrics(net: Network, writer: RunWriter, step: int) -> None:
    """Per-layer gradient norm and RMS sensitivity (per time step for the RNN), and the log-sensitivity.
    Each metric is computed for all layers at once and read back with one tolist: a float()
    per layer is a Python round trip per layer, which 300 layers (or steps) notice."""
    model, layers = net.model, per_layer(net.probe.layers())
    if isinstance(model, ElmanRNN):
        states = model.recorded_states()
        grads = [(t, h.grad) for t, h in enumerate(states) if h.grad is not None]
        if grads:
            norms = torch.stack([g.norm(dim=1).mean() for _, g in grads]).tolist()
            for (t, _), norm in zip(grads, norms):
                writer.log(step, "grad_norm", norm, t)
        # Through time only the recurrent weights carry the signal: gain from h_{t-1} to h_t.
        s = sensitivity(layers[0].output, [model.recurrent_weight()]).reshape(len(states), -1)
        for t, rms in enumerate(s.pow(2).mean(1).sqrt().tolist()):
            writer.log(step, "sensitivity_rms", rms, t)
        writer.log(step, "log_sensitivity", float(log_sensitivity(s)))
        return
    grads = [(index, grad) for index, grad in enumerate(model.weight_grads()) if grad is not None]
    if grads:
        for (index, _), norm in zip(grads, torch.stack(torch._foreach_norm([g for _, g in grads])).tolist()):
            writer.log(step, "grad_norm", norm, index)
    every_s = [sensitivity(layer.output, layer.weights, layer.activation).reshape(-1) for layer in layers]
    for index, rms in enumerate(torch.stack([s.pow(2).mean().sqrt() for s in every_s]).tolist()):
        writer.log(step, "sensitivity_rms", rms, index)
    writer.log(step, "log_sensitivity", float(log_sensitivity(torch.cat(every_s))))


class StackedEngine:
    """S runs (their JobSettings) as one batched model, with each member's metrics logged to its
    own writer exactly as `SingleEngine` logs a single run's."""

    def __init__(self, settings: list[JobSettings], dtype: torch.dtype | None = None):
        check_batchable(settings)
        self.settings = settings
        self.task = settings[0].task.entry.load()(settings[0].task.settings)
        self.nets = [build_network(s, self.task.input_size, self.task.output_size, self.task) for s in settings]
        self.device = self.nets[0].device
        model = stack_models([net.model for net in self.nets]).to(self.device)
        self.model = model.to(dtype) if dtype is not None else model
        like = self.model.bias if isinstance(self.model, StackedRNN) else self.model.b_first
        sal = [net.method.settings if isinstance(net.method, SALMethod) else None for net in self.nets]
        self.rates = MemberRates(lr=per_member([s.root.optim.lr for s in settings], like),
                                 momentum=per_member([s.root.optim.momentum for s in settings], like))
        first = settings[0].root
        self.optimizer = BatchedOptimizer(list(self.model.parameters()), first.optim.name, self.rates, first.optim.clip)
        self.sal = BatchedSAL(self.model, Rule.members(sal, like), next((x.rnn_inputs for x in sal if x), "all")) \
            if any(sal) else None
        x_test, y_test = self.task.test_set()
        self.test = (self._cast(x_test).expand(len(settings), *x_test.shape).to(self.device),
                     self._cast(y_test).to(self.device))
        self.alive = [True] * len(settings)
        self.diverged: dict[int, tuple[int, str]] = {}
        self.base_lr = self.rates.lr.clone()                                  # what the schedules scale
        self.base_sal_lr = self.sal.rule.lr.clone() if self.sal is not None else None

    def scale_rates(self, optimizer_factor: float, sal_factor: float) -> None:
        """As SingleEngine.scale_rates, for every living member (a frozen one stays at rate 0)."""
        living = torch.tensor(self.alive, dtype=self.base_lr.dtype, device=self.base_lr.device)
        self.optimizer.set_lr(self.base_lr * optimizer_factor * living)
        if self.sal is not None:
            self.sal.rule.lr = self.base_sal_lr * sal_factor * living

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.model.b_out.dtype) if t.is_floating_point() else t

    # -- isolation ------------------------------------------------------------------------

    @torch.no_grad()
    def freeze(self, s: int, step: int, what: str) -> None:
        """Member s diverged: record it and zero it out, so that it costs the others nothing."""
        self.alive[s] = False
        self.diverged[s] = (step, what)
        for p in self.model.parameters():
            p[s] = 0
        self.rates.freeze(s)
        self.optimizer.reset_member(s)
        if self.sal is not None:
            self.sal.rule.freeze(s)
            for average in self.sal.averages:
                average[s] = 0

    @torch.no_grad()
    def export(self, s: int) -> tuple[Network, torch.optim.Optimizer]:
        """Member s as its single run holds it: its net's model and method state and a torch
        optimizer with its state (a member's checkpoint resumes as a single run)."""
        net, settings, model = self.nets[s], self.settings[s], self.model
        own = {**dict(net.model.named_parameters()), **dict(net.model.named_buffers())}
        stacked = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name, view in model.member_views(s, stacked).items():
            own[name].copy_(view)
        optimizer = make_optimizer(settings, net.model)
        names = [name for name, _ in model.named_parameters()]
        if self.optimizer.steps:
            states = self.optimizer.states()
            per_key = {key: model.member_views(s, {n: st[key] for n, st in zip(names, states)})
                       for key in states[0]}
            for name, p in net.model.named_parameters():
                if "m" in per_key:
                    optimizer.state[p] = {"step": torch.tensor(float(self.optimizer.steps), device=p.device),
                                          "exp_avg": per_key["m"][name].to(p.dtype).clone(),
                                          "exp_avg_sq": per_key["v"][name].to(p.dtype).clone()}
                else:
                    buffer = (per_key["buffer"][name].to(p.dtype).clone()
                              if settings.root.optim.momentum and "buffer" in per_key else None)
                    optimizer.state[p] = {"momentum_buffer": buffer}
        if self.sal is not None and isinstance(net.method, SALMethod) and self.sal.averages:
            averages = [average[s] for average in self.sal.averages]
            if isinstance(model, StackedMLP) and len(averages) > 1:
                averages = [averages[0], *averages[1].unbind(0)]
            net.method.load_state_dict({"averages": [a.float().clone() for a in averages]})
        return net, optimizer

    # -- a step ---------------------------------------------------------------------------

    def _losses(self, x, y, log_now: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The living members' losses as one (living,) tensor, and each member's (None if frozen).
        The task's loss of one member runs over the living members by torch.vmap: one call of each
        of its ops for all of them, where a loop over members launched them once per member (on a
        GPU, 256 members' losses forward and backward were some 1,800 launches a step)."""
        self.model.train()
        sequential = self.task.sequential
        prediction = self.model(x, keep_state_grads=log_now) if sequential else self.model(x)
        living = [s for s, alive in enumerate(self.alive) if alive]
        if len(living) < len(self.alive):  # a frozen member's prediction takes no part (nor its NaNs)
            index = torch.tensor(living, device=prediction.device)
            prediction, y = prediction.index_select(0, index), y.index_select(0, index)
        try:
            values = torch.vmap(self.task.loss)(prediction, y) if living else prediction.new_zeros(0)
        except RuntimeError as error:  # a registered task's loss that torch.vmap cannot batch
            raise ValueError(f"the loss of task {self.settings[0].task.name!r} does not run under torch.vmap "
                             f"({str(error).splitlines()[0]}): train these runs without --ensemble") from None
        losses: list[torch.Tensor | None] = [None] * len(self.alive)
        for s, value in zip(living, values.unbind(0)):
            losses[s] = value
        return values, losses

    def step(self, step: int, log_now: bool, writers: list[RunWriter | None]) -> list[torch.Tensor | None]:
        """One batched BP (BPTT) step; returns each member's loss (None for a frozen member)."""
        batch = [self.task.train_batch(self.settings[s].root.train.batch_size, net.generator)
                 for s, net in enumerate(self.nets)]
        x = self._cast(torch.stack([b[0] for b in batch])).to(self.device)
        y = self._cast(torch.stack([b[1] for b in batch])).to(self.device)
        values, losses = self._losses(x, y, log_now)
        finite = values.detach().isfinite().tolist()
        if not all(finite):  # freeze those members and redo the forward: NaNs would reach the backward
            living = [s for s, loss in enumerate(losses) if loss is not None]
            for s in [s for s, ok in zip(living, finite) if not ok]:
                self.freeze(s, step, "the loss")
            values, losses = self._losses(x, y, log_now)
        for p in self.model.parameters():
            p.grad = None
        if not values.numel():
            return losses
        values.sum().backward()
        if log_now:
            self._layer_metrics(step, writers)
        self.optimizer.step()
        if self.sal is not None:
            self.sal.step()
        if isinstance(self.model, StackedRNN):
            self.model.apply_mask_()
        return losses

    @torch.no_grad()
    def _layer_metrics(self, step: int, writers: list[RunWriter | None]) -> None:
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
        for s, writer in enumerate(writers):
            if writer is None or not self.alive[s]:
                continue
            for index, value in enumerate(grads[s]):
                writer.log(step, "grad_norm", value, index)
            for index, value in enumerate(rms[s]):
                writer.log(step, "sensitivity_rms", value, index)
            writer.log(step, "log_sensitivity", log_s[s])

    @torch.no_grad()
    def evaluate(self, step: int, losses: list[torch.Tensor | None], writers: list[RunWriter | None]) -> None:
        """Each living member's test metric and loss, logged with its training loss."""
        self.model.eval()
        prediction = self.model(self.test[0])
        finite = torch.stack([p.flatten(1).isfinite().all(1) for p in self.model.parameters()]).all(0).tolist()
        metric = self.task.metric
        for s, writer in enumerate(writers):
            if writer is None or not self.alive[s]:
                continue
            if not finite[s]:
                self.freeze(s, step, "a weight")
                continue
            writer.log_many(step, {"loss": losses[s].item(),
                                   "test_loss": float(self.task.loss(prediction[s], self.test[1])),
                                   metric: self.task.evaluate(prediction[s], self.test[1])})
            writer.flush_metrics()
