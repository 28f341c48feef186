"""Issue 19: what happens inside a deep SAL net when it loses what it learned (docs/DEPTH.md).

    python docs/depth_study.py OUT_DIR [OVERRIDES...] [--every K] [--experiment PRESET]
    python docs/depth_study.py --table SWEEP_DIR [SWEEP_DIR...] [--window 5]
    python docs/depth_study.py --compare FIGURE.png STUDY_DIR [STUDY_DIR...]
    python docs/depth_study.py --mechanism STUDY_DIR [STUDY_DIR...]
    python docs/depth_study.py --drift FIGURE.png STUDY_DIR [STUDY_DIR...]

The second form tabulates sweeps: per variant (the overrides less the seed), the runs that
succeed judged on the mean of the last `window` evaluations (with a Wilson 95% interval), those
that reached success at some evaluation and lost it by the end, and those that dip below it
inside the window, and the medians over the runs of the final ln RMS(s) and of the first
layer's gradient over the readout's (log10), at the last step.

The third form draws the studies' sums over layers of ln RMS(s), of the random-direction gain
and of the tangent gain, beside their test accuracy, one column per study.

The fourth prints, per study, the medians over the logged steps from step 300 on (after
the climb) of those sums, of Adam's and SAL's steps, and the gate.

The fifth draws, per study over training, what differs as a deep run drifts: test accuracy, the
tangent gain summed over layers, the test logits' change by Adam's and SAL's step, the gate's
flips per step, s̄'s distance from target, and the first layer's gradient over the readout's;
and prints those series.

The first form trains one run exactly as `salrun train experiment=PRESET OVERRIDES` would (the job
layer's own network, optimizer and step; PRESET paper_deep_ffn unless given), and every K steps
also records, per hidden layer:

- `rms`: ln RMS(s) over neurons and batch (what SAL's average tracks);
- `meanlog`: mean of ln s (the geometric-mean form of SCIENCE.md §1);
- `gain`: the typical log gain of the layer's Jacobian diag(f')·W on a random direction,
  E ln(‖Jδ‖/‖δ‖), and `chain`: the log gain of the whole stack on one random tangent vector
  per sample (forward mode), what the input's and the gradient's survival follows;
  `tangent`: that chain's gain in layer l (on the direction the layers below handed it);
- `spread`: ln of the ratio of the batch's state spread after and before the layer;
- `grad`: ‖∂L/∂W_l‖;
- `adam`, `sal`: the change of ln RMS(s) that Adam's step and SAL's step made, on the same batch;
- `adam_step`, `sal_step`: RMS of each one's weight change per layer;
- `gate`: the fraction of neurons whose s̄ is below target (climbing);
- `drift`: RMS of W_l minus its value at step 1 (how far the layer has moved in all);
- `flips`: the fraction of neurons whose gate changed direction from one step to the next,
  averaged over the steps since the last record (every step is counted, not only the recorded);
- `sbar_dev`: RMS over neurons of ln(s̄_j/target), how far SAL's average sits from target;

and for the readout: `readout` (‖W_out‖_F), `readout_step` (RMS of its change by Adam's step),
`top_spread` (ln of the batch's RMS distance from its mean at the top hidden layer), `margin`
(mean over the test set of the correct logit minus the largest other one), and `out_adam`,
`out_sal`: the RMS change of the test set's logits made by Adam's step and by SAL's step.

It writes OUT_DIR/study.csv (step, metric, layer, value) and OUT_DIR/study.png.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

import torch

from salrun import stats
from salrun.engines import SingleEngine
from salrun.launch import compose
from salrun.neurons import sensitivity
from salrun.settings import job_settings


@torch.no_grad()
def layer_stats(model, x: torch.Tensor, generator: torch.Generator, probe) -> dict[str, torch.Tensor]:
    """Per hidden layer: ln RMS(s), mean ln s, typical log gain on a random δ; and the chain's log gain.
    (The probe is paused: SAL must see the training forward only.)"""
    with probe.paused():
        return _layer_stats(model, x, generator)


def _layer_stats(model, x, generator):
    hidden = model.hidden_linears()
    h, delta = x, torch.randn(x.shape, generator=generator)
    delta = delta / delta.norm(dim=1, keepdim=True)
    chain_log = torch.zeros(x.shape[0])
    rms, meanlog, gain, tangent, spread = [], [], [], [], []
    for linear in hidden:
        o = torch.tanh(linear(h))
        s = sensitivity(o, [linear.weight])
        rms.append(0.5 * torch.log(s.square().mean()))
        meanlog.append(torch.log(s.clamp_min(1e-30)).mean())
        slope = 1 - o * o
        if linear is not hidden[0]:  # square layers: a fresh random direction per sample
            r = torch.randn(h.shape, generator=generator)
            r = r / r.norm(dim=1, keepdim=True)
            gain.append(torch.log((slope * (r @ linear.weight.T)).norm(dim=1).clamp_min(1e-30)).mean())
        else:
            gain.append(torch.tensor(float("nan")))
        delta = slope * (delta @ linear.weight.T)
        norm = delta.norm(dim=1, keepdim=True).clamp_min(1e-30)
        chain_log += torch.log(norm[:, 0])
        tangent.append(torch.log(norm[:, 0]).mean())
        # how the batch's spread of states changes through the layer: the input's signal, not a tangent
        spread.append(torch.log((o - o.mean(0)).norm() / (h - h.mean(0)).norm().clamp_min(1e-30)))
        delta = delta / norm
        h = o
    return {"rms": torch.stack(rms), "meanlog": torch.stack(meanlog), "gain": torch.stack(gain), "tangent": torch.stack(tangent),
            "spread": torch.stack(spread),
            "chain": chain_log.mean()}


def succeeds(summary: dict):
    """The success test of a run's summary: its metric against the task's threshold, in the
    direction that beats chance (accuracy up; mse and nmse down)."""
    threshold = summary["threshold"]
    return (lambda value: value >= threshold) if summary["chance"] < threshold else (lambda value: value < threshold)


def table(sweeps: list[Path], window: int) -> str:
    import json

    import pandas as pd
    import yaml

    runs: dict[str, list[dict]] = {}
    for sweep in sweeps:
        for folder in sorted((f for f in sweep.iterdir() if (f / "summary.json").is_file()), key=lambda f: f.name):
            summary = json.loads((folder / "summary.json").read_text())
            if summary["status"] == "interrupted":  # stopped by hand: not a result
                continue
            overrides = yaml.safe_load((folder / "overrides.yaml").read_text()) or []
            variant = " ".join(o for o in overrides if not o.startswith(("seed=", "threads=")))
            metrics = pd.read_csv(folder / "metrics.csv")
            curve = metrics[metrics.metric == summary["metric"]].sort_values("step").value.to_numpy()
            test = succeeds(summary)
            last = curve[-window:]
            ok = summary["status"] == "ok" and test(last.mean())
            final = metrics[metrics.step == metrics.step.max()]
            grads = final[final.metric == "grad_norm"].sort_values("layer").value.to_numpy()
            runs.setdefault(variant, []).append({
                "log_s": float(final[final.metric == "log_sensitivity"].value.iloc[0]),
                "grad_ratio": math.log10(max(grads[0], 1e-300) / grads[-1]),
                "seed": summary["seed"], "success": ok, "reached": any(map(test, curve)),
                "dips": ok and not all(map(test, last)), "window": float(last.mean()), "status": summary["status"],
                "wall": summary["wall_seconds"]})
    lines = [f"| variant | runs | success (last {window} evals) | Wilson 95% | reached, then lost | dips in window "
             f"| mean of last {window} | failed seeds | final ln RMS(s) | log10 ‖∂L/∂W_0‖/‖∂L/∂W_out‖ | wall s/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, rs in runs.items():
        n, k = len(rs), sum(r["success"] for r in rs)
        lo, hi = stats.wilson(k, n)
        lost = sum(r["reached"] and not r["success"] for r in rs)
        failed = ", ".join(str(r["seed"]) for r in rs if not r["success"]) or "-"
        windows = [r["window"] for r in rs]
        lines.append(f"| {variant or '(preset)'} | {n} | {k}/{n} | {lo:.2f}-{hi:.2f} | {lost} | "
                     f"{sum(r['dips'] for r in rs)} | {sum(windows) / n:.3f} (min {min(windows):.3f}) | {failed} | "
                     f"{statistics.median(r['log_s'] for r in rs):.3f} | "
                     f"{statistics.median(r['grad_ratio'] for r in rs):.1f} | "
                     f"{sum(r['wall'] for r in rs) / n:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--experiment", default="paper_deep_ffn", help="the preset the run starts from")
    parser.add_argument("--table", action="store_true", help="tabulate the sweep folders given instead")
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--mechanism", action="store_true", help="summarise the study folders given")
    parser.add_argument("--compare", action="store_true", help="draw the study folders given into OUT (a .png)")
    parser.add_argument("--drift", action="store_true", help="draw the studies' drift series into OUT (a .png)")
    args = parser.parse_args()
    if args.table:
        print(table([args.out, *map(Path, args.overrides)], args.window))
        return
    if args.mechanism:
        print(mechanism([args.out, *map(Path, args.overrides)]))
        return
    if args.compare:
        compare([Path(d) for d in args.overrides], args.out)
        return
    if args.drift:
        print(drift([Path(d) for d in args.overrides], args.out))
        return
    cfg = compose("train", [f"experiment={args.experiment}", "threads=1", *args.overrides])
    s = job_settings("train", cfg)
    engine = SingleEngine.build(s)
    task, net, optimizer = engine.task, engine.net, engine.optimizer
    x_test, y_test = task.test_set()
    model, sal = net.model, getattr(net.method, "sal", None)
    target = s.method.settings.target if sal is not None else 1.0
    probe_rng = torch.Generator().manual_seed(12345)
    hidden = model.hidden_linears()
    rows: list[tuple[int, str, int | str, float]] = []

    def log(step, name, values):
        values = values.tolist() if torch.is_tensor(values) else values
        if isinstance(values, list):
            rows.extend((step, name, i, v) for i, v in enumerate(values))
        else:
            rows.append((step, name, "", values))

    def weights():
        return torch.stack([l.weight.detach().clone() for l in hidden[1:]])

    readout, start = model.linears()[-1], weights()

    @torch.no_grad()
    def test_logits():
        with net.probe.paused():
            training = model.training
            model.eval()
            y = model(x_test)
            model.train(training)
        return y
    flips, flip_steps, last_gate = None, 0, None
    for step in range(1, s.root.train.steps + 1):
        record = step == 1 or step % args.every == 0
        model.train()
        net.probe.clear()
        x, y = task.train_batch(s.root.train.batch_size, net.generator)
        loss = task.loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if record:
            log(step, "grad", [float(l.weight.grad.norm()) for l in model.linears()])
            before, w0, r0 = layer_stats(model, x, probe_rng, net.probe), weights(), readout.weight.detach().clone()
            y0 = test_logits()
        optimizer.step()
        if record:
            after_adam, w1, y1 = layer_stats(model, x, probe_rng, net.probe), weights(), test_logits()
        net.method.after_step()
        if sal is not None and sal.averages:
            gate = torch.stack([a < target for a in sal.averages])
            if last_gate is not None:
                changed = (gate != last_gate).float().mean(1)
                flips = changed if flips is None else flips + changed
                flip_steps += 1
            last_gate = gate
        if record:
            after_sal, w2, y2 = layer_stats(model, x, probe_rng, net.probe), weights(), test_logits()
            log(step, "out_adam", float((y1 - y0).square().mean().sqrt()))
            log(step, "out_sal", float((y2 - y1).square().mean().sqrt()))
            for name in ("rms", "meanlog", "gain", "tangent", "spread"):
                log(step, name, before[name])
            log(step, "chain", float(before["chain"]))
            log(step, "adam", after_adam["rms"] - before["rms"])
            log(step, "sal", after_sal["rms"] - after_adam["rms"])
            log(step, "adam_step", (w1 - w0).square().mean((1, 2)).sqrt())
            log(step, "sal_step", (w2 - w1).square().mean((1, 2)).sqrt())
            log(step, "drift", (w2 - start).square().mean((1, 2)).sqrt())
            log(step, "readout", float(r0.norm()))
            log(step, "readout_step", float((readout.weight.detach() - r0).square().mean().sqrt()))
            if sal is not None and sal.averages:
                log(step, "gate", [float((a < target).float().mean()) for a in sal.averages])
                log(step, "sbar_dev", [float(torch.log(a / target).square().mean().sqrt()) for a in sal.averages])
                if flips is not None:
                    log(step, "flips", flips / flip_steps)
                    flips, flip_steps = None, 0
            with torch.no_grad():
                model.eval()
                prediction = model(x_test)
                top = x_test
                for linear in hidden:
                    top = torch.tanh(linear(top))
                log(step, "top_spread", float(torch.log((top - top.mean(0)).square().sum(1).mean().sqrt())))
                if prediction.shape[1] > 1 and y_test.dtype == torch.long:
                    right = prediction.gather(1, y_test[:, None])[:, 0]
                    log(step, "margin", float((right - prediction.scatter(1, y_test[:, None], -math.inf).max(1).values).mean()))
                log(step, "accuracy", float(task.evaluate(prediction, y_test)))
                log(step, "loss", float(loss))
            if step % 50 == 0:
                print(f"step {step}: accuracy {rows[-2][3]:.3f} chain {float(before['chain']):.2f}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "study.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "metric", "layer", "value"])
        writer.writerows(rows)
    plot(args.out / "study.csv", args.out / "study.png", " ".join(args.overrides))


def plot(table: Path, figure: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    d = pd.read_csv(table)

    def per_layer(name):
        return d[d.metric == name].pivot(index="layer", columns="step", values="value")

    def scalar(name):
        return d[d.metric == name].set_index("step").value

    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    ax = axes[0, 0]
    ax.plot(scalar("accuracy"), label="test accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.set_title("test accuracy")
    ax2 = ax.twinx()
    ax2.plot(scalar("chain"), color="C3", label="log gain of the stack")
    ax2.set_ylabel("ln ‖Jδ‖ through all layers", color="C3")
    for ax, name, panel in [(axes[0, 1], "rms", "ln RMS(s) per layer"), (axes[0, 2], "gain", "typical log gain per layer"),
                            (axes[1, 0], "grad", "log10 ‖∂L/∂W_l‖")]:
        m = per_layer(name)
        if name == "grad":
            m = m.clip(lower=1e-30).apply(lambda c: c.map(math.log10))
        im = ax.imshow(m.values, aspect="auto", origin="lower", cmap="coolwarm" if name != "grad" else "viridis",
                       extent=[m.columns.min(), m.columns.max(), 0, len(m)],
                       **({"vmin": -0.1, "vmax": 0.1} if name != "grad" else {}))
        fig.colorbar(im, ax=ax)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel("layer")
    ax = axes[1, 1]
    for name, label in [("rms", "ln RMS(s)"), ("meanlog", "mean ln s"), ("gain", "typical log gain")]:
        ax.plot(per_layer(name).mean(), label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title("layer mean over depth")
    ax.legend()
    ax = axes[1, 2]
    ax.plot(per_layer("adam").mean(), label="Adam's step")
    ax.plot(per_layer("sal").mean(), label="SAL's step")
    ax.set_title("change of ln RMS(s) per step, mean over layers")
    ax.legend()
    ax = axes[2, 0]
    ax.semilogy(per_layer("adam_step").mean(), label="Adam")
    ax.semilogy(per_layer("sal_step").mean(), label="SAL")
    ax.set_title("RMS weight change per step, mean over layers")
    ax.legend()
    ax = axes[2, 1]
    if (d.metric == "gate").any():
        ax.plot(per_layer("gate").mean(), label="mean over layers")
        ax.set_title("fraction of neurons climbing (s̄ < target)")
    ax = axes[2, 2]
    g = per_layer("grad")
    for step in [g.columns[0], *g.columns[len(g.columns) // 2:: max(1, len(g.columns) // 6)], g.columns[-1]]:
        ax.semilogy(g[step].clip(lower=1e-30), label=f"step {step}")
    ax.set_title("gradient profile over depth")
    ax.set_xlabel("layer")
    ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(figure, dpi=80)


def mechanism(studies: list[Path], since: int = 300) -> str:
    import pandas as pd

    header = ["study", "Σ ln RMS(s)", "Σ mean ln s", "Σ random-dir. gain", "Σ tangent gain", "Σ ln spread",
              "Adam Δ ln RMS(s)/layer", "SAL Δ ln RMS(s)/layer", "Adam ΔW RMS", "SAL ΔW RMS", "climbing",
              "evals < 0.9"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for study in studies:
        d = pd.read_csv(study / "study.csv")
        d = d[d.step >= since]

        def per_layer(name):
            return d[d.metric == name].pivot(index="step", columns="layer", values="value")

        def summed(name):  # layers 1…: layer 0's input is the 2-D data, not a layer below
            return f"{per_layer(name).iloc[:, 1:].sum(axis=1).median():.2f}"

        def mean(name, fmt=".1e"):
            return format(per_layer(name).mean(axis=1).median(), fmt) if (d.metric == name).any() else "-"

        accuracy = d[d.metric == "accuracy"].value
        lines.append("| " + " | ".join([study.name, *map(summed, ["rms", "meanlog", "gain", "tangent", "spread"]),
                                         mean("adam"), mean("sal"), mean("adam_step"), mean("sal_step"),
                                         mean("gate", ".2f"), f"{int((accuracy < 0.9).sum())}/{len(accuracy)}"]) + " |")
    return "\n".join(lines)


def compare(studies: list[Path], figure: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, axes = plt.subplots(2, len(studies), figsize=(4.5 * len(studies), 7), squeeze=False, sharey="row")
    for column, study in enumerate(studies):
        d = pd.read_csv(study / "study.csv")
        title = (study / "title.txt").read_text().strip() if (study / "title.txt").is_file() else study.name
        ax = axes[0, column]
        for name, label in [("rms", "Σ ln RMS(s_l)"), ("gain", "Σ random-direction log gain"),
                            ("tangent", "Σ tangent log gain (the signal's)"), ("spread", "Σ ln spread ratio")]:
            m = d[(d.metric == name) & (d.layer.astype(str) != "0")]
            ax.plot(m.groupby("step").value.sum(), label=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-40, 25)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax = axes[1, column]
        ax.plot(d[d.metric == "accuracy"].set_index("step").value)
        ax.axhline(0.9, color="k", lw=0.5, ls="--")
        ax.set_ylim(0.3, 1.0)
        ax.set_xlabel("step")
    axes[0, 0].set_ylabel("log gain of layers 1-300, summed")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].set_ylabel("test accuracy")
    fig.tight_layout()
    fig.savefig(figure, dpi=80)


def drift_series(study: Path):
    import pandas as pd

    d = pd.read_csv(study / "study.csv")

    def per_layer(name):
        return d[d.metric == name].pivot(index="step", columns="layer", values="value")

    def scalar(name):
        return d[d.metric == name].set_index("step").value

    grads = per_layer("grad")
    series = pd.DataFrame({
        "accuracy": scalar("accuracy"),
        "Σ tangent": per_layer("tangent").iloc[:, 1:].sum(axis=1),
        "Σ ln RMS(s)": per_layer("rms").iloc[:, 1:].sum(axis=1),
        "Σ ln spread": per_layer("spread").iloc[:, 1:].sum(axis=1),
        "logits Δ Adam": scalar("out_adam"), "logits Δ SAL": scalar("out_sal"),
        "ΔW Adam": per_layer("adam_step").mean(axis=1), "ΔW SAL": per_layer("sal_step").mean(axis=1),
        "log10 g0/gout": (grads.iloc[:, 0].clip(lower=1e-300) / grads.iloc[:, -1]).map(math.log10),
        "‖W_out‖": scalar("readout"), "margin": scalar("margin"),
    })
    if (d.metric == "flips").any():
        series["flips"] = per_layer("flips").mean(axis=1)
        series["s̄ dev"] = per_layer("sbar_dev").iloc[:, 1:].mean(axis=1)
    return series


def drift(studies: list[Path], figure: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("accuracy", "test accuracy"), ("Σ tangent", "Σ tangent log gain, layers 1-"),
              ("logits", "RMS change of the test logits per step"), ("flips", "gate flips per step (fraction)"),
              ("s̄ dev", "RMS ln(s̄/target) per layer"), ("log10 g0/gout", "log10 ‖∂L/∂W_0‖/‖∂L/∂W_out‖")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    text = []
    for study in studies:
        series = drift_series(study)
        title = (study / "title.txt").read_text().strip() if (study / "title.txt").is_file() else study.name
        text.append(f"{title}\n{series.to_string(float_format=lambda v: f'{v:.3g}')}")
        for ax, (name, label) in zip(axes.flat, panels):
            if name == "logits":
                line, = ax.semilogy(series["logits Δ SAL"], label=f"{title}: SAL's step")
                ax.semilogy(series["logits Δ Adam"], ls="--", color=line.get_color(), label=f"{title}: Adam's step")
            elif name in series:
                ax.plot(series[name], label=title)
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("step")
    axes[0, 0].axhline(0.9, color="k", lw=0.5, ls="--")
    axes[0, 0].legend(fontsize=7)
    axes[0, 2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(figure, dpi=80)
    return "\n\n".join(text)


if __name__ == "__main__":
    main()
