"""Probe metrics (`train.probes=true`; off by default): what a deep or long run looks like inside,
logged with the per-layer metrics at every evaluation step, from the training batch of that step.

Per layer l (per time step for an RNN, whose one-step map is the recurrent one):

    tangent_gain      ln(‖J_l δ‖/‖δ‖), J_l = diag(f'(U_l))·W_l, batch mean, for a tangent vector δ
                      carried up the stack from a random direction at the input: the log gain on
                      the direction the signal takes (summed over layers: the stack's log gain;
                      it can lie far below the sum of ln RMS(s), docs/DEPTH.md)
    sensitivity_pQ    the Q-th percentile over the layer's neurons of each neuron's batch-mean
                      sensitivity s_j (Q in PERCENTILES): the distribution RMS(s) summarises

The gradient norm and RMS sensitivity per layer are logged for every run (salrun.engines). The
tangent's random directions come from a generator of their own, seeded by the step, so a run
with probes trains exactly as one without.
"""
from __future__ import annotations

import torch

from salrun.activity import chained, per_layer
from salrun.models import ElmanRNN
from salrun.neurons import sensitivity, tangent_log_gains

PERCENTILES = (0, 10, 25, 50, 75, 90, 100)
PROBE_SEED = 20_27


def chain(net) -> tuple[list[torch.Tensor], list[torch.Tensor], list[bool], str]:
    """The network as a chain of one-step maps, from the last forward pass: each map's weight
    blocks, its output (batch, neurons), whether its input is the previous map's output, and
    the activation. An RNN's maps are its time steps, each through the recurrent weights."""
    model, layers = net.model, per_layer(net.probe.layers())  # the MLP reports its hidden stack as one
    if isinstance(model, ElmanRNN):
        states = model.recorded_states()
        outputs = list(layers[0].output.reshape(len(states), -1, layers[0].output.shape[-1]))
        return [[model.recurrent_weight()]] * len(outputs), outputs, [True] * len(outputs), layers[0].activation
    return [layer.weights for layer in layers], [layer.output for layer in layers], chained(layers), layers[0].activation


@torch.no_grad()
def record(net, writer, step: int) -> None:
    """Log the probe metrics of the last forward pass (see the module's docstring)."""
    weights, outputs, links, activation = chain(net)
    generator = torch.Generator().manual_seed(PROBE_SEED + step)
    gains = tangent_log_gains([w[0] for w in weights], outputs, links, activation, generator)
    levels = torch.tensor(PERCENTILES, dtype=torch.float32, device=gains.device) / 100
    table = torch.stack([torch.quantile(sensitivity(o, w, activation).mean(0).float(), levels)
                         for w, o in zip(weights, outputs)]).tolist()  # (layers, percentiles): one read back
    for layer, (gain, values) in enumerate(zip(gains.tolist(), table)):
        writer.log(step, "tangent_gain", gain, layer)
        for q, value in zip(PERCENTILES, values):
            writer.log(step, f"sensitivity_p{q}", value, layer)
