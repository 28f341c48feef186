"""salrun: Sensitivity Adjustment Learning (Shibata et al., Neural Networks 2021).

Library use (docs/LIBRARY.md)::

    from salrun import SAL
    sal = SAL(model, lr=0.01)      # finds the Linear → tanh layers, nn.RNN and nn.RNNCell
    ...; optimizer.step(); sal.step()

Imports are lazy so that the command line starts without torch.
"""
from __future__ import annotations

import importlib
import time

STARTED_AT = time.perf_counter()  # the process's start, near enough: a job's start-up counts from here
__version__ = "0.1.0"
__all__ = ["SAL", "SALSettings", "sensitivity", "log_sensitivity", "load_model"]

_HOMES = {"SAL": "salrun.sal", "SALSettings": "salrun.settings", "sensitivity": "salrun.neurons",
          "log_sensitivity": "salrun.neurons", "load_model": "salrun.jobs"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'salrun' has no attribute {name!r}")
