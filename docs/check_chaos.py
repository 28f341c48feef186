"""An independent check of the MLE that `salrun lyapunov` reports (docs/REPRODUCTION.md, claim 1).

For each lyapunov run folder (or every run of a sweep folder) it rebuilds
h_t = tanh(W_ih x_t + W_hh h_{t-1} + θ) from model.pt's weights alone, starts
fresh states uniform in ±1 (and fresh N(0, 1) input for a driven net), runs a
long transient and averages the log growth of a tangent vector over a long
window, in float64. Nothing of salrun is imported: this is its own loop.

    python docs/check_chaos.py outputs/reproduction/chaos_dense [...] \\
        [--transient 2000] [--steps 20000] [--trajectories 8] [--tolerance 0.02]
    python docs/check_chaos.py RUN --windows 100,200,400,1000,2000,5000 --transients 100,500

The first prints one markdown row per run: salrun's final MLE (± its std over
trajectories), this estimate (± its standard error) and their difference. The
second prints the convergence table of one run: the MLE for each transient
and window against the long estimate (the finite-time bias).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch


def load_net(run: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_hh (masked), W_ih and θ of a run folder's model.pt, in float64."""
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=False)["state_dict"]
    w_hh = state["weight_hh"].double()
    if state.get("mask") is not None:
        w_hh = w_hh * state["mask"].double()
    return w_hh, state["weight_ih"].double(), state["bias"].double()


def exponents_by_trajectory(net, transient: int, windows: list[int], trajectories: int, seed: int, k: int = 1,
                            keep: int = 0) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Per-trajectory top-k exponents (trajectories, k) over the first `w` steps after `transient`,
    for each w in `windows` (k tangent vectors, re-orthonormalised by QR every step), and the
    last `keep` states (keep, trajectories, n)."""
    w_hh, w_ih, bias = net
    gen = torch.Generator().manual_seed(seed)
    n, inputs = w_ih.shape
    h = torch.rand(trajectories, n, generator=gen, dtype=torch.float64) * 2 - 1
    q = torch.linalg.qr(torch.randn(trajectories, n, k, generator=gen, dtype=torch.float64)).Q
    log_growth = torch.zeros(trajectories, k, dtype=torch.float64)
    found, last = {}, []
    total = transient + max(windows)
    for t in range(total):
        u = bias + (w_ih @ torch.randn(inputs, trajectories, generator=gen, dtype=torch.float64)).T if inputs else bias
        h = torch.tanh(h @ w_hh.T + u)
        q, r = torch.linalg.qr((1 - h * h)[:, :, None] * (w_hh @ q))
        if t >= transient:
            log_growth += torch.diagonal(r, dim1=-2, dim2=-1).abs().log()
            if t - transient + 1 in windows:
                found[t - transient + 1] = log_growth / (t - transient + 1)
        if t >= total - keep:
            last.append(h)
    return found, torch.stack(last) if keep else h[None]


def mle_by_trajectory(net, transient: int, windows: list[int], trajectories: int, seed: int) -> dict[int, torch.Tensor]:
    """Per-trajectory MLE (trajectories,) for each window, as in `exponents_by_trajectory`."""
    found, _ = exponents_by_trajectory(net, transient, windows, trajectories, seed)
    return {w: exponents[:, 0] for w, exponents in found.items()}


def period(states: torch.Tensor, tolerance: float = 1e-6) -> int | None:
    """The smallest p with h_T = h_{T-p} (relative to the state's size) in every trajectory, if any."""
    end = states[-1]
    size = end.norm(dim=-1).clamp_min(1e-300)
    for p in range(1, len(states)):
        if bool(((states[-1 - p] - end).norm(dim=-1) <= tolerance * size).all()):
            return p
    return None


def attractor(mle: float, second: float, p: int | None, driven: bool, size: float, zero: float = 1e-3) -> str:
    """Name the attractor from the top two exponents and whether the state returns."""
    if driven:
        return "input-driven, contracting" if mle < -zero else "input-driven, " + ("chaotic" if mle > zero else "λ_1 = 0")
    if mle > zero:
        return "chaotic"
    if p == 1:
        return "fixed point h = 0" if size < 1e-6 else "fixed point"
    if p:
        return f"periodic, p = {p}"
    if mle < -zero:
        return "stable, no return ≤ 1000"
    return "quasi-periodic torus (λ_1 = λ_2 = 0)" if abs(second) <= zero else "quasi-periodic closed curve (λ_2 < 0)"


def runs_in(folder: Path) -> list[Path]:
    runs = [p.parent for p in folder.glob("*/model.pt")]
    return [folder] if (folder / "model.pt").is_file() else sorted(runs, key=lambda p: (len(p.name), p.name))


def describe(run: Path) -> str:
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    model, study = cfg["model"], cfg["lyapunov"]
    parts = [f"{cfg.get('experiment')}", f"N = {model['hidden']}"]
    if model.get("density", 1) < 1:
        parts.append(f"density {model['density']}")
    if study.get("input_size", 0):
        parts.append(f"{study['input_size']} inputs")
    if study.get("noise", 0.001) != 0.001:
        parts.append(f"kick {study['noise']:g}")
    if study.get("fresh_chunks"):
        parts.append("fresh chunks")
    return ", ".join(parts) + f", seed {cfg['seed']}"


def check(folders: list[Path], args) -> int:
    print(f"fresh states: {args.trajectories} trajectories, transient {args.transient}, window {args.steps}, float64; "
          "a return: h_T = h_(T-p) within 1e-6 in every trajectory, p ≤ 1000\n")
    print("| run | salrun final MLE ± std | long-window MLE ± s.e. | difference | within "
          f"{args.tolerance} | long-window λ_2 | attractor |\n|---|---|---|---|---|---|---|")
    failed = 0
    for run in (r for folder in folders for r in runs_in(folder)):
        summary = json.loads((run / "summary.json").read_text())
        reported, spread = summary["final"]["mle"], summary["final"].get("mle_std", float("nan"))
        net = load_net(run)
        found, states = exponents_by_trajectory(net, args.transient, [args.steps], args.trajectories, args.seed, k=2,
                                                keep=1001)
        mle, second = found[args.steps][:, 0], found[args.steps][:, 1]
        ours, se = float(mle.mean()), float(mle.std() / math.sqrt(len(mle)))
        ok = abs(reported - ours) <= args.tolerance
        failed += not ok
        kind = attractor(ours, float(second.mean()), period(states), net[1].shape[1] > 0,
                         float(states[-1].pow(2).mean().sqrt()))
        print(f"| {describe(run)} | {reported:+.4f} ± {spread:.4f} | {ours:+.4f} ± {se:.4f} | "
              f"{reported - ours:+.4f} | {'yes' if ok else 'NO'} | {float(second.mean()):+.4f} | {kind} |")
    return 1 if failed else 0


def convergence(run: Path, args) -> int:
    net = load_net(run)
    reference = mle_by_trajectory(net, args.transient, [args.steps], args.trajectories, args.seed)[args.steps]
    print(f"{describe(run)}: long estimate {float(reference.mean()):+.5f} ± {float(reference.std()) / math.sqrt(len(reference)):.5f} "
          f"(transient {args.transient}, window {args.steps}, {args.trajectories} trajectories)\n")
    windows = [int(w) for w in args.windows.split(",")]
    print("| transient | window | MLE | std over trajectories | bias (MLE − long estimate) |\n|---|---|---|---|---|")
    for transient in (int(t) for t in args.transients.split(",")):
        found = mle_by_trajectory(net, transient, windows, args.trajectories, args.seed + 1)
        for w in windows:
            mle = found[w]
            print(f"| {transient} | {w} | {float(mle.mean()):+.5f} | {float(mle.std()):.5f} | "
                  f"{float(mle.mean() - reference.mean()):+.5f} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="lyapunov run folders or sweep folders")
    parser.add_argument("--transient", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=20000, help="the long window")
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--windows", help="comma list: print the convergence table of the first run instead")
    parser.add_argument("--transients", default="100,500")
    args = parser.parse_args()
    torch.set_num_threads(1)
    missing = [f for f in args.folders if not runs_in(f)]
    if missing:
        print(f"error: {missing[0]} holds no model.pt (give lyapunov run or sweep folders)", file=sys.stderr)
        return 2
    if args.windows:
        return convergence(runs_in(args.folders[0])[0], args)
    return check(args.folders, args)


if __name__ == "__main__":
    sys.exit(main())
