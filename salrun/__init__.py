"""salrun: Sensitivity Adjustment Learning (Shibata et al., Neural Networks 2021).

Library use::

    from salrun import SAL
    sal = SAL(model, lr=0.01)      # a Linear → Tanh model
    ...; optimizer.step(); sal.step()

Imports are lazy so that the command line starts without torch.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["SAL", "SALSettings", "sensitivity", "log_sensitivity"]


def __getattr__(name: str):
    if name == "SAL":
        from salrun.sal import SAL

        return SAL
    if name == "SALSettings":
        from salrun.settings import SALSettings

        return SALSettings
    if name in ("sensitivity", "log_sensitivity"):
        from salrun import sensitivity as module

        return getattr(module, name)
    raise AttributeError(f"module 'salrun' has no attribute {name!r}")
