"""bnlab.nn against torch.nn.BatchNorm*d (the framework users trust) and the NumPy reference."""

import copy

import numpy as np
import pytest
import torch

import bnlab.nn
from bnlab import reference as ref
from bnlab.nn import functional as F

SHAPES = {1: [(8, 4), (6, 4, 7)], 2: [(5, 4, 6, 7)], 3: [(3, 4, 3, 4, 5)]}
PAIRS = {
    1: (torch.nn.BatchNorm1d, bnlab.nn.BatchNorm1d),
    2: (torch.nn.BatchNorm2d, bnlab.nn.BatchNorm2d),
    3: (torch.nn.BatchNorm3d, bnlab.nn.BatchNorm3d),
}
CASES = [(d, s) for d, shapes in SHAPES.items() for s in shapes]


def _pair(d, **kw):
    torch.manual_seed(0)
    theirs = PAIRS[d][0](4, **kw)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
    ours = PAIRS[d][1](4, **kw)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def _close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("d, shape", CASES)
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_matches_torch_over_steps(d, shape, momentum, affine, track):
    theirs, ours = _pair(d, momentum=momentum, affine=affine, track_running_stats=track)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        x = torch.randn(shape, generator=g) * (1 + step) + step
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = theirs(xa), ours(xb)
        _close(yb, ya)
        dy = torch.randn(shape, generator=g)
        ya.backward(dy)
        yb.backward(dy)
        _close(xb.grad, xa.grad)
        if affine:
            _close(ours.weight.grad, theirs.weight.grad, 1e-4)
            _close(ours.bias.grad, theirs.bias.grad, 1e-4)
    sa, sb = theirs.state_dict(), ours.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        _close(sb[k].float(), sa[k].float())
    theirs.eval(), ours.eval()
    x = torch.randn(shape, generator=g)
    _close(ours(x), theirs(x))


def test_state_dict_loads_both_ways():
    theirs, ours = _pair(2)
    ours(torch.randn(4, 4, 3, 3))
    back = torch.nn.BatchNorm2d(4)
    back.load_state_dict(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    assert int(ours.num_batches_tracked) == 1


def test_old_state_dict_without_num_batches_tracked():
    ours = bnlab.nn.BatchNorm2d(4)
    sd = torch.nn.BatchNorm2d(4).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    ours.load_state_dict(sd)  # like torch: version-1 dicts had no counter
    assert int(ours.num_batches_tracked) == 0


@pytest.mark.parametrize("shape, axes", [((3, 2, 3, 2), (0, 2, 3)), ((4, 2, 3), (0,)), ((3, 2, 2, 2), (0, 1, 3))])
def test_gradcheck_and_gradgradcheck(shape, axes):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    fshape = tuple(n for i, n in enumerate(shape) if i not in axes)
    w = torch.randn(fshape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(fshape, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, axes=axes)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("per", ["channel", "activation"])
def test_matches_reference(per):
    rng = np.random.default_rng(0)
    x = rng.normal(1, 2, (6, 3, 4, 5))
    axes = (0, 2, 3) if per == "channel" else (0,)
    fshape = (3,) if per == "channel" else (3, 4, 5)
    gamma, beta = rng.normal(size=fshape), rng.normal(size=fshape)
    bn = bnlab.nn.BatchNorm2d(3, per=per, spatial_size=None if per == "channel" else (4, 5), dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    xt = torch.from_numpy(x).requires_grad_()
    y = bn(xt)
    y_ref, cache = ref.forward(x, gamma, beta, axes=axes)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, atol=1e-12)
    dy = rng.normal(size=x.shape)
    y.backward(torch.from_numpy(dy))
    dx, dgamma, dbeta = ref.backward(dy, cache)
    np.testing.assert_allclose(xt.grad.numpy(), dx, atol=1e-10)
    np.testing.assert_allclose(bn.weight.grad.numpy(), dgamma, atol=1e-10)
    np.testing.assert_allclose(bn.bias.grad.numpy(), dbeta, atol=1e-10)
    # running statistics: (1 − 0.1)·init + 0.1·batch, unbiased variance
    m = cache.m
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * cache.mu_B.squeeze(axis=axes), atol=1e-12)
    np.testing.assert_allclose(
        bn.running_var.numpy(), 0.9 + 0.1 * cache.sigma2_B.squeeze(axis=axes) * m / (m - 1), atol=1e-12
    )
    bn.eval()
    y_eval = bn(xt).detach().numpy()
    y_ref = ref.inference(x, gamma, beta, bn.running_mean.numpy(), bn.running_var.numpy(), axes=axes)
    np.testing.assert_allclose(y_eval, y_ref, atol=1e-12)


def test_per_activation_lazy_shapes_and_state_dict():
    bn = bnlab.nn.BatchNorm2d(3, per="activation")
    x = torch.randn(5, 3, 4, 6)
    bn(x)
    assert bn.weight.shape == bn.running_mean.shape == (3, 4, 6)
    assert bn.spatial_size == (4, 6)
    fresh = bnlab.nn.BatchNorm2d(3, per="activation")
    fresh.load_state_dict(bn.state_dict())  # a lazy layer takes its shapes from the checkpoint
    bn.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), bn(x))
    with pytest.raises(ValueError, match="fixed input size"):
        bn(torch.randn(5, 3, 4, 5))


def test_per_activation_equals_torch_batchnorm1d_on_flattened_features():
    """Per-activation BN on (N, C, H, W) is BatchNorm1d over the N samples of C·H·W features."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    ours = bnlab.nn.BatchNorm2d(3, per="activation", spatial_size=(4, 4))
    theirs = torch.nn.BatchNorm1d(48)
    _close(ours(x).flatten(1), theirs(x.flatten(1)))
    _close(ours.running_var.flatten(), theirs.running_var)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_use_float32_statistics(dtype):
    torch.manual_seed(0)
    x = (torch.randn(8, 4, 5, 5) * 3 + 100).to(dtype)
    bn = bnlab.nn.BatchNorm2d(4)
    y = bn(x.requires_grad_())
    assert y.dtype == dtype and bn.running_mean.dtype == torch.float32 and bn.weight.dtype == torch.float32
    expected = torch.nn.functional.batch_norm(x.float(), None, None, training=True)
    tol = 1e-2 if dtype == torch.float16 else 5e-2
    torch.testing.assert_close(y.float(), expected, atol=tol, rtol=tol)
    torch.testing.assert_close(bn.running_mean, 0.1 * x.float().mean((0, 2, 3)), atol=1e-3, rtol=1e-5)
    y.float().sum().backward()
    assert x.grad.dtype == dtype and bn.weight.grad.dtype == torch.float32


def test_channels_last_keeps_memory_format():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 5, 6)
    xl = x.to(memory_format=torch.channels_last).requires_grad_()
    ours, theirs = bnlab.nn.BatchNorm2d(8), torch.nn.BatchNorm2d(8)
    y = ours(xl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    xc = x.clone().requires_grad_()
    _close(y, theirs(xc))
    dy = torch.randn_like(x)
    y.backward(dy.to(memory_format=torch.channels_last))
    theirs(xc).backward(dy)
    _close(xl.grad, xc.grad)


def test_float32_statistics_stable_with_large_offset():
    torch.manual_seed(0)
    x64 = 1e6 + torch.randn(16, 4, 16, 16, dtype=torch.float64)
    x = x64.float()
    bn = bnlab.nn.BatchNorm2d(4, momentum=1.0)
    bn(x)
    xd = x.double()
    torch.testing.assert_close(bn.running_mean.double(), xd.mean((0, 2, 3)), rtol=1e-4, atol=0)
    torch.testing.assert_close(bn.running_var.double(), xd.var((0, 2, 3)), rtol=1e-4, atol=0)


def test_nan_input_does_not_poison_running_statistics():
    bn = bnlab.nn.BatchNorm2d(3)
    bn(torch.randn(4, 3, 2, 2))
    before = copy.deepcopy(bn.state_dict())
    x = torch.randn(4, 3, 2, 2)
    x[0, 1, 0, 0] = float("nan")
    x[1, 2, 1, 1] = float("inf")
    y = bn(x)
    assert torch.isnan(y[:, 1]).all() and torch.isfinite(y[:, 0]).all()  # IEEE in the output
    assert torch.equal(bn.running_mean[1:], before["running_mean"][1:])  # poisoned channels keep theirs
    assert torch.equal(bn.running_var[1:], before["running_var"][1:])
    assert not torch.equal(bn.running_mean[0], before["running_mean"][0])  # the clean channel updates
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()


def _bad_inputs():
    return [
        (lambda bn: bn(torch.randn(4, 3, 5)), ValueError, r"expected 4D input \(got 3D input\)"),
        (lambda bn: bn(torch.randn(4, 5, 2, 2)), ValueError, "expected 3 channels"),
        (lambda bn: bn(torch.randn(1, 3, 1, 1)), ValueError, "Expected more than 1 value per channel when training"),
        (lambda bn: bn(torch.randn(4, 3, 2, 2, dtype=torch.float64)), TypeError, "mixed dtype"),
        (lambda bn: bn(torch.randn(4, 3, 2, 2).requires_grad_().double()), TypeError, r"layer.to\(torch.float64\)"),
        (lambda bn: bn(torch.ones(4, 3, 2, 2, dtype=torch.int64)), TypeError, "floating-point"),
        (
            lambda bn: F.batch_norm(
                torch.randn(4, 3, 2, 2), bn.running_mean, bn.running_var, torch.ones(3, device="meta"), training=True
            ),
            ValueError,
            "weight is on meta but the input is on cpu",
        ),
    ]


@pytest.mark.parametrize("call, exc, match", _bad_inputs())
def test_bad_input_is_rejected_and_changes_no_state(call, exc, match):
    bn = bnlab.nn.BatchNorm2d(3)
    bn(torch.randn(4, 3, 2, 2))
    before = copy.deepcopy(bn.state_dict())
    with pytest.raises(exc, match=match):
        call(bn)
    after = bn.state_dict()
    for k in before:
        assert torch.equal(after[k], before[k]), k


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"eps": 0.0}, "eps must be a positive"),
        ({"momentum": 1.5}, r"momentum must be in \[0, 1\]"),
        ({"per": "pixel"}, "per must be"),
        ({"spatial_size": (3, 3)}, "only used with per='activation'"),
    ],
)
def test_bad_constructor_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        bnlab.nn.BatchNorm2d(3, **kw)


def test_functional_bad_arguments():
    x = torch.randn(4, 3, 2, 2)
    with pytest.raises(ValueError, match="required when training=False"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="weight has shape"):
        F.batch_norm(x, None, None, torch.ones(2, 2), training=True)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        F.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=-0.5)
    rm = torch.zeros(3)
    with pytest.raises(ValueError, match="eps must be"):
        F.batch_norm(x, rm, torch.ones(3), training=True, eps=-1.0)
    assert torch.equal(rm, torch.zeros(3))


def test_eval_mode_single_sample_allowed():
    bn = bnlab.nn.BatchNorm2d(3).eval()
    theirs = torch.nn.BatchNorm2d(3).eval()
    x = torch.randn(1, 3, 1, 1)
    _close(bn(x), theirs(x))


def test_frozen_layer_uses_and_keeps_running_statistics():
    bn = bnlab.nn.BatchNorm2d(3)
    bn(torch.randn(8, 3, 4, 4) * 2 + 1)
    before = copy.deepcopy(bn.state_dict())
    bn.frozen = True
    bn.train()
    x = torch.randn(8, 3, 4, 4)
    y = bn(x)
    bn.eval()
    _close(y, bn(x))
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k])


# -- silent wrong results and refused input (hardening) ----------------------------------------------------


def test_half_layer_running_variance_never_overflows():
    """float16 buffers: the update runs in float32 and saturates at 65504 instead of storing inf."""
    torch.manual_seed(0)
    bn = bnlab.nn.BatchNorm2d(3).half()
    theirs = torch.nn.BatchNorm2d(3).half()
    x = (torch.randn(8, 3, 4, 4) * 400).half()
    bn(x), theirs(x)
    torch.testing.assert_close(bn.running_var.float(), theirs.running_var.float(), rtol=2e-3, atol=0)  # ~16,000
    for _ in range(30):  # the EMA heads for ~160,000, beyond float16
        bn(x)
    big = torch.finfo(torch.float16).max
    assert torch.isfinite(bn.running_var).all() and (bn.running_var == big).all()
    bn.eval()
    y = bn(x).float()
    assert torch.isfinite(y).all() and y.abs().max() > 0.5  # eval still normalizes (by √65504 ≈ 256)


def test_overflowing_variance_with_a_finite_mean_does_not_poison_running_statistics():
    """A guard that only looked at the mean would let inf into running_var here. (A σ²_B beyond float32 is
    refused outright, see tests/core/test_numerics.py; here σ²_B fits but the unbiased m/(m−1)·σ²_B does not.)"""
    torch.manual_seed(0)
    bn = bnlab.nn.BatchNorm1d(2)
    x = torch.randn(2, 2)
    x[:, 1] = torch.tensor([1.5e19, -1.5e19])  # float32: μ = 0, σ² = 2.25e38 fits, 2·σ² = 4.5e38 does not
    before = copy.deepcopy(bn.state_dict())
    y = bn(x)
    torch.testing.assert_close(y[:, 1], torch.tensor([1.0, -1.0]))  # normalized right all the same
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()
    assert torch.equal(bn.running_var[1], before["running_var"][1])
    assert torch.equal(bn.running_mean[1], before["running_mean"][1])
    assert not torch.equal(bn.running_var[0], before["running_var"][0])


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (lambda: torch.ones(4, 3, 2, 2, dtype=torch.int64), TypeError, "floating-point"),
        (lambda: torch.randn(4, 3, 2, 2, device="meta"), ValueError, "on cpu but the input is on meta"),
        (lambda: torch.randn(4, 3, 2, 2, dtype=torch.float64), TypeError, "mixed dtype"),
        (lambda: torch.randn(1, 3, 2, 2), ValueError, "Expected more than 1 value"),
        (lambda: torch.randn(4, 5, 2, 2), ValueError, "expected 3 channels"),
    ],
)
def test_lazy_layer_stays_lazy_after_a_refused_input(bad, exc, match):
    bn = bnlab.nn.BatchNorm2d(3, per="activation")
    with pytest.raises(exc, match=match):
        bn(bad())
    assert bn.spatial_size is None and bn._is_lazy()
    y = bn(torch.randn(4, 3, 5, 6))  # a later valid input sets the shapes
    assert y.shape == (4, 3, 5, 6) and bn.weight.shape == (3, 5, 6)


def test_lazy_layer_with_a_bad_eps_stays_lazy():
    bn = bnlab.nn.BatchNorm2d(3, per="activation")
    bn.eps = -1.0
    with pytest.raises(ValueError, match="eps must be"):
        bn(torch.randn(4, 3, 5, 6))
    assert bn._is_lazy()
    bn.eps = 1e-5
    assert bn(torch.randn(4, 3, 2, 2)).shape == (4, 3, 2, 2)


@pytest.mark.parametrize("size", [(0, 0), (3,), (3, 3, 3), (2.5, 2), -1, (True, 2)])
def test_bad_spatial_size_is_refused(size):
    with pytest.raises(ValueError, match="spatial_size must be"):
        bnlab.nn.BatchNorm2d(3, per="activation", spatial_size=size)


# -- ghost BN ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per", ["channel", "activation"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_ghost_bn_equals_plain_bn_on_each_chunk(per, channels_last):
    torch.manual_seed(0)
    k, chunks = 4, 3
    kw = {"spatial_size": (3, 5)} if per == "activation" else {}
    ghost = bnlab.nn.BatchNorm2d(2, per=per, virtual_batch=k, dtype=torch.float64, **kw)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 1.5), ghost.bias.uniform_(-1, 1)
    plain = [copy.deepcopy(ghost) for _ in range(chunks)]
    for p in plain:
        p.virtual_batch = None
    x = torch.randn(k * chunks, 2, 3, 5, dtype=torch.float64) * 3 + 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xg = x.clone().requires_grad_()
    y = ghost(xg)
    dy = torch.randn_like(y)
    y.backward(dy)
    ys, dxs = [], []
    for i, p in enumerate(plain):
        xi = x[i * k : (i + 1) * k].clone().requires_grad_()
        yi = p(xi)
        yi.backward(dy[i * k : (i + 1) * k])
        ys.append(yi), dxs.append(xi.grad)
    torch.testing.assert_close(y, torch.cat(ys), atol=1e-12, rtol=0)
    torch.testing.assert_close(xg.grad, torch.cat(dxs), atol=1e-12, rtol=0)
    torch.testing.assert_close(ghost.weight.grad, sum(p.weight.grad for p in plain), atol=1e-12, rtol=0)
    torch.testing.assert_close(ghost.bias.grad, sum(p.bias.grad for p in plain), atol=1e-12, rtol=0)
    # running statistics: one step towards the chunks' average mean and average unbiased variance
    axes = (0, 2, 3) if per == "channel" else (0,)
    chunk_x = x.unflatten(0, (chunks, k))
    mean = torch.stack([c.mean(axes) for c in chunk_x]).mean(0)
    var = torch.stack([c.var(axes, correction=1) for c in chunk_x]).mean(0)
    torch.testing.assert_close(ghost.running_mean, 0.1 * mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(ghost.running_var, 0.9 + 0.1 * var, atol=1e-12, rtol=0)
    ghost.eval()  # eval is plain Alg. 2
    plain[0].load_state_dict(ghost.state_dict())
    plain[0].eval()
    torch.testing.assert_close(ghost(x), plain[0](x))


def test_ghost_bn_refuses_a_batch_that_is_not_a_multiple_and_changes_nothing():
    bn = bnlab.nn.BatchNorm2d(3, virtual_batch=4)
    bn(torch.randn(8, 3, 2, 2))
    before = copy.deepcopy(bn.state_dict())
    with pytest.raises(ValueError, match="multiple of 4"):
        bn(torch.randn(6, 3, 2, 2))
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k])
    bn.eval()
    assert bn(torch.randn(6, 3, 2, 2)).shape == (6, 3, 2, 2)  # eval does not use chunks
    with pytest.raises(ValueError, match="virtual_batch must be"):
        bnlab.nn.BatchNorm2d(3, virtual_batch=1)


# -- fused activation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("per", ["channel", "activation"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_relu_equals_bn_then_relu(per, training, channels_last):
    torch.manual_seed(0)
    kw = {"spatial_size": (4, 5)} if per == "activation" else {}
    fused = bnlab.nn.BatchNorm2d(3, per=per, activation="relu", dtype=torch.float64, **kw)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5), fused.bias.uniform_(-1, 1)
    plain = copy.deepcopy(fused)
    plain.activation = None
    fused.train(training), plain.train(training)
    x = torch.randn(6, 3, 4, 5, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fused(xa), torch.relu(plain(xb))
    torch.testing.assert_close(ya, yb, atol=1e-12, rtol=0)
    dy = torch.randn_like(ya)
    ya.backward(dy), yb.backward(dy)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(fused.bias.grad, plain.bias.grad, atol=1e-12, rtol=0)
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[k], v, atol=1e-12, rtol=0)


def test_fused_relu_gradcheck_and_bad_activation():
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def f(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, activation="relu")

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))
    with pytest.raises(ValueError, match="activation must be one of"):
        bnlab.nn.BatchNorm2d(3, activation="gelu")
    with pytest.raises(ValueError, match="activation must be one of"):
        F.batch_norm(x, None, None, training=True, activation="tanh")


# ---- checks once per configuration (bnlab.nn.functional.checked_axes) -------------------------------------


def _refused_after_cached_calls():
    return [
        (lambda bn: bn(torch.randn(4, 4, 2, 2)), ValueError, "expected 3 channels"),
        (lambda bn: bn(torch.randn(4, 3, 2, 2, dtype=torch.float64)), TypeError, "mixed dtype"),
        (lambda bn: bn(torch.randn(1, 3, 1, 1)), ValueError, "Expected more than 1 value per channel"),
        (lambda bn: (setattr(bn, "eps", -1.0), bn(torch.randn(4, 3, 2, 2))), ValueError, "eps must be"),
        (lambda bn: (setattr(bn, "momentum", 1.5), bn(torch.randn(4, 3, 2, 2))), ValueError, "momentum must be in"),
        (
            lambda bn: (setattr(bn, "weight", torch.nn.Parameter(torch.ones(2, 2))), bn(torch.randn(4, 3, 2, 2))),
            ValueError,
            "weight has shape",
        ),
        (
            lambda bn: F.batch_norm(torch.randn(4, 3, 2, 2), bn.running_mean, bn.running_var.double(), training=True),
            TypeError,
            "mixed dtype",
        ),
        (
            lambda bn: F.batch_norm(torch.randn(4, 3, 2, 2), bn.running_mean, bn.running_var, axes=(0.0, 2, 3)),
            TypeError,
            "axes must be integers",
        ),
    ]


@pytest.mark.parametrize("call, exc, match", _refused_after_cached_calls())
def test_cached_checks_still_refuse_a_changed_call(call, exc, match):
    """The checks run once per configuration; any change to what they read is checked again, before any state
    changes."""
    bn = bnlab.nn.BatchNorm2d(3)
    for _ in range(3):  # the configuration is accepted and remembered
        bn(torch.randn(4, 3, 2, 2))
        F.batch_norm(torch.randn(4, 3, 2, 2), bn.running_mean.clone(), bn.running_var.clone(), axes=(0, 2, 3))
    before = {k: v.clone() for k, v in bn.named_buffers()}
    with pytest.raises(exc, match=match):
        call(bn)
    for k, v in bn.named_buffers():
        assert torch.equal(v, before[k]), k


def test_reassigned_eps_and_momentum_take_effect():
    """Hyperparameters assigned between calls change the next call, as in torch (no stale cached value)."""
    torch.manual_seed(0)
    ours, theirs = bnlab.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    for step, (eps, momentum) in enumerate([(1e-5, 0.1), (1e-5, 0.1), (0.5, 0.1), (0.5, 0.7), (2.0, None)]):
        for layer in (ours, theirs):
            layer.eps, layer.momentum = eps, momentum
        x = torch.randn(4, 3, 2, 2) * 0.5
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6, msg=f"step {step}")
        torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-6, atol=1e-7)
    ours.eval(), theirs.eval()
    ours.eps = theirs.eps = 3.0
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_running_update_skips_only_non_finite_features_on_the_fast_path():
    """Finite statistics update in one step (read on the host); a non-finite feature keeps its value."""
    rm, rv = torch.zeros(3), torch.ones(3)
    mean, var = torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([4.0, 1.0, float("inf")])
    F.update_running_stats(rm, rv, mean, var, 5, 0.5)  # unbiased: 4·5/4 = 5
    torch.testing.assert_close(rm, torch.tensor([0.5, 0.0, 0.0]))  # feature 2: σ² = inf, both keep theirs
    torch.testing.assert_close(rv, torch.tensor([3.0, 1.0, 1.0]))
    F.update_running_stats(rm, rv, torch.tensor([1.0, 1.0, 1.0]), torch.tensor([4.0, 4.0, 4.0]), 5, 0.5)
    torch.testing.assert_close(rm, torch.tensor([0.75, 0.5, 0.5]))
    torch.testing.assert_close(rv, torch.tensor([4.0, 3.0, 3.0]))


# ---- small tensors: torch's own batch norm where its statistics meet the numerical policy ------------------


@pytest.mark.parametrize(
    "shape, offset, native",
    [
        ((16, 8, 4, 4), 0.0, True),
        ((2, 3, 5), 3.0, True),
        ((16, 8, 4, 4), 1e4, False),  # |μ|/σ above SHIFT_RATIO: the kernels' shifted normalize
        ((8192, 2, 1), 10.0, False),  # one value per row: torch's float32 statistics are not exact enough
        ((256, 8, 4, 4), 0.0, False),  # more than SMALL_NUMEL values: the kernels
    ],
)
def test_small_tensors_take_torch_batch_norm_only_where_its_statistics_are_exact(shape, offset, native):
    g = torch.Generator().manual_seed(3)
    c = shape[1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + offset).float().requires_grad_()
    w = (torch.rand(c, generator=g) + 0.5).requires_grad_()
    b = torch.randn(c, generator=g).requires_grad_()
    rm, rv = torch.zeros(c), torch.ones(c)
    y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=1.0)
    assert type(y.grad_fn).__name__.startswith("NativeBatchNormBackward") == native, y.grad_fn
    axes = (0, *range(2, x.dim()))
    xd = x.detach().double().requires_grad_()
    mean, var = xd.detach().mean(axes), xd.detach().var(axes, correction=0)
    n = x.numel() // c
    torch.testing.assert_close(rm.double(), mean, rtol=1e-7, atol=1e-6)
    torch.testing.assert_close(rv.double(), var * n / (n - 1), rtol=3e-7, atol=0)
    wd, bd = w.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    yd = torch.nn.functional.batch_norm(xd, None, None, wd, bd, training=True)
    # (μ_B in float32 is rounded to ~6e-8·|μ|: the output can be no closer than that over σ)
    torch.testing.assert_close(y.double(), yd, rtol=0, atol=1e-5 + 1e-7 * offset)
    if offset > 100:  # (dγ = Σ dy·x̂ carries the same rounding of μ_B: tests/core/test_numerics.py bounds it)
        return
    dy = torch.randn(shape, generator=g)
    got = torch.autograd.grad(y, (x, w, b), dy)
    want = torch.autograd.grad(yd, (xd, wd, bd), dy.double())
    for gt, wt in zip(got, want, strict=True):
        torch.testing.assert_close(gt.double(), wt, rtol=1e-4, atol=1e-4 * float(wt.abs().max()))


def test_running_update_of_feature_shaped_statistics():
    """Per-activation statistics (C, L) take the host-read update as well (a planted flat-list read failed here)."""
    torch.manual_seed(0)
    ours = bnlab.nn.BatchNorm1d(3, per="activation", spatial_size=4)
    x = torch.randn(6, 3, 4)
    ours(x)
    want_mean = 0.1 * x.mean(0)
    torch.testing.assert_close(ours.running_mean, want_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.running_var, 0.9 + 0.1 * x.var(0, correction=1), rtol=1e-6, atol=1e-7)
