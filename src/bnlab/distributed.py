"""Synchronized batch normalization: the set B of a mini-batch split across processes.

In data-parallel training each process holds only a shard of the mini-batch, so the paper's set B — the
whole mini-batch (times p·q locations in a conv layer) — exists only across the processes. Here every
rank summarizes its shard per feature as (count, mean, M2) with the same kernels as single-process BN,
the summaries are exchanged over ``torch.distributed`` and merged exactly with Chan's formula
(:func:`bnlab.moments.merge`), so the output equals BN over the concatenated batch — also for shards of
different sizes, including empty ones (an average of the ranks' means would be wrong there).

Communication per training step and layer:

- forward: one all-gather of one float64 row per rank: a small header (count, dtype, shape, variant, layer
  identity, eps, momentum), checked on every rank so that ranks that disagree fail with a clear error on
  *every* rank instead of exchanging garbage, then the packed (mean, M2), merged in float64. All rows of a
  process group have one width (the largest feature count seen in it, the same on every rank): a layer with
  more features than that sends its header alone first (as once per new width), then its statistics — two
  collectives, where every later step makes one;
- backward: one all-gather of the packed float64 (Σ dy, Σ dy·x̂), summed in rank order; the input gradient
  then uses the global count, while the parameter gradients stay local (data-parallel training sums them);
- eval mode (and frozen layers) never communicate.

Every wait is bounded: a rank that died or stopped calling the layer makes the others raise
:class:`SyncBatchNormError` after ``timeout`` seconds (default: the process group's timeout). Every
rank fails or none does: each exchanged row carries when its rank started and until when it waits (see
``_exchange``), so a rank that arrives after another gave up raises too, and no rank changes the layer's
state (running statistics, ``num_batches_tracked``) in a step that another rank abandoned.

>>> import torch, bnlab
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
>>> model = bnlab.convert_sync(model)          # every BN layer becomes bnlab.nn.SyncBatchNorm
>>> type(model[1]).__name__
'SyncBatchNorm'

Without an initialized process group the layer is plain batch norm (as ``torch.nn.SyncBatchNorm``).

Batch Renorm (:class:`SyncBatchRenorm`, what :func:`convert_sync` makes of ``bnlab.nn.BatchRenorm1d/2d/3d``)
rides on the same exchange: r and d from the merged μ_B, σ²_B (:func:`bnlab.nn.renorm.renorm_factors`), then
this transform with the affine map (γ·r, β + γ·d); its rmax, dmax and warm-up travel in the header, compared as
eps and momentum. No extra collective.
"""

from __future__ import annotations

import datetime
import itertools
import math
import struct
import time
import zlib

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import once_differentiable

from . import _compat, kernels
from .kernels import native
from .moments import Moments, merge_all
from .nn import BatchNormBase, BatchRenormBase
from .nn import functional as F
from .nn.modules import check_input_dim
from .nn.renorm import batch_renorm, check_dmax, check_rmax, renorm_affine, renorm_factors
from .nn.surgery import adopt_state, replace_module

__all__ = [
    "SyncBatchNorm", "SyncBatchRenorm", "SyncBatchNormError", "convert_sync", "sync_batch_norm", "sync_batch_renorm",
    "collective_count", "all_gather",
]  # fmt: skip

# header: [magic, layer id, count, dtype, input ndim, reduce-axes bitmask, feature numel, feature shape[:5],
#          eps (float64 bits), momentum (float64 bits; -1: cumulative average),
#          Batch Renorm's rmax, dmax in effect (float64 bits) and warmup_steps (-1, -1, -1: plain BN)]
# Every exchanged row is preceded by [start, deadline] (µs since the epoch, see _exchange).
_MAGIC = 0xB7_5B_4E
_FSHAPE = slice(7, 12)
_ERROR = -1  # count sent by a rank whose input was rejected locally
_DTYPES = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3, torch.float64: 4}
_DTYPE_NAMES = {v: str(k).removeprefix("torch.") for k, v in _DTYPES.items()}

_collectives = [0]
_created = itertools.count(1)  # creation index of SyncBatchNorm layers in this process (their identity, see there)
# A rank waits this long past the deadline it announced before giving up on a collective: a peer that reached
# the collective before that deadline gets its data delivered within this grace (loopback or LAN latency,
# a loaded machine, clocks of different hosts that agree to within a second), see _exchange.
_GRACE_S = 2.0
_NO_DEADLINE = 2**52  # µs, exactly representable in float64 (no limit known)


class SyncBatchNormError(RuntimeError):
    """Synchronized BN could not run: a rank disagreed, failed, died or stopped calling the layer."""


def collective_count() -> int:
    """How many collectives synchronized BN has started in this process (tests count them)."""
    return _collectives[0]


def _active(group) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _wait(work, timeout: float | None, what: str, group, shown: float | None = None) -> None:
    """Wait for ``work`` at most ``timeout`` s; the error names ``shown`` s (default: ``timeout``)."""
    try:
        if timeout is None:
            work.wait()
        else:
            work.wait(timeout=datetime.timedelta(seconds=float(timeout)))
    except RuntimeError as err:  # gloo/NCCL errors (DistBackendError is a RuntimeError)
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        shown = timeout if shown is None else shown
        limit = "the process group's timeout" if shown is None else f"{shown:g} s"
        raise SyncBatchNormError(
            f"synchronized batch norm on rank {rank} of {world}: the {what} did not complete within {limit} "
            f"({err}). Another rank has died, or stopped calling this layer: every rank must call each "
            f"SyncBatchNorm layer in training mode in the same order, also with an empty shard. The process "
            f"group is no longer usable: stop all processes and resume from the last checkpoint"
        ) from err


def all_gather(t: torch.Tensor, group, timeout, what: str, shown: float | None = None) -> torch.Tensor:
    """All-gather ``t`` from every rank of ``group`` into a (world, *t.shape) tensor, waiting at most ``timeout``
    seconds (:class:`SyncBatchNormError` naming ``what`` and ``shown`` seconds otherwise); counted by
    :func:`collective_count`."""
    world = dist.get_world_size(group)
    out = t.new_empty(world * t.numel())
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    _collectives[0] += 1
    work = gather(out, t.contiguous().reshape(-1), group=group, async_op=True)
    _wait(work, timeout, what, group, shown)
    return out.reshape(world, *t.shape)


_all_gather = all_gather  # the old private name, kept for old importers


def _group_timeout(group) -> float | None:
    """The process group's own timeout in seconds (the backend abandons a collective after it), or None."""
    return _compat.process_group_timeout(group)


_limits_cache: dict = {}


def _limits(group, timeout: float | None) -> tuple[float | None, float | None]:
    """(announced limit, wait limit) in seconds for one collective; None: unbounded (unknown). Cached per
    group and timeout (a group's own timeout is read once)."""
    key = (group if group is not None else dist.group.WORLD, timeout)  # (a new default group: a new key)
    if key not in _limits_cache:
        _limits_cache[key] = _compute_limits(group, timeout)
    return _limits_cache[key]


def _compute_limits(group, timeout: float | None) -> tuple[float | None, float | None]:
    backend = _group_timeout(group)
    limit = timeout if timeout is not None else backend
    if limit is None:
        return None, None
    wait = limit + _GRACE_S
    if backend is not None and wait > backend:  # the backend gives up first: announce less
        wait, limit = backend, max(backend - _GRACE_S, backend / 2)
    return limit, wait


def _exchange(parts: list, group, timeout, what: str, like: torch.Tensor, head: list | tuple = ()) -> torch.Tensor:
    """All-gather one row from every rank: ``parts`` concatenated (Python ints: an int64 row; 1D float32/float64
    tensors: a float64 row, after the Python numbers ``head``; on ``like``'s device); returns (world, row length).
    Every rank that gets the result gets the same verdict: either all ranks were in time, or it raises
    :class:`SyncBatchNormError`.

    A timeout alone cannot give that: a rank that gives up has already sent its row, so a peer arriving
    after that still completes the collective and would go on alone. So each row starts with the time its
    rank started the collective and the deadline it announces (start + limit, µs since the epoch); the
    rank itself waits ``_GRACE_S`` longer. If the latest start is after the earliest deadline, some rank
    may have given up (or will): every rank that completes raises too, before changing any state. If not,
    every row was sent at least the grace before any rank gives up, so no rank gives up. Limit: the
    clocks of the hosts must agree to well within the grace (NTP does), and a row must arrive within it.
    """
    limit, wait = _limits(group, timeout)
    start = time.time_ns() // 1000
    deadline = start + round(limit * 1e6) if limit is not None else _NO_DEADLINE
    if parts and not isinstance(parts[0], torch.Tensor):
        row = torch.tensor([start, deadline, *parts], dtype=torch.int64, device=like.device)
    else:
        # (torch.cat promotes float32 parts to float64, exactly)
        row = torch.cat((torch.tensor([start, deadline, *head], dtype=torch.float64, device=like.device), *parts))
    rows = all_gather(row, group, wait, what, limit)
    starts, deadlines = zip(*rows[:, :2].tolist(), strict=True)
    first = min(range(len(deadlines)), key=deadlines.__getitem__)
    late = [r for r, t in enumerate(starts) if t > deadlines[first]]
    if late:
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        behind = (max(starts) - starts[first]) / 1e6
        raise SyncBatchNormError(
            f"synchronized batch norm on rank {rank} of {world}: rank(s) {late} reached the {what} {behind:.1f} s "
            f"after rank {first}, past its limit of {(deadlines[first] - starts[first]) / 1e6:g} s: rank {first} "
            f"gave up, so every rank stops here, with this layer unchanged. A rank stalled, or stopped calling "
            f"this layer: every rank must call each SyncBatchNorm layer in training mode in the same order. The "
            f"process group is no longer usable: stop all processes and resume from the last checkpoint"
        )
    return rows[:, 2:]


def _describe(h: list[int]) -> str:
    ndim, mask, fshape = h[4], h[5], [n for n in h[_FSHAPE] if n >= 0]
    axes = tuple(a for a in range(ndim) if mask >> a & 1)
    return f"{ndim}D input, feature shape {tuple(fshape)}, reduce axes {axes}, {_DTYPE_NAMES.get(h[3], '?')}"


def _check_headers(headers: list[list[int]], group, name: str) -> None:
    """The same error on every rank when the ranks disagree (they all see the same headers)."""
    me = dist.get_rank(group)
    failed = [r for r, h in enumerate(headers) if h[2] == _ERROR]
    if failed:
        if me in failed:
            return  # this rank raises its own, more precise error
        raise SyncBatchNormError(
            f"synchronized batch norm: rank(s) {failed} rejected their input (see the error there), so rank {me} "
            f"stops too instead of waiting for them"
        )
    if any(h[0] != _MAGIC for h in headers):
        raise SyncBatchNormError(
            "synchronized batch norm: another rank sent something else than a batch-norm header: the ranks "
            "are out of step (every rank must call the same SyncBatchNorm layers in the same order)"
        )
    keys = {r: (h[3], h[4], h[5], h[6], *h[_FSHAPE]) for r, h in enumerate(headers)}
    if len(set(keys.values())) > 1:
        per_rank = "; ".join(f"rank {r}: {_describe(h)}" for r, h in enumerate(headers))
        raise SyncBatchNormError(
            f"synchronized batch norm: the ranks disagree on the channel count, dtype or variant of this layer "
            f"({per_rank}). Every rank must build the same model (same num_features, per=, dtype)"
        )
    layers = {h[1] for h in headers} - {0}  # 0: the functional form (no identity)
    if len(layers) > 1:
        per_rank = "; ".join(f"rank {r}: {_describe_layer(h[1])}" for r, h in enumerate(headers))
        raise SyncBatchNormError(
            f"synchronized batch norm: the ranks are out of step, calling different layers ({per_rank}; this one "
            f"is {_describe_layer(headers[me][1], name)}): a rank skipped a layer or a step; every rank must call "
            f"each SyncBatchNorm layer in training mode, in the same order, also with an empty shard"
        )
    settings = {(h[12], h[13]) for h in headers}
    if len(settings) > 1:
        per_rank = "; ".join(f"rank {r}: eps={_unpack(h[12]):g}, momentum={_momentum_text(h[13])}"
                             for r, h in enumerate(headers))  # fmt: skip
        raise SyncBatchNormError(
            f"synchronized batch norm: the ranks disagree on eps or momentum of this layer ({per_rank}): their "
            f"outputs or running statistics would silently differ. Every rank must build the same model and load "
            f"the same checkpoint (with momentum=None the weight of a batch is 1/(num_batches_tracked + 1): "
            f"different weights mean the ranks counted different numbers of batches)"
        )
    renorm = {tuple(h[14:17]) for h in headers}
    if len(renorm) > 1:
        per_rank = "; ".join(f"rank {r}: {_renorm_text(h)}" for r, h in enumerate(headers))
        raise SyncBatchNormError(
            f"synchronized batch norm: the ranks disagree on Batch Renorm's settings of this layer ({per_rank}): "
            f"their r and d would silently differ. Every rank must build the same model (same rmax, dmax, "
            f"warmup_steps and schedules) and load the same checkpoint (a schedule and the warm-up follow "
            f"num_batches_tracked: different values mean the ranks counted different numbers of batches)"
        )


def _renorm_text(h: list[int]) -> str:
    if h[16] == -1:
        return "plain batch norm (not Batch Renorm)"
    return f"rmax={_unpack(h[14]):g}, dmax={_unpack(h[15]):g} in effect, warmup_steps={h[16]}"


def _layer_id(name: str, index: int = 0) -> int:
    """A number for a layer, the same in every process: from its name in its model where it has one
    (positive), else from its creation index (negative); 0: none (the functional form)."""
    if name:
        return zlib.crc32(name.encode()) % (2**31 - 1) + 1
    return -index


def _describe_layer(layer: int, name: str = "") -> str:
    if layer > 0:
        return f"layer {name!r}" if name else f"a layer named in its model (id {layer})"
    if layer < 0:
        return f"hand-built layer #{-layer} (creation order)"
    return "the functional sync_batch_norm"


def _pack(v: float) -> int:
    """A float's float64 bits as an int64 (compared exactly across ranks)."""
    return struct.unpack("<q", struct.pack("<d", float(v)))[0]


def _unpack(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def _momentum_text(bits: int) -> str:
    return "None (cumulative)" if bits == -1 else f"{_unpack(bits):g}"


def _header(x, axes: tuple[int, ...], count: int, layer: int, eps: float = 0.0, momentum=0.0, renorm=None) -> list[int]:
    fshape = [n for i, n in enumerate(x.shape) if i not in axes]
    mask = sum(1 << a for a in axes)
    row = [_MAGIC, layer, count, _DTYPES.get(x.dtype, 0), x.dim(), mask, math.prod(fshape)]
    row += (fshape + [-1] * 5)[:5]
    if isinstance(momentum, torch.Tensor):
        momentum = momentum.item()
    row += [_pack(eps), -1 if momentum is None else _pack(momentum)]
    row += [-1, -1, -1] if renorm is None else [_pack(renorm[0]), _pack(renorm[1]), int(renorm[2])]
    return row


def _header_row(header: list[int]) -> torch.Tensor:
    """The header as float64 (exact: every entry is below 2^53; eps and momentum as their values)."""
    values = [float(v) for v in header[:12]] + [_unpack(header[12]), -1.0 if header[13] == -1 else _unpack(header[13])]
    values += [-1.0 if v == -1 else _unpack(v) for v in header[14:16]] + [float(header[16])]
    return torch.tensor(values, dtype=torch.float64)


_header_values: dict = {}


def _header_floats(header: list[int]) -> list[float]:
    """:func:`_header_row`'s values as Python floats, cached per header (a layer's header is the same every step)."""
    key = tuple(header)
    found = _header_values.get(key)
    if found is None:
        if len(_header_values) >= 1024:
            _header_values.clear()
        found = _header_values[key] = _header_row(header).tolist()
    return found


def _header_of(row: list[float]) -> list[int]:
    """The integer header (:func:`_header`) back from its float64 row (:func:`_header_row`)."""
    head = [int(v) for v in row[:12]] + [_pack(row[12]), -1 if row[13] == -1.0 else _pack(row[13])]
    return head + [-1 if v == -1.0 else _pack(v) for v in row[14:16]] + [int(row[16])]


_HEADER_LEN = 17
# the width of the statistics rows of each process group (values per statistic): the largest feature count
# seen in it. It changes only after an exchange every rank completed and checked alike, so it is the same on
# every rank: rows of one collective always have one length (gloo given rows of different lengths aborts
# one process and hands the other garbage, measured with torch 2.13)
_widths: dict = {}


def _probe(x: torch.Tensor) -> torch.Tensor:
    """A stand-in with 2 samples and x's other dims (no memory): local checks, whatever the shard size. Cached
    per shape, dtype and device (read only: an expanded 0-dim tensor)."""
    key = (x.shape[1:], x.dtype, x.device)
    probe = _probes.get(key)
    if probe is None:
        if len(_probes) >= 1024:
            _probes.clear()
        probe = _probes[key] = x.new_zeros(()).expand(2, *x.shape[1:])
    return probe


_probes: dict = {}


# Where |μ| > this many σ on some feature of a shard, its float32 mean (rounded to about 6e-8·|μ|) is
# replaced by a float64 sum over the shard (one more pass): Chan's merge adds Σ m_r (μ_r − μ)², whose
# error from rounded μ_r is up to ~4·6e-8·|μ|/σ relative, i.e. within float32's own rounding of σ² only
# for |μ| ≲ σ (x = 1e6 + N(0, 1) in float32 on 2 ranks, tests/distributed/test_distributed_faults.py: running_var
# 3.2e-5 relative off without it, 3.5e-8 with it; one process: 7.2e-8). Where the native family covers the
# shard its float64 statistics (kernels.native.batch_stats_float64) are used instead, with no rounding to undo.
_REFINE_RATIO = 1.0


def _local_moments(x: torch.Tensor, axes: tuple[int, ...], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This shard's (mean, M2) per feature in float64, as accurate as one process's statistics.

    The native family's statistics are computed in float64 and returned so (one pass). Elsewhere the
    kernels' variance is exact to float32 rounding whatever the offset (shifted two-pass, or Welford
    accumulated in float64), so M2 = count·σ² is kept; only the mean's final rounding to float32 matters
    for the merge, and is undone by a float64 sum where it could (see :data:`_REFINE_RATIO`).
    """
    if count == 0:
        fshape = [s for i, s in enumerate(x.shape) if i not in axes]
        zeros = torch.zeros(fshape, dtype=torch.float64, device=x.device)
        return zeros, zeros
    exact = native.batch_stats_float64(x, axes) if x.dtype == torch.float32 else None
    if exact is not None:
        return exact[0], exact[1] * count
    mean, var = kernels.select(x).batch_stats(x, axes)
    mean, m2 = mean.double(), var.double() * count
    if x.dtype != torch.float64 and bool((mean.abs() > _REFINE_RATIO * var.double().sqrt()).any()):
        mean = torch.sum(x, dim=axes, dtype=torch.float64) / count
    return mean, m2


def _exchange_statistics(x, axes, group, timeout, error: Exception | None, name: str = "", index: int = 0,
                         eps: float = 0.0, momentum=0.0, renorm=None):  # fmt: skip
    """Global (count, mean, biased var) over every rank's shard; ``error``: this rank's input was rejected;
    ``name``/``index``: the layer's name in its model or creation index (ranks calling different layers
    are out of step); ``eps``/``momentum`` and ``renorm`` (Batch Renorm's rmax, dmax in effect and
    warmup_steps, or None): compared across ranks."""
    count = math.prod(x.shape[a] for a in axes) if error is None else _ERROR
    if error is not None:
        eps, momentum, renorm = 0.0, 0.0, None
    header = _header(x, axes, count, _layer_id(name, index), eps, momentum, renorm)
    key = group if group is not None else dist.group.WORLD
    width, features = _widths.get(key, 0), header[6]
    fshape = [n for i, n in enumerate(x.shape) if i not in axes]
    row = []
    if error is None and features <= width:  # the statistics travel with the header: one collective
        mean, m2 = _local_moments(x, axes, count)
        row += [mean.reshape(-1), m2.reshape(-1)]
        width -= features
    if width:
        row.append(torch.zeros(2 * width, dtype=torch.float64, device=x.device))
    head = _header_floats(header)
    rows = _exchange(row, group, timeout, "exchange of shapes and statistics (forward)", x, head)
    if error is not None:
        raise error
    counts = _validated_counts(rows[:, :_HEADER_LEN], key, header, group, name)
    m = sum(counts)
    if m <= 1:  # the same error on every rank: they all see the same counts
        raise ValueError(
            f"Expected more than 1 value per channel when training, got {m} value(s) per statistic over all "
            f"{len(counts)} ranks (per rank: {counts}); use a larger batch or eval mode"
        )
    if features > _widths.get(key, 0):  # every rank: the headers agree, and so do the widths
        _widths[key] = features
        mean, m2 = _local_moments(x, axes, count)
        gathered = _exchange([mean.reshape(-1), m2.reshape(-1)], group, timeout, "exchange of statistics (forward)", x)
    else:
        gathered = rows[:, _HEADER_LEN : _HEADER_LEN + 2 * features]
    # Chan's merge in float64, in rank order (the same result on every rank); empty shards are its identity. On
    # the CPU in NumPy: the same float64 operations, 13 µs against 44 in torch ops on 2 ranks (measured)
    cpu = gathered.device.type == "cpu"
    gathered = (gathered.numpy() if cpu else gathered).reshape(len(counts), 2, *fshape)
    total = merge_all(Moments(c, g[0], g[1]) for c, g in zip(counts, gathered, strict=True))
    mean, var = total.mean, total.variance
    if cpu:
        mean, var = torch.from_numpy(np.ascontiguousarray(mean)), torch.from_numpy(np.ascontiguousarray(var))
    return m, mean, var


# The header block (every rank's header, as exchanged) that passed _check_headers last, per process group and
# layer: a later call whose gathered headers are bitwise the same block needs no new check (the steady state:
# same layer, shapes, dtype, eps and momentum on every rank). Any difference on any rank — another layer,
# channel count, dtype, variant, eps, momentum, shard size — is checked in full again.
_validated: dict = {}
_VALIDATED_MAX = 1024


def _validated_counts(block: torch.Tensor, key, header: list[int], group, name: str) -> list[int]:
    """Every rank's count from the gathered header ``block`` (world, header length), checked by
    :func:`_check_headers` unless the same block passed for this layer (``header[1]``) last time."""
    slot = (key, header[1])
    last = _validated.get(slot)
    if last is not None and last.shape == block.shape and torch.equal(last, block):
        return [int(c) for c in block[:, 2].tolist()]
    headers = [_header_of(h) for h in block.tolist()]
    _check_headers(headers, group, name)
    if len(_validated) >= _VALIDATED_MAX:
        _validated.clear()
    _validated[slot] = block.clone()
    return [h[2] for h in headers]


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = γ x̂ + β with the merged statistics; backward all-gathers Σdy and Σdy·x̂ and hands their global sums
    and count to the kernels' closed-form backward (``sums=``, :class:`bnlab.kernels.contract.KernelFamily`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, m, axes, eps, group, timeout):
        if x.dtype in (torch.float16, torch.bfloat16):  # the kernels take float32 parameters with half input
            weight_n = weight.float() if weight is not None else None
            bias_n = bias.float() if bias is not None else None
        else:
            weight_n, bias_n = weight, bias
        y = (
            kernels.select(x).normalize(x, mean, var, weight_n, bias_n, eps, axes)
            if x.shape[0]
            else torch.empty_like(x)
        )
        ctx.save_for_backward(x, weight, mean, var)
        ctx.axes, ctx.eps, ctx.m, ctx.group, ctx.timeout = axes, eps, m, group, timeout
        ctx.bias_dtype = bias.dtype if bias is not None else x.dtype
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, mean, var = ctx.saved_tensors
        axes = ctx.axes
        if x.shape[0] > 0:
            # local Σdy·x̂ and Σdy with the global x̂: the kernels' closed form, parameter gradients only
            w = torch.ones_like(mean) if weight is None else weight.to(mean.dtype)
            _, sum_dy_xhat, sum_dy = kernels.select(x).backward(dy, x, mean, var, w, ctx.eps, axes, (False, True, True))
        else:
            sum_dy_xhat = sum_dy = torch.zeros_like(mean)
        dw = sum_dy_xhat.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        db = sum_dy.to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None
        # gathered rather than all-reduced: the rows carry the timing check of _exchange, and the sum in
        # rank order, in float64, is the same on every rank
        packed = [sum_dy.reshape(-1), sum_dy_xhat.reshape(-1)]  # (float64 in the row: exact)
        rows = _exchange(packed, ctx.group, ctx.timeout, "exchange of the gradient sums (backward)", x)
        total = rows.sum(0).reshape(2, *mean.shape)
        dx = None
        if ctx.needs_input_grad[0]:
            w = None if weight is None else weight.to(mean.dtype)
            sums = (total[0], total[1], ctx.m)
            dx = kernels.select(x).backward(dy, x, mean, var, w, ctx.eps, axes, (True, False, False), sums=sums)[0]
        return dx, dw, db, None, None, None, None, None, None, None


def _check_call(x, timeout) -> None:
    """The checks both functional forms make before anything else (what ``_sync`` cannot check per rank)."""
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")


def sync_batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axes: tuple[int, ...] | None = None,
    process_group=None,
    timeout: float | None = None,
) -> torch.Tensor:
    """:func:`bnlab.nn.functional.batch_norm` with the statistics of the batch spread over all ranks.

    Same arguments as ``batch_norm``, plus ``process_group`` (default: the world) and ``timeout``
    (seconds each collective may take; None: the process group's timeout). In training every rank of the
    group must call it (a rank whose shard is empty passes a tensor with 0 samples and gets an empty
    output); the running statistics are updated with the global count m, identically on every rank::

        running_mean = (1 − momentum)·running_mean + momentum·μ_B
        running_var  = (1 − momentum)·running_var  + momentum·m/(m−1)·σ²_B

    With ``training=False``, or without an initialized process group of 2 or more ranks, it is exactly
    ``batch_norm`` and communicates nothing.
    """
    _check_call(x, timeout)
    if not (training and _active(process_group)):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, axes)
    return _sync(x, running_mean, running_var, weight, bias, momentum, eps, axes, process_group, timeout, None)


def sync_batch_renorm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axes: tuple[int, ...] | None = None,
    process_group=None,
    timeout: float | None = None,
    *,
    rmax: float = 3.0,
    dmax: float = 5.0,
) -> torch.Tensor:
    """:func:`bnlab.nn.functional.batch_renorm` with the batch statistics μ_B, σ²_B of every rank's shard:
    :func:`sync_batch_norm`'s arguments plus ``rmax``/``dmax`` (numbers; the module resolves schedules and
    warm-up). r and d come from the merged statistics (the same exchange as synchronized BN's, no other
    collective) and the running statistics as they are on entry, so they are the same on every rank.
    ``training=False``, or no process group of 2 or more ranks: exactly ``batch_renorm``."""
    _check_call(x, timeout)
    rmax, dmax = check_rmax(rmax), check_dmax(dmax)
    if not (training and _active(process_group)):
        return batch_renorm(x, running_mean, running_var, weight, bias, training, momentum, eps, axes, rmax=rmax,
                            dmax=dmax)  # fmt: skip
    if running_mean is None or running_var is None:
        raise ValueError(
            "batch renormalization corrects the batch statistics toward the running statistics: pass "
            "running_mean and running_var (or use sync_batch_norm for plain batch statistics)"
        )
    renorm = (rmax, dmax, 0)
    return _sync(x, running_mean, running_var, weight, bias, momentum, eps, axes, process_group, timeout, None,
                 renorm=renorm)  # fmt: skip


def _sync(x, running_mean, running_var, weight, bias, momentum, eps, axes, group, timeout, error, name="", index=0,
          renorm=None):  # fmt: skip
    """Training-mode synchronized BN; ``error``: this rank's input was already rejected (by the module);
    ``name``/``index``: the calling layer's identity (see :class:`SyncBatchNorm`); ``renorm``: Batch Renorm's
    (rmax, dmax, warmup_steps) in effect at this step (see :class:`SyncBatchRenorm`), None for BN."""
    try:
        if error is not None:
            raise error
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions (N, C, ...), got shape {tuple(x.shape)}")
        # local checks on a 2-sample stand-in: "more than one value" is checked on the global count
        axes = F.checked_axes(_probe(x), axes, True, running_mean, running_var, weight, bias, eps, momentum)
        if running_mean is not None and momentum is None:
            raise ValueError(
                "momentum=None (cumulative average) needs the number of batches seen: use bnlab.nn.SyncBatchNorm, "
                "or pass momentum=1/num_batches"
            )
    except (TypeError, ValueError) as err:
        error = err  # raised after telling the other ranks, so that they stop too instead of waiting
        axes = tuple(range(x.dim()))
    with torch.no_grad():
        stats_momentum = momentum if running_mean is not None else 0.0  # (only compared where it is used)
        m, mean, var = _exchange_statistics(
            x.detach(), axes, group, timeout, error, name, index, eps, stats_momentum, renorm
        )  # fmt: skip
    sdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    mean, var = mean.to(sdt), var.to(sdt)
    if renorm is not None and running_mean is not None and (renorm[0], renorm[1]) != (1.0, 0.0):
        # Batch Renorm: r and d from the merged statistics (the exchange above, no other collective) and the
        # running statistics before this step's update; constants for autograd, folded into the affine map
        with torch.no_grad():
            r, d = renorm_factors(mean, var, running_mean, running_var, float(eps), renorm[0], renorm[1])
        weight, bias = renorm_affine(weight, bias, r, d)
    y = _SyncBatchNormFunction.apply(x, weight, bias, mean, var, m, axes, float(eps), group, timeout)
    if running_mean is not None:
        F.update_running_stats(running_mean, running_var, mean, var, m, momentum)
    return y


class SyncBatchNorm(BatchNormBase):
    """Batch norm whose set B spans the shards of every process: drop-in for ``torch.nn.SyncBatchNorm``.

    It is an instance of torch's ``_BatchNorm`` (as every bnlab layer) but deliberately not of
    ``torch.nn.SyncBatchNorm``: ``DistributedDataParallel`` refuses any module holding one of those on the
    CPU ("SyncBatchNorm layers only work with GPU modules"), and running on the CPU is the point here.

    Same constructor arguments as ``torch.nn.SyncBatchNorm`` (``process_group``: default the world), plus
    bnlab's ``bias=``, ``per=``, ``spatial_size=``, ``activation=`` and ``timeout`` (seconds every
    collective may take; None: the process group's). Any input rank (N, C, ...), contiguous or
    channels_last; on CPU (gloo) and GPU (NCCL). In training every rank must call the layer, also with an
    empty shard (0 samples); eval mode and frozen layers use the running statistics and never
    communicate. See :mod:`bnlab.distributed`.

    Identity: on every call the ranks check that they are calling the same layer, so that a rank that
    skipped one fails instead of merging its statistics with another layer's. A layer converted by
    :func:`convert_sync` is identified by its name in the model (``layer_name``); a layer built by hand
    by its creation index among the ``SyncBatchNorm`` layers built in its process (``layer_index``: 1, 2,
    ... in construction order). So hand-built layers must be built in the same order on every rank (as
    the same model-building code does); where a rank builds extra ones (say, only for itself), set
    ``layer_name`` on the shared ones, or build them with ``convert_sync``.
    """

    _input_dims = tuple(range(2, 9))

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        per: str = "channel",
        spatial_size: tuple[int, ...] | None = None,
        activation: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats,
            device=device, dtype=dtype, bias=bias, per=per, spatial_size=spatial_size, activation=activation,
        )  # fmt: skip
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.process_group = process_group
        self.timeout = timeout
        self.layer_name = ""  # its name in the model, set by convert_sync: checked against the other ranks
        self.layer_index = next(_created)  # its creation index: the identity of a layer without a name

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.Tensor) and x.dim() < 2:
            raise ValueError(f"expected 2D or more input (N, C, ...), got {x.dim()}D input")
        spatial = self.spatial_size if self.per == "activation" else None
        check_input_dim(x, (x.dim(),) if isinstance(x, torch.Tensor) else (), self.num_features, spatial)

    def _materialize_from(self, x: torch.Tensor) -> None:
        # the base class's checks on a 2-sample stand-in: this rank's shard may hold 0 or 1 samples
        super()._materialize_from(_probe(x) if isinstance(x, torch.Tensor) and x.dim() >= 2 else x)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        synced = self.training and not self.frozen and _active(self.process_group)
        try:
            if self._is_lazy():  # per-activation without spatial_size: shapes from the first input (any shard)
                self._materialize_from(x)
            self._check_input_dim(x)
            renorm = self._renorm_settings() if synced else None  # a bad schedule: every rank stops
        except (TypeError, ValueError) as err:
            if not (synced and isinstance(x, torch.Tensor) and x.dim() >= 1):
                raise
            # tell the other ranks before raising, so that they stop too instead of waiting for this one
            axes = tuple(range(x.dim()))
            group, timeout, name = self.process_group, self.timeout, self.layer_name
            return _sync(x, None, None, None, None, 0.0, self.eps, axes, group, timeout, err, name, self.layer_index)
        use_batch, update, momentum = self._mode()
        rm, rv = (self.running_mean, self.running_var) if (update or not use_batch) else (None, None)
        w, b, eps, axes = self.weight, self.bias, self.eps, self.reduce_axes(x.dim())
        if synced:
            group, timeout, name, index = self.process_group, self.timeout, self.layer_name, self.layer_index
            y = _sync(x, rm, rv, w, b, momentum, eps, axes, group, timeout, None, name, index, renorm)
            y = torch.relu(y) if self.activation == "relu" else y
        else:  # eval (and frozen layers) never communicate; without running statistics a shard is on its own
            y = F.batch_norm(x, rm, rv, w, b, use_batch, momentum, eps, axes, activation=self.activation)
        if update:
            self.num_batches_tracked.add_(1)
        return y

    def _renorm_settings(self) -> tuple[float, float, int] | None:
        """Batch Renorm's (rmax, dmax, warmup_steps) in effect at this step (:class:`SyncBatchRenorm`); None: BN."""
        return None

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", timeout={self.timeout}" if self.timeout is not None else "")


class SyncBatchRenorm(BatchRenormBase, SyncBatchNorm):
    """Batch Renorm whose set B spans the shards of every process: :class:`SyncBatchNorm` plus Batch Renorm's
    ``rmax``, ``dmax`` and ``warmup_steps`` (numbers or schedules, as :class:`bnlab.nn.BatchRenorm2d`).

    In training, μ_B and σ²_B are merged over every rank's shard by synchronized BN's exchange; r and d
    come from them and the running statistics before this step's update (:func:`bnlab.nn.renorm.renorm_factors`,
    the formula's one home), constants for autograd, and the synchronized BN transform runs with the affine
    map (γ·r, β + γ·d). So the output, the gradients and the running statistics are those of one
    ``BatchRenorm`` layer on the union of the shards, at no extra collective (one all-gather forward, one
    backward, as synchronized BN). The ranks compare rmax, dmax (in effect at this step) and warmup_steps
    on every call, as eps and momentum: a rank that disagrees fails on every rank. Warm-up and schedules
    count ``num_batches_tracked``; eval mode, frozen layers and ``track_running_stats=False`` are as in
    :class:`bnlab.nn.BatchRenorm2d` (BN's eval; BN's training); without a process group it is that layer.
    Built by :func:`convert_sync` from ``BatchRenorm1d/2d/3d`` (the same buffers, so the same state_dict).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        rmax=3.0,
        dmax=5.0,
        warmup_steps: int = 0,
        bias: bool = True,
        per: str = "channel",
        spatial_size: tuple[int, ...] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, rmax=rmax, dmax=dmax, warmup_steps=warmup_steps, per=per,
            spatial_size=spatial_size, track_running_stats=track_running_stats, bias=bias, device=device,
            dtype=dtype, process_group=process_group, timeout=timeout,
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and not self.frozen and _active(self.process_group):
            return SyncBatchNorm.forward(self, input)
        return BatchRenormBase.forward(self, input)  # one process, eval or frozen: the local layer

    def _renorm_settings(self) -> tuple[float, float, int] | None:
        if not self._mode()[1]:  # no running statistics to correct toward: BN's training, as the local layer
            return None
        rmax, dmax = self.limits()
        return rmax, dmax, self.warmup_steps


def _to_sync(old: nn.Module, process_group, timeout) -> SyncBatchNorm:
    """The synchronized twin of ``old``: SyncBatchRenorm for Batch Renorm (its limits and warm-up carried
    over, schedules included), else SyncBatchNorm."""
    per = getattr(old, "per", "channel")
    spatial = getattr(old, "spatial_size", None) if per == "activation" else None
    if getattr(old, "virtual_batch", None):
        raise ValueError(
            f"cannot synchronize {old}: it is ghost BN (virtual_batch={old.virtual_batch}), whose set B is k samples "
            f"within one process; build it without virtual_batch, or keep it out of convert_sync"
        )
    common = dict(
        eps=old.eps, momentum=old.momentum, affine=old.affine, track_running_stats=old.track_running_stats,
        process_group=process_group, device="meta", per=per, spatial_size=spatial, timeout=timeout,
        bias=not old.affine or old._parameters.get("bias") is not None,
    )  # fmt: skip
    if isinstance(old, BatchRenormBase):  # Batch Renorm stays Batch Renorm: r and d from the merged statistics
        new = SyncBatchRenorm(old.num_features, rmax=old.rmax, dmax=old.dmax, warmup_steps=old.warmup_steps, **common)
    else:
        new = SyncBatchNorm(old.num_features, activation=getattr(old, "activation", None), **common)
    adopt_state(old, new)  # the old layer's very tensors (an optimizer built before keeps working), mode, frozen
    if per == "activation" and spatial is None and not new._is_lazy():
        new.spatial_size = tuple(new.weight.shape[1:] if new.weight is not None else new.running_mean.shape[1:])
    return new


def convert_sync(model: nn.Module, process_group=None, timeout: float | None = None) -> nn.Module:
    """Swap every BN layer — torch's ``BatchNorm1d/2d/3d``/``SyncBatchNorm`` or bnlab's — for
    :class:`SyncBatchNorm` (bnlab's ``BatchRenorm1d/2d/3d`` for :class:`SyncBatchRenorm`, with their rmax,
    dmax and warm-up), in place, keeping the very weights and running statistics (and the train/eval mode
    and frozen state); returns ``model`` (or the new layer if ``model`` is one).

    ``process_group``/``timeout`` are given to every new layer. Layers that are already bnlab
    ``SyncBatchNorm`` get the new ``process_group``/``timeout`` and stay as they are. Every layer also
    learns its name in ``model`` (``layer_name``): the ranks compare it on each call, so a rank that
    skipped a layer fails with a clear error instead of pairing its statistics with another layer's.
    """
    from torch.nn.modules.lazy import LazyModuleMixin

    todo = []
    for name, m in model.named_modules():
        if isinstance(m, SyncBatchNorm):
            m.process_group, m.timeout, m.layer_name = process_group, timeout, name
        elif isinstance(m, (_compat.TorchBatchNormBase, BatchNormBase)):
            if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
                raise ValueError(
                    f"cannot convert layer {name or type(m).__name__} ({type(m).__name__}): it has not seen an "
                    f"input yet; run one forward pass first"
                )
            todo.append((name, m))
    for name, old in todo:
        new = _to_sync(old, process_group, timeout)
        new.layer_name = name
        model = replace_module(model, old, new)
    return model
