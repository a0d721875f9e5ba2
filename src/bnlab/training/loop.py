"""The training loop: :func:`fit` and :func:`evaluate` (see :mod:`bnlab.training`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..inference import save_checkpoint
from ..io import make_dirs
from ..models import UnitRecorder, model_spec
from ..nn.functional import VarianceOverflowError
from ..progress import progress_bar
from .config import TrainConfig, TrainResult, make_optimizer
from .schema import CHECKPOINT_NAME, KIND, load_training_state
from .signals import SigintFlag, TrainingInterrupted
from .state import PERCENTILES, epoch_order, new_history, rng_state, set_rng_state

__all__ = ["fit", "evaluate", "TrainingDiverged"]


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
    history = new_history()
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
        set_rng_state(saved["rng"])

    def state() -> dict:
        return {
            "kind": KIND,
            "model_spec": model_spec(model),
            "config": config.to_dict(),
            "meta": meta,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "step": step,
            "rng": rng_state(),
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
        with SigintFlag() as sigint:
            if step == 0 and config.eval_every:
                do_eval()  # the untrained network, step 0
            order_epoch, order = -1, None
            while step < total_steps:
                epoch, k = divmod(step, steps_per_epoch)
                if epoch != order_epoch:
                    order_epoch, order = epoch, epoch_order(n, config.seed, epoch)
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
