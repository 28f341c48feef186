"""Ensemble jobs: train runs of one shape as one batched model (salrun.ensemble), each member
writing its own run folder exactly as `jobs.run_job` writes a single run's.

Each member is first built exactly as its single run builds it (`jobs._network`: its seed,
init and method's `on_init`, so spectral scaling, orthogonal, critical and LSUV need nothing
here); then the members are stacked. Each member keeps its own data stream (its generator),
so its numbers are those of its single run up to float rounding (tests/test_ensemble.py).
A member whose loss or weights stop being finite is frozen (`EnsembleTrainer.freeze`) and
recorded `diverged`; the others go on. A member's checkpoint.pt is a single run's: it
resumes on the single-run path.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from salrun import jobs
from salrun.ensemble import (BatchedOptimizer, BatchedSAL, MemberRates, StackedMLP, StackedRNN, per_member,
                             batchable, log_sensitivity_per_member, stack_models)
from salrun.methods import SALMethod
from salrun.results import RunFolderError, RunWriter, write_atomic
from salrun.runtime import interrupts_at_step_boundaries, stop_guard
from salrun.settings import ConfigError, job_settings


class MembersDiffer(ValueError):
    """The runs cannot train as one batched model (the message says why)."""


def _shape_key(s) -> tuple:
    """What members must share: the model less its init values, the task, the train settings,
    the optimizer's kind and clip, the device; then whether SAL (if any) batches, and its
    rnn_inputs (None without SAL)."""
    model = {k: v for k, v in s.config["model"].items() if k not in ("init", "input_scale")}
    sal = s.method.settings if s.method.name == "sal" else None
    return (s.model.name, repr(model), repr(s.config["task"]), repr(s.config["train"]), s.root.optim.name,
            s.root.optim.clip, s.root.device,
            sal is None or (sal.objective, sal.include_output, sal.average) == ("log", False, "arithmetic")
            and sal.gate != "proportional" and not sal.layer_target,
            sal.rnn_inputs if sal is not None else None)


class EnsembleTrainer:
    """S train runs (their JobSettings) as one batched model, step by step, with each member's
    metrics logged to its own RunWriter exactly as `jobs.train` logs them."""

    def __init__(self, settings: list, writers: list, dtype: torch.dtype | None = None):
        keys = {_shape_key(s) for s in settings}
        sal_inputs = {key[-1] for key in keys} - {None}
        if len({key[:-2] for key in keys}) > 1 or len(sal_inputs) > 1:
            raise MembersDiffer("the runs differ in more than per-member settings (seed, init, method, "
                                "SAL's rate/target/gate/beta, rho, the optimizer's lr and momentum)")
        if not all(key[-2] for key in keys):
            raise MembersDiffer("SAL with objective=linear, include_output=true, average=geometric, "
                                "gate=proportional or layer_target=true does not batch")
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
            lr=per_member([s.root.optim.lr for s in settings], like),
            momentum=per_member([s.root.optim.momentum for s in settings], like),
            sal_lr=per_member([x.lr if x else 0.0 for x in sal], like),
            target=per_member([x.target if x else 1.0 for x in sal], like),
            beta=per_member([x.beta if x else 0.0 for x in sal], like),
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
                           "diverged_step": step, "what": what}
        for p in self.model.parameters():
            p[s] = 0
        self.rates.freeze(s)
        self.optimizer.reset_member(s)
        if self.sal is not None:
            for average in self.sal.averages:
                average[s] = 0

    @torch.no_grad()
    def export(self, s: int) -> torch.optim.Optimizer:
        """Member s as its single run holds it: its net's model and method state and a torch
        optimizer with its state, so that the job layer's own functions write its model.pt
        and checkpoint.pt (a member's checkpoint resumes as a single run)."""
        net, settings, model = self.nets[s], self.settings[s], self.model
        own = {**dict(net.model.named_parameters()), **dict(net.model.named_buffers())}
        stacked = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name, view in model.member_views(s, stacked).items():
            own[name].copy_(view)
        optimizer = jobs._optimizer(settings, net.model)
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
        return optimizer

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


def train_ensemble(cfgs: list[dict], out_dirs: list[Path], overrides: list[list[str]] | None = None) -> list[dict]:
    """Train runs `cfgs` (resolved configs of one shape) as one batched model; each member writes
    its run folder in out_dirs exactly as `jobs.run_job("train", cfg, out_dir)` would (config.yaml,
    metrics.csv, summary.json, model.pt, checkpoint.pt). Returns the summaries. MembersDiffer
    (before anything is written) if the runs do not batch."""
    settings = [job_settings("train", cfg) for cfg in cfgs]
    writers = [RunWriter(Path(out)) for out in out_dirs]
    trainer = EnsembleTrainer(settings, writers)
    given = overrides or [[] for _ in cfgs]
    summaries = [jobs.new_summary("train", s, out, o) for s, out, o in zip(settings, out_dirs, given)]
    states = [jobs.RunState() for _ in settings]
    for i, (writer, cfg) in enumerate(zip(writers, cfgs)):
        writer.write_config(cfg)
        if overrides is not None:  # as run_job: overrides.yaml records the overrides given
            writer.write_overrides(overrides[i])
    run = settings[0].root.train

    def checkpoint(s: int) -> None:
        optimizer = trainer.export(s)
        jobs._save_checkpoint(writers[s], settings[s].config, trainer.nets[s], optimizer, states[s])

    def living() -> list[int]:
        return [s for s, alive in enumerate(trainer.alive) if alive]

    def stop_now() -> None:  # a second signal (StopGuard): every member's summary says interrupted
        for writer, summary, state in zip(writers, summaries, states):
            writer.write_summary(jobs.ended(dict(summary), state, writer, status="interrupted"))

    at_boundary = True  # between two steps, so a checkpoint now is consistent
    with stop_guard(stop_now) as guard:
        try:
            with interrupts_at_step_boundaries() as check_interrupt:
                for step in range(1, run.steps + 1):
                    at_boundary = False
                    log_now = step == 1 or step % run.log_every == 0 or step == run.steps
                    losses = trainer.step(step, log_now)
                    for s in living():
                        states[s].step = step
                    if log_now:
                        trainer.evaluate(step, losses)
                    if run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
                        for s in living():
                            checkpoint(s)
                    at_boundary = True
                    check_interrupt()
            for s in living():
                checkpoint(s)
                writers[s].save_model(jobs._model_payload(settings[s], trainer.nets[s], (trainer.task.input_size,
                                                                                        trainer.task.output_size)))
                summaries[s].update(jobs.train_outcome(trainer.task, writers[s], settings[s].root.train.success_window),
                                    status="ok")
        except KeyboardInterrupt:
            for s in living():  # a KeyboardInterrupt mid-step (outside a StopGuard): the periodic checkpoints stay
                if at_boundary:
                    checkpoint(s)
                summaries[s]["status"] = "interrupted"
        except Exception as err:  # noqa: BLE001 - recorded in every member still running, not lost
            for s in living():
                summaries[s].update(status="failed", error=f"{type(err).__name__}: {err}")
        with guard.finishing():
            for s, (writer, summary, state) in enumerate(zip(writers, summaries, states)):
                if trainer.outcome[s] is not None:
                    outcome = dict(trainer.outcome[s])
                    # as jobs.train counts: a loss found not finite stops the step before it counts
                    state.step = outcome["diverged_step"] - (outcome.pop("what") == "the loss")
                    summary.update(outcome)
                jobs.close(writer, summary, state)
    return summaries


def ensemble_groups(settings: list) -> tuple[list[list[int]], list[int]]:
    """The jobs (their JobSettings) that train as one batched model (groups of indices, each of
    one shape and of two members or more) and those that run alone (a method that acts during
    training, or a shape no other job shares)."""
    groups: dict[tuple, list[int]] = {}
    alone = []
    for i, s in enumerate(settings):
        key = _shape_key(s)
        if not (batchable(s.method.entry.load()) and key[-2]):
            alone.append(i)
        else:
            groups.setdefault(key[:-2] + (key[-1] or "all",), []).append(i)  # no SAL: any rnn_inputs will do
    together = [group for group in groups.values() if len(group) > 1]
    alone += [group[0] for group in groups.values() if len(group) == 1]
    return together, sorted(alone)


def ensemble_tasks(settings: list, workers: int = 1) -> list[list[int]]:
    """The sweep's processes (one launcher job each): each batched group, then each job that
    runs alone. With fewer groups than `workers` (joblib's parallel processes), the largest
    group is halved until every worker has one, as long as a half keeps two members: two
    processes of a half each use both cores, where one process cannot (a 32-wide layer
    gains little from a second thread)."""
    together, alone = ensemble_groups(settings)
    together.sort(key=len, reverse=True)
    while 0 < len(together) < workers and len(together[0]) >= 4:
        largest = together.pop(0)
        half = (len(largest) + 1) // 2
        together = sorted([*together, largest[:half], largest[half:]], key=len, reverse=True)
    return together + [[i] for i in alone]


def run_task(members: list[dict], out: Path) -> dict[int, str]:
    """One process of `sweep --ensemble`: `members` ({index, config, overrides}) write OUT/index.
    Those without a folder yet train as one batched model (two or more); the others (a run
    alone, a resumed or requeued job) continue alone from their checkpoints. Returns each
    member's error message ("" if none) by index; KeyboardInterrupt if one was interrupted."""
    def folder(member):
        return out / str(member["index"])

    fresh = [m for m in members if not (folder(m) / "config.yaml").is_file()]
    batched = fresh if len(fresh) > 1 else []
    errors = {m["index"]: "" for m in members}
    if batched:
        summaries = train_ensemble([m["config"] for m in batched], [folder(m) for m in batched],
                                   [m["overrides"] for m in batched])
        if any(summary["status"] == "interrupted" for summary in summaries):
            raise KeyboardInterrupt  # every member has its checkpoint
    for member in [m for m in members if m not in batched]:
        try:
            summary = jobs.run_or_resume("train", member["config"], folder(member), member["overrides"])
        except (ConfigError, RunFolderError) as err:
            errors[member["index"]] = str(err)
            continue
        if summary["status"] == "interrupted":
            raise KeyboardInterrupt
    return errors


PLAN = "ensembles.json"  # in the sweep folder: what each process of `sweep --ensemble` trains


def sweep_ensembles(jobs_overrides: list[list[str]], out: Path, launcher: str = "basic",
                    overrides: list[str] = (), say=print, quiet: bool = False) -> list[tuple[list[str], Path, str]]:
    """`salrun sweep --ensemble`: the grid's train jobs, grouped by `ensemble_tasks`, each task one
    job of the launcher (basic: one after the other in this process; joblib: side by side; SLURM:
    one cluster job each); job i writes OUT/i as a sweep's launcher would. A job whose folder
    exists (sweep --resume) continues alone from its checkpoint. Returns (overrides, folder,
    error) per job, as `launch.run_sweep`."""
    from salrun.launch import compose_grid, ensemble_workers, run_ensemble_tasks, with_default_experiment

    jobs_overrides = [[o for o in with_default_experiment("train", job) if not o.startswith("hydra.")]
                      for job in jobs_overrides]
    cfgs = compose_grid("train", jobs_overrides)
    folders = [out / str(i) for i in range(len(cfgs))]
    fresh = [i for i, folder in enumerate(folders) if not (folder / "config.yaml").is_file()]
    tasks = ensemble_tasks([job_settings("train", cfgs[i]) for i in fresh],
                           ensemble_workers(launcher, overrides, len(fresh)))
    tasks = [[fresh[i] for i in task] for task in tasks] + [[i] for i in range(len(cfgs)) if i not in fresh]
    batched = [task for task in tasks if len(task) > 1]
    alone = sorted(task[0] for task in tasks if len(task) == 1)
    say(f"ensemble: {sum(map(len, batched))} jobs in {len(batched)} batched model(s); "
        f"{len(alone)} alone" + (f" (jobs {', '.join(map(str, alone))})" if alone else ""))
    plan = [[{"index": i, "config": cfgs[i], "overrides": jobs_overrides[i]} for i in task] for task in tasks]
    write_atomic(out / PLAN, json.dumps({"tasks": plan}))
    task_errors = run_ensemble_tasks(overrides, launcher, out, len(tasks), quiet)
    errors = [""] * len(cfgs)
    for task, error in zip(plan, task_errors):
        for member in task:
            errors[member["index"]] = error if isinstance(error, str) else error.get(member["index"], "")
    return [(o, folder, error) for o, folder, error in zip(jobs_overrides, folders, errors)]
