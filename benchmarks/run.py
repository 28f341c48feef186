"""salrun's benchmark suite: every figure is a ratio measured inside this one run.

    python benchmarks/run.py [--quick] [--threads N] [--out benchmarks/results.csv] [--only NAME ...]

Each figure is the median over repeats after a warm-up; where two variants
are compared, they alternate inside each repeat so that load from other
processes hits both alike. Prints a table and writes a CSV
(benchmark, case, baseline_s, measured_s, ratio, target, met, note) and the same table in markdown
beside it (OUT with .md: the block the README and docs/COMPARISON.md include, with the commit and
the command that measured it). `--render CSV` writes that markdown again from a committed CSV alone.
The full run takes about 5-8 minutes on 2 cores; --quick (fewer repeats, a
shorter sweep) about half of that.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What the in-process figures time: with one torch thread, this process's CPU time, which the
# load of other processes on a shared machine does not inflate (a wall clock also counts the
# waits for a core); with several threads, the wall clock (CPU time would add up the threads).
CLOCK = time.process_time
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable


def salrun_command() -> list[str]:
    script = Path(PYTHON).with_name("salrun")
    return [str(script)] if script.exists() else [PYTHON, "-m", "salrun"]


# -- helpers -----------------------------------------------------------------------------------

def alternate(variants: dict, repeats: int, warmup: int = 1, inner: int = 1) -> dict[str, list[float]]:
    """Time each callable `inner` times per repeat, alternating variants; seconds per call."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = CLOCK()
            for _ in range(inner):
                fn()
            times[name].append((CLOCK() - start) / inner)
    return times


def ratio_row(bench, case, times, base, new, target, note="") -> dict:
    ratios = [n / b for b, n in zip(times[base], times[new])]
    ratio = statistics.median(ratios)
    row = {"benchmark": bench, "case": case, "baseline_s": statistics.median(times[base]),
           "measured_s": statistics.median(times[new]), "ratio": ratio, "target": target, "note": note}
    row["met"] = _met(ratio, target)
    return row


def _met(value: float, target: str) -> str:
    if not target:
        return ""
    op, limit = target[:2], float(target[2:])
    return "yes" if (value <= limit if op == "<=" else value >= limit) else "NO"


# -- SAL overhead per training step -----------------------------------------------------------

def sal_overhead(args) -> list[dict]:
    import torch

    from salrun.models import ElmanRNN, MLP
    from salrun.sal import SAL
    from salrun.settings import MLPSettings, RNNSettings

    def ffn(width):
        def make():
            model = MLP(2, 2, MLPSettings(depth=300, width=width))
            x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
            return model, lambda: torch.nn.functional.cross_entropy(model(x), y)
        return make, (300, width)

    def rnn(hidden):
        def make():
            model = ElmanRNN(1, 1, RNNSettings(hidden=hidden))
            x, y = torch.randn(300, 32, 1), torch.randn(32, 1)
            return model, lambda: torch.nn.functional.mse_loss(model(x), y)
        return make, (300, hidden)

    cases = [("ffn depth 300 width 64 batch 32", ffn(64)), ("ffn depth 300 width 256 batch 32", ffn(256)),
             ("rnn hidden 128 lag 300 batch 32", rnn(128)), ("rnn hidden 512 lag 300 batch 32", rnn(512))]
    cases = [(case, make) for case, make in cases if not args.case or args.case in case]
    rows = []
    for case, (make, (products, n)) in cases:
        # The arithmetic: the forward is `products` products (32 × n)·(n × n); BP three times that
        # (forward, the gradient of the input, of the weight); SAL's data term oᵀx one more forward's
        # worth over the same rows: the bound on BP+SAL / BP set by arithmetic is 1 + 1/3.
        forward_flop = 2 * 32 * n * n * products
        bp_flop, sal_flop = 3 * forward_flop, forward_flop
        roofline = _matmul_roofline(32, n, products)
        variants = {}
        for name in ("bp", "sal", "sal_every4", "sal_reference"):
            torch.manual_seed(0)
            model, loss_fn = make()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
            sal = None if name == "bp" else SAL(model, update_every=4) if name == "sal_every4" else SAL(model)
            if sal is not None:
                sal.fused = name != "sal_reference"

            def step(model=model, loss_fn=loss_fn, optimizer=optimizer, sal=sal):
                optimizer.zero_grad(set_to_none=True)
                loss_fn().backward()
                optimizer.step()
                if sal is not None:
                    sal.step()
            variants[name] = step
        if args.quick:
            variants.pop("sal_reference")
        times = alternate(variants, repeats=args.repeats, warmup=2, inner=4)  # 4: a whole cycle of update_every=4
        bound = 1 + sal_flop / bp_flop
        achieved = bp_flop / statistics.median(times["bp"]) / 1e9
        achieved_sal = (bp_flop + sal_flop) / statistics.median(times["sal"]) / 1e9
        rows.append(ratio_row("sal_overhead", case, times, "bp", "sal", f"<={bound + 0.05:.2f}",
                              f"BP+SAL / BP per step (Adam); arithmetic bound {bound:.2f}; BP {achieved:.1f}, "
                              f"BP+SAL {achieved_sal:.1f} GFLOP/s against a torch.mm loop of (32x{n})({n}x{n}) "
                              f"at {roofline:.1f} GFLOP/s ({achieved / roofline:.0%}, {achieved_sal / roofline:.0%})"))
        rows.append(ratio_row("sal_overhead_every4", case, times, "bp", "sal_every4", "<=1.10",
                              "BP+SAL / BP per step, SAL every 4 steps at 4x the rate (method.update_every=4)"))
        if "sal_reference" in times:
            rows.append(ratio_row("sal_overhead_unfused", case, times, "bp", "sal_reference", "",
                                  "before: the formula as written (SAL.fused=False)"))
        for row in rows[-3 if "sal_reference" in times else -2:]:
            _print_row(row)
    return rows


def _matmul_roofline(rows: int, n: int, products: int) -> float:
    """GFLOP/s of `products` torch.mm of (rows × n)·(n × n) in a loop, as a step's forward runs
    them (best of 5): this machine's rate at that size, the ceiling a step's arithmetic can reach."""
    import torch

    a, w = torch.randn(rows, n), torch.randn(products, n, n) / n ** 0.5
    weights = list(w.unbind(0))

    def loop():
        for matrix in weights:
            torch.mm(a, matrix)
    loop()
    best = min(_timed(loop) for _ in range(5))
    return 2 * rows * n * n * products / best / 1e9


def _timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


# -- salrun's training step against the loops a user would write (issue 13) -------------------

def _preset_settings(preset: str, method: str, seed: int = 0):
    from salrun.launch import compose
    from salrun.settings import job_settings

    return job_settings("train", compose("train", [f"experiment={preset}", f"method={method}", f"seed={seed}",
                                                   "threads=1", "device=cpu"]))


def _preset_step(preset: str, method: str, seed: int = 0):
    """salrun's own training step (the single engine of the run API, no logging) of `preset` with
    `method`, and its settings."""
    from salrun.engines import SingleEngine

    s = _preset_settings(preset, method, seed)
    engine = SingleEngine.build(s)
    return (lambda: engine.step(0, False, [None])), s, engine.task


def _reference_steps(s, task) -> dict:
    """Bare PyTorch loops of the preset's sizes, a fixed batch of the task, the same optimizer as salrun."""
    import torch
    from torch import nn

    from salrun.engines import make_optimizer

    x, y = task.train_batch(s.root.train.batch_size, torch.Generator().manual_seed(0))

    def stepper(module, forward):
        optimizer = make_optimizer(s, module)

        def step():
            optimizer.zero_grad(set_to_none=True)
            task.loss(forward(x), y).backward()
            optimizer.step()
        return step

    model, n_in, n_out = s.model.settings, task.input_size, task.output_size
    if task.sequential:
        bare = nn.ParameterDict({"w_ih": nn.Parameter(0.1 * torch.randn(model.hidden, n_in)),
                                 "w_hh": nn.Parameter(torch.randn(model.hidden, model.hidden) / model.hidden ** 0.5),
                                 "b": nn.Parameter(torch.zeros(model.hidden))})
        bare_readout = nn.Linear(model.hidden, n_out)
        both = nn.ModuleList([bare, bare_readout])

        def unbind_loop(inputs):
            h = inputs.new_zeros(inputs.shape[1], model.hidden)
            for drive_t in nn.functional.linear(inputs, bare["w_ih"], bare["b"]).unbind(0):
                h = torch.tanh(torch.addmm(drive_t, h, bare["w_hh"].T))
            return bare_readout(h)

        rnn, readout = nn.RNN(n_in, model.hidden), nn.Linear(model.hidden, n_out)
        return {"unbind_loop": stepper(both, unbind_loop),
                "torch_rnn": stepper(nn.ModuleList([rnn, readout]), lambda inputs: readout(rnn(inputs)[0][-1]))}
    layers: list[nn.Module] = []
    for i in range(model.depth):
        layers += [nn.Linear(model.width if i else n_in, model.width), nn.Tanh()]
    sequential = nn.Sequential(*layers, nn.Linear(model.width, n_out))
    return {"sequential": stepper(sequential, sequential)}


def _written_out_sal(engine):
    """paper_deep_ffn's SAL step written out for salrun's MLP alone, in the fewest torch ops we found
    (tanh, the log objective, the arithmetic average, one gate; none of salrun's Python): method=none's
    step plus this is the floor of SAL at every step, which salrun's step is timed against. It reads
    the block the model stacks as the forward ends (`_ReadAhead`), as salrun's step does."""
    import torch

    model, cfg = engine.net.model, engine.net.method.settings
    if (cfg.objective, cfg.average, cfg.layer_target, cfg.update_every) != ("log", "arithmetic", False, 1) \
            or cfg.gate not in ("one_sided", "two_sided"):
        raise SystemExit(f"the written-out SAL step covers paper_deep_ffn's settings, not {cfg}")
    kept = {}

    @torch.no_grad()
    def step():
        o, x = model._block, model._inputs[0]  # (depth, rows, width): every hidden layer's output
        norm = torch.cat([torch.linalg.vector_norm(model.w_first, dim=-1)[None],
                          torch.linalg.vector_norm(model.w_hidden, dim=-1)])
        mean_s = (1.0 - torch.square(o).mean(1)).mul_(norm)
        average = kept.get("average")
        if average is None:
            average = kept["average"] = mean_s
        else:
            average.mul_(cfg.beta).add_(mean_s, alpha=1 - cfg.beta)
        lr = cfg.lr
        rate = (average < cfg.target).to(o.dtype).mul_(2 * lr).sub_(lr) if cfg.gate == "two_sided" \
            else (average < cfg.target).to(o.dtype).mul_(lr)
        scale = rate.div(norm.square_()).add_(1.0)[:, :, None]  # w <- (1 + rate/|w|^2) w + rate (-2/rows) o^T x
        a = o * rate.mul_(-2.0 / o.shape[1])[:, None, :]
        model.w_hidden.mul_(scale[1:]).baddbmm_(a[1:].mT, o[:-1])
        model.w_first.mul_(scale[0]).addmm_(a[0].T, x)
        total = a.sum(1)
        model.b_hidden.add_(total[1:])
        model.b_first.add_(total[0])
        model.clear_activity()
    return step


def _written_out_step(preset: str):
    """salrun's training step of `preset` (method=sal) with SAL's step replaced by `_written_out_sal`,
    after checking over 20 steps, from the same start as salrun's own, that it moves the weights as
    salrun's SAL does."""
    import torch

    from salrun.engines import SingleEngine

    engines = [SingleEngine.build(_preset_settings(preset, "sal")) for _ in range(3)]
    for engine in engines[1:]:
        engine.net.method.after_step = _written_out_sal(engine)
    for k in range(20):
        engines[0].step(k, False, [None]), engines[1].step(k, False, [None])
    for (name, a), b in zip(engines[0].net.model.named_parameters(), engines[1].net.model.parameters()):
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-6):
            raise SystemExit(f"the written-out SAL step no longer matches salrun's ({name}): update _written_out_sal")
    return lambda: engines[2].step(0, False, [None])


# issue 29: the stacked MLP against a Linear per layer; the RNN's SAL step against a bare BPTT loop
LOOP_TARGETS = {("paper_long_lag", "none"): "<=1.10", ("paper_long_lag", "sal"): "<=1.25",
                ("paper_deep_ffn", "none"): "<=0.60", ("paper_deep_ffn", "sal"): "<=0.66"}


def reference_loops(args) -> list[dict]:
    """One salrun training step (paper_long_lag, paper_deep_ffn; method none and sal) against the
    best of the bare loops of the same sizes: for the RNN a loop over the unbound drive and
    torch.nn.RNN, for the MLP an nn.Sequential; all with salrun's optimizer (Adam, fused)."""
    rows = []
    for preset in ("paper_long_lag", "paper_deep_ffn"):
        if args.case and args.case not in preset:
            continue
        none_step, s, task = _preset_step(preset, "none")
        sal_step, _, _ = _preset_step(preset, "sal")
        references = _reference_steps(s, task)
        floor = {"written_out": _written_out_step(preset)} if preset == "paper_deep_ffn" else {}
        times = alternate({**references, "none": none_step, "sal": sal_step, **floor}, repeats=args.repeats,
                          warmup=2, inner=1 if args.quick else 3)
        # the best reference of each repeat: the ratios stay paired with the variants timed beside them
        times["best"] = [min(per_repeat) for per_repeat in zip(*(times[name] for name in references))]
        names = " or ".join(references)
        for name in references:
            rows.append(ratio_row("reference_loops", f"{preset}: {name}", times, "best", name, "",
                                  f"this reference / the best of {names}"))
        for method in ("none", "sal"):
            rows.append(ratio_row("reference_loops", f"{preset}: salrun method={method}", times, "best", method,
                                  LOOP_TARGETS[preset, method], f"salrun's step / the best of {names}"))
        rows.append(ratio_row("sal_vs_none", preset, times, "none", "sal", "<=1.10",
                              "salrun's step, method=sal / method=none (the same run)"))
        if floor:
            rows.append(ratio_row("sal_vs_none", f"{preset}: SAL written out", times, "none", "written_out", "",
                                  "method=none's step plus SAL's update written out in the fewest torch ops "
                                  "(benchmarks/run.py, _written_out_sal) / method=none: the floor of SAL at every step"))
    for row in rows:
        _print_row(row)
    return rows


def ensemble_train(args) -> list[dict]:
    """16 train runs (seeds 0-15, method=sal) as one batched model (salrun.ensemble) against the same
    16 runs one after another on the single engine: time per step of all 16."""
    from salrun.engines import StackedEngine

    members = 16
    rows = []
    for preset in ("paper_long_lag", "paper_deep_ffn"):
        if args.case and args.case not in preset:
            continue
        singles = [_preset_step(preset, "sal", seed)[0] for seed in range(members)]
        trainer = StackedEngine([_preset_settings(preset, "sal", seed) for seed in range(members)])

        def sequential():
            for step in singles:
                step()

        times = alternate({"single": sequential, "ensemble": lambda: trainer.step(1, False, [None] * members)},
                          repeats=max(3, args.repeats // 2), warmup=1)
        speedup = [s / e for s, e in zip(times["single"], times["ensemble"])]
        row = {"benchmark": "ensemble_train", "case": f"{preset} method=sal, {members} members",
               "baseline_s": statistics.median(times["single"]), "measured_s": statistics.median(times["ensemble"]),
               "ratio": statistics.median(speedup), "target": ">=2.5",
               "note": f"{members} single-run steps / one batched step of {members} members (speed-up)"}
        row["met"] = _met(row["ratio"], ">=2.5")
        rows.append(row)
        _print_row(row)
        rows.append(_tanh_batching(preset, members, args))
        _print_row(rows[-1])
    if not args.case or "rss" in args.case:
        rows.append(ensemble_rss(args))
    return rows


def ensemble_gpu(args) -> list[dict]:
    """On a CUDA GPU (none: no rows): one batched step of 256 members (seeds 0-255, method=sal) against
    one member's single-run step, wall time with the GPU synchronised; issue 29's target is 256
    members in at most twice one member's time. 16 members for scale."""
    import torch

    from salrun.engines import SingleEngine, StackedEngine

    if not torch.cuda.is_available():
        print("ensemble_gpu: no CUDA GPU here, no rows", flush=True)
        return []

    def on_cuda(preset: str, seed: int):
        from salrun.launch import compose
        from salrun.settings import job_settings
        return job_settings("train", compose("train", [f"experiment={preset}", "method=sal", f"seed={seed}",
                                                       "threads=1", "device=cuda"]))

    def synchronised(step):
        def run():
            step()
            torch.cuda.synchronize()
        return run

    global CLOCK
    clock, CLOCK = CLOCK, time.perf_counter  # the GPU's work is not this process's CPU time
    rows = []
    try:
        for preset in ("paper_deep_ffn", "paper_long_lag"):
            if args.case and args.case not in preset:
                continue
            single = SingleEngine.build(on_cuda(preset, 0))
            for members in (16, 256):
                batched = StackedEngine([on_cuda(preset, seed) for seed in range(members)])
                times = alternate({"single": synchronised(lambda: single.step(0, False, [None])),
                                   "batched": synchronised(lambda: batched.step(1, False, [None] * members))},
                                  repeats=max(5, args.repeats), warmup=3, inner=5)
                rows.append(ratio_row("ensemble_gpu", f"{preset} method=sal, {members} members, "
                                      f"{torch.cuda.get_device_name()}", times, "single", "batched",
                                      "<=2.0" if members == 256 else "",
                                      f"one batched step of {members} members / one member's single-run step "
                                      "(wall time, GPU synchronised)"))
                _print_row(rows[-1])
                del batched
    finally:
        CLOCK = clock
    return rows


def _tanh_batching(preset: str, members: int, args) -> dict:
    """What batching does for one layer's (one time step's) tanh, which the batched step runs once per
    layer for all members: an elementwise op over members x batch x width values gains only the
    dispatch it saves, where a product also gains bigger blocks."""
    import torch

    s = _preset_settings(preset, "sal")
    model = s.model.settings
    one = torch.randn(s.root.train.batch_size, getattr(model, "hidden", None) or model.width)
    batched = torch.randn(members, *one.shape)

    def singles():
        for _ in range(members):
            torch.tanh(one)

    times = alternate({"single": singles, "batched": lambda: torch.tanh(batched)}, repeats=args.repeats, warmup=3,
                      inner=100)
    shape = ", ".join(map(str, one.shape))
    return {"benchmark": "ensemble_tanh", "case": f"{preset}: one layer's tanh, {members} members",
            "baseline_s": statistics.median(times["single"]), "measured_s": statistics.median(times["batched"]),
            "ratio": statistics.median([a / b for a, b in zip(times["single"], times["batched"])]), "target": "",
            "met": "", "note": f"{members} tanh of ({shape}), {statistics.median(times['single']) * 1e6:.1f} µs / "
                               f"one of ({members}, {shape}), {statistics.median(times['batched']) * 1e6:.1f} µs (speed-up)"}


def ensemble_rss_child(members: int, threads: int) -> None:
    import torch

    from salrun.engines import StackedEngine

    torch.set_num_threads(threads)
    trainer = StackedEngine([_preset_settings("paper_long_lag", "sal", seed) for seed in range(members)])
    before = _vm_hwm_kib()
    for step in range(1, 3):
        trainer.step(step, False, [None] * members)
    print(json.dumps({"before_kib": before, "peak_kib": _vm_hwm_kib()}))


def ensemble_rss(args) -> dict:
    """Peak RSS of an ensemble's training steps (above its set-up) against the member count: it should
    grow linearly (the BPTT graph and SAL's state block are per member)."""
    growth = {}
    for members in (1, 4, 16):
        out = subprocess.run([PYTHON, __file__, "--child-ensemble-rss", str(members), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        growth[members] = (run["peak_kib"] - run["before_kib"]) / 1024
    per_member = (growth[16] - growth[1]) / 15
    row = {"benchmark": "ensemble_rss", "case": "paper_long_lag method=sal, 1 / 4 / 16 members", "baseline_s": "",
           "measured_s": "", "ratio": growth[16] / max(growth[1], 1e-9), "target": "", "met": "",
           "note": f"peak RSS above the set-up: {growth[1]:.0f} / {growth[4]:.0f} / {growth[16]:.0f} MiB "
                   f"({per_member:.1f} MiB per further member); ratio: 16 members / 1"}
    _print_row(row)
    return row


# -- cost of SAL's peers per step (issue 5) -------------------------------------------------

def peer_cost(args) -> list[dict]:
    """An RNN at equal hidden size and lag: a BPTT training step (Adam), the same with SAL, and
    one gradient-flossing step (top-k exponents by QR, Σλ², its backward, Adam). spectral,
    orthogonal, critical and lsuv act once before training and cost nothing per step. The last
    row prices a whole compare run: the preset's training steps plus the flossing schedule."""
    import torch
    import yaml

    from salrun.flossing import flossing_loss, lyapunov_exponents
    from salrun.models import ElmanRNN
    from salrun.sal import SAL
    from salrun.settings import FlossingSettings, RNNSettings

    floss = FlossingSettings()
    steps = yaml.safe_load((ROOT / "conf/experiment/paper_long_lag.yaml").read_text())["train"]["steps"]
    floss_steps = floss.pre_steps + (steps // floss.every) * floss.burst
    rows = []
    for hidden, lag in ((32, 300), (64, 100)):
        case = f"rnn hidden {hidden} lag {lag} batch 32"
        if (args.case and args.case not in case) or (args.quick and rows):
            continue
        torch.manual_seed(0)
        x, y = torch.randn(lag, 32, 1), torch.randn(32, 1)

        def training(with_sal: bool):
            model = ElmanRNN(1, 1, RNNSettings(hidden=hidden))
            optimizer, sal = torch.optim.Adam(model.parameters(), lr=1e-4), SAL(model) if with_sal else None

            def step():
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.mse_loss(model(x), y).backward()
                optimizer.step()
                if sal is not None:
                    sal.step()
            return step

        def flossing(k: int, trajectories: int):
            model = ElmanRNN(1, 1, RNNSettings(hidden=hidden))
            optimizer, xs = torch.optim.Adam(model.parameters(), lr=1e-3), x[:, :trajectories]

            def step():
                optimizer.zero_grad(set_to_none=True)
                flossing_loss(lyapunov_exponents(model, xs, k)).backward()
                optimizer.step()
            return step

        k, trajectories = floss.k, floss.trajectories
        variants = {"bptt": training(False), "sal": training(True), "floss": flossing(k, trajectories),
                    "floss_batch": flossing(k, 32), "floss_full": flossing(hidden, trajectories)}
        times = alternate(variants, repeats=args.repeats, warmup=1)
        rows.append(ratio_row("peer_cost", case, times, "bptt", "sal", "", "BPTT+SAL / BPTT, per training step"))
        rows.append(ratio_row("peer_cost", case, times, "sal", "floss", "",
                              f"one flossing step (k={k}, {trajectories} sequences, the preset's) / one BPTT+SAL step"))
        rows.append(ratio_row("peer_cost", case, times, "sal", "floss_batch", "",
                              f"one flossing step (k={k}, 32 sequences) / one BPTT+SAL step"))
        rows.append(ratio_row("peer_cost", case, times, "sal", "floss_full", "",
                              f"one flossing step (k={hidden}, the whole spectrum) / one BPTT+SAL step"))
        times["run_sal"] = [steps * t for t in times["sal"]]  # per repeat, so the ratio is paired as above
        times["run_floss"] = [steps * b + floss_steps * f for b, f in zip(times["bptt"], times["floss"])]
        rows.append(ratio_row("peer_cost_run", case, times, "run_sal", "run_floss", "",
                              f"a compare run with flossing ({steps} BPTT steps + {floss_steps} flossing steps) / "
                              f"with SAL ({steps} BPTT+SAL steps)"))
        for row in rows[-5:]:
            _print_row(row)
    return rows


# -- peak memory of BPTT ----------------------------------------------------------------------

def _vm_hwm_kib() -> int:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it does not carry over through exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(use_sal: bool, threads: int) -> None:
    import torch

    from salrun.models import ElmanRNN
    from salrun.sal import SAL
    from salrun.settings import RNNSettings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ElmanRNN(1, 1, RNNSettings(hidden=512))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    sal = SAL(model) if use_sal else None
    x, y = torch.randn(300, 64, 1), torch.randn(64, 1)
    before = _vm_hwm_kib()
    for _ in range(3):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if sal is not None:
            sal.step()
    peak = _vm_hwm_kib()
    print(json.dumps({"before_kib": before, "peak_kib": peak}))


def peak_rss(args) -> list[dict]:
    runs = {}
    for use_sal in (False, True):
        out = subprocess.run([PYTHON, __file__, "--child-rss", str(int(use_sal)), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        runs[use_sal] = json.loads(out.stdout.strip().splitlines()[-1])
    base, sal = runs[False], runs[True]
    ratio = sal["peak_kib"] / base["peak_kib"]
    grow_base = base["peak_kib"] - base["before_kib"]
    grow_sal = sal["peak_kib"] - sal["before_kib"]
    row = {"benchmark": "peak_rss", "case": "bptt lag 300 hidden 512 batch 64", "baseline_s": "",
           "measured_s": "", "ratio": ratio, "target": "<=1.20", "met": _met(ratio, "<=1.20"),
           "note": f"peak RSS {base['peak_kib'] / 1024:.0f} -> {sal['peak_kib'] / 1024:.0f} MiB; "
                   f"above the set-up: {grow_base / 1024:.0f} -> {grow_sal / 1024:.0f} MiB "
                   f"({grow_sal / max(grow_base, 1):.2f}x)"}
    _print_row(row)
    return [row]


# -- Lyapunov estimation ----------------------------------------------------------------------

def lyapunov_bench(args) -> list[dict]:
    import math

    import torch

    from salrun.lyapunov import lyapunov_spectrum, max_lyapunov, max_lyapunov_ensemble

    n, batch, transient, steps = 200, 8, 100, 400
    gen = torch.Generator().manual_seed(0)
    w_hh = torch.randn(n, n, generator=gen) * 1.5 / math.sqrt(n)
    w_ih, bias = torch.zeros(n, 0), 0.1 * torch.randn(n, generator=gen)
    h = torch.rand(batch, n, generator=gen) * 2 - 1

    def estimator():
        max_lyapunov(w_hh, w_ih, bias, h, None, transient, steps, generator=gen)

    def bare_loop():  # only the products the estimate needs: step, Jacobian-vector product, renormalise
        x, v, w_t = h, torch.randn(batch, n, generator=gen), w_hh.T
        drive = bias.expand(batch, -1)
        with torch.no_grad():
            for _ in range(transient + steps):
                x = torch.tanh(torch.addmm(drive, x, w_t))
                v = (1 - x * x) * (v @ w_t)
                v = v / v.norm(dim=1, keepdim=True)

    times = alternate({"bare": bare_loop, "mle": estimator}, repeats=args.repeats, warmup=1)
    rows = [ratio_row("mle_vs_bare_loop", f"hidden {n}, {batch} trajectories, {transient + steps} steps", times,
                      "bare", "mle", "<=1.50", "max_lyapunov / bare torch loop of the same products")]
    _print_row(rows[-1])

    k = 10

    def spectrum():
        lyapunov_spectrum(w_hh, w_ih, bias, h, None, transient, steps, k, generator=gen)

    def bare_qr_loop():  # the same products: step, k Jacobian-vector products, QR, log |diag R|
        x, w_t = h, w_hh.T
        q = torch.linalg.qr(torch.randn(batch, n, k, generator=gen)).Q
        drive = bias.expand(batch, -1)
        total = torch.zeros(batch, k)
        with torch.no_grad():
            for t in range(transient + steps):
                x = torch.tanh(torch.addmm(drive, x, w_t))
                q, r = torch.linalg.qr((1 - x * x)[:, :, None] * (w_hh @ q))
                if t >= transient:
                    total += torch.diagonal(r, dim1=-2, dim2=-1).abs().log()

    times = alternate({"bare": bare_qr_loop, "spectrum": spectrum}, repeats=args.repeats, warmup=1)
    rows.append(ratio_row("spectrum_vs_bare_loop", f"top {k} by QR, hidden {n}, {batch} trajectories, "
                          f"{transient + steps} steps", times, "bare", "spectrum", "",
                          "lyapunov_spectrum / bare torch loop of the same products and QR"))
    _print_row(rows[-1])

    members, n_e = 20, 100
    weights = torch.randn(members, n_e, n_e, generator=gen) * 1.5 / math.sqrt(n_e)
    biases = 0.1 * torch.randn(members, n_e, generator=gen)
    starts = torch.rand(members, batch, n_e, generator=gen) * 2 - 1
    empty = torch.zeros(members, n_e, 0)

    def sequential():
        for e in range(members):
            max_lyapunov(weights[e], empty[e], biases[e], starts[e], None, transient, steps, generator=gen)

    def batched():
        max_lyapunov_ensemble(weights, empty, biases, starts, None, transient, steps, generator=gen)

    times = alternate({"sequential": sequential, "batched": batched}, repeats=max(3, args.repeats // 2), warmup=1)
    speedup = [s / b for s, b in zip(times["sequential"], times["batched"])]
    row = {"benchmark": "ensemble_speedup", "case": f"{members} seeds, hidden {n_e}, {batch} trajectories",
           "baseline_s": statistics.median(times["sequential"]), "measured_s": statistics.median(times["batched"]),
           "ratio": statistics.median(speedup), "target": ">=5", "note": "20 sequential MLE runs / one batched pass"}
    row["met"] = _met(row["ratio"], ">=5")
    _print_row(row)
    return rows + [row]


# -- CLI start-up -----------------------------------------------------------------------------

CHECK_TORCH = ("import sys, runpy; sys.argv = ['salrun'] + sys.argv[1:]\n"
               "try:\n    runpy.run_module('salrun', run_name='__main__')\n"
               "except SystemExit:\n    pass\n"
               "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'TORCH_NOT_IMPORTED', file=sys.stderr)")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_startup(args) -> list[dict]:
    rows = []
    cmd = salrun_command()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("salrun --help", ["--help"]),
                 ("salrun train model.depth=0 (bad input, exit 2)", ["train", "model.depth=0", "--out", f"{tmp}/bad"]),
                 ("salrun sweep --launcher nope (bad input, exit 2)", ["sweep", "--launcher", "nope"])]
        for case, argv in cases:
            limit = 0.5 if argv == ["--help"] else 1.0  # a bad input may take Hydra's compose (issue 15)
            walls, cpus = [], []
            for _ in range(args.repeats):
                before = _children_cpu()
                start = time.perf_counter()
                subprocess.run(cmd + argv, capture_output=True, cwd=tmp)
                walls.append(time.perf_counter() - start)
                cpus.append(_children_cpu() - before)
            probe = subprocess.run([PYTHON, "-c", CHECK_TORCH, *argv], capture_output=True, text=True, cwd=tmp)
            torch_loaded = "TORCH_IMPORTED" in probe.stderr
            wall = statistics.median(walls)
            row = {"benchmark": "cli_startup", "case": case, "baseline_s": "", "measured_s": wall, "ratio": "",
                   "target": f"<={limit} s", "met": "yes" if wall <= limit and not torch_loaded else "NO",
                   "note": ("torch imported!" if torch_loaded else "torch not imported")
                   + f"; CPU time (user+sys) {statistics.median(cpus):.2f} s: wall less the wait for a busy core"}
            rows.append(row)
            _print_row(row)
        rows.append(grid_validation(args, cmd, tmp))
        walls = []
        for i in range(max(2, args.repeats // 2)):
            start = time.perf_counter()
            subprocess.run(cmd + ["train", "train.steps=1", "train.log_every=1", "threads=1", "--quiet",
                                  "--out", f"{tmp}/first{i}"], capture_output=True, cwd=tmp, check=True)
            walls.append(time.perf_counter() - start)
        row = {"benchmark": "cli_startup", "case": "salrun train train.steps=1 (time to first step, incl. exit)",
               "baseline_s": "", "measured_s": statistics.median(walls), "ratio": "", "target": "", "met": "",
               "note": "deep_ffn preset; includes torch + Hydra import, model build, one step, run folder"}
        rows.append(row)
        _print_row(row)
    return rows


GRID = ["experiment=paper_long_lag", "task.lag=300,200,100,50", "task=lag_sign,adding",
        "method=none,sal,spectral,orthogonal,critical,flossing", "++method.rho=1.1", "seed=0,1,2,3,4"]


def grid_validation(args, cmd, tmp) -> dict:
    """`salrun sweep` checks every point of a 240-job grid before anything runs: Hydra composes
    once per set of group choices (12 here), the other overrides are applied per job. Timed
    end to end with a bad seed in the last 48 jobs (exit 2 after composing all 240 and checking 193)."""
    bad = [o.replace("seed=0,1,2,3,4", "seed=0,1,2,3,-1") for o in GRID]
    bad = [bad[-1], *bad[:-1]]  # the first override varies slowest: the bad seed comes last
    walls = []
    for i in range(max(2, args.repeats // 2)):
        start = time.perf_counter()
        result = subprocess.run(cmd + ["sweep", *bad, "--out", f"{tmp}/grid{i}"], capture_output=True, text=True,
                                cwd=tmp)
        walls.append(time.perf_counter() - start)
        assert result.returncode == 2 and "seed" in result.stderr, result.stderr
    wall = statistics.median(walls)
    row = {"benchmark": "grid_validation", "case": "salrun sweep of 240 jobs (" + " ".join(GRID) + "), "
           "bad seed in the last 48 (exit 2)", "baseline_s": "", "measured_s": wall, "ratio": "",
           "target": "<=10 s", "met": _met(wall, "<=10"), "note": "includes Python, Hydra and the CLI start-up"}
    _print_row(row)
    return row


# -- logging and checkpoints ------------------------------------------------------------------

def logging_cost(args) -> list[dict]:
    """The share of a long run's wall time spent on logging (per-layer metrics, rows appended
    to metrics.csv) and checkpoints, and apart from it the test-set evaluation at each log:
    `salrun train experiment=paper_long_lag` for 20,000 steps (2,000 with --quick), in-process,
    with the job layer's functions timed."""
    from salrun import engines, jobs, training
    from salrun.launch import compose
    from salrun.results import RunWriter

    steps = 2000 if args.quick else 20000
    spent = {"layer_metrics": 0.0, "evaluate": 0.0, "checkpoint": 0.0, "append": 0.0}
    # what the one loop calls: the engine's per-layer metrics and evaluation, the run's checkpoints
    where = {"layer_metrics": engines, "evaluate": engines.SingleEngine, "checkpoint": training.Run}
    originals = {name: getattr(owner, name) for name, owner in where.items()}
    flush = RunWriter.flush_metrics

    def timed(name, function):
        def call(*a, **k):
            start = CLOCK()
            try:
                return function(*a, **k)
            finally:
                spent[name] += CLOCK() - start
        return call

    def timed_flush(self, sync=False):  # sync: inside checkpoint, timed there; else the rows of evaluate
        return timed("append", flush)(self, sync) if not sync else flush(self, sync)

    cfg = compose("train", ["experiment=paper_long_lag", f"train.steps={steps}", f"threads={args.threads}"])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, function in originals.items():
                setattr(where[name], name, timed(name, function))
            RunWriter.flush_metrics = timed_flush
            start = CLOCK()
            jobs.run_job("train", cfg, Path(tmp) / "run")
            wall = CLOCK() - start
            rows_logged = sum(1 for _ in open(Path(tmp) / "run" / "metrics.csv")) - 1
        finally:
            for name, function in originals.items():
                setattr(where[name], name, function)
            RunWriter.flush_metrics = flush
    logging = spent["layer_metrics"] + spent["checkpoint"] + spent["append"]
    evaluation = spent["evaluate"] - spent["append"]  # evaluate appends its rows: that part is logging
    case = f"paper_long_lag, {steps} steps (log every 50, checkpoint every 100), {rows_logged} rows"
    rows = [{"benchmark": "logging_share", "case": case, "baseline_s": wall, "measured_s": logging,
             "ratio": logging / wall, "target": "<=0.03", "met": _met(logging / wall, "<=0.03"),
             "note": f"per-layer metrics {spent['layer_metrics']:.2f} s, appending rows {spent['append']:.2f} s, "
                     f"checkpoints {spent['checkpoint']:.2f} s; baseline_s: the whole run (set-up included)"},
            {"benchmark": "test_evaluation_share", "case": case, "baseline_s": wall, "measured_s": evaluation,
             "ratio": evaluation / wall, "target": "", "met": "",
             "note": "the test set (1000 sequences of 301 steps) at every log: measurement, not logging"},
            {"benchmark": "evaluation_and_logging_share", "case": case, "baseline_s": wall,
             "measured_s": evaluation + logging, "ratio": (evaluation + logging) / wall, "target": "<=0.05",
             "met": _met((evaluation + logging) / wall, "<=0.05"), "note": "the two rows above together (issue 13)"}]
    for row in rows:
        _print_row(row)
    return rows


# -- sweeps -----------------------------------------------------------------------------------

def sweep_bench(args) -> list[dict]:
    steps = 150 if args.quick else 300
    cmd = salrun_command()
    times: dict[str, list[float]] = {"basic": [], "joblib": []}
    start_up: dict[str, float] = {}

    def sweep(launcher: str, job_steps: int, folder: str) -> float:
        # basic: one thread, like each joblib job (cores / n_jobs = 1 here): the ratio is the launcher's
        # parallelism, not torch's intra-op threads (2 threads on a busy shared core pair slow a small
        # net down several-fold and would inflate it)
        extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["threads=1"]
        start = time.perf_counter()
        subprocess.run(cmd + ["sweep", "seed=0,1,2,3", f"train.steps={job_steps}", f"train.log_every={job_steps}",
                              "--launcher", launcher, "--out", folder, "--quiet", *extra],
                       capture_output=True, cwd=tmp, check=True)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        for launcher in ("basic", "joblib"):  # the fixed cost: the same sweep with 1-step jobs
            start_up[launcher] = sweep(launcher, 1, f"{tmp}/{launcher}_start")
        for r in range(1 if args.quick else 2):
            for launcher in ("basic", "joblib"):
                times[launcher].append(sweep(launcher, steps, f"{tmp}/{launcher}{r}"))
    speedup = statistics.median([b / j for b, j in zip(times["basic"], times["joblib"])])
    case = f"4 deep_ffn jobs x {steps} steps, joblib n_jobs=2 vs basic"
    row = {"benchmark": "sweep_speedup", "case": case,
           "baseline_s": statistics.median(times["basic"]), "measured_s": statistics.median(times["joblib"]),
           "ratio": speedup, "target": ">=1.7", "met": _met(speedup, ">=1.7"),
           "note": "basic (threads=1) / joblib wall time (each joblib job: threads = cores / n_jobs)"}
    work = {name: statistics.median(t) - start_up[name] for name, t in times.items()}
    marginal = {"benchmark": "sweep_speedup_without_start_up", "case": case + ", 1-step sweep subtracted",
                "baseline_s": work["basic"], "measured_s": work["joblib"],
                "ratio": work["basic"] / work["joblib"] if work["joblib"] > 0 else "", "target": "", "met": "",
                "note": f"start-up (same sweep, 1-step jobs): basic {start_up['basic']:.1f} s, "
                        f"joblib {start_up['joblib']:.1f} s (each worker imports torch and Hydra)"}
    _print_row(row)
    _print_row(marginal)
    return [row, marginal]


# -- the memory preflight's estimate against the measured peak RSS -------------------------------

# Every preset for a few steps (the peak comes with the first evaluation and checkpoint), then
# four scaled up so that the estimate's terms, not the runtime, make the peak.
MEMORY_CASES = [
    ("train", ["experiment=deep_ffn", "train.steps=2"]),
    ("train", ["experiment=paper_deep_ffn", "train.steps=2"]),
    ("train", ["experiment=long_lag", "train.steps=2"]),
    ("train", ["experiment=paper_long_lag", "train.steps=2"]),
    ("lyapunov", ["experiment=chaos", "lyapunov.sal_steps=10"]),
    ("lyapunov", ["experiment=paper_chaos", "lyapunov.sal_steps=10"]),
    ("train", ["experiment=deep_ffn", "train.steps=2", "train.batch_size=100000"]),
    ("train", ["experiment=long_lag", "train.steps=2", "task.test_size=20000"]),
    ("train", ["experiment=long_lag", "train.steps=2", "train.batch_size=50000"]),
    ("lyapunov", ["experiment=chaos", "lyapunov.sal_steps=10", "model.hidden=2000"]),
]
MEMORY_LIMIT = 6_000_000_000  # address space of each measured run: a wrong case fails, the machine lives


def _limit_address_space() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def memory_estimate(args) -> list[dict]:
    """salrun.memory's estimate against the peak RSS of the same run, measured in a child
    (os.wait4 gives that child's own ru_maxrss). Target: within 2x either way."""
    from salrun.launch import compose
    from salrun.memory import estimate, total
    from salrun.settings import job_settings

    rows = []
    for command, overrides in MEMORY_CASES:
        overrides = [*overrides, f"threads={args.threads}"]
        estimated = total(estimate(job_settings(command, compose(command, overrides))))
        with tempfile.TemporaryDirectory() as tmp:
            process = subprocess.Popen([*salrun_command(), command, *overrides, "--out", f"{tmp}/run", "--quiet"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                                       preexec_fn=_limit_address_space)
            _, status, usage = os.wait4(process.pid, 0)
        peak = usage.ru_maxrss * 1024
        ratio = estimated / peak
        row = {"benchmark": "memory_estimate", "case": f"{command} {' '.join(overrides[:-1])}", "baseline_s": "",
               "measured_s": "", "ratio": ratio, "target": "0.5-2", "met": "yes" if 0.5 <= ratio <= 2 else "NO",
               "note": f"estimate {estimated / 1e9:.2f} GB, peak RSS {peak / 1e9:.2f} GB"
                       + ("" if os.waitstatus_to_exitcode(status) == 0 else ", the run FAILED")}
        _print_row(row)
        rows.append(row)
    return rows


# -- driver -----------------------------------------------------------------------------------

BENCHMARKS = {"loops": reference_loops, "ensemble": ensemble_train, "sal": sal_overhead, "rss": peak_rss, "lyapunov": lyapunov_bench, "cli": cli_startup,
              "sweep": sweep_bench, "peers": peer_cost, "logging": logging_cost}
BENCHMARKS["memory"] = memory_estimate
BENCHMARKS["ensemble_gpu"] = ensemble_gpu  # rows only on a CUDA GPU
FIELDS = ["benchmark", "case", "baseline_s", "measured_s", "ratio", "target", "met", "note"]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _print_row(row: dict) -> None:
    print(" | ".join(_fmt(row.get(k, "")) for k in FIELDS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a shorter sweep")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the in-process timings")
    parser.add_argument("--repeats", type=int, default=0, help="repeats per figure (default 7, --quick 3)")
    parser.add_argument("--out", type=Path, default=HERE / "results.csv")
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--case", default="", help="SAL overhead: only the cases whose name contains this")
    parser.add_argument("--child-rss", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-ensemble-rss", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, default=None, metavar="CSV",
                        help="measure nothing: write CSV's table in markdown beside it (CSV with .md)")
    args = parser.parse_args()
    if args.render is not None:
        render(args.render)
        return
    if args.child_rss is not None:
        rss_child(bool(args.child_rss), args.threads)
        return
    if args.child_ensemble_rss is not None:
        ensemble_rss_child(args.child_ensemble_rss, args.threads)
        return
    args.repeats = args.repeats or (3 if args.quick else 7)
    global CLOCK
    CLOCK = time.process_time if args.threads == 1 else time.perf_counter
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    print(f"salrun benchmarks: torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"{args.repeats} repeats{' (quick)' if args.quick else ''}; in-process figures in "
          f"{'CPU' if CLOCK is time.process_time else 'wall'} seconds; load average {os.getloadavg()[0]:.1f}")
    print(" | ".join(FIELDS))
    rows = []
    for name in args.only or BENCHMARKS:
        rows += BENCHMARKS[name](args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in FIELDS})
    from salrun.jobs import source_commit

    made = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    text = markdown(rows) + f"\nMeasured on commit {source_commit() or 'not recorded'} by `{made.strip()}`.\n"
    args.out.with_suffix(".md").write_text(text)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')} in {time.perf_counter() - started:.0f} s")
    print(text, end="")


def markdown(rows: list[dict]) -> str:
    lines = ["| benchmark | case | baseline s | measured s | ratio | target | met | note |", "|" + "---|" * 8]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k, "")).replace("|", "\\|") for k in FIELDS) + " |")
    return "\n".join(lines) + "\n"


def render(path: Path) -> None:
    """`--render`: PATH's rows in markdown into PATH with .md; the CSV does not record its commit."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        sys.exit(f"run.py: error: --render {path}: {error.strerror or error}")
    if not rows or set(FIELDS) - set(rows[0]):
        sys.exit(f"run.py: error: --render {path}: not a benchmarks CSV (columns {', '.join(FIELDS)})")
    path.with_suffix(".md").write_text(markdown(rows) + "\nRendered from the committed "
                                       f"`{path.name}` (`python benchmarks/run.py --render {path}`); the "
                                       "commit it was measured on was not recorded then.\n")


if __name__ == "__main__":
    main()
