"""Typed settings for every model, task, method and job.

This module imports neither torch nor Hydra: the CLI validates a config
(and fails fast with one line) before anything heavy is loaded. Each
dataclass checks its own ranges; `build` turns a plain mapping into one,
checking the types on the way.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(name: str, value: float) -> None:
    _require(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    _require(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value}")


@dataclass
class InitSettings:
    """Random initial weights: each row w_j gets an expected norm of `scale`.

    `scale` is therefore the initial sensitivity of a neuron at U = 0.
    """

    distribution: Literal["uniform", "normal"] = "uniform"
    scale: float = 0.3
    bias_scale: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("init.scale", self.scale)
        _non_negative("init.bias_scale", self.bias_scale)


@dataclass
class MLPSettings:
    depth: int = 30
    width: int = 32
    init: InitSettings = dataclasses.field(default_factory=InitSettings)

    def __post_init__(self) -> None:
        _require(self.depth >= 1, f"model.depth must be >= 1, got {self.depth}")
        _require(self.width >= 1, f"model.width must be >= 1, got {self.width}")


@dataclass
class RNNSettings:
    hidden: int = 32
    density: float = 1.0
    input_scale: float = 1.0
    init: InitSettings = dataclasses.field(default_factory=InitSettings)

    def __post_init__(self) -> None:
        _require(self.hidden >= 1, f"model.hidden must be >= 1, got {self.hidden}")
        _require(0 < self.density <= 1, f"model.density must be in (0, 1], got {self.density}")
        _non_negative("model.input_scale", self.input_scale)


COPY_SYMBOLS = 10  # copy memory: symbols to remember (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016)
SEQUENCE_TASKS = frozenset({"lag_sign", "lag_analog", "adding", "copy_memory", "delayed_xor"})
# The least lag each sequence task can be posed with: adding needs a marker in each half of
# lag + 1 steps, copy memory the symbols and the delimiter before the recall starts,
# delayed XOR its second bit (t = 1) before the output (t = lag).
MIN_LAG = {"adding": 2, "copy_memory": COPY_SYMBOLS + 1, "delayed_xor": 2}


@dataclass
class TaskSettings:
    """One settings type for every task; each task reads the fields it needs."""

    name: str = "spirals"
    lag: int = 50
    train_size: int = 2000
    test_size: int = 1000
    noise: float = 0.0

    def __post_init__(self) -> None:
        _require(self.lag >= 1, f"task.lag must be >= 1, got {self.lag}")
        least = MIN_LAG.get(self.name, 1)
        _require(self.lag >= least, f"task.lag must be >= {least} for task {self.name}, got {self.lag}")
        _require(self.train_size >= 1, f"task.train_size must be >= 1, got {self.train_size}")
        _require(self.test_size >= 1, f"task.test_size must be >= 1, got {self.test_size}")
        _non_negative("task.noise", self.noise)


@dataclass
class SALSettings:
    """The choices of SCIENCE.md §2; the defaults are ours, not the paper's."""

    lr: float = 0.01
    target: float = 1.0
    beta: float = 0.5
    gate: Literal["one_sided", "two_sided"] = "one_sided"
    objective: Literal["log", "linear"] = "log"
    include_output: bool = False
    rnn_inputs: Literal["all", "recurrent"] = "all"

    def __post_init__(self) -> None:
        _non_negative("method.lr", self.lr)
        _positive("method.target", self.target)
        _require(0 <= self.beta < 1, f"method.beta must be in [0, 1), got {self.beta}")


@dataclass
class SpectralSettings:
    rho: float = 1.0

    def __post_init__(self) -> None:
        _positive("method.rho", self.rho)


@dataclass
class NoneSettings:
    pass


@dataclass
class OrthogonalSettings:
    """Orthogonal weights times `gain` (Saxe et al. 2014): every singular value is `gain`."""

    gain: float = 1.0

    def __post_init__(self) -> None:
        _positive("gain", self.gain)


@dataclass
class CriticalSettings:
    """Mean-field edge of chaos for tanh (Schoenholz et al. 2017): W ~ N(0, σ_w²/n_in),
    θ ~ N(0, σ_b²), σ_w solved on the χ₁ = 1 line for the given σ_b."""

    sigma_b: float = 0.05

    def __post_init__(self) -> None:
        _require(math.isfinite(self.sigma_b) and 0 <= self.sigma_b <= MAX_SIGMA_B,
                 f"sigma_b must be in [0, {MAX_SIGMA_B}], got {self.sigma_b}")


MAX_SIGMA_B = 5.0  # σ_b beyond any practical use (σ_b = 5 puts σ_w at 3.33); keeps the χ₁ = 1 solver in range


@dataclass
class LSUVSettings:
    """Layer-sequential unit variance (Mishkin & Matas 2016): orthonormal weights, then
    each layer in turn rescaled until its output variance on a data batch is 1 ± tol."""

    tol: float = 0.1       # the paper's Tol_var
    max_iter: int = 10     # the paper's T_max
    samples: int = 256     # data rows the variance is measured on

    def __post_init__(self) -> None:
        _require(math.isfinite(self.tol) and 0 < self.tol < 1, f"tol must be in (0, 1), got {self.tol}")
        _require(self.max_iter >= 1, f"max_iter must be >= 1, got {self.max_iter}")
        _require(self.samples >= 2, f"samples must be >= 2, got {self.samples}")


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


@dataclass
class OptimSettings:
    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    clip: float = 0.0  # max global gradient norm; 0 disables clipping

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

    def __post_init__(self) -> None:
        _require(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
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
    log_every: int = 20           # SAL updates between two measurements
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


# Initialisations: the `init` group, and the methods of the same name (init on its own).
INIT_SETTINGS: dict[str, type] = {
    "random": NoneSettings,  # the model's own small random weights (model.init)
    "orthogonal": OrthogonalSettings,
    "critical": CriticalSettings,
    "lsuv": LSUVSettings,
}
METHOD_SETTINGS: dict[str, type] = {
    "none": NoneSettings,
    "sal": SALSettings,
    "spectral": SpectralSettings,
    "orthogonal": OrthogonalSettings,
    "critical": CriticalSettings,
    "lsuv": LSUVSettings,
    "flossing": FlossingSettings,
}
INIT_METHODS = frozenset(name for name in INIT_SETTINGS if name != "random")
MODEL_SETTINGS: dict[str, type] = {"mlp": MLPSettings, "rnn": RNNSettings}


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
        if field.name not in data:
            continue
        kwargs[field.name] = _coerce(hints[field.name], data.pop(field.name), f"{where}.{field.name}")
    data.pop("name", None)
    if data:
        raise ConfigError(f"unknown key {where}.{sorted(data)[0]}")
    return cls(**kwargs)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def method_settings(name: str, data: Mapping[str, Any]) -> Any:
    """The settings of method `name`. A preset may tune several methods at once
    (method.lr for sal, method.rho for spectral), so that one sweep can span
    them; the keys of the other methods are dropped here."""
    others = frozenset().union(*(_field_names(c) for n, c in METHOD_SETTINGS.items() if n != name))
    return _prefixed(lambda: build(METHOD_SETTINGS[name], data, "method", ignore=others), "method")


def init_settings(data: Mapping[str, Any] | None) -> tuple[str, Any]:
    """The `init` group: its name and settings (a config without one: the model's random init)."""
    data = dict(data or {"name": "random"})
    name = data.get("name")
    if name not in INIT_SETTINGS:
        raise ConfigError(f"unknown init {name!r} (choose from: {', '.join(INIT_SETTINGS)})")
    return name, _prefixed(lambda: build(INIT_SETTINGS[name], data, "init"), "init")


def _prefixed(make, where: str) -> Any:
    """Settings shared by the `init` group and `method` name their own key (init.gain, method.gain)."""
    try:
        return make()
    except ConfigError as err:
        message = str(err)
        if message.split(" ")[0] in {f.name for c in INIT_SETTINGS.values() for f in dataclasses.fields(c)}:
            message = f"{where}.{message}"
        raise ConfigError(message) from None


def check_combination(command: str, model_name: str, model: Any, method_name: str, method: Any,
                      init_name: str) -> None:
    """What single settings cannot see: a method or init that does not fit the model,
    the command or the other of the two."""
    if method_name in INIT_METHODS and init_name != "random":
        raise ConfigError(f"method={method_name} is itself an initialisation; use init={init_name} "
                          "with method none, sal, spectral or flossing")
    if command == "lyapunov":
        if init_name == "lsuv":
            raise ConfigError("init=lsuv needs a task's data and runs with salrun train, not lyapunov")
        if method_name in ("lsuv", "flossing"):
            raise ConfigError(f"method={method_name} needs a task's data and runs with salrun train, "
                              "not lyapunov")
    for name in {init_name, method_name} & {"lsuv"}:
        if model_name != "mlp":
            raise ConfigError(f"{name} is feed-forward only (Mishkin & Matas 2016): it needs model=mlp, "
                              f"got model={model_name}")
    if method_name == "flossing":
        if model_name != "rnn":
            raise ConfigError(f"method=flossing applies to RNNs (model=rnn), got model={model_name}")
        if method.k > model.hidden:
            raise ConfigError(f"method.k must be <= model.hidden ({model.hidden}), got {method.k}")


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
