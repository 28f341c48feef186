"""SAL's overhead on a word_language_model-style RNN: the ratio of step times with and without SAL.

The model and loop follow pytorch/examples' word_language_model (RNN_TANH): an embedding,
dropout, a 2-layer tanh nn.RNN (hidden 64), dropout, a linear decoder; truncated BPTT
(bptt 20, batch 16) with the hidden state carried over and detached, gradient clipping and
plain SGD. nn.RNN's own dropout is 0 (SAL refuses dropout between an nn.RNN's layers).
One thread. The loop without SAL and the loop with SAL run interleaved, in short blocks, on
two copies of one model, so that load from other work hits both alike; each pair of blocks
gives a ratio of CPU times, and the ratio printed is their median (on a shared machine one
run's ratio still moves by a few %: run it a few times).

    OMP_NUM_THREADS=1 python benchmarks/rnn_lm_overhead.py [--blocks 60] [--steps 10]
"""
import argparse
import copy
import statistics
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=60, help="pairs of blocks, one of each loop, interleaved")
    parser.add_argument("--steps", type=int, default=10, help="training steps per block")
    parser.add_argument("--ntoken", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.2, help="word_language_model's main.py default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = RNNModel(args.ntoken, args.hidden, args.hidden, 2, dropout=args.dropout)
    data = torch.randint(args.ntoken, (args.bptt * 50 + 1, args.batch))
    models = {"none": base, "sal": copy.deepcopy(base)}
    sal = SAL(models["sal"])
    hidden = {name: model.init_hidden(args.batch) for name, model in models.items()}
    criterion = nn.NLLLoss()
    position = {name: 0 for name in models}

    def train(name: str, steps: int) -> float:
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
            if name == "sal":
                sal.step()
        return (time.process_time() - start) / steps

    for name in models:  # warm-up, and the traced first pass
        train(name, 5)
    times = {name: [] for name in models}
    ratios = []
    for block in range(args.blocks):
        order = list(models) if block % 2 == 0 else list(models)[::-1]  # neither always runs first
        for name in order:
            times[name].append(train(name, args.steps))
        ratios.append(times["sal"][-1] / times["none"][-1])
    none, with_sal = statistics.median(times["none"]), statistics.median(times["sal"])
    print(f"word_language_model-style RNN (RNN_TANH, 2 layers, hidden {args.hidden}, bptt {args.bptt}, "
          f"batch {args.batch}, vocabulary {args.ntoken}, dropout {args.dropout}), {torch.get_num_threads()} "
          f"thread, {args.blocks} pairs of blocks of {args.steps} steps, CPU time of this process")
    print(f"step without SAL {none * 1e3:.3f} ms, with SAL {with_sal * 1e3:.3f} ms (medians)")
    print(f"ratio SAL/none {statistics.median(ratios):.3f} (median of the pairs' ratios; "
          f"quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-{statistics.quantiles(ratios, n=4)[2]:.3f})")

if __name__ == "__main__":
    main()
