"""Per-layer sensitivity logged while SAL trains: a CSV, and TensorBoard if it is installed.

    python examples/log_sensitivity.py [--steps 500] [--out sensitivity.csv] [--tensorboard DIR]

`sal.layers()` holds each layer's activity of the forward passes since the last
`sal.step()`: read it after the forward pass and before `sal.step()`, which clears it.
"""
import argparse
import csv

import torch
from torch import nn

from salrun import SAL, log_sensitivity, sensitivity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--every", type=int, default=50, help="log every this many steps")
    parser.add_argument("--out", default="sensitivity.csv")
    parser.add_argument("--tensorboard", default=None, help="a log folder for TensorBoard")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                          nn.Linear(32, 1))
    sal = SAL(model, lr=0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    board = None
    if args.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
            board = SummaryWriter(args.tensorboard)
        except ImportError:
            print("tensorboard is not installed: writing the CSV only")
    with open(args.out, "w", newline="") as file:
        rows = csv.writer(file)
        rows.writerow(["step", "layer", "sensitivity_rms", "log_sensitivity"])
        for step in range(1, args.steps + 1):
            x = torch.randn(64, 8)
            loss = nn.functional.mse_loss(model(x), (x[:, :1] * x[:, 1:2]).sign())  # an XOR of two signs
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % args.every == 0 or step in (1, args.steps):
                for layer in sal.layers():    # s_j = f'(U_j)·‖w_j‖ per sample and neuron
                    s = sensitivity(layer.output, layer.weights, layer.activation)
                    rms, log_s = s.pow(2).mean().sqrt().item(), log_sensitivity(s).item()
                    rows.writerow([step, layer.name, f"{rms:.5f}", f"{log_s:.5f}"])
                    if board is not None:
                        board.add_scalar(f"sensitivity_rms/{layer.name}", rms, step)
                print(f"step {step:4d}  loss {loss.item():.4f}")
            sal.step()
    if board is not None:
        board.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
