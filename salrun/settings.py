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
    """The chaos study: SAL alone adapts an RNN, the MLE is measured on the way."""

    sal_steps: int = 400          # SAL updates
    chunk: int = 10               # time steps the net runs between two SAL updates
    trajectories: int = 8         # independent trajectories (batch)
    log_every: int = 20           # SAL updates between two measurements
    transient: int = 100          # steps discarded before averaging log-growth
    measure_steps: int = 400      # steps averaged for the MLE and log-sensitivity
    input_size: int = 0           # 0: autonomous net; > 0: driven by N(0, 1) input
    k: int = 1                    # top-k Lyapunov exponents by QR (le_1 … le_k); 1: the MLE alone

    def __post_init__(self) -> None:
        for name in ("sal_steps", "chunk", "trajectories", "log_every", "measure_steps", "k"):
            value = getattr(self, name)
            _require(value >= 1, f"lyapunov.{name} must be >= 1, got {value}")
        _require(self.transient >= 0, f"lyapunov.transient must be >= 0, got {self.transient}")
        _require(self.input_size >= 0, f"lyapunov.input_size must be >= 0, got {self.input_size}")

    def check_hidden(self, hidden: int) -> None:
        """A hidden state of n neurons has n Lyapunov exponents."""
        _require(self.k <= hidden, f"lyapunov.k must be <= model.hidden ({hidden}), got {self.k}")


METHOD_SETTINGS: dict[str, type] = {
    "none": NoneSettings,
    "sal": SALSettings,
    "spectral": SpectralSettings,
}
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
    return build(METHOD_SETTINGS[name], data, "method", ignore=others)


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
