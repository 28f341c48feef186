"""SAL on a custom module: functional tanh, a ReLU branch, a Linear declared before it runs.

    python examples/functional.py [--steps 500]

SAL reads which Linear feeds which tanh from the first forward pass, so `describe`
shows the pairs before training: `gate` feeds a ReLU and is left alone.
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

from salrun import SAL


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Linear(16, 1)           # declared first, runs last
        self.gate = nn.Linear(1, 16)
        self.blocks = nn.ModuleList([nn.Linear(1, 16), nn.Linear(16, 16), nn.Linear(16, 16)])

    def forward(self, x):
        h = torch.tanh(self.blocks[0](x)) * F.relu(self.gate(x))
        h = F.tanh(self.blocks[1](h))
        h = self.blocks[2](h).tanh()
        return self.out(h)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Net()
    sal = SAL(model, lr=0.01)
    x = torch.linspace(-3, 3, 200)[:, None]
    y = torch.sin(2 * x)
    print(sal.describe(x[:4]))                # runs the model once on the example
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(1, args.steps + 1):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sal.step()
        if step % 100 == 0 or step == args.steps:
            print(f"step {step:4d}  mse {loss.item():.4f}")


if __name__ == "__main__":
    main()
