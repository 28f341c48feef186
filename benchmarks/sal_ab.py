"""SAL's cost per step in two checkouts of salrun, in one process.

BP alone, BP + SAL of checkout A and BP + SAL of checkout B are interleaved in
every repeat, so that load from other work hits all three alike, on the models
of `run.py --only sal` (threads 1), in CPU seconds of this process. On a shared machine one run's ratios still
move by several %: run it a few times and take the median of the B/A ratios.

    python benchmarks/sal_ab.py A_DIR B_DIR [--repeats 21] [--case TEXT]
"""
import argparse
import importlib
import statistics
import sys
import time

import torch


def load(path: str, tag: str):
    """SAL, models and settings of the salrun in `path`, kept apart from any other copy."""
    sys.path.insert(0, path)
    modules = [importlib.import_module(f"salrun.{name}") for name in ("sal", "models", "settings")]
    for key in [k for k in sys.modules if k == "salrun" or k.startswith("salrun.")]:
        sys.modules[f"{tag}_{key}"] = sys.modules.pop(key)
    sys.path.remove(path)
    return modules


def ffn(width, models, settings):
    model = models.MLP(2, 2, settings.MLPSettings(depth=300, width=width))
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    return model, lambda: torch.nn.functional.cross_entropy(model(x), y)


def rnn(hidden, models, settings):
    model = models.ElmanRNN(1, 1, settings.RNNSettings(hidden=hidden))
    x, y = torch.randn(300, 32, 1), torch.randn(32, 1)
    return model, lambda: torch.nn.functional.mse_loss(model(x), y)


CASES = [("ffn depth 300 width 64", ffn, 64), ("ffn depth 300 width 256", ffn, 256),
         ("rnn hidden 128 lag 300", rnn, 128), ("rnn hidden 512 lag 300", rnn, 512)]


def training_step(make, size, checkout, with_sal: bool):
    sal_module, models, settings = checkout
    torch.manual_seed(0)
    model, loss_fn = make(size, models, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    sal = sal_module.SAL(model) if with_sal else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
        if sal is not None:
            sal.step()
    step(), step()  # warm-up (and SAL's first, traced pass)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--case", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    a, b = load(args.a, "a"), load(args.b, "b")
    for case, make, size in CASES:
        if args.case not in case:
            continue
        steps = {"bp": training_step(make, size, a, False), "a": training_step(make, size, a, True),
                 "b": training_step(make, size, b, True)}
        times = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                start = time.process_time()
                step()
                times[name].append(time.process_time() - start)
        bp, sal_a, sal_b = (statistics.median(times[name]) for name in ("bp", "a", "b"))
        print(f"{case}: BP {bp:.4f} s, BP+SAL A {sal_a:.4f} s ({sal_a / bp:.3f}x), "
              f"B {sal_b:.4f} s ({sal_b / bp:.3f}x), B/A {sal_b / sal_a:.3f}", flush=True)


if __name__ == "__main__":
    main()
