"""The memory preflight: a job's peak memory, estimated from its settings before anything
is built, against what this machine can give it.

A size typed by mistake (train.batch_size=100000000) would otherwise grow until the
kernel kills the job, or the whole machine. The estimate counts float32 tensors by the
settings that size them; the factors below are ours, checked against measured peak RSS
(benchmarks/run.py --only memory; README, "Memory preflight"). No torch here unless a GPU
may be present: the CLI refuses a job in well under a second.
"""
from __future__ import annotations

import importlib
import os
import resource
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from salrun.settings import ConfigError, JobSettings

FLOAT = 4                 # bytes of a float32
BASE_BYTES = 350e6        # Python, torch and salrun before the first tensor (a 3-layer run peaks at 0.34 GB)
CUDA_CONTEXT_BYTES = 600e6  # device memory of a CUDA context: ours, not measured here (no GPU)
SHARE = 0.8               # refuse a job whose estimate exceeds this share of the available memory
# Copies kept at once, per element of depth × width × batch (MLP) or steps × hidden × batch
# (RNN): the activations autograd keeps, SAL's stacked inputs and outputs, the per-layer
# metrics'. Measured: 5.5 at depth 30, width 32, batch 100,000; 7.3 at lag 50, hidden 32, batch 50,000.
KEPT_MLP, KEPT_RNN = 6, 7
# Copies of the parameters: weights, gradients, Adam's two moments, the copy made while building.
PARAMETER_COPIES = 5
STEP_BYTES = 2 * FLOAT    # a sequence task's bytes per step and sequence, unless it declares `bytes_per_step`


@dataclass(frozen=True)
class Term:
    name: str          # what it is: "activations"
    bytes: float
    product: str       # the keys whose product sets it: "model.depth × model.width × train.batch_size"
    lower: str         # the key to lower
    data: bool = False  # task data, made on the host even when the model runs on a GPU


def estimate(s: JobSettings) -> list[Term]:
    """The terms of the job's peak memory beyond BASE_BYTES, largest first: the model's and the
    method's, as their registry entries declare them (`Entry.memory`)."""
    if s.command == "lyapunov":
        terms = _lyapunov(s)
    else:
        terms = [term for choice in (s.model, s.method) if choice.entry.memory
                 for term in _load(choice.entry.memory)(s)]
    return sorted((t for t in terms if t.bytes > 0), key=lambda t: -t.bytes)


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def total(terms: Iterable[Term]) -> float:
    return BASE_BYTES + sum(t.bytes for t in terms)


def mlp_terms(s: JobSettings) -> list[Term]:
    batch, task, model = s.root.train.batch_size, s.task.settings, s.model.settings
    depth, width = model.depth, model.width
    test = getattr(task, "test_size", 1)
    # batches gathered by int64 index from the training set (index, points, labels), the sets themselves
    data = 24 * (batch + getattr(task, "train_size", 0) + test) + getattr(task, "data_bytes", 0)
    return [
        Term("parameters", PARAMETER_COPIES * FLOAT * (depth * width * (width + 1) + task.inputs * width),
             "model.depth × model.width²", "model.width"),
        Term("activations", KEPT_MLP * FLOAT * depth * width * batch,
             "model.depth × model.width × train.batch_size", "train.batch_size"),
        Term("evaluation", 2 * FLOAT * width * test, "model.width × task.test_size", "task.test_size"),
        Term("data", data, "train.batch_size", "train.batch_size", data=True),
    ]


def rnn_terms(s: JobSettings) -> list[Term]:
    batch, task, model = s.root.train.batch_size, s.task.settings, s.model.settings
    hidden, steps = model.hidden, task.length
    per_step = getattr(task, "bytes_per_step", STEP_BYTES)
    return [
        Term("parameters", PARAMETER_COPIES * FLOAT * hidden * (hidden + task.inputs), "model.hidden²", "model.hidden"),
        Term("activations", KEPT_RNN * FLOAT * steps * hidden * batch,
             "task.lag × model.hidden × train.batch_size", "train.batch_size"),
        # the test set runs in one no-grad pass that still returns every state, beside its drive
        Term("evaluation", 2 * FLOAT * steps * hidden * task.test_size,
             "task.lag × model.hidden × task.test_size", "task.test_size"),
        Term("test set", per_step * steps * task.test_size, "task.lag × task.test_size", "task.test_size", data=True),
        Term("data", per_step * steps * batch + getattr(task, "data_bytes", 0),
             "task.lag × train.batch_size", "train.batch_size", data=True),
    ]


def flossing_terms(s: JobSettings) -> list[Term]:
    """Autograd through k tangent vectors and a QR per step."""
    method, steps, hidden = s.method.settings, s.task.settings.length, s.model.settings.hidden
    return [Term("flossing", 3 * FLOAT * steps * hidden * (method.k + 1) * method.trajectories,
                 "task.lag × model.hidden × method.k × method.trajectories", "method.trajectories")]


def _lyapunov(s: JobSettings) -> list[Term]:
    study, hidden = s.root.lyapunov, s.model.settings.hidden
    measured = study.transient + study.measure_steps
    return [
        # weights, mask, their product, and the spectral radius's float64 copy and eigen workspace
        Term("parameters", 7 * FLOAT * hidden * (hidden + study.input_size), "model.hidden²", "model.hidden"),
        Term("trajectory", 3 * FLOAT * study.chunk * study.trajectories * hidden,
             "lyapunov.chunk × lyapunov.trajectories × model.hidden", "lyapunov.chunk"),
        Term("measurement", FLOAT * measured * study.trajectories * (2 * study.input_size + study.k
                                                                    + (hidden if study.input_size else 0)),
             "lyapunov.measure_steps × lyapunov.trajectories × model.hidden", "lyapunov.measure_steps"),
    ]


# -- what the machine can give --------------------------------------------------------------------

def available() -> list[tuple[float, str, bool]]:
    """What limits the host memory of a job: (bytes, why, shared by the jobs that run at
    once). MemAvailable and the cgroup's limit are shared; the address-space limit
    (ulimit -v) binds each process alone."""
    limits = [(_meminfo_available(), "available", True), (_cgroup_available(), "available to this cgroup", True)]
    address_space = resource.getrlimit(resource.RLIMIT_AS)[0]
    if address_space != resource.RLIM_INFINITY:
        limits.append((float(address_space), "allowed by ulimit -v", False))
    return [limit for limit in limits if limit[0] is not None]


def _meminfo_available() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return None


def _cgroup_available() -> float | None:
    """limit − (usage − inactive page cache) of this process's memory cgroup, v2 or v1."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folder, names = Path("/sys/fs/cgroup") / path.lstrip("/"), ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        try:
            limit = (folder / names[0]).read_text().strip()
            if limit == "max" or int(limit) >= 2 ** 60:  # no limit
                continue
            usage = int((folder / names[1]).read_text())
            stat = dict(row.split() for row in (folder / "memory.stat").read_text().splitlines())
            return float(int(limit) - usage + int(stat.get(names[2], 0)))
        except (OSError, ValueError):
            continue
    return None


def gpu_free(device: str) -> float | None:
    """Free memory of the GPU the job will use, or None if it runs on the CPU. torch is
    imported only where a GPU driver is present, so the CPU-only check stays instant."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1")  # no GPU visible
    if device == "cpu" or hidden or not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/kfd")):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return float(torch.cuda.mem_get_info()[0])


# -- the check ------------------------------------------------------------------------------------

def gb(value: float) -> str:
    value /= 1e9
    return f"{value:.3g} GB" if value < 1000 else f"{value:,.0f} GB"


def batched(members: list[JobSettings]) -> list[Term]:
    """The terms of an ensemble's process (salrun.engines.StackedEngine): each term of its members'
    single runs, summed over the members (one Python and torch under them: BASE_BYTES once).
    Measured: the stacked model's peak RSS grows linearly with the members."""
    summed: dict[str, Term] = {}
    for terms in map(estimate, members):
        for t in terms:
            summed[t.name] = replace(t, bytes=t.bytes + summed[t.name].bytes) if t.name in summed else t
    return sorted(summed.values(), key=lambda t: -t.bytes)


def check(jobs: list, workers: int = 1, limit: float | None = None, where: str = "") -> None:
    """Raise ConfigError (exit 2) if the `workers` largest of `jobs`, run at once, need more
    than SHARE of the memory available (or one job more than `limit`, a cluster job's own
    memory); one line names the estimate, its largest term and the key that controls it.
    A job is a JobSettings, or a list of them: the members of one batched model."""
    running = sorted((batched(job) if isinstance(job, list) else estimate(job) for job in jobs),
                     key=total, reverse=True)[:max(1, workers)]
    first = jobs[0][0] if isinstance(jobs[0], list) else jobs[0]
    gpu = None if limit is not None else gpu_free(first.root.device)
    if gpu is not None:  # the model on the GPU; the runtime and the task's data on the host as well
        device = [sum(t.bytes for t in terms) + CUDA_CONTEXT_BYTES for terms in running]
        host = [BASE_BYTES + sum(t.bytes for t in terms if t.data) for terms in running]
        budgets = [(gpu, "free on the GPU", True, device)]
    else:
        host = [total(terms) for terms in running]
        budgets = [(limit, where, False, host)] if limit is not None else []
    if limit is None:
        budgets += [(have, why, shared, host) for have, why, shared in available()]
    refusals = []  # (how far it fits, the line): the line names the tightest limit
    for have, why, shared, needs in budgets:
        need = sum(needs) if shared else needs[0]
        if need > SHARE * have:
            refusals.append((have / need, _refusal(need, have, why, running[0], len(running) if shared else 1)))
    if refusals:
        raise ConfigError(min(refusals)[1])


def _refusal(need: float, have: float, why: str, terms: list[Term], workers: int) -> str:
    at_once = f" for {workers} jobs at once" if workers > 1 else ""
    term = terms[0]
    return (f"needs about {gb(need)}{at_once} ({term.name}: {term.product}); {gb(have)} {why}; "
            f"lower {term.lower}, or pass --no-memory-check to run it anyway")
