"""A 20-layer tanh MLP (an nn.Sequential) trained by back-propagation + SAL on two spirals.

    python examples/mlp.py [--steps 1000] [--no-sal]

PyTorch's default init gives each tanh neuron a sensitivity of about 0.58, so the
gradient shrinks about 0.58× per layer; SAL lifts every neuron's sensitivity toward 1.
"""
import argparse
import math

import torch
from torch import nn

from salrun import SAL, log_sensitivity, sensitivity


def spirals(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals of 1.5 turns; the label is the arm."""
    t = torch.rand(n, generator=generator) * 3 * math.pi
    arm = torch.randint(0, 2, (n,), generator=generator)
    angle, radius = t + math.pi * arm, t / (3 * math.pi)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], 1), arm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--no-sal", action="store_true", help="back-propagation alone, for comparison")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    layers = [nn.Linear(2, 32), nn.Tanh()]
    for _ in range(19):
        layers += [nn.Linear(32, 32), nn.Tanh()]
    model = nn.Sequential(*layers, nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sal = None if args.no_sal else SAL(model, lr=0.01)
    test_x, test_y = spirals(1000, data)
    for step in range(1, args.steps + 1):
        x, y = spirals(64, data)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        report = step % 100 == 0 or step == args.steps
        line = ""
        if sal is not None:
            if report:  # this forward pass's sensitivities, read before SAL uses (and clears) them
                s = torch.cat([sensitivity(layer.output, layer.weights) for layer in sal.layers()], 1)
                line = f"  log-sensitivity {log_sensitivity(s).item():+.3f}"
            sal.step()
        if report:
            with torch.no_grad():
                accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  test accuracy {accuracy:.3f}{line}")


if __name__ == "__main__":
    main()
