"""The top-k Lyapunov spectrum by QR (Benettin) against closed forms and independent estimates."""
import math

import pytest
import torch

from salrun.lyapunov import (lyapunov_spectrum, lyapunov_spectrum_ensemble, max_lyapunov, max_lyapunov_ensemble,
                             mle_two_trajectory)
from single_thread import one_thread  # noqa: F401  (autouse)


def normal_matrix(moduli_real, moduli_complex, seed):
    """W = U B Uᵀ (U orthogonal, B block-diagonal: real eigenvalues and r·rotation blocks):
    a normal matrix whose eigenvalue moduli are known. Returns W and the sorted log-moduli."""
    gen = torch.Generator().manual_seed(seed)
    blocks = [torch.tensor([[r]], dtype=torch.float64) for r in moduli_real]
    logs = [math.log(abs(r)) for r in moduli_real]
    for r in moduli_complex:
        angle = float(torch.rand(1, generator=gen, dtype=torch.float64)) * 2.5 + 0.3
        c, s = r * math.cos(angle), r * math.sin(angle)
        blocks.append(torch.tensor([[c, -s], [s, c]], dtype=torch.float64))
        logs += [math.log(r)] * 2
    b = torch.block_diag(*blocks)
    u = torch.linalg.qr(torch.randn(b.shape[0], b.shape[0], generator=gen, dtype=torch.float64)).Q
    return u @ b @ u.T, sorted(logs, reverse=True)


def test_linear_rnn_with_normal_weights_has_log_moduli_as_exponents():
    # At the fixed point h = 0 (no bias, no input) tanh' = 1 exactly, so the tangent
    # dynamics are the linear RNN v_t = W v_{t-1}: λ_i = ln |eigenvalue_i| of the normal W,
    # unstable directions (|λ| > 1) included.
    w, expected = normal_matrix([1.4, -0.9, 0.6, 0.3, 0.15], [1.2, 0.75], seed=3)
    n = w.shape[0]
    h = torch.zeros(3, n, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    measured = lyapunov_spectrum(w, torch.zeros(n, 0, dtype=torch.float64), torch.zeros(n, dtype=torch.float64),
                                 h, None, transient=200, steps=1500, k=n, generator=gen)
    assert measured.exponents == pytest.approx(expected, abs=2e-3)
    # the full spectrum sums to ln |det W|
    assert sum(measured.exponents) == pytest.approx(math.log(abs(torch.linalg.det(w))), abs=1e-9)
    # the top-k are the first k of the full spectrum
    top3 = lyapunov_spectrum(w, torch.zeros(n, 0, dtype=torch.float64), torch.zeros(n, dtype=torch.float64),
                             h, None, transient=200, steps=1500, k=3, generator=gen)
    assert top3.exponents == pytest.approx(expected[:3], abs=2e-3)


@pytest.mark.parametrize("gain,inputs", [(1.5, 0), (2.5, 0), (2.0, 3)])
def test_le1_matches_two_trajectory_and_equals_tangent_mle(gain, inputs):
    gen = torch.Generator().manual_seed(int(gain * 10) + inputs)
    n = 50
    w_hh = torch.randn(n, n, generator=gen, dtype=torch.float64) * gain / math.sqrt(n)
    w_ih = torch.randn(n, inputs, generator=gen, dtype=torch.float64)
    bias = 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)
    h = torch.rand(4, n, generator=gen, dtype=torch.float64) * 2 - 1
    u = torch.randn(700, 4, inputs, generator=gen, dtype=torch.float64) if inputs else None
    basis = torch.randn(4, 4, n, generator=gen, dtype=torch.float64)
    spectrum = lyapunov_spectrum(w_hh, w_ih, bias, h, u, transient=200, steps=500, k=4, basis=basis)
    twin = mle_two_trajectory(w_hh, w_ih, bias, h, u, transient=200, steps=500)
    assert abs(spectrum.exponents[0] - twin) < 0.01
    assert spectrum.exponents == sorted(spectrum.exponents, reverse=True)
    # with the same first tangent vector, λ_1 of the QR estimate is the tangent-space MLE itself
    mle = max_lyapunov(w_hh, w_ih, bias, h, u, transient=200, steps=500, v=basis[:, 0])
    assert abs(spectrum.exponents[0] - mle.mle) < 1e-9
    assert abs(spectrum.log_sensitivity - mle.log_sensitivity) < 1e-12
    torch.testing.assert_close(spectrum.state, mle.state, rtol=0, atol=1e-12)


def test_spectrum_ensemble_matches_unbatched():
    gen = torch.Generator().manual_seed(11)
    members, n, batch, k, inputs = 3, 20, 2, 3, 2
    gains = torch.tensor([0.7, 1.5, 2.5], dtype=torch.float64)
    w_hh = torch.randn(members, n, n, generator=gen, dtype=torch.float64) * gains[:, None, None] / math.sqrt(n)
    w_ih = torch.randn(members, n, inputs, generator=gen, dtype=torch.float64)
    bias = 0.1 * torch.randn(members, n, generator=gen, dtype=torch.float64)
    h = torch.rand(members, batch, n, generator=gen, dtype=torch.float64) * 2 - 1
    basis = torch.randn(members, batch, k, n, generator=gen, dtype=torch.float64)
    u = torch.randn(250, members, batch, inputs, generator=gen, dtype=torch.float64)
    together = lyapunov_spectrum_ensemble(w_hh, w_ih, bias, h, u, 50, 200, k, basis=basis)
    mles = max_lyapunov_ensemble(w_hh, w_ih, bias, h, u, 50, 200, v=basis[:, :, 0])
    for e in range(members):
        alone = lyapunov_spectrum(w_hh[e], w_ih[e], bias[e], h[e], u[:, e], 50, 200, k, basis=basis[e])
        assert together[e].exponents == pytest.approx(alone.exponents, abs=1e-6)
        assert abs(together[e].exponents[0] - mles[e].mle) < 1e-6
    assert together[0].exponents[0] < 0 < together[-1].exponents[0]  # the members really differ


@pytest.mark.parametrize("k", [0, 21])
def test_k_out_of_range_is_refused(k):
    n = 20
    with pytest.raises(ValueError, match="k must be between 1 and the hidden size 20"):
        lyapunov_spectrum(torch.eye(n), torch.zeros(n, 0), torch.zeros(n), torch.zeros(2, n), None, 1, 1, k)


def test_lyapunov_command_logs_the_spectrum(run_cli, tmp_path):
    import pandas as pd

    from conftest import TINY_CHAOS

    out = tmp_path / "spectrum"
    result = run_cli("lyapunov", *TINY_CHAOS, "lyapunov.k=3", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    m = pd.read_csv(out / "metrics.csv").pivot_table(index="step", columns="metric", values="value")
    assert {"mle", "le_1", "le_2", "le_3", "log_sensitivity"} <= set(m.columns) and "le_4" not in m.columns
    assert (m.le_1 == m.mle).all()
    assert (m.le_3 < m.le_1).all()  # (20 steps: finite-time exponents need not be ordered pairwise)


@pytest.mark.parametrize("k,message", [("21", "lyapunov.k must be <= model.hidden (20), got 21"),
                                       ("0", "lyapunov.k must be >= 1, got 0")])
def test_bad_k_exits_2_with_one_line(run_cli, tmp_path, k, message):
    from conftest import TINY_CHAOS

    result = run_cli("lyapunov", *TINY_CHAOS, f"lyapunov.k={k}", "--out", str(tmp_path / "bad"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"salrun: error: {message}"
    assert not (tmp_path / "bad").exists()
