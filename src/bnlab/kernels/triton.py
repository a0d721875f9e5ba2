"""Triton kernels for batch norm: split reductions, ≤ 2 launches per direction, no host synchronization.

The contract of :mod:`.contract`, with the fused-ReLU arguments; this family heads the CUDA chain
(triton → cuda → composed) when triton is importable; on CPU tensors the kernels run under triton's
interpreter when ``TRITON_INTERPRET=1`` was set before this module was imported (how
``tests/kernels/test_triton.py`` checks them without a GPU). Whatever :func:`covers` refuses, the chain walk sends
on to :mod:`.cuda` (torch's fused kernels, then :mod:`.composed`): never a wrong answer.

Triton code cannot call Python, so each kernel writes its formula once and names, in a comment, the
definition it implements (:mod:`bnlab.moments`, :mod:`.composed`).

The input is seen as a 3-D array (A, F, B) with strides (sA, sF, sB): F features, each reduced over the
A·B values of its set B (Ioffe & Szegedy's m). Per-channel NCHW: (N, C, H·W); per-channel channels_last
and NHWC axes (0, 1, 2): (N·H·W, C, 1); per-activation on a contiguous input: (N, C·H·W, 1).

Training forward, two launches:

1. ``_partial_moments``: grid (P splits of the A·B values, feature blocks). Each program walks its
   share tile by tile; each tile gives (count, mean, M2) by a corrected two-pass in registers (the
   mean of x − μ_tile corrects the rounded μ_tile, as :mod:`.cpu` does for rows), merged into the
   program's running summary with Chan's formula (:func:`bnlab.moments.merge`). Output: P partial
   (count, mean, M2) per feature, float32.
2. ``_normalize``: same grid. Each program merges the P partials of its features (μ = Σ n_p μ_p / n,
   M2 = Σ M2_p + Σ n_p (μ_p − μ)², the k-group form of Chan's merge used by :func:`.cpu.merge_rows`,
   corrected the same way),
   program 0 of each feature block stores μ_B and σ²_B, and every program writes
   y = ((x − K) − μ_K)·γ/√(σ²+ε) + β over its share — the shifted form, so the output is as accurate
   as the statistics for any |μ|/σ — then max(y, 0) with ``relu``.

Both kernels work on x − K, K = the first value of each feature's set (one load per program): the
moments of data centred near their mean lose nothing to |μ| ≫ σ (x = 1e6 + N(0, 1) in float32 gives
σ² to ~1e-6 relative, like the float64-merged CPU rows), and μ_K = mean(x − K) keeps the digits that
μ_B rounded to float32 would lose.

Backward, two launches: ``_partial_grads`` (Σ dy and Σ dy·(x − μ) per split, centred so large offsets
cancel exactly; dy masked to y > 0 when the ReLU output is given), then ``_grad_input`` (sums merged,
dγ = invstd·Σ dy·(x − μ), dβ = Σ dy stored by program 0, and dx = γ·invstd·(dy − Σdy/m − x̂·dγ/m)).
Eval: one launch of ``_normalize`` with the given statistics. fp16/bf16 inputs are read and written in
their dtype and accumulated in float32; statistics and coefficients are float32.
"""

from __future__ import annotations

import functools
import warnings

import torch
import triton
import triton.language as tl

from . import contract

__all__ = ["NAME", "covers", "batch_stats", "normalize", "forward", "backward", "covered", "INTERPRETED"]

NAME = "triton"

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_SPLITS = 128  # the merge in the second kernel reads P·F partials per program: keep P bounded


@triton.jit
def _tile(t, R, B, sA, sB, ROWS: tl.constexpr, BLOCK_R: tl.constexpr):
    """Offsets (without the feature term) and mask of the reduce tile ``t`` of BLOCK_R values.

    ROWS (NCHW-like, B a multiple-ish of BLOCK_R): tile t is a block of one row a, contiguous in b, so
    the loads are provably contiguous (vectorized). Otherwise the A·B values are numbered r = a·B + b
    and tile t is r ∈ [t·BLOCK_R, (t+1)·BLOCK_R) (B = 1 for feature-contiguous layouts).
    """
    if ROWS:
        nb = (B + BLOCK_R - 1) // BLOCK_R
        a = t // nb
        b = (t - a * nb) * BLOCK_R + tl.arange(0, BLOCK_R)
        offs = a * sA + b
        mask = (b < B) & (a < R // B)
    else:
        r = t * BLOCK_R + tl.arange(0, BLOCK_R)
        a = r // B
        offs = a * sA + (r - a * B) * sB
        mask = r < R
    return offs, mask


@triton.jit
def _partial_moments(
    X, PCOUNT, PMEAN, PM2, F, B, sA, sF, sB, R, TILES, ROWS: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr
):
    split = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < F
    # statistics of x − K, K = the feature's first value: sums of small numbers, exact Sterbenz differences
    k = tl.load(X + f * sF, mask=fmask, other=0.0).to(tl.float32)
    n = tl.zeros([BLOCK_F], dtype=tl.float32)
    mean = tl.zeros([BLOCK_F], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_F], dtype=tl.float32)
    for i in range(0, TILES):
        roffs, rmask = _tile(split * TILES + i, R, B, sA, sB, ROWS, BLOCK_R)
        mask = rmask[:, None] & fmask[None, :]
        x = tl.load(X + roffs[:, None] + f[None, :] * sF, mask=mask, other=0.0).to(tl.float32)
        x = tl.where(mask, x - k[None, :], 0.0)
        cnt = tl.sum(mask.to(tl.float32), axis=0)
        safe = tl.maximum(cnt, 1.0)
        tile_mean = tl.sum(x, axis=0) / safe
        # implements bnlab.moments.correct (corrected two-pass): d = x − mean is exact near the mean, Σd is
        # what rounding moved the mean by
        d = tl.where(mask, x - tile_mean[None, :], 0.0)
        d_sum = tl.sum(d, axis=0)
        tile_m2 = tl.maximum(tl.sum(d * d, axis=0) - d_sum * d_sum / safe, 0.0)
        tile_mean = tile_mean + d_sum / safe
        # implements bnlab.moments.merge (Chan's pairwise merge) of (n, mean, m2) with the tile's summary
        total = n + cnt
        frac = cnt / tl.maximum(total, 1.0)
        delta = tile_mean - mean
        mean = mean + delta * frac
        m2 = m2 + tile_m2 + delta * delta * n * frac
        n = total
    out = split * F + f
    tl.store(PCOUNT + out, n, mask=fmask)
    tl.store(PMEAN + out, mean, mask=fmask)
    tl.store(PM2 + out, m2, mask=fmask)


@triton.jit
def _merge_partials(PCOUNT, PMEAN, PM2, P, F, f, fmask, BLOCK_P: tl.constexpr, BLOCK_F: tl.constexpr):
    """(mean, M2/n) of P partial summaries per feature: two passes over the partials.

    Implements bnlab.moments.merge_groups (the k-group Chan merge: within plus between sums of squares),
    for groups of unequal counts, corrected as bnlab.moments.correct."""
    total = tl.zeros([BLOCK_F], dtype=tl.float32)
    weighted = tl.zeros([BLOCK_F], dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = (p < P)[:, None] & fmask[None, :]
        idx = p[:, None] * F + f[None, :]
        c = tl.load(PCOUNT + idx, mask=mask, other=0.0)
        mu = tl.load(PMEAN + idx, mask=mask, other=0.0)
        total += tl.sum(c, axis=0)
        weighted += tl.sum(c * mu, axis=0)
    safe = tl.maximum(total, 1.0)
    mean = weighted / safe
    # second pass, corrected as in the first kernel: Σ n_p (μ_p − μ) is what rounding moved μ by
    m2 = tl.zeros([BLOCK_F], dtype=tl.float32)
    moved = tl.zeros([BLOCK_F], dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = (p < P)[:, None] & fmask[None, :]
        idx = p[:, None] * F + f[None, :]
        c = tl.load(PCOUNT + idx, mask=mask, other=0.0)
        mu = tl.load(PMEAN + idx, mask=mask, other=0.0)
        q = tl.load(PM2 + idx, mask=mask, other=0.0)
        d = mu - mean[None, :]
        moved += tl.sum(c * d, axis=0)
        m2 += tl.sum(q + c * d * d, axis=0)
    m2 = tl.maximum(m2 - moved * moved / safe, 0.0)
    return mean + moved / safe, m2 / safe


@triton.jit
def _normalize(
    X,
    Y,
    PCOUNT,
    PMEAN,
    PM2,
    MEAN,
    VAR,
    W,
    BIAS,
    P,
    F,
    B,
    sA,
    sF,
    sB,
    R,
    TILES,
    eps,
    FROM_PARTIALS: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    RELU: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    split = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < F
    if FROM_PARTIALS:  # the partials are moments of x − K (see _partial_moments)
        k = tl.load(X + f * sF, mask=fmask, other=0.0).to(tl.float32)
        mean, var = _merge_partials(PCOUNT, PMEAN, PM2, P, F, f, fmask, BLOCK_P, BLOCK_F)
        first = fmask & (split == 0)
        tl.store(MEAN + f, mean + k, mask=first)
        tl.store(VAR + f, var, mask=first)
    else:
        k = tl.zeros([BLOCK_F], dtype=tl.float32)
        mean = tl.load(MEAN + f, mask=fmask, other=0.0).to(tl.float32)
        var = tl.load(VAR + f, mask=fmask, other=1.0).to(tl.float32)
    scale = 1.0 / tl.sqrt(var + eps)
    if HAS_W:
        scale = scale * tl.load(W + f, mask=fmask, other=1.0).to(tl.float32)
    shift = tl.zeros([BLOCK_F], dtype=tl.float32)
    if HAS_B:
        shift = tl.load(BIAS + f, mask=fmask, other=0.0).to(tl.float32)
    for i in range(0, TILES):
        roffs, rmask = _tile(split * TILES + i, R, B, sA, sB, ROWS, BLOCK_R)
        mask = rmask[:, None] & fmask[None, :]
        offs = roffs[:, None] + f[None, :] * sF
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        # implements bnlab.kernels.composed.normalize, shifted form: y = (x − μ)·γ/√(σ²+ε) + β
        y = ((x - k[None, :]) - mean[None, :]) * scale[None, :] + shift[None, :]
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _partial_grads(
    DY,
    X,
    Y,
    MEAN,
    PSUM,
    PDOT,
    F,
    B,
    sA,
    sF,
    sB,
    R,
    TILES,
    HAS_Y: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    split = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < F
    mean = tl.load(MEAN + f, mask=fmask, other=0.0)
    s = tl.zeros([BLOCK_F], dtype=tl.float32)
    dot = tl.zeros([BLOCK_F], dtype=tl.float32)
    for i in range(0, TILES):
        roffs, rmask = _tile(split * TILES + i, R, B, sA, sB, ROWS, BLOCK_R)
        mask = rmask[:, None] & fmask[None, :]
        offs = roffs[:, None] + f[None, :] * sF
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:
            dy = tl.where(tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32) > 0.0, dy, 0.0)
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        s += tl.sum(dy, axis=0)
        # the reductions of bnlab.kernels.composed.backward: Σdy and Σdy·(x − μ), centred
        dot += tl.sum(dy * tl.where(mask, x - mean[None, :], 0.0), axis=0)
    out = split * F + f
    tl.store(PSUM + out, s, mask=fmask)
    tl.store(PDOT + out, dot, mask=fmask)


@triton.jit
def _grad_input(
    DY,
    X,
    Y,
    DX,
    MEAN,
    VAR,
    W,
    PSUM,
    PDOT,
    DW,
    DB,
    P,
    F,
    B,
    sA,
    sF,
    sB,
    R,
    TILES,
    eps,
    HAS_Y: tl.constexpr,
    HAS_W: tl.constexpr,
    NEED_X: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    split = tl.program_id(0)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    fmask = f < F
    s = tl.zeros([BLOCK_F], dtype=tl.float32)
    dot = tl.zeros([BLOCK_F], dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = (p < P)[:, None] & fmask[None, :]
        idx = p[:, None] * F + f[None, :]
        s += tl.sum(tl.load(PSUM + idx, mask=mask, other=0.0), axis=0)
        dot += tl.sum(tl.load(PDOT + idx, mask=mask, other=0.0), axis=0)
    mean = tl.load(MEAN + f, mask=fmask, other=0.0)
    invstd = 1.0 / tl.sqrt(tl.load(VAR + f, mask=fmask, other=1.0) + eps)
    dgamma = dot * invstd
    first = fmask & (split == 0)
    tl.store(DW + f, dgamma, mask=first)
    tl.store(DB + f, s, mask=first)
    if NEED_X:
        g = invstd
        if HAS_W:
            g = g * tl.load(W + f, mask=fmask, other=1.0).to(tl.float32)
        # implements bnlab.kernels.composed.grad_coefficients: dx = c·dy + d·(x − μ) + e
        m = R * 1.0
        k_dy = g
        k_x = -g * invstd * dgamma / m
        k_0 = -g * s / m
        for i in range(0, TILES):
            roffs, rmask = _tile(split * TILES + i, R, B, sA, sB, ROWS, BLOCK_R)
            mask = rmask[:, None] & fmask[None, :]
            offs = roffs[:, None] + f[None, :] * sF
            dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_Y:
                dy = tl.where(tl.load(Y + offs, mask=mask, other=0.0).to(tl.float32) > 0.0, dy, 0.0)
            x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
            dx = k_dy[None, :] * dy + k_x[None, :] * (x - mean[None, :]) + k_0[None, :]
            tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)


INTERPRETED = type(_normalize).__name__ == "InterpretedFunction"


# ---- host side: which inputs are covered, their (A, F, B) view, tile sizes and splits --------------------


def _plan(x: torch.Tensor, axes: tuple[int, ...]):
    """(A, F, B, sA, sF, sB) of the covered layouts (module docstring), or None."""
    nd = x.dim()
    axes = tuple(axes)
    if nd >= 2 and axes == (0, *range(2, nd)):  # per-channel, torch's convention
        n, c = x.shape[:2]
        spatial = x.numel() // max(n * c, 1)
        if x.is_contiguous():
            return n, c, spatial, c * spatial, spatial, 1
        if nd == 2:
            return n, c, 1, x.stride(0), x.stride(1), 0
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(nd)
        if fmt is not None and x.is_contiguous(memory_format=fmt):
            return n * spatial, c, 1, c, 1, 0
        return None
    if not x.is_contiguous():
        return None
    if axes == (0,):  # per-activation: features are the contiguous rest of a sample
        f = x.numel() // max(x.shape[0], 1)
        return x.shape[0], f, 1, f, 1, 0
    if axes == tuple(range(nd - 1)):  # NHWC tensors with axes (0, 1, 2)
        c = x.shape[-1]
        return x.numel() // max(c, 1), c, 1, c, 1, 0
    return None


def covered(x: torch.Tensor, axes: tuple[int, ...], *params) -> bool:
    """True where these kernels run: CUDA (or CPU under the interpreter), fp32/fp16/bf16, a layout of
    :func:`_plan`, fewer than 2³¹ elements, parameters float32 or x's dtype on x's device, no autograd."""
    device = x.device.type
    if disabled is not None or not (device == "cuda" or (device == "cpu" and INTERPRETED)):
        return False
    if x.dtype not in _DTYPES or x.numel() == 0 or x.numel() >= 2**31:
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *params)):
        return False
    for p in params:
        if p is not None and (p.dtype not in (x.dtype, torch.float32) or p.device != x.device):
            return False
    return _plan(x, axes) is not None


def covers(x: torch.Tensor, axes: tuple[int, ...], *tensors, op: str) -> bool:
    """:func:`covered` for every operation (:class:`.contract.KernelFamily`); the backward also needs float32
    statistics, and the global sums of synchronized BN are not covered."""
    if op != "backward":
        return covered(x, axes, *tensors)
    dy, mean, var, weight, y, *sums = tensors
    f32 = mean.dtype == torch.float32 and var.dtype == torch.float32
    return not sums and f32 and covered(x, axes, weight, dy, mean, var, y)


# under the interpreter (tests): small tiles and a few splits, so that every loop runs more than once
_INTERPRETER_PROGRAMS = 4
_INTERPRETER_BLOCK_R = 64
_BLOCK_P = 64  # partials merged per step of the second kernel's loop


@functools.lru_cache(maxsize=8)
def _multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _row_block(b: int, largest: int, smallest: int) -> int:
    """The largest BLOCK_R in [smallest, largest] tiling rows of b values with ≤ 10% masked lanes, or 0."""
    block = largest
    while block >= smallest:
        if triton.cdiv(b, block) * block <= 1.1 * b:
            return block
        block //= 2
    return 0


def _launch_shape(x: torch.Tensor, a: int, f: int, b: int):
    """(BLOCK_R, BLOCK_F, feature blocks, P splits, tiles per split, BLOCK_P, ROWS), from shapes only.

    Features contiguous (b = 1): tiles of about 2048 values, 32 features wide. NCHW-like (b > 1): tiles
    of one row (ROWS) where a block of ≥ 256 tiles the rows with little waste, else tiles of the
    numbered a·B + b values; 4 features. P splits of the tiles so that there are about 4 programs per
    SM (P ≤ 128: the second kernel merges P partials per program).
    """
    interpreted = x.device.type != "cuda"
    largest = _INTERPRETER_BLOCK_R if interpreted else 1024
    rows = False
    if b == 1:
        block_f = min(32, triton.next_power_of_2(f))
        block_r = max(16, 2048 // block_f)
    else:
        block_f = min(4, triton.next_power_of_2(f))
        block_r = _row_block(b, largest, 8 if interpreted else 256)
        rows = block_r > 0
        if not rows:
            block_r = max(16, min(1024, triton.next_power_of_2(a * b)))
    if interpreted:
        block_r = min(block_r, _INTERPRETER_BLOCK_R)
        programs = _INTERPRETER_PROGRAMS
    else:
        index = x.device.index if x.device.index is not None else torch.cuda.current_device()
        programs = 4 * _multiprocessors(index)
    total = a * triton.cdiv(b, block_r) if rows else triton.cdiv(a * b, block_r)
    f_blocks = triton.cdiv(f, block_f)
    splits = max(1, min(_MAX_SPLITS, max(1, programs // f_blocks), total))
    tiles = triton.cdiv(total, splits)
    splits = triton.cdiv(total, tiles)
    block_p = min(_BLOCK_P, triton.next_power_of_2(splits))
    return block_r, block_f, f_blocks, splits, tiles, block_p, rows


def _feature_shape(x: torch.Tensor, axes) -> tuple[int, ...]:
    return tuple(s for i, s in enumerate(x.shape) if i not in axes)


def _like_x(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` (x's shape) with x's strides, copied only where they differ (a gradient in another format)."""
    t = t.to(x.dtype)
    if t.stride() == x.stride():
        return t
    return torch.empty_like(x).copy_(t)


def _flat(t: torch.Tensor | None, dummy: torch.Tensor) -> torch.Tensor:
    """A feature-shaped tensor as the flat vector the kernels index; ``dummy`` stands in for None (the
    kernel does not read it: HAS_W / HAS_B are False)."""
    return dummy if t is None else t.reshape(-1)


# ---- the contract -----------------------------------------------------------------------------------------


disabled: str | None = None  # why the kernels were switched off in this process (see _guarded), or None


def _guarded(impl, *args):
    """``impl(*args)``; on a GPU, if it fails (a triton version that cannot compile these kernels, a
    card without resources for them), warn once, switch the kernels off and decline the call
    (:class:`.contract.Declined`: the chain walk goes on to the next family) — the outputs are fresh tensors,
    so nothing half-written reaches the caller. Under the interpreter errors are raised (tests must see them)."""
    global disabled
    if INTERPRETED:
        return impl(*args)
    try:
        return impl(*args)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 — any failure of the Triton path falls back to torch's kernels
        disabled = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"bnlab: Triton batch-norm kernels failed and are switched off; torch's kernels are used instead "
            f"({disabled[:300]}) / bnlab: los kernels Triton de batch norm fallaron y se desactivan; se usan "
            "los de torch",
            RuntimeWarning,
            stacklevel=5,
        )
        raise contract.Declined(disabled) from exc


def _stats_into(x, plan, launch):
    a, f, b, sa, sf, sb = plan
    block_r, block_f, f_blocks, splits, tiles, block_p, rows = launch
    part = torch.empty((3, splits, f), device=x.device, dtype=torch.float32)
    _partial_moments[(splits, f_blocks)](
        x, part[0], part[1], part[2], f, b, sa, sf, sb, a * b, tiles, ROWS=rows, BLOCK_R=block_r, BLOCK_F=block_f
    )
    return part


def _batch_stats(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mini-batch mean and biased variance over ``axes`` (float32): partial moments + Chan's merge."""
    return _guarded(_batch_stats_impl, x, axes)


def _batch_stats_impl(x, axes):
    _, mean, var = _forward_impl(x, None, None, 1e-5, axes, False, write_y=False)
    return mean, var


def _forward_impl(x, weight, bias, eps, axes, relu, write_y=True):
    plan = _plan(x, axes)
    a, f, b, sa, sf, sb = plan
    launch = _launch_shape(x, a, f, b)
    block_r, block_f, f_blocks, splits, tiles, block_p, rows = launch
    part = _stats_into(x, plan, launch)
    stats = torch.empty((2, f), device=x.device, dtype=torch.float32)
    y = torch.empty_like(x) if write_y else None
    _normalize[(splits if write_y else 1, f_blocks)](
        x,
        y if write_y else x,
        part[0],
        part[1],
        part[2],
        stats[0],
        stats[1],
        _flat(weight, stats),
        _flat(bias, stats),
        splits,
        f,
        b,
        sa,
        sf,
        sb,
        a * b,
        tiles if write_y else 0,
        float(eps),
        FROM_PARTIALS=True,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        RELU=bool(relu),
        ROWS=rows,
        BLOCK_R=block_r,
        BLOCK_F=block_f,
        BLOCK_P=block_p,
    )
    fshape = _feature_shape(x, axes)
    return y, stats[0].view(fshape), stats[1].view(fshape)


def _forward(x, weight, bias, eps: float, axes: tuple[int, ...], relu: bool = False):
    """Training forward: ``(y, mean, var)`` in two launches (partial moments; merge + normalize)."""
    return _guarded(_forward_impl, x, weight, bias, eps, axes, relu)


def _normalize_call(x, mean, var, weight, bias, eps: float, axes: tuple[int, ...]) -> torch.Tensor:
    """y = (x − μ)·γ/√(σ²+ε) + β in one launch (eval), coefficients in float32."""
    return _guarded(_normalize_eval, x, mean, var, weight, bias, eps, axes)


def _normalize_eval(x, mean, var, weight, bias, eps, axes):
    a, f, b, sa, sf, sb = _plan(x, axes)
    block_r, block_f, f_blocks, splits, tiles, block_p, rows = _launch_shape(x, a, f, b)
    y = torch.empty_like(x)
    _normalize[(splits, f_blocks)](
        x,
        y,
        x,
        x,
        x,
        mean.reshape(-1),
        var.reshape(-1),
        _flat(weight, x),
        _flat(bias, x),
        1,
        f,
        b,
        sa,
        sf,
        sb,
        a * b,
        tiles,
        float(eps),
        FROM_PARTIALS=False,
        HAS_W=weight is not None,
        HAS_B=bias is not None,
        RELU=False,
        ROWS=rows,
        BLOCK_R=block_r,
        BLOCK_F=block_f,
        BLOCK_P=16,
    )
    return y


def _backward(dy, x, mean, var, weight, eps: float, axes: tuple[int, ...], needs=(True, True, True), y=None,
              sums=None):  # fmt: skip
    """Closed-form gradients ``(dx, dweight, dbias)`` in two launches; ``y`` = the ReLU output, if fused."""
    return _guarded(_backward_impl, dy, x, mean, var, weight, eps, axes, needs, y)


def _backward_impl(dy, x, mean, var, weight, eps, axes, needs, y):
    need_x, need_w, need_b = needs
    a, f, b, sa, sf, sb = _plan(x, axes)
    block_r, block_f, f_blocks, splits, tiles, block_p, rows = _launch_shape(x, a, f, b)
    dy = _like_x(dy, x)
    y = None if y is None else _like_x(y, x)
    part = torch.empty((2, splits, f), device=x.device, dtype=torch.float32)
    mean, var = mean.reshape(-1), var.reshape(-1)
    _partial_grads[(splits, f_blocks)](
        dy,
        x,
        y if y is not None else x,
        mean,
        part[0],
        part[1],
        f,
        b,
        sa,
        sf,
        sb,
        a * b,
        tiles,
        HAS_Y=y is not None,
        ROWS=rows,
        BLOCK_R=block_r,
        BLOCK_F=block_f,
    )
    grads = torch.empty((2, f), device=x.device, dtype=torch.float32)
    dx = torch.empty_like(x) if need_x else None
    _grad_input[(splits if need_x else 1, f_blocks)](
        dy,
        x,
        y if y is not None else x,
        dx if need_x else x,
        mean,
        var,
        _flat(weight, mean),
        part[0],
        part[1],
        grads[0],
        grads[1],
        splits,
        f,
        b,
        sa,
        sf,
        sb,
        a * b,
        tiles,
        float(eps),
        HAS_Y=y is not None,
        HAS_W=weight is not None,
        NEED_X=bool(need_x),
        ROWS=rows,
        BLOCK_R=block_r,
        BLOCK_F=block_f,
        BLOCK_P=block_p,
    )
    fshape = _feature_shape(x, axes)
    dweight = grads[0].view(fshape) if (need_w and weight is not None) else None
    dbias = grads[1].view(fshape) if need_b else None
    return dx, dweight, dbias


#: The contract's implementations, run by :func:`.contract.run` once :func:`covers` said yes.
IMPLEMENTATION = {"batch_stats": _batch_stats, "normalize": _normalize_call, "forward": _forward, "backward": _backward}
batch_stats, normalize, forward, backward = contract.entry_points(NAME, covers, IMPLEMENTATION)
