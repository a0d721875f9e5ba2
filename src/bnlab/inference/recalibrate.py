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

Inside ``torch.distributed`` (an initialized default group of 2 or more processes, or an explicit
``process_group=``) every rank iterates its own shard of the data and calls ``recalibrate`` with it; the
ranks then exchange, per layer, their (count, mean, within-batch M2, degrees of freedom) in float64 and
merge them in rank order — the means by Chan's formula (:func:`bnlab.moments.merge`), the M2 and degrees
of freedom by summing — so every rank ends with the **same** statistics: Alg. 2 over the union of the
shards, as one process iterating all of them would compute (uneven shards and ranks with no batches
included). Three small all-gathers per call, each bounded by ``timeout``; an error on one rank (a bad
batch, a mismatched model) is raised on every rank, and nothing changes anywhere.

Afterwards only ``running_mean``/``running_var`` have changed. ``num_batches_tracked``, parameters and
the train/eval mode and frozen state of every module are as before; a layer built with
``track_running_stats=False`` gets ``running_mean``/``running_var`` buffers (so eval mode, ``fold`` and
``freeze`` use them) and still never updates them in training. On any error nothing is changed (except
that a lazy bnlab.nn layer may have taken its shape from the first batch).
"""

from __future__ import annotations

import datetime
import math
import warnings
import zlib
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from .. import i18n
from ..moments import Moments, Population, merge_all, moments
from ..progress import progress_bar
from .layers import accumulation_dtype, bn_layers, describe, is_uninitialized, per_activation, reduce_axes

__all__ = ["recalibrate"]


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
    process_group=None,
    timeout: float | None = None,
) -> nn.Module:
    """Set every BN layer's running statistics to Alg. 2's population statistics; return ``model``.

    ``batches``: an iterable of input tensors or ``(input, target)`` pairs (a DataLoader over training
    data), moved to the model's device; at most ``max_batches`` are used. ``progress`` shows a bar on
    stderr, labelled in ``lang`` ("en", "es" or a language added to the catalogs; in a process group, on its rank
    0 only).
    See the module docstring for how the pass runs and what changes.

    ``process_group``: the ranks whose shards make up the data (default: the default group when
    ``torch.distributed`` is initialized with 2 or more processes; otherwise this process alone). Every
    rank of the group must call ``recalibrate`` on the same model, also with an empty shard. ``timeout``:
    seconds each exchange may wait for the other ranks (None: the process group's timeout).

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
    if lang not in i18n.languages():
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(map(repr, i18n.languages()))}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    group = _process_group(process_group)
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
    error: Exception | None = None
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
        show = progress and (group is None or dist.get_rank(group) == 0)
        bar = progress_bar(total, desc=i18n.t("cli.progress.recalibrate", lang), enabled=show, lang=lang, unit="batch")
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
    except Exception as err:
        if group is None:
            raise
        error = err  # raised after telling the other ranks, so that they stop too instead of waiting
    finally:
        for h in handles:
            h.remove()
        for m, track, frozen in flags:
            m.track_running_stats = track
            if frozen:
                m.frozen = True
        for m, mode in modes:
            m.training = mode
    if group is None:
        if n == 0:
            raise ValueError("recalibrate got no batches: pass an iterable of input tensors or (input, target) pairs")
        stats = {id(m): records[id(m)].statistics() for _, m in layers if records[id(m)].batches}
    else:
        stats = _merged_across_ranks(layers, records, n, error, group, timeout, device)

    results = []
    for name, m in layers:
        if id(m) not in stats:
            warnings.warn(
                f"recalibrate: layer {describe(name, m)} received no input during the pass; "
                f"its statistics are left as they were",
                stacklevel=2,
            )
            continue
        mean, var = stats[id(m)]
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
            raise ValueError(
                f"recalibrate: layer {describe(name, m)} got non-finite statistics (NaN or Inf in its input); "
                f"nothing was changed"
            )
        results.append((m, mean, var))
    with torch.no_grad():
        for m, mean, var in results:
            if m.running_mean is None:  # track_running_stats=False: give it population statistics to use
                weight = getattr(m, "weight", None)
                dtype = weight.dtype if weight is not None else dtypes.get(id(m), torch.get_default_dtype())
                m.running_mean = mean.to(dtype)
                m.running_var = var.to(dtype)
            else:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
    return model


# ---------------------------------------------------------------------------------------------------------
# Across processes: each rank's per-layer Population (count, mean, within-batch M2, degrees of freedom)
# merged exactly, in rank order, so that every rank computes bit-identical statistics.

_MAGIC = 0xA1_62_02


def _process_group(process_group):
    """The group to merge over, or None for this process alone."""
    if process_group is not None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "recalibrate: process_group= was given but torch.distributed is not initialized; call "
                "torch.distributed.init_process_group first, or leave process_group out to recalibrate locally"
            )
        return process_group
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def _all_gather(t: torch.Tensor, group, timeout, what: str) -> torch.Tensor:
    """(world, *t.shape): every rank's ``t``, in rank order; the wait is bounded by ``timeout``."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    work = dist.all_gather(parts, t.contiguous(), group=group, async_op=True)
    try:
        if timeout is None:
            work.wait()
        else:
            work.wait(timeout=datetime.timedelta(seconds=float(timeout)))
    except RuntimeError as err:  # gloo/NCCL errors and timeouts
        limit = "the process group's timeout" if timeout is None else f"{timeout:g} s"
        raise RuntimeError(
            f"recalibrate on rank {dist.get_rank(group)} of {len(parts)}: the {what} did not complete within "
            f"{limit} ({err}). Every rank of the process group must call recalibrate with the same model (each "
            f"with its own shard, possibly empty); to recalibrate in one process alone, call it outside the "
            f"process group or pass a process_group= that holds only this rank"
        ) from err
    return torch.stack(parts)


def _feature_shape(m: nn.Module, record: Population) -> tuple[int, ...] | None:
    """The shape of a layer's statistics, known without data unless the layer is lazy (then None)."""
    if record.batches:
        return tuple(record.total.mean.shape)
    for t in (m.running_mean, getattr(m, "weight", None)):
        if t is not None and not is_uninitialized(t):
            return tuple(t.shape)
    return (m.num_features,) if not per_activation(m) else None


def _merged_across_ranks(layers, records, n: int, error, group, timeout, device) -> dict:
    """{id(layer): (E[x], Var[x])} over every rank's shard, identical on every rank; raises on every rank
    when one rank failed (its own error there), the models differ, or no rank had a batch."""
    nccl = dist.get_backend(group) == "nccl"
    comm = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    me, world = dist.get_rank(group), dist.get_world_size(group)
    names = zlib.crc32("\n".join(f"{name}:{type(m).__name__}" for name, m in layers).encode())
    header = torch.tensor([_MAGIC, len(layers), names, int(error is not None), n], dtype=torch.int64, device=comm)
    headers = _all_gather(header, group, timeout, "exchange of headers").tolist()
    failed = [r for r, h in enumerate(headers) if h[3]]
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(
            f"recalibrate: rank(s) {failed} of {world} failed during their pass (see the error there), so rank {me} "
            f"stops too; nothing was changed"
        )
    if any(h[:3] != headers[0][:3] for h in headers):
        raise ValueError(
            f"recalibrate: the ranks hold different models (BN layers per rank: {[h[1] for h in headers]}, or "
            f"different names or types); every rank must call recalibrate on the same model"
        )
    if sum(h[4] for h in headers) == 0:
        raise ValueError(
            f"recalibrate got no batches on any of the {world} ranks: pass each rank an iterable of input tensors "
            f"or (input, target) pairs (its shard of the data)"
        )
    shapes = [_feature_shape(m, records[id(m)]) for _, m in layers]
    local = [
        [-1 if shape is None else math.prod(shape), records[id(m)].batches]
        for shape, (_, m) in zip(shapes, layers, strict=True)
    ]
    table = _all_gather(torch.tensor(local, dtype=torch.int64, device=comm), group, timeout, "exchange of shapes")
    table = table.tolist()  # [rank][layer] = [numel, batches]
    for i, (name, m) in enumerate(layers):
        numels = {row[i][0] for row in table}
        if sum(row[i][1] for row in table) and (-1 in numels or len(numels) > 1):
            lazy = [r for r, row in enumerate(table) if row[i][0] < 0]
            why = (
                f"is lazy and has no shape on rank(s) {lazy} (no input there); build it with spatial_size= or run "
                f"one batch through the model on every rank first"
                if lazy
                else f"has statistics of {sorted(numels)} values on different ranks; every rank must build the "
                f"same model"
            )
            raise ValueError(f"recalibrate: layer {describe(name, m)} {why}")
    # payload per layer with data on some rank: [count, dof, mean (numel), within-batch M2 (numel)]
    parts = []
    for i, (_, m) in enumerate(layers):
        if not sum(row[i][1] for row in table):
            continue
        numel, rec = table[0][i][0], records[id(m)]
        if rec.batches:
            count = torch.tensor([float(rec.total.count), float(rec.dof)], dtype=torch.float64)
            parts += [count.to(comm), rec.total.mean.reshape(-1).to(comm, torch.float64)]
            parts.append(rec.within_m2.reshape(-1).to(comm, torch.float64))
        else:
            parts.append(torch.zeros(2 + 2 * numel, dtype=torch.float64, device=comm))
    payload = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=comm)
    gathered = _all_gather(payload, group, timeout, "exchange of statistics")  # (world, payload size)
    out, at = {}, 0
    for i, (_, m) in enumerate(layers):
        if not sum(row[i][1] for row in table):
            continue
        numel, shape = table[0][i][0], shapes[i]  # known on every rank here (checked above)
        ranks = [r for r in range(world) if table[r][i][1]]
        chunk = gathered[:, at : at + 2 + 2 * numel]
        at += 2 + 2 * numel
        total = merge_all(Moments(chunk[r, 0], chunk[r, 2 : 2 + numel], 0.0) for r in ranks)  # Chan, in rank order
        within_m2 = sum(chunk[r, 2 + numel :] for r in ranks)
        dof = sum(chunk[r, 1] for r in ranks)
        mean, var = total.mean, within_m2 / dof
        target = device if device is not None else comm
        out[id(m)] = (mean.reshape(shape).to(target), var.reshape(shape).to(target))
    return out
