"""The batched ensemble estimate equals the one-network estimate (float64)."""
import math

import pytest
import torch

from salrun.lyapunov import max_lyapunov, max_lyapunov_ensemble
from single_thread import one_thread  # noqa: F401  (autouse)


@pytest.mark.parametrize("inputs", [0, 3])
def test_ensemble_matches_unbatched(inputs):
    gen = torch.Generator().manual_seed(5)
    members, n, batch, transient, steps = 4, 30, 3, 50, 200
    gains = torch.tensor([0.6, 1.2, 1.8, 2.5], dtype=torch.float64)
    w_hh = torch.randn(members, n, n, generator=gen, dtype=torch.float64) * gains[:, None, None] / math.sqrt(n)
    w_ih = torch.randn(members, n, inputs, generator=gen, dtype=torch.float64)
    bias = 0.1 * torch.randn(members, n, generator=gen, dtype=torch.float64)
    h = torch.rand(members, batch, n, generator=gen, dtype=torch.float64) * 2 - 1
    v = torch.randn(members, batch, n, generator=gen, dtype=torch.float64)
    u = torch.randn(transient + steps, members, batch, inputs, generator=gen, dtype=torch.float64) if inputs else None
    together = max_lyapunov_ensemble(w_hh, w_ih, bias, h, u, transient, steps, v=v)
    for e in range(members):
        alone = max_lyapunov(w_hh[e], w_ih[e], bias[e], h[e], None if u is None else u[:, e], transient, steps,
                             v=v[e])
        assert abs(together[e].mle - alone.mle) < 1e-6
        assert abs(together[e].log_sensitivity - alone.log_sensitivity) < 1e-6
        torch.testing.assert_close(together[e].state, alone.state, rtol=0, atol=1e-6)
    assert together[0].mle < 0 < together[-1].mle  # the members really differ
