"""Sensitivity Adjustment Learning: the local per-neuron rule of docs/SCIENCE.md §2.

Each neuron keeps a moving average s̄_j of its sensitivity (keep-rate β,
batch mean per update). While s̄_j < target it climbs the gradient of
ln s_j with its own input held fixed; nothing is back-propagated:

    Δw_j = η·g_j·(w_j/‖w_j‖² + (f''/f')(U_j)·x),   Δθ_j = η·g_j·(f''/f')(U_j)

with g_j = 1 below target and 0 (one-sided gate) or -1 (two-sided) above, or (proportional
gate, ours) g_j = clamp(ln(target/s̄_j)/band, -1, 1). s̄_j averages the batch's arithmetic
mean of s_j, or (average=geometric, the mean-log form, ours) its geometric mean, in log space.
With layer_target (ours, feed-forward stacks), layer l's target is target·exp(gap_l), gap_l a
moving average of ln RMS(s_l) minus the log gain measured along the signal's tangent
(`neurons.tangent_log_gains`): where the Jacobians are not isotropic, RMS(s) = 1 does not
carry the signal, and the gap says by how much it falls short.
For tanh, f''/f' = -2·o_j. Use it after each optimizer step:

    sal = SAL(model)           # Linear → tanh layers, nn.RNN, nn.RNNCell (activity.py), or a salrun model
    loss.backward(); optimizer.step(); sal.step()

How it is computed (the numbers are those of the formula; `fused=False`
runs the formula as written, `log_sensitivity_gradient`, as the reference):
the radial term is a per-row rescaling, w_j ← (1 + η g_j/‖w_j‖²)·w_j, and the
data term Σ(f''/f')(U)·xᵀ (-2·oᵀx for tanh) is one product per weight, added
into W row-scaled by η g/n: no gradient tensor is materialised. A stack of layers
reported as one (salrun's MLP: its hidden weights are one (L, w, w) tensor),
and runs of equal layers of a user's model, are updated together with batched
operations; the other layers each take their own sums and products, and then the
rule's per-neuron arithmetic runs once over all their neurons (`_layers_step`),
since at small sizes a step costs its count of ops; a recurrent layer is read in blocks of steps
(`LayerActivity.chunks`), views of the states as the model holds them in one
tensor (nn.RNN's output; salrun's ElmanRNN stacks its states once per forward
into storage it keeps), so SAL's temporaries are a block's size. Temporaries of
the data's size are kept from step to step (`activity.Kept`, `activity.stack_kept`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import operator
import typing

import torch
from torch import nn

from salrun.activity import HookProbe, Kept, LayerActivity, ModelProbe, Probe, per_layer, probe_for
from salrun.activity import chained as activity_chained
from salrun.neurons import (curvature_ratio, derivative, from_statistic, log_sensitivity_gradient, mean_sensitivity,
                            row_norm_sq, slope_statistic, tangent_log_gains)
from salrun.rule import Rule
from salrun.settings import SALSettings

GAP_KEEP = 0.9    # keep-rate of the moving average of each layer's gap (layer_target)
MAX_GAP = 0.2     # |gap| is clipped: the target stays within e^±0.2 of `target`
# Values (rows × neurons) of a recurrent layer's states read at a time: one block of 2 MB
# (float32). Blocks of a fixed number of rows left a thin layer in many blocks, each a few ops
# (paper_long_lag, hidden 32: 5 blocks of 2,048 rows; now one), where a wide one is read in
# blocks of its rows (hidden 512: 1,024 rows), so that o² is never a temporary of every step.
CHUNK_VALUES = 2 ** 19
SQUASHING = {"tanh": 1.0, "sigmoid_shifted": 0.25}  # f' = c - o², f''/f' = -2·o (neurons.py)


class SAL:
    fused = True  # False: the reference path (the formula as written), for tests and benchmarks
    rate_scale = 1.0  # multiplies η at each step (a sal_schedule sets it; salrun.schedules)

    def __init__(self, model: nn.Module, settings: SALSettings | None = None, probe: Probe | None = None,
                 layers: list | None = None, **overrides):
        """`layers`: the layers to adapt, for models whose forward pass SAL cannot read: nn.Linear
        (taken as followed by tanh; or a (module, activation) pair), nn.RNN and nn.RNNCell modules
        or their names. Otherwise they are found in the model's first forward pass."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"SAL needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.settings = _library_settings(settings, overrides)
        self.probe = probe if probe is not None else probe_for(model, layers)
        self.averages: list[torch.Tensor] = []  # s̄_j per layer, created on the first step
        self._stacks: dict[tuple[int, ...], tuple] = {}  # averages of a layer group: stacked, and its rows
        self._plan_key: tuple | None = None
        self._plan_cache: list = []
        self.targets: torch.Tensor | None = None  # layer_target: this step's target per layer
        self.gaps: torch.Tensor | None = None  # layer_target: gap_l per layer
        self._tangent_rng = torch.Generator().manual_seed(0)  # its own stream: never moves the job's RNG
        self._shapes: list[tuple[str, int]] | None = None  # (name, neurons) per layer, fixed by the first step
        self._loaded: dict | None = None  # a loaded state, checked against the layers at the next step
        self.calls = 0  # sal.step() calls so far: with update_every = m, the calls 0, m, 2m, … update
        self._kept = Kept()  # temporaries of the data's size, kept from step to step
        self._arm()

    def _arm(self) -> None:
        """Tell a probe of hooks what the passes until the next step are read for: nothing (with
        update_every = m, at the m - 1 steps between updates), and the output layer only with
        include_output. What is not read is not recorded: no hook's work, and nn.RNN runs its own
        forward (measured on a word-LM, the decoder's record alone cost 1-1.5% of a step)."""
        if isinstance(self.probe, (HookProbe, ModelProbe)):
            self.probe.reading = self.reads_next
        if isinstance(self.probe, HookProbe):
            self.probe.record_output = self.settings.include_output

    def layers(self) -> list[LayerActivity]:
        # include_output switched on since the last step: the output layer is read from the next passes on
        include = self.settings.include_output and getattr(self.probe, "record_output", True)
        return self.probe.layers(include, self.settings.rnn_inputs)

    def describe(self, *example_args, **example_kwargs) -> str:
        """The layers SAL adapts, by module name, and the Linears it leaves alone. With an
        example input the model runs on it once first (in eval mode: nothing is recorded)."""
        if example_args or example_kwargs:
            training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    self.model(*example_args, **example_kwargs)
            finally:
                self.model.train(training)
        return "\n".join([f"SAL layers of {type(self.model).__name__}:", *self.probe.describe()])

    def paused(self) -> typing.ContextManager:
        """Forward passes inside are not recorded and run no hook of SAL's; a copy
        (copy.deepcopy) or a torch.jit.script of the model made inside carries none."""
        paused = getattr(self.probe, "paused", None)
        return paused() if paused is not None else contextlib.nullcontext()

    @property
    def reads_next(self) -> bool:
        """Whether the next step() updates (and so reads the passes before it): with update_every = m, one in m."""
        return self.calls % self.settings.update_every == 0

    @torch.no_grad()
    def step(self) -> None:
        """Update every layer from the activity of the forward passes since the last step
        (with update_every = m, at one call in m, at m times the rate; the others only clear it)."""
        updates = self.reads_next
        self.calls += 1
        if not updates:
            self.probe.clear()
            self._arm()
            return
        layers = self.layers()  # a stack of layers (salrun's MLP) comes as one LayerActivity
        if self._shapes is None and layers:
            self._shapes = [shape for layer in layers for shape in layer.shapes()]
        if self._loaded is not None and layers:
            self._check_state(self._loaded, layers)
            self._loaded = None
        # read each step: a user may change the settings
        self.rule = Rule.of(self.settings, self.rate_scale * self.settings.update_every)
        self.targets = self._layer_targets(per_layer(layers)) if self.settings.layer_target else None
        if not self.fused:
            for i, layer in enumerate(per_layer(layers)):
                self._reference_step(i, layer)
        else:
            plan = self._plan(layers)
            singles: dict[tuple, list] = {}  # the layers that are not a group, by device and dtype
            for index, group, _, _, _ in plan:
                if not _grouped(layers, group):
                    w = layers[group[0]].weights[0]
                    singles.setdefault((w.device, w.dtype), []).append((index[0], layers[group[0]]))
            for part in singles.values():
                self._layers_step([i for i, _ in part], [layer for _, layer in part])
            for index, group, weights, biases, lead in plan:
                if _grouped(layers, group):
                    self._group_step(index, [layers[i] for i in group], weights, biases,
                                     layers[lead] if lead is not None else None)
        self.probe.clear()
        self._arm()

    def _layer_targets(self, layers: list[LayerActivity]) -> torch.Tensor:
        """target·exp(gap_l) per layer, gap_l = ln RMS(s_l) - the measured tangent log gain (averaged)."""
        if any(type(layer) is not LayerActivity or len(layer.weights) != 1 for layer in layers):
            raise ValueError("layer_target needs a feed-forward stack of Linear → tanh layers (no RNN)")
        weights = [layer.weights[0] for layer in layers]
        outputs = [layer.output for layer in layers]
        chained = activity_chained(layers)
        activation = layers[0].activation
        gains = tangent_log_gains(weights, outputs, chained, activation, self._tangent_rng)
        log_rms = torch.stack([0.5 * torch.log((derivative(o, activation) * w.norm(dim=1)).square().mean())
                               for w, o in zip(weights, outputs)])
        gap = log_rms - gains
        if self.gaps is None:
            self.gaps = gap
        else:
            self.gaps.mul_(GAP_KEEP).add_(gap, alpha=1 - GAP_KEEP)
        return self.settings.target * torch.exp(self.gaps.clamp(-MAX_GAP, MAX_GAP))

    def _plan(self, layers: list[LayerActivity]) -> list[tuple[range, list[int], torch.Tensor | None,
                                                                 torch.Tensor | None, int | None]]:
        """The groups of layers to update together: the indices of their layers (of s̄), of their
        activities, the (L, …) views of their stacked weights and biases where they are one
        block (else None), and the group's lead, if any (`_leads`: the activity of a layer of
        another fan-in just before it, updated with it); a stack reported as one activity is a
        group. Kept from step to step while
        every layer has the same parameters at the same addresses and the same shapes: finding
        the groups costs Python time per layer, which a 300-layer net of thin layers notices."""
        if all(type(layer) is LayerActivity for layer in layers):
            weights = [layer.weights[0] for layer in layers]
            shape = operator.attrgetter("shape")
            key = (tuple(map(id, weights)), tuple(map(torch.Tensor.data_ptr, weights)),
                   tuple(map(shape, [layer.output for layer in layers])),
                   tuple(map(shape, [layer.inputs[0] for layer in layers])))
        else:  # a layer whose activity is read in blocks (an RNN's): its output is not a stored tensor
            key = None
        if key is not None and key == self._plan_key:
            return self._plan_cache
        plan, start = [], 0
        for group in _groups(layers):
            weights = biases = None
            if layers[group[0]].names:
                weights, biases = layers[group[0]].weights[0], layers[group[0]].bias
            elif len(group) > 1:
                weights = _stacked([layers[i].weights[0] for i in group], allow_copy=False)
                if all(layers[i].bias is not None for i in group):
                    biases = _stacked([layers[i].bias for i in group], allow_copy=False)
            count = sum(len(layers[i].names) or 1 for i in group)
            lead = None
            if plan and not _grouped(layers, plan[-1][1]) and _grouped(layers, group) \
                    and _leads(layers[plan[-1][1][0]], layers[group[0]]):  # the single layer before leads the group
                single = plan.pop()
                start, lead, count = single[0].start, single[1][0], count + 1
            plan.append((range(start, start + count), group, weights, biases, lead))
            start += count
        self._plan_key, self._plan_cache = key, plan
        return plan

    # -- moving average and gate -------------------------------------------------

    def _rates(self, index: typing.Sequence[int], mean_s: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """η·g per neuron of the layers `index`, after blending this batch's mean sensitivities `mean_s` into
        their averages s̄: (L, neurons) for a group of equal layers, or (with `sizes`, each layer's count)
        their neurons one after another. The averages live in one tensor of that shape, and
        `self.averages` holds each layer's view of it, so state_dict and users see per-layer tensors."""
        # a group's layers are a range: sliced, not looped over in Python (299 layers of paper_deep_ffn)
        ranged = isinstance(index, range)
        key = index if ranged else tuple(index)
        stack, rows = self._stacks.get(key, (None, ()))
        if len(self.averages) <= index[-1]:  # the first step
            self.averages.extend([None] * (index[-1] + 1 - len(self.averages)))
        current = self.averages[index.start:index.stop:index.step] if ranged else [self.averages[i] for i in index]
        fresh = any(map(operator.is_, current, itertools.repeat(None)))
        if fresh or stack is None or not all(map(operator.is_, current, rows)):  # first, loaded or replaced
            stack = mean_s.clone() if fresh else torch.stack(current) if sizes is None else torch.cat(current)
            rows = stack.unbind(0) if sizes is None else stack.split(sizes)
            self._stacks[key] = stack, rows
            for i, row in zip(index, rows):
                self.averages[i] = row
        if not fresh:
            self.rule.blend_(stack, mean_s)
        targets = None
        if self.targets is not None:
            targets = self.targets[list(index)]
            targets = targets[:, None] if sizes is None else targets.repeat_interleave(
                torch.tensor(sizes, device=targets.device))
        return self.rule.rate(stack, targets)

    # -- the formula as written (reference) ----------------------------------------

    def _reference_step(self, i: int, layer: LayerActivity) -> None:
        cfg = self.settings
        inputs, output = layer.inputs, layer.output
        slope, norm = derivative(output, layer.activation), row_norm_sq(layer.weights).sqrt()
        mean_s = mean_sensitivity(slope, norm, cfg.average)
        step = self._rates([i], mean_s, [mean_s.shape[0]])
        grads, bias_grad = log_sensitivity_gradient(
            layer.weights, inputs, output, layer.activation,
            sample_weight=slope * norm if cfg.objective == "linear" else None,
        )
        for w, grad, mask in zip(layer.weights, grads, layer.masks or [None] * len(grads)):
            update = step[:, None] * grad
            w.add_(update if mask is None else update * mask)
        _add_to_bias(layer.bias, step, bias_grad)

    # -- fused: layers of any shapes, read in blocks of rows ------------------------

    def _layers_step(self, index: list[int], layers: list[LayerActivity]) -> None:
        """Layers of any shapes (one each, not a group): each one's sums over its rows, read in blocks;
        then the rule's per-neuron arithmetic once over all their neurons, one after another; then every
        weight moved by two foreach ops. At a word-LM's sizes a step is some 60 small ops on caches the
        backward left cold, 5-10 µs each, against its 4 products of 45 µs: the ops are what to save."""
        cfg = self.settings
        linear = cfg.objective == "linear"
        norm_sqs, means, sums, raws, sizes, coefs = [], [], [], [], [], []
        for layer in layers:
            weights = layer.weights
            norm_sq = row_norm_sq(weights)
            norm = norm_sq.sqrt() if linear else None
            # One pass over the rows: Σ f' (or Σ ln f'), Σ (f''/f')·(s), and the data term Σ (f''/f')(s)·xᵀ.
            # f' = c - o² and f''/f' = -2·o: the data term is -2·oᵀx, the sums are sums of o and o²
            # (Σo² a reduction of o²: the diagonal of oᵀo costs a matmul, 6x slower at 64 neurons).
            squashing = layer.activation in SQUASHING and not linear
            squares = squashing and cfg.average == "arithmetic"
            rows, slope_sum, ratio_sum, raw = 0, None, None, None
            for inputs, output in layer.chunks(max(1, CHUNK_VALUES // weights[0].shape[0])):
                if squashing:
                    ratio = output
                else:
                    slope = derivative(output, layer.activation)
                    ratio = curvature_ratio(output, layer.activation)
                    if linear:
                        ratio = ratio * (slope * norm)
                if raw is None:
                    raw = [ratio.T @ x for x in inputs]
                else:
                    for r, x in zip(raw, inputs):
                        r.addmm_(ratio.T, x)
                rows += output.shape[0]
                if squares:  # Σo², o² in kept memory: a fresh block of o's size faults its pages in at every step
                    part = torch.square(output, out=self._kept.like(output)).sum(0)
                else:
                    part = slope_statistic(derivative(output, layer.activation) if squashing else slope,
                                           cfg.average).sum(0)
                slope_sum = part if slope_sum is None else slope_sum.add_(part)
                ratio_sum = ratio.sum(0) if ratio_sum is None else ratio_sum.add_(ratio.sum(0))
            # the batch mean of f' (c - Σo²/n), or of ln f'
            means.append(torch.rsub(slope_sum, SQUASHING[layer.activation], alpha=1 / rows) if squares
                         else slope_sum.div_(rows))
            norm_sqs.append(norm_sq)
            sums.append(ratio_sum)
            raws.append(raw)
            sizes.append(norm_sq.shape[0])
            coefs.append((-2.0 if squashing else 1.0) / rows)  # squashing: raw and ratio_sum hold oᵀx and Σo
        one = len(layers) == 1
        norm_sq = norm_sqs[0] if one else torch.cat(norm_sqs)
        mean_s = from_statistic(means[0] if one else torch.cat(means), cfg.average).mul_(norm_sq.sqrt())
        step = self._rates(index, mean_s, sizes)
        radial = self.rule.radial(step, norm_sq, mean_s)[:, None]
        data = step * coefs[0] if len(set(coefs)) == 1 else step * torch.cat(
            [step.new_full((n,), c) for n, c in zip(sizes, coefs)])
        radials = (radial,) if one else radial.split(sizes)
        datas = (data,) if one else data.split(sizes)
        ws, rs, by_radial, by_data, parts, part_data, part_sums, shares = [], [], [], [], [], [], [], []
        for layer, raw, total, radial, data in zip(layers, raws, sums, radials, datas):
            column = data[:, None]
            for w, r, mask in zip(layer.weights, raw, layer.masks or [None] * len(raw)):
                if mask is None:
                    ws.append(w), rs.append(r), by_radial.append(radial), by_data.append(column)
                else:
                    w.add_(torch.mul(w, radial).addcmul_(r, column).mul_(mask))
            bias = _bias_parts(layer.bias)
            for part in bias:
                parts.append(part), part_data.append(data), part_sums.append(total), shares.append(1 / len(bias))
        if ws:  # w ← (1 + radial)·w + data·oᵀx
            torch._foreach_addcmul_(ws, ws, by_radial)
            torch._foreach_addcmul_(ws, rs, by_data)
        if parts:  # θ += data·Σo
            torch._foreach_addcmul_(parts, part_data, part_sums, shares)

    # -- fused: a stack of equal layers at once -----------------------------------

    def _group_step(self, index: range, layers: list[LayerActivity], stacked_weights: torch.Tensor | None,
                    stacked_biases: torch.Tensor | None, lead: LayerActivity | None = None) -> None:
        """A group of equal layers as one batch: (L, …) weights, inputs and outputs. A stack reported
        as one activity (salrun's MLP) holds them so; layers reported one by one are stacked here.
        A lead (a layer of another fan-in before them, `_leads`) shares the per-neuron arithmetic
        as the batch's first layer, and its weights move apart: on paper_deep_ffn its own pass of
        some 20 small ops cost as much as the product over the other 298 layers."""
        cfg = self.settings
        if layers[0].names:
            weights = biases = None
            w, x, o = stacked_weights, layers[0].inputs[0], layers[0].output
        else:
            weights, biases = [layer.weights[0] for layer in layers], [layer.bias for layer in layers]
            w = stacked_weights if stacked_weights is not None else _stacked(weights)
            x, o = _chained([layer.inputs[0] for layer in layers], [layer.output for layer in layers])
        rows = o.shape[1]
        activation = layers[0].activation
        norm = torch.linalg.vector_norm(w, dim=-1)               # (L, neurons), no temporary of W's size
        if lead is not None:  # the lead first: (L + 1, …) from here to the weights
            o = _led(lead.output, layers[0].inputs[0][0] if layers[0].names else layers[0].inputs[0], x, o)
            norm = torch.cat([torch.linalg.vector_norm(lead.weights[0], dim=-1)[None], norm])
        norm_sq = norm * norm
        if activation in SQUASHING and cfg.objective == "log" and cfg.average == "arithmetic":
            # f' = c - o² and f''/f' = -2·o: the batch means are two reductions of o, and the
            # data term's coefficients one scaled copy of o (the only (L, rows, neurons) temporary, kept).
            scratch = self._kept.like(o)
            mean_s = (SQUASHING[activation] - torch.square(o, out=scratch).mean(1)) * norm
            step = self._rates(index, mean_s)
            radial = self.rule.radial(step, norm_sq, mean_s)
            a = torch.mul(o, (step * (-2.0 / rows))[:, None, :], out=scratch)
            ratio_mean = None
        else:
            slope = derivative(o, activation)                     # (L, rows, neurons)
            ratio = curvature_ratio(o, activation)
            if cfg.objective == "linear":
                ratio = ratio * (slope * norm[:, None, :])
            mean_s = mean_sensitivity(slope, norm, cfg.average)
            step = self._rates(index, mean_s)
            radial = self.rule.radial(step, norm_sq, mean_s)
            a = ratio * (step / rows)[:, None, :]
            ratio_mean = ratio.mean(1)
        scale, group_a = radial.add_(1)[:, :, None], a
        if lead is not None:
            lead.weights[0].mul_(scale[0]).addmm_(a[0].T, lead.inputs[0])
            scale, group_a = scale[1:], a[1:]
        w.mul_(scale).baddbmm_(group_a.transpose(1, 2), x)
        if weights is not None and w.data_ptr() != weights[0].data_ptr():  # a stacked copy, not a view
            torch._foreach_copy_(weights, list(w.unbind(0)))
        if stacked_biases is not None or (biases is not None and all(b is not None for b in biases)):
            update = step * ratio_mean if ratio_mean is not None else a.sum(1)  # Σ_rows a = step·mean(-2·o)
            if lead is not None:  # _leads: the lead has a bias where the group has
                lead.bias.add_(update[0])
                update = update[1:]
            if stacked_biases is not None:
                stacked_biases.add_(update)
            else:
                torch._foreach_add_(biases, list(update.unbind(0)))

    def state_dict(self) -> dict:
        state = {"averages": [a.clone() for a in self.averages], "calls": self.calls}
        if self._shapes is not None:
            state["layers"] = list(self._shapes)
        if self.gaps is not None:
            state["gaps"] = self.gaps.clone()
            state["tangent_rng"] = self._tangent_rng.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restores the averages s̄. A state of another model (other layers, or other widths) is
        refused with one line: here when this SAL's layers are known, else at the next step."""
        averages = state.get("averages") if isinstance(state, dict) else None
        if not isinstance(averages, (list, tuple)) or not all(
                isinstance(a, torch.Tensor) and a.dim() == 1 for a in averages):
            raise ValueError("not a SAL state: it needs 'averages', a list of one 1-D tensor per layer "
                             "(from sal.state_dict())")
        if self._shapes is not None:
            self._check_state(state, self._shapes)
        self._loaded = state if self._shapes is None else None
        self.averages = [a.clone() for a in averages]
        self.calls = int(state.get("calls", 0))
        self._arm()
        self._stacks = {}
        if "gaps" in state:
            self.gaps = state["gaps"].clone()
            self._tangent_rng.set_state(state["tangent_rng"])

    @staticmethod
    def _check_state(state: dict, layers: list) -> None:
        """The loaded averages fit `layers` (LayerActivity, or (name, neurons) pairs)."""
        here = [shape for layer in layers
                for shape in (layer.shapes() if isinstance(layer, LayerActivity) else [tuple(layer)])]
        there = [tuple(pair) for pair in state.get("layers", [])] or [("?", a.shape[0]) for a in state["averages"]]
        sizes = [n for _, n in here] == [n for _, n in there] if state["averages"] else True
        names = all(a == b or "?" in (a, b) for (a, _), (b, _) in zip(here, there))
        if not sizes or not names or (state["averages"] and len(there) != len(here)):
            def listed(pairs):
                return ", ".join(f"{name}: {n}" for name, n in pairs)
            raise ValueError(f"this SAL state does not fit the model: it holds {len(there)} layer(s) of "
                             f"({listed(there)}) neurons, the model's SAL has {len(here)} ({listed(here)})")


def _bias_parts(bias: torch.Tensor | list[torch.Tensor] | None) -> list[torch.Tensor]:
    """The tensors of a neuron's bias: a bias held as a sum of tensors (nn.RNN's bias_ih + bias_hh)
    gets an equal share of each update in each, so that the sum moves as θ does."""
    return bias if isinstance(bias, list) else [] if bias is None else [bias]


def _add_to_bias(bias: torch.Tensor | list[torch.Tensor] | None, rate: torch.Tensor, grad: torch.Tensor) -> None:
    """θ += rate·grad, shared between the bias's tensors (`_bias_parts`)."""
    parts = _bias_parts(bias)
    for part in parts:
        part.addcmul_(rate, grad, value=1 / len(parts))


CHOICES = {name: typing.get_args(hint) for name, hint in typing.get_type_hints(SALSettings).items()
           if typing.get_origin(hint) is typing.Literal}


def _library_settings(settings: SALSettings | None, overrides: dict) -> SALSettings:
    """SALSettings from keywords, its errors worded for a library user (the settings
    dataclass speaks to the command line, as `method.lr`)."""
    if settings is not None and overrides:
        raise TypeError("give either settings or keyword overrides, not both")
    if settings is None:
        fields = [f.name for f in dataclasses.fields(SALSettings)]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise TypeError(f"SAL got an unknown setting {unknown[0]!r}; its settings: {', '.join(fields)}")
        try:
            settings = SALSettings(**overrides)
        except ValueError as error:
            raise ValueError(str(error).removeprefix("method.")) from None
    for name, choices in CHOICES.items():
        if getattr(settings, name) not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(settings, name)!r}")
    return settings


def _groups(layers: list[LayerActivity]) -> list[list[int]]:
    """Runs of consecutive layers that can be updated as one batch: one weight block,
    no mask, the same shapes, activation, dtype and device."""
    groups: list[list[int]] = []
    previous = None
    for i, layer in enumerate(layers):
        w = layer.weights[0]
        key = (w.shape, layer.output.shape, layer.inputs[0].shape, layer.activation, w.dtype, w.device,
               layer.bias is not None) if _plain(layer) else None
        if key is not None and key == previous:
            groups[-1].append(i)
        else:
            groups.append([i])
        previous = key
    return groups


def _grouped(layers: list[LayerActivity], group: list[int]) -> bool:
    """Whether a group of `_groups` is updated as a batch (`SAL._group_step`): several layers, or a
    stack reported as one activity; else it is a single layer (`SAL._layers_step`)."""
    return len(group) > 1 or bool(layers[group[0]].names)


def _plain(layer: LayerActivity) -> bool:
    """One weight block, no mask, one bias tensor (or none), a layer of its own (not a stack),
    its activity in stored tensors."""
    return (len(layer.weights) == 1 and (not layer.masks or layer.masks[0] is None)
            and not isinstance(layer.bias, list) and not layer.names
            and (type(layer) is LayerActivity or type(layer).chunks is LayerActivity.chunks))


def _leads(lead: LayerActivity, group: LayerActivity) -> bool:
    """Whether the layer `lead`, just before a group (`group` its first activity), can be updated
    with it (`SAL._group_step`): a plain layer of any fan-in whose outputs have the shape,
    activation, dtype and device of each of the group's layers, with a bias where they have one
    (salrun's MLP's first layer; the first of a stack of equal Linears)."""
    w, g = lead.weights[0], group.weights[0]
    return (_plain(lead) and len(lead.inputs) == 1 and lead.inputs[0].dim() == 2
            and lead.output.shape == (group.output.shape[1:] if group.names else group.output.shape)
            and lead.activation == group.activation and (w.dtype, w.device) == (g.dtype, g.device)
            and (lead.bias is None) == (group.bias is None))


def _led(first: torch.Tensor, first_input: torch.Tensor, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """[first, *o] as one (L + 1, rows, neurons) block: a view where the group's first input
    (`first_input`, stacked into x) is `first` and o is x shifted by one layer in one block (salrun's
    MLP; a stack of Linears recorded by hooks, `_chained`); else a copy."""
    if ((first_input is first or first_input.data_ptr() == first.data_ptr()) and x.shape == o.shape
            and x.stride() == o.stride() and o.data_ptr() == x.data_ptr() + x.stride(0) * x.element_size()):
        return x.as_strided((len(o) + 1, *o.shape[1:]), x.stride(), x.storage_offset())
    return torch.cat([first[None], o])


def _chained(xs: list[torch.Tensor], os_: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and outputs of layers reported one by one, stacked (L, rows, …): where each
    layer's input is the output before it (HookProbe hands the same tensor), one stack serves both."""
    if (all(map(operator.is_, xs[1:], os_[:-1]))
            or all(x.data_ptr() == o.data_ptr() for x, o in zip(xs[1:], os_[:-1]))):
        if xs[0].shape == os_[0].shape:
            chain = torch.stack([xs[0], *os_])
            return chain[:-1], chain[1:]
    return torch.stack(xs), torch.stack(os_)


def _stacked(tensors: list[torch.Tensor], allow_copy: bool = True) -> torch.Tensor | None:
    """A (L, …) view of equal tensors that lie one after another in one storage,
    or (if allowed) a stacked copy."""
    first = tensors[0]
    size, stride = first.numel(), first.stride()
    spacing = size * first.element_size()
    start = first.data_ptr()
    # Addresses spaced by one tensor's bytes, inside the first one's storage: one block
    # (two live storages never overlap), so the strided view below is exact.
    contiguous = (first.is_contiguous()
                  and first.untyped_storage().nbytes() - first.storage_offset() * first.element_size()
                  >= spacing * len(tensors)
                  and all(t.data_ptr() == start + k * spacing and t.stride() == stride
                          for k, t in enumerate(tensors)))
    if contiguous:
        return first.detach().as_strided((len(tensors), *first.shape), (size, *stride))
    return torch.stack([t.detach() for t in tensors]) if allow_copy else None
