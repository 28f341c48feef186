"""An nn.RNNCell driven by your own loop, trained by BPTT + SAL to remember a sign.

    python examples/rnn_cell.py [--steps 1000] [--lag 30]

A ±1 pulse at t = 0, zeros after; the net reads out its sign at t = lag. Each call
of the cell is one step of one layer: SAL stacks the steps of a forward pass.
"""
import argparse

import torch
from torch import nn

from salrun import SAL


class Loop(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.cell = nn.RNNCell(1, hidden)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x):                     # x: (time, batch, 1)
        h = None
        for x_t in x:
            h = self.cell(x_t, h)
        return self.readout(h)


def batch(size: int, lag: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    sign = torch.randint(0, 2, (size, 1), generator=generator) * 2.0 - 1
    x = torch.zeros(lag + 1, size, 1)
    x[0] = sign
    return x, sign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lag", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    model = Loop(hidden=32)
    sal = SAL(model, lr=0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(1, args.steps + 1):
        x, y = batch(32, args.lag, data)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sal.step()
        if step % 100 == 0 or step == args.steps:
            x, y = batch(1000, args.lag, data)
            with torch.no_grad():
                accuracy = (model(x).sign() == y).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  sign accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
