"""What :func:`bnlab.training.fit` is told and what it returns: :class:`TrainConfig`, :class:`TrainResult`,
and the optimizers by name."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import choices as _choices

__all__ = ["OPTIMIZERS", "TrainConfig", "TrainResult", "make_optimizer"]

OPTIMIZERS = _choices.OPTIMIZERS  # defined in bnlab.choices, which the CLI parser reads too


@dataclass
class TrainConfig:
    """What :func:`fit` does. ``optimizer``: ``"sgd"`` (plain), ``"momentum"`` (SGD, momentum 0.9) or
    ``"adam"``. ``eval_every``: also evaluate every that many steps (0: only at the end of each epoch).
    ``eval_split``: ``"val"`` or ``"test"``. ``max_steps``: stop after that many steps in all (0: no limit).
    ``record_layer``/``record_unit``: the pre-activation unit to watch (see :class:`bnlab.models.UnitRecorder`).
    """

    optimizer: str = "sgd"
    lr: float = 0.05
    batch_size: int = 32
    epochs: int = 10
    seed: int = 0
    weight_decay: float = 0.0
    eval_every: int = 0
    eval_split: str = "val"
    max_steps: int = 0
    record_layer: str | None = None
    record_unit: int | list[int] = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        for name in ("batch_size", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: batch normalization needs 2 values per set B")
        if self.eval_split not in ("val", "test"):
            raise ValueError(f"eval_split must be 'val' or 'test', got {self.eval_split!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained ``model`` and its ``history``.

    ``history`` holds lists: per step ``step, epoch, loss, accuracy, p15, p50, p85`` (the percentiles of
    the watched unit; NaN without one); per evaluation ``eval_step, eval_loss, eval_accuracy``;
    ``train_seconds`` (time spent in training steps, summed over resumes). ``interrupted``: Ctrl-C came
    during the last step; the run is complete all the same (its checkpoint is the finished run's).
    """

    model: nn.Module
    config: TrainConfig
    history: dict
    checkpoint: Path | None = None
    recorded: str = ""
    completed: bool = True
    meta: dict = field(default_factory=dict)
    interrupted: bool = False

    @property
    def final_eval(self) -> dict:
        h = self.history
        if not h["eval_step"]:
            return {}
        return {"step": h["eval_step"][-1], "loss": h["eval_loss"][-1], "accuracy": h["eval_accuracy"][-1]}


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
