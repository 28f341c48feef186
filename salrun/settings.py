"""The schema: every setting's type, default and range, and the registry of what a
config can choose (model, task, method, init, logger).

This module imports neither torch nor Hydra: the CLI validates a config
(and fails fast with one line) before anything heavy is loaded. Each
dataclass checks its own ranges; `build` turns a plain mapping into one,
checking the types on the way. Hydra composes from these defaults
(`salrun.launch` registers them), so conf/ holds only the presets.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Mapping


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(name: str, value: float) -> None:
    _require(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    _require(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value}")


# -- the registry: one per extension point --------------------------------------------------------

KINDS = ("model", "task", "method", "init", "schedule", "sal_schedule", "logger")


@dataclass(frozen=True)
class Entry:
    """One registered choice. `target` is "module:attribute" (imported only when a job runs,
    so that validating a config needs no torch) or the object itself."""

    settings: type
    target: str | Callable
    models: tuple[str, ...] = ("mlp", "rnn")  # the models it applies to
    why: str = ""                             # why it is limited to those models
    needs_data: bool = False                  # needs a task's data, so `train` only
    # a method that runs in a batched ensemble (`batch_key`): it acts before training only, or its
    # per-step work has a batched form (SAL: salrun.ensemble.BatchedSAL)
    batches: bool = False
    memory: str = ""                          # "module:function" of its memory terms (salrun.memory)
    through_time: bool = False                # a model whose per-layer metrics are per time step
    # optional packages it imports, and the extra that installs them (`pip install 'salrun[EXTRA]'`)
    requires: tuple[str, ...] = ()
    extra: str = ""

    def load(self) -> Any:
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


REGISTRY: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, settings: type, target: str | Callable, **limits: Any) -> None:
    """Make `name` a choice of config group `kind`: `kind=name` on the command line, with the
    fields of dataclass `settings` (and their defaults) as its keys. For a model, `target` is
    the nn.Module class; a task, a function settings → Task; a method, a `salrun.methods.Method`
    class; an init, a function (model, settings, sample) → None."""
    REGISTRY[kind][name] = Entry(settings, target, **limits)


def registered(kind: str, name: str, target: str, **limits: Any) -> Callable[[type], type]:
    """Class decorator: `register` the settings dataclass it decorates."""
    def decorate(cls: type) -> type:
        register(kind, name, cls, target, **limits)
        return cls
    return decorate


def _first_sentence(text: str) -> str:
    """One line out of a docstring or a comment block: its first paragraph's first sentence."""
    paragraph = " ".join(line.strip() for line in text.strip().split("\n\n")[0].splitlines())
    return re.split(r"(?<! al)\. ", paragraph)[0].rstrip(".") + "." if paragraph else ""


def describe(kind: str) -> dict[str, str]:
    """Each registered choice of `kind` with its settings dataclass's docstring's first
    sentence, so that a new entry describes itself in `salrun list` and `--help`."""
    return {name: _first_sentence(e.settings.__doc__ or "") for name, e in REGISTRY[kind].items()}


def config_dir() -> str:
    """conf/ ships inside the wheel as salrun/conf; a source checkout has it beside salrun/."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError("salrun's conf/ folder is missing from the installation")


def presets() -> dict[str, str]:
    """Each experiment preset (conf/experiment/NAME.yaml) with its first comment line."""
    found = {}
    for path in sorted(Path(config_dir(), "experiment").glob("*.yaml")):
        lines = [line for line in path.read_text().splitlines() if not line.startswith("# @package")]
        comment = []
        for line in lines[:next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]:
            comment.append(line.lstrip("#").strip())
        found[path.stem] = _first_sentence("\n".join(comment))
    return found


def did_you_mean(word: str, candidates: Any) -> str:
    """" (did you mean X?)" with the candidate nearest to `word`, or "" if none is near. A dotted
    word that matches nothing whole is matched by its last part (steps=20: train.steps)."""
    candidates = sorted(set(candidates))
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.75)
    if not near and "." not in word.lstrip("-"):
        leaves = difflib.get_close_matches(word, {c.rsplit(".", 1)[-1] for c in candidates}, n=1, cutoff=0.75)
        near = [c for c in candidates if leaves and c.rsplit(".", 1)[-1] == leaves[0]]
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def dotted_keys(node: Mapping[str, Any], where: str = "") -> list[str]:
    """The leaf keys of a nested mapping, dotted: {"train": {"steps": 1}} gives ["train.steps"]."""
    keys = []
    for name, value in node.items():
        key = _key(where, str(name))
        keys += dotted_keys(value, key) if isinstance(value, Mapping) else [key]
    return keys


def schema_keys() -> list[str]:
    """Every key a config can set, dotted (train.steps, method.lr), and the groups: what
    suggestions and shell completion draw from."""
    keys = ["experiment", *KINDS, *dotted_keys(defaults(RootSettings))]
    for kind, entries in REGISTRY.items():
        keys += [key for e in entries.values() for key in dotted_keys(defaults(e.settings), kind)]
    return list(dict.fromkeys(keys))


def entry(kind: str, name: Any) -> Entry:
    if not isinstance(name, str) or name not in REGISTRY[kind]:
        hint = did_you_mean(name, REGISTRY[kind]) if isinstance(name, str) else ""
        raise ConfigError(f"unknown {kind} {name!r}{hint} (choose from: {', '.join(REGISTRY[kind])})")
    return REGISTRY[kind][name]


# -- models ----------------------------------------------------------------------------------------

@dataclass
class InitSettings:
    """Random initial weights: each row w_j gets an expected norm of `scale`.

    `scale` is therefore the initial sensitivity of a neuron at U = 0.
    """

    distribution: Literal["uniform", "normal"] = "uniform"
    scale: float = 0.3       # small (the paper says "small random weights"; 0.3 is ours)
    bias_scale: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("init.scale", self.scale)
        _non_negative("init.bias_scale", self.bias_scale)


@registered("model", "mlp", "salrun.models:MLP", memory="salrun.memory:mlp_terms")
@dataclass
class MLPSettings:
    """Deep tanh MLP: `depth` hidden layers of `width` neurons, linear readout."""

    per_member: ClassVar[tuple[str, ...]] = ("init",)  # an ensemble's members may differ in these

    depth: int = 30
    width: int = 32
    init: InitSettings = dataclasses.field(default_factory=InitSettings)

    def __post_init__(self) -> None:
        _require(self.depth >= 1, f"model.depth must be >= 1, got {self.depth}")
        _require(self.width >= 1, f"model.width must be >= 1, got {self.width}")


@registered("model", "rnn", "salrun.models:ElmanRNN", memory="salrun.memory:rnn_terms", through_time=True)
@dataclass
class RNNSettings:
    """Tanh Elman RNN: h_t = tanh(W_ih x_t + W_hh h_{t-1} + θ), readout from the last state."""

    per_member: ClassVar[tuple[str, ...]] = ("init", "input_scale")

    hidden: int = 32
    density: float = 1.0      # fraction of nonzero recurrent weights (fixed mask)
    input_scale: float = 1.0  # expected row norm of W_ih
    init: InitSettings = dataclasses.field(default_factory=InitSettings)

    def __post_init__(self) -> None:
        _require(self.hidden >= 1, f"model.hidden must be >= 1, got {self.hidden}")
        _require(0 < self.density <= 1, f"model.density must be in (0, 1], got {self.density}")
        _non_negative("model.input_scale", self.input_scale)


# -- tasks: each declares the keys it reads (salrun/tasks.py has the data and the criteria) -------

COPY_SYMBOLS = 10  # copy memory: symbols to remember (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016)
FEED_FORWARD = dict(models=("mlp",))
SEQUENCE = dict(models=("rnn",))


def _sizes(task: Any) -> None:
    for name in ("train_size", "test_size"):
        value = getattr(task, name, 1)
        _require(value >= 1, f"task.{name} must be >= 1, got {value}")


@registered("task", "spirals", "salrun.tasks:make_spirals", **FEED_FORWARD)
@dataclass
class SpiralsSettings:
    """Two interleaved spirals in 2-D: which arm is a point on (accuracy ≥ 0.9)."""

    train_size: int = 2000
    test_size: int = 1000
    noise: float = 0.0        # std of Gaussian noise on the points
    inputs: ClassVar[int] = 2  # the task's input size (the memory preflight reads it before any data exist)

    def __post_init__(self) -> None:
        _sizes(self)
        _non_negative("task.noise", self.noise)


@registered("task", "clusters", "salrun.tasks:make_clusters", **FEED_FORWARD)
@dataclass
class ClustersSettings:
    """Two Gaussian clusters in 2-D, linearly separable: tests propagation through depth."""

    train_size: int = 2000
    test_size: int = 1000
    inputs: ClassVar[int] = 2

    def __post_init__(self) -> None:
        _sizes(self)


DIGITS_IMAGES = 1797      # scikit-learn's load_digits
DIGITS_LEAST_TRAIN = 100  # images a digits test set must leave to train on


@registered("task", "digits", "salrun.tasks:make_digits", **FEED_FORWARD)
@dataclass
class DigitsSettings:
    """scikit-learn's 8×8 digits, ten classes (accuracy ≥ 0.9)."""

    # Held out, the same images for every run; the other 797 train. At least 1,000 test images
    # resolve an accuracy to ±0.03 (95%); fewer training images is the price (docs/SCIENCE.md §5).
    test_size: int = 1000
    inputs: ClassVar[int] = 64
    data_bytes: ClassVar[float] = 2e8  # loading the images imports scikit-learn (measured peak RSS)

    def __post_init__(self) -> None:
        _sizes(self)
        most = DIGITS_IMAGES - DIGITS_LEAST_TRAIN
        _require(self.test_size <= most, f"task.test_size must be <= {most} (the digits are {DIGITS_IMAGES} "
                                         f"images and at least {DIGITS_LEAST_TRAIN} train), got {self.test_size}")


@registered("task", "seq_digits", "salrun.tasks:SequentialDigits", **SEQUENCE)
@dataclass
class SeqDigitsSettings(DigitsSettings):
    """The digits read by an RNN pixel by pixel (64 steps) or row by row (8), then `lag` blank steps."""

    read: Literal["pixel", "row"] = "pixel"
    lag: int = 0              # blank (zero) steps between the last pixel and the readout

    @property
    def inputs(self) -> int:  # type: ignore[override]
        return 1 if self.read == "pixel" else 8

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.lag >= 0, f"task.lag must be >= 0, got {self.lag}")

    @property
    def length(self) -> int:
        return (64 if self.read == "pixel" else 8) + self.lag


@dataclass
class SequenceSettings:
    """Sequence tasks draw fresh training sequences every batch; the test set is fixed."""

    lag: int = 50
    test_size: int = 1000
    least_lag: ClassVar[int] = 1
    inputs: ClassVar[int] = 1
    bytes_per_step: ClassVar[int] = 8   # per time step and sequence while a batch is drawn (input and noise)
    why_least: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _require(self.lag >= self.least_lag,
                 f"task.lag must be >= {self.least_lag}{self.why_least}, got {self.lag}")
        _sizes(self)

    @property
    def length(self) -> int:
        """Time steps of a sequence."""
        return self.lag + 1


@registered("task", "adding", "salrun.tasks:AddingTask", **SEQUENCE)
@dataclass
class AddingSettings(SequenceSettings):
    """The adding problem: the sum of the two marked inputs of a lag + 1 step sequence."""

    least_lag: ClassVar[int] = 2
    why_least: ClassVar[str] = " for task adding (a marker in each half of lag + 1 steps)"
    inputs: ClassVar[int] = 2
    bytes_per_step: ClassVar[int] = 16


@registered("task", "copy_memory", "salrun.tasks:CopyMemoryTask", **SEQUENCE)
@dataclass
class CopyMemorySettings(SequenceSettings):
    """Copy memory: recall the 10 symbols seen at t = 0..9 after a delimiter at t = lag - 1."""

    least_lag: ClassVar[int] = COPY_SYMBOLS + 1
    why_least: ClassVar[str] = " for task copy_memory (the symbols and the delimiter come first)"
    inputs: ClassVar[int] = COPY_SYMBOLS
    bytes_per_step: ClassVar[int] = 128  # int64 codes and an int64 one-hot before the float one-hot

    @property
    def length(self) -> int:
        return self.lag + COPY_SYMBOLS


@registered("task", "lag_sign", "salrun.tasks:LagSign", **SEQUENCE)
@registered("task", "lag_analog", "salrun.tasks:LagAnalog", **SEQUENCE)
@dataclass
class LagSettings(SequenceSettings):
    """Remember the first input for `lag` steps: its sign (lag_sign) or its value (lag_analog)."""

    # std of the N(0, noise²) distractor input after the informative input(s). Without it the test
    # set holds 2 sequences (lag_sign; delayed_xor 4) and accuracy jumps between 0, 0.5 and 1.
    # 0.1 (measured, README "Tasks"): `none` stays at chance; SAL still learns lag 50 and 100.
    noise: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _non_negative("task.noise", self.noise)


@registered("task", "delayed_xor", "salrun.tasks:DelayedXORTask", **SEQUENCE)
@dataclass
class DelayedXORSettings(LagSettings):
    """The XOR of the ±1 bits at t = 0 and t = 1, read at t = lag."""

    least_lag: ClassVar[int] = 2
    why_least: ClassVar[str] = " for task delayed_xor (its second bit comes at t = 1)"


@registered("task", "xor_stream", "salrun.tasks:XORStreamTask", **SEQUENCE)
@dataclass
class XORStreamSettings(SequenceSettings):
    """Gradient flossing's delayed XOR (Engelken 2023): a ±1 bit every step; at every step t ≥ 2·lag
    the XOR of the bits of t − lag and t − 2·lag."""

    lag: int = 10             # the delay d
    length: int = 300         # time steps of a sequence (Engelken's T)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.length > 2 * self.lag, f"task.length must be > 2 × task.lag ({2 * self.lag}) for task "
                                             f"xor_stream (an XOR needs the bits of t − lag and t − 2·lag), "
                                             f"got {self.length}")


# -- methods and initialisations ---------------------------------------------------------------
MAX_SIGMA_B = 5.0  # σ_b beyond any practical use (σ_b = 5 puts σ_w at 3.33); keeps the χ₁ = 1 solver in range
FEED_FORWARD_ONLY = dict(models=("mlp",), why=" (feed-forward only, Mishkin & Matas 2016)", needs_data=True)


@registered("method", "none", "salrun.methods:Method", batches=True)
@registered("init", "random", "salrun.inits:random_")
@dataclass
class NoneSettings:
    """Nothing to set: plain back-propagation (method), the model's own small random weights (init)."""


@registered("method", "sal", "salrun.methods:SALMethod", batches=True)
@dataclass
class SALSettings:
    """Sensitivity Adjustment Learning, the rule of docs/SCIENCE.md §2 (the defaults are ours, not the paper's)."""

    lr: float = 0.01          # η_SAL
    target: float = 1.0       # sensitivity target
    beta: float = 0.5         # keep-rate of the moving average s̄ (0.9 overshoots more; see README)
    # two_sided also descends above target; proportional (ours, docs/DEPTH.md) steps by
    # η·clamp(ln(target/s̄)/band, -1, 1): full rate far from target, ∝ the error within `band`;
    # dead_band (ours) steps ±η only where |ln(target/s̄)| > band and rests inside it
    gate: Literal["one_sided", "two_sided", "proportional", "dead_band"] = "one_sided"
    band: float = 0.05        # proportional, dead_band: the distance in ln s that sets the gate
    objective: Literal["log", "linear"] = "log"            # gradient of ln s, or of s
    # s̄ from the batch's arithmetic mean of s_j, or its geometric mean exp(mean ln s_j)
    # (the mean-log form of docs/SCIENCE.md §1; ours for the rule, docs/DEPTH.md)
    average: Literal["arithmetic", "geometric"] = "arithmetic"
    # feed-forward stacks (ours, docs/DEPTH.md): layer l's target is target·exp(gap_l), gap_l a
    # moving average of ln RMS(s_l) minus the layer's measured log gain along the signal's tangent
    layer_target: bool = False
    include_output: bool = False                           # also adapt the (linear) output layer
    rnn_inputs: Literal["all", "recurrent"] = "all"        # which inputs count in ‖w_j‖
    # a cheaper estimator (ours, issue 29): update at one step in m = update_every, at m times the
    # rate, from that step's batch; the passes in between are not read (s̄ then averages every m-th step)
    update_every: int = 1

    # What an ensemble batches (salrun.rule takes these per member; BatchedSAL computes these values
    # of the others). A field in neither, or another value, makes the run train alone.
    per_member: ClassVar[tuple[str, ...]] = ("lr", "target", "beta", "band", "gate")
    batch_values: ClassVar[dict[str, tuple]] = {"objective": ("log",), "average": ("arithmetic",),
                                                "layer_target": (False,), "include_output": (False,),
                                                "rnn_inputs": ("all", "recurrent"), "update_every": (1,)}

    def __post_init__(self) -> None:
        _non_negative("method.lr", self.lr)
        _positive("method.target", self.target)
        _require(0 <= self.beta < 1, f"method.beta must be in [0, 1), got {self.beta}")
        _positive("method.band", self.band)
        _require(self.update_every >= 1, f"method.update_every must be >= 1, got {self.update_every}")


@registered("method", "spectral", "salrun.methods:SpectralMethod", batches=True)
@dataclass
class SpectralSettings:
    """Before learning: W_hh to spectral radius rho; each hidden feed-forward matrix to RMS gain rho."""

    rho: float = 1.0
    per_member: ClassVar[tuple[str, ...]] = ("rho",)  # it acts before the members are stacked

    def __post_init__(self) -> None:
        _positive("method.rho", self.rho)


@registered("method", "orthogonal", "salrun.methods:OrthogonalMethod", batches=True)
@registered("init", "orthogonal", "salrun.inits:orthogonal_")
@dataclass
class OrthogonalSettings:
    """Orthogonal weights times `gain` (Saxe et al. 2014): every singular value is `gain`."""

    gain: float = 1.0
    per_member: ClassVar[tuple[str, ...]] = ("gain",)

    def __post_init__(self) -> None:
        _positive("gain", self.gain)


@registered("method", "critical", "salrun.methods:CriticalMethod", batches=True)
@registered("init", "critical", "salrun.inits:critical_")
@dataclass
class CriticalSettings:
    """Mean-field edge of chaos for tanh (Schoenholz et al. 2017): W ~ N(0, σ_w²/n_in),
    θ ~ N(0, σ_b²), σ_w solved on the χ₁ = 1 line for the given σ_b."""

    sigma_b: float = 0.05     # ours: a small bias; 0 gives σ_w = 1
    per_member: ClassVar[tuple[str, ...]] = ("sigma_b",)

    def __post_init__(self) -> None:
        _require(math.isfinite(self.sigma_b) and 0 <= self.sigma_b <= MAX_SIGMA_B,
                 f"sigma_b must be in [0, {MAX_SIGMA_B}], got {self.sigma_b}")


@registered("method", "lsuv", "salrun.methods:LSUVMethod", batches=True, **FEED_FORWARD_ONLY)
@registered("init", "lsuv", "salrun.inits:lsuv_", **FEED_FORWARD_ONLY)
@dataclass
class LSUVSettings:
    """Layer-sequential unit variance (Mishkin & Matas 2016): orthonormal weights, then
    each layer in turn rescaled until its output variance on a data batch is 1 ± tol."""

    tol: float = 0.1       # the paper's Tol_var
    max_iter: int = 10     # the paper's T_max
    samples: int = 256     # data rows the variance is measured on
    per_member: ClassVar[tuple[str, ...]] = ("tol", "max_iter", "samples")

    def __post_init__(self) -> None:
        _require(math.isfinite(self.tol) and 0 < self.tol < 1, f"tol must be in (0, 1), got {self.tol}")
        _require(self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}")
        _require(self.samples >= 2, f"samples must be >= 2, got {self.samples}")


@registered("method", "flossing", "salrun.methods:FlossingMethod", models=("rnn",), needs_data=True,
            memory="salrun.memory:flossing_terms")
@dataclass
class FlossingSettings:
    """Gradient flossing (Engelken 2023): Adam steps on Σ_{i≤k} λ_i², the top-k Lyapunov
    exponents estimated by QR along task trajectories and differentiated through the QR.
    The defaults are ours."""

    k: int = 4                      # exponents driven toward 0
    mode: Literal["before", "during", "both"] = "both"
    pre_steps: int = 100            # flossing steps before training (before, both)
    every: int = 100                # training steps between two bursts (during, both)
    burst: int = 5                  # flossing steps per burst
    floss_lr: float = 1e-3          # Adam rate of the flossing steps
    trajectories: int = 8           # task sequences per flossing step

    def __post_init__(self) -> None:
        _require(self.k >= 1, f"method.k must be >= 1, got {self.k}")
        _require(self.pre_steps >= 0, f"method.pre_steps must be >= 0, got {self.pre_steps}")
        if self.mode in ("before", "both"):
            _require(self.pre_steps >= 1, f"method.pre_steps must be >= 1 with mode={self.mode}")
        _require(self.every >= 1, f"method.every must be >= 1, got {self.every}")
        _require(self.burst >= 1, f"method.burst must be >= 1, got {self.burst}")
        _positive("method.floss_lr", self.floss_lr)
        _require(self.trajectories >= 1, f"method.trajectories must be >= 1, got {self.trajectories}")

    def check_model(self, model: Any) -> None:
        _require(self.k <= model.hidden, f"method.k must be <= model.hidden ({model.hidden}), got {self.k}")


# -- rate schedules: `schedule` for the optimizer's learning rate, `sal_schedule` for SAL's own ----

def _schedules(name: str, target: str) -> Callable[[type], type]:
    """Register a schedule (salrun/schedules.py) in both groups."""
    def decorate(cls: type) -> type:
        for kind in ("schedule", "sal_schedule"):
            register(kind, name, cls, target)
        return cls
    return decorate


@_schedules("constant", "salrun.schedules:constant")
@dataclass
class ConstantScheduleSettings:
    """The rate as set, at every step."""


@_schedules("cosine", "salrun.schedules:cosine")
@dataclass
class CosineScheduleSettings:
    """Cosine decay over the run, from the rate to min_factor × the rate (CosineAnnealingLR)."""

    min_factor: float = 0.0

    def __post_init__(self) -> None:
        _require(math.isfinite(self.min_factor) and 0 <= self.min_factor <= 1,
                 f"min_factor must be in [0, 1], got {self.min_factor}")


@_schedules("step", "salrun.schedules:step")
@dataclass
class StepScheduleSettings:
    """The rate times gamma every `every` steps (StepLR)."""

    every: int = 1000
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _require(self.every >= 1, f"every must be >= 1, got {self.every}")
        _require(math.isfinite(self.gamma) and 0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")


@_schedules("warmup_cosine", "salrun.schedules:warmup_cosine")
@dataclass
class WarmupCosineScheduleSettings(CosineScheduleSettings):
    """A linear warm-up from start_factor × the rate over `warmup` steps, then cosine decay (LinearLR, then
    CosineAnnealingLR)."""

    warmup: int = 100
    start_factor: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.warmup >= 1, f"warmup must be >= 1, got {self.warmup}")
        _require(math.isfinite(self.start_factor) and 0 < self.start_factor <= 1,
                 f"start_factor must be in (0, 1], got {self.start_factor}")


# -- loggers: where a run's metrics go besides metrics.csv (salrun/loggers.py) -----------------------

@registered("logger", "csv", "salrun.loggers:Logger")
@dataclass
class CSVLoggerSettings:
    """metrics.csv alone, the run folder's own record (the default)."""


@registered("logger", "tensorboard", "salrun.loggers:TensorBoardLogger", requires=("tensorboard",),
            extra="tensorboard")
@dataclass
class TensorBoardLoggerSettings:
    """TensorBoard event files in RUN/tensorboard: every scalar, and per-layer histograms over training."""

    histograms: bool = True   # per-layer sensitivity_rms and grad_norm as a histogram over the layers


@registered("logger", "mlflow", "salrun.loggers:MLflowLogger", requires=("mlflow",), extra="mlflow")
@dataclass
class MLflowLoggerSettings:
    """MLflow: params, metrics and the run folder as artifacts (MLFLOW_TRACKING_URI, else outputs/mlflow.db)."""

    experiment: str = "salrun"  # the MLflow experiment the runs go to
    artifacts: bool = True      # upload the run folder (config, metrics, summary, model) at the end


# -- the root config's own keys -----------------------------------------------------------------

@dataclass
class OptimSettings:
    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0   # sgd only
    clip: float = 0.0       # max global gradient norm; 0 disables clipping
    per_member: ClassVar[tuple[str, ...]] = ("lr", "momentum")

    def __post_init__(self) -> None:
        _non_negative("optim.lr", self.lr)
        _require(0 <= self.momentum < 1, f"optim.momentum must be in [0, 1), got {self.momentum}")
        _non_negative("optim.clip", self.clip)


@dataclass
class TrainSettings:
    steps: int = 1000
    batch_size: int = 32
    log_every: int = 50
    checkpoint_every: int = 100  # steps between checkpoints; 0: only on interrupt and at the end
    # Success is judged on the mean test metric of the last success_window evaluations (the
    # last log_every × (window − 1) steps): one evaluation alone can land on a lucky or an
    # unlucky step (a lag-300 run's accuracy went 1 → 0 → 1 → 0 across logs). 1: the last alone.
    success_window: int = 5
    # Probe metrics at every evaluation (salrun.probes: per layer, the tangent log gain and the
    # percentiles of the neurons' sensitivities); off by default, they cost time. A run with
    # probes trains alone (not batched with others).
    probes: bool = False

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        _require(self.success_window >= 1, f"train.success_window must be >= 1, got {self.success_window}")
        _require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        _require(self.log_every >= 1, f"train.log_every must be >= 1, got {self.log_every}")
        _require(self.checkpoint_every >= 0, f"train.checkpoint_every must be >= 0, got {self.checkpoint_every}")


@dataclass
class LyapunovSettings:
    """The chaos study: SAL alone adapts an RNN, the MLE is measured on the way, each time from
    `trajectories` fresh random states: `transient` steps, then `measure_steps` averaged."""

    sal_steps: int = 400          # SAL updates
    chunk: int = 10               # time steps the net runs between two SAL updates
    trajectories: int = 8         # independent trajectories (batch)
    log_every: int = 10           # SAL updates between two measurements
    transient: int = 100          # steps discarded before averaging log-growth
    measure_steps: int = 400      # steps averaged for the MLE and log-sensitivity
    input_size: int = 0           # 0: autonomous net; > 0: driven by N(0, 1) input
    k: int = 1                    # top-k Lyapunov exponents by QR (le_1 … le_k); 1: the MLE alone
    noise: float = 1e-3           # std of the N(0, noise²) kick to the adapting states before every chunk
    fresh_chunks: bool = False    # restart the adapting states uniform in ±1 before every chunk (not our choice)

    def __post_init__(self) -> None:
        for name in ("sal_steps", "chunk", "trajectories", "log_every", "measure_steps", "k"):
            value = getattr(self, name)
            _require(value >= 1, f"lyapunov.{name} must be >= 1, got {value}")
        _require(self.transient >= 0, f"lyapunov.transient must be >= 0, got {self.transient}")
        _require(self.input_size >= 0, f"lyapunov.input_size must be >= 0, got {self.input_size}")
        _non_negative("lyapunov.noise", self.noise)

    def check_hidden(self, hidden: int) -> None:
        """A hidden state of n neurons has n Lyapunov exponents."""
        _require(self.k <= hidden, f"lyapunov.k must be <= model.hidden ({hidden}), got {self.k}")


@dataclass
class RootSettings:
    """The keys at the root of the config, beside the groups model, task, method, init."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0          # torch threads; 0: one (runtime.DEFAULT_THREADS; a joblib sweep: a share of the cores)
    optim: OptimSettings = dataclasses.field(default_factory=OptimSettings)
    train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
    lyapunov: LyapunovSettings = dataclasses.field(default_factory=LyapunovSettings)

    def __post_init__(self) -> None:
        # torch seeds are 64-bit, and a method's data stream seeds from seed + a small offset
        _require(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        _require(0 <= self.threads < 2**31, f"threads must be in [0, 2**31), got {self.threads}")


@dataclass
class Choice:
    """A group's choice: its registered name, its settings and its registry entry."""

    name: str
    settings: Any
    entry: Entry


@dataclass
class JobSettings:
    """A job's whole config, typed and checked: what the job layer reads, never the raw dict."""

    command: str
    config: dict              # the resolved config it was built from (a checkpoint records it)
    root: RootSettings
    model: Choice
    task: Choice
    method: Choice
    init: Choice
    schedule: Choice      # the optimizer's learning rate over the run
    sal_schedule: Choice  # SAL's rate over the run
    logger: Choice        # where metrics go besides metrics.csv


def job_settings(command: str, cfg: Mapping[str, Any]) -> JobSettings:
    """Build and check the settings of `command` ("train" or "lyapunov") from a resolved config
    (a plain dict, each group with its `name`); ConfigError names the first problem."""
    if command == "lyapunov":  # before the model's keys are checked: a preset's model.hidden is not the MLP's
        model = cfg.get("model")
        name = model.get("name") if isinstance(model, Mapping) else model
        _require(name == "rnn", f"lyapunov needs model=rnn, got model={name}")
    root = build(RootSettings, {k: v for k, v in cfg.items() if k not in KINDS and k != "experiment"}, "")
    chosen = {kind: choose(kind, cfg.get(kind)) for kind in KINDS}
    settings = JobSettings(command, dict(cfg), root, **chosen)
    _check_combination(settings)
    return settings


OLD_DEFAULTS = {"init": "random", "schedule": "constant", "sal_schedule": "constant", "logger": "csv"}


def choose(kind: str, data: Any) -> Choice:
    """Group `kind`'s choice from its config node (`name` and the settings' keys)."""
    if data is None and kind in OLD_DEFAULTS:  # a run folder written before the group existed
        data = {"name": OLD_DEFAULTS[kind]}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{kind} must be a group of settings, got {data!r}")
    name = data.get("name")
    chosen = entry(kind, name)
    # A preset may tune several methods at once (method.lr for sal, method.rho for spectral) so
    # that one sweep spans them: a method drops the keys that only the other methods have.
    others = frozenset().union(*(_field_names(e.settings) for n, e in REGISTRY["method"].items()
                                 if n != name)) if kind == "method" else frozenset()
    try:
        return Choice(name, build(chosen.settings, data, kind, ignore=others), chosen)
    except ConfigError as err:  # settings shared by `init` and `method` say which (init.gain, method.gain)
        message = str(err)
        if message.split(" ")[0] in _field_names(chosen.settings):
            message = f"{kind}.{message}"
        raise ConfigError(message) from None


def _check_combination(s: JobSettings) -> None:
    """What single settings cannot see: a choice that does not fit the model, the command or the other choices."""
    model = s.model.name
    missing = [m for m in s.logger.entry.requires if importlib.util.find_spec(m) is None]
    _require(not missing, f"logger={s.logger.name} needs {', '.join(missing)}: pip install "
                          f"'salrun[{s.logger.entry.extra}]'")
    if s.command == "lyapunov":
        s.root.lyapunov.check_hidden(s.model.settings.hidden)
        for kind in ("schedule", "sal_schedule"):
            _require(getattr(s, kind).name == "constant",
                     f"{kind}={getattr(s, kind).name} sets a rate over training steps: salrun train takes it, not lyapunov")
    if s.method.name in REGISTRY["init"] and s.init.name != "random":
        plain = ", ".join(n for n in REGISTRY["method"] if n not in REGISTRY["init"])
        raise ConfigError(f"method={s.method.name} is itself an initialisation and cannot follow "
                          f"init={s.init.name} (a preset may set it): add init=random to run "
                          f"method={s.method.name}, or keep init={s.init.name} with method {plain}")
    for kind in ("method", "init") if s.command == "lyapunov" else ("task", "method", "init"):
        choice: Choice = getattr(s, kind)
        if s.command == "lyapunov" and choice.entry.needs_data:
            raise ConfigError(f"{kind}={choice.name} needs a task's data and runs with salrun train, not lyapunov")
        if model not in choice.entry.models:
            raise ConfigError(f"{kind}={choice.name} applies to model={'|'.join(choice.entry.models)} only"
                              f"{choice.entry.why}, got model={model}")
        if hasattr(choice.settings, "check_model"):
            choice.settings.check_model(s.model.settings)


def batch_key(s: JobSettings) -> tuple | None:
    """What train runs must share to train as one batched model (salrun.engines.StackedEngine),
    from what the entries declare: None if this run cannot batch (its method does not declare
    `batches`, or a method setting is neither `per_member` nor one of its `batch_values`). The
    seed, the init and every `per_member` setting may differ between members."""
    method = s.method
    if not method.entry.batches or s.root.train.probes:
        return None
    allowed = getattr(method.settings, "batch_values", {})
    for f in dataclasses.fields(method.settings):
        if f.name in getattr(method.settings, "per_member", ()):
            continue
        if getattr(method.settings, f.name) not in allowed.get(f.name, ()):
            return None
    # the options members share: those a batching method has, at their default where a member's method lacks them
    shared = sorted({name for e in REGISTRY["method"].values() if e.batches
                     for name in getattr(e.settings, "batch_values", {})})
    shared_values = tuple((name, getattr(method.settings, name, _default(name))) for name in shared)
    model = {k: v for k, v in s.config["model"].items() if k not in s.model.settings.per_member}
    optim = {k: v for k, v in s.config.get("optim", {}).items() if k not in OptimSettings.per_member}
    return (s.model.name, repr(model), repr(s.config["task"]), repr(s.config["train"]), repr(optim),
            s.root.device, shared_values, s.schedule.name, repr(s.schedule.settings), s.sal_schedule.name,
            repr(s.sal_schedule.settings))


def _default(name: str) -> Any:
    """A batching method's option at its default (the first method that has it)."""
    for e in REGISTRY["method"].values():
        if e.batches and name in _field_names(e.settings):
            return getattr(e.settings(), name)
    raise KeyError(name)


def defaults(cls: type) -> dict:
    """The defaults of settings dataclass `cls` as a plain dict: what Hydra composes from."""
    return dataclasses.asdict(cls())


def build(cls: type, data: Mapping[str, Any] | None, where: str, ignore: frozenset[str] = frozenset()) -> Any:
    """Build dataclass `cls` from `data`, checking names and types.

    `where` prefixes messages ("model") so that errors name the config key.
    Extra keys in `data` that `cls` lacks are errors, except `name`, which
    selects the class and is consumed by the caller, and those in `ignore`.
    """
    data = {k: v for k, v in (data or {}).items() if k not in ignore or k in _field_names(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in data:
            kwargs[field.name] = _coerce(hints[field.name], data.pop(field.name), _key(where, field.name))
    data.pop("name", None)
    if data:
        key = _key(where, sorted(data)[0])
        raise ConfigError(f"unknown key {key}{did_you_mean(key, [_key(where, f) for f in _field_names(cls)])}")
    return cls(**kwargs)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a group of settings, got {value!r}")
        return build(hint, value, key)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value
