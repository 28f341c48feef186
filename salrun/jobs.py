"""Jobs: plain functions from a resolved config (a dict) to a run folder.

`run_job` is the one entry point. It writes config.yaml first, then runs
the job, and whatever happens (success, divergence, an exception, Ctrl-C)
it leaves metrics.csv and summary.json with the status. Only this layer
reads config; everything below takes settings dataclasses.

Training writes DIR/checkpoint.pt every `train.checkpoint_every` steps, on
interrupt and at the end: model, optimizer, method state (SAL's averages),
every RNG state, the step and the metric rows so far. `run_job(...,
resume=True)` continues from it and ends with the same metrics as a run
that was never stopped.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from salrun.results import RunFolderError, RunWriter
from salrun.settings import (METHOD_SETTINGS, MODEL_SETTINGS, SEQUENCE_TASKS, ConfigError, LyapunovSettings,
                             OptimSettings, TaskSettings, TrainSettings, build, check_combination, init_settings,
                             method_settings)

Progress = Callable[[int, dict], None]  # (steps done, latest metrics)
EXIT_CODES = {"ok": 0, "failed": 1, "diverged": 3, "interrupted": 130}
CHECKPOINT = "checkpoint.pt"


class Diverged(RuntimeError):
    def __init__(self, step: int, what: str):
        super().__init__(f"{what} is not finite at step {step}")
        self.step = step


def validate(command: str, cfg: dict) -> None:
    """Raise ConfigError if `cfg` cannot run as `command`; imports no torch."""
    _settings(command, cfg)


def _settings(command: str, cfg: dict) -> dict:
    model_name, method_name = cfg["model"].get("name"), cfg["method"].get("name")
    if model_name not in MODEL_SETTINGS:
        raise ConfigError(f"unknown model {model_name!r} (choose from: {', '.join(MODEL_SETTINGS)})")
    if method_name not in METHOD_SETTINGS:
        raise ConfigError(f"unknown method {method_name!r} (choose from: {', '.join(METHOD_SETTINGS)})")
    if command == "lyapunov" and model_name != "rnn":
        raise ConfigError(f"lyapunov needs model=rnn, got model={model_name}")
    for key in ("seed", "threads"):
        if isinstance(cfg.get(key), bool) or not isinstance(cfg.get(key), int) or cfg[key] < 0:
            raise ConfigError(f"{key} must be a non-negative integer, got {cfg.get(key)!r}")
    settings = {
        "model": build(MODEL_SETTINGS[model_name], cfg["model"], "model"),
        "method": method_settings(method_name, cfg["method"]),
        "task": build(TaskSettings, cfg["task"], "task"),
        "optim": build(OptimSettings, cfg["optim"], "optim"),
        "train": build(TrainSettings, cfg["train"], "train"),
        "lyapunov": build(LyapunovSettings, cfg["lyapunov"], "lyapunov"),
    }
    if command == "lyapunov":
        settings["lyapunov"].check_hidden(settings["model"].hidden)
    settings["init_name"], settings["init"] = init_settings(cfg.get("init"))
    if command == "train":
        sequential = settings["task"].name in SEQUENCE_TASKS
        if sequential != (model_name == "rnn"):
            raise ConfigError(f"task {settings['task'].name} needs model={'rnn' if sequential else 'mlp'}, "
                              f"got model={model_name}")
    check_combination(command, model_name, settings["model"], method_name, settings["method"], settings["init_name"])
    return settings


def run_job(command: str, cfg: dict, out_dir: Path, progress: Progress | None = None,
            resume: bool = False) -> dict:
    """Run `command` ("train" or "lyapunov") and write the run folder; returns the summary.

    With `resume`, continue a train run from out_dir's checkpoint (from step 0 if it
    has none); `cfg` must be the config the run started with."""
    settings = _settings(command, cfg)
    checkpoint = load_checkpoint(Path(out_dir)) if resume and command == "train" else None
    if checkpoint is not None and checkpoint["config"] != cfg:
        raise ConfigError(f"{Path(out_dir) / 'config.yaml'} differs from the config its checkpoint was made with")
    writer = RunWriter(out_dir)
    writer.write_config(cfg)
    summary = {
        "status": "running", "command": command, "experiment": cfg.get("experiment"),
        "method": cfg["method"]["name"], "init": (cfg.get("init") or {}).get("name", "random"),
        "model": cfg["model"]["name"], "task": cfg["task"]["name"],
        "seed": cfg["seed"], "steps": 0,
    }
    body = train if command == "train" else lyapunov
    state: dict = {"step": 0, "wall_before": 0.0}
    if checkpoint is not None:
        writer.rows = [tuple(row) for row in checkpoint["rows"]]
        state.update(step=checkpoint["step"], checkpoint=checkpoint, wall_before=checkpoint["wall_seconds"])
        summary["resumed_from_step"] = checkpoint["step"]
    started = time.perf_counter()
    state["started"] = started
    try:
        summary.update(body(cfg, settings, writer, state, progress))
        summary["status"] = "ok"
    except Diverged as err:
        summary.update(status="diverged", error=str(err), diverged_step=err.step)
    except KeyboardInterrupt:
        summary.update(status="interrupted")
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - a failed job is recorded, not lost
        summary.update(status="failed", error=f"{type(err).__name__}: {err}")
    summary["steps"] = state["step"]
    summary["wall_seconds"] = round(state["wall_before"] + time.perf_counter() - started, 3)
    summary.setdefault("final", writer.latest())
    writer.flush_metrics()
    writer.write_summary(summary)
    return summary


def _model_payload(model, cfg: dict, task_sizes: tuple[int, int], method) -> dict:
    return {"state_dict": model.state_dict(), "model": cfg["model"]["name"],
            "settings": asdict(model.settings), "input_size": task_sizes[0], "output_size": task_sizes[1],
            "read_steps": getattr(model, "read_steps", 1), "method_state": method.state_dict()}


def load_checkpoint(out_dir: Path) -> dict | None:
    """out_dir's checkpoint, or None if it has none; RunFolderError if it is unreadable."""
    import torch

    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise RunFolderError(f"{path} is unreadable ({type(err).__name__}); delete it to restart the run "
                             "from step 0") from None
    keys = {"step", "config", "model", "optimizer", "method", "rng", "rows", "wall_seconds"}
    if not isinstance(checkpoint, dict) or not keys <= set(checkpoint):
        raise RunFolderError(f"{path} is not a salrun checkpoint")
    return checkpoint


def resumable_config(out_dir: Path) -> dict:
    """The config of the train run in out_dir if it can resume; RunFolderError naming the problem if not."""
    from salrun.results import read_config, read_summary

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
    try:
        validate("train", cfg)
    except ConfigError as err:
        raise RunFolderError(f"{folder / 'config.yaml'}: {err}") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise RunFolderError(f"{folder / 'config.yaml'} is not a salrun train config "
                             f"({type(err).__name__}: {err})") from None
    load_checkpoint(folder)
    return cfg


def run_or_resume(command: str, cfg: dict, out_dir: Path) -> dict:
    """A sweep job (or one a cluster requeued): skip it if its folder already completed with
    this config, continue it from its checkpoint if it has one, else start it."""
    from salrun.results import read_config, read_summary

    folder = Path(out_dir)
    if not (folder / "config.yaml").is_file():
        return run_job(command, cfg, folder)
    if read_config(folder) != cfg:
        raise RunFolderError(f"{folder} holds a run with another config; not overwriting it")
    if (folder / "summary.json").is_file():
        summary = read_summary(folder)
        if isinstance(summary, dict) and summary.get("status") == "ok":
            return summary
    return run_job(command, cfg, folder, resume=True)


def build_model(name: str, settings, input_size: int, output_size: int, generator):
    from salrun.models import ElmanRNN, MLP

    cls = ElmanRNN if name == "rnn" else MLP
    return cls(input_size, output_size, settings, generator=generator)


def load_model(path: Path):
    """Rebuild a model from a run folder's model.pt."""
    import torch

    from salrun.settings import InitSettings

    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    settings_cls = MODEL_SETTINGS[payload["model"]]
    raw = dict(payload["settings"])
    raw["init"] = InitSettings(**raw["init"])
    model = build_model(payload["model"], settings_cls(**raw), payload["input_size"], payload["output_size"], None)
    model.load_state_dict(payload["state_dict"])
    if payload.get("read_steps", 1) > 1:
        model.read_steps = payload["read_steps"]
    return model


def _layer_metrics(model, probe, writer: RunWriter, step: int) -> None:
    """Per-layer gradient norm and RMS sensitivity (per time step for the RNN)."""
    import torch

    with torch.no_grad():
        _log_layers(model, probe, writer, step)


def _log_layers(model, probe, writer: RunWriter, step: int) -> None:
    import torch

    from salrun.models import ElmanRNN
    from salrun.neurons import log_sensitivity, sensitivity

    layers = probe.layers()
    if isinstance(model, ElmanRNN):
        states = model.recorded_states()
        for t, h in enumerate(states):
            if h.grad is not None:
                writer.log(step, "grad_norm", float(h.grad.norm(dim=1).mean()), t)
        # Through time only the recurrent weights carry the signal: gain from h_{t-1} to h_t.
        s = sensitivity(layers[0].output, [model.recurrent_weight()]).reshape(len(states), -1)
        for t, rms in enumerate(s.pow(2).mean(1).sqrt().tolist()):
            writer.log(step, "sensitivity_rms", rms, t)
        writer.log(step, "log_sensitivity", float(log_sensitivity(s)))
        return
    for index, linear in enumerate(model.linears()):
        if linear.weight.grad is not None:
            writer.log(step, "grad_norm", float(linear.weight.grad.norm()), index)
    all_s = []
    for index, layer in enumerate(layers):
        s = sensitivity(layer.output, layer.weights, layer.activation)
        writer.log(step, "sensitivity_rms", float(s.pow(2).mean().sqrt()), index)
        all_s.append(s.pow(2).mean(0))
    writer.log(step, "log_sensitivity", float(0.5 * torch.log(torch.cat(all_s).mean())))


def train(cfg: dict, settings: dict, writer: RunWriter, state: dict, progress: Progress | None) -> dict:
    """BP (or BPTT) with the chosen method; logs every `train.log_every` steps."""
    import torch

    from salrun.activity import probe_for
    from salrun.inits import apply_init
    from salrun.methods import TaskSampler, make_method
    from salrun.runtime import interrupts_at_step_boundaries, prepare, resolve_device, rng_state, set_rng_state
    from salrun.tasks import make_task

    generator = prepare(cfg["seed"], cfg["threads"])
    device = resolve_device(cfg["device"])
    run, optim_s = settings["train"], settings["optim"]
    task = make_task(settings["task"])
    model = build_model(cfg["model"]["name"], settings["model"], task.input_size, task.output_size, generator)
    model.to(device)
    if task.read_steps > 1:
        model.read_steps = task.read_steps
    probe = probe_for(model)
    sample = TaskSampler(task, cfg["seed"], device)
    apply_init(settings["init_name"], model, settings["init"], sample)
    method = make_method(cfg["method"]["name"], settings["method"])
    method.on_init(model, probe, sample)
    if optim_s.name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=optim_s.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=optim_s.lr, momentum=optim_s.momentum)
    test_x, test_y = (t.to(device) for t in task.test_set())
    sequential = task.sequential

    def save_checkpoint(step: int) -> None:
        writer.flush_metrics()  # metrics.csv never lags behind the checkpoint
        writer.save_checkpoint({
            "step": step, "config": cfg, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "method": method.state_dict(), "rng": rng_state(generator), "rows": list(writer.rows),
            "wall_seconds": state["wall_before"] + time.perf_counter() - state["started"]})

    checkpoint = state.pop("checkpoint", None)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        method.load_state_dict(checkpoint["method"])
        set_rng_state(generator, checkpoint["rng"])
    with interrupts_at_step_boundaries() as check_interrupt:
        try:
            state["at_boundary"] = True
            for step in range(state["step"] + 1, run.steps + 1):
                state["at_boundary"] = False
                log_now = step == 1 or step % run.log_every == 0 or step == run.steps
                model.train()
                probe.clear()
                x, y = (t.to(device) for t in task.train_batch(run.batch_size, generator))
                prediction = model(x, keep_state_grads=log_now) if sequential else model(x)
                loss = task.loss(prediction, y)
                extra = method.loss_term(model)
                if extra is not None:
                    loss = loss + extra
                if not torch.isfinite(loss):
                    raise Diverged(step, "the loss")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if log_now:
                    _layer_metrics(model, probe, writer, step)
                if optim_s.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), optim_s.clip)
                optimizer.step()
                method.after_step()
                if hasattr(model, "apply_mask_"):
                    model.apply_mask_()
                state["step"] = step
                if log_now:
                    model.eval()
                    with torch.no_grad():
                        test_prediction = model(test_x)
                        test_loss = float(task.loss(test_prediction, test_y))
                        metric = task.evaluate(test_prediction, test_y)
                    if not all(torch.isfinite(p).all() for p in model.parameters()):
                        raise Diverged(step, "a weight")
                    writer.log_many(step, {"loss": loss.item(), "test_loss": test_loss, task.metric: metric})
                    writer.flush_metrics()
                if run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
                    save_checkpoint(step)
                state["at_boundary"] = True
                if progress is not None:
                    progress(step, writer.latest())
                check_interrupt()
        except KeyboardInterrupt:
            if state.get("at_boundary"):  # else the periodic checkpoint stays the latest consistent state
                save_checkpoint(state["step"])
            raise
    writer.save_model(_model_payload(model, cfg, (task.input_size, task.output_size), method))
    save_checkpoint(run.steps)
    final = writer.latest()
    return {"final": final, "success": task.succeeded(final[task.metric]), "metric": task.metric,
            "chance": task.chance, "criterion": task.criterion}


def lyapunov(cfg: dict, settings: dict, writer: RunWriter, state: dict, progress: Progress | None) -> dict:
    """The chaos study: the method (SAL by default) adapts an RNN that runs on its own
    (or driven by random input), its state kicked by N(0, lyapunov.noise²) before every
    chunk so that it never dies on the fixed point h = 0; every `log_every` updates the
    MLE and the log-sensitivity are measured on the attractor (`salrun.lyapunov.on_attractor`)."""
    import sys

    import torch

    from salrun.activity import probe_for
    from salrun.inits import apply_init
    from salrun.lyapunov import DEAD_RMS, on_attractor, random_states, state_rms
    from salrun.methods import make_method
    from salrun.runtime import prepare, resolve_device

    generator = prepare(cfg["seed"], cfg["threads"])
    measuring = torch.Generator().manual_seed(cfg["seed"])  # its own stream: measuring never changes the adaptation
    device = resolve_device(cfg["device"])
    study = settings["lyapunov"]
    model = build_model("rnn", settings["model"], study.input_size, 1, generator).to(device)
    apply_init(settings["init_name"], model, settings["init"])  # orthogonal or critical: no data needed
    probe = probe_for(model)
    method = make_method(cfg["method"]["name"], settings["method"])
    method.on_init(model, probe)
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
                               "spectral_radius": float(torch.linalg.eigvals(w_hh.double()).abs().max())})
        writer.flush_metrics()
        if alive < DEAD_RMS and not warnings:
            warnings.append(f"step {step}: an adapting trajectory collapsed onto h = 0 (state RMS {alive:.1e} < "
                            f"{DEAD_RMS:g}); the method sees tanh'(0) = 1 there (lyapunov.noise > 0 keeps it alive)")
            print(f"warning: {warnings[0]}", file=sys.stderr)

    model.train()
    measure(0)
    for step in range(1, study.sal_steps + 1):
        probe.clear()
        with torch.no_grad():
            if study.fresh_chunks:
                h = random_states(study.trajectories, model.settings.hidden, generator).to(device)
            if study.noise > 0:
                h = h + study.noise * torch.randn(h.shape, generator=generator).to(device)
            seen = torch.stack(model.run(inputs(study.chunk), h))
            h = seen[-1]
        method.after_step()
        model.apply_mask_()
        state["step"] = step
        if step % study.log_every == 0 or step == study.sal_steps:
            measure(step)
        if progress is not None:
            progress(step, writer.latest())
    writer.save_model(_model_payload(model, cfg, (study.input_size, 1), method))
    return {"final": writer.latest(), "warnings": warnings}
