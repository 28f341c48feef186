"""SAL on the forms a user's model takes (float64 oracles).

For every form: the update equals docs/SCIENCE.md §2's formula computed here, from
the layer's own inputs and outputs (recomputed by hand, not read from SAL);
every tanh layer changes and nothing else does; and the same network written
as an nn.Sequential (or, for recurrent nets, as nn.RNN) gets identical updates.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from salrun import SAL
from salrun.models import ElmanRNN
from salrun.settings import RNNSettings

LR = 0.1
SIZES = [3, 4, 4, 4]  # three tanh layers, then a linear readout of 2


def small_(module: nn.Module, seed: int) -> nn.Module:
    """Small weights (sensitivity below 1, so every neuron is gated on) and a bias."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[-1] ** 0.5)
    return module


def oracle(weights, inputs, o, bias_parts):
    """The SAL update of one layer on its first step (s̄ = the batch mean of s), as in docs/SCIENCE.md §2:
    Δw_j = η g_j (w_j/‖w_j‖² − 2 mean(o_j x)), Δθ_j = −2 η g_j mean(o_j), g_j = [s̄_j < 1].
    Returns the new weights and the new bias parts (θ's update split equally among them)."""
    norm_sq = sum(w.pow(2).sum(1) for w in weights)
    s = (1 - o * o) * norm_sq.sqrt()
    gate = (s.mean(0) < 1).double()
    assert gate.all(), "the test wants every neuron gated on"
    n = o.shape[0]
    new_w = [w + LR * gate[:, None] * (w / norm_sq[:, None] - 2 * o.T @ x / n) for w, x in zip(weights, inputs)]
    db = LR * gate * (-2 * o.mean(0))
    return new_w, [b + db / len(bias_parts) for b in bias_parts]


def assert_tanh_layer(before, after, name, x):
    """Linear `name`, whose output goes into tanh, moved as the formula says from its input x;
    returns its output o."""
    w, b = before[f"{name}.weight"], before[f"{name}.bias"]
    o = torch.tanh(x @ w.T + b)
    (new_w,), (new_b,) = oracle([w], [x], o, [b])
    torch.testing.assert_close(after[f"{name}.weight"], new_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(after[f"{name}.bias"], new_b, rtol=0, atol=1e-12)
    return o


def step_once(model, x, **kwargs):
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    sal = SAL(model, lr=LR, **kwargs)
    model(x)
    sal.step()
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    return before, after, changed


# -- feed-forward forms -------------------------------------------------------------------

def sequential():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(),
                         nn.Linear(4, 2))


class Shuffled(nn.Module):
    """Modules declared out of order, activations first."""

    def __init__(self):
        super().__init__()
        self.t3, self.t1, self.t2 = nn.Tanh(), nn.Tanh(), nn.Tanh()
        self.out, self.c, self.b, self.a = nn.Linear(4, 2), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(3, 4)

    def forward(self, x):
        return self.out(self.t3(self.c(self.t2(self.b(self.t1(self.a(x)))))))


class Reused(nn.Module):
    """One nn.Tanh for every layer."""

    def __init__(self):
        super().__init__()
        self.act = nn.Tanh()
        self.a, self.b, self.c, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.act(self.c(self.act(self.b(self.act(self.a(x)))))))


class Functional(nn.Module):
    """torch.tanh, F.tanh and Tensor.tanh."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.c(F.tanh(self.b(torch.tanh(self.a(x))))).tanh())


class Listed(nn.Module):
    """An nn.ModuleList with the activation declared first."""

    def __init__(self):
        super().__init__()
        self.act = nn.ModuleList([nn.Tanh()])
        self.hidden = nn.ModuleList([nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 4)])
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        for linear in self.hidden:
            x = self.act[0](linear(x))
        return self.out(x)


class Block(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x):
        return torch.tanh(self.linear(x))


class Nested(nn.Module):
    """Blocks inside an nn.Sequential inside a module."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Block(3, 4), nn.Sequential(Block(4, 4), Block(4, 4)))
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.body(x))


def model_linears(model):
    """The three hidden Linears of a form, in the order the forward runs them, and the readout."""
    named = dict(model.named_modules())
    for names in (["a", "b", "c", "out"], ["hidden.0", "hidden.1", "hidden.2", "out"],
                  ["body.0.linear", "body.1.0.linear", "body.1.1.linear", "out"]):
        if all(n in named for n in names):
            return [named[n] for n in names]
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def same_weights(form: nn.Module, reference: nn.Sequential) -> nn.Module:
    ref = [m for m in reference if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for mine, theirs in zip(model_linears(form), ref):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return form


FORMS = {"shuffled": Shuffled, "reused": Reused, "functional": Functional, "module_list": Listed,
         "nested": Nested}


def batch():
    return torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("fused", [True, False])
def test_sequential_update_is_the_formula_on_each_layer(fused, monkeypatch):
    monkeypatch.setattr(SAL, "fused", fused)
    model = small_(sequential().double(), 0)
    x = batch()
    before, after, changed = step_once(model, x)
    h = x
    for k in (0, 2, 4):  # by hand: each tanh layer's input is the output of the one before
        h = assert_tanh_layer(before, after, k, h)
    assert changed == {f"{k}.{p}" for k in (0, 2, 4) for p in ("weight", "bias")}


@pytest.mark.parametrize("form", FORMS)
def test_each_form_gets_the_sequential_update(form):
    reference = small_(sequential().double(), 0)
    model = same_weights(FORMS[form]().double(), reference)
    x = batch()
    _, ref_after, ref_changed = step_once(reference, x)
    _, after, changed = step_once(model, x)
    ref_linears = [m for m in reference if isinstance(m, nn.Linear)]
    for mine, theirs in zip(model_linears(model), ref_linears):
        torch.testing.assert_close(mine.weight, theirs.weight, rtol=0, atol=1e-12)
        torch.testing.assert_close(mine.bias, theirs.bias, rtol=0, atol=1e-12)
    names = {id(p): k for k, p in model.named_parameters()}
    hidden = {names[id(p)] for m in model_linears(model)[:3] for p in m.parameters()}
    assert changed == hidden and len(ref_changed) == 6


def test_explicit_layers_when_the_forward_hides_them():
    """A tanh after a reshape is not seen by discovery; `layers=` names it."""

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.a(x).view(-1, 2, 2)).flatten(1))

    model = small_(Hidden().double(), 3)
    x = batch()
    with pytest.raises(ValueError, match=r"ran none: a → view; out → the model's output"):
        sal = SAL(model)
        model(x)
        sal.step()
    before, after, changed = step_once(model, x, layers=["a"])
    assert_tanh_layer(before, after, "a", x)
    assert changed == {"a.weight", "a.bias"}


def test_a_linear_feeding_a_relu_is_left_alone_and_the_tanh_layer_found():
    """The issue's model: declared fc1, act, relu, fc2, out; run out(act(fc2(relu(fc1(x)))))."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.relu, self.fc2, self.out = (nn.Linear(3, 4), nn.Tanh(), nn.ReLU(),
                                                                 nn.Linear(4, 4), nn.Linear(4, 1))

        def forward(self, x):
            return self.out(self.act(self.fc2(self.relu(self.fc1(x)))))

    model = small_(Net().double(), 4)
    x = batch()
    text = SAL(model).describe(x)
    assert "fc2 (Linear 4→4) → tanh" in text and "fc1: its output goes into relu" in text
    before, after, changed = step_once(model, x)
    assert_tanh_layer(before, after, "fc2", torch.relu(x @ before["fc1.weight"].T + before["fc1.bias"]))
    assert changed == {"fc2.weight", "fc2.bias"}


def test_shifted_sigmoid_layer():
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)

        def forward(self, x):
            return torch.sigmoid(self.a(x)) - 0.5

    model = small_(Sig().double(), 5)
    x = batch()
    before, after, changed = step_once(model, x, target=0.25)
    w, b = before["a.weight"], before["a.bias"]
    o = torch.sigmoid(x @ w.T + b) - 0.5
    norm_sq = w.pow(2).sum(1)
    assert ((0.25 - o * o) * norm_sq.sqrt()).mean(0).lt(0.25).all()
    new_w = w + LR * (w / norm_sq[:, None] - 2 * o.T @ x / len(x))  # f''/f' = -2·o here too
    torch.testing.assert_close(after["a.weight"], new_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(after["a.bias"], b + LR * -2 * o.mean(0), rtol=0, atol=1e-12)
    assert changed == {"a.weight", "a.bias"}


# -- recurrent forms ----------------------------------------------------------------------

T, B, I, H = 6, 5, 2, 4


def sequence():
    return torch.randn(T, B, I, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def by_hand(x, w_ih, w_hh, b_ih, b_hh):
    """States of a tanh RNN layer over x (T, batch, inputs), from h = 0: [h_-1, h_0, …]."""
    states = [torch.zeros(x.shape[1], w_hh.shape[0], dtype=x.dtype)]
    for t in range(x.shape[0]):
        states.append(torch.tanh(x[t] @ w_ih.T + b_ih + states[-1] @ w_hh.T + b_hh))
    return states


def rnn_oracle(before, x, layer, rnn_inputs="all"):
    """New (w_ih, w_hh, b_ih, b_hh) of nn.RNN layer `layer`, and its states."""
    w_ih, w_hh, b_ih, b_hh = (before[f"{p}_l{layer}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    states = by_hand(x, w_ih, w_hh, b_ih, b_hh)
    previous, o = torch.cat(states[:-1]), torch.cat(states[1:])
    if rnn_inputs == "all":
        (new_ih, new_hh), biases = oracle([w_ih, w_hh], [x.flatten(0, 1), previous], o, [b_ih, b_hh])
    else:
        (new_hh,), biases = oracle([w_hh], [previous], o, [b_ih, b_hh])
        new_ih = w_ih
    return (new_ih, new_hh, *biases), torch.stack(states[1:])


def assert_rnn_layer(after, layer, expected):
    for p, e in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), expected):
        torch.testing.assert_close(after[f"{p}_l{layer}"], e, rtol=0, atol=1e-12, msg=p)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_nn_rnn_update_is_the_formula(batch_first, layers):
    rnn = small_(nn.RNN(I, H, num_layers=layers, batch_first=batch_first).double(), 6)
    x = sequence()
    before, after, changed = step_once(rnn, x.transpose(0, 1) if batch_first else x)
    inputs = x
    for k in range(layers):
        expected, inputs = rnn_oracle(before, inputs, k)
        assert_rnn_layer(after, k, expected)
    assert changed == set(before)  # every parameter of a tanh RNN belongs to its neurons


@pytest.mark.parametrize("layers, inputs", [(3, H), (3, I)])
def test_nn_rnn_stacked_layers_from_a_given_state_over_two_passes_are_the_formula(layers, inputs):
    """Layers of one shape (an nn.RNN's above the first; all of them where inputs = hidden), two passes
    per step, each from a given non-zero h_-1: each layer gets the formula on its own rows."""
    rnn = small_(nn.RNN(inputs, H, num_layers=layers).double(), 12)
    gen = torch.Generator().manual_seed(4)
    passes = [(torch.randn(T, B, inputs, generator=gen, dtype=torch.float64),
               0.5 * torch.randn(layers, B, H, generator=gen, dtype=torch.float64)) for _ in range(2)]
    before = {k: v.detach().clone() for k, v in rnn.named_parameters()}
    sal = SAL(rnn, lr=LR)
    for x, h in passes:
        rnn(x, h)
    sal.step()
    after = dict(rnn.named_parameters())
    below = [x for x, _ in passes]
    for k in range(layers):
        w_ih, w_hh, b_ih, b_hh = (before[f"{p}_l{k}"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        drive, previous, outputs = [], [], []
        for p, (x, h) in enumerate(passes):
            states = [h[k]]
            for t in range(T):
                states.append(torch.tanh(below[p][t] @ w_ih.T + b_ih + states[-1] @ w_hh.T + b_hh))
            drive.append(below[p].flatten(0, 1))
            previous.append(torch.cat(states[:-1]))
            outputs.append(torch.cat(states[1:]))
            below[p] = torch.stack(states[1:])
        expected = oracle([w_ih, w_hh], [torch.cat(drive), torch.cat(previous)], torch.cat(outputs), [b_ih, b_hh])
        assert_rnn_layer(after, k, [*expected[0], *expected[1]])


def test_nn_rnn_recurrent_inputs_only_and_two_passes_per_step():
    rnn = small_(nn.RNN(I, H).double(), 7)
    x1, x2 = sequence(), sequence()[:3].flip(0)
    before = {k: v.detach().clone() for k, v in rnn.named_parameters()}
    sal = SAL(rnn, lr=LR, rnn_inputs="recurrent")
    rnn(x1), rnn(x2)
    sal.step()
    after = dict(rnn.named_parameters())
    parts = [by_hand(x, *(before[f"{p}_l0"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
             for x in (x1, x2)]
    previous = torch.cat([torch.cat(s[:-1]) for s in parts])
    o = torch.cat([torch.cat(s[1:]) for s in parts])
    (new_hh,), (b_ih, b_hh) = oracle([before["weight_hh_l0"]], [previous], o,
                                     [before["bias_ih_l0"], before["bias_hh_l0"]])
    torch.testing.assert_close(after["weight_hh_l0"], new_hh, rtol=0, atol=1e-12)
    torch.testing.assert_close(after["bias_ih_l0"], b_ih, rtol=0, atol=1e-12)
    torch.testing.assert_close(after["bias_hh_l0"], b_hh, rtol=0, atol=1e-12)
    assert torch.equal(after["weight_ih_l0"], before["weight_ih_l0"])


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell, self.readout = nn.RNNCell(I, H), nn.Linear(H, 1)

    def forward(self, x):
        h = None
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
        return self.readout(h)


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.readout = nn.RNN(I, H), nn.Linear(H, 1)

    def forward(self, x):
        return self.readout(self.rnn(x)[0][-1])


def copy_rnn(form: nn.Module, rnn: nn.RNN) -> nn.Module:
    """Give an RNN-shaped form the weights of a one-layer nn.RNN."""
    with torch.no_grad():
        if isinstance(form, ElmanRNN):
            form.weight_ih.copy_(rnn.weight_ih_l0), form.weight_hh.copy_(rnn.weight_hh_l0)
            form.bias.copy_(rnn.bias_ih_l0 + rnn.bias_hh_l0)
        else:
            target = form.cell if isinstance(form, CellLoop) else form.rnn
            for theirs, mine in zip(rnn.parameters(), target.parameters()):
                mine.copy_(theirs)
    return form


@pytest.mark.parametrize("form", ["cell_loop", "wrapped", "elman"])
def test_recurrent_forms_get_the_nn_rnn_update(form):
    rnn = small_(nn.RNN(I, H).double(), 8)
    x = sequence()
    model = {"cell_loop": CellLoop, "wrapped": Wrapped,
             "elman": lambda: ElmanRNN(I, 1, RNNSettings(hidden=H))}[form]().double()
    model = copy_rnn(model, rnn)
    before, after, changed = step_once(model, x)
    _, rnn_after, _ = step_once(rnn, x)
    if form == "elman":
        pairs = [("weight_ih", "weight_ih_l0"), ("weight_hh", "weight_hh_l0")]
        torch.testing.assert_close(after["bias"], rnn_after["bias_ih_l0"] + rnn_after["bias_hh_l0"],
                                   rtol=0, atol=1e-12)
        assert changed == {"weight_ih", "weight_hh", "bias"}
    else:
        prefix = "cell." if form == "cell_loop" else "rnn."
        suffix = "" if form == "cell_loop" else "_l0"
        pairs = [(f"{prefix}{p}{suffix}", f"{p}_l0") for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        assert changed == {mine for mine, _ in pairs}  # the readout is left alone
    for mine, theirs in pairs:
        torch.testing.assert_close(after[mine], rnn_after[theirs], rtol=0, atol=1e-12, msg=mine)


def test_bias_split_moves_the_sum_as_theta():
    """nn.RNN's θ = bias_ih + bias_hh moves by Δθ, half in each."""
    rnn = small_(nn.RNN(I, H).double(), 9)
    before, after, _ = step_once(rnn, sequence())
    d_ih = after["bias_ih_l0"] - before["bias_ih_l0"]
    d_hh = after["bias_hh_l0"] - before["bias_hh_l0"]
    torch.testing.assert_close(d_ih, d_hh, rtol=0, atol=1e-15)
    assert d_ih.abs().min() > 0


# -- what is refused, in library words --------------------------------------------------

@pytest.mark.parametrize("module, words", [
    (nn.LSTM(2, 3), "'LSTM' is an nn.LSTM"),
    (nn.GRU(2, 3), "'GRU' is an nn.GRU"),
    (nn.RNN(2, 3, nonlinearity="relu"), "nonlinearity='relu'"),
    (nn.Sequential(nn.Linear(2, 3), nn.GRUCell(3, 3)), "'1' is an nn.GRUCell"),
    (nn.RNN(2, 3, bidirectional=True), "bidirectional"),
])
def test_unsupported_recurrent_modules_get_one_clear_error(module, words):
    with pytest.raises(TypeError, match="nn.RNN / nn.RNNCell with nonlinearity='tanh'|bidirectional") as error:
        SAL(module)
    assert words in str(error.value)


def test_a_model_with_no_tanh_layer_names_what_it_found():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    sal = SAL(model)
    model(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"ran none: 0 → relu; 2 → the model's output"):
        sal.step()
    with pytest.raises(ValueError, match=r"has none: it holds Dropout, ReLU"):
        SAL(nn.Sequential(nn.ReLU(), nn.Dropout()))


@pytest.mark.parametrize("kwargs, words", [
    ({"lr": -1}, "lr must be >= 0, got -1"),
    ({"beta": 1.0}, "beta must be in [0, 1), got 1.0"),
    ({"gate": "both"}, "gate must be one of 'one_sided', 'two_sided', 'proportional'"),
    ({"rate": 0.1}, "unknown setting 'rate'"),
])
def test_settings_errors_speak_the_library(kwargs, words):
    with pytest.raises((ValueError, TypeError)) as error:
        SAL(sequential(), **kwargs)
    assert str(error.value).startswith(words) or words in str(error.value)
    assert "method." not in str(error.value)


def test_describe_before_any_forward_asks_for_one():
    model = sequential()
    assert "first forward pass" in SAL(model).describe()
    text = SAL(sequential()).describe(torch.randn(2, 3))
    assert "0 (Linear 3→4) → tanh" in text and "4 (Linear 4→4) → tanh" in text


def test_layers_are_listed_in_the_order_the_forward_runs_them():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.rnn, self.embed = nn.Linear(H, 1), nn.RNN(I, H), nn.Linear(I, I)

        def forward(self, x):
            return self.head(self.rnn(torch.tanh(self.embed(x)))[0][-1])

    model = Model().double()
    sal = SAL(model, include_output=True)
    model(sequence())
    assert [layer.name for layer in sal.layers()] == ["embed", "rnn", "head"]
    assert [layer.activation for layer in sal.layers()] == ["tanh", "tanh", "linear"]


def test_nn_rnn_with_a_given_first_state_and_unbatched_input():
    twin = small_(nn.RNN(I, H).double(), 10)
    before = {k: v.detach().clone() for k, v in twin.named_parameters()}
    x = sequence()[:, :1]                      # batch of one
    h0 = 0.5 * torch.ones(1, 1, H, dtype=torch.float64)
    sal = SAL(twin, lr=LR)
    twin(x[:, 0], h0[:, 0])                    # unbatched: (T, inputs) and (layers, hidden)
    sal.step()
    w_ih, w_hh, b_ih, b_hh = (before[f"{p}_l0"] for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    states = [h0[0]]
    for t in range(T):
        states.append(torch.tanh(x[t] @ w_ih.T + b_ih + states[-1] @ w_hh.T + b_hh))
    (new_ih, new_hh), (new_b_ih, _) = oracle([w_ih, w_hh], [x.flatten(0, 1), torch.cat(states[:-1])],
                                             torch.cat(states[1:]), [b_ih, b_hh])
    torch.testing.assert_close(twin.weight_ih_l0.detach(), new_ih, rtol=0, atol=1e-12)
    torch.testing.assert_close(twin.weight_hh_l0.detach(), new_hh, rtol=0, atol=1e-12)
    torch.testing.assert_close(twin.bias_ih_l0.detach(), new_b_ih, rtol=0, atol=1e-12)


def test_a_linear_in_your_own_loop_is_one_layer_like_a_cell():
    """h = tanh(fc([x_t, h])) step by step: one layer, its steps stacked, updated as an RNNCell."""

    class ConcatLoop(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(I + H, H)

        def forward(self, x):
            h = torch.zeros(x.shape[1], H, dtype=x.dtype)
            for x_t in x:
                h = torch.tanh(self.fc(torch.cat([x_t, h], 1)))
            return h

    cells = copy_rnn(CellLoop().double(), small_(nn.RNN(I, H).double(), 11))
    loop = ConcatLoop().double()
    with torch.no_grad():
        loop.fc.weight.copy_(torch.cat([cells.cell.weight_ih, cells.cell.weight_hh], 1))
        loop.fc.bias.copy_(cells.cell.bias_ih + cells.cell.bias_hh)
    x = sequence()
    _, after, changed = step_once(loop, x)
    _, cell_after, _ = step_once(cells, x)
    torch.testing.assert_close(after["fc.weight"], torch.cat([cell_after["cell.weight_ih"],
                                                              cell_after["cell.weight_hh"]], 1), rtol=0, atol=1e-12)
    torch.testing.assert_close(after["fc.bias"], cell_after["cell.bias_ih"] + cell_after["cell.bias_hh"],
                               rtol=0, atol=1e-12)
    assert changed == {"fc.weight", "fc.bias"}


def test_a_linear_only_some_of_whose_calls_go_into_tanh_is_left_alone():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.shared(torch.tanh(self.shared(x)))) + torch.tanh(self.b(x))

    model = small_(Twice().double(), 12)
    x = torch.randn(5, 4, dtype=torch.float64)
    sal = SAL(model)
    assert "shared: 1 of its 2 calls go into tanh, the others elsewhere" in sal.describe(x)
    before, after, changed = step_once(model, x)
    assert_tanh_layer(before, after, "b", x)
    assert changed == {"b.weight", "b.bias"}
