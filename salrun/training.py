"""The run API: one training loop for one run or for S runs trained as one batched model.

    run = Run.setup(members)          # members: each run's settings, folder writer, clock and summary
    run.train(progress)               # the loop: step, evaluate, checkpoint, interrupts
    run.finish()                      # model.pt, the last checkpoint and each member's verdict

A `Member` is one run folder. `Run.setup` picks the engine that computes a step
(salrun.engines): `SingleEngine` for one member, `StackedEngine` for several of one shape, where
the members are a batch dimension. Everything else (when to log and evaluate, checkpoints,
Ctrl-C at a step boundary, a member that diverges, each member's summary) is this loop's, for
both. `salrun.jobs.run_jobs` writes the folders around it; benchmarks, docs scripts and tests
drive a `Run` (or its engine) directly.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from salrun.engines import MembersDiffer, Network, SingleEngine, StackedEngine, build_network
from salrun.results import RunWriter
from salrun.runtime import interrupts_at_step_boundaries, rng_state
from salrun.settings import JobSettings

Progress = Callable[[int, dict], None]  # (steps done, latest metrics)
# Called after each evaluation with the step and the members (salrun.tune reports a trial's metric
# to Optuna here and raises `Stop` to prune it).
Watch = Callable[[int, list["Member"]], None]
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = {"step", "config", "model", "optimizer", "method", "rng", "metric_rows", "wall_seconds"}

__all__ = ["CHECKPOINT", "CHECKPOINT_KEYS", "Member", "MembersDiffer", "Network", "Progress", "Run", "RunState",
           "Stop", "Watch", "build_network", "model_payload", "train_outcome"]

_process_start_claimed = False


def _startup_origin() -> float:
    """When a job's start-up began: for the first job of a process, the process's start
    (it pays the imports); for the others, now."""
    global _process_start_claimed
    import salrun

    first, _process_start_claimed = not _process_start_claimed, True
    return salrun.STARTED_AT if first else time.perf_counter()


@dataclass
class RunState:
    """How far a job has come: what its summary and its checkpoints record. Its time is two
    clocks: start-up (imports, data, model build) until `begin`, then the work itself
    (wall_seconds), so that a sweep's first job and its others cost the same per step."""

    step: int = 0
    wall_before: float = 0.0            # wall seconds spent before a resume
    startup_before: float = 0.0         # start-up seconds of the sessions before a resume
    origin: float = field(default_factory=_startup_origin)
    started: float | None = field(default_factory=time.perf_counter)  # None: the work has not begun
    checkpoint: dict | None = None      # the checkpoint a resumed run continues from

    def begin(self) -> None:
        """The set-up is done; the work (training, the study) starts now."""
        self.started = time.perf_counter()

    def wall_seconds(self) -> float:
        return self.wall_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def startup_seconds(self) -> float:
        return self.startup_before + (self.started if self.started is not None else time.perf_counter()) - self.origin


@dataclass
class Member:
    """One run of a Run: its settings, its folder's writer, its clock and its summary so far."""

    settings: JobSettings
    writer: RunWriter
    state: RunState = field(default_factory=RunState)
    summary: dict = field(default_factory=dict)
    logger: Any = None  # its salrun.loggers.Logger (the `logger` group): told after each evaluation


class Stop(Exception):
    """Raised by a `Watch` to end the training early (a pruned tuning trial); `salrun.jobs`
    records it in each living member's summary: status "pruned", and the message as its error."""


def model_payload(s: JobSettings, net: Network, task_sizes: tuple[int, int]) -> dict:
    """model.pt: the weights and what rebuilds the model (`salrun.jobs.load_model`)."""
    return {"state_dict": net.model.state_dict(), "model": s.model.name,
            "settings": asdict(net.model.settings), "input_size": task_sizes[0], "output_size": task_sizes[1],
            "read_steps": getattr(net.model, "read_steps", 1), "method_state": net.method.state_dict()}


def train_outcome(task, writer: RunWriter, window: int) -> dict:
    """The summary's verdict: success is judged on `judged`, the mean test metric of the last
    `window` evaluations (fewer if fewer were made)."""
    recent = writer.history(task.metric)[-window:]
    judged = sum(recent) / len(recent)
    return {"final": writer.latest(), "judged": judged, "success": task.succeeded(judged), "metric": task.metric,
            "chance": task.chance, "threshold": task.threshold,
            "criterion": f"{task.criterion}, mean of the last {window} evaluations"}


class Run:
    """Members trained together by one engine, through one loop."""

    def __init__(self, members: list[Member], engine: SingleEngine | StackedEngine, watch: Watch | None = None):
        self.members, self.engine, self.watch = members, engine, watch
        self.at_boundary = True  # between two steps, so a checkpoint now is consistent
        s = members[0].settings  # the members share their schedules (salrun.settings.batch_key)
        self.schedules = [(choice.entry.load(), choice.settings) for choice in (s.schedule, s.sal_schedule)]
        self.scheduled = (s.schedule.name, s.sal_schedule.name) != ("constant", "constant")

    def factors(self, step: int) -> tuple[float, float]:
        """The schedules' factors of the learning rate and of SAL's rate for training step `step`
        (1-based; the first step runs at the schedule's start, as torch's schedulers do)."""
        total = self.members[0].settings.root.train.steps
        optimizer, sal = (function(settings, step - 1, total) for function, settings in self.schedules)
        return optimizer, sal

    @classmethod
    def setup(cls, members: list[Member], dtype: torch.dtype | None = None, watch: Watch | None = None) -> "Run":
        """Build each member's network as its single run builds it (seed, init, method), then the
        engine: one member alone (resuming from its state's checkpoint, if any), several stacked.
        MembersDiffer (before any step) if several cannot train as one batched model."""
        settings = [m.settings for m in members]
        if len(members) == 1:
            engine = SingleEngine.build(settings[0], members[0].state.checkpoint)
        else:
            if any(m.state.checkpoint is not None for m in members):
                raise MembersDiffer("a resumed run continues alone")
            engine = StackedEngine(settings, dtype)
        return cls(members, engine, watch)

    @property
    def living(self) -> list[int]:
        return [s for s, alive in enumerate(self.engine.alive) if alive]

    def writers(self) -> list[RunWriter | None]:
        """Each member's writer while it lives (None once it diverged: it logs nothing more)."""
        return [m.writer if alive else None for m, alive in zip(self.members, self.engine.alive)]

    def step(self, step: int, log_now: bool) -> list[torch.Tensor | None]:
        """One training step of every living member (with its per-layer metrics when `log_now`)."""
        if self.scheduled:
            self.engine.scale_rates(*self.factors(step))
        losses = self.engine.step(step, log_now, self.writers())
        self._record(self.engine.diverged)
        for s in self.living:
            self.members[s].state.step = step
        return losses

    def evaluate(self, step: int, losses: list[torch.Tensor | None]) -> None:
        """Each living member's test metric and loss, logged with its training loss (and, under a
        schedule, the learning rate and SAL's rate factor of this step); then each member's
        logger, and the watch (which may raise Stop)."""
        if self.scheduled:
            optimizer, sal = self.factors(step)
            for s in self.living:
                self.members[s].writer.log_many(step, {"lr": self.members[s].settings.root.optim.lr * optimizer,
                                                       "sal_rate_factor": sal})
        self.engine.evaluate(step, losses, self.writers())
        self._record(self.engine.diverged)
        for member in self.members:
            if member.logger is not None:
                member.logger.update(step)
        if self.watch is not None:
            self.watch(step, self.members)

    def checkpoint(self) -> None:
        """checkpoint.pt of every living member: what `resume` continues from."""
        for s in self.living:
            member = self.members[s]
            net, optimizer = self.engine.export(s)
            member.writer.flush_metrics(sync=True)  # metrics.csv holds every row the checkpoint counts
            member.writer.save_checkpoint({
                "step": member.state.step, "config": member.settings.config, "model": net.model.state_dict(),
                "optimizer": optimizer.state_dict(), "method": net.method.state_dict(),
                "rng": rng_state(net.generator), "metric_rows": member.writer.row_count,
                "wall_seconds": member.state.wall_seconds(), "startup_seconds": member.state.startup_seconds()})

    def train(self, progress: Progress | None = None) -> None:
        """Step from where the members are to train.steps; log every `train.log_every` steps. On
        Ctrl-C at a step boundary every living member's checkpoint is written, then it re-raises."""
        run = self.members[0].settings.root.train
        for member in self.members:
            member.state.begin()
        with interrupts_at_step_boundaries() as check_interrupt:
            try:
                for step in range(self.members[0].state.step + 1, run.steps + 1):
                    self.at_boundary = False
                    log_now = step == 1 or step % run.log_every == 0 or step == run.steps
                    losses = self.step(step, log_now)
                    if log_now and self.living:
                        self.evaluate(step, losses)
                    if run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
                        self.checkpoint()
                    self.at_boundary = True
                    if not self.living:
                        break
                    if progress is not None:
                        progress(step, self.members[0].writer.latest())
                    check_interrupt()
            except KeyboardInterrupt:
                if self.at_boundary:  # else the periodic checkpoints stay the latest consistent state
                    self.checkpoint()
                raise

    def finish(self) -> None:
        """The living members' model.pt, last checkpoint and verdict (status ok)."""
        task = self.engine.task
        self.checkpoint()
        for s in self.living:
            member = self.members[s]
            net, _ = self.engine.export(s)
            member.writer.save_model(model_payload(member.settings, net, (task.input_size, task.output_size)))
            member.summary.update(train_outcome(task, member.writer, member.settings.root.train.success_window),
                                  status="ok")

    def _record(self, diverged: dict[int, tuple[int, str]]) -> None:
        """A member whose loss or weights stopped being finite: its summary says where. A loss
        found not finite stops the step before it counts."""
        for s, (step, what) in diverged.items():
            member = self.members[s]
            member.state.step = step - (what == "the loss")
            member.summary.update(status="diverged", error=f"{what} is not finite at step {step}", diverged_step=step)
        diverged.clear()
