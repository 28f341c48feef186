"""SAL on models written as people write them (issue 25): each pattern gets the rule's update,
checked against the rule recomputed here in float64 from what the model computed, or one clear
refusal that names the module and the pattern, and the same answer whatever ran first.

The rule (docs/SCIENCE.md §2), first step (s̄ = the batch mean of s), tanh, one-sided gate:
    s_j = (1 - o_j²)·‖w_j‖,  g_j = [mean s_j < 1],
    Δw_j = η g_j (w_j/‖w_j‖² - 2·mean(o_j x)),  Δθ_j = -2 η g_j mean(o_j)
with w_j every weight into neuron j (an RNN's [W_ih | W_hh] row) and x every input.
"""
import copy
import gc
import io
import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from salrun import SAL
from single_thread import one_thread  # noqa: F401

LR = 0.1


def rule(weights, inputs, o, bias_parts):
    """New weights and bias parts of one tanh layer after SAL's first step, in float64.
    θ's update is split equally among its parts (nn.RNN's bias_ih + bias_hh)."""
    weights = [w.detach().double() for w in weights]
    inputs = [x.detach().double().reshape(-1, x.shape[-1]) for x in inputs]
    o = o.detach().double().reshape(-1, o.shape[-1])
    norm_sq = sum(w.pow(2).sum(1) for w in weights)
    gate = ((1 - o * o) * norm_sq.sqrt()).mean(0).lt(1).double()
    assert gate.any(), "the test wants some neuron gated on"
    new = [w + LR * gate[:, None] * (w / norm_sq[:, None] - 2 * o.T @ x / len(o)) for w, x in zip(weights, inputs)]
    db = LR * gate * (-2 * o.mean(0))
    return new, [b.detach().double() + db / len(bias_parts) for b in bias_parts]


def small_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Small weights: the neurons' sensitivities are below 1, so the gate is on."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[-1] ** 0.5)
    return module


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def changed(before: dict, model: nn.Module) -> set[str]:
    return {k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())}


def assert_linear(model: nn.Module, before: dict, name: str, x: torch.Tensor, atol: float = 1e-12) -> torch.Tensor:
    """Linear `name` into tanh moved by the rule from its input x; returns its o."""
    w, b = before[f"{name}.weight"], before[f"{name}.bias"]
    o = torch.tanh(x.double() @ w.double().T + b.double())
    (new_w,), (new_b,) = rule([w], [x], o, [b])
    after = dict(model.named_parameters())
    torch.testing.assert_close(after[f"{name}.weight"].detach().double(), new_w, rtol=0, atol=atol)
    torch.testing.assert_close(after[f"{name}.bias"].detach().double(), new_b, rtol=0, atol=atol)
    return o


def rnn_states(x, w_ih, w_hh, b_ih, b_hh, h0=None):
    """A tanh RNN layer over x (T, batch, inputs), written out: (previous states, states), each (T, batch, H)."""
    h = torch.zeros(x.shape[1], w_hh.shape[0], dtype=x.dtype) if h0 is None else h0
    previous, states = [], []
    for x_t in x:
        previous.append(h)
        h = torch.tanh(x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        states.append(h)
    return torch.stack(previous), torch.stack(states)


def assert_rnn_layer(model, before, prefix, k, x, h0=None, atol=1e-12):
    """Layer k of the nn.RNN at `prefix` moved by the rule from its input sequence x; returns its states."""
    names = [f"{prefix}{'.' if prefix else ''}{p}_l{k}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    w_ih, w_hh, b_ih, b_hh = (before[n] for n in names)
    previous, states = rnn_states(x, w_ih, w_hh, b_ih, b_hh, h0)
    (new_ih, new_hh), biases = rule([w_ih, w_hh], [x, previous], states, [b_ih, b_hh])
    after = dict(model.named_parameters())
    for name, expected in zip(names, (new_ih, new_hh, *biases)):
        torch.testing.assert_close(after[name].detach().double(), expected, rtol=0, atol=atol, msg=name)
    return states


def batch(n=6, features=3, seed=1):
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def refusal(call, *words):
    """`call` raises one ValueError/TypeError/RuntimeError, one line, with every word in it."""
    with pytest.raises((ValueError, TypeError, RuntimeError)) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text and all(w in text for w in words), text
    return text


# -- one path: whatever ran first -------------------------------------------------------------

class Mixed(nn.Module):
    """nn.Sequential with its nn.Tanh, a functional tanh, a Linear called twice, and a readout."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh())
        self.twice, self.out = nn.Linear(5, 5), nn.Linear(5, 2)

    def forward(self, x):
        h = self.body(x)
        return self.out(torch.tanh(self.twice(torch.tanh(self.twice(h)))))


@pytest.mark.parametrize("first", ["describe", "eval_pass", "train"])
def test_the_same_updates_whatever_ran_first(first):
    reference = small_(Mixed().double())
    model = copy.deepcopy(reference)
    x1, x2 = batch(seed=1), batch(seed=2)
    sal_ref, sal = SAL(reference, lr=LR), SAL(model, lr=LR)
    if first == "describe":
        sal.describe(x1[:2])
    elif first == "eval_pass":
        model.eval()
        model(x1)
        model.train()
    for x in (x1, x2):
        before = snapshot(reference)
        reference(x)
        sal_ref.step()
        model(x)
        sal.step()
        for k, v in reference.named_parameters():
            assert torch.equal(v, dict(model.named_parameters())[k]), (first, k)
    # and the first step of the reference is the rule, layer by layer ("twice": both calls stacked)
    fresh = small_(Mixed().double())
    before = snapshot(fresh)
    sal = SAL(fresh, lr=LR)
    fresh(x1)
    sal.step()
    h = assert_linear(fresh, before, "body.2", assert_linear(fresh, before, "body.0", x1))
    w, b = before["twice.weight"], before["twice.bias"]
    o1 = torch.tanh(h @ w.T + b)
    o2 = torch.tanh(o1 @ w.T + b)
    (new_w,), (new_b,) = rule([w], [torch.cat([h, o1])], torch.cat([o1, o2]), [b])
    torch.testing.assert_close(fresh.twice.weight.detach(), new_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(fresh.twice.bias.detach(), new_b, rtol=0, atol=1e-12)
    assert changed(before, fresh) == {f"{m}.{p}" for m in ("body.0", "body.2", "twice") for p in ("weight", "bias")}


# -- the silent wrong answers, now one refusal -------------------------------------------

def dropout_before_tanh():
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.3), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))


@pytest.mark.parametrize("first", ["describe", "train"])
def test_linear_dropout_tanh_is_refused_whatever_ran_first(first):
    model = dropout_before_tanh().double()
    sal = SAL(model)
    call = (lambda: sal.describe(batch()[:2])) if first == "describe" else (lambda: model(batch()))
    refusal(call, "'0'", "dropout into tanh", "layers=[")
    refusal(sal.step, "'0'", "dropout into tanh")  # and it stays refused
    # dropout on the Linear's input, or after the tanh, is fine: the neuron is tanh(W·x + θ)
    fine = small_(nn.Sequential(nn.Dropout(0.3), nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.3), nn.Linear(4, 2)).double())
    before = snapshot(fine)
    sal = SAL(fine, lr=LR)
    torch.manual_seed(0)
    fine(batch())
    sal.step()
    torch.manual_seed(0)
    assert_linear(fine, before, "1", F.dropout(batch(), 0.3, True))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 1)
        self.l2.weight = self.l1.weight

    def forward(self, x):
        return self.out(torch.tanh(self.l2(torch.tanh(self.l1(x)))))


@pytest.mark.parametrize("first", ["describe", "train"])
def test_tied_weights_are_refused_whatever_ran_first(first):
    model = Tied().double()
    sal = SAL(model)
    x = batch(features=4)
    call = (lambda: sal.describe(x[:2])) if first == "describe" else (lambda: model(x))
    refusal(call, "'l1'", "'l2'", "tied weights")
    refusal(lambda: SAL(model, layers=["l1", "l2"]), "'l1'", "'l2'", "tied weights")
    # one of them, named: its own calls, its own bias; the tie moves l2 with it (documented)
    model = small_(Tied().double())
    before = snapshot(model)
    sal = SAL(model, lr=LR, layers=["l1"])
    model(x)
    sal.step()
    assert_linear(model, before, "l1", x)
    assert changed(before, model) == {"l1.weight", "l1.bias"}  # l2.weight is l1.weight


def test_copies_never_feed_the_original():
    from torch.optim.swa_utils import AveragedModel

    model = small_(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double())
    sal = SAL(model, lr=LR)
    x = batch()
    twin = copy.deepcopy(model)  # before the first pass: the copy's trace hooks are inert too
    model(x)
    ema = AveragedModel(model)
    plain = copy.deepcopy(model)
    saved = io.BytesIO()
    torch.save(model, saved)
    for other in (twin, ema, plain, pickle.loads(pickle.dumps(model))):
        other.train()
        other(batch(n=9, seed=5))
    saved.seek(0)
    torch.load(saved, weights_only=False)(batch())
    before = snapshot(model)
    plain_before = snapshot(plain)
    assert [layer.output.shape[0] for layer in sal.layers()] == [6, 6]  # the original's pass alone
    sal.step()
    assert_linear(model, before, "2", assert_linear(model, before, "0", x))
    assert not changed(plain_before, plain)
    # a copy's pass after the step reaches nothing, and the copy can have its own SAL
    plain(x)
    assert sal.layers() == []
    other = SAL(plain, lr=LR)
    plain(x)
    other.step()
    assert_linear(plain, plain_before, "0", x)
    assert not changed(snapshot(model), model)


def test_a_shallow_copy_or_a_dead_sal_records_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    sal = SAL(model)
    model(batch())
    sal.probe.clear()
    copy.copy(model[0])(batch())  # shares the hook dicts (as a DataParallel replica does): ignored
    assert not sal.probe._units[0].inputs
    first = sal.probe._units[0]
    del sal
    gc.collect()
    model(batch())
    assert first.inputs == [] and first.outputs == []


# -- crashes and unclear refusals -----------------------------------------------------------------

def test_bf16_autocast_forward_then_step_after_the_block():
    model = small_(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)))
    before = snapshot(model)
    sal = SAL(model, lr=LR)
    x = batch().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        u1 = F.linear(x, before["0.weight"], before["0.bias"])  # what the model computed, bf16
        h = torch.tanh(u1)
        o2 = torch.tanh(F.linear(h, before["2.weight"], before["2.bias"]))
    sal.step()
    assert h.dtype == o2.dtype == torch.bfloat16
    for name, x_in, o in (("0", x, h), ("2", h, o2)):  # the o the model produced, in bf16
        (new_w,), (new_b,) = rule([before[f"{name}.weight"]], [x_in], o, [before[f"{name}.bias"]])
        after = dict(model.named_parameters())
        torch.testing.assert_close(after[f"{name}.weight"].double(), new_w, rtol=0, atol=1e-6)
        torch.testing.assert_close(after[f"{name}.bias"].double(), new_b, rtol=0, atol=1e-6)
        assert after[f"{name}.weight"].dtype == torch.float32


def test_torchscript_is_refused_or_scripted_with_sal_paused():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    sal = SAL(model)
    x = batch().float()
    refusal(lambda: torch.jit.script(model), "torch.jit.script", "sal.paused()")
    sal.describe(x[:2])
    refusal(lambda: torch.jit.script(model), "torch.jit.script", "sal.paused()")
    with sal.paused():
        scripted = torch.jit.script(model)
        twin = copy.deepcopy(model)
    torch.testing.assert_close(scripted(x), model(x))
    assert not twin._forward_hooks and not any(m._forward_hooks for m in twin.modules())
    assert [layer.name for layer in sal.layers()] == ["0"]  # the hooks are back
    refusal(lambda: SAL(scripted), "TorchScript", "sal.paused()")
    refusal(lambda: SAL(nn.Sequential(scripted, nn.Tanh())), "TorchScript", "'0'")


@pytest.mark.parametrize("make", [
    lambda: nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)),
    lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(3, 4)),
    pytest.param(lambda: nn.utils.weight_norm(nn.Linear(3, 4)), marks=pytest.mark.filterwarnings("ignore")),
], ids=["weight_norm", "spectral_norm", "old_weight_norm"])
def test_a_computed_weight_is_refused_by_name(make):
    model = nn.Sequential(make(), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    words = ("'0'", "Norm", "SAL(model, layers=[")
    refusal(lambda: SAL(model).describe(batch().float()[:2]), *words)
    refusal(lambda: SAL(model, layers=[model[0]]), *words)
    # the other layers, named, are adapted
    x = batch().float()
    before = snapshot(model)
    sal = SAL(model, lr=LR, layers=["2"])
    h = model[1](model[0](x)).detach()
    model(x)
    sal.step()
    assert_linear(model, before, "2", h, atol=1e-6)


def test_load_state_dict_of_another_model_is_refused():
    def mlp(*widths):
        layers = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        return nn.Sequential(*layers, nn.Linear(widths[-1], 1))

    source = mlp(3, 4, 4)
    sal = SAL(source)
    source(batch().float())
    sal.step()
    state = sal.state_dict()
    for other in (mlp(3, 5, 4), mlp(3, 4, 4, 4), mlp(3, 4)):
        target = SAL(other)
        target.load_state_dict(state)  # its layers are not known yet: checked at the first step
        other(batch().float())
        refusal(target.step, "does not fit")
        stepped = SAL(other)
        other(batch().float())
        stepped.step()
        refusal(lambda: stepped.load_state_dict(state), "does not fit")  # known now: refused at once
    same = mlp(3, 4, 4)
    target = SAL(same)
    target.load_state_dict(state)
    same(batch().float())
    target.step()
    refusal(lambda: target.load_state_dict({"averages": "no"}), "not a SAL state")


def test_a_residual_add_before_tanh_is_named():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.tanh(x + self.fc(x))

    model = Residual()
    sal = SAL(model)
    model(batch(features=4).float())
    refusal(sal.step, "fc → add", "layers=[")


def test_f_linear_with_a_module_weight_outside_its_forward_is_not_its_call():
    """The hooks of later passes see only fc(x): the traced pass must not see more."""
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.g, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.out(torch.tanh(self.g(torch.tanh(F.linear(x, self.fc.weight, self.fc.bias)))))

    model = small_(Functional().double())
    sal = SAL(model, lr=LR)
    x = batch()
    assert "fc: its weight is used only by F.linear outside its own forward" in sal.describe(x[:2])
    before = snapshot(model)
    model(x)
    sal.step()
    assert_linear(model, before, "g", torch.tanh(x @ before["fc.weight"].T + before["fc.bias"]))
    assert changed(before, model) == {"g.weight", "g.bias"}


def test_nn_rnn_with_dropout_between_layers_gets_the_rule_on_the_dropped_input():
    """word_language_model's default: nn.RNN(…, num_layers=2, dropout=0.5). Layer 1's input is the
    dropped states of layer 0, as nn.RNN computed them; the model's outputs are nn.RNN's."""
    rnn = small_(nn.RNN(3, 5, num_layers=2, dropout=0.5).double(), scale=0.8)
    plain = copy.deepcopy(rnn)
    before = snapshot(rnn)
    sal = SAL(rnn, lr=LR)
    x = torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.manual_seed(11)
    output, hidden = rnn(x)
    torch.manual_seed(11)
    plain_output, plain_hidden = plain(x)
    torch.testing.assert_close(output, plain_output, rtol=0, atol=1e-14)
    torch.testing.assert_close(hidden, plain_hidden, rtol=0, atol=1e-14)
    assert type(plain) is nn.RNN and repr(rnn) == repr(plain)
    sal.step()
    states = assert_rnn_layer(rnn, before, "", 0, x)
    torch.manual_seed(11)
    dropped = F.dropout(states, 0.5, True)  # the forward's draws: the same op after the same seed
    torch.testing.assert_close(assert_rnn_layer(rnn, before, "", 1, dropped), output, rtol=0, atol=1e-14)


def test_an_nn_rnn_subclass_is_adapted_unless_it_has_its_own_forward():
    class Named(nn.RNN):
        """A subclass for its constructor only (as people write them)."""

        def __init__(self):
            super().__init__(3, 5, num_layers=2)

    class Own(nn.RNN):
        def forward(self, x, hx=None):
            return super().forward(x.flip(0), hx)

    rnn = small_(Named().double(), scale=0.8)
    before = snapshot(rnn)
    sal = SAL(rnn, lr=LR)
    x = torch.randn(7, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    output, _ = rnn(x)
    sal.step()
    states = assert_rnn_layer(rnn, before, "", 0, x)
    assert_rnn_layer(rnn, before, "", 1, states)
    assert type(copy.deepcopy(rnn)) is Named and isinstance(rnn, Named) and repr(rnn).startswith("Named(")
    refusal(lambda: SAL(nn.Sequential(Own(3, 4))), "'0'", "own forward", "layers=[")


def test_training_passes_are_recorded_with_or_without_grad_and_eval_or_paused_passes_are_not():
    """The decision: SAL records every training-mode pass, under torch.no_grad() too (SAL alone needs no
    graph); a validation pass belongs in model.eval() (as for dropout and batch norm), or in sal.paused()."""
    model = small_(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double())
    sal = SAL(model, lr=LR)
    x = batch()
    model.eval()
    model(batch(seed=7))
    model.train()
    with sal.paused():
        model(batch(seed=8))
    before = snapshot(model)
    with torch.no_grad():
        model(x)
    sal.step()
    assert_linear(model, before, "0", x)


def test_what_the_next_step_does_not_read_is_not_recorded():
    """With update_every = m the passes before the m - 1 calls that only clear are not recorded (nn.RNN runs
    its own forward there), and the linear output layer is recorded only with include_output; switched on
    between steps, it is read from the next passes on. The updates stay the rule's."""
    model = small_(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double())
    sal = SAL(model, lr=LR, update_every=2)
    x = batch()
    before = snapshot(model)
    model(x)  # the traced pass
    output = sal.probe._units[-1]
    assert output.activation == "linear"
    assert not output.recorded() and [layer.name for layer in sal.layers()] == ["0"]
    sal.step()  # call 0 updates, at 2·η
    torch.testing.assert_close(model[0].weight.detach(), before["0.weight"] + 2 * (
        rule([before["0.weight"]], [x], torch.tanh(x @ before["0.weight"].T + before["0.bias"]), [before["0.bias"]])
        [0][0] - before["0.weight"]), atol=1e-12, rtol=0)
    model(batch(seed=3))
    assert sal.layers() == []  # call 1 only clears: nothing was recorded for it
    sal.step()
    sal.settings.include_output = True
    model(x)
    assert [layer.name for layer in sal.layers()] == ["0"]  # this pass was armed without the output layer
    sal.step()  # call 2
    sal.step()  # call 3 clears
    model(x)
    assert [layer.name for layer in sal.layers()] == ["0", "2"]
    before = snapshot(model)
    sal.step()
    assert changed(before, model) == {"0.weight", "0.bias", "2.weight"}  # a linear neuron: f''/f' = 0, no bias term


def test_a_layer_that_did_not_run_since_the_last_step_is_named():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 1)

        def forward(self, x, use_b=True):
            h = torch.tanh(self.a(x))
            return self.out(h + torch.tanh(self.b(x)) if use_b else h)

    model = Branchy()
    sal = SAL(model)
    model(batch().float())
    sal.step()
    model(batch().float(), use_b=False)
    refusal(sal.step, "'b'", "recorded nothing")


# -- the forms people write -------------------------------------------------------------------------

def test_sequential_of_an_ordered_dict_names_its_layers():
    model = small_(nn.Sequential(OrderedDict([("fc1", nn.Linear(3, 4)), ("act1", nn.Tanh()),
                                              ("fc2", nn.Linear(4, 4)), ("act2", nn.Tanh()),
                                              ("head", nn.Linear(4, 2))])).double())
    sal = SAL(model, lr=LR)
    text = sal.describe(batch()[:2])
    assert "fc1 (Linear 3→4) → tanh" in text and "fc2 (Linear 4→4) → tanh" in text and "head (Linear 4→2)" in text
    before = snapshot(model)
    x = batch()
    model(x)
    sal.step()
    assert_linear(model, before, "fc2", assert_linear(model, before, "fc1", x))
    assert changed(before, model) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


class EncoderDecoder(nn.Module):
    """An nn.RNN encoder, its last state through a tanh bridge, an nn.RNNCell decoder in a loop,
    a readout; returns a tuple (outputs, the encoder's states)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.RNN(2, 4, batch_first=True)
        self.bridge = nn.Linear(4, 4)
        self.decoder = nn.RNNCell(1, 4)
        self.readout = nn.Linear(4, 1)

    def forward(self, x, steps: int = 3):
        states, _ = self.encoder(x)
        h = torch.tanh(self.bridge(states[:, -1]))
        y, outputs = x.new_zeros(x.shape[0], 1), []
        for _ in range(steps):
            h = self.decoder(y, h)
            y = self.readout(h)
            outputs.append(y)
        return torch.stack(outputs, 1), states


def test_an_encoder_decoder_returning_a_tuple():
    model = small_(EncoderDecoder().double(), scale=0.8)
    before = snapshot(model)
    sal = SAL(model, lr=LR)
    x = torch.randn(5, 6, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    outputs, _ = model(x)
    assert [layer.name for layer in sal.layers()] == ["encoder", "bridge", "decoder"]
    sal.step()
    states = assert_rnn_layer(model, before, "encoder", 0, x.transpose(0, 1))
    h = assert_linear(model, before, "bridge", states[-1])
    # the decoder's loop, written out: y_0 = 0, h_t = tanh(W_ih y + b_ih + W_hh h + b_hh), y = readout(h)
    w_ih, w_hh, b_ih, b_hh = (before[f"decoder.{p}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    y, ys, hs, os_ = x.new_zeros(5, 1), [], [], []
    for _ in range(3):
        ys.append(y)
        hs.append(h)
        h = torch.tanh(y @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        os_.append(h)
        y = h @ before["readout.weight"].T + before["readout.bias"]
    (new_ih, new_hh), (new_b_ih, new_b_hh) = rule([w_ih, w_hh], [torch.cat(ys), torch.cat(hs)], torch.cat(os_),
                                                  [b_ih, b_hh])
    torch.testing.assert_close(model.decoder.weight_ih.detach(), new_ih, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.decoder.weight_hh.detach(), new_hh, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.decoder.bias_hh.detach(), new_b_hh, rtol=0, atol=1e-12)
    assert "readout.weight" not in changed(before, model)


def test_a_tanh_output_head_is_a_tanh_layer():
    """Its neurons are tanh neurons: adapted by default (documented); the last Linear into no tanh is
    the linear output layer, which only include_output adapts."""
    model = small_(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Tanh()).double())
    before = snapshot(model)
    sal = SAL(model, lr=LR)
    x = batch()
    model(x)
    sal.step()
    assert_linear(model, before, "2", assert_linear(model, before, "0", x))


def test_word_language_model_rnn_tanh_unmodified():
    """pytorch/examples' RNNModel('RNN_TANH') as written there, dropout 0.5 in nn.RNN and around it,
    decoder tied to the encoder (an Embedding): the two RNN layers are adapted, the decoder is the output."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from rnn_lm_overhead import RNNModel

    model = RNNModel(50, 8, 8, 2, dropout=0.5, tie_weights=True).double()
    small_(model.rnn, scale=0.8)
    sal = SAL(model, lr=LR)
    data = torch.randint(50, (6, 3), generator=torch.Generator().manual_seed(0))
    assert [layer.name for layer in sal.layers()] == []
    output, hidden = model(data, model.init_hidden(3))
    assert [layer.name for layer in sal.layers()] == ["rnn.l0", "rnn.l1"]
    before = snapshot(model)
    sal.step()
    assert changed(before, model) == {f"rnn.{p}_l{k}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                                      for k in (0, 1)}


def test_the_overhead_benchmark_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "rnn_lm_overhead.py"
    out = tmp_path / "overhead.md"
    result = subprocess.run([sys.executable, str(script), "--blocks", "2", "--steps", "2", "--ntoken", "20",
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "with SAL: step" in result.stdout and "SAL's recording alone" in result.stdout
    table = out.read_text()
    assert "| with SAL |" in table and "--blocks 2 --steps 2" in table
    floor = next(line for line in table.splitlines() if "products oᵀx alone" in line)
    assert float(floor.split("|")[2]) > 0
