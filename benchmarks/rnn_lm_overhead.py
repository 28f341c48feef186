"""SAL's overhead on a word_language_model-style RNN: the ratio of step times with and without SAL.

The model and loop follow pytorch/examples' word_language_model (RNN_TANH): an embedding,
dropout, a 2-layer tanh nn.RNN (hidden 64), dropout, a linear decoder; truncated BPTT
(bptt 20, batch 16) with the hidden state carried over and detached, gradient clipping and
plain SGD, and nn.RNN's dropout between its layers (word_language_model's default; 0.2 here).
One thread. Four copies of one model train in short blocks, interleaved so that load from
other work hits them alike: without SAL, with SAL's recording alone (its forward: the layers
run one at a time; no sal.step()), with SAL, with SAL's step written out for this model alone in the
fewest torch ops we found (`written_out`, checked first to move the weights as salrun's step does:
the floor of SAL at every step), and with SAL's cheaper estimator (update_every=m:
an update at one step in m, at m times the rate; the passes between are not recorded). Each round of blocks
gives ratios of CPU times; the ratios printed are their medians (on a shared machine one run's
ratio still moves by a few %: the quartiles say by how much). Then where SAL's step goes: its time
in the loop, the same step repeated with the caches warm, and its products oᵀx alone (`step_anatomy`).

    OMP_NUM_THREADS=1 python benchmarks/rnn_lm_overhead.py [--blocks 60] [--steps 10] [--every 2] [--compile] [--out FILE.md]

`--out` also writes the result as a markdown block, with the commit and the command, which
docs/LIBRARY.md includes (`salrun report --fill`).
"""
import argparse
import copy
import os
import shutil
import statistics
import sys
import time
from unittest import mock
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from salrun import SAL


class RNNModel(nn.Module):
    """word_language_model's RNNModel for RNN_TANH, as written there (model.py)."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float = 0.5,
                 tie_weights: bool = False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity="tanh", dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.nhid, self.nlayers = nhid, nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return weight.new_zeros((self.nlayers, bsz, self.nhid))


LOOPS = {"none": "without SAL", "recorded": "SAL's recording alone (no sal.step())", "sal": "with SAL",
         "written": "with SAL's step written out (the floor)", "every": "with SAL, update_every={every}"}


def written_out(sal: SAL, compile: bool = False):
    """SAL's step written out for this model alone (nn.RNN layers into tanh; the log objective, the
    arithmetic average, the one-sided gate), in the fewest torch ops we found and none of salrun's
    Python: all four weights' row norms in one product, the recurrent product in two parts rather than
    a copy of the previous states. It reads what salrun's recording holds (`sal.layers()`), as
    salrun's step does; method=none's step plus this is the floor of SAL at every step.
    compile=True: its tensor work (`update`) compiled by torch.compile, which fuses the small
    per-neuron operations into a few loops."""
    cfg = sal.settings
    if (cfg.objective, cfg.average, cfg.gate, cfg.update_every, cfg.layer_target, cfg.rnn_inputs) != (
            "log", "arithmetic", "one_sided", 1, False, "all"):
        raise SystemExit(f"the written-out SAL step covers the default settings, not {cfg}")
    kept: dict = {}

    def update(weights, biases, firsts, rests, drives, scratch, average, beta: float) -> None:
        stacked = torch.stack(weights)  # (2 per layer, neurons, fan-in): one shape here
        norm_sq = torch.linalg.vecdot(stacked, stacked).view(len(rests), 2, -1).sum(1).view(-1)
        products, squares, sums = [], [], []
        for first, rest, drive, square in zip(firsts, rests, drives, scratch):
            batch = first.shape[0]
            products.append(rest.T @ drive)                                            # oᵀx
            products.append((rest[batch:].T @ rest[:-batch]).addmm_(rest[:batch].T, first))  # oᵀh_prev
            squares.append(torch.square(rest, out=square).sum(0))
            sums.append(rest.sum(0))
        rows = rests[0].shape[0]
        mean_s = torch.rsub(torch.cat(squares), 1.0, alpha=1 / rows).mul_(norm_sq.sqrt())
        average.mul_(beta).add_(mean_s, alpha=1 - beta)  # beta 0 at the first step: the average is mean_s
        rate = (average < cfg.target).to(mean_s.dtype).mul_(cfg.lr)
        radial = (rate / norm_sq)[:, None].split(norm_sq.shape[0] // len(rests))
        data = rate.mul_(-2.0 / rows)
        columns = data[:, None].split(len(data) // len(rests))
        torch._foreach_addcmul_(weights, weights, [r for r in radial for _ in range(2)])
        torch._foreach_addcmul_(weights, products, [c for c in columns for _ in range(2)])
        bias = (data * torch.cat(sums)).split(len(data) // len(rests))
        torch._foreach_add_(biases, [b for b in bias for _ in range(2)], alpha=0.5)

    run = torch.compile(update, dynamic=False) if compile else update

    @torch.no_grad()
    def step() -> None:
        layers = sal.layers()
        weights = [w for layer in layers for w in layer.weights]
        biases = [b for layer in layers for b in layer.bias]
        segments = [layer.segments[0] for layer in layers]
        firsts = [states.first for states, _ in segments]
        rests = [states.rest.flatten(0, 1) for states, _ in segments]
        drives = [drive.flatten(0, 1) for _, drive in segments]
        scratch = [kept.setdefault((i, rest.shape), torch.empty_like(rest)) for i, rest in enumerate(rests)]
        beta = cfg.beta if "average" in kept else 0.0  # the first step's average is its own mean_s
        average = kept.setdefault("average", weights[0].new_zeros(sum(w.shape[0] for w in weights[::2])))
        run(weights, biases, firsts, rests, drives, scratch, average, beta)
        sal.probe.clear()
    return step


def check_written_out(make_model, steps: int = 20, compile: bool = False) -> None:
    """`written_out` moves the weights as salrun's step does: two copies of one model without dropout,
    the same inputs, `steps` steps of each."""
    torch.manual_seed(1)
    model = make_model()
    twin = copy.deepcopy(model)
    sal, written = SAL(model), SAL(twin)
    written_step = written_out(written, compile)
    source = torch.randint(model.ntoken, (20, 4))
    for _ in range(steps):
        model(source, model.init_hidden(4)), twin(source, twin.init_hidden(4))
        sal.step(), written_step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-6):
            raise SystemExit(f"the written-out SAL step no longer matches salrun's ({name}): update written_out")


def step_anatomy(sal: SAL, in_situ: list[float], record, rounds: int = 40, repeats: int = 10) -> dict[str, float]:
    """Where SAL's step goes (CPU ms, medians): in the loop (`in_situ`); the same step repeated on one
    pass's record, with the caches warm (the probe's clear held back: the record is read again); and the
    data term's products alone (oᵀx, one per weight), on that record. The products are the step's
    arithmetic floor; warm minus products is the per-operation cost; in situ minus warm, the cold caches.
    The two warm measures alternate in short rounds, so that a burst of load hits both alike."""
    record()
    layers = sal.layers()
    times: dict[str, list[float]] = {"warm": [], "products": []}
    with torch.no_grad(), mock.patch.object(sal.probe, "clear"):
        work = {"warm": sal.step,
                "products": lambda: [output.T @ x for layer in layers for inputs, output in layer.chunks()
                                     for x in inputs]}
        for _ in range(rounds):
            for name, run in work.items():
                for _ in range(repeats):
                    tick = time.process_time()
                    run()
                    times[name].append(time.process_time() - tick)
    sal.probe.clear()
    return {"in situ": statistics.median(in_situ) * 1e3, "count": sum(len(layer.weights) for layer in layers),
            **{name: statistics.median(values) * 1e3 for name, values in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=60, help="rounds of blocks, one of each loop, interleaved")
    parser.add_argument("--steps", type=int, default=10, help="training steps per block")
    parser.add_argument("--ntoken", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.2, help="word_language_model's main.py default")
    parser.add_argument("--every", type=int, default=2, help="m of the update_every loop")
    parser.add_argument("--compile", action="store_true",
                        help="the written-out step's tensor work compiled by torch.compile (a C++ compiler needed)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.md", help="also write the result here")
    args = parser.parse_args()
    if args.compile and not any(map(shutil.which, (os.environ.get("CXX", "g++"), "g++", "clang++", "c++"))):
        parser.error("--compile needs a C++ compiler (torch.compile builds its CPU kernels with one): none found")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = RNNModel(args.ntoken, args.hidden, args.hidden, 2, dropout=args.dropout)
    data = torch.randint(args.ntoken, (args.bptt * 50 + 1, args.batch))
    models = {name: copy.deepcopy(base) for name in LOOPS}
    check_written_out(lambda: RNNModel(args.ntoken, args.hidden, args.hidden, 2, dropout=0.0), compile=args.compile)
    sals = {name: SAL(models[name], update_every=args.every if name == "every" else 1)
            for name in ("recorded", "sal", "written", "every")}
    written_step = written_out(sals["written"], args.compile)
    labels = {name: label.format(every=args.every) for name, label in LOOPS.items()}
    if args.compile:
        labels["written"] = "with SAL's step written out and compiled by torch.compile"
    hidden = {name: model.init_hidden(args.batch) for name, model in models.items()}
    criterion = nn.NLLLoss()
    position = {name: 0 for name in models}
    in_situ: list[float] = []  # CPU time of each sal.step() of the "sal" loop

    def train(name: str, steps: int, update: bool = True) -> float:
        """`steps` training steps of loop `name`; update=False: the last without SAL's step (its record kept)."""
        model = models[name]
        model.train()
        start = time.process_time()
        for _ in range(steps):
            i = position[name]
            position[name] = (i + args.bptt) % (data.shape[0] - args.bptt - 1)
            source, target = data[i:i + args.bptt], data[i + 1:i + 1 + args.bptt].reshape(-1)
            hidden[name] = hidden[name].detach()
            model.zero_grad()
            output, hidden[name] = model(source, hidden[name])
            loss = criterion(output, target)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-0.1)
            if not update:
                continue
            if name == "sal":
                tick = time.process_time()
                sals[name].step()
                in_situ.append(time.process_time() - tick)
            elif name == "written":
                written_step()
            elif name == "every":
                sals[name].step()
            elif name == "recorded":
                sals[name].probe.clear()  # what the step would read, dropped: its forward's cost alone
        return (time.process_time() - start) / steps

    for name in models:  # warm-up, and the traced first pass
        train(name, 5)
    times = {name: [] for name in models}
    for block in range(args.blocks):
        order = list(LOOPS) if block % 2 == 0 else list(LOOPS)[::-1]  # no loop always runs first
        for name in order:
            times[name].append(train(name, args.steps))
    setting = (f"word_language_model-style RNN (RNN_TANH, 2 layers, hidden {args.hidden}, bptt {args.bptt}, batch "
               f"{args.batch}, vocabulary {args.ntoken}, dropout {args.dropout}), {torch.get_num_threads()} thread, "
               f"{args.blocks} rounds of blocks of {args.steps} steps, CPU time of this process")
    anatomy = step_anatomy(sals["sal"], in_situ[len(in_situ) // 10:], lambda: train("sal", 1, update=False))
    rows = []
    for name in ("recorded", "sal", "written", "every"):
        ratios = [a / b for a, b in zip(times[name], times["none"])]
        quartiles = statistics.quantiles(ratios, n=4)
        rows.append((labels[name], statistics.median(times[name]) * 1e3, statistics.median(ratios),
                     quartiles[0], quartiles[2]))
    none = statistics.median(times["none"]) * 1e3
    print(setting)
    print(f"step without SAL {none:.3f} ms (median)")
    for label, ms, ratio, low, high in rows:
        print(f"{label}: step {ms:.3f} ms, ratio to none {ratio:.3f} (median of the rounds' ratios; "
              f"quartiles {low:.3f}-{high:.3f})")
    parts = [("`sal.step()` in the loop", anatomy["in situ"]),
             ("the same step repeated on one pass's record, caches warm", anatomy["warm"]),
             (f"its {anatomy['count']} products oᵀx alone, warm (the step's arithmetic floor)", anatomy["products"])]
    for label, ms in parts:
        print(f"{label}: {ms:.3f} ms, {ms / none:.3f} of a step without SAL")
    if args.out is not None:
        from salrun.jobs import source_commit
        lines = [f"{setting}; step without SAL {none:.3f} ms.", "",
                 "| loop | step (ms) | ratio to none | quartiles |", "|---|---|---|---|"]
        lines += [f"| {label} | {ms:.3f} | {ratio:.3f} | {low:.3f}-{high:.3f} |" for label, ms, ratio, low, high in rows]
        lines += ["", "| where SAL's step goes (medians) | ms | share of a step without SAL |", "|---|---|---|"]
        lines += [f"| {label} | {ms:.3f} | {ms / none:.3f} |" for label, ms in parts]
        command = "OMP_NUM_THREADS=1 python benchmarks/rnn_lm_overhead.py " + " ".join(sys.argv[1:])
        lines += ["", f"Measured on commit {source_commit() or 'not recorded'} by `{command.strip()}`."]
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
