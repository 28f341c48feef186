"""Where a job runs: device, threads, seeding, RNG snapshots for checkpoints, and when signals stop it."""
from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import socket
import threading
import time
from typing import Callable, Iterator

import torch

from salrun.settings import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():  # the schema has checked the name itself
        raise ConfigError("device=cuda but no CUDA GPU is available (use device=auto or device=cpu)")
    return torch.device(name)


# Torch threads for `threads=0`, the default. The presets' nets (width 32, hidden 32-200) are too
# small for a second thread to pay, and one busy core makes torch's own default (every core) 4-40x
# slower than one thread (benchmarks/threads.py; README, "Threads").
DEFAULT_THREADS = 1


def prepare(seed: int, threads: int) -> torch.Generator:
    """Seed every RNG and set the thread count (0: DEFAULT_THREADS); returns the job's data generator."""
    torch.set_num_threads(threads if threads > 0 else DEFAULT_THREADS)
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


GRACE_SECONDS = 10.0  # how long the first signal waits for a step boundary before the job stops anyway
FIRST_SIGNAL = b"salrun: stopping at the end of this step; Ctrl-C again to stop now\n"
_active: StopGuard | None = None  # the guard of the job running in this process


class StopGuard:
    """The two-signal rule of one job. The first SIGINT or SIGTERM is graceful: while
    `interrupts_at_step_boundaries` defers it, it is held until the step ends (a
    consistent checkpoint), elsewhere it raises KeyboardInterrupt. A second signal, or
    the first when no step boundary comes within GRACE_SECONDS, stops the process at once
    with exit 130, after `on_stop` (which writes summary.json).

    Python runs its signal handlers only between bytecodes, which one long torch call (a
    huge allocation, a step that never ends) holds off for ever. The interpreter's C
    handler still writes each signal's number to the wakeup fd at once, so a thread that
    reads it can always act."""

    def __init__(self, on_stop: Callable[[], None]):
        self.on_stop = on_stop
        self.deferring = False    # inside the step loop: hold the first signal until the step ends
        self.pending = False      # a signal reached the Python handler
        self.graceful = False     # the step boundary came: the job is stopping on its own
        self.finished = False     # the job wrote its summary
        self.count = 0            # signals seen by the watcher
        self.deadline: float | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    def _handler(self, signum, frame) -> None:
        if self.pending:
            return  # a second signal: the watcher stops the process
        self.pending = True
        if not self.deferring:
            raise KeyboardInterrupt

    def check(self) -> None:
        """At a step boundary: raise KeyboardInterrupt if a signal arrived."""
        if self.pending:
            self.graceful = True
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """The job's last writes: a stop now waits for them (milliseconds), so that it
        never writes summary.json beside them."""
        with self.lock:
            yield
            self.finished = True

    def _watch(self, read_fd: int) -> None:
        while not self.done.is_set():
            wait = 0.1 if self.deadline is None else min(0.1, max(0.0, self.deadline - time.monotonic()))
            if select.select([read_fd], [], [], wait)[0]:
                for signum in os.read(read_fd, 64):
                    if signum in (signal.SIGINT, signal.SIGTERM):
                        self._signalled()
            if self.deadline is not None and not self.graceful and time.monotonic() >= self.deadline:
                self._stop_now()

    def _signalled(self) -> None:
        self.count += 1
        if self.count == 1:
            os.write(2, FIRST_SIGNAL)
            self.deadline = time.monotonic() + GRACE_SECONDS
        else:
            self._stop_now()

    def _stop_now(self) -> None:
        if self.done.is_set():
            return
        with self.lock:
            if not self.finished:
                try:
                    self.on_stop()
                except Exception:  # noqa: BLE001 - stopping matters more than the record
                    pass
            os._exit(130)


@contextlib.contextmanager
def stop_guard(on_stop: Callable[[], None]) -> Iterator[StopGuard]:
    """Apply the two-signal rule (StopGuard) while the job runs. Outside the main thread,
    where Python cannot install handlers, signals act as they did."""
    global _active
    guard = StopGuard(on_stop)
    if threading.current_thread() is not threading.main_thread() or _active is not None:
        yield guard
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, guard._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher = threading.Thread(target=guard._watch, args=(read_fd,), name="salrun-signals", daemon=True)
    watcher.start()
    _active = guard
    try:
        yield guard
    finally:
        _active = None
        guard.done.set()
        watcher.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(previous_fd)
        os.close(read_fd)
        os.close(write_fd)


PARENT_ENV = "SALRUN_SWEEP_PID"  # HOST:PID of the sweep's process, for its workers (set by salrun.launch)
_watching = False


def stop_with_parent(poll_seconds: float = 1.0) -> None:
    """In a sweep's worker process (joblib's loky workers, submitit_local's jobs): stop when the
    sweep's process dies (kill -9), instead of training on for minutes as an orphan. A thread
    polls the parent; once it is gone, a running job is stopped as SIGTERM stops it (checkpoint
    and summary `interrupted`, so `sweep --resume` continues it), then the worker exits. Only
    a direct child of the sweep's process watches (a SLURM job's parent is never it)."""
    global _watching
    host, _, pid = os.environ.get(PARENT_ENV, "").rpartition(":")
    parent = int(pid) if pid.isdigit() else 0
    if _watching or host != socket.gethostname() or parent in (0, os.getpid()) or os.getppid() != parent:
        return
    _watching = True

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        if _active is not None:  # a job is running: let it stop at a step boundary and write its record
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + GRACE_SECONDS + 5
            while _active is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        os._exit(130)

    threading.Thread(target=watch, name="salrun-parent", daemon=True).start()


@contextlib.contextmanager
def interrupts_at_step_boundaries() -> Iterator[Callable[[], None]]:
    """Hold the first SIGINT/SIGTERM until the current step ends, so that a checkpoint
    written on interrupt is a consistent state. Yields `check`, which raises
    KeyboardInterrupt at a step boundary if a signal arrived. The rule for a second signal
    is the job's StopGuard; without one (outside the main thread) signals act as they did."""
    guard = _active
    if guard is None:
        yield lambda: None
        return
    guard.deferring = True
    try:
        yield guard.check
    finally:
        guard.deferring = False
