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
Ctrl-C stops at once, without saving. Ctrl-C during the last step raises nothing: that step ends the run,
whose checkpoint is already written; :func:`fit` returns with ``interrupted=True`` in its result.

A loss that is NaN or infinite (e.g. a learning rate far too large), or weights that became so, stop
:func:`fit` with :class:`TrainingDiverged` *before* the optimizer step and before any checkpoint is
written: the last checkpoint on disk is the last good one. :func:`write_json` writes strict JSON (no
``NaN``/``Infinity`` tokens, which standard JSON readers reject): non-finite numbers become ``null``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import reprlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import choices as _choices
from .inference import CheckpointError, load_checkpoint, save_checkpoint
from .io import finite_json, make_dirs
from .io import write_json as _write_json
from .models import ACTIVATIONS, ARCHS, FAMILY_NORMS, NORMS, UnitRecorder, build_model, model_spec
from .nn.functional import VarianceOverflowError
from .progress import progress_bar

__all__ = [
    "OPTIMIZERS",
    "CHECKPOINT_NAME",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "TrainingDiverged",
    "seed_everything",
    "make_optimizer",
    "evaluate",
    "fit",
    "load_trained",
    "load_training_state",
    "check_model_spec",
    "write_json",
    "finite_json",
]

OPTIMIZERS = _choices.OPTIMIZERS  # defined in bnlab.choices, which the CLI parser reads too
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`fit`; ``checkpoint`` is where the state was saved (None without ``out_dir``)."""

    def __init__(self, message: str, checkpoint: Path | None, step: int) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) became NaN or infinite at ``step``; nothing of that step was saved.

    ``loss`` is the offending loss value; ``checkpoint`` the last good checkpoint on disk (None when no
    ``out_dir`` was given or none was written yet).
    """

    def __init__(self, message: str, step: int, loss: float, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.checkpoint = checkpoint


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


# Bounds on a model spec read from a file: generous for this package's models, far below what would
# exhaust memory. The spec is also checked against the shapes of the weights stored beside it.
_SPEC_BOUNDS = {"channels": 4096, "side": 4096, "classes": 100_000, "features": 1 << 24, "layers": 16}


def _int_in(spec: dict, key: str, low: int, high: int) -> int:
    value = spec[key]
    if type(value) is not int or not low <= value <= high:
        raise CheckpointError(f"model_spec[{key!r}] = {reprlib.repr(value)}: expected an integer from {low} to {high}")
    return value


def _int_list(spec: dict, key: str, length: tuple[int, int], high: int) -> list[int]:
    value = spec[key]
    if not isinstance(value, (list, tuple)) or not length[0] <= len(value) <= length[1]:
        raise CheckpointError(
            f"model_spec[{key!r}] = {reprlib.repr(value)}: expected a list of {length[0]} to {length[1]} integers"
        )
    for v in value:
        if type(v) is not int or not 1 <= v <= high:
            raise CheckpointError(f"model_spec[{key!r}] = {reprlib.repr(value)}: each entry must be from 1 to {high}")
    return list(value)


def check_model_spec(spec) -> dict:
    """Validate a model spec read from a checkpoint (types, names, bounded sizes); return a clean copy.

    Raises :class:`bnlab.CheckpointError` naming the field at fault. Nothing is allocated.
    """
    if not isinstance(spec, dict):
        raise CheckpointError(f"model_spec is a {type(spec).__name__}, not a dict")
    b = _SPEC_BOUNDS
    arch = spec.get("arch")
    if arch not in ARCHS:
        raise CheckpointError(f"model_spec['arch'] = {reprlib.repr(arch)}: expected one of {', '.join(ARCHS)}")
    fields = {
        "cnn": {"arch", "in_channels", "image_size", "num_classes", "norm", "activation", "widths", "hidden"},
        "mlp": {"arch", "in_features", "num_classes", "norm", "activation", "hidden"},
    }[arch]
    if set(spec) != fields:
        raise CheckpointError(
            f"model_spec has fields {reprlib.repr(sorted(map(str, spec)))}; a {arch} model has {sorted(fields)}"
        )
    for key, choices in (("norm", NORMS + FAMILY_NORMS), ("activation", ACTIVATIONS)):
        if spec[key] not in choices:
            raise CheckpointError(
                f"model_spec[{key!r}] = {reprlib.repr(spec[key])}: expected one of {', '.join(choices)}"
            )
    clean = {"arch": arch, "norm": spec["norm"], "activation": spec["activation"]}
    clean["num_classes"] = _int_in(spec, "num_classes", 1, b["classes"])
    if arch == "cnn":
        clean["in_channels"] = _int_in(spec, "in_channels", 1, b["channels"])
        clean["image_size"] = _int_list(spec, "image_size", (2, 2), b["side"])
        clean["widths"] = _int_list(spec, "widths", (1, 8), b["channels"])
        clean["hidden"] = _int_in(spec, "hidden", 1, b["channels"] * 16)
    else:
        clean["in_features"] = _int_in(spec, "in_features", 1, b["features"])
        clean["hidden"] = _int_list(spec, "hidden", (0, b["layers"]), b["channels"] * 16)
    return clean


_TRAINING_KEYS = ("model_spec", "config", "meta", "model", "optimizer", "history", "step", "rng")


def load_training_state(path: str | Path, *, allow_legacy: bool = False) -> dict:
    """Read a checkpoint written by :func:`fit` and check its structure; return its contents.

    Raises :class:`bnlab.CheckpointError` for a damaged file, for a checkpoint that is not a training
    checkpoint, or one whose model spec is invalid or does not match the weights stored with it.
    ``allow_legacy``: also read a version-1 file (see :func:`bnlab.load_checkpoint`).
    """
    saved = load_checkpoint(path, allow_legacy=allow_legacy)
    if saved.get("kind") != _KIND:
        raise CheckpointError(f"{path} is not a bnlab training checkpoint (written by `bnlab train` or fit())")
    missing = [k for k in _TRAINING_KEYS if k not in saved]
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


def _non_finite(model: nn.Module) -> str | None:
    """Name of the first parameter or buffer holding NaN or ±inf, else None."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


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
    lang: str = "en",
    replica=None,
    allow_legacy: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data.x_train, data.y_train``; evaluate on the ``config.eval_split`` split.

    ``out_dir``: where ``last.pt`` is written at the end of every epoch (and on Ctrl-C). ``resume``:
    continue from ``out_dir/last.pt`` if it exists (the model and settings must match; ``epochs`` may
    grow). ``meta``: plain values stored in the checkpoint (e.g. the dataset name). ``on_step(step)`` is
    called after every completed step (the step count so far). ``lang``: labels of the progress bar.
    ``replica``: this process's :class:`bnlab.parallel.Replica` in a data-parallel run (``model`` from
    ``replica.wrap``): only the main replica shows progress and writes checkpoints, and all replicas stop
    after the same step on Ctrl-C. ``allow_legacy``: resume from a version-1 checkpoint too.

    Returns a :class:`TrainResult`; raises :class:`TrainingInterrupted` after saving, on Ctrl-C, and
    :class:`TrainingDiverged` (saving nothing) when the loss or the weights become NaN or infinite.
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
        make_dirs(ckpt.parent)
    if resume and ckpt is not None and ckpt.exists():
        saved = load_training_state(ckpt, allow_legacy=allow_legacy)
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
    saved_ok = ckpt if ckpt is not None and ckpt.exists() else None  # the last good checkpoint on disk

    def diverged(what: str, loss_value: float) -> TrainingDiverged:
        where = f"the last good checkpoint, {saved_ok}, was kept" if saved_ok else "nothing was saved"
        return TrainingDiverged(
            f"training diverged at step {step + 1}/{total_steps}: {what}; {where}. Try a smaller learning "
            f"rate (lr={config.lr:g})",
            step + 1,
            loss_value,
            saved_ok,
        )

    def save() -> Path:
        nonlocal saved_ok
        bad = _non_finite(model)
        if bad is not None:
            raise diverged(f"{bad} holds NaN or infinite values", math.nan)
        saved_ok = save_checkpoint(ckpt, state())
        return saved_ok

    main = replica is None or replica.is_main  # only the main replica shows progress and writes files
    bar = progress_bar(total_steps, step, desc, enabled=progress and main, lang=lang)
    model.train()
    interrupted = False
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
                try:
                    logits = model(xb)
                except VarianceOverflowError:  # activations of ~1e19 and more: BN refuses to normalize them
                    raise diverged("a normalization layer's batch variance overflows float32", math.nan) from None
                loss = nn.functional.cross_entropy(logits, yb)
                # before the step, so the weights stay as they were; in a data-parallel run every replica
                # computes the same loss from the gathered batch, so all of them stop at the same step
                if not bool(torch.isfinite(loss.detach())):
                    raise diverged(f"the loss is {float(loss.detach())}", float(loss.detach()))
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
                    save()
                if on_step is not None:
                    on_step(step)
                if sigint.raised if replica is None else replica.agree(sigint.raised):
                    if step == total_steps:  # the last step: the run is complete and saved, nothing to resume
                        interrupted = True
                        break
                    saved_to = save() if ckpt is not None and main else ckpt
                    where = f"checkpoint saved to {saved_to}" if saved_to else "nothing saved (no out_dir)"
                    raise TrainingInterrupted(f"interrupted at step {step}/{total_steps}: {where}", saved_to, step)
            interrupted = interrupted or sigint.raised  # Ctrl-C after the last check: the run is complete
    finally:
        bar.close()
        recorder.close()
    model.eval()
    return TrainResult(model, config, history, ckpt, recorder.layer, True, meta, interrupted)


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
