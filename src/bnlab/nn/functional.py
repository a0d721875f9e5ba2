"""``batch_norm``: torch's functional signature, any reduce axes, closed-form backward.

>>> import torch
>>> x = torch.randn(8, 3, 5, 5)
>>> rm, rv = torch.zeros(3), torch.ones(3)
>>> y = batch_norm(x, rm, rv, training=True, momentum=0.1)        # convolutional BN: axes (0, 2, 3)
>>> torch.allclose(y, torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-5)
True
>>> y = batch_norm(x, None, None, training=True, axes=(0,))        # per-activation BN: stats (3, 5, 5)

Numerical policy: statistics in at least float32 (float64 for float64 input) by Welford / two-pass
methods; normalization with the biased batch variance σ²_B; running variance updated with the unbiased
m'/(m'−1)·σ²_B (Alg. 2). Running statistics are updated as

    running = (1 − momentum) · running + momentum · batch_statistic

and only for features whose batch statistics are finite: a NaN or Inf in the input propagates to the
output (IEEE, as in every framework) but never poisons the running statistics. The guard is a
``torch.where`` on the device, so it costs no host synchronization.
"""

from __future__ import annotations

import torch

from .. import kernels
from ..axes import check_eps, check_input, check_momentum

__all__ = ["batch_norm", "default_axes", "check_tensors"]


def default_axes(ndim: int) -> tuple[int, ...]:
    """torch's convention: channels on axis 1, statistics over every other axis."""
    return tuple(a for a in range(ndim) if a != 1)


def check_tensors(x, axes, training, running_mean, running_var, weight, bias, eps, momentum):
    """Validate everything before any state changes; return the normalized axes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"batch norm needs a floating-point input, got {x.dtype}; convert it with x.float()")
    check_eps(eps)
    check_momentum(momentum)
    if axes is None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions (N, C, ...), got shape {tuple(x.shape)}")
        axes = default_axes(x.dim())
    named = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != x.device:
            raise ValueError(
                f"{name} is on {t.device} but the input is on {x.device}; move the layer with .to({str(x.device)!r})"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError(
            "running_mean and running_var are required when training=False (eval mode uses them); "
            "pass training=True to normalize with batch statistics"
        )
    shapes = {k: (tuple(v.shape) if v is not None else None) for k, v in named.items()}
    return check_input(x.shape, axes, training=training, params=shapes)


class _BatchNormFunction(torch.autograd.Function):
    """Alg. 1 in training mode; returns (y, μ_B, σ²_B). Backward is the closed form (kernels)."""

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps):
        y, mean, var = kernels.select(x).forward(x, weight, bias, eps, axes)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.axes, ctx.eps = axes, eps
        ctx.bias_dtype = bias.dtype if bias is not None else x.dtype
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, mean, var = ctx.saved_tensors
        k = kernels.select(x)
        if torch.is_grad_enabled():
            # create_graph=True: rebuild μ_B and σ²_B from x with differentiable ops, so the closed-form
            # backward below is itself differentiated correctly (double backward).
            mean, var = kernels.composed.batch_stats(x, ctx.axes)
            k = kernels.composed
        needs = ctx.needs_input_grad[:3]
        dx, dw, db = k.backward(dy, x, mean, var, weight, ctx.eps, ctx.axes, needs)
        if dw is not None:
            dw = dw.to(weight.dtype)
        if db is not None:
            db = db.to(ctx.bias_dtype)
        return dx, dw, db, None, None


def _update_running(running_mean, running_var, mean, var, m: int, momentum: float) -> None:
    """EMA update with the unbiased variance; features with non-finite batch stats keep their values."""
    with torch.no_grad():
        unbiased = var * (m / (m - 1))
        ok = torch.isfinite(mean) & torch.isfinite(unbiased)
        # where a statistic is not finite the "new" value is the old one, so the lerp leaves it unchanged
        running_mean.lerp_(torch.where(ok, mean.to(running_mean.dtype), running_mean), momentum)
        running_var.lerp_(torch.where(ok, unbiased.to(running_var.dtype), running_var), momentum)


def batch_norm(
    input: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axes: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Batch normalization over ``axes`` (default: every axis but 1, as ``torch.nn.functional.batch_norm``).

    ``running_mean``/``running_var``/``weight``/``bias`` have the feature shape (``input.shape`` without
    the reduced axes). In training the batch statistics normalize and, when running statistics are given,
    update them in place with weight ``momentum``; otherwise the running statistics normalize (Alg. 2).
    """
    axes = check_tensors(input, axes, training, running_mean, running_var, weight, bias, eps, momentum)
    if not training:
        return kernels.select(input).normalize(input, running_mean, running_var, weight, bias, eps, axes)
    y, mean, var = _BatchNormFunction.apply(input, weight, bias, axes, float(eps))
    if running_mean is not None:
        if momentum is None:
            raise ValueError(
                "momentum=None (cumulative average) needs the number of batches seen: use a bnlab.nn module, "
                "or pass momentum=1/num_batches"
            )
        m = 1
        for a in axes:
            m *= input.shape[a]
        _update_running(running_mean, running_var, mean, var, m, float(momentum))
    return y
