"""The SAL rule: gates, lifting sensitivity, user models, RNNs, masks."""
import torch
from torch import nn

from salrun.activity import per_layer
from salrun.models import ElmanRNN, MLP
from salrun.sal import SAL
from salrun.neurons import sensitivity
from salrun.settings import InitSettings, MLPSettings, RNNSettings, SALSettings


def rms_sensitivity(layer) -> float:
    return float(sensitivity(layer.output, [w.detach() for w in layer.weights]).pow(2).mean().sqrt())


def test_sal_lifts_random_layer_to_target():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(20, 30), nn.Tanh())
    with torch.no_grad():
        layer[0].weight.mul_(0.3 / layer[0].weight.norm(dim=1, keepdim=True))  # every ‖w_j‖ = 0.3
        layer[0].bias.zero_()
    sal = SAL(layer, lr=0.01)
    def inputs():  # the range of a tanh layer below
        return torch.rand(64, 20) * 2 - 1

    x = inputs()
    layer(x)
    before = rms_sensitivity(sal.layers()[0])
    for _ in range(2000):
        layer(inputs())
        sal.step()
    layer(x)
    after = rms_sensitivity(sal.layers()[0])
    assert 0.25 < before < 0.35
    assert abs(after - 1.0) <= 0.1


def test_one_sided_gate_leaves_sensitive_neurons_alone():
    torch.manual_seed(1)
    layer = nn.Sequential(nn.Linear(10, 4), nn.Tanh())
    with torch.no_grad():
        layer[0].weight.mul_(torch.tensor([[0.2], [0.2], [5.0], [5.0]]) / layer[0].weight.norm(dim=1, keepdim=True))
    before = layer[0].weight.detach().clone()
    sal = SAL(layer, lr=0.05, target=1.0)
    layer(0.01 * torch.randn(8, 10))  # tiny inputs: f' ≈ 1, s ≈ ‖w‖
    sal.step()
    changed = (layer[0].weight.detach() != before).any(dim=1)
    assert changed.tolist() == [True, True, False, False]


def test_two_sided_gate_descends_above_target():
    torch.manual_seed(2)
    layer = nn.Sequential(nn.Linear(10, 2), nn.Tanh())
    with torch.no_grad():
        layer[0].weight.mul_(torch.tensor([[0.2], [5.0]]) / layer[0].weight.norm(dim=1, keepdim=True))
    sal = SAL(layer, lr=0.05, gate="two_sided")
    for _ in range(5):
        layer(0.01 * torch.randn(8, 10))
        sal.step()
    norms = layer[0].weight.detach().norm(dim=1)
    assert norms[0] > 0.2 and norms[1] < 5.0


def test_moving_average_lags_by_beta():
    torch.manual_seed(3)
    layer = nn.Sequential(nn.Linear(5, 3), nn.Tanh())
    sal = SAL(layer, lr=0.0, beta=0.5)
    layer(torch.randn(4, 5))
    first = sensitivity(sal.layers()[0].output, sal.layers()[0].weights).mean(0)
    sal.step()
    layer(torch.randn(4, 5))
    second = sensitivity(sal.layers()[0].output, sal.layers()[0].weights).mean(0)
    sal.step()
    torch.testing.assert_close(sal.averages[0], 0.5 * first + 0.5 * second)


def test_user_sequential_model_and_output_option():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    sal = SAL(model)
    model(torch.randn(3, 4))
    assert [l.activation for l in sal.layers()] == ["tanh", "tanh"]
    sal = SAL(model, include_output=True)
    model(torch.randn(3, 4))
    assert [l.activation for l in sal.layers()] == ["tanh", "tanh", "linear"]


def test_eval_mode_records_nothing():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    sal = SAL(model)
    model.eval()
    model(torch.randn(3, 4))
    assert sal.layers() == []


def test_mlp_deep_net_reaches_target_by_sal_alone():
    torch.manual_seed(4)
    model = MLP(2, 1, MLPSettings(depth=10, width=16, init=InitSettings(scale=0.3)))
    sal = SAL(model, lr=0.005, beta=0.5)  # a short average: little overshoot

    def inputs():
        return torch.rand(32, 2) * 2 - 1

    for _ in range(1500):
        model(inputs())
        sal.step()
    model(inputs())
    rms = [rms_sensitivity(layer) for layer in per_layer(sal.layers())]  # the MLP reports its stack as one
    assert all(abs(r - 1) < 0.15 for r in rms), rms


def test_rnn_inputs_choice_and_sparse_mask_kept():
    torch.manual_seed(5)
    rnn = ElmanRNN(3, 1, RNNSettings(hidden=12, density=0.3))
    zeros = rnn.weight_hh.detach() == 0
    for rnn_inputs, blocks in (("all", 2), ("recurrent", 1)):
        sal = SAL(rnn, lr=0.05, rnn_inputs=rnn_inputs)
        rnn(torch.randn(6, 4, 3))
        assert len(sal.layers()[0].weights) == blocks
        assert sal.layers()[0].output.shape == (24, 12)  # time steps stacked
        sal.step()
    assert (rnn.weight_hh.detach()[zeros] == 0).all()
    assert (rnn.weight_hh.detach()[~zeros] != 0).all()


def test_rnn_recurrent_only_leaves_input_weights():
    torch.manual_seed(6)
    rnn = ElmanRNN(2, 1, RNNSettings(hidden=8))
    w_ih, w_hh = rnn.weight_ih.detach().clone(), rnn.weight_hh.detach().clone()
    sal = SAL(rnn, settings=SALSettings(lr=0.05, rnn_inputs="recurrent"))
    rnn(torch.randn(5, 3, 2))
    sal.step()
    assert torch.equal(rnn.weight_ih.detach(), w_ih)
    assert not torch.equal(rnn.weight_hh.detach(), w_hh)
