"""bnlab — batch normalization in convolutional networks.

The variants of batch normalization differ only in which values share one mean and variance (the set B
of Ioffe & Szegedy 2015, Alg. 1); bnlab writes everything once against those *reduce axes*.

``import bnlab`` is light: the torch-based parts (``bnlab.nn``, ``recalibrate``, ``fold``, ...) load on
first use.
"""

from __future__ import annotations

import importlib

from .axes import effective_batch_size, feature_shape, reduce_axes

# Bound eagerly: the function shares its name with its module, and binding it here means a later
# ``import bnlab.explain`` cannot rebind the name to the package (explain imports neither numpy nor torch).
from .explain import explain

__version__ = "0.1.0"

# public name -> module that defines it (loaded lazily, so the NumPy reference needs no torch import)
_LAZY = {
    "recalibrate": "bnlab.inference",
    "fold": "bnlab.inference",
    "freeze": "bnlab.inference",
    "unfreeze": "bnlab.inference",
    "convert": "bnlab.inference",
    "export_onnx": "bnlab.inference",
    "save_checkpoint": "bnlab.inference",
    "load_checkpoint": "bnlab.inference",
    "CheckpointError": "bnlab.inference",
    "Affine": "bnlab.inference",
    "convert_sync": "bnlab.distributed",
}

__all__ = ["reduce_axes", "feature_shape", "effective_batch_size", "explain", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in ("nn", "reference", "kernels", "inference", "data", "models", "training", "report", "cli"):
        return importlib.import_module(f"bnlab.{name}")
    raise AttributeError(f"module 'bnlab' has no attribute {name!r}")
