"""`salrun tune`: Optuna searches the space written in Hydra's sweeper syntax; each trial trains
its config on every tuning seed, through Hydra's multirun and its launchers.

    OUT/tune.json            what the tune is: overrides, search space, seeds, metric, direction, storage
    OUT/study.db             the Optuna study (SQLite; `--storage` may name another, a journal file on SLURM)
    OUT/trials/N/seed_S/     trial N's run folder for tuning seed S (a run folder like any other)
    OUT/trials/N/trial.json  trial N's overrides and the configs of its seeds
    OUT/trials.csv           one row per trial: number, state, value, params
    OUT/best.json            the best trial: its value, its params and the overrides that reproduce it

The driver asks Optuna for as many trials as the launcher runs at once, writes each trial's
plan, and runs the batch as the jobs of one Hydra multirun (basic, joblib, submitit); each job
trains its trial's seeds (one batched model when they batch), reports the mean metric over
its seeds after every evaluation (the pruner's view), and tells the study its value. The
study in the storage is the whole state: a rerun with a larger --trials asks only the
missing trials, and a trial left running by a killed tune is run again, each seed from its
checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from salrun.results import RunFolderError, read_config, read_summary, write_atomic
from salrun.settings import ConfigError, choose

PLAN = "tune.json"
REPORTED_SEEDS = range(10)    # the seeds salrun's docs report results on (docs/bench.sh report: 0-9)
TUNING_SEEDS = (100, 101)     # the default tuning seeds, apart from those
EXTRA = "pip install 'salrun[tune]'"
LOSSES = ("loss", "test_loss")  # metrics that are minimised without --direction


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"salrun tune needs optuna: {EXTRA}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_study(overrides: list[str], seeds: list[int], metric: str | None) -> str:
    """A name from what the tune is, so that the same command finds the same study (and folder)."""
    text = json.dumps([sorted(overrides), seeds, metric])
    return "tune-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def check_seeds(seeds: list[int]) -> None:
    reported = sorted(set(seeds) & set(REPORTED_SEEDS))
    if reported:
        raise ConfigError(f"--seeds {','.join(map(str, reported))}: seeds {REPORTED_SEEDS.start}-"
                          f"{REPORTED_SEEDS.stop - 1} are the seeds results are reported on; tune on others "
                          f"(default {','.join(map(str, TUNING_SEEDS))})")
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {seeds}")


def storage_url(storage: str | None, out: Path, launcher: str) -> str:
    """The study's storage: --storage as given (an SQLAlchemy URL, or journal:PATH for Optuna's
    JournalStorage on a file), else OUT/study.db; on SLURM OUT/study.journal, since SQLite's
    locks are not safe on a network file system and every cluster job writes to the study."""
    if storage:
        return storage
    if "slurm" in launcher:
        return f"journal:{out / 'study.journal'}"
    return f"sqlite:///{out / 'study.db'}"


def open_storage(url: str):
    optuna = require_optuna()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                          if url.startswith("sqlite") else None)
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's errors for a bad URL are many
        raise ConfigError(f"--storage {url}: {str(err).splitlines()[0]}") from None


def distributions(space: dict[str, dict]) -> dict:
    """Optuna's distribution for each searched key (as hydra-optuna-sweeper maps them)."""
    optuna = require_optuna()
    dist = optuna.distributions
    found = {}
    for key, spec in space.items():
        if "choice" in spec:
            found[key] = dist.CategoricalDistribution(spec["choice"])
        elif "range" in spec:
            start, stop, step = spec["range"]
            if any(isinstance(v, float) for v in (start, stop, step)):
                found[key] = dist.FloatDistribution(start, stop, step=step)
            else:
                found[key] = dist.IntDistribution(int(start), int(stop) - 1, step=int(step))
        else:
            low, high = spec["interval"]
            kind = dist.IntDistribution if spec["int"] else dist.FloatDistribution
            try:
                found[key] = kind(int(low) if spec["int"] else low, int(high) if spec["int"] else high,
                                  log=spec["log"])
            except ValueError as err:
                raise ConfigError(f"{key}: {err}") from None
    return found


def ends(space: dict[str, dict]) -> list[list[str]]:
    """Two points of the space, every key at its lowest, then at its highest: what the CLI
    checks (as a config) before the tune starts."""
    points = []
    for i in (0, 1):
        point = []
        for key, spec in space.items():
            if "choice" in spec:
                value = spec["choice"][-i]
            elif "range" in spec:
                start, stop, step = spec["range"]
                value = start if i == 0 else start + step * max(0, math.ceil((stop - start) / step) - 1)
            else:
                value = spec["interval"][i]
                value = int(value) if spec["int"] else value
            point.append(override(key, value))
        points.append(point)
    return points


def override(key: str, value) -> str:
    return f"{key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}"


def direction_of(metric: str, cfg: dict, given: str | None) -> tuple[str, str]:
    """The metric (default: the task's test metric) and its direction (default: the task's, or
    minimize for a loss); ConfigError if neither says."""
    task_choice = choose("task", cfg["task"])
    task = task_choice.entry.load()(task_choice.settings)
    metric = metric or task.metric
    if given:
        return metric, given
    if metric == task.metric:
        return metric, "maximize" if task.higher_is_better else "minimize"
    if metric in LOSSES:
        return metric, "minimize"
    raise ConfigError(f"--metric {metric}: give --direction maximize or minimize")


# -- the driver ---------------------------------------------------------------------------------

class Tune:
    """A tune folder and its study."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.plan = json.loads((self.out / PLAN).read_text())
        self.optuna = require_optuna()
        self.storage = open_storage(self.plan["storage"])

    @classmethod
    def create(cls, out: Path, plan: dict, storage_given: bool = False) -> "Tune":
        """The tune in `out`: made from `plan`, or the one there if it is the same tune (a rerun
        with more trials; it keeps its storage unless --storage names another, which is refused);
        ConfigError if `out` holds another."""
        path = Path(out) / PLAN
        if path.is_file():
            recorded = json.loads(path.read_text())
            for key in ("overrides", "space", "seeds", "metric", "direction", "study") + \
                    (("storage",) if storage_given else ()):
                if recorded.get(key) != plan.get(key):
                    raise ConfigError(f"--out {out} holds another tune ({key}: {recorded.get(key)} there, "
                                      f"{plan.get(key)} now); choose another folder")
            recorded.update(trials=plan["trials"], launcher=plan["launcher"], prune=plan["prune"])
            plan = recorded
        Path(out).mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(plan, indent=2))
        tune = cls(out)
        tune.study(create=True)
        return tune

    def study(self, create: bool = False):
        optuna, plan = self.optuna, self.plan
        pruner = optuna.pruners.MedianPruner(n_startup_trials=plan["prune_after"], n_warmup_steps=plan["warmup"]) \
            if plan["prune"] else optuna.pruners.NopPruner()
        existing = 0
        try:
            existing = len(self.storage.get_all_trials(self.storage.get_study_id_from_name(plan["study"]),
                                                       deepcopy=False))
        except KeyError:
            if not create:
                raise RunFolderError(f"{self.out}: the study {plan['study']} is not in {plan['storage']}") from None
        # seeded by the trials so far: a resumed tune draws new points, not the first ones again
        sampler = optuna.samplers.TPESampler(seed=existing, n_startup_trials=plan["startup"])
        return optuna.create_study(study_name=plan["study"], storage=self.storage, direction=plan["direction"],
                                   sampler=sampler, pruner=pruner, load_if_exists=True)

    def pending(self) -> tuple[int, list]:
        """(trials finished, trials left running by a killed tune)."""
        states = self.optuna.trial.TrialState
        trials = self.study().get_trials(deepcopy=False)
        finished = sum(t.state in (states.COMPLETE, states.PRUNED, states.FAIL) for t in trials)
        return finished, [t for t in trials if t.state in (states.RUNNING, states.WAITING)]

    def ask(self, count: int) -> list[int]:
        """`count` new trials, each with its plan written; their numbers."""
        study, numbers = self.study(), []
        space = distributions(self.plan["space"])
        for _ in range(count):
            trial = study.ask(space)
            self.write_trial(trial.number, trial._trial_id, trial.params)  # Trial(study, trial_id) needs the id
            numbers.append(trial.number)
        return numbers

    def write_trial(self, number: int, trial_id: int, params: dict) -> None:
        from salrun.launch import compose_grid

        folder = self.out / "trials" / str(number)
        if (folder / "trial.json").is_file():
            return  # a trial run again keeps its plan (its seeds' folders hold the same configs)
        searched = [override(key, params[key]) for key in self.plan["space"]]
        jobs = [[*self.plan["overrides"], *searched, f"seed={seed}"] for seed in self.plan["seeds"]]
        folder.mkdir(parents=True, exist_ok=True)
        try:
            configs, error = compose_grid("train", jobs), ""
            from salrun.settings import job_settings

            for cfg in configs:
                job_settings("train", cfg)
        except ConfigError as err:  # a point of the space that salrun refuses: the trial fails
            configs, error = [], str(err)
        write_atomic(folder / "trial.json", json.dumps({
            "number": number, "trial_id": trial_id, "params": params, "overrides": searched,
            "jobs": jobs, "configs": configs, "error": error}, indent=2))

    def rows(self) -> list[dict]:
        rows = []
        for t in self.study().get_trials(deepcopy=False):
            rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                         **{f"params.{k}": v for k, v in t.params.items()},
                         "error": t.user_attrs.get("error", "")})
        return rows

    def best(self) -> dict | None:
        study = self.study()
        try:
            best = study.best_trial
        except ValueError:  # no trial completed
            return None
        searched = [override(key, best.params[key]) for key in self.plan["space"] if key in best.params]
        return {"number": best.number, "value": best.value, "metric": self.plan["metric"],
                "direction": self.plan["direction"], "seeds": self.plan["seeds"], "params": best.params,
                "overrides": [*self.plan["overrides"], *searched]}

    def write_tables(self) -> dict | None:
        from salrun.results import write_table

        write_table(self.out / "trials.csv", self.rows())
        best = self.best()
        if best is not None:
            write_atomic(self.out / "best.json", json.dumps(best, indent=2) + "\n")
        return best


def plan_of(overrides: list[str], space: dict, seeds: list[int], metric: str, direction: str, study: str,
            storage: str, trials: int, launcher: str, prune: bool, steps: int) -> dict:
    return {"overrides": overrides, "space": space, "seeds": seeds, "metric": metric, "direction": direction,
            "study": study, "storage": storage, "trials": trials, "launcher": launcher, "prune": prune,
            # the pruner waits for 5 finished trials and for a quarter of the training (ours)
            "prune_after": 5, "warmup": steps // 4, "startup": 10}


# -- a trial: one job of the multirun -----------------------------------------------------------

def tune_trial(cfg) -> dict:
    """One job of `salrun tune`'s multirun (launchers pickle it: module level): trial
    `cfg.tune_trial` of the tune in `cfg.tune_dir`."""
    threads = int(cfg.get("tune_threads", 0) or 0)
    return run_trial(Path(str(cfg.tune_dir)), int(cfg.tune_trial), threads)


def run_trial(out: Path, number: int, threads: int = 0) -> dict:
    """Train trial `number` on its seeds (continuing their folders if they exist), report the
    mean metric after every evaluation, and tell the study the trial's value (or that it was
    pruned or failed). KeyboardInterrupt if a seed was interrupted: the trial stays running,
    and the next `salrun tune` runs it again."""
    from salrun.jobs import run_jobs
    from salrun.settings import batch_key, job_settings
    from salrun.training import Stop

    tune = Tune(out)
    plan, optuna = tune.plan, tune.optuna
    folder = out / "trials" / str(number)
    trial_plan = json.loads((folder / "trial.json").read_text())
    study = tune.study()
    states = optuna.trial.TrialState
    trial_id = trial_plan["trial_id"]
    if trial_plan["error"]:  # set before tell: a finished trial takes no more attributes
        tune.storage.set_trial_user_attr(trial_id, "error", trial_plan["error"])
        study.tell(number, state=states.FAIL)
        return {"number": number, "state": "fail", "error": trial_plan["error"]}
    trial = optuna.trial.Trial(study, trial_id)
    reported = set(tune.storage.get_trial(trial_id).intermediate_values)  # a trial run again reports on
    metric = plan["metric"]

    def watch(step: int, members) -> None:
        values = [m.writer.history(metric)[-1] for m in members
                  if m.summary.get("status") == "running" and m.writer.history(metric)]
        values = [v for v in values if math.isfinite(v)]
        if not values or step in reported:
            return
        trial.report(sum(values) / len(values), step)
        reported.add(step)
        if trial.should_prune():
            raise Stop(f"pruned by salrun tune at step {step}: the mean {metric} over its seeds "
                       f"({sum(values) / len(values):.4g}) is worse than the median of the trials before")

    configs = [dict(c, threads=c.get("threads") or threads) for c in trial_plan["configs"]]
    seeds = [folder / f"seed_{seed}" for seed in plan["seeds"]]
    summaries: dict[int, dict] = {}
    fresh = [i for i, f in enumerate(seeds) if not (f / "config.yaml").is_file()]
    settings = [job_settings("train", configs[i]) for i in fresh]
    keys = {batch_key(s) for s in settings}
    together = fresh if len(fresh) > 1 and len(keys) == 1 and None not in keys else []
    if together:  # the seeds as one batched model: the pruner sees their mean at every evaluation
        for i, summary in zip(together, run_jobs("train", [configs[i] for i in together], [seeds[i] for i in together],
                                                 overrides=[trial_plan["jobs"][i] for i in together], watch=watch)):
            summaries[i] = summary
    for i, path in enumerate(seeds):
        if i in summaries:
            continue
        if (path / "config.yaml").is_file() and read_config(path) != configs[i]:
            raise RunFolderError(f"{path} holds a run with another config; not overwriting it")
        done = _finished(path)
        summaries[i] = done if done is not None else run_jobs(
            "train", [configs[i]], [path], resume=(path / "config.yaml").is_file(),
            overrides=None if (path / "config.yaml").is_file() else [trial_plan["jobs"][i]], watch=watch)[0]
        if summaries[i]["status"] in ("pruned", "interrupted"):
            break
    statuses = [summaries.get(i, {}).get("status") for i in range(len(seeds))]
    if "interrupted" in statuses:
        raise KeyboardInterrupt
    if "pruned" in statuses:
        study.tell(number, state=states.PRUNED)
        return {"number": number, "state": "pruned"}
    if any(s != "ok" for s in statuses):
        bad = next(summaries[i] for i in range(len(seeds)) if statuses[i] != "ok")
        tune.storage.set_trial_user_attr(trial_id, "error",
                                         f"seed {bad.get('seed')}: {bad.get('status')}: {bad.get('error', '')}")
        study.tell(number, state=states.FAIL)
        return {"number": number, "state": "fail"}
    value = sum(judged(seeds[i], summaries[i], metric) for i in range(len(seeds))) / len(seeds)
    study.tell(number, value)
    return {"number": number, "state": "complete", "value": value}


def _finished(folder: Path) -> dict | None:
    """The summary of a seed's run that completed (status ok), else None."""
    if not (folder / "summary.json").is_file():
        return None
    try:
        summary = read_summary(folder)
    except RunFolderError:
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "ok" else None


def judged(folder: Path, summary: dict, metric: str) -> float:
    """A seed's value: the summary's judged metric (the mean of the last success_window
    evaluations) for the task's metric; for another, its mean over as many last evaluations."""
    if metric == summary.get("metric"):
        return float(summary["judged"])
    from salrun.results import read_metrics

    rows = read_metrics(folder)
    values = rows[(rows["metric"] == metric) & rows["layer"].isna()]["value"].tolist()
    if not values:
        raise RunFolderError(f"{folder}/metrics.csv has no metric {metric!r}")
    window = read_config(folder)["train"]["success_window"]
    return sum(values[-window:]) / len(values[-window:])


def optimize(tune: Tune, launcher_overrides: list[str], batch: int, threads: int, quiet: bool, say) -> int:
    """Run trials until the study has `trials` finished ones; returns how many ran now."""
    from salrun.launch import multirun_jobs

    ran = 0
    while True:
        finished, stale = tune.pending()
        wanted = tune.plan["trials"] - finished
        if wanted <= 0 and not stale:
            return ran
        for trial in stale:  # killed between Optuna's ask and its plan: write the plan now
            tune.write_trial(trial.number, trial._trial_id, trial.params)
        numbers = [t.number for t in stale][:max(batch, 1)]
        if stale:
            say(f"tune: running again trial(s) {', '.join(map(str, numbers))}, left running by a stopped tune")
        numbers += tune.ask(min(batch - len(numbers), wanted - len(stale))) if wanted - len(stale) > 0 else []
        if not numbers:
            return ran
        overrides = [*launcher_overrides, f"+tune_dir={tune.out}", f"+tune_threads={threads}",
                     f"+tune_trial={','.join(map(str, numbers))}"]
        results = multirun_jobs("train", tune_trial, overrides, tune.plan["launcher"], tune.out,
                                "trials/${tune_trial}", quiet)
        for number, result in zip(numbers, results):
            if isinstance(result, str):  # the job itself failed (not its training): the trial fails
                _fail_stale(tune, number, result)
            elif not quiet:
                value = f" {tune.plan['metric']} {result['value']:.4g}" if "value" in result else ""
                say(f"tune: trial {number} {result['state']}{value}")
        ran += len(numbers)


def _fail_stale(tune: Tune, number: int, error: str) -> None:
    states = tune.optuna.trial.TrialState
    study = tune.study()
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if trial.state in (states.RUNNING, states.WAITING):
        tune.storage.set_trial_user_attr(trial._trial_id, "error", error[:500])
        study.tell(number, state=states.FAIL)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
