"""The tangent-space MLE against a two-trajectory estimate and a linear case."""
import math

import pytest
import torch

from salrun.lyapunov import max_lyapunov, mle_two_trajectory
from single_thread import one_thread  # noqa: F401  (autouse)


def random_net(n, gain, inputs, seed):
    gen = torch.Generator().manual_seed(seed)
    w_hh = torch.randn(n, n, generator=gen, dtype=torch.float64) * gain / math.sqrt(n)
    w_ih = torch.randn(n, inputs, generator=gen, dtype=torch.float64)
    bias = 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    h = torch.rand(4, n, generator=gen, dtype=torch.float64) * 2 - 1
    return w_hh, w_ih, bias, h, gen


@pytest.mark.parametrize("gain,inputs", [(0.8, 0), (1.5, 0), (2.5, 0), (2.0, 3)])
def test_tangent_mle_matches_two_trajectory(gain, inputs):
    w_hh, w_ih, bias, h, gen = random_net(60, gain, inputs, seed=int(gain * 10) + inputs)
    u = torch.randn(700, 4, inputs, generator=gen, dtype=torch.float64) if inputs else None
    tangent = max_lyapunov(w_hh, w_ih, bias, h, u, transient=200, steps=500).mle
    twin = mle_two_trajectory(w_hh, w_ih, bias, h, u, transient=200, steps=500)
    assert abs(tangent - twin) < 0.01


def test_mle_of_small_weights_is_log_spectral_radius():
    # Near the fixed point h = 0 the Jacobian is W itself.
    w_hh, w_ih, bias, h, _ = random_net(40, 0.5, 0, seed=7)
    measured = max_lyapunov(w_hh, w_ih, bias * 0, h * 1e-3, None, transient=300, steps=2000)
    rho = torch.linalg.eigvals(w_hh).abs().max()
    assert abs(measured.mle - math.log(rho)) < 0.02
    # and the log-sensitivity there is ln of the RMS row norm
    assert abs(measured.log_sensitivity - 0.5 * math.log(w_hh.pow(2).sum(1).mean())) < 1e-3


def test_sal_brings_small_chaos_net_to_the_edge(run_cli, tmp_path):
    """Claim 1 at small size: log-sensitivity tracks the MLE below 0, then the MLE ends near 0."""
    import pandas as pd

    out = tmp_path / "chaos"
    result = run_cli("lyapunov", "model.hidden=100", "method.lr=0.005", "lyapunov.sal_steps=150",
                     "lyapunov.log_every=10", "lyapunov.measure_steps=200", "threads=1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    m = pd.read_csv(out / "metrics.csv").pivot_table(index="step", columns="metric", values="value")
    below = m[m.mle < -0.1]
    assert len(below) >= 3 and m.mle.iloc[0] < -1  # it started far from the edge
    assert (below.log_sensitivity - below.mle).abs().max() <= 0.1
    assert abs(m.mle.iloc[-1]) <= 0.1
