"""Where a job runs: device choice, thread count and seeding, in one place."""
from __future__ import annotations

import random

import torch

from salrun.settings import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available (use device=auto or device=cpu)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def prepare(seed: int, threads: int) -> torch.Generator:
    """Seed every RNG and set the thread count; returns the job's data generator."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # decaying states underflow; denormals are 100x slower on CPU
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
