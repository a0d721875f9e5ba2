"""The planned call (bnlab.nn._planned): a plain eager CPU call of ``batch_norm`` is checked in full once per
configuration, then runs the native kernels directly. It must give the bits the general path gives (the same
call with explicit ``axes``, which never takes the plan), refuse everything the general path refuses with the
same error and no state changed, and step aside under every mode, transform and tracer."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import bnlab.nn.functional as BF
from bnlab.kernels import native
from bnlab.nn import _planned

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: nothing is planned")

CL = torch.channels_last
# above and below nn._dispatch.SMALL_NUMEL (small NCHW training calls run torch's own batch norm), both layouts,
# (N, C) and (N, C, L), float64
CASES = [
    ((64, 16, 8, 8), None, torch.float32),
    ((64, 16, 8, 8), CL, torch.float32),
    ((4, 3, 5, 5), None, torch.float32),
    ((4, 3, 5, 5), CL, torch.float32),
    ((40, 6), None, torch.float32),
    ((8, 5, 30), None, torch.float64),
]
IDS = ["nchw", "cl", "small-nchw", "small-cl", "2d", "3d-f64"]


def _tensors(shape, fmt, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).to(dtype)
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    c = shape[1]
    w, b = torch.randn(c, generator=g, dtype=dtype), torch.randn(c, generator=g, dtype=dtype)
    rm, rv = torch.randn(c, generator=g, dtype=dtype), torch.rand(c, generator=g, dtype=dtype) + 0.5
    return x, w, b, rm, rv


def _general_axes(x):
    return tuple(a for a in range(x.dim()) if a != 1)


def _step(x, w, b, rm, rv, training, momentum, relu, axes, grad):
    """One call (and its backward where ``grad``): the output, the gradients, the running statistics after."""
    rm, rv = (None, None) if rm is None else (rm.clone(), rv.clone())
    xs, ws, bs = (t.detach().clone().requires_grad_(grad) for t in (x, w, b))
    y = BF.batch_norm(xs, rm, rv, ws, bs, training, momentum, 1e-5, axes, activation="relu" if relu else None)
    grads = ()
    if grad:
        grads = torch.autograd.grad(y, (xs, ws, bs), torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y))
    return (y.detach(), *grads) + (() if rm is None else (rm, rv))


@pytest.mark.parametrize("shape,fmt,dtype", CASES, ids=IDS)
def test_the_planned_call_has_the_bits_of_the_general_path(shape, fmt, dtype):
    """Eval and training (with and without running statistics, fused ReLU, autograd recording or not), called
    in turns on one configuration so that every plan is made and then used: every output, gradient and running
    statistic has the general path's bits."""
    x, w, b, rm, rv = _tensors(shape, fmt, dtype)
    for _ in range(2):
        for training, stats in ((True, (rm, rv)), (True, (None, None)), (False, (rm, rv))):
            for relu in (False, True):
                for grad in (False, True):
                    planned = _step(x, w, b, *stats, training, 0.1, relu, None, grad)
                    general = _step(x, w, b, *stats, training, 0.1, relu, _general_axes(x), grad)
                    assert len(planned) == len(general) == 1 + 3 * grad + 2 * (stats[0] is not None)
                    for p, g in zip(planned, general, strict=True):
                        assert p.dtype == g.dtype and torch.equal(p, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", ["both", "no weight", "no bias", "neither"])
def test_small_configurations_have_the_bits_of_the_general_path(dtype, affine):
    """Small NCHW training calls, which the plan hands to torch's batch norm where autograd records them: with
    and without γ and β, gradients asked of x only or of γ only, under no_grad, each momentum: the bits of the
    general path (outputs, gradients, running statistics), on the plan's first call and on a later one."""
    x, w, b, rm, rv = _tensors((16, 8, 4, 4), None, dtype, seed=6)
    w = None if affine in ("no weight", "neither") else w
    b = None if affine in ("no bias", "neither") else b
    dy = torch.linspace(-1, 1, x.numel(), dtype=dtype).view_as(x)
    for wants in ("x", "weight", "nothing"):
        if wants == "weight" and w is None:
            continue
        for momentum in (0.1, 1.0):
            results = []
            for axes in (None, None, _general_axes(x)):
                xs, ws = x.clone().requires_grad_(wants == "x"), None if w is None else w.clone()
                if ws is not None:
                    ws.requires_grad_(wants == "weight")
                stats = (rm.clone(), rv.clone())
                with torch.set_grad_enabled(wants != "nothing"):
                    y = BF.batch_norm(xs, *stats, ws, b, True, momentum, 1e-5, axes)
                grads = torch.autograd.grad(y, xs if wants == "x" else ws, dy) if wants != "nothing" else ()
                results.append((y.detach(), *grads, *stats))
            for got in results[:2]:
                assert len(got) == len(results[2])
                for p, g in zip(got, results[2], strict=True):
                    assert p.dtype == g.dtype and torch.equal(p, g), (wants, momentum)


def test_a_large_configuration_is_planned_and_runs_the_native_kernels(monkeypatch):
    """After the first call the configuration has a plan, and every call runs the native family's
    implementation once (the chain walk is not repeated)."""
    x, w, b, rm, rv = _tensors((64, 16, 8, 8), CL, torch.float32, seed=3)
    BF.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
    key = (x.shape, x.stride(), x.dtype, True, 1e-5, 0.1, None, False, False, False, False)
    assert _planned.plans[key] == ((0, 2, 3), 64 * 8 * 8, (64, 16, 64, 1), False)
    calls = []
    real = native.IMPLEMENTATION["forward"]
    monkeypatch.setitem(native.IMPLEMENTATION, "forward", lambda *a: calls.append(1) or real(*a))
    for _ in range(3):
        BF.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
    assert calls == [1, 1, 1]


def test_small_nchw_training_runs_torchs_batch_norm_only_where_autograd_records_it(monkeypatch):
    """A small NCHW training call (at most nn._dispatch.SMALL_NUMEL values) hands over to torch's own batch norm
    only where autograd records it: what that saves is an autograd Function's Python. A call that autograd does
    not record (no_grad, parameters without grad) runs the native kernels with no autograd node. Both are
    planned: after the plan's first call, only a call with explicit axes runs the general path's checks."""
    x, w, b, rm, rv = _tensors((16, 8, 4, 4), None, torch.float32, seed=5)
    calls = []
    real = native.IMPLEMENTATION["forward"]
    monkeypatch.setitem(native.IMPLEMENTATION, "forward", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(_planned, "plans", {})  # (this configuration's plan made here)
    general, real_checked = [], BF.checked_axes  # the general path's full checks, counted
    monkeypatch.setattr(BF, "checked_axes", lambda *a: general.append(1) or real_checked(*a))
    with torch.no_grad():
        for axes in (None, None, None, _general_axes(x)):
            y = BF.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5, axes)
            assert y.grad_fn is None
    assert calls == [1, 1, 1, 1] and len(general) == 2  # (the plan's first call, and the explicit axes)
    key = (x.shape, x.stride(), x.dtype, True, 1e-5, 0.1, None, False, False, False, False)
    assert _planned.plans[key] == ((0, 2, 3), 16 * 4 * 4, (16, 8, 16, 0), True)
    calls.clear()
    general.clear()
    for axes in (None, _general_axes(x)):
        y = BF.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5, axes)  # (grad mode on, nothing requires grad)
        assert y.grad_fn is None
    assert calls == [1, 1] and len(general) == 1  # (the explicit axes)
    calls.clear()
    general.clear()
    for axes in (None, _general_axes(x)):
        y = BF.batch_norm(x, rm, rv, w.clone().requires_grad_(), b, True, 0.1, 1e-5, axes)
        assert type(y.grad_fn).__name__.startswith("NativeBatchNormBackward"), y.grad_fn
    assert not calls and len(general) == 1


def _refusal(fn):
    with pytest.raises((TypeError, ValueError, RuntimeError)) as info:
        fn()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_after_planning_bad_tensors_are_refused_as_before_and_change_nothing(training):
    """A planned configuration called with a parameter of another shape, dtype or device kind, or a running
    statistic that is now missing, gets the general path's error (same type, same words) and the running
    statistics keep their bits."""
    x, w, b, rm, rv = _tensors((64, 16, 8, 8), None, torch.float32, seed=4)
    BF.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5)  # planned
    bad = {
        "weight of 17": dict(weight=torch.ones(17)),
        "float64 bias": dict(bias=torch.zeros(16, dtype=torch.float64)),
        "int running mean": dict(running_mean=torch.zeros(16, dtype=torch.int64)),
        "2-D weight": dict(weight=torch.ones(16, 1)),
    }
    for name, change in bad.items():
        args = dict(running_mean=rm, running_var=rv, weight=w, bias=b)
        args.update(change)
        before = (rm.clone(), rv.clone())
        planned = _refusal(lambda a=args: BF.batch_norm(x, training=training, momentum=0.1, eps=1e-5, **a))
        general = _refusal(lambda a=args: BF.batch_norm(x, training=training, momentum=0.1, eps=1e-5,
                                                        axes=(0, 2, 3), **a))  # fmt: skip
        assert planned == general, name
        assert torch.equal(rm, before[0]) and torch.equal(rv, before[1]), name


def test_a_cumulative_average_without_a_count_is_refused_after_a_call_without_statistics():
    """momentum=None with no running statistics is a valid call (nothing to update); the same configuration
    with running statistics is refused with the general path's message, nothing changed."""
    x, w, b, rm, rv = _tensors((64, 16, 8, 8), None, torch.float32, seed=5)
    BF.batch_norm(x, None, None, w, b, True, None, 1e-5)
    before = (rm.clone(), rv.clone())
    with pytest.raises(ValueError, match="momentum=None"):
        BF.batch_norm(x, rm, rv, w, b, True, None, 1e-5)
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1])


def test_inf_in_a_planned_configuration_takes_the_general_path():
    """A planned training call whose input holds inf: the native kernel declines, nothing has changed, and the
    general path's result follows (NaN/inf propagate; the channel's running statistics keep their values)."""
    x, w, b, rm, rv = _tensors((64, 16, 8, 8), None, torch.float32, seed=6)
    BF.batch_norm(x, rm.clone(), rv.clone(), w, b, True, 0.1, 1e-5)  # planned
    x = x.clone()
    x[3, 2, 1, 1] = float("inf")
    planned = _step(x, w, b, rm, rv, True, 0.1, False, None, False)
    general = _step(x, w, b, rm, rv, True, 0.1, False, (0, 2, 3), False)
    for p, g in zip(planned, general, strict=True):
        assert torch.equal(p.nan_to_num(), g.nan_to_num()) and torch.equal(p.isnan(), g.isnan())
    assert torch.equal(planned[-2][2], rm[2]) and torch.equal(planned[-1][2], rv[2])


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_modes_transforms_and_forward_ad_are_not_bypassed_by_a_plan():
    """With the configuration planned, a torch-dispatch mode still sees the call's ops, forward-mode AD still
    gets a tangent (jvp of BN = the closed form, checked against torch), and vmap still gives per-entry
    statistics."""
    x, w, b, rm, rv = _tensors((64, 16, 8, 8), None, torch.float32, seed=7)
    BF.batch_norm(x, None, None, w, b, True, 0.1, 1e-5)  # planned
    with _Seen() as seen:
        y = BF.batch_norm(x, None, None, w, b, True, 0.1, 1e-5)
    assert torch.ops.bnlab.batch_norm_train.default in seen.ops, "the plan bypassed the mode"
    torch.testing.assert_close(y, torch.nn.functional.batch_norm(x, None, None, w, b, True), rtol=1e-5, atol=1e-5)
    t = torch.randn_like(x)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, t)
        tangent = torch.autograd.forward_ad.unpack_dual(BF.batch_norm(dual, None, None, w, b, True)).tangent
        ref = torch.autograd.forward_ad.unpack_dual(torch.nn.functional.batch_norm(dual, None, None, w, b, True))
    assert tangent is not None
    torch.testing.assert_close(tangent, ref.tangent, rtol=1e-4, atol=1e-4)
    xs = torch.stack([x, 3 * x + 2])
    got = torch.vmap(lambda v: BF.batch_norm(v, None, None, w, b, True))(xs)
    torch.testing.assert_close(got[1], got[0], rtol=1e-4, atol=1e-4)  # each entry normalized by its own stats


def test_the_planned_backward_steps_aside_where_the_general_one_differs():
    """The planned Function's backward runs the native kernel only in the plain case: a double backward
    (create_graph: the general backward's differentiable closed form), a dy in another layout, and a mode
    entered for the backward alone (it sees the custom operator) all give the general path's results."""
    x, w, b, rm, rv = _tensors((64, 16, 8, 8), None, torch.float32, seed=8)

    def grads(axes, dy, create_graph=False, mode=None):
        xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
        y = BF.batch_norm(xs, None, None, ws, bs, True, 0.1, 1e-5, axes)
        if mode is None:
            out = torch.autograd.grad(y, (xs, ws, bs), dy, create_graph=create_graph)
        else:
            with mode:
                out = torch.autograd.grad(y, (xs, ws, bs), dy)
        if create_graph:  # second order: d/dx of Σ dx²
            out = out + torch.autograd.grad(out[0].pow(2).sum(), (xs,))
        return [t.detach() for t in out]

    dy = torch.linspace(-1, 1, x.numel()).view_as(x)
    for kwargs in (dict(create_graph=True), dict(dy=dy.contiguous(memory_format=CL))):
        kwargs.setdefault("dy", dy)
        for p, g in zip(grads(None, **kwargs), grads((0, 2, 3), **kwargs), strict=True):
            assert torch.equal(p, g)
    seen = _Seen()
    planned = grads(None, dy, mode=seen)
    assert torch.ops.bnlab.batch_norm_backward.default in seen.ops
    for p, g in zip(planned, grads((0, 2, 3), dy), strict=True):
        assert torch.equal(p, g)
