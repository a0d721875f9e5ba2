"""Kernel paths against float64 computations written here, and routed paths against the composed one.

Paths: ``kernels.composed`` everywhere; ``kernels.cpu`` routes per-channel BN on dense NCHW and
channels_last inputs to row statistics + torch's native normalize/backward kernels, and sends everything
else (per-activation and other axes, strided inputs) to ``composed``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bnlab.nn.functional as BF
from bnlab import kernels
from bnlab import reference as ref
from bnlab.kernels import composed, cpu, native

EPS = 1e-5
CL = torch.channels_last
CL3 = torch.channels_last_3d

# (name, shape, axes, memory format): which path each case takes is asserted in test_routing
CASES = [
    ("nchw", (4, 3, 5, 6), (0, 2, 3), None),
    ("ncl", (5, 4, 7), (0, 2), None),
    ("ncdhw", (3, 4, 2, 3, 4), (0, 2, 3, 4), None),
    ("channels_last", (4, 3, 5, 6), (0, 2, 3), CL),
    ("channels_last_3d", (3, 4, 2, 3, 4), (0, 2, 3, 4), CL3),
    ("batch_of_1", (1, 3, 4, 5), (0, 2, 3), None),
    ("per_activation", (6, 3, 4, 5), (0,), None),
    ("other_axes", (4, 3, 5, 6), (0, 3), None),
    ("nc", (8, 5), (0,), None),
    ("strided", (4, 3, 5, 12), (0, 2, 3), "strided"),
]
ROUTED = {"nchw", "ncl", "ncdhw", "channels_last", "channels_last_3d", "batch_of_1"}
KERNELS = {"composed": composed, "cpu": cpu, "native": native}  # native: the compiled family (or, without a
# compiler, its chain: cpu)
CPU_HEAD = native if native.available() else cpu  # the head of the CPU chain that runs


@pytest.fixture(autouse=True)
def _chunked_statistics(monkeypatch):
    """The small shapes here take the CPU family's chunked row moments, not its small-input var_mean
    (tested on its own in test_small_inputs_take_one_var_mean_as_accurate_as_float64)."""
    monkeypatch.setattr(cpu, "_SMALL_NUMEL", 0)


def _input(shape, fmt, dtype=torch.float32, seed=0, offset=1.5):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2.0 + offset).to(dtype)
    if fmt == "strided":
        return x[..., ::2]
    return x if fmt is None else x.contiguous(memory_format=fmt)


def _params(c_shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(c_shape, generator=g) + 0.5, torch.randn(c_shape, generator=g)


def _feature_shape(shape, axes):
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def _view(v, ndim, axes):
    shape, it = [], iter(v.shape)
    for i in range(ndim):
        shape.append(1 if i in axes else next(it))
    return v.reshape(shape)


def bn64(x, w, b, axes, eps=EPS):
    """Alg. 1 in float64, written out: returns (y, mean, biased var), differentiable."""
    x = x.double()
    m = 1
    for a in axes:
        m *= x.shape[a]
    mean = x.sum(dim=axes) / m
    centred = x - _view(mean, x.dim(), axes)
    var = (centred * centred).sum(dim=axes) / m
    y = centred / torch.sqrt(_view(var, x.dim(), axes) + eps)
    if w is not None:
        y = y * _view(w.double(), x.dim(), axes)
    if b is not None:
        y = y + _view(b.double(), x.dim(), axes)
    return y, mean, var


def _tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype]


def test_select_and_routing():
    assert kernels.select(torch.zeros(2, 3)) is native  # the CPU chain's head (covers nothing without a compiler)
    for name, shape, axes, fmt in CASES:
        x = _input(shape, fmt)
        assert cpu.fast_path(x, axes) == (name in ROUTED), name
    assert not cpu.fast_path(torch.zeros(2, 3, 0, 4), (0, 2, 3))
    assert not cpu.fast_path(torch.zeros(2, 3, 4, dtype=torch.int32), (0, 2))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name, shape, axes, fmt", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_forward_normalize_backward_vs_float64(kernel, name, shape, axes, fmt, dtype):
    k = KERNELS[kernel]
    x = _input(shape, fmt, dtype)
    w, b = _params(_feature_shape(shape, axes))
    if dtype == torch.float64:
        w, b = w.double(), b.double()
    tol = _tol(dtype)
    stat_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    y, mean, var = k.forward(x, w, b, EPS, axes)
    x64 = x.detach().double().clone().requires_grad_()
    y64, mean64, var64 = bn64(x64, w, b, axes)
    mean64, var64 = mean64.detach(), var64.detach()
    assert y.dtype == x.dtype and y.shape == x.shape
    assert mean.dtype == var.dtype == stat_dtype and mean.shape == var.shape == w.shape
    if fmt in (CL, CL3):
        assert y.is_contiguous(memory_format=fmt)
    stat_tol = 1e-12 if dtype == torch.float64 else 1e-5  # statistics of the (rounded) input, in >= float32
    torch.testing.assert_close(mean.double(), mean64.detach(), rtol=stat_tol, atol=stat_tol)
    torch.testing.assert_close(var.double(), var64.detach(), rtol=stat_tol, atol=stat_tol)
    torch.testing.assert_close(y.double(), y64.detach(), rtol=tol, atol=tol)

    y_eval = k.normalize(x, mean64.to(stat_dtype), var64.to(stat_dtype), w, b, EPS, axes)
    assert y_eval.dtype == x.dtype
    torch.testing.assert_close(y_eval.double(), y64.detach(), rtol=tol, atol=tol)

    dy = _input(shape, fmt, dtype, seed=2, offset=0.0)
    y64.backward(dy.double())
    w64 = w.double().requires_grad_()
    b64 = b.double().requires_grad_()
    y64b, _, _ = bn64(x.detach().double().clone(), w64, b64, axes)
    y64b.backward(dy.double())
    dx, dw, db = k.backward(dy, x, mean, var, w, EPS, axes, (True, True, True))
    assert dx.dtype == x.dtype and dx.shape == x.shape
    gtol = 3 * tol if dtype in (torch.float32, torch.float64) else 10 * tol
    scale = x64.grad.abs().max().item()
    torch.testing.assert_close(dx.double(), x64.grad, rtol=gtol, atol=gtol * scale)
    torch.testing.assert_close(dw.double(), w64.grad, rtol=gtol, atol=gtol * w64.grad.abs().max().item())
    torch.testing.assert_close(db.double(), b64.grad, rtol=gtol, atol=gtol * b64.grad.abs().max().item())


@pytest.mark.parametrize("name, shape, axes, fmt", CASES, ids=[c[0] for c in CASES])
def test_cpu_matches_composed(name, shape, axes, fmt):
    x = _input(shape, fmt)
    w, b = _params(_feature_shape(shape, axes))
    got, want = cpu.forward(x, w, b, EPS, axes), composed.forward(x, w, b, EPS, axes)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    mean, var = want[1], want[2]
    torch.testing.assert_close(
        cpu.normalize(x, mean, var, w, b, EPS, axes), composed.normalize(x, mean, var, w, b, EPS, axes)
    )
    dy = _input(shape, fmt, seed=3, offset=0.0)
    for needs in [(True, True, True), (True, False, False), (False, True, True)]:
        got = cpu.backward(dy, x, mean, var, w, EPS, axes, needs)
        want = composed.backward(dy, x, mean, var, w, EPS, axes, needs)
        for g, e in zip(got, want, strict=True):
            assert (g is None) == (e is None)
            if g is not None:
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    # without γ: no weight gradient, the rest unchanged
    dx, dw, db = cpu.backward(dy, x, mean, var, None, EPS, axes, (True, True, True))
    assert dw is None
    torch.testing.assert_close(dx, composed.backward(dy, x, mean, var, None, EPS, axes)[0], rtol=1e-4, atol=1e-5)


def test_backward_takes_broadcast_and_other_format_gradients():
    x = _input((4, 3, 5, 6), CL)
    w, _ = _params((3,))
    mean, var = composed.batch_stats(x, (0, 2, 3))
    for dy in (torch.ones(1).expand(4, 3, 5, 6), _input((4, 3, 5, 6), None, seed=4)):
        got = cpu.backward(dy, x, mean, var, w, EPS, (0, 2, 3))
        want = composed.backward(dy, x, mean, var, w, EPS, (0, 2, 3))
        for g, e in zip(got, want, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(16, 4, 9, 11), (2, 3, 64, 64)])
def test_stability_offset_1e6(kernel, fmt, shape):
    """x = 1e6 + N(0, 1) in float32: statistics within 1e-4 relative of float64 (of the same values)."""
    g = torch.Generator().manual_seed(5)
    x = (1e6 + torch.randn(shape, generator=g, dtype=torch.float64)).float()
    if fmt is not None:
        x = x.contiguous(memory_format=fmt)
    _, mean64, var64 = bn64(x, None, None, (0, 2, 3))
    mean, var = KERNELS[kernel].batch_stats(x, (0, 2, 3))
    torch.testing.assert_close(mean.double(), mean64, rtol=1e-7, atol=0)
    torch.testing.assert_close(var.double(), var64, rtol=1e-4, atol=0)
    y, mean_f, var_f = KERNELS[kernel].forward(x, None, None, EPS, (0, 2, 3))
    torch.testing.assert_close(var_f, var)
    # (x − μ)·a + β: the output is as accurate as the float32 statistics (torch's a·x + b errs by ~0.06)
    y64, _, _ = bn64(x, None, None, (0, 2, 3))
    stat_err = ((mean_f.double() - mean64).abs() * torch.rsqrt(var64 + EPS)).max().item()
    assert stat_err < 0.05
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=stat_err + 1e-5)


def test_constant_zero_and_nonfinite_rows():
    x = torch.randn(4, 3, 5, 6)
    x[:, 0] = 0.25  # constant channel: variance exactly 0, never negative
    x[1, 1] = 0.0  # one zero row inside a channel
    x[2, 2, 1, 1] = float("nan")
    for fmt in (None, CL):
        xf = x if fmt is None else x.contiguous(memory_format=fmt)
        y, mean, var = cpu.forward(xf, None, None, EPS, (0, 2, 3))
        _, mean64, var64 = bn64(x[:, :2], None, None, (0, 2, 3))
        assert var[0].item() == 0 and mean[0].item() == 0.25
        torch.testing.assert_close(var[:2].double(), var64, rtol=1e-5, atol=1e-7)
        assert torch.isnan(mean[2]) and torch.isnan(y[:, 2]).all() and torch.isfinite(y[:, :2]).all()


@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("affine", [True, False])
def test_functional_vs_torch_autograd(fmt, affine):
    """bnlab.nn.functional.batch_norm (routed kernels) ≡ torch.nn.functional.batch_norm: y, grads, stats."""
    x = _input((6, 4, 7, 5), fmt)
    w, b = _params((4,)) if affine else (None, None)
    grads = []
    outs = []
    stats = []
    for fn in (torch.nn.functional.batch_norm, BF.batch_norm):
        xa = x.clone().requires_grad_()
        wa = w.clone().requires_grad_() if affine else None
        ba = b.clone().requires_grad_() if affine else None
        rm, rv = torch.zeros(4), torch.ones(4)
        y = fn(xa, rm, rv, wa, ba, training=True, momentum=0.1, eps=EPS)
        y.backward(_input(x.shape, fmt, seed=6, offset=0.0))
        outs.append(y)
        stats.append((rm, rv))
        grads.append([t.grad for t in (xa, wa, ba) if t is not None])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    if fmt is not None:
        assert outs[1].is_contiguous(memory_format=fmt)
    for g, e in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    for g, e in zip(stats[1], stats[0], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    rm, rv = stats[1]
    y_eval = BF.batch_norm(x, rm, rv, w, b, training=False, eps=EPS)
    torch.testing.assert_close(y_eval, torch.nn.functional.batch_norm(x, rm, rv, w, b, False, eps=EPS))


def test_double_backward_still_composed():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: BF.batch_norm(x, None, None, w, b, training=True), (x, w, b), eps=1e-6, atol=1e-4
    )


@pytest.mark.parametrize("axes, shape", [((0, 2, 3), (9, 3, 5, 6)), ((0,), (9, 3, 5, 6)), ((0, 1, 2), (9, 5, 6, 3))])
def test_reference_in_chunks(monkeypatch, axes, shape):
    """The reference's cache-sized chunks of the batch axis give the unchunked result (float64 vs float64)."""
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, size=shape)
    fshape = _feature_shape(shape, axes)
    gamma, beta = rng.uniform(0.5, 1.5, fshape), rng.normal(size=fshape)
    dy = rng.normal(size=shape)
    monkeypatch.setattr(ref, "_CHUNK_BYTES", 1)  # one sample per chunk
    y, cache = ref.forward(x, gamma, beta, axes=axes)
    dx, dgamma, dbeta = ref.backward(dy, cache)
    x64 = torch.from_numpy(x).requires_grad_()
    g64, b64 = torch.from_numpy(gamma).requires_grad_(), torch.from_numpy(beta).requires_grad_()
    y64, mean64, var64 = bn64(x64, g64, b64, axes)
    y64.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, y64.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cache.mu_B.squeeze(axis=axes), mean64.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(cache.sigma2_B.squeeze(axis=axes), var64.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, x64.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dgamma, g64.grad.numpy(), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(dbeta, b64.grad.numpy(), rtol=1e-9, atol=1e-10)


def test_reference_float32_offset_and_contiguous_rows():
    rng = np.random.default_rng(8)
    x = (1e6 + rng.standard_normal((8, 3, 20, 20))).astype(np.float32)
    y, cache = ref.forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), axes=(0, 2, 3))
    assert y.dtype == np.float32 and cache.x_hat.dtype == np.float32
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(cache.sigma2_B.ravel(), x64.var(axis=(0, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(cache.mu_B.ravel(), x64.mean(axis=(0, 2, 3)), rtol=1e-7)


@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "channels_last"])
def test_corrected_rows_agree_with_plain_rows(monkeypatch, fmt):
    """The corrected two-pass branch (taken for |μ| ≫ σ) and the plain one give the same statistics."""
    x = _input((5, 3, 6, 7), fmt)
    plain = cpu.batch_stats(x, (0, 2, 3))
    monkeypatch.setattr(cpu, "_ROUNDING_TOLERANCE", 0.0)  # every row takes the corrected branch
    corrected = cpu.batch_stats(x, (0, 2, 3))
    for p, c in zip(plain, corrected, strict=True):
        torch.testing.assert_close(p, c, rtol=1e-6, atol=1e-7)


def test_forward_under_autograd_stays_differentiable():
    x = torch.randn(4, 3, 5, 6, requires_grad=True)
    w, b = _params((3,))
    y, mean, var = cpu.forward(x, w, b, EPS, (0, 2, 3))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().max() < 1e-4  # Σ y does not depend on x


@pytest.mark.parametrize("fmt, shape", [(CL, (7, 3, 5, 6)), (CL3, (5, 4, 2, 3, 4))], ids=["2d", "3d"])
@pytest.mark.parametrize("offset", [1.5, 1e6])
def test_channels_last_chunks(monkeypatch, fmt, shape, offset):
    """channels_last statistics in chunks of 2 samples (the last one shorter) ≡ float64, both branches."""
    monkeypatch.setattr(cpu, "_CHUNK_BYTES", 2 * 4 * int(np.prod(shape[1:])))
    x = _input(shape, fmt, torch.float64, seed=9, offset=offset).float().contiguous(memory_format=fmt)
    axes = tuple(a for a in range(len(shape)) if a != 1)
    _, mean64, var64 = bn64(x, None, None, axes)
    mean, var = cpu.batch_stats(x, axes)
    torch.testing.assert_close(mean.double(), mean64, rtol=1e-7, atol=1e-6)
    torch.testing.assert_close(var.double(), var64, rtol=1e-5, atol=0)
    w, b = _params((shape[1],))
    y, mean_f, var_f = cpu.forward(x, w, b, EPS, axes)
    torch.testing.assert_close(var_f, var)
    assert y.is_contiguous(memory_format=fmt)
    y_whole = composed.normalize(x, mean, var, w, b, EPS, axes)
    torch.testing.assert_close(y, y_whole, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(cpu, "_ROUNDING_TOLERANCE", 0.0)  # every row corrected: same statistics
    for p, c in zip((mean, var), cpu.batch_stats(x, axes), strict=True):
        torch.testing.assert_close(p, c, rtol=1e-6, atol=1e-7)


# ---- issue 7, item 3: the output is as accurate as the statistics when |μ| ≫ σ -------------------------

LAYOUTS = [((8, 3, 6, 6), (0, 2, 3), None), ((8, 3, 6, 6), (0, 2, 3), CL), ((8, 3, 6, 6), (0,), None)]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape, axes, fmt", LAYOUTS, ids=["nchw", "channels_last", "per_activation"])
def test_constant_large_channel_is_exactly_zero(kernel, shape, axes, fmt):
    """full(1e6) in float32: statistics exact (μ = 1e6, σ² = 0), so the output must be exactly 0 (was 7.2)."""
    x = torch.full(shape, 1e6)
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    w, b = torch.ones(_feature_shape(shape, axes)), torch.zeros(_feature_shape(shape, axes))
    y, mean, var = KERNELS[kernel].forward(x, w, b, EPS, axes)
    assert torch.equal(mean, torch.full_like(mean, 1e6)) and torch.equal(var, torch.zeros_like(var))
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.equal(KERNELS[kernel].normalize(x, mean, var, w, b, EPS, axes), torch.zeros_like(y))
    assert torch.equal(KERNELS[kernel].forward(x, w, b, EPS, axes, relu=True)[0], torch.zeros_like(y))


def test_functional_constant_large_channel_is_exactly_zero():
    """The issue's reproduction through the public function, train and eval (torch gives 8.7 here)."""
    x = torch.full((8, 3, 6, 6), 1e6)
    assert torch.equal(BF.batch_norm(x, None, None, training=True), torch.zeros_like(x))
    rm, rv = torch.full((3,), 1e6), torch.zeros(3)
    assert torch.equal(BF.batch_norm(x, rm, rv, training=False), torch.zeros_like(x))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape, axes, fmt", LAYOUTS, ids=["nchw", "channels_last", "per_activation"])
@pytest.mark.parametrize("offset, scale", [(1e6, 1.0), (3e4, 1e-2), (-5e3, 0.1)])
def test_large_offset_output_as_accurate_as_statistics(kernel, shape, axes, fmt, offset, scale):
    """x = offset + scale·N(0, 1) in float32, forward and eval against float64.

    Given the statistics the kernel returned, its output must match float64 arithmetic on them to float32
    rounding of a unit output (a·x + b errs by ~ε·|μ|/σ, up to 0.1 here); against the exact float64
    statistics it may differ only by what rounding μ to float32 moved (|μ₃₂ − μ₆₄|/σ).
    """
    g = torch.Generator().manual_seed(11)
    x = (offset + scale * torch.randn(shape, generator=g, dtype=torch.float64)).float()
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    w, b = _params(_feature_shape(shape, axes))
    k = KERNELS[kernel]
    y, mean, var = k.forward(x, w, b, EPS, axes)
    nd = x.dim()
    given = (x.double() - _view(mean.double(), nd, axes)) * torch.rsqrt(_view(var.double(), nd, axes) + EPS)
    given = given * _view(w.double(), nd, axes) + _view(b.double(), nd, axes)
    torch.testing.assert_close(y.double(), given, rtol=0, atol=2e-5)
    torch.testing.assert_close(k.normalize(x, mean, var, w, b, EPS, axes).double(), given, rtol=0, atol=2e-5)
    y64, mean64, var64 = bn64(x, w, b, axes)
    moved = ((mean.double() - mean64).abs() * torch.rsqrt(var64 + EPS) * w.double()).max().item()
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=moved + 2e-5)


def test_ordinary_data_keeps_the_fast_affine_path():
    """Below SHIFT_RATIO the CPU eval path is torch's own kernel, bit for bit (the shifted form is not used)."""
    x = _input((4, 3, 5, 6), None)
    w, b = _params((3,))
    mean, var = composed.batch_stats(x, (0, 2, 3))
    assert not composed.needs_shift(mean, var, EPS).any()
    want = torch.batch_norm(x, w, b, mean, var, False, 0.0, EPS, False)
    assert torch.equal(cpu.normalize(x, mean, var, w, b, EPS, (0, 2, 3)), want)
    assert composed.needs_shift(torch.tensor([100.0, 1.0]), torch.tensor([1.0, 1.0]), EPS).tolist() == [True, False]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "channels_last"])
def test_half_eval_coefficients_in_float32(kernel, dtype, fmt):
    """A half layer in eval (half x, running stats, γ, β): within one rounding of the float64 answer.

    Computing a = γ/√(σ²+ε) and b = β − aμ in bf16 put the output up to ~0.06 off (issue 8).
    """
    g = torch.Generator().manual_seed(12)
    c = 6
    x = (50 + 2 * torch.randn(16, c, 5, 7, generator=g)).to(dtype)
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    mean = (50 + torch.randn(c, generator=g)).to(dtype)
    var = (4 + torch.rand(c, generator=g)).to(dtype)
    w, b = (1 + torch.rand(c, generator=g)).to(dtype), torch.randn(c, generator=g).to(dtype)
    y = KERNELS[kernel].normalize(x, mean, var, w, b, EPS, (0, 2, 3))
    assert y.dtype == dtype
    v = lambda t: t.double().view(1, c, 1, 1)  # noqa: E731
    y64 = (x.double() - v(mean)) / torch.sqrt(v(var) + EPS) * v(w) + v(b)
    ulp = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11  # one rounding of the output (half an ulp)
    err = (y.double() - y64).abs()
    assert (err <= ulp * y64.abs() + 1e-3).all(), err.max()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name, shape, axes, fmt", CASES[:5] + CASES[6:7], ids=[c[0] for c in CASES[:5] + CASES[6:7]])
def test_fused_relu_contract(kernel, name, shape, axes, fmt):
    """forward(..., relu=True) = max(BN(x), 0); backward(..., y=y) = gradients through the ReLU (float64)."""
    k = KERNELS[kernel]
    x = _input(shape, fmt)
    w, b = _params(_feature_shape(shape, axes))
    y, mean, var = k.forward(x, w, b, EPS, axes, relu=True)
    x64 = x.double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y64 = torch.relu(bn64(x64, w64, b64, axes)[0])
    torch.testing.assert_close(y.double(), y64.detach(), rtol=2e-5, atol=2e-5)
    assert (y >= 0).all()
    dy = _input(shape, fmt, seed=13, offset=0.0)
    y64.backward(dy.double())
    dx, dw, db = k.backward(dy, x, mean, var, w, EPS, axes, (True, True, True), y=y)
    for got, want in ((dx, x64.grad), (dw, w64.grad), (db, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    # positional calls without the new arguments still mean "no ReLU"
    plain = k.backward(dy, x, mean, var, w, EPS, axes, (True, True, True))
    assert not torch.allclose(plain[0], dx)


@pytest.mark.parametrize("fmt, dtype", [(None, torch.float32), (CL, torch.bfloat16)], ids=["nchw", "cl_bf16"])
def test_reused_scratch_in_and_out_of_inference_mode(fmt, dtype):
    """The per-thread scratch of the statistics is reused across calls: first made under
    torch.inference_mode, then used outside it (and back), with the same statistics each time."""
    x = _input((64, 8, 32, 32), fmt, dtype, seed=14)  # several chunks
    x2 = _input((64, 8, 32, 32), fmt, dtype, seed=15)
    _, mean64, var64 = bn64(x, None, None, (0, 2, 3))
    with torch.inference_mode():
        first = cpu.forward(x, None, None, EPS, (0, 2, 3))
    other = cpu.forward(x2, None, None, EPS, (0, 2, 3))  # overwrites the scratch
    second = cpu.forward(x, None, None, EPS, (0, 2, 3))
    with torch.inference_mode():
        third = cpu.batch_stats(x, (0, 2, 3))
    for got in (first[1:], second[1:], third):
        torch.testing.assert_close(got[0].double(), mean64, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1].double(), var64, rtol=1e-5, atol=1e-6)
    assert not torch.equal(other[1], second[1])
    assert torch.equal(first[0], second[0])


def test_cuda_family_choice_is_validated_and_cpu_unaffected():
    """use_cuda_family refuses unknown names (state unchanged); CPU tensors always get kernels.cpu."""
    with pytest.raises(ValueError, match="unknown kernel family 'fast'"):
        kernels.use_cuda_family("fast")
    assert kernels._cuda_choice == "triton"
    kernels.use_cuda_family("composed")
    try:
        assert kernels.select(torch.zeros(2, 3)) is native
        assert kernels.select(torch.zeros(2, 3, device="meta")) is composed
    finally:
        kernels.use_cuda_family("triton")


def test_composed_normalize_traces_without_a_data_dependent_branch():
    """Under torch.export and a fullgraph torch.compile the shift is chosen with torch.where, not bool():
    both the ordinary and the large-offset channel give the eager answer."""
    x = torch.randn(4, 3, 5, 5) + torch.tensor([0.0, 1e6, 2.0]).view(1, 3, 1, 1)
    mean, var = torch.tensor([0.0, 1e6, 2.0]), torch.tensor([1.0, 0.5, 4.0])

    class Normalize(torch.nn.Module):
        def forward(self, x):
            return composed.normalize(x, mean, var, None, None, EPS, (0, 2, 3))

    want = Normalize()(x)
    assert torch.equal(torch.export.export(Normalize(), (x,)).module()(x), want)
    compiled = torch.compile(Normalize(), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), want)


@pytest.mark.parametrize(
    "dtype, offset",
    [(d, o) for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for o in (1.5, 3e4, 1e6)
     if torch.finfo(d).max > 2 * o],  # 1e6 is not a float16
)  # fmt: skip
@pytest.mark.parametrize("fmt, shape", [(None, (4, 3, 5, 6)), (CL, (4, 3, 5, 6)), (None, (5, 4, 7)),
                                        (CL3, (3, 4, 2, 3, 4)), (None, (16, 4, 16, 16))])  # fmt: skip
def test_small_inputs_take_one_var_mean_as_accurate_as_float64(monkeypatch, dtype, fmt, shape, offset):
    """Up to _SMALL_NUMEL values the statistics are one var_mean; they match float64 as the chunked path does."""
    monkeypatch.setattr(cpu, "_SMALL_NUMEL", 1 << 14)  # the shipped value (the module's fixture sets 0)
    x = _input(shape, fmt, torch.float64, seed=21, offset=offset).to(dtype)
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    assert x.numel() <= cpu._SMALL_NUMEL and cpu.fast_path(x, tuple(a for a in range(x.dim()) if a != 1))
    axes = tuple(a for a in range(x.dim()) if a != 1)
    _, mean64, var64 = bn64(x.double(), None, None, axes)  # the same (rounded) values, in float64
    small = cpu.batch_stats(x, axes)
    monkeypatch.setattr(cpu, "_SMALL_NUMEL", 0)
    chunked = cpu.batch_stats(x, axes)
    for got in (small, chunked):
        assert got[0].dtype == got[1].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        torch.testing.assert_close(got[0].double(), mean64, rtol=1e-7, atol=1e-6)
        torch.testing.assert_close(got[1].double(), var64, rtol=1e-5, atol=1e-9)


# ---- the written contract and the one chain per device (issue 15, item 2) -------------------------------------


def test_every_family_satisfies_the_contract_with_its_argument_order():
    """Each family has covers/batch_stats/normalize/forward/backward with the Protocol's parameter names."""
    import inspect

    from bnlab.kernels import contract

    proto = contract.KernelFamily
    for fam in (composed, cpu, native, kernels.cuda):
        assert isinstance(fam, proto), fam.NAME
        for op in contract.OPS:
            want = [p for p in inspect.signature(getattr(proto, op)).parameters if p != "self"]
            assert list(inspect.signature(getattr(fam, op)).parameters) == want, (fam.NAME, op)


def test_select_walks_one_chain_per_device():
    """native → cpu → composed on the CPU, triton → cuda → composed on CUDA; the first family that covers a call
    runs."""
    x = _input((4, 3, 5, 6), None)
    assert kernels.chain("cpu") == (native, cpu, composed)
    assert kernels.chain("meta") == (composed,)
    assert [f.NAME for f in kernels.chain("cuda")][-2:] == ["cuda", "composed"]
    w, b = _params((3,))
    for op, tensors in (("batch_stats", ()), ("forward", (w, b))):
        assert kernels.select(x, (0, 2, 3), *tensors, op=op) is CPU_HEAD
        assert kernels.select(x, (0,), *tensors, op=op) is composed  # per-activation: not covered by cpu
    wg = w.clone().requires_grad_()
    assert kernels.select(x, (0, 2, 3), wg, b, op="forward") is composed  # autograd records: composed
    with torch.no_grad():
        assert kernels.select(x, (0, 2, 3), wg, b, op="forward") is CPU_HEAD
    mean, var = composed.batch_stats(x, (0, 2, 3))
    assert kernels.select(x, (0, 2, 3), mean, var, w, b, op="normalize") is CPU_HEAD
    assert kernels.select(x, (0, 2, 3), mean.double(), var, w, b, op="normalize") is composed  # dtypes torch refuses
    assert kernels.select(x.half(), (0, 2, 3), op="batch_stats") is cpu  # fp16: native declines, cpu covers
    with pytest.raises(ValueError, match="unknown kernel operation"):
        kernels.select(x, (0, 2, 3), op="fold")


@pytest.mark.parametrize("name, shape, axes, fmt", [c for c in CASES if c[0] not in ROUTED])
def test_cpu_covers_nothing_it_cannot_compute(name, shape, axes, fmt):
    """Uncovered calls (per-activation, other axes, strided) are refused by covers() for every operation."""
    x = _input(shape, fmt)
    w, b = _params(_feature_shape(shape, axes))
    mean, var = composed.batch_stats(x, axes)
    calls = {"batch_stats": (), "forward": (w, b), "normalize": (mean, var, w, b),
             "backward": (x, mean, var, w, None)}  # fmt: skip
    for op, tensors in calls.items():
        assert not cpu.covers(x, axes, *tensors, op=op), (name, op)
        if name != "nc":  # (N, C): channels_last rows of C values, computed by native
            assert not native.covers(x, axes, *tensors, op=op), (name, op)


def test_global_sums_backward_matches_local_and_float64():
    """backward(..., sums=(Σdy, Σdy·x̂, m)) — synchronized BN's form — equals the local closed form when the sums
    are this tensor's own, on every family, and equals float64 autograd over a batch split in two."""
    x = _input((6, 3, 5, 4), None)
    w, _ = _params((3,))
    dy = torch.randn_like(x)
    mean, var = composed.batch_stats(x, (0, 2, 3))
    _, sdx, sdy = composed.backward(dy, x, mean, var, torch.ones_like(w), EPS, (0, 2, 3), (False, True, True))
    want = composed.backward(dy, x, mean, var, w, EPS, (0, 2, 3))[0]
    for fam in (composed, cpu, native):
        got = fam.backward(dy, x, mean, var, w, EPS, (0, 2, 3), (True, False, False), sums=(sdy, sdx, 6 * 20))[0]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # two shards: each shard's dx with the global sums equals the whole batch's dx (float64 autograd)
    xd = x.double().requires_grad_()
    y64, _, _ = bn64(xd, w, None, (0, 2, 3))
    (y64 * dy.double()).sum().backward()
    parts = []
    for sl in (slice(0, 2), slice(2, 6)):
        xs, dys = x[sl], dy[sl]
        parts.append(composed.backward(dys, xs, mean, var, torch.ones_like(w), EPS, (0, 2, 3), (False, True, True)))
    sums = (parts[0][2] + parts[1][2], parts[0][1] + parts[1][1], 6 * 20)
    for fam in (composed, cpu, native):
        dx = torch.cat([fam.backward(dy[sl], x[sl], mean, var, w, EPS, (0, 2, 3), (True, False, False), sums=sums)[0]
                        for sl in (slice(0, 2), slice(2, 6))])  # fmt: skip
        torch.testing.assert_close(dx.double(), xd.grad, rtol=1e-4, atol=1e-6)


def test_moments_corrected_two_pass_and_group_merge():
    """moments.moments is the corrected two-pass (float32 data at 1e6 + N(0, 1) keeps σ²), and merge_groups
    equals the pairwise merge of the same groups."""
    from bnlab import moments as mo

    g = torch.Generator().manual_seed(3)
    x64 = torch.randn(4096, 3, generator=g, dtype=torch.float64) + 1e6
    x = x64.float()
    got = mo.moments(x, axes=(0,))
    want = x.double().var(0, unbiased=False)
    torch.testing.assert_close(got.variance.double(), want, rtol=2e-3, atol=0)
    # correct(): a mean that is off by 0.5 on x = [1, 3] (M2 about it = 2.5, Σd = 1) comes back exact
    fixed = mo.correct(mo.Moments(2, np.float64(1.5), np.float64(2.5)), np.float64(1.0))
    assert (fixed.mean, fixed.m2) == (2.0, 2.0)
    groups = x64.reshape(8, 512, 3)
    parts = [mo.moments(gr, axes=(0,)) for gr in groups]
    pairwise = mo.merge_all(parts)
    k = mo.merge_groups(torch.stack([p.mean for p in parts]), torch.stack([p.m2 for p in parts]), 512)
    assert k.count == pairwise.count == 4096
    torch.testing.assert_close(k.mean, pairwise.mean, rtol=1e-15, atol=0)
    torch.testing.assert_close(k.m2, pairwise.m2, rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_shifted_batch_stats_match_float64_with_large_offsets_and_a_far_shift(dtype):
    """moments.shifted_batch_stats (the compiled door's statistics on the CPU: two shifted sums in float64,
    corrected) equals the float64 statistics to the statistics dtype's rounding, where float32 sums (or no
    shift) would not: an offset of 1e6·σ, and a first value — the shift — 1e4·σ off the mean."""
    from bnlab import moments as mo

    g = torch.Generator().manual_seed(11)
    x = torch.randn(64, 3, 8, 8, generator=g, dtype=torch.float64)
    x[:, 1] += 1e6 if dtype != torch.float16 else 1e3  # |μ|/σ large (float16 holds about 3 digits)
    x[0, 2, 0, 0] = 1e4 if dtype != torch.float16 else 1e3  # channel 2's shift K, far off its mean
    x = x.to(dtype)
    for axes in ((0, 2, 3), (0,)):
        mean, var = mo.shifted_batch_stats(x, axes)
        rows = x.double().movedim(axes, tuple(range(len(axes)))).flatten(0, len(axes) - 1).flatten(1).T.tolist()
        exact_mean = [math.fsum(r) / len(r) for r in rows]  # (correctly rounded sums: the oracle)
        exact_var = [math.fsum((v - m) ** 2 for v in r) / len(r) for r, m in zip(rows, exact_mean, strict=True)]
        want_mean = torch.tensor(exact_mean, dtype=torch.float64).reshape(mean.shape)
        want_var = torch.tensor(exact_var, dtype=torch.float64).reshape(var.shape)
        sdt = torch.float64 if dtype == torch.float64 else torch.float32
        assert mean.dtype == var.dtype == sdt
        # float32/float16 data: one float32 rounding of the exact value; float64 data: ε_64·(1 + (μ − K)²/σ²)
        # with the far first value (about 4e3·ε_64)
        tol = 1e-11 if dtype == torch.float64 else 2e-7
        torch.testing.assert_close(var.double(), want_var, rtol=tol, atol=0)
        torch.testing.assert_close(mean.double(), want_mean, rtol=tol, atol=tol * want_var.sqrt().max().item())
    xs = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)  # stock ops: differentiable
    assert torch.autograd.gradcheck(lambda t: mo.shifted_batch_stats(t, (0, 2, 3)), (xs,))


def test_cpu_shift_decision_is_the_definitions():
    """The CPU family's cheap shift test (squared, 3 ops) decides as :func:`composed.needs_shift` does, at the
    threshold (|μ|·(σ²+ε)^(-1/2) = SHIFT_RATIO ± 1%), far from it, with ε dominating, and with NaN/inf."""
    r = composed.SHIFT_RATIO
    cases = []
    for sigma2 in (1.0, 1e-8, 4e6):
        for ratio in (0.0, 0.5 * r, 0.99 * r, 1.01 * r, 3 * r, 1e4):
            mean = ratio * math.sqrt(sigma2 + EPS)
            cases += [(mean, sigma2), (-mean, sigma2)]
    cases += [(float("nan"), 1.0), (1.0, float("nan")), (float("inf"), 1.0), (1.0, float("inf")), (1e6, 0.0)]
    for dtype in (torch.float32, torch.float64):
        for mean, var in cases:
            m = torch.tensor([0.5, mean], dtype=dtype)
            v = torch.tensor([1.0, var], dtype=dtype)
            want = bool(composed.needs_shift(m, v, EPS).any())
            assert cpu._shift_needed(m, v, EPS) == want, (dtype, mean, var)
        # a NaN channel next to one that needs the shift: still shifted
        m = torch.tensor([float("nan"), 1e6, 0.0], dtype=dtype)
        assert cpu._shift_needed(m, torch.tensor([1.0, 1.0, float("nan")], dtype=dtype), EPS)
    # and where it says so, the CPU eval output is the shifted form's (exactly zero on a constant channel)
    x = torch.full((4, 2, 3, 3), 1e6)
    y = cpu.normalize(x, torch.full((2,), 1e6), torch.zeros(2), None, None, EPS, (0, 2, 3))
    assert torch.equal(y, torch.zeros_like(x))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [None, CL], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(10, 2, 1000, 1000), (2442, 2, 64, 64)], ids=["long_rows", "rows_4096"])
def test_statistics_within_1e6_of_float64_at_1e7_values_and_offset_1e4(fmt, shape):
    """Issue 19's accuracy bar: N·H·W = 1e7 values per channel, |μ|/σ = 1e4 (and an ordinary channel), both
    layouts, rows of 1e6 and of 4096 values (cpu._NORM_ROW): the CPU family's μ_B and σ²_B within 1e-6
    relative of float64 on the same float32 values."""
    g = torch.Generator().manual_seed(19)
    x = torch.randn(shape, generator=g)
    x[:, 0].mul_(3.0).add_(3e4)  # |μ|/σ = 1e4
    x[:, 1].mul_(2.0).add_(0.5)
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    var64, mean64 = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    for mean, var in (cpu.batch_stats(x, (0, 2, 3)), cpu.forward(x, None, None, EPS, (0, 2, 3))[1:]):
        assert mean.dtype == var.dtype == torch.float32
        assert ((mean.double() - mean64).abs() / mean64.abs()).max() < 1e-6
        assert ((var.double() - var64).abs() / var64).max() < 1e-6, var.double() / var64 - 1
