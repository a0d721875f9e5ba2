"""CPU fast paths for the batch-norm transform (the contract of :mod:`.contract`; chain: native → cpu → composed).

:func:`bnlab.kernels.select` gives this family for CPU calls that :mod:`.native` does not cover. :func:`covers`
says what it computes exactly (statistics in at least float32 by a stable method); the chain walk of
:mod:`.contract` sends whatever it does not cover to :mod:`.composed` unchanged. The fast paths apply to
convolutional BN in torch's convention — a dense (contiguous or channels_last) input of 3 or more
dimensions, reduce axes = every axis but 1 — without autograd recording the call:

- **statistics** (training forward): the set B of channel c is split into its N rows x[n, c, ...]
  (m_r = p·q values each). Each row gets a two-pass mean and M2 = Σ (x − μ_r)² from stock reductions
  over the row axis (contiguous in NCHW, so the row stays in cache between passes), then the rows are
  merged across the batch with Chan's formula (:func:`bnlab.moments.merge_groups`). torch's own CPU statistics loop is
  scalar in NCHW, and in channels_last it sums each channel sequentially in float32, which is fast but
  off by 1e-5 to 4e-4 relative on ordinary data (ReLU outputs the worst) and by orders of magnitude with
  a 1e6 offset — so statistics are never routed to it;
- **normalize** (eval, and the training output): torch's native batch-norm kernel, a vectorized
  per-channel y = a·x + b (faster than ``addcmul`` with two broadcast operands), written into the
  scratch buffer of the statistics pass in training; where some channel has |μ|/σ above
  :data:`.composed.SHIFT_RATIO` (a check over C numbers), :func:`.composed.normalize`'s
  (x − μ)·a + β instead, so that the output is as accurate as the statistics;
- **backward**: ``aten.native_batch_norm_backward`` given our μ_B and 1/√(σ²_B + ε); its reductions are
  centred on μ_B, so they stay accurate with large offsets. With the global sums of synchronized BN, dx =
  c·dy + d·(x − μ) + e (:func:`.composed.grad_coefficients`) as one native affine pass and one ``addcmul_``.

Range: a row's float32 Σ (x − μ_r)² overflows for a std above ~1.8e19/√m_r although σ²_B may still fit
float32; a check over the C merged variances sends that rare case (and inputs holding inf/NaN) to a float64
``var_mean`` of the whole input.

Nothing here is differentiable (the double backward uses :mod:`.composed`).
"""

from __future__ import annotations

import math
import threading

import torch

from .. import moments
from ..axes import torch_reduce_axes
from ..moments import Moments
from . import composed, contract

__all__ = ["NAME", "covers", "batch_stats", "normalize", "forward", "backward", "fast_path", "merge_rows"]

NAME = "cpu"

_HALF = (torch.float16, torch.bfloat16)
_FLOAT = (torch.float32, torch.float64)
# A row mean is rounded to about ε_dtype·|μ_r|, and the two-pass M2 of the row then grows by
# m_r·(rounding)². Where ε_dtype·|μ_r| exceeds this fraction of σ_r (float32: |μ_r| > ~800 σ_r, e.g.
# x = 1e6 + N(0, 1)) the rows are corrected by the mean of x − μ_r (corrected two-pass, one more pass).
_ROUNDING_TOLERANCE = 1e-4
# channels_last statistics run over chunks of whole samples of about this many bytes (input), so that
# the chunk and its scratch buffer stay in the L2/L3 cache between the passes of the two-pass method
_CHUNK_BYTES = 2 << 20
# Up to this many values the statistics are one ``torch.var_mean`` over the reduce axes: ATen's CPU Welford
# reduction accumulates float32 in float64, as accurate as the row moments (variance within 7e-8 relative
# of float64 with offsets up to 1e6, measured) but not vectorized, so it only wins where the ~20 small ops
# of the chunked path dominate: 22 µs against 356 µs on 16x8x4x4, break-even near 50,000 values
_SMALL_NUMEL = 1 << 14
# Rows up to this length take M2 = ‖x − μ_r‖² from ``vector_norm`` (float32 accumulators without the cascade
# of ``sum``: 4e-7 relative at 3136 values, 2e-5 at 1e6, measured); longer rows square and ``sum`` (exact to
# ~1e-7 at any length, one more pass in cache)
_NORM_ROW = 4096


def fast_path(x: torch.Tensor, axes: tuple[int, ...]) -> bool:
    """True where the routed paths apply: CPU, per-channel axes of a dense input with ≥ 3 dims."""
    if x.device.type != "cpu" or x.dim() < 3 or x.numel() == 0 or not contract.is_channel_axes(x, axes):
        return False
    if x.dtype not in _FLOAT and x.dtype not in _HALF:
        return False
    return contract.dense_format(x) is not None


def _any_requires_grad(*tensors) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


def _same_dtype(dtype: torch.dtype, *tensors) -> bool:
    return all(t is None or t.dtype == dtype for t in tensors)


def covers(x: torch.Tensor, axes: tuple[int, ...], *tensors, op: str) -> bool:
    """Whether this family computes ``op`` for this call (:class:`.contract.KernelFamily`): :func:`fast_path`,
    and where it calls torch's kernels (not ``batch_stats``), no autograd recording and parameters/statistics
    in the dtype those kernels take (:func:`_native_params`)."""
    if not fast_path(x, axes):
        return False
    if op == "batch_stats":
        return True
    if torch.is_grad_enabled() and _any_requires_grad(x, *tensors):
        return False
    if op == "forward":
        return True
    if op == "normalize":
        mean, var, weight, bias = tensors
        return _native_params(x, mean, var, weight, bias)
    dy, mean, var, weight, *_ = tensors  # backward
    return _native_params(x, mean, var, weight)


def merge_rows(row_mean: torch.Tensor, row_m2: torch.Tensor, row_count: int) -> Moments:
    """Chan's merge of N row summaries of equal size into one per channel (``row_mean``, ``row_m2``: (N, C),
    each row holding ``row_count`` values): :func:`bnlab.moments.merge_groups`, in float64 (these are
    (N, C) tensors)."""
    return moments.merge_groups(row_mean.double(), row_m2.double(), row_count)


def _row_moments(x3: torch.Tensor, scratch3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (float64) and M2 of each contiguous row x3[n, c, :] (NCHW); ``scratch3`` (like x3) is overwritten.

    d = x − μ_r into the scratch, then M2 = ‖d‖² (a contiguous-row norm; rows above :data:`_NORM_ROW`: Σd²).
    """
    n_row = x3.shape[2]
    row_mean = x3.sum(2).div_(n_row)
    shift = row_mean.unsqueeze(2)
    torch.sub(x3, shift, out=scratch3)
    if n_row <= _NORM_ROW:
        row_m2 = torch.linalg.vector_norm(scratch3, dim=2).square_()
    else:  # ‖d‖² in float32 drifts with the row length (2e-5 relative at 1e6 values): the cascade sum instead
        row_m2 = scratch3.square_().sum(2)
    if _needs_correction(row_mean, row_m2, n_row):
        if n_row > _NORM_ROW:
            torch.sub(x3, shift, out=scratch3)  # d again (the scratch holds d²)
        # corrected two-pass (bnlab.moments.correct): with d = x − μ_r exact, Σd is what rounding moved μ_r by
        fixed = moments.correct(Moments(n_row, row_mean.double(), row_m2.double()), scratch3.sum(2).double())
        return fixed.mean, fixed.m2
    return row_mean.double(), row_m2.double()


def _row_moments_nchw(x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row moments of a contiguous (N, C, m_r) input, in chunks of samples of about ``_CHUNK_BYTES``.

    The scratch is one chunk (it stays in cache between the sub and the norm, and it is small enough
    for the allocator to reuse: a scratch the size of x was page-faulted in on every call, see
    docs/performance.md). fp16/bf16 chunks are converted to float32 one at a time.
    """
    n, c, n_row = x3.shape
    k = _chunk_rows(n, c * n_row * 4)
    sdt = moments.statistics_dtype(x3.dtype)
    scratch = _scratch((k, c, n_row), sdt)
    means, m2s = [], []
    for n0 in range(0, n, k):
        n1 = min(n, n0 + k)
        chunk = x3[n0:n1] if x3.dtype == sdt else x3[n0:n1].to(sdt)
        mean, m2 = _row_moments(chunk, scratch[: n1 - n0])
        means.append(mean)
        m2s.append(m2)
    return torch.cat(means), torch.cat(m2s)


def _needs_correction(row_mean: torch.Tensor, row_m2: torch.Tensor, n_row: int) -> bool:
    """True where some row mean is rounded by more than ``_ROUNDING_TOLERANCE``·σ_r (see the constant).

    ε·|μ_r| > tolerance·σ_r, i.e. μ_r²·ε²·m_r > tolerance²·M2_r (zero rows: 0 > tiny, no correction).
    """
    info = torch.finfo(row_mean.dtype)
    ratio = info.eps**2 * n_row / max(_ROUNDING_TOLERANCE**2, info.tiny)
    return bool(((row_mean * row_mean).mul_(ratio) > row_m2 + info.tiny).any())


_local = threading.local()


def _scratch(shape: tuple[int, ...], dtype: torch.dtype, slot: int = 0) -> torch.Tensor:
    """A reusable buffer of ``shape`` (at most about ``_CHUNK_BYTES``), one per thread, dtype and slot.

    Kept between calls so that the only large allocation of a training forward is its output: a scratch
    allocated per call splits the block the previous output freed, so the next output no longer fits
    there, the heap grows and glibc trims it again, and the output is page-faulted in (measured with
    ``resource.getrusage``, docs/performance.md).
    """
    cache = _local.__dict__.setdefault("buffers", {})
    numel = 1
    for s in shape:
        numel *= s
    if numel * torch.empty((), dtype=dtype).element_size() > 4 * _CHUNK_BYTES:
        return torch.empty(shape, dtype=dtype)  # one sample larger than a chunk: not kept
    key = (dtype, slot)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable in and out of inference mode
            buf = cache[key] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def _chunk_rows(n: int, row_bytes: int) -> int:
    """Samples per chunk: about ``_CHUNK_BYTES`` of input (at least one sample)."""
    return max(1, min(n, _CHUNK_BYTES // max(row_bytes, 1)))


def _row_moments_cl(xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (float64) and M2 of each row of a channels_last input viewed as ``xt`` = (N, m_r, C).

    The batch is processed in chunks of samples of about ``_CHUNK_BYTES``: the chunk's row means by a
    sum over m_r (vectorized over the contiguous C), then (x − μ_r)² into a small scratch buffer in one
    fused op (``mse_loss`` without reduction) and its sum. The chunk is read from memory once; the
    second and third pass run in cache. fp16/bf16 chunks are converted to float32 one at a time.
    """
    n, n_row, c = xt.shape
    sdt = moments.statistics_dtype(xt.dtype)
    k = _chunk_rows(n, n_row * c * 4)
    row_mean = xt.new_empty((n, c), dtype=sdt)
    row_m2 = xt.new_empty((n, c), dtype=sdt)
    scratch = _scratch((k, n_row, c), sdt)
    converted = _scratch((k, n_row, c), sdt, slot=1) if xt.dtype != sdt else None

    def chunk_of(n0, n1):
        return xt[n0:n1] if converted is None else converted[: n1 - n0].copy_(xt[n0:n1])

    for n0 in range(0, n, k):
        n1 = min(n, n0 + k)
        chunk, mean, sq = chunk_of(n0, n1), row_mean[n0:n1], scratch[: n1 - n0]
        torch.sum(chunk, 1, out=mean)
        mean.div_(n_row)
        torch.ops.aten.mse_loss.out(chunk, mean.unsqueeze(1), 0, out=sq)
        torch.sum(sq, 1, out=row_m2[n0:n1])
    if not _needs_correction(row_mean, row_m2, n_row):
        return row_mean.double(), row_m2
    # corrected two-pass (bnlab.moments.correct), chunk by chunk: with d = x − μ_r exact, Σd is what rounding
    # moved μ_r by
    d_sum = row_mean.new_empty(n, c)
    for n0 in range(0, n, k):
        n1 = min(n, n0 + k)
        chunk, sq = chunk_of(n0, n1), scratch[: n1 - n0]
        torch.sub(chunk, row_mean[n0:n1].unsqueeze(1), out=sq)
        torch.sum(sq, 1, out=d_sum[n0:n1])
        torch.sum(sq.square_(), 1, out=row_m2[n0:n1])
    fixed = moments.correct(Moments(n_row, row_mean.double(), row_m2.double()), d_sum.double())
    return fixed.mean, fixed.m2


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased var) per channel of ``x`` on the fast path (float32; float64 for float64 input).

    Both layouts run in cache-sized chunks of samples with a scratch of one chunk: nothing of x's
    size is allocated (the output is the only large allocation of the training forward, as in torch).
    Inputs of at most :data:`_SMALL_NUMEL` values take one ``torch.var_mean`` instead (see there).
    """
    if x.numel() <= _SMALL_NUMEL:
        return moments.batch_stats(x, torch_reduce_axes(x.dim()))
    n, c = x.shape[:2]
    if x.is_contiguous():
        row_mean, row_m2 = _row_moments_nchw(x.view(n, c, -1))
    else:
        row_mean, row_m2 = _row_moments_cl(x.movedim(1, -1).reshape(n, -1, c))  # a view of channels_last
    total = merge_rows(row_mean, row_m2, x.numel() // (n * c))
    sdt = contract.stat_dtype(x)
    if not math.isfinite(float(total.variance.sum())):  # one reduction over C numbers: ~3 µs
        # a row's Σ (x − μ_r)² overflowed float32 (a std above ~1.8e19/√m_r), or x holds inf/NaN: the rare
        # case is recomputed in float64, so σ²_B is right wherever it fits the statistics' dtype
        mean, var = moments.batch_stats(x.to(torch.float64), torch_reduce_axes(x.dim()))
        return mean.to(sdt), var.to(sdt)
    return total.mean.to(sdt), total.variance.to(sdt)


def _batch_stats(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mini-batch mean and biased variance per channel (float32, or float64 for float64 input)."""
    return _stats(x)


def _native_normalize(x, mean, var, weight, bias, eps: float) -> torch.Tensor:
    return torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, False)


def _native_params(x: torch.Tensor, mean, var, *params) -> bool:
    """torch's kernel takes fp16/bf16 input with float32 parameters, else parameters of x's dtype (and
    statistics that need no gradient)."""
    dtype = torch.float32 if x.dtype in _HALF else x.dtype
    return _same_dtype(dtype, mean, var, *params) and not (mean.requires_grad or var.requires_grad)


def _shift_needed(mean, var, eps: float) -> bool:
    """Some channel has |μ|/σ large enough that a·x + b would lose accuracy (:func:`.composed.needs_shift`).

    The same test, |μ|·(σ²+ε)^(-1/2) > R, squared: μ² − R²·σ² > R²·ε on some channel, in 4 ops instead of 8
    (about 15 µs against 37 µs a call, which the eval and small-tensor cases pay on every call). A NaN channel
    compares False as there (and does not hide another channel: no max()); a μ² that overflows float32
    (|μ| > 1.8e19) takes the shifted form, which is exact anyway.
    """
    r2 = composed.SHIFT_RATIO * composed.SHIFT_RATIO
    return bool((torch.add(mean.square(), var, alpha=-r2) > r2 * eps).any())


def _normalize(x, mean, var, weight, bias, eps: float, axes: tuple[int, ...]) -> torch.Tensor:
    """y = γ (x − μ)/√(σ² + ε) + β in x's dtype (and memory format): torch's vectorized kernel, or the
    definition's shifted form (:func:`.composed.normalize`) where some channel has a large |μ|/σ."""
    if _shift_needed(mean, var, eps):
        return composed.normalize(x, mean, var, weight, bias, eps, axes)
    return _native_normalize(x, mean, var, weight, bias, float(eps))


def _forward(x, weight, bias, eps: float, axes: tuple[int, ...], relu: bool = False):
    """Training forward of Alg. 1: returns ``(y, mean, var)`` (batch mean and biased variance).

    ``relu=True``: y = max(BN(x), 0), applied in place. Not differentiable (covers() refuses recorded calls).
    """
    # statistics in float32 (fp16/bf16 converted chunk by chunk); the output is the one large allocation
    mean, var = _stats(x)
    if weight is not None:
        weight = weight.to(mean.dtype)
    if bias is not None:
        bias = bias.to(mean.dtype)
    if _shift_needed(mean, var, eps):
        y = composed.normalize(x, mean, var, weight, bias, eps, axes)
    else:
        y = _native_normalize(x, mean, var, weight, bias, float(eps))
    return (y.relu_() if relu else y), mean, var


def _backward(dy, x, mean, var, weight, eps: float, axes: tuple[int, ...], needs=(True, True, True), y=None,
              sums=None):  # fmt: skip
    """Closed-form gradients of Alg. 1: ``(dx, dweight, dbias)`` by torch's kernels.

    ``aten.native_batch_norm_backward`` with save_mean = μ_B and save_invstd = 1/√(σ²_B + ε) computes
    the same closed form as :func:`.composed.backward`, with its reductions centred on μ_B. ``y``: the
    output of ``forward(..., relu=True)``; dy is masked to where y > 0 first. ``sums``: see :func:`_global_dx`.
    """
    if sums is None:
        return composed.native_backward(dy, x, mean, var, weight, eps, needs, y)
    need_x, need_w, need_b = needs
    _, dw, db = (None, None, None)
    if need_w or need_b:
        _, dw, db = composed.native_backward(dy, x, mean, var, weight, eps, (False, need_w, need_b), y)
    dx = _global_dx(composed.relu_mask(dy, y), x, mean, var, weight, eps, sums) if need_x else None
    return dx, dw, db


def _global_dx(dy, x, mean, var, weight, eps, sums):
    """dx = c·dy + d·(x − μ) + e with the given (Σdy, Σdy·x̂, m) (:func:`.composed.grad_coefficients`):
    d·x + (e − d·μ) is one pass of torch's affine kernel (mean 0, variance 1, ε = 0), then ``addcmul_``."""
    sdt = contract.stat_dtype(x)
    invstd = torch.rsqrt(var.double() + eps)
    w = None if weight is None else weight.double()
    c, d, e = composed.grad_coefficients(invstd, w, sums[0].double(), sums[1].double(), sums[2])
    e = e - d * mean.double()
    c, d, e = (v.to(sdt) for v in (c, d, e))
    xs = x if x.dtype == sdt else x.to(sdt)
    dx = _native_normalize(xs, torch.zeros_like(d), torch.ones_like(d), d, e, 0.0)
    dx.addcmul_(dy if dy.dtype == sdt else dy.to(sdt), contract.view(c, x.dim(), torch_reduce_axes(x.dim())))
    return dx.to(x.dtype)


#: The contract's implementations, run by :func:`.contract.run` once :func:`covers` said yes.
IMPLEMENTATION = {"batch_stats": _batch_stats, "normalize": _normalize, "forward": _forward, "backward": _backward}
batch_stats, normalize, forward, backward = contract.entry_points(NAME, covers, IMPLEMENTATION)
