"""salrun's command line (Typer). Heavy imports (torch) happen only once a
job really runs, so --help and bad input answer at once."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer

from salrun.results import (FolderBusy, RunFolderError, check_folder_kind, claim_folder, os_error_line,
                            read_sweep_plan, sweep_rows, to_json, write_sweep_plan, write_table)
from salrun import __version__
from salrun.settings import KINDS, ConfigError, describe, did_you_mean, job_settings, presets, schema_keys

LISTS = {"presets": presets, **{f"{kind}s": lambda kind=kind: describe(kind) for kind in KINDS}}


def _groups_epilog() -> str:
    """--help's last lines: every group's choices and the presets (no torch, no Hydra)."""
    lines = [f"{kind}: {', '.join(describe(kind))}" for kind in KINDS]
    lines.append(f"experiment (presets): {', '.join(presets())}")
    return "Groups (salrun list GROUP describes each choice):\n\n" + "\n\n".join(lines)


app = typer.Typer(
    help="Sensitivity Adjustment Learning (SAL): train, study chaos, sweep.\n\n"
         "OVERRIDES are Hydra override strings, e.g. model.depth=300 method=sal seed=3.",
    epilog=_groups_epilog(), no_args_is_help=True, pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"salrun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print salrun's version and exit")) -> None:
    """Sensitivity Adjustment Learning (SAL): train, study chaos, sweep."""

def _complete_override(incomplete: str) -> list[str]:
    """Shell completion of an override: the schema's keys, then a group's choices after '='."""
    key, equals, value = incomplete.partition("=")
    if not equals:
        return [f"{k}=" for k in schema_keys() if k.startswith(incomplete)]
    choices = presets() if key == "experiment" else describe(key) if key in KINDS else {}
    return [f"{key}={choice}" for choice in choices if choice.startswith(value)]


OverridesArg = typer.Argument(None, help="Hydra overrides, e.g. model.depth=100 method=none seed=3",
                              autocompletion=_complete_override)
OutOpt = typer.Option(None, "--out", help="Run folder (default: outputs/COMMAND/TIMESTAMP)")
JsonOpt = typer.Option(False, "--json", help="Print summary.json to stdout")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary table")
NoMemoryCheckOpt = typer.Option(False, "--no-memory-check",
                                help="Run even if the memory preflight estimates that it will not fit")


def fail_usage(message: str) -> None:
    typer.echo(f"salrun: error: {message}", err=True)
    raise typer.Exit(2)


def fail_run(message: str) -> None:
    """The job failed (exit 1): one line on stderr."""
    typer.echo(f"salrun: error: {message}", err=True)
    raise typer.Exit(1)


def _default_out(command: str) -> Path:
    return Path("outputs") / command / time.strftime("%Y-%m-%d_%H-%M-%S")


def check_out_dir(out: Path, what: str = "run") -> None:
    try:
        _check_out_dir(out, what)
    except OSError as err:  # a name too long, a path through a file, ...
        fail_usage(f"--out {out} cannot be used: {err.strerror or err}")


def _check_out_dir(out: Path, what: str) -> None:
    if out.exists() and not out.is_dir():
        fail_usage(f"--out {out} exists and is a file")
    markers = ("summary.json",) if what == "run" else ("sweep.csv", "sweep.yaml")
    if any((out / marker).exists() for marker in markers):
        hint = "continue it with --resume, or choose another folder" if what == "sweep" else "choose another folder"
        fail_usage(f"--out {out} already holds a {what}; {hint} or delete it")
    try:
        check_folder_kind(out, what)
    except RunFolderError as err:
        fail_usage(str(err))
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not probe.is_dir():
        fail_usage(f"--out {out} cannot be created: {probe} is a file")
    try:  # os.access says yes to root even on a read-only file system
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        fail_usage(f"--out {out} is not writable")


def make_out_dir(out: Path, claim: bool = False) -> Path:
    """Create the run (or sweep) folder and return it. `claim`: `out` is a default name, which
    another run started in the same second may hold; mkdir is atomic, so each run takes the
    first free name of OUT, OUT_1, OUT_2, ... and two runs never share a folder."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail_usage(f"--out {out} cannot be created: {err.strerror or err}")
    for n in itertools.count():
        folder = out if n == 0 else out.with_name(f"{out.name}_{n}")
        try:
            folder.mkdir(exist_ok=not claim)
            return folder
        except FileExistsError:
            if not claim:
                fail_usage(f"--out {out} cannot be created: a file is in the way")
        except OSError as err:
            fail_usage(f"--out {out} cannot be created: {err.strerror or err}")


def _terminate_as_interrupt(signum, frame):  # SLURM preempts with SIGTERM
    raise KeyboardInterrupt


def memory_preflight(jobs: list, budget: Optional[dict]) -> None:
    """Exit 2 before anything is built if the jobs would not fit in memory. `budget`: what
    salrun.memory.check compares them with ({}: this machine), None for no check."""
    if budget is not None:
        from salrun.memory import check

        try:
            check(jobs, **budget)
        except ConfigError as err:
            fail_usage(str(err))


def _run(command: str, overrides: list[str], out: Optional[Path], as_json: bool, quiet: bool,
         resume: Optional[Path] = None, memory_check: bool = True) -> None:
    if resume is not None:
        cfg, out = _resumed(resume, overrides, out)
        memory_preflight([job_settings(command, cfg)], {} if memory_check else None)
    else:
        from salrun.launch import compose  # Hydra: not for --help

        overrides, out = _given_folder(command, overrides, out)
        claim = out is None
        out = out or _default_out(command)
        check_out_dir(out.parent if claim else out)  # a default name is claimed only when the run starts
        try:
            cfg = compose(command, overrides)
            settings = job_settings(command, cfg)  # a bad value exits here, before torch is imported
        except ConfigError as err:
            fail_usage(explain(err, command, overrides))
        memory_preflight([settings], {} if memory_check else None)
        before = set(out.iterdir()) if not claim and out.is_dir() else None
        out = make_out_dir(out, claim)
    from salrun.console import print_summary, progress_bar  # rich and torch: once the input is checked
    from salrun.jobs import EXIT_CODES, run_job

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    given = None if resume is not None else overrides  # a resumed run keeps its recorded overrides
    show_progress = not quiet and sys.stderr.isatty()
    total = cfg["train"]["steps"] if command == "train" else cfg["lyapunov"]["sal_steps"]
    try:
        if show_progress:
            with progress_bar(f"{command} {cfg['experiment'] or ''}", total) as update:
                summary = run_job(command, cfg, out, update, resume=resume is not None, overrides=given)
        else:
            summary = run_job(command, cfg, out, resume=resume is not None, overrides=given)
    except FolderBusy as err:  # another process writes the folder: touch nothing of its
        fail_usage(str(err))
    except (ConfigError, RunFolderError) as err:  # found only once data exists (device=cuda, a task's shape)
        if resume is None:
            _discard(out, before)
        fail_usage(str(err))
    except OSError as err:  # a full disk, a read-only folder: what was written stays, summary.json if it could
        fail_run(f"{os_error_line(err)}; the run stopped (what it wrote before stays in {out})")
    if as_json:
        typer.echo((out / "summary.json").read_text(), nl=False)
    elif not quiet:
        print_summary(summary, out)
    if summary["status"] == "failed":
        typer.echo(f"salrun: error: the run failed: {summary.get('error', '')} (its files are in {out})", err=True)
    raise typer.Exit(EXIT_CODES[summary["status"]])


def _discard(out: Path, before: Optional[set]) -> None:
    """Undo a run refused with exit 2: remove the folder it created, or, in a folder that
    existed (--out), only what it added."""
    for path in [out] if before is None else set(out.iterdir()) - before:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _given_folder(command: str, overrides: list[str], out: Optional[Path],
                  sweep: bool = False) -> tuple[list[str], Optional[Path]]:
    """The overrides checked as a command line, and the folder: --out or Hydra's
    hydra.run.dir (a sweep: hydra.sweep.dir), which salrun honours as --out."""
    from salrun.launch import command_line  # Hydra: not for --help

    try:
        check_words(overrides)
        overrides, folder = command_line(command, overrides, sweep)
    except ConfigError as err:
        fail_usage(str(err))
    if folder is None:
        return overrides, out
    if out is not None and Path(folder) != out:
        key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
        fail_usage(f"{key}={folder} and --out {out} name two folders; give one")
    return overrides, Path(folder)


LONGEST_VALUE = 1000  # characters; no setting takes more (a path is for --out)


def _choices(key: str) -> dict:
    return presets() if key == "experiment" else describe(key) if key in KINDS else {}


def check_words(overrides: list[str]) -> None:
    """ConfigError, before Hydra reads them, for overrides its parser or composer would answer with
    a traceback or a message about something else: a key outside ASCII, a value outside ASCII
    unquoted, a value thousands of characters long, a group with no choice (method=), and
    ~KEY, which deletes a setting that the run would then take from the schema unrecorded."""
    for text in overrides:
        key, equals, value = text.partition("=")
        bare = key.lstrip("+~")
        shown = text if len(text) <= 80 else f"{text[:60]}…"
        if not bare.isascii():
            raise ConfigError(f"{shown}: a key is written in ASCII (letters, digits, _ and .)"
                              f"{did_you_mean(bare, schema_keys())}")
        if len(value) > LONGEST_VALUE:
            raise ConfigError(f"{key}= is followed by {len(value):,} characters; no setting takes more than "
                              f"{LONGEST_VALUE:,}")
        if not value.isascii() and value[:1] not in "'\"":
            hint = did_you_mean(value, _choices(bare)) if bare in ("experiment", *KINDS) else ""
            raise ConfigError(f"{shown}: a value with characters outside ASCII is read only in quotes "
                              f"({key}='{value}'){hint}")
        if equals and not value and bare in ("experiment", *KINDS):
            raise ConfigError(f"{text} names no {bare}; choose from: {', '.join(_choices(bare))}")
        if key.startswith("~") and bare not in ("experiment", *KINDS) and not bare.startswith("hydra"):
            raise ConfigError(f"{text} would delete {bare}, and the run would take it from the schema without "
                              f"recording it in config.yaml; set it instead ({bare}=VALUE)")


def explain(err: ConfigError, command: str, overrides: list[str]) -> str:
    """A key the user never typed that the chosen group lacks came from the preset (model=rnn under
    the default experiment=deep_ffn, which sets model.depth): say so, and which presets fit."""
    match = re.fullmatch(r"unknown key ((\w+)\.[\w.]+)( \(did you mean .*\))?", str(err))
    typed = {o.lstrip("+~").partition("=")[0] for o in overrides}
    if not match or match.group(1) in typed:
        return str(err)
    from salrun.launch import DEFAULT_EXPERIMENT

    key, group = match.group(1), match.group(2)
    choice = next((o.partition("=")[2] for o in overrides if o.lstrip("+").partition("=")[0] == group), None)
    preset = next((o.partition("=")[2] for o in overrides if o.lstrip("+").partition("=")[0] == "experiment"),
                  DEFAULT_EXPERIMENT.get(command))
    if choice is None or not preset:
        return str(err)
    fitting = [name for name in presets() if _preset_choice(name, group) == choice]
    fits = f"a preset made for {group}={choice} ({', '.join(fitting)})" if fitting else "another preset"
    return (f"{group}={choice} has no key {key}, which the preset experiment={preset} sets; "
            f"choose {fits}, or start from no preset with ~experiment")


def _preset_choice(preset: str, group: str) -> Optional[str]:
    """The choice of `group` that conf/experiment/PRESET.yaml's defaults list overrides, if any."""
    import yaml

    from salrun.settings import config_dir

    try:
        text = yaml.safe_load((Path(config_dir()) / "experiment" / f"{preset}.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for item in text.get("defaults", []) if isinstance(text, dict) else []:
        if isinstance(item, dict) and f"override /{group}" in item:
            return str(item[f"override /{group}"])
    return None


def _resumed(folder: Path, overrides: list[str], out: Optional[Path]) -> tuple[dict, Path]:
    from salrun.jobs import resumable_config  # torch: a checkpoint is read

    if overrides:
        fail_usage("--resume takes no overrides: the run folder's config.yaml is the config")
    if out is not None:
        fail_usage("--resume continues the run in its own folder; drop --out")
    try:
        return resumable_config(folder), folder
    except RunFolderError as err:
        fail_usage(str(err))


@app.command()
def train(overrides: Optional[List[str]] = OverridesArg, out: Optional[Path] = OutOpt,
          as_json: bool = JsonOpt, quiet: bool = QuietOpt,
          resume: Optional[Path] = typer.Option(None, "--resume", metavar="DIR",
                                                help="Continue the interrupted train run in DIR from its "
                                                     "checkpoint; DIR/config.yaml is the config"),
          no_memory_check: bool = NoMemoryCheckOpt) -> None:
    """Train a deep tanh MLP (BP) or a tanh RNN (BPTT) with a method (default: experiment=deep_ffn)."""
    _run("train", overrides or [], out, as_json, quiet, resume, not no_memory_check)


@app.command()
def lyapunov(overrides: Optional[List[str]] = OverridesArg, out: Optional[Path] = OutOpt,
             as_json: bool = JsonOpt, quiet: bool = QuietOpt, no_memory_check: bool = NoMemoryCheckOpt) -> None:
    """Chaos study: SAL adapts an RNN; log-sensitivity and the max Lyapunov exponent are logged
    (default: experiment=chaos)."""
    _run("lyapunov", overrides or [], out, as_json, quiet, memory_check=not no_memory_check)


@app.command()
def config(overrides: Optional[List[str]] = OverridesArg,
           command: str = typer.Option("train", "--command", help="train | lyapunov"),
           fmt: str = typer.Option("yaml", "--format", help="yaml | json")) -> None:
    """Print the resolved config of a train (or lyapunov) run as YAML (or JSON); runs nothing."""
    import yaml

    from salrun.launch import compose  # Hydra: not for --help

    if command not in ("train", "lyapunov"):
        fail_usage(f"--command must be train or lyapunov, got {command!r}")
    if fmt not in ("yaml", "json"):
        fail_usage(f"--format must be yaml or json, got {fmt!r}")
    overrides, _ = _given_folder(command, overrides or [], None)  # a run folder changes no setting
    try:
        cfg = compose(command, overrides)
        job_settings(command, cfg)  # the same checks as a run: a bad value exits 2 here too
    except ConfigError as err:
        fail_usage(explain(err, command, overrides))
    typer.echo(yaml.safe_dump(cfg, sort_keys=False) if fmt == "yaml" else to_json(cfg), nl=False)


@app.command("list")
def list_(group: Optional[str] = typer.Argument(None, metavar="[presets|methods|inits|tasks|models|schedules|sal_schedules|loggers]",
                                                help="What to list (default: all)"),
          fmt: str = typer.Option("text", "--format", help="text | json (an object per group: choice -> "
                                                            "description)")) -> None:
    """Print each preset, method, init, task or model with a one-line description."""
    if group is not None and group not in LISTS:
        fail_usage(f"list takes one of {', '.join(LISTS)}, got {group!r}")
    if fmt not in ("text", "json"):
        fail_usage(f"--format must be text or json, got {fmt!r}")
    if fmt == "json":
        typer.echo(json.dumps({name: LISTS[name]() for name in ([group] if group else LISTS)}, indent=2,
                              ensure_ascii=False))
        return
    for name in [group] if group else LISTS:
        if group is None:
            typer.echo(f"{name}:")
        entries = LISTS[name]()
        width = max(map(len, entries))
        for choice, description in entries.items():
            typer.echo(f"  {choice:<{width}}  {description}")


@app.command()
def sweep(overrides: Optional[List[str]] = OverridesArg,
          command: Optional[str] = typer.Option(None, "--command", help="train (default) | lyapunov"),
          launcher: Optional[str] = typer.Option(None, "--launcher",
                                                 help="basic (default) | joblib | submitit_local | submitit_slurm | "
                                                      "slurm_cpu | slurm_gpu (presets of submitit_slurm)"),
          out: Optional[Path] = typer.Option(None, "--out", help="Sweep folder (default: outputs/sweep/TIMESTAMP)"),
          resume: bool = typer.Option(False, "--resume",
                                      help="Continue the sweep in --out: skip jobs that completed (status ok), "
                                           "rerun the rest; train jobs continue from their checkpoints"),
          ensemble: bool = typer.Option(False, "--ensemble",
                                        help="Train the jobs that differ only in per-member settings (seed, init, "
                                             "method none/sal/spectral/orthogonal/critical, SAL's lr/target/gate/"
                                             "beta, rho, optim.lr) as one batched model: one launcher job "
                                             "per group (train sweeps)"),
          as_json: bool = typer.Option(False, "--json", help="Print the sweep table (sweep.csv's rows) to stdout "
                                                             "as a JSON list of records"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines and no table"),
          no_memory_check: bool = NoMemoryCheckOpt) -> None:
    """Run a grid (comma lists span it: method=sal,none seed=0,1,2) through Hydra's multirun;
    writes OUT/sweep.csv with one row per job."""
    from salrun.launch import LAUNCHERS, compose_grid, sweep_jobs, sweep_memory_budget  # Hydra: not for --help

    overrides, out = _given_folder(command or "train", overrides or [], out, sweep=True)
    if resume:
        out, overrides, command, launcher = _resumed_sweep(out, overrides, command, launcher)
    command, launcher = command or "train", launcher or "basic"
    if command not in ("train", "lyapunov"):
        fail_usage(f"--command must be train or lyapunov, got {command!r}")
    if launcher not in LAUNCHERS:
        fail_usage(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if ensemble and command != "train":
        fail_usage("--ensemble batches train sweeps only (--command train)")
    claim = out is None and not resume
    if not resume:
        out = (out or _default_out("sweep")).resolve()
        check_out_dir(out.parent if claim else out, "sweep")
    try:
        jobs = sweep_jobs(overrides)
        # Every grid point must be valid, and the jobs that run at once must fit, before anything runs.
        configs = compose_grid(command, [[o for o in job if not o.startswith("hydra")] for job in jobs])
        refuse_repeats(jobs, configs)
        grid = [job_settings(command, cfg) for cfg in configs]
        budget = sweep_memory_budget(launcher, overrides, len(jobs)) if not no_memory_check else None
        if ensemble and budget is not None:  # a batched group's memory grows with its members
            from salrun.launch import ensemble_tasks, ensemble_workers

            tasks = ensemble_tasks(grid, ensemble_workers(launcher, overrides, len(jobs)))
            grid = [[grid[i] for i in task] for task in tasks]
    except ConfigError as err:
        fail_usage(explain(err, command, overrides))
    memory_preflight(grid, budget)
    out = make_out_dir(out, claim)
    try:  # held while the sweep runs: a second sweep (or a run) into the folder is refused
        folder_claim = claim_folder(out, "sweep", "salrun sweep")
    except RunFolderError as err:
        fail_usage(str(err))
    except OSError as err:
        fail_run(os_error_line(err))
    with folder_claim:
        write_sweep_plan(out, command, overrides, launcher)  # what --resume reruns
        if not quiet:
            again = " (resumed: completed jobs are skipped)" if resume else ""
            typer.echo(f"sweep: {len(jobs)} {command} jobs with the {launcher} launcher into {out}{again}", err=True)
        _run_sweep(command, overrides, launcher, out, jobs, quiet, as_json, ensemble)


def refuse_repeats(jobs: list[list[str]], configs: list[dict]) -> None:
    """ConfigError if two grid points resolve to the same config (seed=0,0): they would be one
    run twice, and a report would count it as two seeds."""
    first: dict[str, int] = {}
    for index, cfg in enumerate(configs):
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key in first:
            a, b = (" ".join(jobs[i]) for i in (first[key], index))
            same = f"are the same run ({a})" if a == b else f"({a}; {b}) resolve to the same config"
            raise ConfigError(f"jobs {first[key]} and {index} of the grid {same}: give each grid point once")
        first[key] = index


def _resumed_sweep(out: Optional[Path], overrides: list[str], command: Optional[str],
                   launcher: Optional[str]) -> tuple[Path, list[str], str, str]:
    """The recorded sweep in --out: its folder, grid, command and launcher (which may change)."""
    if out is None:
        fail_usage("--resume needs --out SWEEP_DIR, the folder of the sweep to continue")
    out = out.resolve()
    try:
        plan = read_sweep_plan(out)
    except RunFolderError as err:
        fail_usage(str(err))
    grid = [o for o in overrides if not o.startswith("hydra.")]
    if overrides and grid != [o for o in plan["overrides"] if not o.startswith("hydra.")]:
        fail_usage(f"--resume reruns the recorded grid ({' '.join(plan['overrides'])}); give the same "
                   "overrides (hydra.* may change) or none")
    if command not in (None, plan["command"]):
        fail_usage(f"--resume: the sweep in {out} ran --command {plan['command']}, not {command}")
    return out, overrides or plan["overrides"], plan["command"], launcher or plan["launcher"]


def _run_sweep(command: str, overrides: list[str], launcher: str, out: Path, jobs: list[list[str]],
               quiet: bool, as_json: bool, ensemble: bool = False) -> None:
    """Hydra's multirun (or, with --ensemble, batched models), then OUT/sweep.csv (also after
    Ctrl-C: the jobs that finished)."""
    from salrun.console import print_sweep
    from salrun.launch import run_sweep

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    interrupted, failure = False, ""
    try:
        if ensemble:
            from salrun.launch import sweep_ensembles

            results = sweep_ensembles(jobs, out, launcher, overrides, say=lambda line: typer.echo(line, err=True),
                                      quiet=quiet)
        else:
            results = run_sweep(command, overrides, launcher, out, quiet)
    except KeyboardInterrupt:  # keep what finished: job i runs in OUT/i
        interrupted = True
        results = [(job, out / str(i), "") for i, job in enumerate(jobs)]
    except OSError as err:  # Hydra's own records (a job's .hydra/) on a full or read-only disk: keep what finished
        failure = os_error_line(err)
        results = [(job, out / str(i), failure) for i, job in enumerate(jobs)]
    rows = sweep_rows((o, folder) for o, folder, _ in results)
    for row, (_, folder, error) in zip(rows, results):
        # A job that says ok but whose launcher failed, or one that left no summary: the launcher's error.
        if error and (row["status"] == "ok" or row["status"] == "failed" and not (folder / "summary.json").is_file()):
            row.update(status="failed", error=error)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_table(out / "sweep.csv", rows)
    except OSError as err:
        fail_run(f"{out / 'sweep.csv'} cannot be written: {os_error_line(err)}; each job's folder keeps its results")
    if interrupted:
        raise typer.Exit(130)
    if failure:
        typer.echo(f"salrun: error: the sweep stopped: {failure}; sweep.csv says which jobs completed", err=True)
    if as_json:
        typer.echo(json.dumps([json.loads(to_json(row)) for row in rows], indent=2))  # strict: NaN as null
    elif not quiet:
        print_sweep(rows, [o for o, _, _ in results], out)
    raise typer.Exit(1 if failure else sweep_exit_code([row["status"] for row in rows]))


def sweep_exit_code(statuses: list[str]) -> int:
    """0 if every job completed; 3 if the others diverged (as a single run that diverged);
    1 if any failed (or did not finish)."""
    from salrun.jobs import EXIT_CODES

    if all(status == "ok" for status in statuses):
        return 0
    return EXIT_CODES["diverged"] if all(status in ("ok", "diverged") for status in statuses) else 1


@app.command()
def report(paths: Optional[List[Path]] = typer.Argument(None, metavar="PATH",
                                                       help="Run folders (summary.json) and sweep folders "
                                                            "(sweep.csv), or a quoted glob of them; merged into "
                                                            "one table"),
           fmt: Optional[str] = typer.Option(None, "--format",
                                             help="csv | json | markdown | pivot | overrides | runs: print the "
                                                  "table in this format to stdout instead of the rich table (or "
                                                  "into --table FILE); pivot: successes/runs in markdown, a column "
                                                  "per method; overrides: each row's settings as key=value words; "
                                                  "runs: one row a run, which report reads back"),
           table: Optional[Path] = typer.Option(None, "--table",
                                                help="Write the table to FILE (format: --format, else the "
                                                     "suffix .csv/.json/.md); the rich table still prints"),
           figures: Optional[Path] = typer.Option(None, "--figures",
                                                  help="Folder for PNG figures (default: PATH/figures; for "
                                                       "several PATHs, figures/ in their common parent)"),
           no_figures: bool = typer.Option(False, "--no-figures", help="Write no figures"),
           against: Optional[str] = typer.Option(None, "--against", metavar="METHOD",
                                                 help="Add each method's difference from METHOD in the same "
                                                      "setting (success rate and mean final metric, with "
                                                      "95% intervals)"),
           pair_by: Optional[str] = typer.Option(None, "--pair-by", metavar="KEY",
                                                 help="With --against: pair rows by this one setting (or "
                                                      "experiment, task, model) instead of all of them"),
           judged: bool = typer.Option(False, "--judged",
                                       help="Add how the test metric went: the judged value (min–max), the "
                                            "best evaluation, runs that reached the threshold once, and lost it"),
           best: bool = typer.Option(False, "--best",
                                     help="Keep the best row: highest success rate, then best mean final metric"),
           per: Optional[List[str]] = typer.Option(None, "--per", metavar="KEY",
                                                   help="With --best: the best row per value of KEY (repeatable)"),
           where: Optional[List[str]] = typer.Option(None, "--where", metavar="KEY=VALUE",
                                                     help="Only the runs with this setting (repeatable)"),
           fill: Optional[List[Path]] = typer.Option(None, "--fill", metavar="FILE.md",
                                                     help="Rewrite each block of FILE.md between '<!-- salrun report "
                                                          "ARGS -->' and '<!-- /salrun report -->' with what "
                                                          "'salrun report ARGS' prints, and between '<!-- include "
                                                          "F -->' and '<!-- /include -->' with file F "
                                                          "(repeatable; no PATH)")) -> None:
    """Summary table (grouped by method and the settings that differ, over seeds) with 95%
    intervals, and PNG figures, for run folders, sweep folders and run records files (--format runs)."""
    from salrun.report import make_report  # pandas: not for --help

    if fill:
        if paths:
            fail_usage("--fill takes no PATH: each marker in FILE.md names its own")
        fill_documents(fill)
        return
    if not paths:
        fail_usage("report needs PATH, a run folder or a sweep folder (or several, or a glob)")
    try:
        make_report(paths, fmt, table, figures, not no_figures, against, pair_by, judged, best, per or [],
                    where or [])
    except RunFolderError as err:
        fail_usage(str(err))


def fill_documents(files: List[Path]) -> None:
    """`salrun report --fill`: each marker's command runs through this same `report` command, its
    stdout captured; a file is rewritten only if a block changed, and only once every block ran."""
    import contextlib
    import io

    from salrun.console import note
    from salrun.report import fill_markers, has_markers
    from salrun.results import write_atomic

    def run(words: list[str]) -> str:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = typer.main.get_command(app).main(["report", *words], prog_name="salrun", standalone_mode=False)
        if code:  # the report's own one line says why
            reason = err.getvalue().strip().splitlines()[-1:] or [f"exit {code}"]
            raise RunFolderError(f"marker 'salrun report {' '.join(words)}': {reason[0].removeprefix('salrun: error: ')}")
        return out.getvalue()

    for path in files:
        try:
            text = Path(path).read_text()
        except OSError as err:
            fail_usage(f"--fill {path}: {err.strerror or err}")
        if not has_markers(text):
            fail_usage(f"--fill {path}: no '<!-- salrun report ... -->' or '<!-- include FILE -->' marker in it")
        try:
            filled = fill_markers(text, run)
        except RunFolderError as err:
            fail_usage(f"--fill {path}: {err}")
        if filled != text:
            write_atomic(Path(path), filled)
        note(f"{path}: {'rewritten' if filled != text else 'unchanged'}")


TUNE_EXAMPLE = ("Example (about 75 s on 2 shared cores; the same command with --trials 12 continues the study):"
                "\n\n"
                "salrun tune model.depth=10 train.steps=200 'method.lr=tag(log, interval(0.001, 0.1))' "
                "'method.target=choice(1.0, 1.05)' --trials 6"
                "\n\n"
                "Trials run on the tuning seeds (--seeds, default 100,101), never on the reported seeds 0-9. The "
                "folder (default outputs/tune/STUDY) holds the study (study.db), each trial's run folders, "
                "trials.csv and best.json.")


@app.command(epilog=TUNE_EXAMPLE)
def tune(overrides: Optional[List[str]] = OverridesArg,
         trials: int = typer.Option(..., "--trials", min=1,
                                    help="Trials the study should hold when done; a rerun with more continues it"),
         study: Optional[str] = typer.Option(None, "--study",
                                             help="Study name (default: one derived from the overrides, seeds and "
                                                  "metric, so the same command continues the same study)"),
         storage: Optional[str] = typer.Option(None, "--storage",
                                               help="Optuna storage: an SQLAlchemy URL or journal:FILE (default: "
                                                    "OUT/study.db; OUT/study.journal with a SLURM launcher)"),
         metric: Optional[str] = typer.Option(None, "--metric", help="Metric to optimise (default: the task's)"),
         direction: Optional[str] = typer.Option(None, "--direction",
                                                 help="maximize | minimize (default: the task's metric's)"),
         seeds: str = typer.Option("100,101", "--seeds", help="Tuning seeds, comma-separated; the objective is "
                                                              "the mean over them (0-9 are refused: reported)"),
         launcher: str = typer.Option("basic", "--launcher", help="basic | joblib | submitit_local | "
                                                                  "submitit_slurm | slurm_cpu | slurm_gpu"),
         parallel: Optional[int] = typer.Option(None, "--parallel", min=1,
                                                help="Trials at once (default: joblib's n_jobs, 1 for basic, "
                                                     "4 on SLURM)"),
         prune: bool = typer.Option(True, "--prune/--no-prune",
                                    help="Stop trials whose mean metric falls below the median (MedianPruner)"),
         out: Optional[Path] = typer.Option(None, "--out", help="Tune folder (default: outputs/tune/STUDY)"),
         quiet: bool = QuietOpt) -> None:
    """Tune with Optuna: search spaces in Hydra's sweeper syntax (method.lr='tag(log, interval(0.001,
    0.1))', method.target='choice(1.0, 1.05)'); each trial trains on every tuning seed through
    Hydra's multirun and its launchers. Resumable: the study lives in the tune folder."""
    from salrun.launch import LAUNCHERS, compose_grid, launcher_settings, parallel_jobs, search_space

    overrides, folder = _given_folder("train", overrides or [], out, sweep=True)
    try:
        from salrun import tune as tuning

        tuning.require_optuna()
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as err:
        fail_usage(f"--seeds must be comma-separated integers, got {seeds!r}" if "int()" in str(err) else str(err))
    if launcher not in LAUNCHERS:
        fail_usage(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if direction not in (None, "maximize", "minimize"):
        fail_usage(f"--direction must be maximize or minimize, got {direction!r}")
    hydra = [o for o in overrides if o.startswith("hydra.")]
    try:
        tuning.check_seeds(seed_list)
        fixed, space = search_space([o for o in overrides if not o.startswith("hydra.")])
        if not space:
            raise ConfigError("nothing to search: give a space, e.g. 'method.lr=tag(log, interval(0.001, 0.1))'")
        if any(k.lstrip("+~").split("=")[0] == "seed" for k in [*fixed, *space]):
            raise ConfigError("the seeds of a tune are --seeds (the objective is their mean), not a seed= override")
        configs = compose_grid("train", [[*fixed, *end, f"seed={seed_list[0]}"] for end in tuning.ends(space)])
        for cfg in configs:
            job_settings("train", cfg)
        metric, direction = tuning.direction_of(metric, configs[0], direction)
        study = study or tuning.default_study(overrides, seed_list, metric)
        out = (folder or Path("outputs") / "tune" / study).resolve()
        check_out_dir(out, "tune")
        plan = tuning.plan_of(fixed, space, seed_list, metric, direction, study,
                              tuning.storage_url(storage, out, launcher), trials, launcher, prune,
                              configs[0]["train"]["steps"])
        settings = launcher_settings(launcher, hydra)
        batch = parallel or (4 if "slurm" in launcher else parallel_jobs(launcher, settings, trials))
        threads = max(1, tuning.cores() // batch) if launcher == "joblib" else 0
        session = tuning.Tune.create(out, plan, storage_given=storage is not None)
    except ConfigError as err:
        fail_usage(str(err))
    say = (lambda line: None) if quiet else (lambda line: typer.echo(line, err=True))
    say(f"tune: study {study} in {out}: {trials} trials on seeds {seeds}, {metric} ({direction}), "
        f"{batch} at once with the {launcher} launcher")
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        tuning.optimize(session, hydra, batch, threads, quiet, say)
    except KeyboardInterrupt:
        session.write_tables()
        typer.echo(f"tune: interrupted; the same command continues it ({out})", err=True)
        raise typer.Exit(130)
    best = session.write_tables()
    if best is None:
        typer.echo(f"salrun: error: no trial completed (see {out / 'trials.csv'})", err=True)
        raise typer.Exit(1)
    if not quiet:
        typer.echo(f"best: trial {best['number']}, {metric} {best['value']:.4g} (mean over seeds {seeds})")
        typer.echo(f"  {' '.join(best['overrides'])}")
        typer.echo(f"report it on other seeds: salrun sweep {' '.join(best['overrides'])} seed=0,1,2,3,4,5,6,7,8,9")


def main() -> None:
    """Run the command line; Click's usage errors (an unknown option or command) become one
    line on stderr with the nearest valid name, and exit 2, as salrun's own errors do."""
    try:  # typer >= 0.24 carries its own copy of Click
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click

    try:
        code = app(prog_name="salrun", standalone_mode=False)
    except click.ClickException as err:
        if isinstance(err, getattr(click, "NoArgsIsHelpError", ())):  # bare `salrun`: the help is printed
            sys.exit(2)
        message = err.format_message()
        if isinstance(err, click.NoSuchOption) and err.ctx is not None:
            names = [o for p in err.ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
            hint = " (use --format json)" if err.option_name == "--json" and "--format" in names else \
                did_you_mean(err.option_name, names)
            message = f"no such option {err.option_name}{hint}"
        elif isinstance(err, click.UsageError) and err.ctx is not None and message.startswith("No such command"):
            word = message.split("'")[1]
            message = f"no such command {word!r}{did_you_mean(word, err.ctx.command.list_commands(err.ctx))}"
        typer.echo(f"salrun: error: {message[:1].lower()}{message[1:]}", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:  # Ctrl-C outside a job (a job records its own interrupt)
        sys.exit(130)
    except OSError as err:  # the system refused (a full disk, too many open files): one line, not a traceback
        typer.echo(f"salrun: error: {os_error_line(err)}", err=True)
        sys.exit(1)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
