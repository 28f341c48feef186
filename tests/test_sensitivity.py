"""The SAL gradient against autograd, and the sensitivity definitions."""
import pytest
import torch

from salrun.neurons import (activate, derivative, log_sensitivity, log_sensitivity_gradient,
                                sensitivity)


def mean_log_s(weights, bias, inputs, activation):
    """Batch mean of ln s_j for every neuron, computed by autograd from U."""
    u = sum(x @ w.T for w, x in zip(weights, inputs)) + bias
    o = activate(u, activation)
    norm = torch.sqrt(sum(w.pow(2).sum(1) for w in weights))
    return torch.log(derivative(o, activation) * norm).mean(0)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid_shifted"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_analytic_gradient_matches_autograd(activation, blocks):
    gen = torch.Generator().manual_seed(0)
    neurons, batch = 5, 7
    sizes = [4, 3][:blocks]
    weights = [torch.randn(neurons, n, generator=gen, dtype=torch.float64, requires_grad=True) for n in sizes]
    bias = torch.randn(neurons, generator=gen, dtype=torch.float64, requires_grad=True)
    inputs = [torch.randn(batch, n, generator=gen, dtype=torch.float64) for n in sizes]  # detached
    objective = mean_log_s(weights, bias, inputs, activation).sum()  # neurons are independent
    auto = torch.autograd.grad(objective, weights + [bias])
    with torch.no_grad():
        u = sum(x @ w.T for w, x in zip(weights, inputs)) + bias
        o = activate(u, activation)
        grads, bias_grad = log_sensitivity_gradient(weights, inputs, o, activation)
    for analytic, expected in zip(grads + [bias_grad], auto):
        torch.testing.assert_close(analytic, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid_shifted"])
def test_linear_objective_is_gradient_of_s(activation):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    o = activate(x @ w.T + b, activation)
    s = derivative(o, activation) * w.norm(dim=1)
    auto = torch.autograd.grad(s.mean(0).sum(), [w, b])
    with torch.no_grad():
        grads, bias_grad = log_sensitivity_gradient([w], [x], o.detach(), activation, sample_weight=s.detach())
    torch.testing.assert_close(grads[0], auto[0])
    torch.testing.assert_close(bias_grad, auto[1])


def test_sensitivity_is_norm_of_input_gradient():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    x = torch.randn(4, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: torch.tanh(w @ v + b), x)
    s = sensitivity(torch.tanh(w @ x + b)[None], [w])[0]
    torch.testing.assert_close(s, jac.norm(dim=1))


def test_rms_log_sensitivity_is_expected_one_step_gain():
    # E‖Jδ‖²/‖δ‖² = mean_j s_j² for random δ: check by Monte Carlo.
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(20, 20, generator=gen, dtype=torch.float64) / 4
    o = torch.tanh(torch.randn(20, generator=gen, dtype=torch.float64))
    jac = (1 - o * o)[:, None] * w
    delta = torch.randn(200000, 20, generator=gen, dtype=torch.float64)
    gain = ((delta @ jac.T).pow(2).sum(1) / delta.pow(2).sum(1)).mean()
    s = sensitivity(o[None], [w])
    assert abs(float(log_sensitivity(s)) - 0.5 * float(gain.log())) < 0.01
    assert float(log_sensitivity(s, "meanlog")) <= float(log_sensitivity(s)) + 1e-12  # Jensen
