"""Per-step cost of the bench_* presets, for the budget arithmetic of docs/BENCHMARKS.md.

    python docs/bench_cost.py [--steps N] [--members M] [--set OVERRIDE]... [PRESET ...]

For each preset (default: every conf/experiment/bench_*.yaml), on one torch thread:
- ensemble: ms per member-step of M members trained as one batched model (`sweep --ensemble`),
  the members spread over the methods that batch (none, sal, spectral, orthogonal, critical),
  with the test evaluation every `train.log_every` steps amortised in;
- flossing: ms per step of one flossing run (it acts during training, so it runs alone): its
  BPTT step plus its flossing steps amortised (`pre_steps` once, `burst` every `every` steps).
Timed in CPU seconds of this process (time.process_time) after one warm-up step, so that other
load on a shared machine does not inflate the numbers: on an idle core they are the wall time.
Nothing is written but temporary run folders.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from salrun.engines import SingleEngine, StackedEngine
from salrun.launch import compose
from salrun.results import RunWriter
from salrun.settings import REGISTRY, config_dir, job_settings

BATCHED = [name for name, e in REGISTRY["method"].items() if e.batches and "rnn" in e.models]  # the bench presets are RNNs


OVERRIDES: list[str] = []  # --set: applied to every preset (model.hidden=32)


def _settings(preset: str, *extra: str):
    return job_settings("train", compose("train", [f"experiment={preset}", "threads=1", "device=cpu", *OVERRIDES,
                                                   *extra]))


def ensemble_ms(preset: str, members: int, steps: int, folder: Path) -> float:
    settings = [_settings(preset, f"method={BATCHED[i % len(BATCHED)]}", f"seed={i}") for i in range(members)]
    trainer = StackedEngine(settings)
    writers = [RunWriter(folder / f"m{i}") for i in range(members)]
    losses = trainer.step(1, False, writers)
    start = time.process_time()
    for step in range(2, steps + 2):
        losses = trainer.step(step, False, writers)
    train = (time.process_time() - start) / steps
    start = time.process_time()
    trainer.evaluate(steps + 1, losses, writers)
    evaluation = time.process_time() - start
    return 1000 * (train + evaluation / settings[0].root.train.log_every) / members


def flossing_ms(preset: str, steps: int, folder: Path) -> float:
    pre_steps = _settings(preset, "method=flossing").method.settings.pre_steps
    s = _settings(preset, "method=flossing", "method.pre_steps=1")  # timed below, not at build
    engine = SingleEngine.build(s)  # one flossing step happens here
    writers, method = [RunWriter(folder / "floss")], engine.net.method
    every = method.settings.every
    method.settings.every = 10 ** 9  # time the BPTT steps alone, then the flossing steps
    engine.step(1, False, writers)
    start = time.process_time()
    for step in range(2, steps + 2):
        engine.step(step, False, writers)
    train = (time.process_time() - start) / steps
    start = time.process_time()
    method.floss(5)
    floss = (time.process_time() - start) / 5
    run, f = s.root.train, method.settings
    flossing_steps = pre_steps + f.burst * (run.steps // every)
    return 1000 * (train + floss * flossing_steps / run.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], help="an override for every preset (model.hidden=32)")
    args = parser.parse_args()
    OVERRIDES.extend(args.set)
    torch.set_num_threads(1)
    presets = args.presets or sorted(p.stem for p in Path(config_dir(), "experiment").glob("bench_*.yaml"))
    print(f"preset,ensemble_ms_per_member_step ({args.members} members),flossing_ms_per_step")
    with tempfile.TemporaryDirectory() as folder:
        for preset in presets:
            ensemble = ensemble_ms(preset, args.members, args.steps, Path(folder))
            floss = flossing_ms(preset, args.steps, Path(folder))
            print(f"{preset},{ensemble:.2f},{floss:.2f}", flush=True)


if __name__ == "__main__":
    main()
