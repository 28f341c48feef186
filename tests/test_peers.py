"""The peers of docs/SCIENCE.md §4 as methods and inits: orthogonal, critical, LSUV, gradient flossing."""
import math

import pytest
import torch
from scipy.integrate import quad

from salrun.flossing import flossing_loss, lyapunov_exponents
from salrun.inits import critical_, lsuv_, orthogonal_, random_
from salrun.meanfield import chi_1, critical_sigma_w
from salrun.methods import FlossingMethod, OrthogonalMethod, TaskSampler
from salrun.models import ElmanRNN, MLP
from salrun.settings import (CriticalSettings, FlossingSettings, InitSettings, LSUVSettings, MLPSettings,
                             OrthogonalSettings, RNNSettings)
from conftest import make_task
from single_thread import one_thread  # noqa: F401  (autouse)




def mlp(depth=4, width=16, inputs=2, scale=0.3):
    return MLP(inputs, 2, MLPSettings(depth, width, InitSettings(scale=scale)), torch.Generator().manual_seed(0))


def rnn(hidden=16, scale=0.3, inputs=1, density=1.0):
    settings = RNNSettings(hidden, density, 1.0, InitSettings(scale=scale))
    return ElmanRNN(inputs, 1, settings, torch.Generator().manual_seed(0))


# --- critical: the χ₁ = 1 line --------------------------------------------------------------

def test_critical_sigma_w_without_bias_is_one():
    # Known: with σ_b = 0 the fixed point is q* = 0 and χ₁ = σ_w², so the edge of chaos is σ_w = 1.
    assert critical_sigma_w(0.0) == pytest.approx(1.0, abs=1e-9)


def _gauss(f, q):
    return quad(lambda z: f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -40, 40,
                limit=200)[0]


@pytest.mark.parametrize("q", [0.3, 2.0])
def test_critical_sigma_w_matches_the_line_parametrised_by_q(q):
    # A different route: on the χ₁ = 1 line, fix q* instead of σ_b. Then χ₁ = 1 gives
    # σ_w² = 1/E[tanh'(√q z)²] and the fixed point gives σ_b² = q - σ_w² E[tanh(√q z)²],
    # with adaptive quadrature and no root finding at all.
    sigma_w_sq = 1 / _gauss(lambda u: (1 - math.tanh(u) ** 2) ** 2, q)
    sigma_b_sq = q - sigma_w_sq * _gauss(lambda u: math.tanh(u) ** 2, q)
    assert sigma_b_sq > 0
    assert critical_sigma_w(math.sqrt(sigma_b_sq)) == pytest.approx(math.sqrt(sigma_w_sq), rel=1e-6)


def _log_growth_per_layer(model: MLP, width: int) -> float:
    """Mean ln of the growth of a tangent vector per square hidden layer (v ← diag(1-h²)·W v)."""
    generator = torch.Generator().manual_seed(1)
    h = torch.tanh(model.hidden_linears()[0](torch.randn(64, 2, generator=generator)))
    v = torch.randn(64, width, generator=generator)
    v = v / v.norm(dim=1, keepdim=True)
    layers = model.hidden_linears()[1:]
    log_growth = torch.zeros(64)
    with torch.no_grad():
        for linear in layers:
            h = torch.tanh(linear(h))
            v = (1 - h * h) * (v @ linear.weight.T)
            norm = v.norm(dim=1, keepdim=True)
            log_growth += norm[:, 0].log()
            v = v / norm
    return float(log_growth.mean() / len(layers))


def test_critical_init_neither_shrinks_nor_grows_perturbations_in_depth():
    width, depth = 300, 31
    model = mlp(depth=depth, width=width)
    critical_(model, CriticalSettings(sigma_b=0.3))
    at_edge = _log_growth_per_layer(model, width)
    with torch.no_grad():
        for linear in model.hidden_linears()[1:]:
            linear.weight.mul_(0.7)  # well inside the ordered phase
    ordered = _log_growth_per_layer(model, width)
    assert abs(at_edge) < 0.03
    assert ordered < -0.2


def test_critical_init_draws_the_solved_scales():
    model = rnn(hidden=300)
    critical_(model, CriticalSettings(sigma_b=0.5))
    sigma_w = critical_sigma_w(0.5)
    assert model.weight_hh.std().item() * math.sqrt(300) == pytest.approx(sigma_w, rel=0.02)
    assert model.bias.std().item() == pytest.approx(0.5, rel=0.2)
    assert chi_1(sigma_w, 0.5) == pytest.approx(1.0, abs=1e-9)


# --- orthogonal -------------------------------------------------------------------------------

def test_orthogonal_mlp_layers_have_every_singular_value_equal_to_the_gain():
    model = mlp(depth=4, width=16)
    readout = model.linears()[-1].weight.detach().clone()
    orthogonal_(model, OrthogonalSettings(gain=1.5))
    for linear in model.hidden_linears():  # the first is 16 x 2: semi-orthogonal
        singular = torch.linalg.svdvals(linear.weight.detach())
        assert torch.allclose(singular, torch.full_like(singular, 1.5), atol=1e-5)
    assert torch.equal(model.linears()[-1].weight.detach(), readout)  # the readout keeps its init


def test_orthogonal_rnn_recurrent_matrix():
    model = rnn(hidden=12)
    input_weights = model.weight_ih.detach().clone()
    orthogonal_(model, OrthogonalSettings(gain=0.9))
    w = model.weight_hh.detach()
    assert torch.allclose(w @ w.T, 0.81 * torch.eye(12), atol=1e-5)
    assert torch.equal(model.weight_ih.detach(), input_weights)


def test_method_orthogonal_and_init_orthogonal_are_the_same_code():
    a, b = mlp(), mlp()
    torch.manual_seed(5)
    OrthogonalMethod(OrthogonalSettings(gain=1.2)).on_init(a, None)
    torch.manual_seed(5)
    orthogonal_(b, OrthogonalSettings(gain=1.2))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_random_init_leaves_the_model_as_built():
    a, b = mlp(), mlp()
    random_(a)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# --- LSUV -------------------------------------------------------------------------------------

def test_lsuv_gives_every_hidden_layer_unit_output_variance():
    model = mlp(depth=8, width=16, scale=0.05)  # far from unit variance before
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0)) * 3
    settings = LSUVSettings(tol=0.05)

    def variances():  # of each hidden layer's U = W h + θ
        found, h = [], x
        for layer in model.hidden_linears():
            u = layer(h)
            found.append(float(u.var()))
            h = torch.tanh(u)
        return found

    before = variances()
    lsuv_(model, settings, lambda rows: (x[:rows], None))
    after = variances()
    assert max(abs(v - 1) for v in before) > 0.5
    assert all(abs(v - 1) < settings.tol for v in after), after


def test_lsuv_draws_its_batch_from_the_task():
    task = make_task("spirals")
    sampler = TaskSampler(task, seed=0)
    model = mlp(depth=3, width=8)
    lsuv_(model, LSUVSettings(samples=64), sampler)
    x, _ = TaskSampler(task, seed=0)(64)
    with torch.no_grad():
        first = model.hidden_linears()[0](x)
    assert abs(float(first.var()) - 1) < 0.1


# --- gradient flossing ------------------------------------------------------------------------

def _quiet_rnn(weight: torch.Tensor) -> ElmanRNN:
    """An RNN that stays at h = 0 (no input, no bias), so every Jacobian is W_hh itself."""
    model = rnn(hidden=weight.shape[0])
    with torch.no_grad():
        model.weight_hh.copy_(weight)
        model.bias.zero_()
    return model


def test_exponents_of_a_diagonal_linearised_net_are_its_log_moduli():
    d = torch.tensor([0.9, -0.6, 0.4, 0.3, 0.2, 0.1])
    model = _quiet_rnn(torch.diag(d))
    x = torch.zeros(1000, 2, 1)
    with torch.no_grad():
        exponents = lyapunov_exponents(model, x, k=3, generator=torch.Generator().manual_seed(0))
    expected = d.abs().log()[:3]
    assert torch.allclose(exponents, expected.expand(2, 3), atol=0.01)


def test_flossing_loss_gradient_matches_finite_differences():
    torch.manual_seed(0)
    model = rnn(hidden=5, scale=1.5).double()
    x = torch.randn(6, 2, 1, dtype=torch.float64)

    def loss_of(w):
        with torch.no_grad():
            model.weight_hh.copy_(w)
        model.zero_grad()
        return flossing_loss(lyapunov_exponents(model, x, 2, generator=torch.Generator().manual_seed(1)))

    w0 = model.weight_hh.detach().clone()
    loss_of(w0).backward()
    analytic = model.weight_hh.grad.clone()
    direction = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    eps = 1e-6
    with torch.no_grad():
        numeric = (loss_of(w0 + eps * direction) - loss_of(w0 - eps * direction)) / (2 * eps)
    assert float((analytic * direction).sum()) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)


def _flossing(task_name="lag_sign", lag=30, **overrides):
    task = make_task(task_name, lag=lag, test_size=10)
    settings = FlossingSettings(**{"k": 4, "mode": "before", "pre_steps": 30, "floss_lr": 0.01, **overrides})
    return task, settings


def test_flossing_before_training_drives_the_top_exponents_toward_zero():
    task, settings = _flossing()
    model = rnn(hidden=16, scale=0.5)  # small weights: every exponent well below 0
    x, _ = TaskSampler(task, seed=9)(8)

    def exponents():
        with torch.no_grad():
            return lyapunov_exponents(model, x, 4, generator=torch.Generator().manual_seed(0)).mean(0)

    before = exponents()
    FlossingMethod(settings).on_init(model, None, TaskSampler(task, seed=0))
    after = exponents()
    assert before.max() < -0.4
    assert float(after.pow(2).sum()) < 0.05 * float(before.pow(2).sum())
    assert after.abs().max() < 0.25


def test_flossing_during_training_runs_a_burst_every_few_steps():
    task, settings = _flossing(mode="during", every=3, burst=2)
    model = rnn(hidden=8, scale=2.0)
    method = FlossingMethod(settings)
    start = model.weight_hh.detach().clone()
    method.on_init(model, None, TaskSampler(task, seed=0))
    assert torch.equal(model.weight_hh.detach(), start)  # nothing before training in this mode
    method.after_step()
    method.after_step()
    assert torch.equal(model.weight_hh.detach(), start)
    method.after_step()  # the third step: a burst
    assert not torch.equal(model.weight_hh.detach(), start)
    assert method.exponents.shape == (settings.trajectories, settings.k)


def test_flossing_state_round_trips():
    task, settings = _flossing(mode="during", every=2, burst=1)
    model = rnn(hidden=8, scale=2.0)
    method = FlossingMethod(settings)
    method.on_init(model, None, TaskSampler(task, seed=0))
    for _ in range(4):
        method.after_step()
    state = method.state_dict()
    other = FlossingMethod(settings)
    other.on_init(rnn(hidden=8, scale=2.0), None, TaskSampler(task, seed=0))
    other.load_state_dict(state)
    assert other.steps == 4
    assert torch.equal(other.sample(3)[0], method.sample(3)[0])  # the same data from here on


def test_flossing_keeps_a_sparse_mask():
    task, settings = _flossing(pre_steps=3)
    model = rnn(hidden=10, scale=2.0, density=0.5)
    FlossingMethod(settings).on_init(model, None, TaskSampler(task, seed=0))
    assert torch.all(model.weight_hh.detach()[model.mask == 0] == 0)
