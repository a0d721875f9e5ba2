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

The package: :mod:`~bnlab.training.loop` (:func:`fit`, :func:`evaluate`), :mod:`~bnlab.training.config`
(:class:`TrainConfig`, :class:`TrainResult`, optimizers), :mod:`~bnlab.training.state` (seeds, RNG states,
the history and its JSON), :mod:`~bnlab.training.signals` (Ctrl-C) and :mod:`~bnlab.training.schema`
(the checkpoint's contents and their checks).
"""

from __future__ import annotations

from .config import OPTIMIZERS, TrainConfig, TrainResult, make_optimizer
from .loop import TrainingDiverged, evaluate, fit
from .schema import CHECKPOINT_NAME, check_model_spec, load_trained, load_training_state
from .signals import TrainingInterrupted
from .state import finite_json, seed_everything, write_json

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
