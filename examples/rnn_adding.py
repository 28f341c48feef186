"""torch.nn.RNN (tanh) trained by BPTT + SAL on the adding problem.

    python examples/rnn_adding.py [--steps 2000] [--lag 50]

Each sequence has lag + 1 steps of (value U(0, 1), marker); one marker in each half.
The target is the sum of the two marked values; always answering 1 gives an MSE of 1/6.
SAL adapts every neuron of the nn.RNN, whose inputs are [x_t, h_{t-1}].
"""
import argparse

import torch
from torch import nn

from salrun import SAL


def adding(batch: int, lag: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    steps = lag + 1
    values = torch.rand(batch, steps, generator=generator)
    first = torch.randint(0, steps // 2, (batch,), generator=generator)
    second = torch.randint(steps // 2, steps, (batch,), generator=generator)
    markers = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    markers[rows, first] = markers[rows, second] = 1.0
    return torch.stack([values, markers], 2), (values * markers).sum(1, keepdim=True)


class Adder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.rnn = nn.RNN(2, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x):
        states, _ = self.rnn(x)
        return self.readout(states[:, -1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lag", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    model = Adder(hidden=64)
    sal = SAL(model, lr=0.01)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    test_x, test_y = adding(1000, args.lag, data)
    print(sal.describe(test_x[:2]))
    for step in range(1, args.steps + 1):
        x, y = adding(20, args.lag, data)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        sal.step()
        if step % 200 == 0 or step == args.steps:
            with torch.no_grad():
                mse = nn.functional.mse_loss(model(test_x), test_y).item()
            print(f"step {step:5d}  train mse {loss.item():.4f}  test mse {mse:.4f}  (always 1: 0.167)")


if __name__ == "__main__":
    main()
