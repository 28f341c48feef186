"""The only module that touches Hydra: composing configs and running sweeps.

Single runs compose the config with Hydra's compose API and call the job
directly. Sweeps go through Hydra's multirun driver, so every launcher
plugin (basic, joblib, submitit) works unchanged; the task functions below
live at module level because launchers pickle them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from salrun.settings import ConfigError

DEFAULT_EXPERIMENT = {"train": "deep_ffn", "lyapunov": "chaos"}
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm",
             "slurm_cpu", "slurm_gpu")  # the last two: presets in conf/hydra/launcher
_DRIVER_PID: int | None = None  # the process running the sweep (jobs of the basic launcher run in it)


def config_dir() -> str:
    """conf/ ships inside the wheel as salrun/conf; a source checkout has it beside salrun/."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError("salrun's conf/ folder is missing from the installation")


def with_default_experiment(command: str, overrides: list[str]) -> list[str]:
    if any(re.match(r"^[+~]?experiment=", o) for o in overrides):
        return list(overrides)
    return [f"experiment={DEFAULT_EXPERIMENT[command]}", *overrides]


def _one_line(err: Exception) -> str:
    """Hydra's composition errors span lines; keep what names the problem."""
    from hydra.errors import MissingConfigException

    if isinstance(err, MissingConfigException):
        match = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if match:
            group, option = match.groups()
            options = re.findall(r"^\t(\S+)$", str(err), re.M)
            choices = f" (choose from: {', '.join(options)})" if options else ""
            return f"unknown {group} {option!r}{choices}"
    match = re.search(r"Could not override '([^']+)'", str(err))
    if match and "not in struct" in str(err.__cause__):
        return f"unknown config key {match.group(1)!r}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        message += f": {str(cause).strip().splitlines()[0]}"
    return message


def _hydra_errors() -> tuple[type[Exception], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra raises a bare ValueError for some bad overrides (a number as a group choice: method=0).
    return HydraException, OmegaConfBaseException, ValueError


def compose(command: str, overrides: list[str]) -> dict:
    """The resolved config for one run as a plain dict; ConfigError if invalid."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    overrides = with_default_experiment(command, overrides)
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="salrun"):
            cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
            choices = dict(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]
            resolved = OmegaConf.to_container(cfg, resolve=True)
    except _hydra_errors() as err:
        raise ConfigError(_one_line(err)) from None
    return {"experiment": choices.get("experiment"), **resolved}


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The grid that Hydra's basic sweeper will run: one override list per job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    except _hydra_errors() as err:
        raise ConfigError(_one_line(err)) from None
    return [list(job) for batch in batches for job in batch]


def sweep_job_threads(runtime) -> int:
    """Torch threads for one sweep job when the config leaves it at 0: the cores divided
    among the joblib launcher's parallel workers; 0 (torch's default) for the other
    launchers (basic runs one job at a time, a cluster job owns its cores)."""
    if runtime.runtime.choices.get("hydra/launcher") != "joblib":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = int(runtime.launcher.get("n_jobs") or 1)
    workers = cores + 1 + workers if workers < 0 else workers  # joblib: -1 is every core
    return max(1, cores // max(workers, 1))


def _sweep_task(command: str, cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from salrun.jobs import run_or_resume
    from salrun.results import RunFolderError

    runtime = HydraConfig.get()
    out = Path(runtime.runtime.output_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved = {"experiment": runtime.runtime.choices.get("experiment"), **resolved}
    if not resolved.get("threads"):  # 0: pick a share of the cores, so parallel jobs do not oversubscribe
        resolved["threads"] = sweep_job_threads(runtime)
    try:  # a rerun (sweep --resume, or a job the cluster requeued) skips or continues the job
        summary = run_or_resume(command, resolved, out)
    except (ConfigError, RunFolderError) as err:
        summary = {"status": "failed", "error": str(err)}
    if summary["status"] == "interrupted" and os.getpid() == _DRIVER_PID:
        raise KeyboardInterrupt  # Ctrl-C stops the whole sweep, not just the job that was running
    return {"status": summary["status"], "output": str(out)}


def sweep_train(cfg) -> dict:
    return _sweep_task("train", cfg)


def sweep_lyapunov(cfg) -> dict:
    return _sweep_task("lyapunov", cfg)


def run_sweep(command: str, overrides: list[str], launcher: str, out_dir: Path) -> list[tuple[list[str], Path, str]]:
    """Run the grid through Hydra's multirun; returns (overrides, folder, error) per job."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import JobStatus

    overrides = with_default_experiment(command, overrides)
    hydra_overrides = [
        f"hydra.sweep.dir={out_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
        f"hydra/launcher={launcher}",
    ]
    task = sweep_train if command == "train" else sweep_lyapunov
    global _DRIVER_PID
    _DRIVER_PID = os.getpid()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name=f"salrun_{command}"):
        returns = GlobalHydra.instance().hydra.multirun(
            config_name="config", task_function=task, overrides=hydra_overrides + overrides)
    results = []
    for batch in returns:
        for job in batch:
            folder = Path(job.hydra_cfg.hydra.runtime.output_dir) if job.hydra_cfg else out_dir
            error = "" if job.status == JobStatus.COMPLETED else f"{job._return_value!r}"
            results.append((list(job.overrides), folder, error))
    return results
