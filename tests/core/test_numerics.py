"""Numerical edge cases of the layers, the reference and the family (issue 20): the fused ReLU's double
backward and its eval mode through every door, non-default eps/momentum/affine/track_running_stats on every
family member, the cumulative-average momentum in float64, lazy layers first called in eval, negative
variances in the reference, and inputs whose variance overflows float32 / float16 if squared naively."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import bnlab.nn as bnn
from bnlab import reference as ref
from bnlab.nn import functional as F

F64 = torch.float64


# -- fused BN + ReLU: the create_graph gradient and the second derivative --------------------------------------


def _bn_relu_torch(x, w, b, axes):
    """BN then ReLU in torch's own ops (per-activation: torch BN on the flattened features)."""
    if axes == (0,):
        y = torch.nn.functional.batch_norm(x.flatten(1), None, None, w.flatten(), b.flatten(), training=True)
        return torch.relu(y.view_as(x))
    return torch.relu(torch.nn.functional.batch_norm(x, None, None, w, b, training=True))


@pytest.mark.parametrize("axes", [None, (0,)])
def test_fused_relu_create_graph_gradient_and_hessian_vector_product(axes):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 5, dtype=F64, generator=g)
    fshape = (3,) if axes is None else (3, 4, 5)
    w = (torch.rand(fshape, dtype=F64, generator=g) + 0.5).requires_grad_()
    b = (torch.rand(fshape, dtype=F64, generator=g) - 0.5).requires_grad_()
    dy, v = torch.randn(x.shape, dtype=F64, generator=g), torch.randn(x.shape, dtype=F64, generator=g)

    def fused(x):
        return F.batch_norm(x, None, None, w, b, training=True, axes=axes, activation="relu")

    xa = x.clone().requires_grad_()
    y = fused(xa)
    assert (y == 0).float().mean() > 0.2  # the mask matters: many outputs are cut by the ReLU
    plain = torch.autograd.grad(y, (xa, w, b), dy, retain_graph=True)
    graph = torch.autograd.grad(y, (xa, w, b), dy, create_graph=True)
    xt = x.clone().requires_grad_()
    theirs = torch.autograd.grad(_bn_relu_torch(xt, w, b, axes or ()), (xt, w, b), dy)
    for ours_plain, ours_graph, t in zip(plain, graph, theirs, strict=True):
        torch.testing.assert_close(ours_graph, ours_plain, atol=1e-12, rtol=0)
        torch.testing.assert_close(ours_graph, t, atol=1e-12, rtol=0)
    # H·v of ℓ = Σ dy·relu(BN(x)) against central differences of torch's first derivative (float64)
    (hvp,) = torch.autograd.grad(graph[0], xa, v)

    def grad_torch(x):
        x = x.clone().requires_grad_()
        return torch.autograd.grad(_bn_relu_torch(x, w, b, axes or ()), x, dy)[0]

    h = 1e-6

    def pre_activation(x):
        if axes == (0,):
            return torch.nn.functional.batch_norm(x.flatten(1), None, None, w.flatten(), b.flatten(), training=True)
        return torch.nn.functional.batch_norm(x, None, None, w, b, training=True)

    # no output crosses the ReLU's kink between x − h·v and x + h·v: the difference quotient is smooth there
    with torch.no_grad():
        assert torch.equal(pre_activation(x + h * v) > 0, pre_activation(x - h * v) > 0)
    numerical = (grad_torch(x + h * v) - grad_torch(x - h * v)) / (2 * h)
    torch.testing.assert_close(hvp, numerical, atol=1e-6, rtol=1e-6)


# -- fused ReLU in eval mode, through every door ---------------------------------------------------------------


def _eval_relu_pair():
    torch.manual_seed(1)
    ours = bnn.BatchNorm2d(3, activation="relu", dtype=F64)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-1.0, -0.2)
        ours.running_mean.uniform_(-0.5, 0.5), ours.running_var.uniform_(0.5, 2.0)
    theirs = torch.nn.BatchNorm2d(3, dtype=F64)
    theirs.load_state_dict(ours.state_dict())
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize(
    "door", ["eager", "eager-no-grad", pytest.param("compile", marks=pytest.mark.slow), "export", "vmap"]
)
def test_fused_relu_in_eval_through_every_door(door):
    ours, theirs = _eval_relu_pair()
    x = torch.randn(4, 6, 3, 5, 5, dtype=F64)  # (vmapped, N, C, H, W)
    pre = torch.stack([theirs(xi) for xi in x])
    assert (pre < -0.2).float().mean() > 0.2  # a missing ReLU would be visible
    want = torch.relu(pre)
    if door == "eager":
        got = torch.stack([ours(xi) for xi in x])
        assert got.requires_grad
    elif door == "eager-no-grad":  # nothing to differentiate: the kernel alone, no autograd node
        with torch.no_grad():
            got = torch.stack([ours(xi) for xi in x])
    elif door == "compile":
        torch._dynamo.reset()
        compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
        got = torch.stack([compiled(xi) for xi in x])
    elif door == "export":
        exported = torch.export.export(ours, (x[0],)).module()
        got = torch.stack([exported(xi) for xi in x])
    else:
        got = torch.vmap(ours)(x)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


@pytest.mark.slow
def test_fused_relu_in_eval_under_inductor():
    ours, theirs = _eval_relu_pair()
    x = torch.randn(6, 3, 5, 5, dtype=F64)
    torch._dynamo.reset()
    got = torch.compile(ours, fullgraph=True)(x)
    torch.testing.assert_close(got, torch.relu(theirs(x)), atol=1e-12, rtol=0)


# -- every family member with non-default eps, momentum, affine and track_running_stats ------------------------

# (name, ours, theirs, input shape); eps = 0.5 is as large as the inputs' variance, so ignoring it shows
MEMBERS = {
    "BatchNorm1d": (bnn.BatchNorm1d, torch.nn.BatchNorm1d, (8, 4, 5)),
    "BatchNorm2d": (bnn.BatchNorm2d, torch.nn.BatchNorm2d, (6, 4, 3, 5)),
    "BatchNorm3d": (bnn.BatchNorm3d, torch.nn.BatchNorm3d, (4, 4, 2, 3, 3)),
    "SyncBatchNorm": (bnn.SyncBatchNorm, torch.nn.BatchNorm2d, (6, 4, 3, 5)),  # one process: local BN
    "InstanceNorm1d": (bnn.InstanceNorm1d, torch.nn.InstanceNorm1d, (3, 4, 7)),
    "InstanceNorm2d": (bnn.InstanceNorm2d, torch.nn.InstanceNorm2d, (3, 4, 3, 5)),
    "InstanceNorm3d": (bnn.InstanceNorm3d, torch.nn.InstanceNorm3d, (3, 4, 2, 3, 3)),
    "GroupNorm": (lambda **kw: bnn.GroupNorm(2, 4, **kw), lambda **kw: torch.nn.GroupNorm(2, 4, **kw), (3, 4, 3, 5)),
    "LayerNorm": (lambda **kw: bnn.LayerNorm((4, 3, 5), **kw), lambda **kw: torch.nn.LayerNorm((4, 3, 5), **kw),
                  (3, 4, 3, 5)),
}  # fmt: skip


def _kwargs(name, affine, track):
    if name == "GroupNorm":
        return {"eps": 0.5, "affine": affine}
    if name == "LayerNorm":
        return {"eps": 0.5, "elementwise_affine": affine}
    return {"eps": 0.5, "momentum": 0.3, "affine": affine, "track_running_stats": track, "num_features": 4}


SETTINGS = [
    (name, affine, track)
    for name in MEMBERS
    for affine in (True, False)
    for track in ((True, False) if name not in ("GroupNorm", "LayerNorm") else (True,))  # no running statistics
]


@pytest.mark.parametrize("name, affine, track", SETTINGS)
def test_every_member_with_non_default_settings_matches_torch(name, affine, track):
    ours_cls, theirs_cls, shape = MEMBERS[name]
    kw = _kwargs(name, affine, track)
    torch.manual_seed(2)
    theirs = theirs_cls(**kw).double()
    if affine:
        with torch.no_grad():
            for p in theirs.parameters():
                p.uniform_(0.5, 1.5)
    ours = ours_cls(**kw).double()
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        for mode in ("train", "eval") if step == 2 else ("train",):
            theirs.train(mode == "train"), ours.train(mode == "train")
            x = torch.randn(shape, dtype=F64, generator=g) * 0.7 + step  # σ² ≈ 0.5 = eps
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya, yb = theirs(xa), ours(xb)
            torch.testing.assert_close(yb, ya, atol=1e-10, rtol=1e-10, msg=f"{mode} step {step}")
            dy = torch.randn(shape, dtype=F64, generator=g)
            ya.backward(dy), yb.backward(dy)
            torch.testing.assert_close(xb.grad, xa.grad, atol=1e-10, rtol=1e-10)
    for (n, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, msg=n)
    sa, sb = theirs.state_dict(), ours.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], atol=1e-12, rtol=1e-12, msg=k)


# -- momentum=None: the cumulative average, exactly ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cumulative_average_momentum_is_exact(dtype):
    theirs = torch.nn.BatchNorm2d(3, momentum=None, dtype=dtype)
    ours = bnn.BatchNorm2d(3, momentum=None, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    xs = [(torch.randn(4, 3, 5, 5, dtype=F64, generator=g) * 3 + 5).to(dtype) for _ in range(5)]
    for x in xs:
        theirs(x), ours(x)
    x64 = torch.stack([x.double() for x in xs])  # (batch, N, C, H, W)
    exact_mean = x64.mean(dim=(1, 3, 4)).mean(0)
    exact_var = x64.var(dim=(1, 3, 4)).mean(0)  # unbiased per batch, then averaged (Alg. 2)
    tol = 2e-15 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(ours.running_mean.double(), exact_mean, atol=0, rtol=tol)
    torch.testing.assert_close(ours.running_var.double(), exact_var, atol=0, rtol=tol)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, atol=0, rtol=tol)
    torch.testing.assert_close(ours.running_var, theirs.running_var, atol=0, rtol=tol)
    assert int(ours.num_batches_tracked) == 5


# -- a lazy per-activation layer first called in eval mode ----------------------------------------------------


@pytest.mark.parametrize("n", [1, 4])
def test_lazy_layer_first_called_in_eval_uses_the_initial_running_statistics(n):
    ours = bnn.BatchNorm2d(3, per="activation").eval()
    x = torch.randn(n, 3, 4, 5)
    y = ours(x)
    assert tuple(ours.weight.shape) == tuple(ours.running_mean.shape) == (3, 4, 5)
    assert int(ours.num_batches_tracked) == 0 and bool((ours.running_mean == 0).all())
    # torch's lazy layer in eval: running statistics 0 and 1, γ = 1, β = 0
    theirs = torch.nn.LazyBatchNorm1d().eval()
    torch.testing.assert_close(y, theirs(x.flatten(1)).view_as(x))
    ours.train()
    ours(torch.randn(4, 3, 4, 5))  # and trains on afterwards
    assert int(ours.num_batches_tracked) == 1


# -- the reference refuses negative running variances ---------------------------------------------------------


def test_reference_inference_refuses_a_negative_variance():
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    one, zero = np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="negative.*running variance"):
        ref.inference(x, one, zero, zero, np.array([1.0, -0.5, 1.0], np.float32))
    y = ref.inference(x, one, zero, zero, np.array([1.0, 0.0, 1.0], np.float32))  # zero is a variance
    assert np.isfinite(y).all()


# -- spreads whose squares overflow float32 (or float16) -------------------------------------------------------

# inputs of 64·32·32 values per channel take the CPU kernel's chunked row moments; (8, 3, 6, 6) the small path


def _expected(x, axes, scale):
    """BN of x/scale in float64 (BN is scale-invariant up to ε, which is negligible at these spreads)."""
    y, _, _ = _bn64(x.double() / scale, axes)
    return y


def _bn64(x, axes):
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5), mean, var


DOORS = ["nchw", "channels_last", "small", "per_activation", "other_axes", "compile"]


def _run_door(door, x, **kw):
    if door == "nchw":
        return F.batch_norm(x, None, None, training=True, **kw), (0, 2, 3)
    if door == "channels_last":
        return F.batch_norm(x.to(memory_format=torch.channels_last), None, None, training=True, **kw), (0, 2, 3)
    if door == "small":  # (recorded by autograd: the door that may hand over to torch's own batch norm)
        small = x[:8, :, :6, :6].contiguous().requires_grad_()
        return F.batch_norm(small, None, None, training=True, **kw), (0, 2, 3)
    if door == "per_activation":
        return F.batch_norm(x, None, None, training=True, axes=(0,), **kw), (0,)
    if door == "other_axes":
        return F.batch_norm(x, None, None, training=True, axes=(0, 1, 3), **kw), (0, 1, 3)
    torch._dynamo.reset()
    fn = torch.compile(lambda t: F.batch_norm(t, None, None, training=True, **kw), backend="aot_eager", fullgraph=True)
    return fn(x), (0, 2, 3)


@pytest.mark.parametrize("door", DOORS)
def test_float32_spread_whose_sum_of_squares_overflows(door):
    std = 2e18  # σ² = 4e36 fits float32, Σ (x − μ)² over 65536 values (2.6e41) does not
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * std
    y, axes = _run_door(door, x)
    want = _expected(x[:8, :, :6, :6] if door == "small" else x, axes, std)
    torch.testing.assert_close(y.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("door", ["nchw", "channels_last"])
def test_float32_spread_whose_sum_of_squares_overflows_in_the_pure_family(door, monkeypatch):
    """The same spread where no C compiler built the native family (its float64 sums never overflow): the pure
    ``cpu`` family's float32 row sums of squares overflow, and its float64 rescue must give the same answer."""
    from bnlab.kernels import native

    monkeypatch.setitem(native._state, "lib", None)  # what BNLAB_NATIVE=0 or a missing compiler gives
    std = 2e18
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * std
    y, axes = _run_door(door, x)
    torch.testing.assert_close(y.double(), _expected(x, axes, std), atol=1e-4, rtol=1e-4)


def test_float32_spread_gradients_and_running_statistics():
    std = 2e18
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(6)) * std
    layer = bnn.BatchNorm2d(3)
    xa = x.clone().requires_grad_()
    y = layer(xa)
    dy = torch.randn_like(y)
    y.backward(dy)
    xs = (x.double() / std).requires_grad_()
    want, _, var = _bn64(xs, (0, 2, 3))
    want.backward(dy.double())
    torch.testing.assert_close(y.double(), want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xa.grad.double() * std, xs.grad, atol=1e-4, rtol=1e-4)  # d/dx = (1/s)·d/d(x/s)
    n = x.numel() // 3
    unbiased = var.flatten() * n / (n - 1) * std**2
    torch.testing.assert_close(layer.running_var.double(), 0.9 + 0.1 * unbiased, rtol=1e-4, atol=0)


def test_reference_spread_whose_sum_of_squares_overflows():
    std = 2e18
    x = (np.random.default_rng(7).normal(size=(64, 3, 32, 32)) * std).astype(np.float32)
    y, cache = ref.forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), axes=(0, 2, 3))
    want = _expected(torch.from_numpy(x), (0, 2, 3), std).numpy()
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(cache.sigma2_B.ravel(), x.astype(np.float64).var(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("door", [*DOORS, "module", "bf16", "group_norm", "layer_norm"])
def test_variance_beyond_float32_is_refused_and_changes_nothing(door):
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(8)) * 1e20  # σ² = 1e40 > 3.4e38
    if door in DOORS:
        with pytest.raises(ValueError, match="variance overflows torch.float32"):
            _run_door(door, x)
        return
    layer = {"module": bnn.BatchNorm2d(3), "bf16": bnn.BatchNorm2d(3), "group_norm": bnn.GroupNorm(3, 3),
             "layer_norm": bnn.LayerNorm((3, 32, 32))}[door]  # fmt: skip
    before = copy.deepcopy(layer.state_dict())
    with pytest.raises(ValueError, match="variance overflows torch.float32.*use float64"):
        layer(x.bfloat16() if door == "bf16" else x)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_reference_refuses_a_variance_beyond_float32_and_takes_float64():
    x = (np.random.default_rng(9).normal(size=(16, 3, 4, 4)) * 1e20).astype(np.float32)
    one, zero = np.ones(3, np.float32), np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="overflows float32.*float64"):
        ref.forward(x, one, zero, axes=(0, 2, 3))
    y, _ = ref.forward(x.astype(np.float64), one, zero, axes=(0, 2, 3))
    np.testing.assert_allclose(y, _expected(torch.from_numpy(x), (0, 2, 3), 1e20).numpy(), atol=1e-4)


def test_infinite_input_still_propagates_instead_of_raising():
    x = torch.randn(8, 3, 6, 6)
    x[0, 1, 0, 0] = float("inf")
    y = bnn.BatchNorm2d(3)(x)
    assert torch.isnan(y[:, 1]).all() and torch.isfinite(y[:, [0, 2]]).all()


HALF_CASES = [
    pytest.param(torch.float16, 300.0, id="fp16-300"),
    pytest.param(torch.float16, 8e3, id="fp16-8e3"),
    pytest.param(torch.bfloat16, 300.0, id="bf16-300"),
    pytest.param(torch.bfloat16, 1e18, id="bf16-1e18"),
]


@pytest.mark.parametrize("dtype, std", HALF_CASES)
@pytest.mark.parametrize("door", ["nchw", "channels_last", "small", "per_activation", "other_axes", "group_norm"])
def test_half_input_statistics_are_computed_in_float32(dtype, std, door):
    # fp16 holds up to 65504: σ² of a std-300 input (9e4) overflows if computed in fp16; a bf16 input of std
    # 1e18 has σ² = 1e36, within float32's range: statistics in float32 or wider get both right
    x = (torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(10)) * std).clamp(-6e4 if dtype ==
         torch.float16 else -1e30, 6e4 if dtype == torch.float16 else 1e30).to(dtype)  # fmt: skip
    if door == "group_norm":
        y = bnn.GroupNorm(3, 3)(x)  # one group per channel: statistics per sample and channel
        want = _bn64(x.double(), (2, 3))[0]
    else:
        y, axes = _run_door(door, x)
        xin = x[:8, :, :6, :6] if door == "small" else x
        want = _bn64(xin.double(), axes)[0]
    assert y.dtype == dtype
    tol = 1e-2 if dtype == torch.float16 else 2e-2
    torch.testing.assert_close(y.double(), want, atol=tol, rtol=tol)
