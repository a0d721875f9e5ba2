"""The state of a run besides the weights: seeds and RNG states, the order of the examples, the per-step
history, and the strict JSON it is written as (:func:`write_json`, through :mod:`bnlab.io`)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..io import finite_json
from ..io import write_json as _write_json

__all__ = ["seed_everything", "write_json", "finite_json", "epoch_order", "new_history", "rng_state",
           "set_rng_state", "HISTORY_KEYS", "PERCENTILES"]  # fmt: skip

PERCENTILES = (15, 50, 85)
#: The lists of a history: per step, then per evaluation (and ``train_seconds``, a number).
HISTORY_KEYS = ("step", "epoch", "loss", "accuracy", "p15", "p50", "p85", "eval_step", "eval_loss", "eval_accuracy")


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as strict JSON (``allow_nan=False``): NaN and ±inf are written as ``null``.

    Written atomically by :mod:`bnlab.io` (a link at ``path`` is replaced, never written through).
    """
    return _write_json(path, obj)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator is what users' code draws from
    torch.manual_seed(seed)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # depends only on (seed, epoch): a resumed run sees the same batches without any saved RNG state
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def new_history() -> dict:
    h = {k: [] for k in HISTORY_KEYS}
    h["train_seconds"] = 0.0
    return h


def rng_state() -> dict:
    numpy_state = np.random.get_state()  # noqa: NPY002 - the state seed_everything seeded
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
