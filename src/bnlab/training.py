"""The training loop: fit/evaluate, per-step history, checkpoints, exact resume, clean Ctrl-C.

:func:`fit` trains a model from :mod:`bnlab.models` on a dataset from :mod:`bnlab.data` (any object with
``x_train, y_train, x_val, y_val`` and optionally ``x_test, y_test`` tensors works) and records, for
every step, the loss, the batch accuracy and the 15th/50th/85th percentiles of one pre-activation unit
across the batch — the paper's Fig. 1(b, c). Evaluation is always in eval mode, i.e. with the BN layers'
running statistics (Alg. 2).

Reproducibility: :func:`seed_everything` seeds torch, NumPy and Python; the order of the examples in
epoch ``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint sees the same batches as an
uninterrupted one. With ``out_dir`` set, a checkpoint is written atomically (``bnlab.save_checkpoint``)
at the end of every epoch and when the run is interrupted; ``resume=True`` continues from it, to the
same weights as a run that never stopped.

Ctrl-C (SIGINT) during :func:`fit` finishes the current step, saves the checkpoint and raises
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``) whose message says where it was saved. A second
Ctrl-C stops at once, without saving.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .inference import load_checkpoint, save_checkpoint
from .models import UnitRecorder, build_model, model_spec

__all__ = [
    "OPTIMIZERS",
    "CHECKPOINT_NAME",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "seed_everything",
    "make_optimizer",
    "evaluate",
    "fit",
    "load_trained",
]

OPTIMIZERS = ("sgd", "momentum", "adam")
CHECKPOINT_NAME = "last.pt"
_KIND = "bnlab-training"
PERCENTILES = (15, 50, 85)


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
    ``train_seconds`` (time spent in training steps, summed over resumes).
    """

    model: nn.Module
    config: TrainConfig
    history: dict
    checkpoint: Path | None = None
    recorded: str = ""
    completed: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def final_eval(self) -> dict:
        h = self.history
        if not h["eval_step"]:
            return {}
        return {"step": h["eval_step"][-1], "loss": h["eval_loss"][-1], "accuracy": h["eval_accuracy"][-1]}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`fit`; ``checkpoint`` is where the state was saved (None without ``out_dir``)."""

    def __init__(self, message: str, checkpoint: Path | None, step: int) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator is what users' code draws from
    torch.manual_seed(seed)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    """Mean cross-entropy ``loss`` and ``accuracy`` of ``model`` on ``(x, y)``, in eval mode (Alg. 2).

    The model's mode is restored afterwards; nothing in it changes.
    """
    was_training = model.training
    model.eval()
    try:
        total_loss, correct = 0.0, 0
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size])
            yb = y[i : i + batch_size]
            total_loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    n = max(len(x), 1)
    return {"loss": total_loss / n, "accuracy": correct / n}


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # depends only on (seed, epoch): a resumed run sees the same batches without any saved RNG state
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _new_history() -> dict:
    keys = ("step", "epoch", "loss", "accuracy", "p15", "p50", "p85", "eval_step", "eval_loss", "eval_accuracy")
    h = {k: [] for k in keys}
    h["train_seconds"] = 0.0
    return h


def _rng_state() -> dict:
    numpy_state = np.random.get_state()  # noqa: NPY002 - the state seed_everything seeded
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


class _SigintFlag:
    """While active, the first SIGINT only sets ``raised``; a second one interrupts at once."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _check_resume(saved: dict, model: nn.Module, config: TrainConfig, path: Path) -> None:
    spec = model_spec(model)
    if saved["model_spec"] != spec:
        raise ValueError(
            f"cannot resume from {path}: it holds a different model ({saved['model_spec']}); this run builds "
            f"{spec}. Use another --out directory, or the same settings"
        )
    old = dict(saved["config"])
    new = config.to_dict()
    for key in ("epochs", "max_steps"):  # a run may be extended
        old.pop(key, None)
        new.pop(key, None)
    changed = [k for k in new if old.get(k) != new[k]]
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
        raise ValueError(f"cannot resume from {path}: the training settings differ ({diffs})")


def fit(
    model: nn.Module,
    data,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
    meta: dict | None = None,
    on_step: Callable[[int], None] | None = None,
    replica=None,
) -> TrainResult:
    """Train ``model`` on ``data.x_train, data.y_train``; evaluate on the ``config.eval_split`` split.

    ``out_dir``: where ``last.pt`` is written at the end of every epoch (and on Ctrl-C). ``resume``:
    continue from ``out_dir/last.pt`` if it exists (the model and settings must match; ``epochs`` may
    grow). ``meta``: plain values stored in the checkpoint (e.g. the dataset name). ``on_step(step)`` is
    called after every completed step (the step count so far). ``replica``: this process's
    :class:`bnlab.parallel.Replica` in a data-parallel run (``model`` from ``replica.wrap``): only the main
    replica shows progress and writes checkpoints, and all replicas stop after the same step on Ctrl-C.

    Returns a :class:`TrainResult`; raises :class:`TrainingInterrupted` after saving, on Ctrl-C.
    """
    config = config or TrainConfig()
    meta = dict(meta or {})
    x, y = data.x_train, data.y_train
    x_eval = getattr(data, f"x_{config.eval_split}")
    y_eval = getattr(data, f"y_{config.eval_split}")
    n = len(x)
    if n < config.batch_size:
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set ({n} examples)")
    steps_per_epoch = n // config.batch_size  # the last, incomplete batch is dropped (BN needs full batches)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)

    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    history = _new_history()
    step = 0
    ckpt = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if resume and ckpt is not None and ckpt.exists():
        saved = load_checkpoint(ckpt)
        if saved.get("kind") != _KIND:
            raise ValueError(f"cannot resume from {ckpt}: not a bnlab training checkpoint")
        _check_resume(saved, model, config, ckpt)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history = saved["history"]
        step = int(saved["step"])
        _set_rng_state(saved["rng"])

    def state() -> dict:
        return {
            "kind": _KIND,
            "model_spec": model_spec(model),
            "config": config.to_dict(),
            "meta": meta,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "step": step,
            "rng": _rng_state(),
        }

    def do_eval() -> None:
        if history["eval_step"] and history["eval_step"][-1] == step:
            return
        r = evaluate(model, x_eval, y_eval)
        history["eval_step"].append(step)
        history["eval_loss"].append(r["loss"])
        history["eval_accuracy"].append(r["accuracy"])

    recorder = UnitRecorder(model, config.record_layer, config.record_unit)
    main = replica is None or replica.is_main
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not (progress and main), leave=False,
               dynamic_ncols=True)  # fmt: skip
    model.train()
    try:
        with _SigintFlag() as sigint:
            if step == 0 and config.eval_every:
                do_eval()  # the untrained network, step 0
            order_epoch, order = -1, None
            while step < total_steps:
                epoch, k = divmod(step, steps_per_epoch)
                if epoch != order_epoch:
                    order_epoch, order = epoch, _epoch_order(n, config.seed, epoch)
                idx = order[k * config.batch_size : (k + 1) * config.batch_size]
                xb, yb = x[idx], y[idx]
                t0 = time.perf_counter()
                logits = model(xb)
                loss = nn.functional.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history["train_seconds"] += time.perf_counter() - t0
                step += 1
                loss_value = float(loss.detach())
                acc = float((logits.detach().argmax(1) == yb).float().mean())
                p = recorder.percentiles(PERCENTILES) if recorder.values is not None else [math.nan] * 3
                for key, v in zip(
                    ("step", "epoch", "loss", "accuracy", "p15", "p50", "p85"),
                    (step, epoch, loss_value, acc, *p),
                    strict=True,
                ):
                    history[key].append(v)
                end_of_epoch = step % steps_per_epoch == 0
                if (config.eval_every and step % config.eval_every == 0) or end_of_epoch or step == total_steps:
                    do_eval()
                    bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{history['eval_accuracy'][-1]:.3f}")
                bar.update(1)
                if ckpt is not None and main and (end_of_epoch or step == total_steps):
                    save_checkpoint(ckpt, state())
                if on_step is not None:
                    on_step(step)
                if sigint.raised if replica is None else replica.agree(sigint.raised):
                    saved_to = save_checkpoint(ckpt, state()) if ckpt is not None and main else ckpt
                    where = f"checkpoint saved to {saved_to}" if saved_to else "nothing saved (no out_dir)"
                    raise TrainingInterrupted(f"interrupted at step {step}/{total_steps}: {where}", saved_to, step)
    finally:
        bar.close()
        recorder.close()
    model.eval()
    return TrainResult(model, config, history, ckpt, recorder.layer, True, meta)


def load_trained(path: str | Path) -> tuple[nn.Module, dict]:
    """The model saved in a training checkpoint (in eval mode) and the checkpoint's contents."""
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or saved.get("kind") != _KIND:
        raise ValueError(f"{path} is not a bnlab training checkpoint (written by `bnlab train`)")
    model = build_model(saved["model_spec"])
    model.load_state_dict(saved["model"])
    model.eval()
    return model, saved
