"""The only module that touches Hydra: composing configs and running sweeps.

Single runs compose the config with Hydra's compose API and call the job
directly. Sweeps go through Hydra's multirun driver, so every launcher
plugin (basic, joblib, submitit) works unchanged; the task functions below
live at module level because launchers pickle them.
"""
from __future__ import annotations

import copy
import json
import os
import re
import socket
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Transformer
from hydra.core.utils import JobStatus
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from salrun.results import RunFolderError, os_error_line, write_atomic
from salrun.settings import (KINDS, REGISTRY, ConfigError, RootSettings, batch_key, config_dir, defaults, did_you_mean,
                             dotted_keys, job_settings)

DEFAULT_EXPERIMENT = {"train": "deep_ffn", "lyapunov": "chaos"}
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm",
             "slurm_cpu", "slurm_gpu")  # the last two: presets in conf/hydra/launcher
_DRIVER_PID: int | None = None  # the process running the sweep (jobs of the basic launcher run in it)


def with_default_experiment(command: str, overrides: list[str]) -> list[str]:
    if any(re.match(r"^[+~]?experiment(=|$)", o) for o in overrides):  # ~experiment: no preset
        return list(overrides)
    return [f"experiment={DEFAULT_EXPERIMENT[command]}", *overrides]


def _one_line(err: Exception) -> str:
    """Hydra's composition errors span lines; keep what names the problem."""
    if isinstance(err, MissingConfigException):
        match = re.search(r"Could not find '([^/']+)/([^']+)'", str(err))
        if match:
            group, option = match.groups()
            options = re.findall(r"^\t(\S+)$", str(err), re.M)
            choices = f" (choose from: {', '.join(options)})" if options else ""
            return f"unknown {group} {option!r}{did_you_mean(option, options)}{choices}"
    match = re.search(r"Could not override '([^']+)'", str(err))
    if match and "not in struct" in str(err.__cause__):
        return f"unknown config key {match.group(1)!r}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = lines[0] if lines else type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        message += f": {str(cause).strip().splitlines()[0]}"
    return message


# Hydra raises a bare ValueError for some bad overrides (a number as a group choice: method=0).
_HYDRA_ERRORS = (HydraException, OmegaConfBaseException, ValueError)


FOLDER_KEY = {False: "hydra.run.dir", True: "hydra.sweep.dir"}  # Hydra's name for a run's (a sweep's) folder


def command_line(command: str, overrides: list[str], sweep: bool = False) -> tuple[list[str], str | None]:
    """Check the overrides as a command line before anything is composed, and take out the
    folder given as Hydra's hydra.run.dir (a sweep: hydra.sweep.dir), which salrun reads as
    --out. Returns (the other overrides, that folder or None). ConfigError names an override
    written without '=', a comma list outside a sweep, and a hydra.* override salrun would
    not honour (a sweep honours hydra.launcher.*; every other is refused, never ignored)."""
    for i, text in enumerate(overrides):
        if "=" not in text and not text.startswith("~"):
            value = overrides[i + 1] if i + 1 < len(overrides) and "=" not in overrides[i + 1] else "VALUE"
            raise ConfigError(f"{text!r} has no '=': an override is KEY=VALUE, one word ({text}={value})")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except _HYDRA_ERRORS as err:
        raise ConfigError(_one_line(err)) from None
    folder, rest = None, []
    for override, text in zip(parsed, overrides):
        key = override.key_or_group
        if override.is_sweep_override() and not sweep:
            again = "salrun sweep" + (" --command lyapunov" if command == "lyapunov" else "")
            raise ConfigError(f"{text} is a comma list, which spans a grid: run it with {again} "
                              f"(salrun {command} takes one value per key)")
        if key == FOLDER_KEY[sweep] and not override.is_delete():
            folder = str(override.value())
            if "${" in folder:
                raise ConfigError(f"{text}: salrun takes a plain folder here, not an interpolation; use --out")
        elif override.is_hydra_override() and not (sweep and key.startswith("hydra.launcher.")):
            raise ConfigError(_not_honoured(key, text, command, sweep))
        else:
            rest.append(text)
    return rest, folder


def _not_honoured(key: str, text: str, command: str, sweep: bool) -> str:
    if sweep and key == "hydra/launcher":
        return f"{text}: choose the launcher with --launcher {text.split('=', 1)[-1]}"
    if sweep and key == "hydra.sweep.subdir":
        return f"{text}: job i of a sweep always runs in SWEEP_DIR/i (salrun report and --resume read it there)"
    honoured = "hydra.sweep.dir (the sweep folder, as --out) and hydra.launcher.*" if sweep else \
        "hydra.run.dir (the run folder, as --out)"
    return f"{text} has no effect on salrun {'sweep' if sweep else command}; of Hydra's settings it honours {honoured}"


def register_schema() -> None:
    """Give Hydra the schema's defaults: the root keys (`salrun_schema`, in conf/config.yaml's
    defaults list) and one option per registered model, task, method and
    init. Plain dicts, not typed nodes, so that salrun.settings checks the types with its own
    messages (a typed node would turn optim.lr=010 into 10.0)."""
    store = ConfigStore.instance()
    store.store(name="salrun_schema", node=defaults(RootSettings))
    for kind, entries in REGISTRY.items():
        for name, entry in entries.items():
            store.store(group=kind, name=name, node=defaults(entry.settings))


def resolved(cfg, choices) -> dict:
    """A composed config as the plain dict a job reads: each group named by Hydra's choice."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for kind in KINDS:
        if isinstance(plain.get(kind), dict):  # else (~method) the schema check names what is missing
            plain[kind] = {"name": choices.get(kind), **plain[kind]}
    return {"experiment": choices.get("experiment"), **plain}


def compose(command: str, overrides: list[str]) -> dict:
    """The resolved config for one run as a plain dict; ConfigError if invalid."""
    return compose_grid(command, [overrides])[0]


def compose_grid(command: str, jobs: list[list[str]]) -> list[dict]:
    """The resolved config of each job (a list of overrides). Hydra composes once per distinct
    set of group choices (and hydra.* overrides); each job's other overrides are then applied by Hydra's own code, as
    its compose would apply them, so a 240-job grid is checked in seconds."""
    register_schema()
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], tuple[DictConfig, dict]] = {}
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="salrun"):
            repository = GlobalHydra.instance().config_loader().repository
            planned = []
            for job in jobs:
                parsed = parser.parse_overrides(with_default_experiment(command, job))
                for o in parsed:  # Hydra reads a list as several configs of the group, and crashes on numbers
                    if repository.group_exists(o.key_or_group) and isinstance(o.value(), list):
                        raise ConfigError(f"{o.input_line}: the group '{o.key_or_group}' takes one choice "
                                          f"(`salrun list`); a list is not one")
                groups = tuple(o.input_line for o in parsed if o.is_hydra_override()  # hydra.*: Hydra's own node
                               or repository.group_exists(o.key_or_group) and not isinstance(o.value(), dict))
                if groups not in composed:
                    cfg = hydra_compose("config", overrides=list(groups), return_hydra_config=True)
                    choices = dict(cfg.hydra.runtime.choices)
                    with open_dict(cfg):
                        del cfg["hydra"]
                    composed[groups] = cfg, choices
                planned.append((composed[groups], [o for o in parsed if o.input_line not in groups]))
            configs = []
            for (base, choices), rest in planned:
                cfg = copy.deepcopy(base)
                try:
                    ConfigLoaderImpl._apply_overrides_to_config(rest, cfg)
                except _HYDRA_ERRORS as err:
                    raise ConfigError(_unknown_key(err, rest, base, choices, composed.values())) from None
                configs.append(resolved(cfg, choices))
    except _HYDRA_ERRORS as err:
        raise ConfigError(_one_line(err)) from None
    return configs


def _unknown_key(err: Exception, overrides: list, base: DictConfig, choices: dict, others) -> str:
    """An override's key that the job's config lacks: the nearest key it has, or, when other
    jobs of the sweep have it (method.rho with method=sal,spectral), how to set it only there."""
    message = _one_line(err)
    match = re.fullmatch(r"unknown config key '([^']+)'", message)
    if not match:
        return message
    key = match.group(1)
    group = key.split(".")[0]
    having = sorted({c.get(group) for cfg, c in others if OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT})
    if having and group in KINDS:
        text = next((o.input_line for o in overrides if o.key_or_group == key), f"{key}=VALUE")
        fix = (f"write ++{text} to set it only where it is one" if group == "method"
               else f"sweep the {group}s separately")
        return (f"{key} is not a key of {group}={choices.get(group)} (it is of {group}={', '.join(having)}); "
                f"{fix}")
    keys = ["experiment", *KINDS, *dotted_keys(OmegaConf.to_container(base))]
    return f"unknown config key {key!r}{did_you_mean(key, keys)}"


_ABSENT = object()


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The grid that Hydra's basic sweeper will run: one override list per job."""
    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    except _HYDRA_ERRORS as err:
        raise ConfigError(_one_line(err)) from None
    return [list(job) for batch in batches for job in batch]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parallel_jobs(launcher: str, settings, jobs: int | None = None) -> int:
    """Sweep jobs that run at once on this machine: joblib's n_jobs, submitit_local every
    job, basic one at a time (a cluster's jobs run on its nodes: one each)."""
    if launcher == "joblib":
        workers = int(settings.get("n_jobs") or 1)
        workers = _cores() + 1 + workers if workers < 0 else workers  # joblib: -1 is every core
    elif launcher == "submitit_local":
        workers = jobs or 1
    else:
        workers = 1
    return max(1, min(workers, jobs or workers))


def launcher_settings(launcher: str, overrides: list[str]) -> dict:
    """The launcher's settings as the sweep will run it: its preset and the hydra.launcher.* overrides."""
    register_schema()
    mine = [o for o in overrides if o.startswith("hydra.launcher.")]
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="salrun"):
            cfg = hydra_compose("config", overrides=[f"hydra/launcher={launcher}", *mine], return_hydra_config=True)
    except _HYDRA_ERRORS as err:
        raise ConfigError(_one_line(err)) from None
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False)


def sweep_memory_budget(launcher: str, overrides: list[str], jobs: int) -> dict | None:
    """What `salrun.memory.check` compares a sweep's jobs with: this machine shared by the
    jobs that run at once, or on a cluster each job's own mem_gb (None when unset: the
    cluster's default, which salrun cannot know)."""
    settings = launcher_settings(launcher, overrides)
    if "slurm" not in launcher:
        return {"workers": parallel_jobs(launcher, settings, jobs)}
    memory = settings.get("mem_gb")
    if not memory:
        return None
    return {"limit": float(memory) * 2 ** 30, "where": f"per job (hydra.launcher.mem_gb={memory}, GiB)"}


def sweep_job_threads(runtime) -> int:
    """Torch threads for one sweep job when the config leaves it at 0: the cores divided
    among the joblib launcher's parallel workers; 0 (torch's default) for the other
    launchers (basic runs one job at a time, a cluster job owns its cores)."""
    if runtime.runtime.choices.get("hydra/launcher") != "joblib":
        return 0
    return max(1, _cores() // parallel_jobs("joblib", runtime.launcher))


def _sweep_task(command: str, cfg) -> dict:
    from salrun.jobs import run_or_resume  # torch: in the job, not when the CLI validates
    from salrun.runtime import stop_with_parent

    stop_with_parent()  # in a joblib worker: no orphan if the sweep's process dies
    runtime = HydraConfig.get()
    out = Path(runtime.runtime.output_dir)
    plain = resolved(cfg, runtime.runtime.choices)
    if not plain.get("threads"):  # 0: pick a share of the cores, so parallel jobs do not oversubscribe
        plain["threads"] = sweep_job_threads(runtime)
    try:  # a rerun (sweep --resume, or a job the cluster requeued) skips or continues the job
        summary = run_or_resume(command, plain, out, list(runtime.overrides.task))
    except (ConfigError, RunFolderError) as err:
        summary = {"status": "failed", "error": str(err)}
    except OSError as err:  # a full disk, a read-only folder: this job fails, the sweep goes on
        summary = {"status": "failed", "error": f"OSError: {os_error_line(err)}"}
    if summary["status"] == "interrupted" and os.getpid() == _DRIVER_PID:
        raise KeyboardInterrupt  # Ctrl-C stops the whole sweep, not just the job that was running
    return {"status": summary["status"], "output": str(out), "error": summary.get("error", "")}


def sweep_train(cfg) -> dict:
    return _sweep_task("train", cfg)


def sweep_lyapunov(cfg) -> dict:
    return _sweep_task("lyapunov", cfg)


def sweep_ensemble(cfg) -> dict:
    """One process of `sweep --ensemble`: task `ensemble_task` of the plan in the sweep folder."""
    from salrun.runtime import stop_with_parent

    stop_with_parent()  # in a joblib worker: no orphan if the sweep's process dies
    runtime = HydraConfig.get()
    out = Path(runtime.sweep.dir)
    members = json.loads((out / PLAN).read_text())["tasks"][int(cfg.ensemble_task)]
    threads = sweep_job_threads(runtime)
    for member in members:
        if not member["config"].get("threads"):
            member["config"]["threads"] = threads
    try:
        return run_ensemble_task(members, out)
    except KeyboardInterrupt:
        if os.getpid() == _DRIVER_PID:
            raise  # Ctrl-C stops the whole sweep
        return {m["index"]: "" for m in members}  # each member's summary says interrupted


def run_ensemble_task(members: list[dict], out: Path) -> dict[int, str]:
    """One process of `sweep --ensemble`: `members` ({index, config, overrides}) write OUT/index.
    Those without a folder yet train as one batched model (two or more); the others (a run
    alone, a resumed or requeued job) continue alone from their checkpoints. Returns each
    member's error message ("" if none) by index; KeyboardInterrupt if one was interrupted."""
    from salrun.jobs import run_jobs, run_or_resume  # torch: in the job

    def folder(member):
        return out / str(member["index"])

    fresh = [m for m in members if not (folder(m) / "config.yaml").is_file()]
    batched = fresh if len(fresh) > 1 else []
    errors = {m["index"]: "" for m in members}
    if batched:
        summaries = run_jobs("train", [m["config"] for m in batched], [folder(m) for m in batched],
                             overrides=[m["overrides"] for m in batched])
        if any(summary["status"] == "interrupted" for summary in summaries):
            raise KeyboardInterrupt  # every member has its checkpoint
    for member in [m for m in members if m not in batched]:
        try:
            summary = run_or_resume("train", member["config"], folder(member), member["overrides"])
        except (ConfigError, RunFolderError) as err:
            errors[member["index"]] = str(err)
            continue
        if summary["status"] == "interrupted":
            raise KeyboardInterrupt
    return errors


def ensemble_groups(settings: list) -> tuple[list[list[int]], list[int]]:
    """The jobs (their JobSettings) that train as one batched model (groups of indices, each of
    one `batch_key` and of two members or more) and those that run alone (a method or option
    that does not batch, or a key no other job shares)."""
    groups: dict[tuple, list[int]] = {}
    alone = []
    for i, s in enumerate(settings):
        key = batch_key(s)
        if key is None:
            alone.append(i)
        else:
            groups.setdefault(key, []).append(i)
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


PLAN = "ensembles.json"  # in the sweep folder: what each process of `sweep --ensemble` trains


def sweep_ensembles(jobs_overrides: list[list[str]], out: Path, launcher: str = "basic",
                    overrides: list[str] = (), say=print, quiet: bool = False) -> list[tuple[list[str], Path, str]]:
    """`salrun sweep --ensemble`: the grid's train jobs, grouped by `ensemble_tasks`, each task one
    job of the launcher (basic: one after the other in this process; joblib: side by side; SLURM:
    one cluster job each); job i writes OUT/i as a sweep's launcher would. A job whose folder
    exists (sweep --resume) continues alone from its checkpoint. Returns (overrides, folder,
    error) per job, as `run_sweep`."""
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


def ensemble_workers(launcher: str, overrides: list[str], jobs: int) -> int:
    """The processes that `sweep --ensemble` spreads its groups over: joblib's parallel workers;
    one for the others (basic runs one task at a time; on a cluster each group is one job)."""
    return parallel_jobs("joblib", launcher_settings(launcher, overrides), jobs) if launcher == "joblib" else 1


def _multirun(command: str, task, overrides: list[str], launcher: str, out_dir: Path, subdir: str,
              quiet: bool = False) -> list:
    """Hydra's multirun of `task` over the overrides' grid; the JobReturn of each job. Hydra's
    own lines ("Launching 2 jobs locally") go to stderr, none with `quiet`: stdout is for the table."""
    global _DRIVER_PID
    _DRIVER_PID = os.getpid()
    os.environ["SALRUN_SWEEP_PID"] = f"{socket.gethostname()}:{_DRIVER_PID}"  # workers stop when it dies (runtime)
    if "slurm" in launcher:
        from salrun.cluster import quiet_sacct

        quiet_sacct()
    hydra_overrides = [
        f"hydra.sweep.dir={out_dir}", f"hydra.sweep.subdir={subdir}", f"hydra/launcher={launcher}",
        "hydra/hydra_logging=disabled" if quiet else "hydra.hydra_logging.handlers.console.stream=ext://sys.stderr",
        "hydra.job_logging.handlers.console.stream=ext://sys.stderr",
    ]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name=f"salrun_{command}"):
        returns = GlobalHydra.instance().hydra.multirun(
            config_name="config", task_function=task, overrides=hydra_overrides + overrides)
    return [job for batch in returns for job in batch]


def run_ensemble_tasks(overrides: list[str], launcher: str, out_dir: Path, tasks: int,
                       quiet: bool = False) -> list[dict | str]:
    """Run the `tasks` processes of `sweep --ensemble` (the plan in out_dir) as the jobs of
    Hydra's multirun with `launcher`, each in out_dir/ensembles/K (Hydra's record of the job);
    returns per task its members' errors by index, or the task's own error."""
    register_schema()
    mine = [o for o in overrides if o.startswith("hydra.")]  # the launcher's settings
    returns = _multirun("train", sweep_ensemble, [*mine, f"+ensemble_task={','.join(map(str, range(tasks)))}"],
                        launcher, out_dir, "ensembles/${hydra.job.num}", quiet)
    return [job._return_value if job.status == JobStatus.COMPLETED else f"{job._return_value!r}" for job in returns]


def run_sweep(command: str, overrides: list[str], launcher: str, out_dir: Path,
              quiet: bool = False) -> list[tuple[list[str], Path, str]]:
    """Run the grid through Hydra's multirun; returns (overrides, folder, error) per job."""
    register_schema()
    task = sweep_train if command == "train" else sweep_lyapunov
    results = []
    for job in _multirun(command, task, with_default_experiment(command, overrides), launcher, out_dir,
                         "${hydra.job.num}", quiet):
        folder = Path(job.hydra_cfg.hydra.runtime.output_dir) if job.hydra_cfg else out_dir
        if job.status == JobStatus.COMPLETED:  # the task's own record of a failure it caught (an OSError)
            error = job._return_value.get("error", "") if isinstance(job._return_value, dict) else ""
        else:
            error = f"{job._return_value!r}"
        results.append((list(job.overrides), folder, error))
    return results


# -- salrun tune: its search space in Hydra's sweeper syntax, and its trials as multirun jobs -----

def search_space(overrides: list[str]) -> tuple[list[str], dict[str, dict]]:
    """`salrun tune`'s overrides split into the fixed ones and the searched keys, each with its
    space as Hydra's sweeper syntax writes it (as hydra-optuna-sweeper reads it): {"choice":
    values} for choice(a, b) or a,b; {"range": [start, stop, step]} for range(...); {"interval":
    [low, high], "log": bool, "int": bool} for interval(...) and tag(log, interval(...))."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except _HYDRA_ERRORS as err:
        raise ConfigError(_one_line(err)) from None
    fixed, space = [], {}
    for override in parsed:
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        key, value = override.get_key_element(), override.value()
        if isinstance(value, Glob):
            raise ConfigError(f"{override.input_line}: salrun tune searches choice(...), range(...) and "
                              "interval(...) (glob is not a search space)")
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            space[key] = {"choice": list(override.sweep_iterator(transformer=Transformer.encode))}
        elif override.is_range_sweep():
            space[key] = {"range": [value.start, value.stop, value.step]}
        elif override.is_interval_sweep():
            unknown = set(value.tags) - {"log", "int"}
            if unknown:
                raise ConfigError(f"{override.input_line}: salrun tune knows the tags log and int, not "
                                  f"{', '.join(sorted(unknown))}")
            space[key] = {"interval": [value.start, value.end], "log": "log" in value.tags, "int": "int" in value.tags}
        else:
            raise ConfigError(f"{override.input_line}: salrun tune searches choice(...), range(...) and "
                              "interval(...) (glob is not a search space)")
    return fixed, space


def multirun_jobs(command: str, task, overrides: list[str], launcher: str, out_dir: Path, subdir: str,
                  quiet: bool = False) -> list:
    """Hydra's multirun of `task` (a module-level function of a salrun module) over the overrides'
    grid with `launcher`; each job's return value, or its error as a string."""
    register_schema()
    return [job._return_value if job.status == JobStatus.COMPLETED else f"{job._return_value!r}"
            for job in _multirun(command, task, overrides, launcher, out_dir, subdir, quiet)]
