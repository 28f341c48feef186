"""SAL's options for depth (issue 19, docs/DEPTH.md): the geometric (mean-log) average and the
proportional gate, each checked against the formula computed here from the layer's x, o and W."""
import pytest
import torch
from torch import nn

from salrun.launch import ensemble_groups
from salrun.launch import compose
from salrun.models import MLP
from salrun.sal import SAL
from salrun.settings import ConfigError, InitSettings, MLPSettings, SALSettings, job_settings


def hidden_activity(model: MLP, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x, o) of each hidden layer, by a forward pass written out here."""
    pairs, h = [], x
    for linear in model.hidden_linears():
        o = torch.tanh(h @ linear.weight.T + linear.bias)
        pairs.append((h, o))
        h = o
    return pairs


def batch_mean(o: torch.Tensor, w: torch.Tensor, average: str) -> torch.Tensor:
    s = (1 - o * o) * w.norm(dim=1)
    return s.mean(0) if average == "arithmetic" else torch.exp(torch.log(s).mean(0))


def expected_update(w, b, x, o, step):
    """W + η g·(w/‖w‖² - 2·mean(o xᵀ)), θ + η g·mean(-2 o): docs/SCIENCE.md §2 for tanh, per neuron."""
    n = o.shape[0]
    w_new = w + step[:, None] * (w / w.pow(2).sum(1, keepdim=True) - 2 * o.T @ x / n)
    return w_new, b + step * (-2 * o).mean(0)


def mlp(depth: int = 3, seed: int = 0) -> MLP:
    # scale 1.2: the neurons' sensitivities straddle 1, and the two averages differ
    return MLP(3, 1, MLPSettings(depth=depth, width=5, init=InitSettings(scale=1.2, bias_scale=0.3)),
               generator=torch.Generator().manual_seed(seed))


def case(depth: int, seed: int, model_seed: int = 0):
    """A small MLP, a batch, each hidden layer's (x, o) and its (W, θ) before SAL's step."""
    model, x = mlp(depth, model_seed), torch.randn(16, 3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        pairs = hidden_activity(model, x)
    linears = model.hidden_linears()
    before = [(l.weight.detach().clone(), l.bias.detach().clone()) for l in linears]
    return model, x, pairs, linears, before


def run_step(model: MLP, x: torch.Tensor, fused: bool, monkeypatch, **settings) -> SAL:
    monkeypatch.setattr(SAL, "fused", fused)
    sal = SAL(model, beta=0.0, **settings)
    with torch.no_grad():
        model(x)
    sal.step()
    return sal


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("depth", [1, 3])  # one layer alone; a stack updated as one group
def test_geometric_average_gates_on_exp_mean_log_s(fused, depth, monkeypatch):
    model, x, pairs, linears, before = case(depth, seed=1)
    geometric = [batch_mean(o, l.weight.detach(), "geometric") for (_, o), l in zip(pairs, linears)]
    arithmetic = [batch_mean(o, l.weight.detach(), "arithmetic") for (_, o), l in zip(pairs, linears)]
    # A target between the two means of some neurons: there the two averages gate oppositely.
    ordered = torch.cat(geometric).detach().sort().values
    middle = len(ordered) // 2
    target = float(ordered[middle - 1: middle + 1].mean())  # midway between two neurons, none at it
    differ = sum(int(((g < target) != (a < target)).sum()) for g, a in zip(geometric, arithmetic))
    sal = run_step(model, x, fused, monkeypatch, lr=0.05, gate="two_sided", target=target, average="geometric")
    for (w, b), (xi, o), g, linear, average in zip(before, pairs, geometric, linears, sal.averages):
        torch.testing.assert_close(average, g, rtol=1e-5, atol=1e-6)
        step = 0.05 * torch.where(g < target, 1.0, -1.0)
        w_new, b_new = expected_update(w, b, xi, o, step)
        torch.testing.assert_close(linear.weight.detach(), w_new, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(linear.bias.detach(), b_new, rtol=1e-5, atol=1e-6)
    assert differ >= 1 or depth == 1  # the stack at least shows the option matters


@pytest.mark.parametrize("fused", [True, False])
def test_geometric_average_blends_logs(fused, monkeypatch):
    """s̄ ← exp(β ln s̄ + (1-β) ln m) for the batch's geometric mean m."""
    monkeypatch.setattr(SAL, "fused", fused)
    model = mlp(depth=2)
    sal = SAL(model, lr=0.0, beta=0.7, average="geometric")
    means = []
    for seed in (2, 3):
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(seed))
        means.append([batch_mean(o, l.weight.detach(), "geometric")
                      for (_, o), l in zip(hidden_activity(model, x), model.hidden_linears())])
        with torch.no_grad():
            model(x)
        sal.step()
    for layer, average in enumerate(sal.averages):
        expected = torch.exp(0.7 * torch.log(means[0][layer]) + 0.3 * torch.log(means[1][layer]))
        torch.testing.assert_close(average, expected, rtol=1e-5, atol=1e-6)


def test_geometric_mean_of_a_saturated_neuron_stays_finite():
    layer = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[100.0, 0.0], [0.3, 0.0]]))
        layer[0].bias.zero_()
    sal = SAL(layer, lr=0.01, average="geometric", gate="two_sided")
    layer(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # neuron 0: tanh(±100) = ±1 in float32, f' = 0
    sal.step()
    assert torch.isfinite(layer[0].weight).all() and sal.averages[0][0] < 1e-9


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("depth", [1, 3])
def test_proportional_gate_scales_the_rate_by_the_log_error(fused, depth, monkeypatch):
    model, x, pairs, linears, before = case(depth, seed=4)
    means = [batch_mean(o, l.weight.detach(), "arithmetic") for (_, o), l in zip(pairs, linears)]
    errors = torch.cat([torch.log(1.0 / m) for m in means])
    band = float(errors.abs().median())  # about half the neurons inside the band, half outside
    run_step(model, x, fused, monkeypatch, lr=0.05, gate="proportional", band=band, target=1.0)
    fractions = []
    for (w, b), (xi, o), m, linear in zip(before, pairs, means, linears):
        g = (torch.log(1.0 / m) / band).clamp(-1, 1)
        fractions.append(g)
        w_new, b_new = expected_update(w, b, xi, o, 0.05 * g)
        torch.testing.assert_close(linear.weight.detach(), w_new, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(linear.bias.detach(), b_new, rtol=1e-5, atol=1e-6)
    g = torch.cat(fractions)
    assert ((g.abs() > 0.01) & (g.abs() < 0.99)).any()  # the proportional part was exercised


def test_band_must_be_positive():
    with pytest.raises(ConfigError, match="method.band must be > 0"):
        SALSettings(band=0.0)


def test_ensemble_runs_the_new_options_alone():
    """BatchedSAL knows the arithmetic average and every gate (salrun.rule): the geometric average and
    layer_target run as single runs."""
    base = ["experiment=paper_deep_ffn", "model.depth=3", "train.steps=2"]
    cfgs = [compose("train", [*base, f"seed={seed}", *extra])
            for seed, extra in [(0, []), (1, []), (2, ["method.average=geometric"]), (3, ["method.average=geometric"]),
                                (4, ["method.gate=proportional"]), (5, ["method.layer_target=true"]),
                                (6, ["method.gate=dead_band"])]]
    together, alone = ensemble_groups([job_settings("train", cfg) for cfg in cfgs])
    assert together == [[0, 1, 4, 6]] and alone == [2, 3, 5]


def tangent_gains_by_autograd(model: MLP, x: torch.Tensor, seed: int) -> torch.Tensor:
    """ln(‖J_l δ‖/‖δ‖) per layer by forward-mode autograd through the real layers, δ from the
    first layer's input on (the same random start as SAL's stream), renormalised per layer."""
    delta = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    delta = delta / delta.norm(dim=1, keepdim=True)
    h, gains = x, []
    for linear in model.hidden_linears():
        h, delta = torch.func.jvp(lambda v: torch.tanh(linear(v)), (h,), (delta,))
        norm = delta.norm(dim=1)
        gains.append(torch.log(norm).mean())
        delta = delta / norm[:, None]
    return torch.stack(gains).detach()


@pytest.mark.parametrize("fused", [True, False])
def test_layer_target_moves_each_layers_target_by_its_measured_gap(fused, monkeypatch):
    model, x, pairs, linears, before = case(3, seed=6, model_seed=5)
    gains = tangent_gains_by_autograd(model, x, seed=0)  # SAL's tangent stream starts at seed 0
    log_rms = torch.stack([0.5 * torch.log(((1 - o * o) * l.weight.detach().norm(dim=1)).square().mean())
                           for (_, o), l in zip(pairs, linears)])
    gap = (log_rms - gains).clamp(-0.2, 0.2)
    means = [batch_mean(o, l.weight.detach(), "arithmetic") for (_, o), l in zip(pairs, linears)]
    layer = int(gap.abs().argmax())
    base = float(means[layer][0] * torch.exp(-gap[layer] / 2))  # neuron 0 there: the two targets gate it oppositely
    sal = run_step(model, x, fused, monkeypatch, lr=0.05, gate="two_sided", target=base, layer_target=True)
    torch.testing.assert_close(sal.targets, base * torch.exp(gap), rtol=1e-4, atol=1e-6)
    for (w, b), (xi, o), m, linear, target in zip(before, pairs, means, linears, base * torch.exp(gap)):
        step = 0.05 * torch.where(m < target, 1.0, -1.0)
        w_new, b_new = expected_update(w, b, xi, o, step)
        torch.testing.assert_close(linear.weight.detach(), w_new, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(linear.bias.detach(), b_new, rtol=1e-5, atol=1e-6)
    assert (means[layer][0] < base) != (means[layer][0] < base * torch.exp(gap[layer]))


def test_layer_target_refuses_a_recurrent_layer():
    rnn = nn.RNN(3, 4)
    sal = SAL(rnn, layer_target=True)
    rnn(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="feed-forward"):
        sal.step()


def test_paper_deep_ffn_is_the_papers_start_and_deep_ffn_orthogonal_differs_in_init_and_target_only():
    """Issue 30: presets named paper_* start where the paper starts (small random weights, here at
    target 1.06); deep_ffn_orthogonal (issue 19's setting) differs from it in the init and the target only."""
    small, base = compose("train", ["experiment=paper_deep_ffn"]), compose("train", ["experiment=deep_ffn_orthogonal"])
    assert base["init"]["name"] == "orthogonal" and base["method"]["target"] == 1.0
    assert small["init"]["name"] == "random" and small["method"]["target"] == 1.06
    differ = {key for key in base if key != "experiment" and small[key] != base[key]}
    assert differ == {"init", "method"}
    assert {k for k in base["method"] if small["method"][k] != base["method"][k]} == {"target"}
    jobs = job_settings("train", base), job_settings("train", small)
    assert [job.init.name for job in jobs] == ["orthogonal", "random"]


def test_an_init_method_on_the_orthogonal_preset_says_to_add_init_random():
    with pytest.raises(ConfigError, match="add init=random to run method=lsuv"):
        job_settings("train", compose("train", ["experiment=deep_ffn_orthogonal", "method=lsuv"]))
    assert job_settings("train", compose("train", ["experiment=deep_ffn_orthogonal", "method=lsuv", "init=random"])).method.name == "lsuv"


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("depth", [1, 3])
def test_dead_band_gate_rests_inside_the_band_and_steps_fully_outside(fused, depth, monkeypatch):
    """gate=dead_band: g = sign(ln(target/s̄)) where |ln(target/s̄)| > band, else 0."""
    model, x, pairs, linears, before = case(depth, seed=4)
    means = [batch_mean(o, l.weight.detach(), "arithmetic") for (_, o), l in zip(pairs, linears)]
    target = float(torch.cat(means).median())  # neurons on both sides of it
    band = float(torch.cat([torch.log(target / m) for m in means]).abs().median())  # half inside, half outside
    run_step(model, x, fused, monkeypatch, lr=0.05, gate="dead_band", band=band, target=target)
    gates = []
    for (w, b), (xi, o), m, linear in zip(before, pairs, means, linears):
        error = torch.log(target / m)
        g = torch.where(error.abs() > band, torch.sign(error), torch.zeros_like(error))
        gates.append(g)
        w_new, b_new = expected_update(w, b, xi, o, 0.05 * g)
        torch.testing.assert_close(linear.weight.detach(), w_new, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(linear.bias.detach(), b_new, rtol=1e-5, atol=1e-6)
    g = torch.cat(gates)
    assert (g == 0).any() and (g == 1).any() and (g == -1).any()  # inside, below and above the band


def test_every_gate_the_settings_offer_has_its_rule():
    """A gate named in SALSettings.gate is one that salrun.rule computes, for every path."""
    import typing

    from salrun.rule import GATES

    offered = typing.get_args(typing.get_type_hints(SALSettings)["gate"])
    assert set(offered) == set(GATES)
