"""The chaos study measures the attractor, never a dead state (issue 11)."""
import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import summary_of
from salrun.lyapunov import max_lyapunov, on_attractor
from single_thread import one_thread  # noqa: F401  (autouse)

SMALL = ["model.hidden=40", "method.lr=0.005", "lyapunov.sal_steps=120", "lyapunov.log_every=40", "threads=1"]


def independent_check():
    """docs/check_chaos.py: its own float64 loop over model.pt's weights, no salrun import."""
    path = Path(__file__).resolve().parents[1] / "docs" / "check_chaos.py"
    spec = importlib.util.spec_from_file_location("check_chaos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unstable_zero_net(n=30, seed=0):
    """Zero bias, no input, and h = 0 unstable: W's top eigenvalues are a complex pair of
    modulus 1.3 (ln ρ = 0.262), every other one has modulus 0.5."""
    gen = torch.Generator().manual_seed(seed)
    c, s = 1.3 * math.cos(0.9), 1.3 * math.sin(0.9)
    blocks = torch.block_diag(torch.tensor([[c, -s], [s, c]], dtype=torch.float64),
                              0.5 * torch.eye(n - 2, dtype=torch.float64))
    u = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64)).Q
    return u @ blocks @ u.T


def test_unstable_zero_state_reports_the_attractor_not_the_linearisation():
    w = unstable_zero_net()
    n = w.shape[0]
    no_input, no_bias = torch.zeros(n, 0, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    log_rho = math.log(float(torch.linalg.eigvals(w).abs().max()))
    # A state stuck exactly at 0 measures the linearisation there: ln ρ(W).
    dead = max_lyapunov(w, no_input, no_bias, torch.zeros(4, n, dtype=torch.float64), None, 100, 1000,
                        generator=torch.Generator().manual_seed(1))
    assert dead.mle == pytest.approx(log_rho, abs=1e-3)
    # Measured from fresh states the net lives on its attractor: MLE >= 0, far from ln ρ(W).
    alive = on_attractor(w, no_input, no_bias, 4, 500, 2000, k=2, generator=torch.Generator().manual_seed(1))
    assert alive.mle >= -0.01
    assert alive.mle < log_rho - 0.1
    assert float(alive.state.pow(2).mean().sqrt()) > 0.1  # a living state
    # The attractor is a closed invariant curve: λ_1 = 0, λ_2 < 0 (the pair's rotation, tanh saturation).
    assert abs(alive.exponents[0]) < 0.01 and alive.exponents[1] < -0.05


def test_mle_std_is_the_spread_of_the_trajectories():
    gen = torch.Generator().manual_seed(3)
    n = 30
    w = torch.randn(n, n, generator=gen, dtype=torch.float64) * 2 / math.sqrt(n)
    w_ih, bias = torch.zeros(n, 0, dtype=torch.float64), 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    h = torch.rand(4, n, generator=gen, dtype=torch.float64) * 2 - 1
    v = torch.randn(4, n, generator=gen, dtype=torch.float64)
    together = max_lyapunov(w, w_ih, bias, h, None, 50, 100, v=v)
    alone = torch.tensor([max_lyapunov(w, w_ih, bias, h[i:i + 1], None, 50, 100, v=v[i:i + 1]).mle for i in range(4)])
    assert together.mle == pytest.approx(float(alone.mean()), abs=1e-6)  # rounding, grown by chaos
    assert together.mle_std == pytest.approx(float(alone.std()), abs=1e-6)
    assert together.mle_std > 1e-3  # the trajectories really differ


@pytest.mark.parametrize("extra", [[], ["lyapunov.input_size=3", "model.input_scale=0.1"]])
def test_reported_mle_agrees_with_a_long_float64_estimate_from_fresh_states(run_cli, tmp_path, extra):
    out = tmp_path / "run"
    result = run_cli("lyapunov", *SMALL, *extra, "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    reported = summary_of(out)["final"]
    check = independent_check()
    own = check.mle_by_trajectory(check.load_net(out), 1000, [5000], 8, seed=7)[5000]
    assert abs(reported["mle"] - float(own.mean())) < 0.02
    assert reported["state_rms"] > 1e-3 and reported["mle_std"] >= 0


def test_the_adapting_states_stay_alive_and_a_dead_state_warns_once(run_cli, tmp_path):
    # method=none keeps the small weights: the net contracts to h = 0 for ever.
    common = ["model.hidden=20", "method=none", "lyapunov.sal_steps=30", "lyapunov.log_every=5",
              "lyapunov.transient=10", "lyapunov.measure_steps=20", "threads=1", "--quiet"]
    kicked = run_cli("lyapunov", *common, "--out", str(tmp_path / "kicked"))
    assert kicked.returncode == 0, kicked.stderr
    rms = pd.read_csv(tmp_path / "kicked" / "metrics.csv").query("metric == 'state_rms'").value
    assert rms.min() > 1e-6 and "warning" not in kicked.stderr
    dead = run_cli("lyapunov", *common, "lyapunov.noise=0", "--out", str(tmp_path / "dead"))
    assert dead.returncode == 0, dead.stderr
    rms = pd.read_csv(tmp_path / "dead" / "metrics.csv").query("metric == 'state_rms'").value
    assert rms.iloc[-1] < 1e-6
    assert dead.stderr.count("warning") == 1 and "collapsed onto h = 0" in dead.stderr
    assert len(summary_of(tmp_path / "dead")["warnings"]) == 1


def test_negative_noise_is_a_usage_error(run_cli):
    result = run_cli("lyapunov", "lyapunov.noise=-0.1")
    assert result.returncode == 2
    assert "lyapunov.noise" in result.stderr and "Traceback" not in result.stderr
