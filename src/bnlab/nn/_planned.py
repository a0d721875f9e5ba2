"""The planned call: what :func:`bnlab.nn.functional.batch_norm` decides for a plain eager CPU call, decided
once per configuration.

A call of a layer in a training loop repeats the same configuration thousands of times: the same input
shape, strides and dtype, the same parameters, eps and momentum. The general path checks every argument
(:func:`~bnlab.nn.functional.checked_axes`), picks the door (:func:`~bnlab.nn._dispatch.route`) and walks the
kernel chain (:func:`bnlab.kernels.select`) on every call; on a 2 MB tensor that Python costs ~40 µs, as much
as 20 % of the kernel, because the tensor has pushed the interpreter's own data out of the caches.

Here the first call of a configuration runs the full checks and asks the native family whether it covers
the configuration; the answer (a *plan*: the normalized axes and the values per channel, or "not planned")
is kept under a key of everything those checks read that a call cannot change behind the key's back — the
input's shape, strides and dtype, ``training``, ``eps``, ``momentum``, ``activation`` and which optional
tensors are given. What a call *can* change is verified on every call, cheaply: that no compiler, transform,
mode or forward AD is active (:func:`~bnlab.nn._dispatch.eager_state`), that every tensor is a plain CPU
tensor of the input's dtype, the parameters of shape (C,) and contiguous, whether autograd records the call,
and that the native library is loaded. Any miss returns None, and the caller takes the general path.

The math is the same code: the native family's ``IMPLEMENTATION`` (the function the general path's chain
walk reaches), the same autograd Functions where autograd records the call, the same overflow check of
σ²_B, and the caller's running-average update. A kernel that declines (inf/NaN in x) returns None before any
state changed, and the general path walks the chain on from there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import contract, native
from . import _dispatch

__all__ = ["batch_norm", "plans", "PlannedTrainFunction"]

_PLAIN = (Tensor, torch.nn.Parameter)
_MAX_PLANS = 1024
#: configuration key -> (axes, m', the native kernels' geometry of x, whether it is a small NCHW training call, which
#: torch's own batch norm runs where autograd records it) or False (the general path runs every call)
plans: dict = {}


def batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, activation):
    """``(y, μ_B, σ²_B, m')`` of a training call (``(y, None, None, 0)`` in eval) through the native kernels,
    where this configuration is planned and this call's tensors fit the plan; else None."""
    tx = type(x)
    if (tx is not Tensor and tx is not torch.nn.Parameter) or not x.is_cpu:
        return None
    if type(eps) is not float or (momentum is not None and type(momentum) is not float):
        return None
    if not _dispatch.eager_state():
        return None
    key = (x.shape, x.stride(), x.dtype, training, eps, momentum, activation,
           running_mean is None, running_var is None, weight is None, bias is None)  # fmt: skip
    plan = plans.get(key)
    if plan is None:
        plan = _plan(x, running_mean, running_var, weight, bias, training, momentum, eps, activation)
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plans[key] = plan
    if plan is False or not native.available():
        return None
    axes, count, geometry, small = plan
    dtype, c = x.dtype, x.shape[1]
    for t in (running_mean, running_var, weight, bias):
        if t is None:
            continue
        tt = type(t)
        if (tt is not Tensor and tt is not torch.nn.Parameter) or t.dtype != dtype or not t.is_cpu:
            return None
        if t.shape != (c,) or not t.is_contiguous():
            return None
    records = _dispatch.records_grad(x, running_mean, running_var, weight, bias)
    relu = activation == "relu"
    if not training:
        if records:
            y = _dispatch.KernelEvalFunction.apply(x, running_mean, running_var, weight, bias, axes, eps, relu)
            return y, None, None, 0
        y = native.normalize_at(geometry, x, running_mean, running_var, weight, bias, eps)
        return (y.clamp_min_(0) if relu else y), None, None, 0
    if records and small:  # torch's own batch norm where its statistics qualify, as in _dispatch.train: its C++
        out = _dispatch.torch_small_run(x, weight, bias, eps, relu)  # node costs less than a Function
        if out is not None:
            return (*out, count)
    if records:
        y, mean, var = PlannedTrainFunction.apply(x, weight, bias, axes, eps, relu)
    else:
        try:
            y, mean, var = native.IMPLEMENTATION["forward"](x, weight, bias, eps, axes, relu)
        except contract.Declined:  # nothing changed yet: the general path walks the chain on
            return None
        _dispatch.check_variance_fits(x, mean, var)
    return y, mean, var, count


def _plan(x, running_mean, running_var, weight, bias, training, momentum, eps, activation):
    """The plan of a configuration not seen before: the full checks (raising as the general path does), then
    whether the native family covers it: ``(axes, m', geometry, small)``, or False."""
    from .functional import checked_axes  # (functional imports this module)

    axes = checked_axes(x, None, training, running_mean, running_var, weight, bias, eps, momentum, activation)
    if training and running_mean is not None and momentum is None:
        return False  # the general path's error (a cumulative average needs the number of batches)
    if not native.static_covers(x, tuple(axes)):  # float32/float64, dense, per channel, not empty
        return False  # (whether the library is loaded, and the tensors' kinds, are asked on every call)
    # a small NCHW training call that autograd records (asked on every call) runs torch's own batch norm where
    # its statistics qualify (_dispatch._torch_small_train: the shape's part is asked here, once)
    small = training and _dispatch.small_train_shape(x, weight, bias, axes)
    return axes, x.numel() // x.shape[1], native.shape_of(x), small


class PlannedTrainFunction(_dispatch.KernelTrainFunction):
    """:class:`~bnlab.nn._dispatch.KernelTrainFunction` for a planned call: the forward runs the native family's
    implementation (the plan says it covers the call; a decline walks the chain on, as the general path), and
    the backward asks only what the plan could not know — that the call's state is still plain eager (no mode
    entered since), that autograd does not differentiate the backward itself, and that dy is a plain CPU tensor
    of x's dtype — before it runs the native backward; anything else takes the general backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps, relu):
        try:
            out = native.IMPLEMENTATION["forward"](x, weight, bias, eps, axes, relu)
        except contract.Declined:
            out = _dispatch.kernel_train(x, weight, bias, axes, eps, relu)  # the chain from the top, as before
        else:
            _dispatch.check_variance_fits(x, out[1], out[2])
        _dispatch.train_setup(ctx, (x, weight, bias, axes, eps, relu), out)
        return out

    @staticmethod
    def backward(ctx, dy, dmean, dvar):
        tdy = type(dy)
        if (
            (tdy is Tensor or tdy is torch.nn.Parameter)
            and not torch.is_grad_enabled()
            and dy.is_cpu
            and _dispatch.eager_state()
            and native.available()
        ):
            x, weight, mean, var, y = ctx.saved_tensors
            if dy.dtype == x.dtype:
                needs = ctx.needs_input_grad[:3]
                dx, dw, db = native.IMPLEMENTATION["backward"](dy, x, mean, var, weight, ctx.eps, ctx.axes, needs, y)
                return dx, dw, db, None, None, None
        return _dispatch.train_backward(ctx, dy, dmean, dvar)
