"""Jobs: plain functions from a resolved config (a dict) to a run folder.

`run_job` is the one entry point. It checks the config (`salrun.settings.job_settings`),
writes config.yaml, then runs the job, and whatever happens (success, divergence, an
exception, Ctrl-C) it leaves metrics.csv and summary.json with the status. The job
bodies read the typed settings only, never the raw config.

Training writes DIR/checkpoint.pt every `train.checkpoint_every` steps, on interrupt and
at the end: model, optimizer, method state (SAL's averages), every RNG state, the step
and how many rows metrics.csv held. `run_job(..., resume=True)` continues from it and
ends with the same metrics as a run that was never stopped.
"""
from __future__ import annotations

import contextlib
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from datetime import datetime, timezone
from typing import Any, Callable

import torch
import yaml

from salrun.activity import probe_for
from salrun.lyapunov import DEAD_RMS, on_attractor, random_states, state_rms
from salrun.methods import Method, TaskSampler, spectral_radius
from salrun.models import ElmanRNN
from salrun.results import RunFolderError, RunWriter, claim_folder, read_config, read_summary
from salrun.runtime import (interrupts_at_step_boundaries, prepare, resolve_device, rng_state, set_rng_state,
                            stop_guard)
from salrun.neurons import log_sensitivity, sensitivity
from salrun.settings import ConfigError, JobSettings, build, entry, job_settings

Progress = Callable[[int, dict], None]  # (steps done, latest metrics)
EXIT_CODES = {"ok": 0, "failed": 1, "diverged": 3, "interrupted": 130}
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_KEYS = {"step", "config", "model", "optimizer", "method", "rng", "metric_rows", "wall_seconds"}


class Diverged(RuntimeError):
    def __init__(self, step: int, what: str):
        super().__init__(f"{what} is not finite at step {step}")
        self.step = step


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
    at_boundary: bool = True            # between two steps, so a checkpoint now is consistent
    checkpoint: dict | None = None      # the checkpoint a resumed run continues from

    def begin(self) -> None:
        """The set-up is done; the work (training, the study) starts now."""
        self.started = time.perf_counter()

    def wall_seconds(self) -> float:
        return self.wall_before + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def startup_seconds(self) -> float:
        return self.startup_before + (self.started if self.started is not None else time.perf_counter()) - self.origin


@dataclass
class Network:
    """What train and lyapunov both set up: the seeded model on its device, its init and method applied."""

    model: torch.nn.Module
    probe: Any
    method: Method
    generator: torch.Generator   # the job's data stream
    device: torch.device


def run_job(command: str, cfg: dict, out_dir: Path, progress: Progress | None = None,
            resume: bool = False, overrides: list[str] | None = None) -> dict:
    """Run `command` ("train" or "lyapunov") and write the run folder; returns the summary.
    `overrides`: the command line's, recorded in overrides.yaml and the summary.

    With `resume`, continue a train run from out_dir's checkpoint (from step 0 if it
    has none); `cfg` must be the config the run started with. The folder is claimed first
    (salrun.results.claim_folder): a second writer gets FolderBusy before anything is written."""
    with claim_folder(out_dir, "run", f"salrun {command}"):
        return _run_claimed(command, cfg, out_dir, progress, resume, overrides)


def _run_claimed(command: str, cfg: dict, out_dir: Path, progress: Progress | None, resume: bool,
                 overrides: list[str] | None) -> dict:
    settings = job_settings(command, cfg)
    checkpoint = load_checkpoint(Path(out_dir)) if resume and command == "train" else None
    if checkpoint is not None and checkpoint["config"] != cfg:
        raise ConfigError(f"{Path(out_dir) / 'config.yaml'} differs from the config its checkpoint was made with")
    writer = RunWriter(out_dir, keep_rows=checkpoint["metric_rows"] if checkpoint else 0)
    writer.write_config(cfg)
    if overrides is None:  # a resumed run keeps the overrides it started with
        overrides = read_overrides(Path(out_dir))
    else:
        writer.write_overrides(overrides)
    summary = new_summary(command, settings, Path(out_dir), overrides)
    state = RunState(started=None)
    if checkpoint is not None:
        state = RunState(step=checkpoint["step"], wall_before=checkpoint["wall_seconds"], started=None,
                         startup_before=checkpoint.get("startup_seconds", 0.0), origin=state.origin,
                         checkpoint=checkpoint)
        summary["resumed_from_step"] = checkpoint["step"]
    # A stop by a second signal records the job as interrupted where it is (even in set-up).
    with stop_guard(lambda: writer.write_summary(ended(dict(summary), state, writer, status="interrupted"))) as guard:
        try:
            summary.update((train if command == "train" else lyapunov)(settings, writer, state, progress))
            summary["status"] = "ok"
        except Diverged as err:
            summary.update(status="diverged", error=str(err), diverged_step=err.step)
        except KeyboardInterrupt:
            summary.update(status="interrupted")
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed job is recorded, not lost
            summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        with guard.finishing():
            close(writer, summary, state)
    return summary


def new_summary(command: str, settings: JobSettings, folder: Path, overrides: list[str]) -> dict:
    cfg = settings.config
    return {"status": "running", "command": command, "experiment": cfg.get("experiment"),
            **{kind: getattr(settings, kind).name for kind in ("method", "init", "model", "task")},
            "seed": settings.root.seed, "steps": 0, **provenance(folder, overrides, settings.root.device)}


def provenance(folder: Path, overrides: list[str], device: str) -> dict:
    """Where the run is and what made it, so that a summary.json read alone can be traced and rerun."""
    import salrun

    resolved_device = resolve_device(device)
    name = f" ({torch.cuda.get_device_name(resolved_device)})" if resolved_device.type == "cuda" else ""
    return {"folder": str(Path(folder).resolve()), "overrides": list(overrides),
            "versions": {"salrun": salrun.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "device": f"{resolved_device}{name}"}


def read_overrides(folder: Path) -> list[str]:
    """The overrides recorded in folder/overrides.yaml ([] for a run made before it existed)."""
    path = Path(folder) / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        recorded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):  # provenance only: a damaged record must not stop a resume
        return []
    return [str(o) for o in recorded] if isinstance(recorded, list) else []


def ended(summary: dict, state: RunState, writer: RunWriter, **update) -> dict:
    summary.update(update, steps=state.step, wall_seconds=round(state.wall_seconds(), 3),
                   startup_seconds=round(state.startup_seconds(), 3))
    summary.setdefault("final", writer.latest())
    return summary


def close(writer: RunWriter, summary: dict, state: RunState) -> None:
    """The run folder's last words: every metric row, and the summary with its status."""
    ended(summary, state, writer)
    writer.flush_metrics()
    writer.write_summary(summary)


def _network(s: JobSettings, input_size: int, output_size: int, task=None) -> Network:
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


def _model_payload(s: JobSettings, net: Network, task_sizes: tuple[int, int]) -> dict:
    return {"state_dict": net.model.state_dict(), "model": s.model.name,
            "settings": asdict(net.model.settings), "input_size": task_sizes[0], "output_size": task_sizes[1],
            "read_steps": getattr(net.model, "read_steps", 1), "method_state": net.method.state_dict()}


def load_model(path: Path):
    """Rebuild the model of a run: `path` is its run folder or its model.pt. RunFolderError
    (one line) if there is no model there."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
        if not path.is_file():
            raise RunFolderError(f"{path.parent} holds no model.pt (not a run folder, or the run did not finish)")
    if not path.is_file():
        raise RunFolderError(f"{path}: no such file (give a run folder or its model.pt)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is not a checkpoint
        raise RunFolderError(f"{path} is not a salrun model ({type(err).__name__})") from None
    if not isinstance(payload, dict) or not {"model", "settings", "state_dict"} <= set(payload):
        raise RunFolderError(f"{path} is not a salrun model")
    model_entry = entry("model", payload["model"])
    settings = build(model_entry.settings, payload["settings"], "model")
    model = model_entry.load()(payload["input_size"], payload["output_size"], settings)
    model.load_state_dict(payload["state_dict"])
    if payload.get("read_steps", 1) > 1:
        model.read_steps = payload["read_steps"]
    return model


def load_checkpoint(out_dir: Path) -> dict | None:
    """out_dir's checkpoint, or None if it has none; RunFolderError if it is unreadable."""
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise RunFolderError(f"{path} is unreadable ({type(err).__name__}); delete it to restart the run "
                             "from step 0") from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("rows"), list):  # before metric_rows: every row
        checkpoint["metric_rows"] = len(checkpoint.pop("rows"))
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= set(checkpoint):
        raise RunFolderError(f"{path} is not a salrun checkpoint")
    return checkpoint


def _save_checkpoint(writer: RunWriter, cfg: dict, net: Network, optimizer, state: RunState) -> None:
    writer.flush_metrics(sync=True)  # metrics.csv holds every row the checkpoint counts
    writer.save_checkpoint({
        "step": state.step, "config": cfg, "model": net.model.state_dict(), "optimizer": optimizer.state_dict(),
        "method": net.method.state_dict(), "rng": rng_state(net.generator), "metric_rows": writer.row_count,
        "wall_seconds": state.wall_seconds(), "startup_seconds": state.startup_seconds()})


def _restore(checkpoint: dict, net: Network, optimizer) -> None:
    net.model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    net.method.load_state_dict(checkpoint["method"])
    set_rng_state(net.generator, checkpoint["rng"])


def resumable_config(out_dir: Path) -> dict:
    """The config of the train run in out_dir if it can resume; RunFolderError naming the problem if not."""
    folder = Path(out_dir)
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a run folder (no such folder)")
    if not (folder / "config.yaml").is_file():
        raise RunFolderError(f"{folder} has no config.yaml (not a run folder, or the run never started)")
    cfg = read_config(folder)
    if (folder / "summary.json").is_file():
        summary = read_summary(folder)
        if not isinstance(summary, dict):
            raise RunFolderError(f"{folder / 'summary.json'} is not a salrun summary")
        if summary.get("command", "train") != "train":
            raise RunFolderError(f"{folder} is a {summary.get('command')} run; only train runs resume")
        if summary.get("status") == "ok":
            raise RunFolderError(f"{folder} already completed (status ok); nothing to resume")
        if summary.get("status") == "diverged":
            raise RunFolderError(f"{folder} diverged at step {summary.get('diverged_step')}; "
                                 "resuming would diverge again")
    if not isinstance(cfg, dict):
        raise RunFolderError(f"{folder / 'config.yaml'} is not a salrun config")
    missing = [key for key in ("model", "task", "method", "train") if key not in cfg]
    if missing:
        raise RunFolderError(f"{folder / 'config.yaml'} is not a salrun train config (no {missing[0]})")
    try:
        job_settings("train", cfg)
    except ConfigError as err:
        raise RunFolderError(f"{folder / 'config.yaml'}: {err}") from None
    load_checkpoint(folder)
    return cfg


def run_or_resume(command: str, cfg: dict, out_dir: Path, overrides: list[str] | None = None) -> dict:
    """A sweep job (or one a cluster requeued): skip it if its folder already completed with
    this config, continue it from its checkpoint if it has one, else start it."""
    folder = Path(out_dir)
    if not (folder / "config.yaml").is_file():
        return run_job(command, cfg, folder, overrides=overrides)
    if read_config(folder) != cfg:
        raise RunFolderError(f"{folder} holds a run with another config; not overwriting it")
    if (folder / "summary.json").is_file():
        summary = read_summary(folder)
        if isinstance(summary, dict) and summary.get("status") == "ok":
            return summary
    return run_job(command, cfg, folder, resume=True)


@torch.no_grad()
def _layer_metrics(net: Network, writer: RunWriter, step: int) -> None:
    """Per-layer gradient norm and RMS sensitivity (per time step for the RNN), and the log-sensitivity.
    Each metric is computed for all layers at once and read back with one tolist: a float()
    per layer is a Python round trip per layer, which 300 layers (or steps) notice."""
    model, layers = net.model, net.probe.layers()
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
    grads = [(index, linear.weight.grad) for index, linear in enumerate(model.linears())
             if linear.weight.grad is not None]
    if grads:
        for (index, _), norm in zip(grads, torch.stack(torch._foreach_norm([g for _, g in grads])).tolist()):
            writer.log(step, "grad_norm", norm, index)
    every_s = [sensitivity(layer.output, layer.weights, layer.activation).reshape(-1) for layer in layers]
    for index, rms in enumerate(torch.stack([s.pow(2).mean().sqrt() for s in every_s]).tolist()):
        writer.log(step, "sensitivity_rms", rms, index)
    writer.log(step, "log_sensitivity", float(log_sensitivity(torch.cat(every_s))))


def _optimizer(s: JobSettings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam and SGD with their multi-tensor kernels: the MLP has 602 parameters, and the default
    per-parameter loop on the CPU is most of a step (measured: benchmarks/run.py --only loops)."""
    optim, params = s.root.optim, list(model.parameters())
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, fused=fused, foreach=None if fused else True)
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, fused=fused, foreach=None if fused else True)


def _train_step(s: JobSettings, net: Network, task, optimizer, writer: RunWriter, step: int, log_now: bool):
    """One BP (BPTT) step with the method's loss term and update; the per-layer metrics are
    read between backward and the update, on the gradients of this step."""
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
        raise Diverged(step, "the loss")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if log_now:
        _layer_metrics(net, writer, step)
    if s.root.optim.clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.root.optim.clip)
    optimizer.step()
    net.method.after_step()
    if hasattr(model, "apply_mask_"):
        model.apply_mask_()
    return loss


@torch.no_grad()
def _evaluate(net: Network, task, test: tuple[torch.Tensor, torch.Tensor], loss, writer: RunWriter,
              step: int) -> None:
    """The test metric and loss, logged with the training loss and appended to metrics.csv."""
    net.model.eval()
    prediction = net.model(test[0])
    test_loss = float(task.loss(prediction, test[1]))
    metric = task.evaluate(prediction, test[1])
    if not all(torch.isfinite(p).all() for p in net.model.parameters()):
        raise Diverged(step, "a weight")
    writer.log_many(step, {"loss": loss.item(), "test_loss": test_loss, task.metric: metric})
    writer.flush_metrics()


def train(s: JobSettings, writer: RunWriter, state: RunState, progress: Progress | None) -> dict:
    """BP (or BPTT) with the chosen method; logs every `train.log_every` steps."""
    task = s.task.entry.load()(s.task.settings)  # its data come from fixed seeds of their own
    net = _network(s, task.input_size, task.output_size, task)
    optimizer = _optimizer(s, net.model)
    test = tuple(t.to(net.device) for t in task.test_set())
    if state.checkpoint is not None:
        _restore(state.checkpoint, net, optimizer)
    run = s.root.train
    state.begin()
    with interrupts_at_step_boundaries() as check_interrupt:
        try:
            for step in range(state.step + 1, run.steps + 1):
                state.at_boundary = False
                log_now = step == 1 or step % run.log_every == 0 or step == run.steps
                loss = _train_step(s, net, task, optimizer, writer, step, log_now)
                state.step = step
                if log_now:
                    _evaluate(net, task, test, loss, writer, step)
                if run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
                    _save_checkpoint(writer, s.config, net, optimizer, state)
                state.at_boundary = True
                if progress is not None:
                    progress(step, writer.latest())
                check_interrupt()
        except KeyboardInterrupt:
            if state.at_boundary:  # else the periodic checkpoint stays the latest consistent state
                _save_checkpoint(writer, s.config, net, optimizer, state)
            raise
    writer.save_model(_model_payload(s, net, (task.input_size, task.output_size)))
    _save_checkpoint(writer, s.config, net, optimizer, state)
    return train_outcome(task, writer, run.success_window)


def train_outcome(task, writer: RunWriter, window: int) -> dict:
    """The summary's verdict, for the single run and each ensemble member alike: success is judged
    on `judged`, the mean test metric of the last `window` evaluations (fewer if fewer were made)."""
    recent = writer.history(task.metric)[-window:]
    judged = sum(recent) / len(recent)
    return {"final": writer.latest(), "judged": judged, "success": task.succeeded(judged), "metric": task.metric,
            "chance": task.chance, "threshold": task.threshold,
            "criterion": f"{task.criterion}, mean of the last {window} evaluations"}


def lyapunov(s: JobSettings, writer: RunWriter, state: RunState, progress: Progress | None) -> dict:
    """The chaos study: the method (SAL by default) adapts an RNN that runs on its own
    (or driven by random input), its state kicked by N(0, lyapunov.noise²) before every
    chunk so that it never dies on the fixed point h = 0; every `log_every` updates the
    MLE and the log-sensitivity are measured on the attractor (`salrun.lyapunov.on_attractor`)."""
    study = s.root.lyapunov
    net = _network(s, study.input_size, 1)  # init orthogonal or critical: no data needed
    model, generator, device = net.model, net.generator, net.device
    measuring = torch.Generator().manual_seed(s.root.seed)  # its own stream: measuring never changes the adaptation
    h = random_states(study.trajectories, model.settings.hidden, generator).to(device)
    seen = h[None]  # the states the method saw in the last chunk
    warnings: list[str] = []

    def inputs(steps: int):
        return torch.randn(steps, study.trajectories, study.input_size, generator=generator).to(device)

    def measure(step: int) -> None:
        w_hh = model.recurrent_weight().detach()
        m = on_attractor(w_hh, model.weight_ih, model.bias, study.trajectories, study.transient,
                         study.measure_steps, study.k, measuring)
        spectrum = {f"le_{i}": value for i, value in enumerate(m.exponents, 1)} if study.k > 1 else {}
        if not (torch.isfinite(torch.tensor([m.mle, m.log_sensitivity, *spectrum.values()])).all()):
            raise Diverged(step, "the MLE")
        alive = float(state_rms(seen).min())
        writer.log_many(step, {"mle": m.mle, "mle_std": m.mle_std, **spectrum, "log_sensitivity": m.log_sensitivity,
                               "state_rms": alive, "attractor_rms": float(state_rms(m.state).mean()),
                               "spectral_radius": float(spectral_radius(w_hh.double()))})
        writer.flush_metrics()
        if alive < DEAD_RMS and not warnings:
            warnings.append(f"step {step}: an adapting trajectory collapsed onto h = 0 (state RMS {alive:.1e} < "
                            f"{DEAD_RMS:g}); the method sees tanh'(0) = 1 there (lyapunov.noise > 0 keeps it alive)")
            print(f"warning: {warnings[0]}", file=sys.stderr)

    model.train()
    state.begin()
    measure(0)
    for step in range(1, study.sal_steps + 1):
        net.probe.clear()
        with torch.no_grad():
            if study.fresh_chunks:
                h = random_states(study.trajectories, model.settings.hidden, generator).to(device)
            if study.noise > 0:
                h = h + study.noise * torch.randn(h.shape, generator=generator).to(device)
            seen = torch.stack(model.run(inputs(study.chunk), h))
            h = seen[-1]
        net.method.after_step()
        model.apply_mask_()
        state.step = step
        if step % study.log_every == 0 or step == study.sal_steps:
            measure(step)
        if progress is not None:
            progress(step, writer.latest())
    writer.save_model(_model_payload(s, net, (study.input_size, 1)))
    return {"final": writer.latest(), "warnings": warnings}
