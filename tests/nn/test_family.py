"""The normalization family (layer, instance, group norm as batch norm over other sets B).

Checked against torch.nn.functional/torch.nn (outputs, gradients, running statistics, state_dict),
numerical gradients (gradcheck, gradgradcheck in float64), a brute-force float64 NumPy computation for
the reference, and the small CNN trained a few steps with each member.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlab.nn as bnn
from bnlab import reference as ref
from bnlab.axes import FAMILY, norm_set
from bnlab.nn import family

LAYOUTS_2D = ["NCHW", "NHWC"]


# ------------------------------------------------------------------------------------------ the rule


def _labels(shape, layout, norm, per="channel", groups=None):
    """Label every value by its set B, worked out from the index alone (not from bnlab.axes)."""
    c_axis = layout.index("C")
    C = shape[c_axis]
    labels = {}
    for idx in np.ndindex(*shape):
        n, c = idx[0], idx[c_axis]
        rest = tuple(i for a, i in enumerate(idx) if a not in (0, c_axis))
        if norm == "batch":
            key = (c,) if per == "channel" else idx[1:]
        elif norm == "layer":
            key = (n,)
        elif norm == "instance":
            key = (n, c)
        else:
            key = (n, c // (C // groups))
        del rest
        labels[idx] = key
    return labels


@settings(max_examples=80, deadline=None)
@given(
    layout=st.sampled_from(["NC", "NCL", "NLC", "NCHW", "NHWC", "NDHWC"]),
    norm=st.sampled_from(FAMILY),
    data=st.data(),
)
def test_norm_set_counts_match_brute_force_labels(layout, norm, data):
    shape = list(data.draw(st.lists(st.integers(1, 4), min_size=len(layout), max_size=len(layout))))
    c_axis = layout.index("C")
    shape[c_axis] = data.draw(st.sampled_from([1, 2, 4, 6]))
    shape = tuple(shape)
    groups = data.draw(st.sampled_from([g for g in range(1, 7) if shape[c_axis] % g == 0]))
    per = data.draw(st.sampled_from(["channel", "activation"]))
    s = norm_set(shape, layout, norm, per=per, groups=groups if norm == "group" else None)
    labels = _labels(shape, layout, norm, per, groups)
    sizes = {}
    for key in labels.values():
        sizes[key] = sizes.get(key, 0) + 1
    assert s.num_sets == len(sizes)
    assert set(sizes.values()) == {s.set_size}
    assert s.depends_on_batch == (norm == "batch")
    # the view the statistics are computed on groups exactly these sets: label the view's kept index
    x = np.arange(math.prod(shape)).reshape(shape)
    v = x.reshape(s.view_shape)
    kept = [a for a in range(v.ndim) if a not in s.view_axes]
    moved = np.moveaxis(v, kept, list(range(len(kept)))).reshape(s.num_sets, -1)
    flat_labels = {int(x[idx]): labels[idx] for idx in np.ndindex(*shape)}
    for row in moved:
        assert len({flat_labels[int(i)] for i in row}) == 1
    assert 0 in s.view_axes


def test_norm_set_paper_shapes():
    s = norm_set((32, 28, 28, 16), "NHWC", "group", groups=4)
    assert s.split_shape == (32, 28, 28, 4, 4)
    assert s.axes == (1, 2, 4)
    assert s.stats_shape == (32, 4) and s.set_size == 28 * 28 * 4 and s.param_shape == (16,)
    assert norm_set((32, 28, 28, 16), "NHWC", "layer").param_shape == (28, 28, 16)
    assert norm_set((32, 16, 28, 28), "NCHW", "instance").view_shape == (1, 32 * 16, 28 * 28)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"norm": "group", "groups": 5}, "does not divide the 16 channels; pick G among 1, 2, 4, 8, 16"),
        ({"norm": "group"}, "needs groups=G"),
        ({"norm": "group", "groups": 0}, "positive whole number"),
        ({"norm": "batchy"}, "unknown norm 'batchy'"),
    ],
)
def test_norm_set_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        norm_set((2, 16, 3, 3), "NCHW", **kwargs)


# -------------------------------------------------------------------------------------- the reference


def _brute(x, norm, layout, groups):
    """x̂ in float64 by flattening each set B of an NCHW/NHWC array (independent of bnlab)."""
    x = np.asarray(x, np.float64)
    xc = np.moveaxis(x, layout.index("C"), 1) if layout != "NCHW" else x
    n, c = xc.shape[:2]
    g = {"layer": 1, "instance": c, "group": groups}[norm]
    rows = xc.reshape(n * g, -1)
    mu = rows.mean(axis=1, keepdims=True)
    var = ((rows - mu) ** 2).mean(axis=1, keepdims=True)
    out = ((rows - mu) / np.sqrt(var + 1e-5)).reshape(xc.shape)
    return np.moveaxis(out, 1, layout.index("C")) if layout != "NCHW" else out


@pytest.mark.parametrize("layout", LAYOUTS_2D)
@pytest.mark.parametrize("norm, groups", [("layer", None), ("instance", None), ("group", 2), ("group", 3)])
def test_reference_matches_brute_force_and_torch(rng, layout, norm, groups):
    shape = (3, 6, 4, 5) if layout == "NCHW" else (3, 4, 5, 6)
    x = rng.normal(2.0, 3.0, size=shape)
    s = norm_set(shape, layout, norm, groups=groups)
    gamma, beta = rng.normal(size=s.param_shape), rng.normal(size=s.param_shape)
    y, cache = ref.family_forward(x, gamma, beta, norm, layout, groups=groups)
    x_hat = _brute(x, norm, layout, groups)
    c = layout.index("C")
    if norm == "layer":
        expect = gamma[None] * x_hat + beta[None]
    else:
        pshape = tuple(n if a == c else 1 for a, n in enumerate(shape))
        expect = gamma.reshape(pshape) * x_hat + beta.reshape(pshape)
    np.testing.assert_allclose(y, expect, rtol=1e-10, atol=1e-10)
    # torch on the same values (moved to NCHW) with its own functional
    xt = torch.from_numpy(np.moveaxis(x, c, 1).copy()).requires_grad_()
    if norm == "layer":
        g_t = torch.from_numpy(np.moveaxis(gamma, c - 1, 0).copy()).requires_grad_()
        b_t = torch.from_numpy(np.moveaxis(beta, c - 1, 0).copy()).requires_grad_()
        yt = F.layer_norm(xt, xt.shape[1:], g_t, b_t)
    else:
        g_t, b_t = torch.from_numpy(gamma).requires_grad_(), torch.from_numpy(beta).requires_grad_()
        yt = F.group_norm(xt, groups or (shape[c] if norm == "instance" else 1), g_t, b_t)
    np.testing.assert_allclose(np.moveaxis(yt.detach().numpy(), 1, c), y, rtol=1e-10, atol=1e-10)
    # closed-form backward against torch's autograd
    dy = rng.normal(size=shape)
    dx, dgamma, dbeta = ref.family_backward(dy, cache)
    yt.backward(torch.from_numpy(np.moveaxis(dy, c, 1).copy()))
    np.testing.assert_allclose(dx, np.moveaxis(xt.grad.numpy(), 1, c), rtol=1e-8, atol=1e-10)
    tg, tb = g_t.grad.numpy(), b_t.grad.numpy()
    if norm == "layer":
        tg, tb = np.moveaxis(tg, 0, c - 1), np.moveaxis(tb, 0, c - 1)
    np.testing.assert_allclose(dgamma, tg, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dbeta, tb, rtol=1e-8, atol=1e-10)


def test_reference_batch_member_is_alg1(rng):
    x = rng.normal(size=(6, 3, 3, 4))
    g, b = rng.normal(size=4), rng.normal(size=4)
    y, _ = ref.family_forward(x, g, b, "batch", "NHWC")
    y1, _ = ref.forward(x, g, b, axes=(0, 1, 2))
    np.testing.assert_allclose(y, y1, rtol=1e-12, atol=1e-12)


def test_reference_float32_offset(rng):
    # corrected two-pass statistics survive a large offset in float32 (the existing forward's policy)
    x = (1e6 + rng.normal(size=(4, 8, 5, 5))).astype(np.float32)
    y, _ = ref.family_forward(x, np.ones(8, np.float32), np.zeros(8, np.float32), "group", "NCHW", groups=4)
    np.testing.assert_allclose(y, _brute(x, "group", "NCHW", 4), atol=2e-2)
    assert y.dtype == np.float32


def test_reference_errors(rng):
    x = rng.normal(size=(2, 4, 1, 1))
    with pytest.raises(ValueError, match="pools 1 value per set"):
        ref.family_forward(x, np.ones(4), np.zeros(4), "instance", "NCHW")
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\), expected \(4,\)"):
        ref.family_forward(rng.normal(size=(2, 4, 3, 3)), np.ones(3), np.zeros(4), "group", "NCHW", groups=2)


# -------------------------------------------------------------------------------------------- torch


@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (3, 6, 7), (2, 6, 3, 4, 2), (5, 6)])
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_norm_matches_torch(shape, groups):
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).requires_grad_()
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(shape, dtype=torch.float64)
    # sets of one value ((5, 6) with G = 6) included: torch returns β there (x − μ = 0), so must bnlab
    ours = torch.autograd.grad(family.group_norm(x, groups, w, b), (x, w, b), dy)
    theirs = torch.autograd.grad(F.group_norm(x, groups, w, b), (x, w, b), dy)
    torch.testing.assert_close(family.group_norm(x, groups, w, b), F.group_norm(x, groups, w, b))
    for a, e in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("normalized", [(6, 5, 5), (5, 5), (5,)])
def test_layer_norm_matches_torch(normalized):
    torch.manual_seed(1)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(normalized, dtype=torch.float64, requires_grad=True)
    b = torch.randn(normalized, dtype=torch.float64, requires_grad=True)
    dy = torch.randn_like(x)
    y = family.layer_norm(x, normalized, w, b)
    torch.testing.assert_close(y, F.layer_norm(x, normalized, w, b))
    ours = torch.autograd.grad(y, (x, w, b), dy)
    theirs = torch.autograd.grad(F.layer_norm(x, normalized, w, b), (x, w, b), dy)
    for a, e in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, e)


def test_float32_channels_last_matches_torch():
    torch.manual_seed(2)
    x = torch.randn(8, 16, 7, 7).to(memory_format=torch.channels_last) * 5 + 100
    w, b = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(family.group_norm(x, 4, w, b), F.group_norm(x, 4, w, b), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(family.instance_norm(x), F.instance_norm(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, w, b: family.group_norm(x, 2, w, b),
        lambda x, w, b: family.instance_norm(x, weight=w, bias=b),
        lambda x, w, b: family.layer_norm(x, x.shape[1:], w[:, None, None].expand(x.shape[1:]), None),
    ],
    ids=["group", "instance", "layer"],
)
@pytest.mark.slow
def test_gradcheck_and_gradgradcheck(fn):
    torch.manual_seed(3)
    x = torch.randn(3, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm2d_module_matches_torch(affine, track):
    torch.manual_seed(4)
    ours = bnn.InstanceNorm2d(6, affine=affine, track_running_stats=track, momentum=0.3)
    theirs = torch.nn.InstanceNorm2d(6, affine=affine, track_running_stats=track, momentum=0.3)
    assert isinstance(ours, torch.nn.InstanceNorm2d)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if affine:
        with torch.no_grad():
            theirs.weight.normal_()
            theirs.bias.normal_()
    ours.load_state_dict(theirs.state_dict())
    for _ in range(3):
        x = torch.randn(5, 6, 4, 4) * 2 + 3
        torch.testing.assert_close(ours(x), theirs(x))
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, msg=k)
    ours.eval()
    theirs.eval()
    x = torch.randn(5, 6, 4, 4)
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours(x[0]), theirs(x[0]))  # unbatched (C, H, W)


@pytest.mark.parametrize("affine", [False, True])
def test_group_norm_module_matches_torch(affine):
    torch.manual_seed(5)
    theirs = torch.nn.GroupNorm(4, 12, affine=affine)
    if affine:
        with torch.no_grad():
            theirs.weight.normal_()
            theirs.bias.normal_()
    ours = bnn.GroupNorm(4, 12, affine=affine)
    assert isinstance(ours, torch.nn.GroupNorm) and repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 12, 5, 5, requires_grad=True)
    torch.testing.assert_close(ours(x), theirs(x))
    if affine:
        ours(x).square().sum().backward()
        g_ours = ours.weight.grad.clone()
        theirs(x).square().sum().backward()
        torch.testing.assert_close(g_ours, theirs.weight.grad)


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}])
def test_layer_norm_module_matches_torch(kwargs):
    torch.manual_seed(6)
    theirs = torch.nn.LayerNorm((6, 5, 5), **kwargs)
    ours = bnn.LayerNorm((6, 5, 5), **kwargs)
    assert isinstance(ours, torch.nn.LayerNorm)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 6, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x))


def test_torch_errors_are_clear():
    with pytest.raises(ValueError, match="does not divide the 12 channels"):
        bnn.GroupNorm(5, 12)
    with pytest.raises(ValueError, match="the input has 8 channels but weight has 12"):
        bnn.GroupNorm(4, 12)(torch.randn(2, 8, 3, 3))
    with pytest.raises(ValueError, match="expected 6 channels on axis 1"):
        bnn.InstanceNorm2d(6, affine=True)(torch.randn(2, 8, 3, 3))
    with pytest.raises(ValueError, match="pools 1 value per set"):
        bnn.InstanceNorm2d(3)(torch.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match="trailing sizes of the input"):
        family.layer_norm(torch.randn(2, 3, 4), (5,))
    with pytest.raises(TypeError, match="floating-point"):
        family.group_norm(torch.ones(2, 4, 3, dtype=torch.long), 2)
    w = torch.ones(4)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\), expected \(6,\)"):
        family.group_norm(torch.randn(2, 6, 3), 2, w)


def test_batch_independence():
    # the per-sample members give each sample the same output whatever else is in the batch
    torch.manual_seed(7)
    x = torch.randn(6, 8, 4, 4)
    for fn in (lambda t: family.group_norm(t, 4), family.instance_norm, lambda t: family.layer_norm(t, t.shape[1:])):
        torch.testing.assert_close(fn(x)[:2], fn(x[:2]))


# ----------------------------------------------------------------------------------- the small CNN


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["layer", "instance", "group"])
def test_small_cnn_trains_with_each_member(norm):
    from bnlab.models import SmallCNN, count_parameters

    torch.manual_seed(0)
    model = SmallCNN(1, (8, 8), 4, norm=norm)
    kinds = {type(m) for m in model.modules()}
    expected = {"layer": bnn.LayerNorm, "instance": bnn.InstanceNorm2d, "group": bnn.GroupNorm}[norm]
    assert expected in kinds
    assert count_parameters(model)["bn"] == {"layer": 2 * (16 * 64 + 32 * 16 + 64), "instance": 224, "group": 224}[
        norm
    ]
    # a learnable task: the class is which quadrant holds a bright blob
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (64,), generator=g)
    x = torch.randn(64, 1, 8, 8, generator=g) * 0.3
    for i, c in enumerate(y.tolist()):
        r, q = divmod(c, 2)
        x[i, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 2.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_doctests_of_the_family():
    import doctest

    import bnlab.axes
    import bnlab.reference

    for module in (bnlab.axes, bnlab.reference, family):
        result = doctest.testmod(module, verbose=False)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_keeps_its_dtype_and_matches_float32(dtype):
    torch.manual_seed(8)
    x = torch.randn(4, 8, 5, 5) * 3 + 2
    w, b = torch.randn(8), torch.randn(8)
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    cases = [
        (family.group_norm(x.to(dtype), 4, w, b), F.group_norm(x, 4, w, b)),
        (family.instance_norm(x.to(dtype), weight=w, bias=b), F.instance_norm(x, weight=w, bias=b)),
        (family.layer_norm(x.to(dtype), (8, 5, 5)), F.layer_norm(x, (8, 5, 5))),
    ]
    for ours, ref32 in cases:
        assert ours.dtype == dtype
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours.float(), ref32, atol=tol * 4, rtol=tol)


@pytest.mark.parametrize("norm", ["layer", "instance", "group"])
def test_models_with_the_family_stay_traceable_and_fold(norm):
    import warnings

    import bnlab
    from bnlab.models import SmallCNN

    torch.manual_seed(9)
    model = SmallCNN(1, (8, 8), 10, norm=norm).eval()
    x = torch.randn(4, 1, 8, 8)
    traced = torch.fx.symbolic_trace(model)
    # the family's modules are leaves, one call_module node each, as torch's layers are
    members = (bnn.GroupNorm, bnn.LayerNorm, bnn.InstanceNorm2d)
    modules = [traced.get_submodule(n.target) for n in traced.graph.nodes if n.op == "call_module"]
    assert any(isinstance(m, members) for m in modules), traced.code
    torch.testing.assert_close(traced(x), model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fold traces the whole model: no fallback warning
        folded = bnlab.fold(model)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_export_and_fullgraph_compile_match_torch():
    torch.manual_seed(10)
    x = torch.randn(4, 8, 5, 5)
    pairs = [
        (bnn.GroupNorm(4, 8), torch.nn.GroupNorm(4, 8)),
        (bnn.LayerNorm((8, 5, 5)), torch.nn.LayerNorm((8, 5, 5))),
        (bnn.InstanceNorm2d(8, affine=True), torch.nn.InstanceNorm2d(8, affine=True)),
    ]
    for ours, theirs in pairs:
        with torch.no_grad():
            for p in theirs.parameters():
                p.normal_()
        ours.load_state_dict(theirs.state_dict())
        exported = torch.export.export(ours, (x,)).module()
        torch.testing.assert_close(exported(x), theirs(x))
        compiled = torch.compile(ours, fullgraph=True)
        xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
        yo, yt = compiled(xo), theirs(xt)
        torch.testing.assert_close(yo, yt)
        yo.square().sum().backward()
        yt.square().sum().backward()
        torch.testing.assert_close(xo.grad, xt.grad)


# -- where torch's answer is the one to give (issue 15, item 4) --------------------------------------------


@pytest.mark.parametrize(
    "make, x",
    [
        (lambda t: t.GroupNorm(4, 4), torch.randn(3, 4, 1, 1)),  # G = C, one location: sets of one value
        (lambda t: t.GroupNorm(2, 2), torch.randn(3, 2)),
        (lambda t: t.LayerNorm(1), torch.randn(5, 1)),
        (lambda t: t.LayerNorm([1, 1]), torch.randn(2, 3, 1, 1)),
    ],
    ids=["group-4x1x1", "group-2d", "layer-1", "layer-1x1"],
)
def test_sets_of_one_value_give_the_bias_as_torch(make, x):
    theirs, ours = make(torch.nn).double(), make(bnn).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict(theirs.state_dict())
    xo, xt = x.double().requires_grad_(), x.double().requires_grad_()
    yo, yt = ours(xo), theirs(xt)
    torch.testing.assert_close(yo, yt)
    dy = torch.randn_like(yt)
    go = torch.autograd.grad(yo, [xo, *ours.parameters()], dy)
    gt = torch.autograd.grad(yt, [xt, *theirs.parameters()], dy)
    for a, e in zip(go, gt, strict=True):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-6)  # dx = 0, dγ ≈ 0, dβ = Σ dy


def test_instance_norm_still_refuses_one_location_as_torch():
    x = torch.randn(2, 3, 1, 1)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        torch.nn.InstanceNorm2d(3)(x)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        bnn.InstanceNorm2d(3)(x)


@pytest.mark.parametrize("shape", [(2, 6, 3, 2, 2, 2), (2, 6, 2, 1, 3, 2, 2)])
def test_group_norm_accepts_any_rank_as_torch(shape):
    torch.manual_seed(11)
    theirs = torch.nn.GroupNorm(3, 6).double()
    with torch.no_grad():
        theirs.weight.normal_(), theirs.bias.normal_()
    ours = bnn.GroupNorm(3, 6).double()
    ours.load_state_dict(theirs.state_dict())
    xo = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_()
    xt = xo.detach().clone().requires_grad_()
    yo, yt = ours(xo), theirs(xt)
    torch.testing.assert_close(yo, yt)
    dy = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(yo, xo, dy)[0], torch.autograd.grad(yt, xt, dy)[0])


@pytest.mark.parametrize(
    "make, shape, fmt",
    [
        (lambda t: t.GroupNorm(3, 6), (2, 6, 4, 5), torch.channels_last),
        (lambda t: t.GroupNorm(2, 6), (2, 6, 3, 4, 5), torch.channels_last_3d),
        (lambda t: t.GroupNorm(6, 6), (2, 6, 1, 1), torch.channels_last),
        (lambda t: t.LayerNorm((6, 4, 5)), (2, 6, 4, 5), torch.channels_last),
        (lambda t: t.InstanceNorm2d(6, affine=True), (2, 6, 4, 5), torch.channels_last),
    ],
    ids=["group-2d", "group-3d", "group-sets-of-one", "layer", "instance"],
)
def test_memory_format_of_the_output_is_torchs(make, shape, fmt):
    """torch's group_norm keeps a channels_last input's format (its layer and instance norm return NCHW-contiguous
    outputs): the same formats, and the same values, as torch."""
    torch.manual_seed(12)
    theirs, ours = make(torch.nn).double(), make(bnn).double()  # float64: torch's x̂ of a set of one is ~1e-5 off 0
    with torch.no_grad():  # in float32 (rounding divided by √ε), bnlab's is exactly 0
        for p in theirs.parameters():
            p.normal_()
    ours.load_state_dict(theirs.state_dict())
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 2).to(memory_format=fmt)
    yo, yt = ours(x), theirs(x)
    assert yo.is_contiguous(memory_format=fmt) == yt.is_contiguous(memory_format=fmt)
    assert yo.is_contiguous() == yt.is_contiguous()
    torch.testing.assert_close(yo, yt, atol=1e-8, rtol=1e-8)


_TORCH_TWIN = {torch.nn.GroupNorm: bnn.GroupNorm, torch.nn.LayerNorm: bnn.LayerNorm,
               torch.nn.InstanceNorm1d: bnn.InstanceNorm1d, torch.nn.InstanceNorm2d: bnn.InstanceNorm2d,
               torch.nn.InstanceNorm3d: bnn.InstanceNorm3d}  # fmt: skip


def _torch_module_samples():
    from torch.testing._internal.common_modules import module_db

    for info in module_db:
        if info.module_cls in _TORCH_TWIN:
            for training in (True, False):
                for i, s in enumerate(info.module_inputs_func(info, "cpu", torch.float64, True, training)):
                    name = f"{info.module_cls.__name__}-{s.desc or i}-{'train' if training else 'eval'}"
                    yield pytest.param(info.module_cls, s, training, id=name)


@pytest.mark.parametrize("torch_cls, sample, training", list(_torch_module_samples()))
def test_torch_module_samples_of_the_family_behave_as_torch(torch_cls, sample, training):
    """PyTorch's own module samples (torch.testing._internal.common_modules) for the family, float64, twice."""
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    theirs = torch_cls(*args, **kwargs).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    ours = _TORCH_TWIN[torch_cls](*args, **kwargs).double()
    ours.load_state_dict(theirs.state_dict())
    theirs.train(training), ours.train(training)
    x = sample.forward_input.args[0].detach()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):
        ya, yb = theirs(xa), ours(xb)
        torch.testing.assert_close(yb, ya, atol=1e-10, rtol=1e-10)
    dy = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [xa, *theirs.parameters()], dy)
    gb = torch.autograd.grad(yb, [xb, *ours.parameters()], dy)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-9)
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, atol=1e-10, rtol=1e-10)
