"""The compiled CPU family (bnlab.kernels.native) against float64 NumPy and the pure families.

Every test that needs the library skips where no C compiler built it (the fallback tests below run anyway,
with a fresh cache directory, one in a subprocess). The pure chain (cpu → composed) is the same code with the
library switched off (``native._state['lib'] = None``: what ``BNLAB_NATIVE=0`` or a missing compiler gives).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import bnlab.nn as bnn
from bnlab import kernels
from bnlab.kernels import composed, cpu, native
from conftest import bn_float64

EPS = 1e-5
CL, CL3 = torch.channels_last, torch.channels_last_3d
needs_lib = pytest.mark.skipif(not native.available(), reason="no C compiler: the native family is not built")

# awkward shapes: C = 1, H·W = 1, N = 1, odd sizes, C not a multiple of the 4-wide vectors or the 32-channel
# tiles (39 = 32 + 4 + 3), a 2-D (N, C) input (rows of C), 3-D and 5-D, channels_last blocks of several row chunks
SHAPES = [
    ((5, 1, 7, 3), None), ((5, 1, 7, 3), CL), ((9, 6, 1, 1), CL), ((1, 3, 5, 7), None), ((1, 3, 5, 7), CL),
    ((3, 39, 5, 3), CL), ((3, 39, 5, 3), None), ((4, 37, 9), None), ((7, 5), None), ((2, 5, 3, 2, 3), CL3),
    ((1, 1, 1, 1), None), ((2, 70, 4, 4), CL), ((40, 39, 8, 8), CL),
]  # fmt: skip


def _input(shape, fmt, dtype=torch.float32, seed=0, loc=1.5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + loc).to(dtype)
    return x if fmt is None else x.contiguous(memory_format=fmt)


def _axes(x):
    return tuple(a for a in range(x.dim()) if a != 1)


@needs_lib
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "shape, fmt", SHAPES, ids=[f"{'x'.join(map(str, s))}-{'nchw' if f is None else 'cl'}" for s, f in SHAPES]
)
def test_forward_normalize_backward_vs_float64_numpy(shape, fmt, dtype):
    """Training forward, eval normalize and the three gradients against float64 NumPy (Alg. 1 by brute force)
    and float64 autograd, at awkward shapes in both layouts; the output keeps x's layout."""
    x = _input(shape, fmt, dtype)
    axes, c = _axes(x), shape[1]
    w, b = torch.rand(c, dtype=dtype) + 0.5, torch.randn(c, dtype=dtype)
    assert native.covers(x, axes, w, b, op="forward")
    y, mean, var = native.forward(x, w, b, EPS, axes)
    y64, mu64, var64 = bn_float64(x.double().numpy(), w.double().numpy(), b.double().numpy(), axes, EPS)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(mean.double().numpy(), mu64, rtol=tol, atol=tol)
    np.testing.assert_allclose(var.double().numpy(), var64, rtol=tol, atol=tol)
    np.testing.assert_allclose(y.double().numpy(), y64, rtol=10 * tol, atol=10 * tol)
    assert y.dtype == x.dtype and y.stride() == x.stride() and mean.dtype == var.dtype == dtype
    ye = native.normalize(x, mean, var, w, b, EPS, axes)
    np.testing.assert_allclose(ye.double().numpy(), y64, rtol=10 * tol, atol=10 * tol)

    # copies: for float64 input x.double() is x itself, and requires_grad on it made native decline (autograd
    # records the call) so that the float64 backward below ran the pure chain, untested
    x64 = x.double().clone().requires_grad_()
    w64, b64 = w.double().clone().requires_grad_(), b.double().clone().requires_grad_()
    dy = _input(shape, fmt, dtype, seed=1, loc=0.0, scale=1.0)
    for relu in (False, True):
        xv, wv, bv = (t.detach().clone().requires_grad_() for t in (x64, w64, b64))
        m64 = xv.mean(dim=axes, keepdim=True)
        v64 = ((xv - m64) ** 2).mean(dim=axes, keepdim=True)
        view = [1 if i in axes else c for i in range(x.dim())]
        out = (xv - m64) / torch.sqrt(v64 + EPS) * wv.reshape(view) + bv.reshape(view)
        out = out.relu() if relu else out
        out.backward(dy.double())
        yr = native.forward(x, w, b, EPS, axes, relu=relu)[0] if relu else None
        assert native.covers(x, axes, dy, mean, var, w, yr, op="backward")
        got = native.backward(dy, x, mean, var, w, EPS, axes, (True, True, True), y=yr)
        gtol = 1e-5 if dtype == torch.float32 else 1e-10
        # dx's scale: its largest term, γ·invstd·dy (dx itself cancels to 0 when m = 1)
        term = (dy.double().abs().max() * (w.double().abs() * torch.rsqrt(var.double() + EPS)).max()).item()
        for g, want, scale in zip(got, (xv.grad, wv.grad, bv.grad), (term, None, None), strict=True):
            scale = max(scale or 0.0, want.abs().max().item()) + 1e-30
            torch.testing.assert_close(g.double(), want, rtol=gtol, atol=gtol * scale)
        assert got[0].stride() == x.stride()
        # the same call of the pure chain (cpu → composed), as close
        pure = cpu.backward(dy, x, mean, var, w, EPS, axes, (True, True, True), y=yr)
        for g, p, scale in zip(got, pure, (term, None, None), strict=True):
            scale = max(scale or 0.0, p.abs().max().item()) + 1e-30
            torch.testing.assert_close(g, p, rtol=10 * gtol, atol=10 * gtol * scale)


@needs_lib
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
@pytest.mark.parametrize("loc", [0.0, 1e4, -3e4, 1e7])
def test_statistics_within_1e_6_of_float64_with_large_offsets(fmt, loc):
    """|μ|/σ up to 1e7 on float32 data (N·H·W = 1.3e5 per channel): μ_B and σ²_B within 1e-6 relative of the
    float64 statistics of the same float32 values, in both layouts, and the two layouts agree to 1e-7 (at 1e7
    the float32 values are integers: σ² ≈ 1.08; unshifted float64 sums lose it)."""
    x = _input((32, 5, 64, 64), None, loc=loc, scale=1.0, seed=3)
    mu64 = x.double().mean((0, 2, 3))
    var64 = x.double().var((0, 2, 3), correction=0)
    mean, var = native.batch_stats(x.contiguous(memory_format=CL) if fmt else x, (0, 2, 3))
    torch.testing.assert_close(mean.double(), mu64, rtol=1e-6, atol=0)
    torch.testing.assert_close(var.double(), var64, rtol=1e-6, atol=0)
    other = native.batch_stats(x if fmt else x.contiguous(memory_format=CL), (0, 2, 3))
    torch.testing.assert_close(other[1], var, rtol=1e-7, atol=0)


@needs_lib
@pytest.mark.slow
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
def test_statistics_1e7_values_per_channel_offset_1e4(fmt):
    """The issue's bound: N·H·W = 1e7 values per channel with |μ|/σ = 1e4, within 1e-6 relative of float64."""
    g = torch.Generator().manual_seed(4)
    x = (1e4 + torch.randn(10, 2, 1000, 1000, generator=g)).float()
    mu64 = x.double().mean((0, 2, 3))
    var64 = x.double().var((0, 2, 3), correction=0)
    mean, var = native.batch_stats(x.contiguous(memory_format=CL) if fmt else x, (0, 2, 3))
    torch.testing.assert_close(mean.double(), mu64, rtol=1e-6, atol=0)
    torch.testing.assert_close(var.double(), var64, rtol=1e-6, atol=0)


@needs_lib
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
@pytest.mark.parametrize("loc", [0.5, 1e4, -1e7])
def test_float64_statistics_for_synchronized_bn(fmt, loc):
    """batch_stats_float64 (synchronized BN's local statistics): μ_B and σ²_B of float32 data in float64, well
    within float32's rounding of float64 (a mean rounded to float32 is 6e-8·|μ| off), the very values
    batch_stats rounds; None wherever the family does not cover the call (the caller computes them itself)."""
    x = _input((8, 5, 16, 16), fmt, loc=loc, scale=1.0, seed=11)
    mu64 = x.double().mean((0, 2, 3))
    var64 = (x.double() - mu64.reshape(1, -1, 1, 1)).square().mean((0, 2, 3))  # two-pass (torch's var: 1e-9 off)
    mean, var = native.batch_stats_float64(x, (0, 2, 3))
    assert mean.dtype == var.dtype == torch.float64
    torch.testing.assert_close(mean, mu64, rtol=1e-12, atol=1e-12 * var64.sqrt().max().item())
    torch.testing.assert_close(var, var64, rtol=1e-9, atol=0)
    rounded = native.batch_stats(x, (0, 2, 3))
    assert torch.equal(rounded[0], mean.float()) and torch.equal(rounded[1], var.float())
    bad = x.clone()
    bad[0, 1, 0, 0] = float("nan")
    for other, axes in ((x.half(), (0, 2, 3)), (x[..., ::2], (0, 2, 3)), (x, (0,)), (bad, (0, 2, 3))):
        assert native.batch_stats_float64(other, axes) is None


@needs_lib
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
def test_global_float64_sums_backward_runs_natively(fmt):
    """Synchronized BN's backward hands the kernels the global (Σdy, Σdy·x̂) in float64 (the ranks' sums added in
    float64): the native family takes them (the pure chain's dx costs two more passes over x), and dx equals
    the float64 closed form with those sums."""
    x = _input((6, 20, 7, 9), fmt, seed=12)
    dy = _input((6, 20, 7, 9), fmt, seed=13, loc=0.1)
    w = torch.rand(20) + 0.5
    mean, var = native.batch_stats(x, (0, 2, 3))
    g = torch.Generator().manual_seed(14)
    sums = (torch.randn(20, generator=g, dtype=torch.float64), torch.randn(20, generator=g, dtype=torch.float64), 3000)
    tensors = (dy, mean, var, w, None, *sums[:2])
    assert kernels.select(x, (0, 2, 3), *tensors, op="backward") is native
    dx = native.backward(dy, x, mean, var, w, EPS, (0, 2, 3), (True, False, False), sums=sums)[0]
    d = {k: t.double() for k, t in dict(dy=dy, x=x, mean=mean, var=var, w=w).items()}
    want = composed.backward(d["dy"], d["x"], d["mean"], d["var"], d["w"], EPS, (0, 2, 3), (True, False, False),
                             sums=sums)[0]  # fmt: skip
    assert dx.dtype == torch.float32 and dx.stride() == x.stride()
    torch.testing.assert_close(dx.double(), want, rtol=1e-5, atol=1e-6)


@needs_lib
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
def test_one_and_two_threads_agree_bitwise(fmt, monkeypatch):
    """The order of every sum depends on the shape only, so 1 and 2 OpenMP threads give the same bits."""
    monkeypatch.setattr(native, "_GRAIN", 1)  # 2 threads even on this small input
    # values over many binades, so that float64 sums in another order round differently
    # (float64 data: float32 outputs would round the last bits of float64 sums away)
    shape, f64 = (16, 40, 15, 13), torch.float64
    x = _input(shape, None, f64, seed=5) * _input(shape, None, f64, seed=7, loc=0.0, scale=4.0).exp()
    x = x.contiguous(memory_format=fmt) if fmt is not None else x
    w, b = torch.rand(40, dtype=f64) + 0.5, torch.randn(40, dtype=f64)
    dy = _input(shape, fmt, f64, seed=6)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y, mean, var = native.forward(x, w, b, EPS, (0, 2, 3))
            outs.append((y, mean, var, *native.backward(dy, x, mean, var, w, EPS, (0, 2, 3))))
            outs[-1] += native.batch_stats_float64(x.float(), (0, 2, 3))
    finally:
        torch.set_num_threads(before)
    for a, c in zip(*outs, strict=True):
        assert torch.equal(a, c)


@needs_lib
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
def test_backward_sums_within_the_stated_float32_block_bound(fmt):
    """The float32 backward's reductions (float32 SIMD blocks of at most F32_TERMS = 8 terms per lane, combined
    in float64; bound in csrc/bn.c): with dy = 1000 + U(0, 1) > 0, Σdy = Σ|dy|, so Σdy is within 7·2^-24
    relative of float64 whatever the count (4e6 values per channel here; float32 lanes that never flush to
    float64 are 1e-6 to 1e-5 off), and Σdy·(x − μ) within 9·2^-24·Σ|dy·(x − μ)|."""
    g = torch.Generator().manual_seed(11)
    shape = (4, 2, 1000, 1000)
    x = (3e3 + torch.randn(shape, generator=g, dtype=torch.float64)).float()
    dy = (1000 + torch.rand(shape, generator=g, dtype=torch.float64)).float()
    if fmt is not None:
        x, dy = x.contiguous(memory_format=fmt), dy.contiguous(memory_format=fmt)
    axes = (0, 2, 3)
    mean, var = native.batch_stats(x, axes)
    _, dw, db = native.backward(dy, x, mean, var, torch.ones(2), EPS, axes, (False, True, True))
    u = 2.0**-24
    d64, t64 = dy.double(), dy.double() * (x.double() - mean.double().reshape(1, -1, 1, 1))
    want_db, want_dw = d64.sum(axes), t64.sum(axes) * torch.rsqrt(var.double() + EPS)
    assert ((db.double() - want_db).abs() <= 7 * u * want_db + 2 * u * want_db.abs()).all()
    bound = 9 * u * t64.abs().sum(axes) * torch.rsqrt(var.double() + EPS)
    assert ((dw.double() - want_dw).abs() <= bound + 2 * u * want_dw.abs()).all()


@needs_lib
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "shape, fmt",
    [((4, 3, 304, 304), None), ((4, 3, 301, 303), None), ((340, 16, 14, 14), None), ((60000, 3, 2, 3), None),
     ((4, 8, 200, 201), CL)],
    ids=["nchw", "nchw-odd", "nchw-14x14", "nchw-2x3", "cl"],
)
def test_large_outputs_streamed_match_float64(shape, fmt, relu):
    """float32 outputs above NT_BYTES (4 MB) are written with streaming stores: row by row where every row starts
    on a cache line (NCHW rows of 304² values, channels_last rows of C = 8k values), as flat runs elsewhere (NCHW
    rows of 301·303 or 14² values), not at all for rows shorter than a vector (2·3 values: normal stores);
    forward, eval and dx against float64 NumPy / autograd."""
    c = shape[1]
    x = _input(shape, fmt, seed=12)
    dy = _input(shape, fmt, seed=13, loc=0.0, scale=1.0)
    w, b = torch.linspace(-1.0, 1.5, c), torch.linspace(0.3, -0.2, c)
    axes = (0, 2, 3)
    y, mean, var = native.forward(x, w, b, EPS, axes, relu=relu)
    y64, _, _ = bn_float64(x.double().numpy(), w.double().numpy(), b.double().numpy(), axes, EPS)
    y64 = np.maximum(y64, 0) if relu else y64
    np.testing.assert_allclose(y.double().numpy(), y64, rtol=1e-5, atol=1e-5)
    if not relu:
        np.testing.assert_allclose(native.normalize(x, mean, var, w, b, EPS, axes).double().numpy(), y64,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    xv = x.double().requires_grad_()
    m64 = xv.mean(dim=axes, keepdim=True)
    v64 = ((xv - m64) ** 2).mean(dim=axes, keepdim=True)
    out = (xv - m64) / torch.sqrt(v64 + EPS) * w.double().reshape(1, c, 1, 1) + b.double().reshape(1, c, 1, 1)
    (out.relu() if relu else out).backward(dy.double())
    dx = native.backward(dy, x, mean, var, w, EPS, axes, (True, False, False), y=y if relu else None)[0]
    torch.testing.assert_close(dx.double(), xv.grad, rtol=1e-5, atol=1e-5 * xv.grad.abs().max().item())


@needs_lib
@pytest.mark.parametrize("shape", [(340, 16, 14, 14), (3, 5, 301, 303), (1100, 9, 3, 3)], ids=["14x14", "odd", "3x3"])
def test_streamed_flat_runs_have_the_bits_of_the_row_by_row_pass(shape, monkeypatch):
    """NCHW float32 outputs above NT_BYTES whose rows are not whole cache lines are written as flat streamed runs
    (a vector may straddle two channels; each thread one run): every value has the bits the row-by-row pass gives
    a slice of the batch below NT_BYTES, with the same coefficients — eval, and dx (given sums, a ReLU mask), at
    1, 2 and 3 threads (runs that start and end inside a cache line); the forward's flat run (the same code, its
    coefficients from float64 statistics) is checked against float64 by the test above, with and without ReLU."""
    monkeypatch.setattr(native, "_GRAIN", 1)
    c, axes = shape[1], (0, 2, 3)
    x = _input(shape, None, seed=21)
    dy = _input(shape, None, seed=22, loc=0.0, scale=1.0)
    w, b = torch.linspace(-1.0, 1.5, c), torch.linspace(0.3, -0.2, c)
    y, mean, var = native.forward(x, w, b, EPS, axes, relu=True)
    sums = (torch.randn(c), torch.randn(c), float(x.numel() // c))  # float32, as the kernels take them
    assert kernels.select(x, axes, dy, mean, var, w, y, *sums[:2], op="backward") is native
    step = max(1, (2 << 20) // (x[0].numel() * 4))  # samples per slice: below NT_BYTES, the row-by-row pass
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            dx = native.backward(dy, x, mean, var, w, EPS, axes, (True, False, False), y=y, sums=sums)[0]
            big = (native.normalize(x, mean, var, w, b, EPS, axes), dx)
            assert torch.equal(native.forward(x, w, b, EPS, axes, relu=True)[0], y)
            for k in sorted({0, shape[0] // 2, shape[0] - step}):
                xs, ys, ds = x[k : k + step], y[k : k + step], dy[k : k + step]
                dxs = native.backward(ds, xs, mean, var, w, EPS, axes, (True, False, False), y=ys, sums=sums)[0]
                part = (native.normalize(xs, mean, var, w, b, EPS, axes), dxs)
                for whole, piece in zip(big, part, strict=True):
                    assert torch.equal(whole[k : k + step], piece)
    finally:
        torch.set_num_threads(before)


@needs_lib
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("shape", [(5, 7, 24, 24), (3, 2, 1, 300), (9, 33, 16, 20)], ids=["24x24", "c2", "33ch"])
def test_fused_nchw_backward_has_the_bits_of_the_two_passes(shape, relu, monkeypatch):
    """NCHW rows of 2 KB or more whose channel fits half the L2 cache take the fused backward (a block of
    channels at a time: its sums, then its dx while it is in L2): the sums are each channel's rows in sample
    order as in the two passes, so dx has the bits of the unfused dx pass given those sums (float64: the sums
    come back exact as dγ and dβ), at 1, 2 and 3 threads (blocks split among threads, one channel or several)."""
    monkeypatch.setattr(native, "_GRAIN", 1)
    c, axes = shape[1], (0, 2, 3)
    x = _input(shape, None, dtype=torch.float64, seed=31)
    dy = _input(shape, None, dtype=torch.float64, seed=32, loc=0.0, scale=1.0)
    w = torch.linspace(-1.0, 1.5, c, dtype=torch.float64)
    b = torch.zeros(c, dtype=torch.float64)
    y, mean, var = native.forward(x, w, b, EPS, axes, relu=True)
    y = y if relu else None
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            dx, dw, db = native.backward(dy, x, mean, var, w, EPS, axes, y=y)
            sums = (db, dw, float(x.numel() // c))  # Σg and Σg·x̂: given, the kernel skips its own reduction
            two_pass = native.backward(dy, x, mean, var, w, EPS, axes, (True, False, False), y=y, sums=sums)[0]
            assert torch.equal(dx, two_pass)
            # other given sums (synchronized BN's global ones) with dγ and dβ asked too: dx from the given sums
            other = (2 * db, dw / 2, 3.0 * x.numel() // c)
            dx_other = native.backward(dy, x, mean, var, w, EPS, axes, (True, False, False), y=y, sums=other)[0]
            assert torch.equal(native.backward(dy, x, mean, var, w, EPS, axes, y=y, sums=other)[0], dx_other)
            results.append((dx, dw, db))
        for other in results[1:]:
            assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))
    finally:
        torch.set_num_threads(before)
    xv = x.clone().requires_grad_()
    out = torch.nn.functional.batch_norm(xv, None, None, w, b, training=True, eps=EPS)
    (out.relu() if relu else out).backward(dy)
    torch.testing.assert_close(results[0][0], xv.grad, rtol=1e-9, atol=1e-9)


def _every_kernel(fmt, dtype):
    """Every kernel of the library once (forward with ReLU, normalize, backward with and without given sums,
    float64 statistics, the running update) on one input: their outputs, in order."""
    x = _input((6, 10, 5, 7), fmt, dtype=dtype, seed=41)
    dy = _input((6, 10, 5, 7), fmt, dtype=dtype, seed=42, loc=0.0, scale=1.0)
    w, b = torch.linspace(-1, 2, 10, dtype=dtype), torch.linspace(0.5, -0.5, 10, dtype=dtype)
    axes = _axes(x)
    y, mean, var = native.forward(x, w, b, EPS, axes, relu=True)
    out = [y, mean, var, native.normalize(x, mean, var, w, b, EPS, axes)]
    out += native.backward(dy, x, mean, var, w, EPS, axes, y=y)
    g = torch.Generator().manual_seed(43)
    sums = (*torch.randn(2, 10, generator=g, dtype=torch.float64), 1234.0)
    out += native.backward(dy, x, mean, var, w, EPS, axes, (True, False, False), sums=sums)[:1]
    out += native.batch_stats_float64(x.float(), axes)
    rm, rv = torch.zeros(10, dtype=dtype), torch.ones(10, dtype=dtype)
    assert native.update_running(rm, rv, mean, var, 210, 0.1)
    return out + [rm, rv]


@needs_lib
@pytest.mark.skipif(native.call_path() != "extension", reason="no Python headers: the call module is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
def test_the_call_module_and_ctypes_give_the_same_bits(fmt, dtype, monkeypatch):
    """The kernels called through the call module (csrc/call/bncall.c: each argument read by the CPython API)
    and through ctypes (each argument converted by its argtypes) get the same arguments: every output of every
    kernel has the same bits."""
    through_module = _every_kernel(fmt, dtype)
    monkeypatch.setitem(native._state, "call", None)
    monkeypatch.setattr(native, "_fns", {})
    through_ctypes = _every_kernel(fmt, dtype)
    assert len(through_module) == len(through_ctypes) == 12
    for a, b in zip(through_module, through_ctypes, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


@needs_lib
@pytest.mark.skipif(native.call_path() != "extension", reason="no Python headers: the call module is not built")
def test_the_call_module_refuses_bad_arguments_without_calling():
    """A wrong number of arguments, a string for a count or a pointer, and no kernel address: a TypeError or
    ValueError naming the problem, no kernel run (the output keeps its bits)."""
    x = torch.randn(4, 3, 5)
    y = torch.full_like(x, 7.0)
    fn = native._fn("normalize", torch.float32)
    args = [x.data_ptr(), 4, 3, 5, 0, None, None, None, None, 1e-5, y.data_ptr(), 1]
    with pytest.raises(TypeError, match="12 arguments given, 13 expected"):
        fn(*args[:-1])
    for k, bad in ((1, "4"), (0, "x")):
        wrong = list(args)
        wrong[k] = bad
        with pytest.raises(TypeError):
            fn(*wrong)
    with pytest.raises(ValueError, match="no kernel address"):
        native._state["call"].normalize(0, *args)
    assert torch.equal(y, torch.full_like(x, 7.0))


@needs_lib
@pytest.mark.slow
def test_bnlab_native_call_ctypes_calls_through_ctypes(tmp_path):
    """BNLAB_NATIVE_CALL=ctypes (or a Python without its headers): no call module is built, the kernels are
    called through ctypes, and the results agree."""
    probe = "\nprint(json.dumps({'call': native.call_path(), 'y': y.flatten().tolist()[:20]}))"
    got = _run(_PROBE + probe, {"BNLAB_NATIVE_CALL": "ctypes", "BNLAB_CACHE_DIR": str(tmp_path)})
    assert got["call"] == "ctypes"
    assert not list(tmp_path.rglob("bncall-*"))
    assert got["y"] == _run(_PROBE + probe, {"BNLAB_CACHE_DIR": str(tmp_path)})["y"]


@needs_lib
def test_covers_and_the_chain():
    """native covers dense float32/float64 per-channel calls; fp16, strided views, other axes, recorded calls
    and mismatched dtypes go on down the chain (cpu, then composed)."""
    x = _input((4, 6, 5, 5), None)
    w, b = torch.rand(6), torch.randn(6)
    assert kernels.select(x, (0, 2, 3), w, b, op="forward") is native
    assert kernels.select(x.contiguous(memory_format=CL), (0, 2, 3), op="batch_stats") is native
    assert kernels.select(x.half(), (0, 2, 3), op="batch_stats") is cpu
    assert kernels.select(x[..., ::2], (0, 2, 3), op="batch_stats") is composed
    assert kernels.select(x, (0,), op="batch_stats") is composed
    assert kernels.select(x, (0, 2, 3), w.double(), b, op="forward") is cpu
    wg = w.clone().requires_grad_()
    assert kernels.select(x, (0, 2, 3), wg, b, op="forward") is composed
    with torch.no_grad():  # a layer's parameters (nn.Parameter) where autograd does not record: covered
        pw, pb = torch.nn.Parameter(w), torch.nn.Parameter(b)
        assert kernels.select(x, (0, 2, 3), pw, pb, op="forward") is native
    y = native.forward(x.half(), w.half(), b.half(), EPS, (0, 2, 3))[0]  # walks on to cpu: the same numbers
    torch.testing.assert_close(y, cpu.forward(x.half(), w.half(), b.half(), EPS, (0, 2, 3))[0])


@needs_lib
def test_non_finite_input_declines_to_the_pure_family():
    """inf/NaN in x: native declines at run time (contract.Declined) and the cpu family's answer comes back."""
    x = _input((4, 3, 5, 5), None)
    x[1, 2, 0, 0] = float("inf")
    x[0, 0, 1, 1] = float("nan")
    got = native.forward(x, None, None, EPS, (0, 2, 3))
    want = cpu.forward(x, None, None, EPS, (0, 2, 3))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, equal_nan=True)


@needs_lib
def test_constant_and_large_offset_channels_normalize_exactly():
    """σ² = 0 at 1e6 (a = γ/√ε): the shifted form (x − μ)·a + β gives exactly β, as composed.normalize."""
    x = torch.full((8, 3, 6, 6), 1e6)
    y, mean, var = native.forward(x, None, torch.tensor([0.0, 1.0, -2.0]), EPS, (0, 2, 3))
    assert torch.equal(var, torch.zeros(3)) and torch.equal(mean, torch.full((3,), 1e6))
    assert torch.equal(y, torch.tensor([0.0, 1.0, -2.0]).reshape(1, 3, 1, 1).expand_as(x))


@needs_lib
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
def test_layer_running_statistics_match_the_pure_path(fmt, monkeypatch):
    """A BatchNorm2d training step: the running statistics (updated in torch from the kernel's μ_B, σ²_B)
    agree with the pure chain's, and the gradients are within 1e-5 of the float64 step's (measured: 4e-6, the
    float32 terms' rounding; the pure chain's, torch's float32 sums, within 1e-4: 6e-5 off on this
    channels_last input); the native family ran."""
    # above nn._dispatch.SMALL_NUMEL values: smaller NCHW calls go to torch's own batch norm, not to a family
    x = _input((6, 5, 24, 24), fmt, seed=7)
    calls = []
    real = native.IMPLEMENTATION["forward"]
    monkeypatch.setitem(native.IMPLEMENTATION, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))

    def step(dtype=torch.float32):
        torch.manual_seed(0)
        layer = bnn.BatchNorm2d(5).to(dtype)
        xi = x.to(dtype).clone().requires_grad_()
        # a dy whose sums cancel (Σdy ≈ 1 over 3456 values): the gradients' reductions at their hardest
        (layer(xi) * torch.arange(xi.numel()).reshape(x.shape).sin().to(dtype)).sum().backward()
        return layer.running_mean, layer.running_var, xi.grad, layer.weight.grad, layer.bias.grad

    got = step()
    assert calls, "the native family did not run"
    exact = step(torch.float64)
    monkeypatch.setitem(native._state, "lib", None)
    calls.clear()
    want = step()
    assert not calls
    for g, w in zip(got[:2], want[:2], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
    for g, w, e in zip(got[2:], want[2:], exact[2:], strict=True):
        torch.testing.assert_close(g.double(), e, rtol=0, atol=1e-5)
        torch.testing.assert_close(w.double(), e, rtol=0, atol=1e-4)


def _stock_update(rm, rv, mean, var, count, momentum):
    """update_running_stats' stock ops (the path the native call replaces)."""
    unbiased = var * (count / (count - 1))
    rm.lerp_(mean, momentum)
    rv.lerp_(unbiased, momentum)


@needs_lib
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [1, 3, 17, 32, 100])
@pytest.mark.parametrize("momentum", [0.1, 0.0, 0.4999, 0.5, 0.9, 1.0, 1 / 3])
def test_running_update_has_the_stock_ops_bits(dtype, c, momentum):
    """native.update_running gives the bits of var·(m/(m−1)) and two lerp_ calls (both of lerp's formulas: weight
    below and above 0.5), and bumps the buffers' version counters as lerp_ does."""
    g = torch.Generator().manual_seed(c)
    mean = (torch.randn(c, generator=g, dtype=torch.float64) * 3 + 1).to(dtype)
    var = (torch.rand(c, generator=g, dtype=torch.float64) * 5).to(dtype)
    rm = (torch.randn(c, generator=g, dtype=torch.float64) * 2).to(dtype)
    rv = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    want_m, want_v = rm.clone(), rv.clone()
    _stock_update(want_m, want_v, mean, var, 77, momentum)
    versions = rm._version, rv._version
    assert native.update_running(rm, rv, mean, var, 77, momentum)
    assert torch.equal(rm, want_m) and torch.equal(rv, want_v)
    assert rm._version > versions[0] and rv._version > versions[1]


@needs_lib
def test_running_update_declines_without_changing_anything():
    """A non-finite statistic, mixed dtypes, a non-contiguous buffer, an inference tensor or a buffer that requires
    grad: False, and the buffers keep their bits (the caller's stock path decides, or raises torch's error)."""
    mean, var = torch.tensor([1.0, float("nan"), 2.0]), torch.ones(3)
    rm, rv = torch.zeros(3), torch.ones(3)
    assert not native.update_running(rm, rv, mean, var, 10, 0.1)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
    assert not native.update_running(rm, rv, torch.ones(3), torch.tensor([1.0, float("inf"), 1.0]), 10, 0.1)
    assert not native.update_running(rm.double(), rv, torch.ones(3), torch.ones(3), 10, 0.1)
    strided = torch.zeros(6)[::2]
    assert not native.update_running(strided, rv, torch.ones(3), torch.ones(3), 10, 0.1)
    with torch.inference_mode():
        frozen = torch.zeros(3)
    assert not native.update_running(frozen, rv, torch.ones(3), torch.ones(3), 10, 0.1)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3)) and torch.equal(frozen, torch.zeros(3))
    leaf = torch.zeros(3, requires_grad=True)  # lerp_ refuses an in-place write to it: so does the caller's path
    assert not native.update_running(leaf, rv, torch.ones(3), torch.ones(3), 10, 0.1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        bnn.functional.update_running_stats(leaf, rv, torch.ones(3), torch.ones(3), 10, 0.1)


@needs_lib
def test_a_graph_that_saved_the_running_statistics_sees_their_update():
    """An eval-mode output's graph saves the running statistics; a training step then updates them in place (the
    native update): backward through the old graph raises torch's in-place error, as with stock lerp_."""
    layer = bnn.BatchNorm2d(4)
    x = _input((8, 4, 16, 16), None).requires_grad_()
    layer.eval()
    y = layer(x)
    layer.train()
    layer(x.detach())
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def _run(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter (this checkout's bnlab) and return the JSON it prints last."""
    full = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


_PROBE = textwrap.dedent("""
    import json, torch
    from bnlab import kernels
    from bnlab.kernels import native
    x = (torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) * 0.37).sin()
    y, mean, var = kernels.select(x).forward(x, None, None, 1e-5, (0, 2, 3))
    fam = kernels.select(x, (0, 2, 3), None, None, op="forward").NAME
    print(json.dumps({"available": native.available(), "family": fam, "mean": mean.tolist(), "var": var.tolist(),
                      "y": y.flatten().tolist()[:20]}))
""")


def _probe_here() -> dict:
    """_PROBE's numbers in this process."""
    x = (torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5) * 0.37).sin()
    y, mean, var = kernels.select(x).forward(x, None, None, 1e-5, (0, 2, 3))
    fam = kernels.select(x, (0, 2, 3), None, None, op="forward").NAME
    return {"available": native.available(), "family": fam, "mean": mean.tolist(), "var": var.tolist(),
            "y": y.flatten().tolist()[:20]}  # fmt: skip


def _agrees_with_native(got: dict) -> None:
    assert got["available"] is False and got["family"] == "cpu"
    if native.available():
        want = _probe_here()
        np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got["var"], want["var"], rtol=1e-6)
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cc", ["/bin/false", "/nonexistent/cc"], ids=["failing-compiler", "no-compiler"])
def test_without_a_compiler_the_pure_family_runs_and_agrees(cc, tmp_path, monkeypatch):
    """A compiler that fails or is absent, with a fresh cache directory: nothing is built or cached, the chain
    runs cpu, and its results agree with the native family's (where a compiler built it here)."""
    want_native = native.available()
    monkeypatch.setenv("CC", cc)
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_state", {})  # first use again, with this environment
    got = _probe_here()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    monkeypatch.undo()
    assert native.available() is want_native
    _agrees_with_native(got)


@pytest.mark.slow
def test_bnlab_native_0_disables_the_family(tmp_path):
    """BNLAB_NATIVE=0 set for a fresh process: nothing is built, cpu runs, results agree."""
    got = _run(_PROBE, {"BNLAB_NATIVE": "0", "BNLAB_CACHE_DIR": str(tmp_path)})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    _agrees_with_native(got)


@needs_lib
@pytest.mark.slow
def test_truncated_library_is_rebuilt(tmp_path):
    """A cached library cut short (a crash while copying, a full disk) is rebuilt on the next first use; so is
    the call module (the CPython extension that calls the kernels, where Python's headers are installed)."""
    env = {"BNLAB_CACHE_DIR": str(tmp_path)}
    probe = "\ncall = native._state.get('call')"
    probe += "\nprint(json.dumps({'paths': [str(native.library_path())] + ([call.__file__] if call else [])}))"
    first = _run(_PROBE + probe, env)
    paths = first["paths"]
    sizes = [os.path.getsize(p) for p in paths]
    for path, size in zip(paths, sizes, strict=True):
        with open(path, "r+b") as f:
            f.truncate(size // 3)
    assert _run(_PROBE, env)["family"] == "native"
    again = _run(_PROBE + probe, env)
    assert again["paths"] == paths
    assert [os.path.getsize(p) for p in paths] == sizes
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    want = [os.path.basename(p) for p in paths] + [os.path.splitext(os.path.basename(p))[0] + ".sha256" for p in paths]
    assert names == sorted(want)  # no temporaries


@needs_lib
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
def test_a_forked_child_does_not_hang(monkeypatch):
    """After the parent ran 2 OpenMP threads, a fork()ed child (multiprocessing's default on Linux) runs the
    kernels on one thread: GNU OpenMP's pool does not survive fork, and 2 threads there hang for ever."""
    monkeypatch.setattr(native, "_GRAIN", 1)  # 2 threads even on this small input
    x = _input((16, 8, 8, 8), None, seed=9)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = native.forward(x, None, None, EPS, (0, 2, 3))[1]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report the statistics, or die trying
            try:
                got = native.forward(x, None, None, EPS, (0, 2, 3))[1]
                os.write(write, json.dumps(got.tolist()).encode())
            finally:
                os._exit(0)
        os.close(write)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in the native kernels")
        with os.fdopen(read) as f:
            got = json.loads(f.read() or "null")
    finally:
        torch.set_num_threads(before)
    assert got == want.tolist()


@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "cl"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_calls_without_autograd_give_the_same_bits_and_no_graph(fmt, training):
    """Door eager without anything to differentiate (no_grad, or no tensor requiring grad) calls the kernels
    without the autograd Function: the output and the running statistics have the bits of the recorded call,
    and nothing is recorded."""
    x = _input((6, 5, 24, 24), fmt, seed=3)

    def run(grad: bool):
        torch.manual_seed(0)
        layer = bnn.BatchNorm2d(5, activation="relu").train(training)
        with torch.no_grad():
            layer.weight.uniform_(0.5, 1.5), layer.bias.uniform_(-0.5, 0.5)
        with torch.set_grad_enabled(grad):
            y = layer(x)
        return y, layer.running_mean, layer.running_var

    recorded, bare = run(True), run(False)
    assert recorded[0].grad_fn is not None and bare[0].grad_fn is None
    for r, b in zip(recorded, bare, strict=True):
        assert torch.equal(r, b)


@needs_lib
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process's mappings (Linux)")
def test_the_kernels_run_on_torchs_openmp_runtime():
    """Where torch ships GNU OpenMP (the Linux wheels), the library's libgomp.so.1 is torch's own, already loaded:
    one thread pool for torch and the kernels, not two competing for the cores (native._load's comment). (Other
    packages may vendor their own copy under another name, e.g. scikit-learn's libgomp-<hash>.so: not ours.)"""
    lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    if not any(name.startswith("libgomp") for name in os.listdir(lib)):
        pytest.skip("this torch does not ship GNU OpenMP")
    assert native.available()  # (loaded)
    with open("/proc/self/maps", encoding="utf-8") as f:
        paths = {line.split()[-1] for line in f}
    mapped = {path for path in paths if path.rsplit("/", 1)[-1].startswith("libgomp.so")}
    assert mapped and all(os.path.realpath(os.path.dirname(path)) == os.path.realpath(lib) for path in mapped), mapped
    assert str(native.library_path()) in paths
