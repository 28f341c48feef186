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


# -- a fast composition without Hydra, so that a bad value fails before Hydra is imported -------

class _Unsupported(Exception):
    """The config or an override uses something `quick_compose` leaves to Hydra."""


_INT = re.compile(r"[+-]?(0|[1-9]\d*)")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.I)
_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_./\-@%]*")  # a leading digit: Hydra's numbers (1_000) decide


def _override_value(text: str):
    """An override's value as Hydra's grammar reads the simple cases (else _Unsupported)."""
    if text.lower() == "null":
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and not re.search(r"[\\'\"$]", text[1:-1]):
        return text[1:-1]
    if _PLAIN.fullmatch(text):
        return text
    raise _Unsupported(text)


_EXPONENT_FLOAT = re.compile(r"[-+]?\d[\d_]*(\.[\d_]*)?[eE][-+]?\d+")  # 1e-3: a float to OmegaConf, a str to PyYAML


def _yaml_values(node):
    """PyYAML's reading, turned into OmegaConf's: exponent floats without a dot are floats.
    Interpolations, YAML 1.1 yes/no words and non-string keys are left to Hydra."""
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise _Unsupported("a non-string key")
        return {k: _yaml_values(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_yaml_values(v) for v in node]
    if isinstance(node, str):
        if "${" in node:
            raise _Unsupported(node)
        return float(node) if _EXPONENT_FLOAT.fullmatch(node) else node
    return node


def _load(path: Path) -> tuple[dict, str | None]:
    """A YAML file as OmegaConf reads it, and its `# @package` header (None if absent)."""
    import yaml

    if not path.is_file():
        raise _Unsupported(str(path))
    text = path.read_text()
    if re.search(r":\s*(yes|no|on|off|y|n)\s*(#.*)?$", text, re.M | re.I):
        raise _Unsupported(f"{path}: a YAML 1.1 boolean word")
    header = re.search(r"^#\s*@package\s+(\S+)", text, re.M)
    data = _yaml_values(yaml.safe_load(text) or {})
    if not isinstance(data, dict):
        raise _Unsupported(str(path))
    return data, header.group(1) if header else None


def _merge(base: dict, other: dict) -> dict:
    """OmegaConf.merge for plain dicts: nested dicts merge, anything else replaces."""
    out = dict(base)
    for key, value in other.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _group_option(root: Path, group: str, option: str) -> dict:
    """A group option's content (its own defaults: only `/group/option@_here_` and `_self_`)."""
    data, package = _load(root / group / f"{option}.yaml")
    if package is not None:
        raise _Unsupported(f"{group}/{option}: package {package}")
    defaults = data.pop("defaults", [])
    merged: dict = {}
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    for entry in defaults:
        if entry == "_self_":
            merged = _merge(merged, data)
            continue
        match = re.fullmatch(r"/(\w+)/(\w+)@_here_", entry) if isinstance(entry, str) else None
        if match is None:
            raise _Unsupported(f"{group}/{option}: default {entry!r}")
        merged = _merge(merged, _group_option(root, *match.groups()))
    return merged


def quick_compose(command: str, overrides: list[str]) -> dict | None:
    """The config that `compose` returns, built without Hydra or OmegaConf for the plain
    cases (group=option and key=value overrides, salrun's own defaults lists); None where
    only Hydra can tell. The CLI validates this first, so that a bad value exits 2 without
    Hydra's import and compose (most of a bad command's wall time); a config that passes
    is composed again by Hydra. tests/test_quick_compose.py checks that both agree."""
    try:
        return _quick_compose(command, with_default_experiment(command, overrides))
    except Exception:  # _Unsupported, or anything unexpected: Hydra will say it properly
        return None


def _quick_compose(command: str, overrides: list[str]) -> dict:
    root = Path(config_dir())
    primary, _ = _load(root / "config.yaml")
    defaults = primary.pop("defaults")
    choices: dict[str, str | None] = {}
    order: list[str] = []
    for entry in defaults:
        if entry == "_self_":
            order.append("_self_")
        elif isinstance(entry, dict) and len(entry) == 1:
            (group, option), = entry.items()
            if not re.fullmatch(r"\w+", group) or not (option is None or isinstance(option, str)):
                raise _Unsupported(repr(entry))
            choices[group] = option
            order.append(group)
        else:
            raise _Unsupported(repr(entry))
    values: list[tuple[str, object, bool]] = []
    for override in overrides:
        key, sep, text = override.partition("=")
        add = key.startswith("++")  # add or override a key (a sweep's keys of only some methods)
        key = key[2:] if add else key
        if not sep or not re.fullmatch(r"\w+(\.\w+)*", key) or key.startswith("hydra") or (add and key in choices):
            raise _Unsupported(override)  # +key, ~key, key@pkg, hydra.*, no value, ++group
        if key in choices:
            if not re.fullmatch(r"\w+", text) or not (root / key / f"{text}.yaml").is_file():
                raise _Unsupported(override)  # Hydra names the choices
            choices[key] = text
        else:
            values.append((key, _override_value(text), add))
    # Presets (`# @package _global_`) may override group choices; the command line wins.
    cli_groups = {o.partition("=")[0] for o in overrides if o.partition("=")[0] in choices}
    global_body: dict[str, dict] = {}
    for group in order:
        option = choices.get(group)
        if group == "_self_" or option is None:
            continue
        data, package = _load(root / group / f"{option}.yaml")
        if package != "_global_":
            continue
        for entry in data.pop("defaults", []):
            target, choice = next(iter(entry.items())) if isinstance(entry, dict) and len(entry) == 1 else ("", None)
            match = re.fullmatch(r"override /(\w+)", target)
            if match is None or match.group(1) not in choices or order.index(match.group(1)) > order.index(group):
                raise _Unsupported(f"{group}/{option}: default {entry!r}")
            if match.group(1) not in cli_groups:
                choices[match.group(1)] = choice
        global_body[group] = data
    cfg: dict = {}
    for group in order:
        if group == "_self_":
            cfg = _merge(cfg, primary)
        elif group in global_body:
            cfg = _merge(cfg, global_body[group])
        elif choices.get(group) is not None:
            cfg = _merge(cfg, {group: _group_option(root, group, choices[group])})
    for key, value, add in values:
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or (leaf not in node and not add) or isinstance(node.get(leaf), (dict, list)):
            raise _Unsupported(key)  # an unknown key (Hydra's message) or a whole node replaced
        node[leaf] = value
    return {"experiment": choices.get("experiment"), **cfg}


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
    if "slurm" in launcher:
        from salrun.cluster import quiet_sacct

        quiet_sacct()
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
