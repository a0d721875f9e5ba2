"""Alg. 2 for whole models: the inference network, and the checkpoints training writes.

- :func:`save_checkpoint` / :func:`load_checkpoint`: atomic writes; loading cannot run code.
"""

from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint"]
