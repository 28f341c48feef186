"""Where a job runs: device, threads, seeding, RNG snapshots for checkpoints, and when interrupts land."""
from __future__ import annotations

import contextlib
import random
import signal
import threading
from typing import Callable, Iterator

import torch

from salrun.settings import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():  # the schema has checked the name itself
        raise ConfigError("device=cuda but no CUDA GPU is available (use device=auto or device=cpu)")
    return torch.device(name)


def prepare(seed: int, threads: int) -> torch.Generator:
    """Seed every RNG and set the thread count; returns the job's data generator."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # decaying states underflow; denormals are 100x slower on CPU
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a job draws from: torch's global RNG (and CUDA's), the job's
    data generator and Python's `random`."""
    state = {"torch": torch.get_rng_state(), "data": generator.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def interrupts_at_step_boundaries() -> Iterator[Callable[[], None]]:
    """Hold SIGINT/SIGTERM until the current step ends, so that a checkpoint written on
    interrupt is a consistent state. Yields `check`, which raises KeyboardInterrupt if a
    signal arrived; a second signal interrupts at once. Outside the main thread (where
    Python cannot install handlers) signals act as they did."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pending: list[int] = []

    def hold(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    def check() -> None:
        if pending:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
