"""The training checkpoint's schema: what :func:`bnlab.training.fit` writes in ``last.pt`` and how a file is
checked before anything is built from it (the model spec by :class:`bnlab.spec.ModelSpec`, bounded sizes, the
weights' shapes against the spec)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..inference import CheckpointError, load_checkpoint
from ..models import build_model
from ..spec import ModelSpec, SpecError

__all__ = ["CHECKPOINT_NAME", "KIND", "TRAINING_KEYS", "check_model_spec", "load_training_state", "load_trained"]

CHECKPOINT_NAME = "last.pt"
#: The ``kind`` of a training checkpoint.
KIND = "bnlab-training"
#: The entries of a training checkpoint.
TRAINING_KEYS = ("model_spec", "config", "meta", "model", "optimizer", "history", "step", "rng")


def check_model_spec(spec) -> dict:
    """Validate a model spec read from a checkpoint (types, names, bounded sizes); return a clean copy in the
    one vocabulary (a spec written before it, ``norm="channel"``, comes back as ``norm="batch", per="channel"``).

    Raises :class:`bnlab.CheckpointError` naming the field at fault. Nothing is allocated.
    """
    try:
        return ModelSpec.from_dict(spec).check_bounds().to_dict()
    except SpecError as err:
        raise CheckpointError(str(err)) from None


def load_training_state(path: str | Path, *, allow_legacy: bool = False) -> dict:
    """Read a checkpoint written by :func:`fit` and check its structure; return its contents.

    Raises :class:`bnlab.CheckpointError` for a damaged file, for a checkpoint that is not a training
    checkpoint, or one whose model spec is invalid or does not match the weights stored with it.
    ``allow_legacy``: also read a version-1 file (see :func:`bnlab.load_checkpoint`).
    """
    saved = load_checkpoint(path, allow_legacy=allow_legacy)
    if saved.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a bnlab training checkpoint (written by `bnlab train` or fit())")
    missing = [k for k in TRAINING_KEYS if k not in saved]
    if missing:
        raise CheckpointError(f"{path} is a training checkpoint without {', '.join(missing)}: it is damaged")
    step = saved["step"]
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{path}: step = {step!r} is not a step count")
    for key in ("config", "model", "optimizer", "history", "rng"):
        if not isinstance(saved[key], dict):
            raise CheckpointError(f"{path}: {key} is a {type(saved[key]).__name__}, not a dict")
    if saved["meta"] is not None and not isinstance(saved["meta"], dict):
        raise CheckpointError(f"{path}: meta is a {type(saved['meta']).__name__}, not a dict")
    try:
        spec = check_model_spec(saved["model_spec"])
        with torch.device("meta"):  # shapes only, nothing allocated
            skeleton = build_model(spec)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid model_spec: {err}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = saved["model"]
    found = {k: tuple(v.shape) for k, v in stored.items() if isinstance(v, torch.Tensor)}
    if expected != found or len(found) != len(stored):
        wrong = sorted(set(expected) ^ set(stored) | {k for k in expected if expected[k] != found.get(k)})
        raise CheckpointError(
            f"{path}: the weights do not match the model spec ({', '.join(map(str, wrong[:4]))}"
            f"{', ...' if len(wrong) > 4 else ''})"
        )
    saved["model_spec"] = spec
    return saved


def load_trained(path: str | Path, *, allow_legacy: bool = False) -> tuple[nn.Module, dict]:
    """The model saved in a training checkpoint (in eval mode) and the checkpoint's contents.

    The checkpoint is checked first (:func:`load_training_state`): a damaged or hostile file raises
    :class:`bnlab.CheckpointError` before any model is built. ``allow_legacy``: also read a version-1 file.
    """
    saved = load_training_state(path, allow_legacy=allow_legacy)
    model = build_model(saved["model_spec"])
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the stored weights do not fit the model: {err}") from None
    model.eval()
    return model, saved
