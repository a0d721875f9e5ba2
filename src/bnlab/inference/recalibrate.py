"""``recalibrate``: exact Alg. 2 population statistics for every BN layer of a model.

Running statistics are an exponential moving average over batches seen while the weights moved: they lag
the final network, which is one cause of the train/eval gap. Alg. 2 (steps 8–10) instead fixes the
weights and computes, over training mini-batches, E[x] = E_B[μ_B] and Var[x] = m/(m−1)·E_B[σ²_B] for the
input x of each BN layer.

How the pass runs:

- every BN layer normalizes with its *batch* statistics, as in training: the statistics of a layer are
  those of its input in the training network N_tr^BN, which depends on how the layers before it
  normalized. Their running statistics are not updated during the pass (``track_running_stats`` is off
  while it runs) and frozen layers are thawed for it: recalibrating is an explicit request;
- every other module runs in eval mode: dropout is off, so each BN layer sees the activations it will
  see at inference (dropout's extra variance would otherwise inflate Var[x]: the "variance shift" of
  Li et al. 2019);
- each layer's input is captured by a forward pre-hook; per batch its moments are taken over the layer's
  reduce axes in float64 (float32 on MPS) by :func:`bnlab.moments.moments`, and accumulated as they come by
  :class:`bnlab.moments.Population`, which weighs a batch of m'_b values by its size:

      E[x] = Σ_b m'_b μ_b / Σ_b m'_b,      Var[x] = Σ_b m'_b σ²_b / Σ_b (m'_b − 1)

  With equal sizes m' this is E_B[μ_B] and m'/(m'−1)·E_B[σ²_B], Alg. 2 exactly; with unequal sizes
  each value counts once and the variance is the pooled unbiased within-batch estimate (the spread of
  the batch means is not added, as in Alg. 2). m' is the number of values per statistic: the batch size
  m for per-activation BN, m·p·q for convolutional BN (§3.2).

Afterwards only ``running_mean``/``running_var`` have changed. ``num_batches_tracked``, parameters and
the train/eval mode and frozen state of every module are as before; a layer built with
``track_running_stats=False`` gets ``running_mean``/``running_var`` buffers (so eval mode, ``fold`` and
``freeze`` use them) and still never updates them in training. On any error nothing is changed (except
that a lazy bnlab.nn layer may have taken its shape from the first batch).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from ..moments import Population, moments
from ..progress import progress_bar
from ._layers import accumulation_dtype, bn_layers, describe, reduce_axes

__all__ = ["recalibrate"]

# the progress bar's label, by language (its unit, "batch"/"minilote", comes with bnlab.progress)
_BAR_LABEL = {"en": "recalibrate", "es": "recalibrar"}


def _input_of(batch, index: int) -> torch.Tensor:
    """A batch is a tensor, or a tuple/list whose first item is the input (``(x, y)`` from a DataLoader)."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, torch.Tensor):
        return batch
    raise TypeError(
        f"recalibrate: batch {index} is a {type(batch).__name__}; batches must be input tensors or "
        f"(input, target) pairs"
    )


def _model_device(model: nn.Module) -> torch.device | None:
    for t in (*model.parameters(), *model.buffers()):
        if t.device.type != "meta":
            return t.device
    return None


def recalibrate(
    model: nn.Module,
    batches: Iterable,
    *,
    max_batches: int | None = None,
    progress: bool = True,
    lang: str = "en",
) -> nn.Module:
    """Set every BN layer's running statistics to Alg. 2's population statistics; return ``model``.

    ``batches``: an iterable of input tensors or ``(input, target)`` pairs (a DataLoader over training
    data), moved to the model's device; at most ``max_batches`` are used. ``progress`` shows a bar on
    stderr, labelled in ``lang`` ("en" or "es").
    See the module docstring for how the pass runs and what changes.

    Raises ValueError when ``batches`` is empty, or a batch gives some layer only one value per
    statistic (the error names the layer and the count), and when a layer's statistics are not finite.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    >>> batches = [torch.randn(16, 3, 8, 8) for _ in range(4)]
    >>> _ = recalibrate(model, batches, progress=False)
    >>> model.training, int(model[1].num_batches_tracked)      # mode and counter as they were
    (True, 0)
    """
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")
    if lang not in _BAR_LABEL:
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(map(repr, _BAR_LABEL))}")
    layers = bn_layers(model)
    if not layers:
        warnings.warn("recalibrate: the model has no batch-normalization layers; nothing to do", stacklevel=2)
        return model
    device = _model_device(model)
    records: dict[int, Population] = {id(m): Population() for _, m in layers}
    dtypes: dict[int, torch.dtype] = {}
    where = {"batch": 0}

    def capture(name, layer):
        def hook(module, args):
            x = args[0]
            axes = reduce_axes(module, x.dim())
            count = math.prod(x.shape[a] for a in axes)
            if count <= 1:
                raise ValueError(
                    f"recalibrate: layer {describe(name, module)} got {count} value per statistic from batch "
                    f"{where['batch']} (input shape {tuple(x.shape)}, reduce axes {axes}); Alg. 2 needs more "
                    f"than 1 value per statistic in every batch: use larger batches"
                )
            dtypes[id(module)] = x.dtype
            records[id(module)].add(moments(x.detach().to(accumulation_dtype(x.device)), axes))

        return hook

    modes = [(m, m.training) for m in model.modules()]
    flags = [(m, m.track_running_stats, bool(getattr(m, "frozen", False))) for _, m in layers]
    handles = []
    n = 0
    try:
        model.eval()
        for name, m in layers:
            m.training = True
            m.track_running_stats = False  # batch statistics, no EMA update, num_batches_tracked untouched
            if getattr(m, "frozen", False):
                m.frozen = False
            handles.append(m.register_forward_pre_hook(capture(name, m)))
        total = len(batches) if hasattr(batches, "__len__") else None
        if max_batches is not None:
            total = max_batches if total is None else min(total, max_batches)
        it = iter(batches)
        bar = progress_bar(total, desc=_BAR_LABEL[lang], enabled=progress, lang=lang, unit="batch")
        try:
            with torch.no_grad():
                while max_batches is None or n < max_batches:
                    try:
                        batch = next(it)
                    except StopIteration:
                        break
                    where["batch"] = n
                    x = _input_of(batch, n)
                    if device is not None and x.device != device:
                        x = x.to(device)
                    model(x)
                    n += 1
                    bar.update(1)
        finally:
            bar.close()
    finally:
        for h in handles:
            h.remove()
        for m, track, frozen in flags:
            m.track_running_stats = track
            if frozen:
                m.frozen = True
        for m, mode in modes:
            m.training = mode
    if n == 0:
        raise ValueError("recalibrate got no batches: pass an iterable of input tensors or (input, target) pairs")

    results = []
    for name, m in layers:
        if not records[id(m)].batches:
            warnings.warn(
                f"recalibrate: layer {describe(name, m)} received no input during the pass; "
                f"its statistics are left as they were",
                stacklevel=2,
            )
            continue
        mean, var = records[id(m)].statistics()
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
            raise ValueError(
                f"recalibrate: layer {describe(name, m)} got non-finite statistics (NaN or Inf in its input); "
                f"nothing was changed"
            )
        results.append((m, mean, var))
    with torch.no_grad():
        for m, mean, var in results:
            if m.running_mean is None:  # track_running_stats=False: give it population statistics to use
                dtype = m.weight.dtype if getattr(m, "weight", None) is not None else dtypes[id(m)]
                m.running_mean = mean.to(dtype)
                m.running_var = var.to(dtype)
            else:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
    return model
