"""Masked set B (issue 17, part 2): ``mask=`` on batch_norm and the BN layers.

Checked against float64 NumPy on the valid subset (a per-feature loop written here), the literal reference
(bnlab.reference.masked_forward/backward), gradcheck/gradgradcheck, and the unmasked path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnlab.nn as bnn
from bnlab import reference
from bnlab.nn import _dispatch
from bnlab.nn.functional import batch_norm


def _data(per: str, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(5, 3, 4, 6, generator=g, dtype=torch.float64) * 2 + 3).to(dtype)
    if per == "channel":
        mask = torch.rand(5, 1, 4, 6, generator=g) > 0.4  # padded image batch: (N, 1, H, W)
        fshape = (3,)
    else:
        mask = torch.rand(5, 3, 4, 6, generator=g) > 0.3
        mask[:2] = True  # every feature keeps >= 2 values
        fshape = (3, 4, 6)
    return x, mask, fshape


def _subset_numpy(x, mask, per, momentum=0.1, eps=1e-5):
    """Float64, one feature at a time, over the valid subset only: y, running mean, running var."""
    x = x.double().numpy()
    m = np.broadcast_to(mask.numpy(), x.shape)
    if per == "channel":  # features on axis 1: (N·H·W, C)
        xf, mf = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), np.moveaxis(m, 1, -1).reshape(-1, x.shape[1])
    else:  # (N, C·H·W)
        xf, mf = x.reshape(x.shape[0], -1), m.reshape(m.shape[0], -1)
    yf = np.empty_like(xf)
    rm, rv = np.zeros(xf.shape[1]), np.ones(xf.shape[1])
    for j in range(xf.shape[1]):
        vals = xf[mf[:, j], j]
        mu, var = vals.mean(), vals.var()
        yf[:, j] = (xf[:, j] - mu) / np.sqrt(var + eps)
        rm[j] = momentum * mu
        rv[j] = (1 - momentum) + momentum * var * len(vals) / (len(vals) - 1)
    if per == "channel":
        y = np.moveaxis(yf.reshape(x.shape[0], x.shape[2], x.shape[3], x.shape[1]), -1, 1)
        return y, rm, rv
    return yf.reshape(x.shape), rm.reshape(x.shape[1:]), rv.reshape(x.shape[1:])


def _layer(per, fshape, dtype=torch.float32):
    kw = {"per": "activation", "spatial_size": fshape[1:]} if per == "activation" else {}
    layer = bnn.BatchNorm2d(3, **kw).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.5, 1.5, layer.weight.numel()).reshape(layer.weight.shape))
        layer.bias.copy_(torch.linspace(-1, 1, layer.bias.numel()).reshape(layer.bias.shape))
    return layer


@pytest.mark.parametrize("per", ["channel", "activation"])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_layer_matches_float64_numpy_on_the_valid_subset(per, fmt):
    x, mask, fshape = _data(per)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    layer = _layer(per, fshape)
    y = layer(x, mask=mask)
    y_ref, rm, rv = _subset_numpy(x.detach(), mask, per)
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    wv, bv = (w[None, :, None, None], b[None, :, None, None]) if per == "channel" else (w[None], b[None])
    np.testing.assert_allclose(y.detach().double().numpy(), wv * y_ref + bv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.running_mean.double().numpy(), rm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var.double().numpy(), rv, rtol=1e-5, atol=1e-6)
    assert int(layer.num_batches_tracked) == 1
    # gradients against the literal float64 reference
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    y.backward(dy)
    axes = (0, 2, 3) if per == "channel" else (0,)
    _, cache = reference.masked_forward(x.detach().double().numpy(), w, b, mask.numpy(), axes=axes)
    dx, dg, db = reference.masked_backward(dy.double().numpy(), cache)
    np.testing.assert_allclose(x.grad.double().numpy(), dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.weight.grad.double().numpy(), dg, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.bias.grad.double().numpy(), db, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per", ["channel", "activation"])
def test_reference_gradients_equal_autograd_of_the_subset_definition(per):
    """The literal reference's closed form against autograd of a float64 torch computation of the definition."""
    x, mask, fshape = _data(per, torch.float64, seed=3)
    axes = (0, 2, 3) if per == "channel" else (0,)
    g = torch.linspace(0.5, 1.5, int(np.prod(fshape)), dtype=torch.float64).reshape(fshape)
    b = torch.linspace(-1, 1, int(np.prod(fshape)), dtype=torch.float64).reshape(fshape)
    xt, gt, bt = (t.clone().requires_grad_(True) for t in (x, g, b))
    keep = mask.expand(x.shape)
    m = keep.sum(dim=axes, keepdim=True)
    mu = torch.where(keep, xt, 0).sum(dim=axes, keepdim=True) / m
    var = torch.where(keep, (xt - mu) ** 2, 0).sum(dim=axes, keepdim=True) / m
    shape = [1 if i in axes else n for i, n in enumerate(x.shape)]
    y = gt.reshape(shape) * (xt - mu) / torch.sqrt(var + 1e-5) + bt.reshape(shape)
    dy = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y.backward(dy)
    y_np, cache = reference.masked_forward(x.numpy(), g.numpy(), b.numpy(), mask.numpy(), axes=axes)
    dx, dg, db = reference.masked_backward(dy.numpy(), cache)
    np.testing.assert_allclose(y_np, y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dg, gt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("per", ["channel", "activation"])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_and_gradgradcheck(per, relu):
    x, mask, fshape = _data(per, torch.float64, seed=2)
    x = x[:3, :, :3, :3].contiguous().requires_grad_(True)
    mask = mask[:3, :, :3, :3].contiguous()
    mask[:2] = True
    axes = (0, 2, 3) if per == "channel" else (0,)
    w = torch.randn(fshape, dtype=torch.float64)[..., :3, :3] if per == "activation" else torch.randn(3).double()
    b = torch.randn(w.shape, dtype=torch.float64)
    w.requires_grad_(True)
    b.requires_grad_(True)
    act = "relu" if relu else None

    def f(x, w, b):
        return batch_norm(x, None, None, w, b, True, axes=axes, mask=mask, activation=act)

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_masked_out_values_do_not_move_the_statistics():
    """A padded sequence batch (N, C, L) with lengths: changing the padding changes no valid output and no
    running statistic; valid outputs equal BN of the valid values alone."""
    lengths = torch.tensor([7, 3, 5, 2])
    x = torch.randn(4, 3, 7)
    mask = (torch.arange(7) < lengths[:, None])[:, None, :]  # (N, 1, L)
    a, b = bnn.BatchNorm1d(3), bnn.BatchNorm1d(3)
    ya = a(x, mask=mask)
    yb = b(torch.where(mask, x, torch.full_like(x, 1e3)), mask=mask)
    m = mask.expand(x.shape)
    torch.testing.assert_close(ya[m], yb[m])
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)
    valid = torch.cat([x[i, :, : int(n)] for i, n in enumerate(lengths)], dim=1)  # (C, Σ lengths)
    ref = torch.nn.functional.batch_norm(valid.T, None, None, training=True).T
    got = torch.cat([ya[i, :, : int(n)] for i, n in enumerate(lengths)], dim=1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 1, 4, 6), (5, 3, 1, 1)])
def test_broadcast_mask_equals_the_expanded_one(shape):
    x = torch.randn(5, 3, 4, 6, requires_grad=True)
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(4)) > 0.4
    mask[:2] = True
    outs = []
    for msk in (mask, mask.expand(x.shape).contiguous()):
        layer = bnn.BatchNorm2d(3)
        y = layer(x, mask=msk)
        (gx,) = torch.autograd.grad((y * torch.arange(y.numel()).reshape(y.shape).sin()).sum(), x)
        outs.append((y.detach(), gx, layer.running_mean.clone(), layer.running_var.clone()))
    for p, q in zip(*outs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_all_true_mask_equals_no_mask_exactly():
    x = torch.randn(6, 3, 5, 5)
    outs = []
    for mask in (torch.ones(6, 1, 5, 5, dtype=torch.bool), None):
        layer = bnn.BatchNorm2d(3)
        xx = x.clone().requires_grad_(True)
        y = layer(xx, mask=mask)
        y.backward(torch.ones_like(y).cumsum(-1))
        outs.append((y.detach(), xx.grad, layer.weight.grad, layer.running_mean, layer.running_var))
    for p, q in zip(*outs, strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("per", ["channel", "activation"])
def test_masked_implementation_with_all_true_matches_the_unmasked_one(per):
    """The masked math itself (not the all-True shortcut) against the unmasked implementation."""
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    axes = (0, 2, 3) if per == "channel" else (0,)
    y, mean, var, count = _dispatch.train_masked(x, torch.ones(1, dtype=torch.bool), None, None, axes, 1e-5, False)
    y0, mean0, var0 = _dispatch.train(x, None, None, axes, 1e-5, False)
    assert torch.all(count == x.numel() // mean.numel())
    torch.testing.assert_close((y, mean, var), (y0, mean0, var0))
    dy = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad(y, x, dy), torch.autograd.grad(y0, x, dy))


@pytest.mark.parametrize("keep", [0, 1])
def test_a_feature_with_fewer_than_two_values_is_refused_and_nothing_changes(keep):
    layer = bnn.BatchNorm1d(3)
    with torch.no_grad():
        layer.running_mean.fill_(0.25)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(4, 3, 5)
    mask = torch.ones(4, 3, 5, dtype=torch.bool)
    mask[:, 1] = False
    mask[0, 1, 0] = keep == 1
    with pytest.raises(ValueError, match=r"1 of 3 features with fewer than 2 values.*at least 2"):
        layer(x, mask=mask)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.isfinite(layer.running_var).all()


def test_eval_mode_ignores_the_mask():
    layer = bnn.BatchNorm2d(3)
    layer(torch.randn(8, 3, 4, 4) * 3 + 1)
    layer.eval()
    x = torch.randn(2, 3, 4, 4)
    mask = torch.rand(2, 1, 4, 4) > 0.5
    assert torch.equal(layer(x, mask=mask), layer(x))


@pytest.mark.parametrize(
    "mask, error, match",
    [
        (torch.ones(4, 1, 5, 5), TypeError, "bool tensor"),
        (torch.ones(4, 1, 5, 5, dtype=torch.int64), TypeError, "mask.bool"),
        (torch.ones(4, 3, 6, 5, dtype=torch.bool), ValueError, r"does not broadcast to the input's shape \(4, 3, 5"),
        (torch.ones(2, 4, 3, 5, 5, dtype=torch.bool), ValueError, "does not broadcast"),
        ([[True]], TypeError, "bool torch.Tensor"),
    ],
    ids=["float", "int64", "wrong-size", "too-many-dims", "list"],
)
@pytest.mark.parametrize("training", [True, False])
def test_bad_masks_are_refused_with_state_unchanged(mask, error, match, training):
    layer = bnn.BatchNorm2d(3).train(training)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(error, match=match):
        layer(torch.randn(4, 3, 5, 5), mask=mask)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


# -- vmap over a batched mask: k independent problems, each with its own set B --------------------------------
K = 3


def _vmap_problem(fshape=(4,)):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(K, 6, 4, 5, 5, dtype=torch.float64, generator=g) * torch.tensor([1.0, 3.0, 0.5]).view(K, 1, 1, 1, 1)
    mask = torch.rand(K, 6, 1, 5, 5, generator=g) > 0.3  # a different set B in every problem
    mask[:, :2] = True
    w = torch.randn(fshape, dtype=torch.float64, generator=g).requires_grad_(True)
    b = torch.randn(fshape, dtype=torch.float64, generator=g).requires_grad_(True)
    return x.requires_grad_(True), mask, w, b


@pytest.mark.parametrize("axes", [None, (0,)], ids=["per-channel", "per-activation"])
def test_vmap_over_a_batched_mask_equals_the_per_problem_loop(axes):
    x, mask, w, b = _vmap_problem((4,) if axes is None else (4, 5, 5))

    def f(x, m):
        return batch_norm(x, None, None, w, b, True, mask=m, axes=axes)

    got = torch.func.vmap(f)(x, mask)
    want = torch.stack([f(x[i], mask[i]) for i in range(K)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(want)
    for g_got, g_want in zip(torch.autograd.grad(got, (x, w, b), dy), torch.autograd.grad(want, (x, w, b), dy),
                             strict=True):  # fmt: skip
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)

    def loss(x, m):  # vmap of functorch's grad: per-problem gradients in one call
        return (batch_norm(x, None, None, w.detach(), b.detach(), True, mask=m, axes=axes) ** 3).sum()

    xd = x.detach()
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(loss))(xd, mask),
                               torch.stack([torch.func.grad(loss)(xd[i], mask[i]) for i in range(K)]))  # fmt: skip


def test_vmap_with_vmapped_running_statistics_updates_each_problems_own():
    x, mask, _, _ = _vmap_problem()
    x = x.detach()
    rm, rv = torch.zeros(K, 4, dtype=torch.float64), torch.ones(K, 4, dtype=torch.float64)
    lm, lv = rm.clone(), rv.clone()
    got = torch.func.vmap(lambda x, m, a, v: batch_norm(x, a, v, None, None, True, 0.1, mask=m))(x, mask, rm, rv)
    want = torch.stack([batch_norm(x[i], lm[i], lv[i], None, None, True, 0.1, mask=mask[i]) for i in range(K)])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((rm, rv), (lm, lv), rtol=1e-12, atol=1e-12)
    assert not torch.equal(rv, torch.ones_like(rv))


def test_vmap_refuses_what_has_no_rule_with_the_workaround():
    x, mask, _, _ = _vmap_problem()
    x = x.detach()
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="performance drop"), pytest.raises(ValueError, match="vmap them too"):
        torch.func.vmap(lambda x, m: batch_norm(x, rm, rv, None, None, True, mask=m))(x, mask)  # one buffer, k sets B
    assert torch.equal(rm, torch.zeros(4, dtype=torch.float64)) and torch.equal(rv, torch.ones(4, dtype=torch.float64))
    bad = mask.clone()
    bad[1] = False  # problem 1 has an empty set B: the same error as without vmap
    with pytest.raises(ValueError, match="fewer than 2 values in set B"):
        torch.func.vmap(lambda x, m: batch_norm(x, None, None, None, None, True, mask=m))(x, bad)


def test_functorch_grad_takes_the_stock_door_and_agrees():
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    mask = torch.rand(5, 1, 4) > 0.3
    mask[:2] = True
    w = torch.randn(3, dtype=torch.float64)

    def loss(x):
        return (batch_norm(x, None, None, w, None, True, mask=mask) ** 3).sum()

    got = torch.func.grad(loss)(x)
    xx = x.clone().requires_grad_(True)
    loss(xx).backward()
    torch.testing.assert_close(got, xx.grad)


@pytest.mark.slow
def test_compiled_door_matches_eager_and_refuses_an_empty_feature():
    torch._dynamo.reset()
    layer = bnn.BatchNorm2d(3)
    ref = bnn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    mask = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(5)) > 0.3
    mask[:2] = True
    step = torch.compile(lambda x, m: layer(x, mask=m), fullgraph=True)
    xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yc, ye = step(xc, mask), ref(xe, mask=mask)
    torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-5)
    dy = torch.randn_like(x)
    yc.backward(dy)
    ye.backward(dy)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.running_var, ref.running_var)
    before = layer.running_var.clone()
    empty = mask.clone()
    empty[:] = False
    empty[0, 0, 0, 0] = True
    with pytest.raises(Exception, match="at least 2"):
        step(x, empty.expand(4, 3, 5, 5).contiguous())
    assert torch.equal(layer.running_var, before)


@pytest.mark.parametrize("page", ["mask.md", "mask.es.md"])
def test_the_pages_examples_run(page):
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), {})
