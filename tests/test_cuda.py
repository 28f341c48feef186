"""device=cuda gives the numbers of the CPU (float64) and whole jobs run there. Skipped
without a CUDA GPU (CI has none); run on a GPU machine with `python -m pytest -q tests/test_cuda.py`."""
import copy
import math

import pytest
import torch

from conftest import TINY_CHAOS, TINY_FFN, TINY_RNN, summary_of
from salrun.lyapunov import lyapunov_spectrum_ensemble, max_lyapunov_ensemble
from salrun.models import ElmanRNN, MLP
from salrun.sal import SAL
from salrun.settings import InitSettings, MLPSettings, RNNSettings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def sal_on(model, device, inputs, **sal_args):
    model = copy.deepcopy(model).to(device)
    rule = SAL(model, **sal_args)
    for x in inputs:
        model(x.to(device))
        rule.step()
    return [p.detach().cpu() for p in model.parameters()], [a.cpu() for a in rule.averages]


@pytest.mark.parametrize("sal_args", [{}, {"gate": "two_sided", "target": 1.06}])
def test_sal_on_cuda_equals_cpu_on_a_deep_mlp(sal_args):
    torch.manual_seed(0)
    model = MLP(3, 2, MLPSettings(depth=8, width=16, init=InitSettings(scale=0.5, bias_scale=0.1))).double()
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(32, 3, generator=gen, dtype=torch.float64) for _ in range(5)]
    cpu, cuda = sal_on(model, "cpu", inputs, **sal_args), sal_on(model, CUDA, inputs, **sal_args)
    changed = max((a - b).abs().max().item() for a, b in zip(cpu[0], model.parameters()))
    assert changed > 1e-4  # SAL really moved the weights
    for a, b in zip(cpu[0] + cpu[1], cuda[0] + cuda[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_sal_on_cuda_equals_cpu_on_an_rnn():
    torch.manual_seed(0)
    model = ElmanRNN(2, 1, RNNSettings(hidden=12)).double()
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(8, 20, 2, generator=gen, dtype=torch.float64) for _ in range(4)]
    cpu, cuda = sal_on(model, "cpu", inputs), sal_on(model, CUDA, inputs)
    for a, b in zip(cpu[0] + cpu[1], cuda[0] + cuda[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_sal_on_a_model_split_between_cpu_and_cuda_equals_cpu():
    """The layers that are not a group share their per-neuron arithmetic only on one device."""
    class Split(torch.nn.Module):
        def __init__(self, second):
            super().__init__()
            self.second = second
            self.a, self.b, self.out = torch.nn.Linear(3, 5), torch.nn.Linear(5, 4), torch.nn.Linear(4, 1)

        def forward(self, x):
            h = torch.tanh(self.a(x)).to(self.second)
            return self.out(torch.tanh(self.b(h)))

    torch.manual_seed(0)
    split = Split(CUDA).double()
    whole = copy.deepcopy(split)
    whole.second = torch.device("cpu")
    split.b.to(CUDA), split.out.to(CUDA)
    rules = SAL(split, lr=0.05), SAL(whole, lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
        split(x), whole(x)
        [rule.step() for rule in rules]
    for a, b in zip(split.parameters(), whole.parameters()):
        assert (a.detach().cpu() - b.detach()).abs().max() < 1e-12


@pytest.mark.parametrize("base", ["mlp", "rnn"])
def test_ensemble_members_on_cuda_equal_their_single_runs_in_float64(tmp_path, base):
    """`sweep --ensemble`'s batched engine (batched SAL included) on CUDA keeps each member's numbers."""
    from test_ensemble import MEMBERS, MLP_BASE, RNN_BASE, check_members_equal_single_runs
    check_members_equal_single_runs(tmp_path, MLP_BASE if base == "mlp" else RNN_BASE, MEMBERS, "cuda")


def test_lyapunov_ensemble_and_spectrum_on_cuda_equal_cpu():
    """Contracting members agree to rounding; on a chaotic member the two devices' rounding
    grows into different trajectories, so only the time averages agree (statistically)."""
    gen = torch.Generator().manual_seed(5)
    members, n, batch = 3, 30, 2
    gains = torch.tensor([0.6, 0.9, 2.5], dtype=torch.float64)
    w_hh = torch.randn(members, n, n, generator=gen, dtype=torch.float64) * gains[:, None, None] / math.sqrt(n)
    w_ih = torch.zeros(members, n, 0, dtype=torch.float64)
    bias = 0.1 * torch.randn(members, n, generator=gen, dtype=torch.float64)
    h = torch.rand(members, batch, n, generator=gen, dtype=torch.float64) * 2 - 1
    v = torch.randn(members, batch, n, generator=gen, dtype=torch.float64)
    basis = torch.randn(members, batch, 4, n, generator=gen, dtype=torch.float64)
    args = (w_hh, w_ih, bias, h, None, 50, 400)
    on_cuda = [t.to(CUDA) for t in args[:4]] + list(args[4:])
    cpu, gpu = max_lyapunov_ensemble(*args, v=v), max_lyapunov_ensemble(*on_cuda, v=v.to(CUDA))
    spectrum_cpu = lyapunov_spectrum_ensemble(*args, k=4, basis=basis)
    spectrum_gpu = lyapunov_spectrum_ensemble(*on_cuda, k=4, basis=basis.to(CUDA))
    assert cpu[1].mle < 0 < cpu[2].mle
    for e in range(members):
        tol = 1e-8 if cpu[e].mle < 0 else 0.03
        assert abs(cpu[e].mle - gpu[e].mle) < tol
        assert abs(cpu[e].log_sensitivity - gpu[e].log_sensitivity) < tol
        assert max(abs(x - y) for x, y in zip(spectrum_cpu[e].exponents, spectrum_gpu[e].exponents)) < tol


@pytest.mark.slow
@pytest.mark.parametrize("command,args", [
    ("train", TINY_FFN + ["method=sal"]),
    ("train", TINY_FFN + ["method=lsuv"]),
    ("train", TINY_RNN + ["method=sal", "init=orthogonal"]),
    ("train", TINY_RNN + ["method=flossing", "method.k=2", "method.pre_steps=2", "method.every=3"]),
    ("lyapunov", TINY_CHAOS + ["lyapunov.k=3"]),
])
def test_jobs_run_on_cuda(run_cli, tmp_path, command, args):
    out = tmp_path / "run"
    result = run_cli(command, *args, "device=cuda", "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    summary = summary_of(out)
    assert summary["status"] == "ok"
    assert all(math.isfinite(v) for v in summary["final"].values() if isinstance(v, float))
