"""The fast paths of a training step keep its numbers (issue 13): BPTT reads the drive
with unbind, the optimizer uses its fused kernels, and a step whose activity nothing
reads runs without the probe's hooks."""
import pytest
import torch

from salrun.engines import make_optimizer
from salrun.activity import probe_for
from salrun.launch import compose
from salrun.models import ElmanRNN, MLP
from salrun.settings import MLPSettings, RNNSettings, job_settings


def _graph_nodes(tensor: torch.Tensor) -> set[str]:
    seen, names, todo = set(), set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_bptt_graph_has_no_per_step_select():
    """drive[t] in the loop puts a SelectBackward per step in the graph, each writing a full-size
    zero gradient: O(T²) memory traffic. unbind is one node."""
    model = ElmanRNN(1, 1, RNNSettings(hidden=4))
    nodes = _graph_nodes(model(torch.randn(20, 3, 1)).sum())
    assert "UnbindBackward0" in nodes
    assert not any(name.startswith("Select") for name in nodes)


def test_paused_probe_records_nothing_and_resumes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    probe = probe_for(model)
    x = torch.randn(5, 2)
    model(x)  # the first pass finds the layers
    probe.clear()
    with probe.paused():
        model(x)
        assert not any(m._forward_hooks for m in model.modules())
    assert probe.layers() == []
    model(x)
    layers = probe.layers()
    assert len(layers) == 3 and layers[0].output.shape == (5, 4)


def test_optimizer_uses_fused_kernels():
    s = job_settings("train", compose("train", ["model.depth=2", "model.width=4"]))
    model = MLP(2, 2, s.model.settings)
    assert make_optimizer(s, model).defaults["fused"] is True
    s = job_settings("train", compose("train", ["model.depth=2", "model.width=4", "optim.name=sgd"]))
    assert make_optimizer(s, model).defaults["fused"] is True


@pytest.mark.parametrize("kind", ["mlp", "rnn"])
def test_a_read_pass_is_stacked_as_it_ends_with_the_same_updates(kind):
    """salrun's models stack a pass's activity as the pass ends when SAL's next step reads it
    (prepare_activity), and only then: the updates are those of the stack taken at the step."""
    import copy

    from salrun.sal import SAL

    torch.manual_seed(0)
    if kind == "mlp":
        model = MLP(3, 2, MLPSettings(depth=6, width=5)).double()
        inputs = [torch.randn(7, 3, dtype=torch.float64) for _ in range(6)]
    else:
        model = ElmanRNN(2, 1, RNNSettings(hidden=5)).double()
        inputs = [torch.randn(9, 4, 2, dtype=torch.float64) for _ in range(6)]
    lazy = copy.deepcopy(model)
    lazy.prepare_activity = lambda read: None  # never told: stacks at SAL's step, as before
    ahead, behind = SAL(model, update_every=2), SAL(lazy, update_every=2)
    start = (model.weight_hh if kind == "rnn" else model.w_hidden).detach().clone()
    stacked = []
    for x in inputs:
        model(x).sum().backward(), lazy(x).sum().backward()
        stacked.append(model._stacked)
        ahead.step(), behind.step()
    assert stacked == [True, False] * 3  # the passes before the calls that only clear are not stacked
    assert not lazy._stacked and not copy.deepcopy(model)._activity_read
    for (name, a), b in zip(model.named_parameters(), lazy.parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(start, model.weight_hh if kind == "rnn" else model.w_hidden)  # SAL moved them
