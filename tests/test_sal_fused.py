"""The fused SAL update (batched layers, addmm into W, steps read in blocks) keeps the
numbers of the formula as written (`SAL.fused = False`), in float64."""
import copy
import dataclasses

import pytest
import torch
from torch import nn

from salrun import sal as sal_module
from salrun.models import ElmanRNN, MLP
from salrun.sal import SAL
from salrun.settings import InitSettings, MLPSettings, RNNSettings


def run_both(make_model, make_input, steps=4, **overrides):
    torch.manual_seed(0)
    model = make_model().double()
    twin = copy.deepcopy(model)
    fused, reference = SAL(model, **overrides), SAL(twin, **overrides)
    reference.fused = False
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = make_input(gen)
        model(x), twin(x)
        fused.step(), reference.step()
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        assert (a - b).abs().max() < 1e-12, name  # in practice they agree to rounding
    for a, b in zip(fused.averages, reference.averages):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    return model, twin


@pytest.mark.parametrize("overrides", [{}, {"objective": "linear"}, {"gate": "two_sided"},
                                       {"include_output": True, "lr": 0.05, "target": 0.5}])
def test_fused_matches_reference_on_deep_mlp(overrides):
    settings = MLPSettings(depth=6, width=5, init=InitSettings(scale=0.8, bias_scale=0.1))
    model, _ = run_both(lambda: MLP(3, 2, settings), lambda g: torch.randn(7, 3, generator=g, dtype=torch.float64),
                        **overrides)
    assert len(list(model.parameters())) == 6  # the hidden layers after the first are one stacked tensor


def test_fused_matches_reference_on_a_user_model_without_shared_storage():
    def make():
        return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                             nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 1))
    run_both(make, lambda g: torch.randn(5, 4, generator=g, dtype=torch.float64))


def test_fused_matches_reference_when_forward_runs_twice_per_step():
    settings = MLPSettings(depth=4, width=5)
    model = MLP(2, 1, settings).double()
    twin = copy.deepcopy(model)
    fused, reference = SAL(model), SAL(twin)
    reference.fused = False
    x1, x2 = torch.randn(3, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    for m in (model, twin):
        m(x1), m(x2)
    fused.step(), reference.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rnn_inputs", ["all", "recurrent"])
@pytest.mark.parametrize("density", [1.0, 0.5])
def test_fused_matches_reference_on_rnn_in_blocks(monkeypatch, rnn_inputs, density):
    monkeypatch.setattr(sal_module, "CHUNK_VALUES", 9 * 6)  # 3 steps of batch 3 per block: several blocks
    settings = RNNSettings(hidden=6, density=density, init=InitSettings(scale=0.9, bias_scale=0.1))
    run_both(lambda: ElmanRNN(2, 1, settings, generator=torch.Generator().manual_seed(3)),
             lambda g: torch.randn(10, 3, 2, generator=g, dtype=torch.float64), rnn_inputs=rnn_inputs,
             objective="linear" if density < 1 else "log")


def test_state_dict_round_trip_keeps_group_averages():
    model = MLP(2, 1, MLPSettings(depth=5, width=4)).double()
    sal = SAL(model)
    x = torch.randn(6, 2, dtype=torch.float64)
    model(x), sal.step()
    state = sal.state_dict()
    other = SAL(model)
    other.load_state_dict(state)
    model(x), sal.step()
    model_twin = model  # same weights path: compare averages only
    del model_twin
    for a, b in zip(state["averages"], other.averages):
        torch.testing.assert_close(a, b)
    model(x), other.step()
    assert all(torch.isfinite(a).all() for a in other.averages)


class TanhThenScale(nn.Module):
    """Not an nn.Sequential: the second Linear sees 2·tanh(...), not the Tanh's output."""

    def __init__(self):
        super().__init__()
        self.first, self.act1, self.second, self.act2, self.out = (nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4),
                                                                    nn.Tanh(), nn.Linear(4, 1))

    def forward(self, x):
        return self.out(self.act2(self.second(2 * self.act1(self.first(x)))))


def test_probe_reads_a_linear_input_from_the_tanh_before_it_only_in_a_sequential():
    from salrun.activity import HookProbe

    mlp = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), *[m for _ in range(3) for m in (nn.Linear(5, 5), nn.Tanh())],
                        nn.Linear(5, 1)).double()
    probe = HookProbe(mlp)
    mlp(torch.randn(3, 2, dtype=torch.float64))  # the first pass is traced, then hooked
    assert len(probe._handles) == 1 + 4 + 1  # first input, each Tanh, the readout's output: no hook twice
    assert not probe._trace_handles
    layers = probe.layers()
    assert all(b.inputs[0] is a.output for a, b in zip(layers, layers[1:]))

    model = TanhThenScale().double()
    probe = HookProbe(model)
    x = torch.randn(6, 3, dtype=torch.float64)
    model(x)
    first, second = probe.layers()
    torch.testing.assert_close(second.inputs[0], 2 * first.output)
    run_both(TanhThenScale, lambda g: torch.randn(5, 3, generator=g, dtype=torch.float64))


def test_fused_matches_reference_on_layers_of_two_dtypes():
    """Layers that are not a group, in two dtypes: each moves as the formula moves it (float64, float32).
    Across devices they are stepped apart (tests/test_cuda.py, a model split between CPU and GPU)."""
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(4, 1)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return self.out(torch.tanh(self.b(h.float())))

    def make():
        model = Mixed()
        model.a.double()
        return model

    torch.manual_seed(0)
    model = make()
    twin, start = copy.deepcopy(model), copy.deepcopy(model)
    fused, reference = SAL(model, lr=0.05), SAL(twin, lr=0.05)
    reference.fused = False
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(6, 3, generator=gen, dtype=torch.float64)
        model(x), twin(x)
        fused.step(), reference.step()
    assert model.a.weight.dtype == torch.float64 and model.b.weight.dtype == torch.float32
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        tolerance = 1e-12 if a.dtype == torch.float64 else 1e-5
        assert (a - b).abs().max() < tolerance, name
    assert not torch.equal(model.a.weight, start.a.weight) and not torch.equal(model.b.weight, start.b.weight)


class LeadThenScaledStack(nn.Module):
    """A Linear of its own fan-in, then a stack of equal Linears whose first input is the lead's
    output scaled: not the lead's own tensor, so the lead's outputs are not a view of the stack's."""

    def __init__(self):
        super().__init__()
        self.lead = nn.Linear(3, 5)
        self.stack = nn.ModuleList([nn.Linear(5, 5) for _ in range(3)])
        self.out = nn.Linear(5, 1)

    def forward(self, x):
        h = 0.5 * torch.tanh(self.lead(x))
        for layer in self.stack:
            h = torch.tanh(layer(h))
        return self.out(h)


@pytest.mark.parametrize("make, chained", [
    (lambda: MLP(3, 2, MLPSettings(depth=5, width=4, init=InitSettings(scale=0.8, bias_scale=0.1))), True),
    (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), *[m for _ in range(3) for m in (nn.Linear(5, 5), nn.Tanh())],
                           nn.Linear(5, 1)), True),
    (LeadThenScaledStack, False)], ids=["mlp", "sequential", "scaled"])
@pytest.mark.parametrize("overrides", [{}, {"objective": "linear"}])
def test_a_layer_of_another_fan_in_before_a_stack_moves_with_it_as_the_formula(monkeypatch, make, chained, overrides):
    """The lead (the first layer, of the input's fan-in) shares the stack's per-neuron arithmetic as
    its first layer (`_leads`); its outputs join the stack's block as a view where they lie just before
    it, and as a copy where they do not. Either way each weight moves as the formula moves it."""
    joined = []
    led = sal_module._led
    monkeypatch.setattr(sal_module, "_led", lambda first, *rest: joined.append(led(first, *rest)) or joined[-1])
    model, _ = run_both(make, lambda g: torch.randn(7, 3, generator=g, dtype=torch.float64), **overrides)
    assert len(joined) == 4  # one joined block per step: the lead was updated with the stack
    x, o = joined[-1][:-1], joined[-1][1:]
    assert x.data_ptr() != o.data_ptr() and (joined[-1]._base is not None) == chained  # a view of the chain, or a copy


def test_the_floor_that_the_benchmark_times_salrun_against_is_salruns_rule(monkeypatch):
    """benchmarks/run.py times paper_deep_ffn's step against the same step with SAL's update written
    out in a few torch ops (`_written_out_sal`): that update is salrun's, and the check the benchmark
    runs before timing it refuses one that is not (here: the written-out rate doubled)."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import run

    torch.manual_seed(0)
    assert callable(run._written_out_step("paper_deep_ffn"))
    written = run._written_out_sal

    def doubled(engine):
        engine.net.method.settings = dataclasses.replace(engine.net.method.settings,
                                                         lr=2 * engine.net.method.settings.lr)
        return written(engine)

    monkeypatch.setattr(run, "_written_out_sal", doubled)
    with pytest.raises(SystemExit, match="no longer matches"):
        run._written_out_step("paper_deep_ffn")
    sys.modules.pop("run", None)


def test_the_word_lm_floor_that_the_benchmark_times_salrun_against_is_salruns_rule(monkeypatch):
    """benchmarks/rnn_lm_overhead.py times word_language_model's loop with SAL's step written out for
    its nn.RNN (`written_out`): that step is salrun's, and the check run before timing it refuses
    one that is not (here: the written-out rate doubled)."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import rnn_lm_overhead as bench

    def model():
        return bench.RNNModel(50, 8, 8, 2, dropout=0.0)

    bench.check_written_out(model)
    written = bench.written_out

    def doubled(sal, *args):
        sal.settings = dataclasses.replace(sal.settings, lr=2 * sal.settings.lr)
        return written(sal, *args)

    monkeypatch.setattr(bench, "written_out", doubled)
    with pytest.raises(SystemExit, match="no longer matches"):
        bench.check_written_out(model)
    sys.modules.pop("rnn_lm_overhead", None)
