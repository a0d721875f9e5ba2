"""Batch Renormalization (Ioffe 2017): the NumPy reference, bnlab.nn.BatchRenorm*d and batch_renorm.

Layers of checks: the reference against numerical gradients and an independent torch formula; the layer
against the reference in float64 (one step, with r and d clipped at both bounds and unclipped); the two
identities other libraries test (BN during warm-up, BN in eval); gradcheck; dtypes; the inference tools.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import bnlab
from bnlab import reference as ref
from bnlab.nn import BatchNorm2d, BatchRenorm1d, BatchRenorm2d, BatchRenorm3d, paper_relaxation
from bnlab.nn.functional import batch_renorm

EPS = 1e-5
RMAX, DMAX = 2.0, 1.0
MOMENTUM = 0.3
# per channel: batch std s, batch mean mb, running mean rm, running var rv. With rmax = 2, dmax = 1:
#   c0: r = 4/1 → clipped to 2,      d = 5/1 → clipped to 1
#   c1: r = 0.5/4 → clipped to 0.5,  d = −8/4 → clipped to −1
#   c2: r = 1.5 (free),              d = 0.5 (free)
#   c3: r = 3/2 = 1.5 (free),        d = 10/2 → clipped to 1
S = np.array([4.0, 0.5, 1.5, 3.0])
MB = np.array([5.0, -6.0, 0.5, 10.0])
RM = np.array([0.0, 2.0, 0.0, 0.0])
RV = np.array([1.0, 16.0, 1.0, 4.0])
C = 4


def _shaped(v, feature_shape):
    """A per-channel vector spread over the feature shape (C,) or (C, *spatial)."""
    return np.broadcast_to(v.reshape((C,) + (1,) * (len(feature_shape) - 1)), feature_shape).copy()


def _input(shape, axes, seed=0):
    """x whose batch mean and std over ``axes`` are exactly MB and S (per channel)."""
    z = np.random.default_rng(seed).normal(size=shape)
    z = (z - z.mean(axis=axes, keepdims=True)) / z.std(axis=axes, keepdims=True)
    cshape = (1, C) + (1,) * (len(shape) - 2)
    return z * S.reshape(cshape) + MB.reshape(cshape)


def _feature_shape(shape, axes):
    return tuple(n for i, n in enumerate(shape) if i not in axes)


# -- the reference ------------------------------------------------------------------------------------------
def test_reference_backward_matches_numerical_gradients_where_r_and_d_are_clipped():
    # with every r and d at a bound they are locally constant, so the stop-gradient rule is the true gradient
    axes = (0, 2)
    x = _input((5, C, 3), axes)
    sel = [0, 1]  # the channels where both r and d are clipped
    x = x[:, sel]
    gamma, beta = np.array([1.5, -0.7]), np.array([0.2, 0.3])
    rm, rv = RM[sel], RV[sel]
    dy = np.random.default_rng(1).normal(size=x.shape)

    def loss(x_, g_, b_):
        return float((ref.renorm_forward(x_, g_, b_, rm, rv, axes, EPS, RMAX, DMAX)[0] * dy).sum())

    _, cache = ref.renorm_forward(x, gamma, beta, rm, rv, axes, EPS, RMAX, DMAX)
    assert np.allclose(cache.r.ravel(), [RMAX, 1 / RMAX]) and np.allclose(cache.d.ravel(), [DMAX, -DMAX])
    dx, dgamma, dbeta = ref.renorm_backward(dy, cache)
    h = 1e-6
    for arr, grad, args in ((x, dx, 0), (gamma, dgamma, 1), (beta, dbeta, 2)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            plus, minus = [x.copy(), gamma.copy(), beta.copy()], [x.copy(), gamma.copy(), beta.copy()]
            plus[args][i] += h
            minus[args][i] -= h
            num[i] = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_reference_equals_an_independent_torch_formula_with_r_and_d_free():
    # the paper's lines in torch ops with r and d detached: autograd gives the stop-gradient backward
    axes = (0, 2, 3)
    x = _input((6, C, 3, 2), axes)
    gamma, beta = np.array([1.5, -0.7, 0.9, 1.1]), np.array([0.2, 0.3, -0.1, 0.0])
    dy = np.random.default_rng(1).normal(size=x.shape)
    y, cache = ref.renorm_forward(x, gamma, beta, RM, RV, axes, EPS, RMAX, DMAX)
    dx, dgamma, dbeta = ref.renorm_backward(dy, cache)

    xt = torch.tensor(x, requires_grad=True)
    g, b = (torch.tensor(v, requires_grad=True) for v in (gamma, beta))
    view = (1, C, 1, 1)
    mu_B = xt.mean(dim=axes, keepdim=True)
    sigma_B = torch.sqrt(((xt - mu_B) ** 2).mean(dim=axes, keepdim=True) + EPS)
    sigma = torch.sqrt(torch.tensor(RV).view(view) + EPS)
    r = (sigma_B / sigma).clamp(1 / RMAX, RMAX).detach()
    d = ((mu_B - torch.tensor(RM).view(view)) / sigma).clamp(-DMAX, DMAX).detach()
    yt = g.view(view) * ((xt - mu_B) / sigma_B * r + d) + b.view(view)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dgamma, g.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dbeta, b.grad.numpy(), atol=1e-12)
    # rmax = 1, dmax = 0 is Alg. 1
    y_bn, _ = ref.forward(x, gamma, beta, axes, EPS)
    np.testing.assert_allclose(ref.renorm_forward(x, gamma, beta, RM, RV, axes, EPS, 1.0, 0.0)[0], y_bn, atol=1e-12)


# -- one training step against the float64 closed form ------------------------------------------------------
CASES = {
    "channel-1d": (BatchRenorm1d, (6, C, 5), "channel", False),
    "channel-2d": (BatchRenorm2d, (6, C, 3, 4), "channel", False),
    "channel-2d-nhwc": (BatchRenorm2d, (6, C, 3, 4), "channel", True),
    "channel-3d": (BatchRenorm3d, (3, C, 2, 3, 2), "channel", False),
    "activation-2d": (BatchRenorm2d, (7, C, 2, 3), "activation", False),
    "activation-2d-nhwc": (BatchRenorm2d, (7, C, 2, 3), "activation", True),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_step_matches_the_float64_closed_form(case, dtype):
    cls, shape, per, nhwc = CASES[case]
    axes = (0,) if per == "activation" else tuple(a for a in range(len(shape)) if a != 1)
    fshape = _feature_shape(shape, axes)
    x64 = _input(shape, axes)
    rng = np.random.default_rng(2)
    gamma, beta = rng.uniform(0.5, 1.5, fshape), rng.normal(size=fshape)
    rm, rv = _shaped(RM, fshape), _shaped(RV, fshape)
    dy = rng.normal(size=shape)

    y_ref, cache = ref.renorm_forward(x64, gamma, beta, rm, rv, axes, EPS, RMAX, DMAX)
    dx_ref, dg_ref, db_ref = ref.renorm_backward(dy, cache)
    r, d = (v.reshape(-1, C)[0] if per == "channel" else v.reshape(C, -1)[:, 0] for v in (cache.r, cache.d))
    assert np.allclose(r, [RMAX, 1 / RMAX, 1.5, 1.5]) and np.allclose(d, [DMAX, -DMAX, 0.5, DMAX])  # clipped both ways
    m = cache.m
    sigma2_B = cache.sigma_B**2 - EPS
    rm_ref = (1 - MOMENTUM) * rm + MOMENTUM * cache.mu_B.reshape(fshape)
    rv_ref = (1 - MOMENTUM) * rv + MOMENTUM * (m / (m - 1) * sigma2_B).reshape(fshape)

    layer = cls(C, eps=EPS, momentum=MOMENTUM, rmax=RMAX, dmax=DMAX, per=per,
                spatial_size=shape[2:] if per == "activation" else None, dtype=dtype)  # fmt: skip
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(gamma))
        layer.bias.copy_(torch.tensor(beta))
        layer.running_mean.copy_(torch.tensor(rm))
        layer.running_var.copy_(torch.tensor(rv))
    x = torch.tensor(x64, dtype=dtype)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = layer(x)
    y.backward(torch.tensor(dy, dtype=dtype))
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=2e-4)
    np.testing.assert_allclose(y.detach().numpy(), y_ref, **tol)
    np.testing.assert_allclose(x.grad.numpy(), dx_ref, **tol)
    np.testing.assert_allclose(layer.weight.grad.numpy(), dg_ref, **tol)
    np.testing.assert_allclose(layer.bias.grad.numpy(), db_ref, **tol)
    np.testing.assert_allclose(layer.running_mean.numpy(), rm_ref, **tol)
    np.testing.assert_allclose(layer.running_var.numpy(), rv_ref, **tol)
    assert int(layer.num_batches_tracked) == 1


def test_momentum_none_is_the_cumulative_average_of_bn():
    torch.manual_seed(0)
    xs = [torch.randn(8, 3, 4, 4) * (i + 1) + i for i in range(3)]
    brn, bn = BatchRenorm2d(3, momentum=None), nn.BatchNorm2d(3, momentum=None)
    for x in xs:
        brn(x)
        bn(x)
    torch.testing.assert_close(brn.running_mean, bn.running_mean)
    torch.testing.assert_close(brn.running_var, bn.running_var)


# -- the identities: BN during warm-up, BN in eval ----------------------------------------------------------
def test_equal_to_bn_during_warm_up_and_renormalizing_from_the_next_step():
    torch.manual_seed(0)
    warm = 2
    brn = BatchRenorm2d(C, momentum=MOMENTUM, rmax=RMAX, dmax=DMAX, warmup_steps=warm)
    bn = BatchNorm2d(C, momentum=MOMENTUM)
    with torch.no_grad():
        for layer in (brn, bn):
            layer.weight.uniform_(0.5, 1.5)
            layer.bias.normal_()
    bn.load_state_dict(brn.state_dict())
    xs = [torch.randn(6, C, 3, 3) * 4 + 3 for _ in range(warm + 1)]
    for step, x in enumerate(xs):
        before = {k: v.clone() for k, v in brn.state_dict().items()}
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = brn(xa), bn(xb)
        ya.square().sum().backward()
        yb.square().sum().backward()
        if step < warm:
            assert brn.limits(step) == (1.0, 0.0)
            torch.testing.assert_close(ya, yb, rtol=0, atol=0)
            torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
            torch.testing.assert_close(brn.weight.grad, bn.weight.grad, rtol=0, atol=0)
            torch.testing.assert_close(brn.running_var, bn.running_var, rtol=0, atol=0)
        else:  # step == warmup_steps: renormalizing, with the running statistics as they were on entry
            assert brn.limits(step) == (RMAX, DMAX)
            assert not torch.allclose(ya, yb, atol=1e-3)
            gamma, beta, rm, rv = (
                before[k].double().numpy() for k in ("weight", "bias", "running_mean", "running_var")
            )
            y_ref, _ = ref.renorm_forward(x.double().numpy(), gamma, beta, rm, rv, (0, 2, 3), EPS, RMAX, DMAX)
            np.testing.assert_allclose(ya.detach().numpy(), y_ref, rtol=1e-4, atol=2e-4)
            torch.testing.assert_close(brn.running_mean, bn.running_mean)  # the update is BN's
            torch.testing.assert_close(brn.running_var, bn.running_var)
    assert int(brn.num_batches_tracked) == warm + 1


@pytest.mark.parametrize("per", ["channel", "activation"])
def test_eval_is_bn_eval_and_state_dicts_load_both_ways(per):
    torch.manual_seed(0)
    kw = dict(per=per, spatial_size=(3, 3)) if per == "activation" else {}
    brn = BatchRenorm2d(C, **kw)
    for _ in range(3):
        brn(torch.randn(5, C, 3, 3) * 2 + 1)
    x = torch.randn(4, C, 3, 3)
    bn = BatchNorm2d(C, **kw)
    bn.load_state_dict(brn.state_dict())
    torch.testing.assert_close(brn.eval()(x), bn.eval()(x), rtol=0, atol=0)
    back = BatchRenorm2d(C, **kw)
    back.load_state_dict(bn.state_dict())
    assert all(torch.equal(v, brn.state_dict()[k]) for k, v in back.state_dict().items())
    if per == "channel":
        theirs = nn.BatchNorm2d(C)
        theirs.load_state_dict(brn.state_dict())
        torch.testing.assert_close(theirs.eval()(x), brn(x), rtol=1e-6, atol=1e-6)
    assert isinstance(brn, (nn.BatchNorm2d, BatchNorm2d))


# -- gradients ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per", ["channel", "activation"])
def test_gradcheck_float64(per):
    # r and d at their bounds everywhere (channels 0 and 1): there the stop-gradient rule is the exact
    # derivative, so numerical and analytical gradients must agree; momentum 0 keeps the state fixed
    shape = (5, 2, 3, 2)
    axes = (0,) if per == "activation" else (0, 2, 3)
    fshape = _feature_shape(shape, axes)
    x = torch.tensor(_input((5, C, 3, 2), axes)[:, :2], requires_grad=True)
    rm = torch.tensor(_shaped(RM, (C, *fshape[1:]))[:2])
    rv = torch.tensor(_shaped(RV, (C, *fshape[1:]))[:2])
    w = torch.rand(fshape, dtype=torch.float64, requires_grad=True)
    b = torch.randn(fshape, dtype=torch.float64, requires_grad=True)

    def f(x_, w_, b_):
        return batch_renorm(x_, rm, rv, w_, b_, True, 0.0, EPS, axes if per == "activation" else None,
                            rmax=RMAX, dmax=DMAX)  # fmt: skip

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


# -- dtypes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_with_float32_statistics(dtype):
    torch.manual_seed(0)
    x32 = torch.randn(16, C, 4, 4) * 3 + 100  # an offset that float16 sums would lose
    low = BatchRenorm2d(C, rmax=RMAX, dmax=DMAX)
    with torch.no_grad():
        low.running_mean.fill_(99.0)
        low.running_var.fill_(4.0)
    full = copy.deepcopy(low)
    xl = x32.to(dtype).requires_grad_(True)
    xf = xl.detach().float().requires_grad_(True)
    yl, yf = low(xl), full(xf)
    assert yl.dtype == dtype and low.running_var.dtype == torch.float32
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(yl.float(), yf, rtol=tol, atol=tol)
    # the statistics come from the same values in float32: running statistics agree closely
    torch.testing.assert_close(low.running_mean, full.running_mean, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(low.running_var, full.running_var, rtol=1e-5, atol=1e-5)
    (yl.float() ** 2).sum().backward()
    (yf**2).sum().backward()
    assert xl.grad.dtype == dtype and low.weight.grad.dtype == torch.float32
    torch.testing.assert_close(low.weight.grad, full.weight.grad, rtol=5e-2, atol=5e-1)


# -- schedules and bad arguments -----------------------------------------------------------------------------
def test_paper_relaxation_schedule_drives_rmax_and_dmax():
    sched = paper_relaxation(rmax_steps=(2, 6), dmax_steps=(2, 4))
    assert [sched["rmax"](s) for s in (0, 2, 4, 6, 9)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert [sched["dmax"](s) for s in (0, 2, 3, 4, 9)] == [0.0, 0.0, 2.5, 5.0, 5.0]
    torch.manual_seed(0)
    brn = BatchRenorm2d(C, momentum=MOMENTUM, **sched)
    twin = copy.deepcopy(brn)  # schedules are plain objects: the layer copies (and pickles)
    for step in range(5):
        x = torch.randn(4, C, 3, 3) * 5 + 2
        rm, rv = brn.running_mean.clone(), brn.running_var.clone()
        y = brn(x)
        expect = batch_renorm(x, rm, rv, brn.weight, brn.bias, True, MOMENTUM, EPS,
                              rmax=sched["rmax"](step), dmax=sched["dmax"](step))  # fmt: skip
        torch.testing.assert_close(y, expect, rtol=0, atol=0)
        twin(x)
    torch.testing.assert_close(twin.running_var, brn.running_var, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(rmax=0.5), "rmax must be ≥ 1"),
        (dict(dmax=-1.0), "dmax must be ≥ 0"),
        (dict(warmup_steps=-1), "warmup_steps must be an int ≥ 0"),
        (dict(warmup_steps=1.5), "warmup_steps must be an int ≥ 0"),
        (dict(rmax=float("nan")), "rmax must be a finite number"),
        (dict(dmax="5"), "dmax must be a finite number"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(kwargs, words):
    with pytest.raises(ValueError, match=words):
        BatchRenorm2d(C, **kwargs)
    if "warmup_steps" not in kwargs:
        with pytest.raises(ValueError, match=words):
            batch_renorm(torch.randn(4, C), torch.zeros(C), torch.ones(C), training=True, **kwargs)


def test_a_bad_schedule_value_is_refused_before_any_state_changes():
    brn = BatchRenorm2d(C, rmax=lambda step: 3.0 if step < 1 else 0.5)
    brn(torch.randn(4, C, 2, 2))
    state = copy.deepcopy(brn.state_dict())
    with pytest.raises(ValueError, match=r"rmax must be ≥ 1 .* schedule at step 1"):
        brn(torch.randn(4, C, 2, 2))
    assert all(torch.equal(v, brn.state_dict()[k]) for k, v in state.items())


def test_functional_needs_running_statistics_in_training_and_is_bn_in_eval():
    x = torch.randn(6, C, 3)
    with pytest.raises(ValueError, match="pass running_mean and running_var"):
        batch_renorm(x, None, None, training=True)
    rm, rv = torch.randn(C), torch.rand(C) + 0.5
    y = batch_renorm(x, rm, rv, training=False)
    torch.testing.assert_close(y, nn.functional.batch_norm(x, rm, rv, training=False))
    # one value per statistic: BN's error, and no state changed
    with pytest.raises(ValueError):
        batch_renorm(torch.randn(1, C), rm, rv, training=True)
    with pytest.raises(ValueError, match="momentum=None"):
        batch_renorm(x, rm, rv, training=True, momentum=None)


# -- the tools treat it as a BN layer -------------------------------------------------------------------------
def _net(**kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, C, 3), BatchRenorm2d(C, rmax=RMAX, dmax=DMAX, **kw), nn.ReLU(),
                        nn.Flatten(), nn.Linear(C * 4 * 4, 5), BatchRenorm1d(5))  # fmt: skip
    for _ in range(3):
        net(torch.randn(8, 3, 6, 6) * 2 + 1)
    return net


def test_fold_and_freeze_treat_it_as_bn():
    net = _net()
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        expected = copy.deepcopy(net).eval()(x)
        folded = bnlab.fold(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    frozen = bnlab.freeze(copy.deepcopy(net)).train()
    before = copy.deepcopy(frozen.state_dict())
    torch.testing.assert_close(frozen(x), expected, rtol=1e-6, atol=1e-6)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())


def test_recalibrate_treats_it_as_bn():
    net = _net()
    batches = [torch.randn(8, 3, 6, 6) * 3 - 1 for _ in range(3)]
    twin = copy.deepcopy(net)
    for i, m in enumerate(twin):  # the same network with plain BN layers, the same state
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            bn = (nn.BatchNorm2d if m.running_mean.shape == (C,) and i == 1 else nn.BatchNorm1d)(m.num_features)
            bn.load_state_dict(m.state_dict())
            twin[i] = bn
    bnlab.recalibrate(net, batches, progress=False)
    bnlab.recalibrate(twin, batches, progress=False)
    for a, b in zip(net.modules(), twin.modules(), strict=True):
        if isinstance(a, nn.modules.batchnorm._BatchNorm):
            torch.testing.assert_close(a.running_mean, b.running_mean)
            torch.testing.assert_close(a.running_var, b.running_var)
            assert int(a.num_batches_tracked) == 3  # untouched by the pass
    assert type(net[1]) is BatchRenorm2d and net[1].track_running_stats


def test_convert_leaves_it_as_it_is_and_convert_sync_synchronizes_it():
    net = nn.Sequential(nn.BatchNorm2d(C), BatchRenorm2d(C))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnlab.convert(net, to="bnlab")
    assert type(net[0]) is BatchNorm2d and type(net[1]) is BatchRenorm2d
    assert any("BatchRenorm2d" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnlab.convert(net, to="torch")
    assert type(net[0]) is nn.BatchNorm2d and type(net[1]) is BatchRenorm2d
    # issue 17 §1: synchronized BN treats it as a BN layer (it used to be refused): r and d from the merged
    # statistics, tested with real processes in tests/distributed/test_sync_renorm.py
    from bnlab.distributed import SyncBatchNorm, SyncBatchRenorm

    brn = net[1]
    bnlab.convert_sync(net)
    assert type(net[0]) is SyncBatchNorm and type(net[1]) is SyncBatchRenorm
    assert net[1].running_var is brn.running_var and (net[1].rmax, net[1].dmax) == (brn.rmax, brn.dmax)


def test_onnx_export_folds_it(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = bnlab.export_onnx(net, torch.randn(4, 3, 6, 6), tmp_path / "brn.onnx")
    assert report.max_error <= 1e-5 and report.path.exists()


def test_docs_examples_run(capsys):
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "renorm.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)
    out = capsys.readouterr().out
    assert "(1.0, 0.0) (3.0, 5.0)" in out and "[1.0, 1.0, 2.0, 3.0]" in out and "True" in out
