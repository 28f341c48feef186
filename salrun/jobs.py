"""Jobs: plain functions from resolved configs (dicts) to run folders.

`run_jobs` is the one entry point, for one run or for several trained as one batched model
(`salrun.training.Run`, whose members are a batch dimension). It checks each config
(`salrun.settings.job_settings`), writes config.yaml, then runs the job, and whatever happens
(success, divergence, an exception, Ctrl-C) it leaves each run's metrics.csv and summary.json
with its status. The job bodies read the typed settings only, never the raw config.

Training writes DIR/checkpoint.pt every `train.checkpoint_every` steps, on interrupt and
at the end: model, optimizer, method state (SAL's averages), every RNG state, the step
and how many rows metrics.csv held. `run_job(..., resume=True)` continues from it and
ends with the same metrics as a run that was never stopped.
"""
from __future__ import annotations

import functools
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from salrun.loggers import open_logger
from salrun.lyapunov import DEAD_RMS, on_attractor, random_states, state_rms
from salrun.methods import spectral_radius
from salrun.results import RunFolderError, RunWriter, claim_folder, read_config, read_summary
from salrun.runtime import resolve_device, stop_guard
from salrun.settings import ConfigError, JobSettings, build, entry, job_settings
from salrun.engines import check_batchable
from salrun.training import (CHECKPOINT, CHECKPOINT_KEYS, Member, Progress, Run, RunState, Stop, Watch, build_network,
                             model_payload)

EXIT_CODES = {"ok": 0, "failed": 1, "diverged": 3, "interrupted": 130}


class Diverged(RuntimeError):
    def __init__(self, step: int, what: str):
        super().__init__(f"{what} is not finite at step {step}")
        self.step = step


def run_job(command: str, cfg: dict, out_dir: Path, progress: Progress | None = None,
            resume: bool = False, overrides: list[str] | None = None) -> dict:
    """Run `command` ("train" or "lyapunov") and write the run folder; returns the summary.
    `overrides`: the command line's, recorded in overrides.yaml and the summary.

    With `resume`, continue a train run from out_dir's checkpoint (from step 0 if it
    has none); `cfg` must be the config the run started with. The folder is claimed first
    (salrun.results.claim_folder): a second writer gets FolderBusy before anything is written."""
    with claim_folder(out_dir, "run", f"salrun {command}"):
        return run_jobs(command, [cfg], [out_dir], progress, resume, None if overrides is None else [overrides])[0]


def run_jobs(command: str, cfgs: list[dict], out_dirs: list[Path], progress: Progress | None = None,
             resume: bool = False, overrides: list[list[str]] | None = None, watch: Watch | None = None) -> list[dict]:
    """`run_job` for several train runs of one shape at once: one batched model whose members
    each write their folder as their single run would (MembersDiffer, before anything is
    written, if they cannot). `watch`: called after each evaluation (`salrun.training.Run`).
    Returns the summaries."""
    settings = [job_settings(command, cfg) for cfg in cfgs]
    members = []
    for i, (s, cfg, out) in enumerate(zip(settings, cfgs, out_dirs)):
        checkpoint = load_checkpoint(Path(out)) if resume and command == "train" else None
        if checkpoint is not None and checkpoint["config"] != cfg:
            raise ConfigError(f"{Path(out) / 'config.yaml'} differs from the config its checkpoint was made with")
        state = RunState(started=None)
        if checkpoint is not None:
            state = RunState(step=checkpoint["step"], wall_before=checkpoint["wall_seconds"], started=None,
                             startup_before=checkpoint.get("startup_seconds", 0.0), origin=state.origin,
                             checkpoint=checkpoint)
        members.append(Member(s, RunWriter(out, keep_rows=checkpoint["metric_rows"] if checkpoint else 0), state))
    if len(members) > 1:
        check_batchable(settings)  # MembersDiffer here, before a file is written
    for i, (member, cfg, out) in enumerate(zip(members, cfgs, out_dirs)):
        member.writer.write_config(cfg)
        given = overrides[i] if overrides is not None else None
        if given is None:  # a resumed run keeps the overrides it started with
            given = read_overrides(Path(out))
        else:
            member.writer.write_overrides(given)
        member.summary = new_summary(command, member.settings, Path(out), given)
        if member.state.checkpoint is not None:
            member.summary["resumed_from_step"] = member.state.step
        member.logger = open_logger(member.settings, Path(out), skip=member.writer.row_count)

    def stop_now() -> None:  # a second signal: every member's summary says interrupted, where it is
        for m in members:
            m.writer.write_summary(ended(dict(m.summary), m.state, m.writer, status="interrupted"))

    running = members
    with stop_guard(stop_now) as guard:
        try:
            if command == "train":
                run = Run.setup(members, watch=watch)
                run.train(progress)
                run.finish()
                running = []
            else:
                members[0].summary.update(lyapunov(members[0].settings, members[0].writer, members[0].state, progress,
                                                   members[0].logger), status="ok")
        except Diverged as err:
            members[0].summary.update(status="diverged", error=str(err), diverged_step=err.step)
        except KeyboardInterrupt:
            for m in _still_running(running):
                m.summary["status"] = "interrupted"
        except Stop as err:
            for m in _still_running(running):
                m.summary.update(status="pruned", error=str(err))
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a failed job is recorded, not lost
            for m in _still_running(running):
                m.summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        with guard.finishing():
            for m in members:
                close(m.writer, m.summary, m.state)
                m.logger.close(m.summary)
    return [m.summary for m in members]


def _still_running(members: list[Member]) -> list[Member]:
    """The members whose summary has no verdict yet (a diverged member keeps its own)."""
    return [m for m in members if m.summary.get("status", "running") == "running"]


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
            "commit": source_commit(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(), "device": f"{resolved_device}{name}"}


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The commit of the salrun source that runs (git's short hash; "-dirty" when the package or
    its configs differ from it), so that a table can say what its runs were measured on (issue 31);
    None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "--short=7", "HEAD")
        if head.returncode != 0:
            return None
        changed = git("status", "--porcelain", "--", "salrun", "conf").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if changed else "")


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
    if isinstance(checkpoint.get("model"), dict) and "0.weight" in checkpoint["model"]:
        raise RunFolderError(f"{path} holds an MLP of one tensor per layer, from before salrun stacked its hidden "
                             "layers, and its optimizer state cannot resume: delete it to restart the run from step 0 "
                             "(a model.pt of that time still loads: salrun.load_model)")
    return checkpoint


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


def lyapunov(s: JobSettings, writer: RunWriter, state: RunState, progress: Progress | None, logger=None) -> dict:
    """The chaos study: the method (SAL by default) adapts an RNN that runs on its own
    (or driven by random input), its state kicked by N(0, lyapunov.noise²) before every
    chunk so that it never dies on the fixed point h = 0; every `log_every` updates the
    MLE and the log-sensitivity are measured on the attractor (`salrun.lyapunov.on_attractor`)."""
    study = s.root.lyapunov
    net = build_network(s, study.input_size, 1)  # init orthogonal or critical: no data needed
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
        if logger is not None:
            logger.update(step)
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
    writer.save_model(model_payload(s, net, (study.input_size, 1)))
    return {"final": writer.latest(), "warnings": warnings}
