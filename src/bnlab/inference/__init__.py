"""Alg. 2 for whole models: the inference network, and the checkpoints training writes.

- :func:`recalibrate`: exact population statistics (E_B[μ_B], m/(m−1)·E_B[σ²_B]) for every BN layer;
- :func:`fold`: the inference network, BN folded into the conv/linear before it (or a fixed :class:`Affine`);
- :func:`freeze` / :func:`unfreeze`: BN layers that use and keep their statistics even after ``train()``;
- :func:`convert`: torch.nn.BatchNorm*d ↔ bnlab.nn.BatchNorm*d, state kept;
- :func:`export_onnx`: fold, export, check in onnxruntime;
- :func:`save_checkpoint` / :func:`load_checkpoint`: atomic writes; loading cannot run code.

Every function accepts models built with torch.nn BN layers as well as with bnlab.nn ones.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, LegacyCheckpointWarning, load_checkpoint, save_checkpoint
from .convert import convert
from .export import ExportReport, export_onnx
from .fold import fold
from .freeze import freeze, is_frozen, unfreeze
from .layers import Affine
from .recalibrate import recalibrate

__all__ = [
    "recalibrate",
    "fold",
    "Affine",
    "freeze",
    "unfreeze",
    "is_frozen",
    "convert",
    "export_onnx",
    "ExportReport",
    "save_checkpoint",
    "load_checkpoint",
    "LegacyCheckpointWarning",
    "CheckpointError",
]
