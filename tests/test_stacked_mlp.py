"""salrun's MLP holds its hidden layers after the first as one (depth-1, width, width) tensor
(issue 29). SAL on it gives the updates of SAL on the same net written one nn.Linear per layer (an
nn.Sequential, read by hooks), in float64; the inits draw what the per-layer MLP drew; a state_dict
of the per-layer MLP (an old model.pt) loads; an old checkpoint is refused in one line."""
import copy

import pytest
import torch
from torch import nn

from salrun.activity import per_layer
from salrun.inits import critical_, lsuv_, orthogonal_
from salrun.jobs import load_checkpoint
from salrun.models import MLP, init_bias_, init_weights_
from salrun.results import RunFolderError
from salrun.sal import SAL
from salrun.settings import CriticalSettings, InitSettings, LSUVSettings, MLPSettings, OrthogonalSettings


def per_layer_twin(model: MLP) -> nn.Sequential:
    """The same net as the nn.Sequential of Linear → Tanh that the MLP was before it was stacked."""
    modules = []
    for layer in model.linears():
        linear = nn.Linear(layer.weight.shape[1], layer.weight.shape[0]).to(layer.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(layer.weight)
            linear.bias.copy_(layer.bias)
        modules += [linear, nn.Tanh()]
    return nn.Sequential(*modules[:-1])


def old_state_dict(twin: nn.Sequential) -> dict:
    return twin.state_dict()  # 0.weight, 0.bias, 2.weight, … the readout last


@pytest.mark.parametrize("overrides", [{}, {"objective": "linear"}, {"gate": "two_sided", "beta": 0.5},
                                       {"average": "geometric"}, {"include_output": True, "target": 1.5},
                                       {"layer_target": True}])
@pytest.mark.parametrize("fused", [True, False])
def test_sal_on_the_stack_matches_sal_on_one_linear_per_layer(overrides, fused):
    model = MLP(3, 2, MLPSettings(depth=7, width=5, init=InitSettings(scale=0.8, bias_scale=0.1)),
                torch.Generator().manual_seed(0)).double()
    twin = per_layer_twin(model)
    stacked, layered = SAL(model, **overrides), SAL(twin, **overrides)
    stacked.fused = layered.fused = fused
    generator = torch.Generator().manual_seed(1)
    start = [layer.weight.clone() for layer in model.linears()]
    for _ in range(5):
        x = torch.randn(9, 3, generator=generator, dtype=torch.float64)
        torch.testing.assert_close(model(x), twin(x), rtol=0, atol=1e-12)
        if not overrides.get("layer_target"):  # (the per-layer net's passes are then joined by copies, not chained)
            model(x * 0.5), twin(x * 0.5)  # two passes per step
        stacked.step(), layered.step()
    linears = [m for m in twin if isinstance(m, nn.Linear)]
    for k, (layer, linear) in enumerate(zip(model.linears(), linears)):
        assert (layer.weight - linear.weight).abs().max() < 1e-12, k
        assert (layer.bias - linear.bias).abs().max() < 1e-12, k
    assert any(not torch.equal(a, layer.weight) for a, layer in zip(start[1:-1], model.linears()[1:-1]))  # SAL moved the stack
    assert len(stacked.averages) == len(layered.averages) == 7 + bool(overrides.get("include_output"))
    for a, b in zip(stacked.averages, layered.averages):
        assert (a - b).abs().max() < 1e-12


def test_the_stack_is_one_activity_and_six_tensors():
    model = MLP(2, 1, MLPSettings(depth=300, width=4))
    model(torch.randn(5, 2))
    layers = model.layer_activity()
    assert len(layers) == 2 and layers[1].output.shape == (299, 5, 4) and len(per_layer(layers)) == 300
    assert [name for name, _ in model.named_parameters()] == ["w_first", "b_first", "w_hidden", "b_hidden",
                                                              "w_out", "b_out"]
    sal = SAL(model)
    sal.step()
    assert len(sal.averages) == 300 and sal.state_dict()["layers"][299] == ("hidden.299", 4)


def test_depth_one_has_an_empty_stack():
    model = MLP(2, 3, MLPSettings(depth=1, width=4))
    sal = SAL(model)
    model(torch.randn(5, 2)).sum().backward()
    sal.step()
    assert model.w_hidden.shape == (0, 4, 4) and len(sal.averages) == 1
    assert len(model.weight_grads()) == 2


def test_init_draws_and_values_are_those_of_the_per_layer_mlp():
    """The values come from the job's generator as before, and torch's global stream is where
    nn.Linear's own init left it (orthogonal and critical draw from it next)."""
    settings = MLPSettings(depth=5, width=6, init=InitSettings(scale=0.7, bias_scale=0.2))
    torch.manual_seed(3)
    old = [nn.Linear(2, 6), *[nn.Linear(6, 6) for _ in range(4)], nn.Linear(6, 3)]
    generator = torch.Generator().manual_seed(4)
    for linear in old:
        init_weights_(linear.weight, settings.init, generator=generator)
        init_bias_(linear.bias, settings.init, generator=generator)
    after_old = torch.get_rng_state()
    torch.manual_seed(3)
    model = MLP(2, 3, settings, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), after_old)
    for layer, linear in zip(model.linears(), old):
        assert torch.equal(layer.weight, linear.weight.detach()) and torch.equal(layer.bias, linear.bias.detach())


@pytest.mark.parametrize("init", ["orthogonal", "critical", "lsuv"])
def test_inits_write_each_layer_as_they_wrote_each_linear(init):
    settings = MLPSettings(depth=4, width=6)
    torch.manual_seed(0)
    model = MLP(2, 1, settings)
    twin = per_layer_twin(model)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    if init == "orthogonal":
        orthogonal_(model, OrthogonalSettings(gain=1.1))
        torch.set_rng_state(state)
        for linear in [m for m in twin if isinstance(m, nn.Linear)][:-1]:
            nn.init.orthogonal_(linear.weight, gain=1.1)
    elif init == "critical":
        critical_(model, CriticalSettings(sigma_b=0.05))
        torch.set_rng_state(state)
        from salrun.meanfield import critical_sigma_w
        for linear in [m for m in twin if isinstance(m, nn.Linear)][:-1]:
            with torch.no_grad():
                linear.weight.normal_(0.0, critical_sigma_w(0.05) / linear.weight.shape[1] ** 0.5)
                linear.bias.normal_(0.0, 0.05)
    else:
        variances = lsuv_(model, LSUVSettings(tol=0.05), lambda rows: (x[:rows], None))
        assert all(abs(v - 1) < 0.05 for v in variances)
        return
    for layer, linear in zip(model.linears(), [m for m in twin if isinstance(m, nn.Linear)]):
        torch.testing.assert_close(layer.weight, linear.weight.detach(), rtol=0, atol=0)
        torch.testing.assert_close(layer.bias, linear.bias.detach(), rtol=0, atol=0)


def test_a_per_layer_state_dict_loads_and_a_copy_carries_no_activity(tmp_path):
    model = MLP(3, 2, MLPSettings(depth=4, width=5), torch.Generator().manual_seed(0))
    twin = per_layer_twin(model)
    fresh = MLP(3, 2, MLPSettings(depth=4, width=5), torch.Generator().manual_seed(9))
    fresh.load_state_dict(old_state_dict(twin))
    x = torch.randn(6, 3)
    torch.testing.assert_close(fresh(x), twin(x), rtol=0, atol=0)
    copy.deepcopy(fresh)  # after a training-mode forward: the recorded activity is not copied
    assert copy.deepcopy(fresh)._outputs == []


def test_an_old_checkpoint_is_refused_in_one_line(tmp_path):
    model = MLP(3, 2, MLPSettings(depth=3, width=5))
    checkpoint = {key: 0 for key in ("step", "config", "optimizer", "method", "rng", "metric_rows",
                                     "wall_seconds")}
    checkpoint["model"] = old_state_dict(per_layer_twin(model))
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    with pytest.raises(RunFolderError, match="delete it to restart") as error:
        load_checkpoint(tmp_path)
    assert "\n" not in str(error.value)


def test_every_m_steps_is_one_update_in_m_at_m_times_the_rate_and_resumes():
    """method.update_every = m: the calls 0, m, 2m, … update at m·η from the passes since the call before;
    the others clear them. The count is part of SAL's state, so a resume continues the cycle."""
    settings = MLPSettings(depth=5, width=4, init=InitSettings(scale=0.5))
    model = MLP(2, 1, settings, torch.Generator().manual_seed(0)).double()
    twin = copy.deepcopy(model)
    every, plain = SAL(model, lr=0.01, update_every=3), SAL(twin, lr=0.03)
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(6, 2, generator=generator, dtype=torch.float64) for _ in range(7)]
    for k, x in enumerate(batches):
        assert every.reads_next == (k % 3 == 0)
        model(x)
        every.step()
        if k % 3 == 0:
            twin(x)
            plain.step()
        if k == 4:  # a resume between updates
            resumed = SAL(model, lr=0.01, update_every=3)
            resumed.load_state_dict(every.state_dict())
            every = resumed
    for a, b in zip(model.parameters(), twin.parameters()):
        assert (a - b).abs().max() < 1e-12
    assert every.calls == 7
