"""Torch threads per job: threads=1 against threads=2 and the default, per preset, on an idle
machine and with one core busy.

    python benchmarks/threads.py [--repeats 3] [--only deep_ffn long_lag ...] [--modes idle busy]
                                 [--variants threads=1 threads=2 default]

Each case is a real `salrun train` (or `salrun lyapunov`) process; the figure is the training
time that its summary.json records (`wall_seconds`: from the first step to the last, without
the process's start-up). Inside each repeat the three variants run one after the other, so
that load from other processes hits them alike; "busy" runs a Python busy loop (one core)
beside them. Prints, per preset and mode, the median seconds of each variant and the median
of the per-repeat ratios threads=2 / threads=1 and default / threads=1. The default must stay
within 1.5x of threads=1 with one core busy (issue 26).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (command, preset, the overrides that shorten it to about a second of training at threads=1)
CASES = {
    "deep_ffn": ("train", ["train.steps=200"]),
    "long_lag": ("train", ["train.steps=300"]),
    "chaos": ("lyapunov", ["lyapunov.sal_steps=100"]),
    "paper_deep_ffn": ("train", ["train.steps=20"]),
    "paper_long_lag": ("train", ["train.steps=20"]),
    "paper_chaos": ("lyapunov", ["lyapunov.sal_steps=20"]),
    "bench_adding_100": ("train", ["train.steps=100"]),
}
VARIANTS = {"threads=1": ["threads=1"], "threads=2": ["threads=2"], "default": []}


def training_seconds(command: str, preset: str, overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, "-m", "salrun.cli", command, f"experiment={preset}", *overrides,
                        "--out", str(out), "-q", "--no-memory-check"], check=True, env=env, cwd=tmp,
                       stdout=subprocess.DEVNULL)
        return json.loads((out / "summary.json").read_text())["wall_seconds"]


def busy_core() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(preset: str, repeats: int, variants: list[str]) -> dict[str, list[float]]:
    command, shorten = CASES[preset]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name in variants:
            times[name].append(training_seconds(command, preset, [*shorten, *VARIANTS[name]]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="*", default=["idle", "busy"], choices=["idle", "busy"])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    variants = ["threads=1", *(v for v in args.variants if v != "threads=1")]  # the baseline of every ratio
    print(f"cores: {len(os.sched_getaffinity(0))}; repeats: {args.repeats}; training seconds (median)")
    print(f"{'preset':<18} {'mode':<5} " + " ".join(f"{v:>9}" for v in variants)
          + "".join(f" {v.removeprefix('threads=') + '/1':>9}" for v in variants[1:]))
    worst = 0.0
    for mode in args.modes:
        for preset in args.only:
            loader = busy_core() if mode == "busy" else None
            try:
                times = measure(preset, args.repeats, variants)
            finally:
                if loader is not None:
                    loader.kill()
                    loader.wait()
            ratio = {name: statistics.median(t / b for t, b in zip(times[name], times["threads=1"]))
                     for name in variants[1:]}
            if mode == "busy" and "default" in ratio:
                worst = max(worst, ratio["default"])
            print(f"{preset:<18} {mode:<5} " + " ".join(f"{statistics.median(times[v]):>9.2f}" for v in variants)
                  + "".join(f" {ratio[v]:>9.2f}" for v in variants[1:]), flush=True)
    if "busy" in args.modes and "default" in variants:
        print(f"worst default / threads=1 with one core busy: {worst:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
