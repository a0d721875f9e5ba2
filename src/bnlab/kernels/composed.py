"""Batch-norm kernels composed of stock torch ops: device-agnostic, differentiable, and the definition.

This family covers every call (it ends every chain of :mod:`.contract`) and is the one differentiable
definition the fast families are tested against. The pieces (the contract of :class:`.contract.KernelFamily`):

- :func:`batch_stats`: μ_B and the biased σ²_B over the reduce axes: :func:`bnlab.moments.batch_stats`
  (statistics dtype float32 or float64, a stable method — never the unshifted E[x²] − E[x]²);
- :func:`normalize`: y = a·x + b with the per-feature a = γ/√(σ²+ε), b = β − a·μ (one pass over x,
  and the output keeps x's memory format) — or, where |μ|/σ is large, y = (x − μ)·a + β (see below);
- :func:`forward`: the two above, in training mode (``relu=True``: y = max(BN(x), 0));
- :func:`backward`: the closed-form gradients of Alg. 1 (given the ReLU output ``y``, through the ReLU),
  with per-feature coefficients from :func:`grad_coefficients` (also with the global sums of synchronized BN);
  :func:`invstd_backward` is the same given 1/√(σ² + ε) instead of σ² (what the compiled door saves).

Accuracy of the output (issue 7, item 3): a·x + b rounds a·x, whose size is about |γ|·|μ|/σ, so with
|μ| ≫ σ (x = 1e6 + noise, or a constant channel where σ² = 0 and a = γ/√ε) the output loses what the
statistics kept — ``full((8, 3, 6, 6), 1e6)`` gave 7.2 instead of 0. Features with |μ|·(σ²+ε)^(-1/2) >
:data:`SHIFT_RATIO` are normalized as (x − μ)·a + β instead: x − μ is exact for x near μ (Sterbenz),
so the output is as accurate as the statistics. Deciding needs the statistics' values: on the CPU that
is a cheap check over C numbers; on other devices it would be a host synchronization, and while
torch.compile/export or the TorchScript tracer records it would be a data-dependent branch, so there
the per-feature choice is made with ``torch.where`` (one more elementwise op).

Coefficients a, b are always computed in at least float32, even for fp16/bf16 statistics and
parameters (a half layer in eval mode), then applied in float32 to fp16/bf16 inputs.

Because they are plain torch ops they are also differentiable, which is how the double backward works:
the autograd Function re-runs :func:`batch_stats` and :func:`backward` under grad mode.
"""

from __future__ import annotations

import torch

from .. import _compat, moments
from .contract import dense_format, stat_dtype, view

__all__ = [
    "NAME",
    "covers",
    "grad_coefficients",
    "batch_stats",
    "normalize",
    "shifted_normalize",
    "forward",
    "backward",
    "invstd_backward",
    "affine_coefficients",
    "needs_shift",
    "relu_mask",
    "native_backward",
    "SHIFT_RATIO",
    "masked_batch_stats",
    "masked_forward",
    "masked_backward",
]

# |μ|/√(σ²+ε) above which y = a·x + b is replaced by (x − μ)·a + β: a·x + b errs by about
# 2·ε_dtype·|γ|·|μ|/σ, i.e. by less than 32 ulps of a unit output below this ratio.
SHIFT_RATIO = 16.0


NAME = "composed"
_stat_dtype = stat_dtype  # old private name (kept for callers outside kernels/)
_view = view  # old private name (kept for callers outside kernels/)


def covers(x: torch.Tensor, axes: tuple[int, ...], *tensors, op: str) -> bool:
    """Always true: stock torch ops compute every call, on every device, differentiably."""
    return True


def needs_shift(mean: torch.Tensor, var: torch.Tensor, eps: float) -> torch.Tensor:
    """Per feature: True where |μ|·(σ²+ε)^(-1/2) > :data:`SHIFT_RATIO` (a on-device bool tensor)."""
    sdt = moments.statistics_dtype(mean.dtype)
    return mean.to(sdt).abs() * torch.rsqrt(var.to(sdt) + eps) > SHIFT_RATIO


def _traced(t: torch.Tensor) -> bool:
    """Whether ``t``'s values are unknown or must not steer Python (compile, export, the TorchScript
    tracer, fake tensors, vmap):
    then the branch-free form is taken instead of asking the data which form suffices."""
    return (
        type(t) is not torch.Tensor
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or _compat.functorch_transforms_active()
        or _compat.torch_dispatch_mode_active()
    )


def batch_stats(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mini-batch mean and biased variance over ``axes``: :func:`bnlab.moments.batch_stats`."""
    return moments.batch_stats(x, axes)


def affine_coefficients(mean, var, weight, bias, eps: float):
    """Per-feature (a, b) with γ x̂ + β = a·x + b: a = γ/√(σ²+ε), b = β − a·μ, in at least float32."""
    sdt = moments.statistics_dtype(mean.dtype)
    mean, var = mean.to(sdt), var.to(sdt)
    invstd = torch.rsqrt(var + eps)
    a = invstd if weight is None else weight.to(sdt) * invstd
    b = -mean * a
    if bias is not None:
        b = b + bias.to(sdt)
    return a, b


def normalize(x, mean, var, weight, bias, eps: float, axes: tuple[int, ...]) -> torch.Tensor:
    """y = γ (x − μ)/√(σ² + ε) + β in x's dtype: one affine pass a·x + b, or (x − μ)·a + β where
    |μ|/σ is large (see the module docstring)."""
    a, b = affine_coefficients(mean, var, weight, bias, eps)
    nd = x.dim()
    cdt = a.dtype if x.dtype in (torch.float16, torch.bfloat16) else x.dtype  # compute dtype
    xc = x.to(cdt)
    if x.device.type != "cpu" or _traced(mean) or bool(needs_shift(mean, var, eps).any()):
        # per feature: s = μ where the ratio is large (else 0), y = (x − s)·a + (β − a·(μ − s));
        # where s = μ the offset is β itself, exactly
        shift = torch.where(needs_shift(mean, var, eps), mean.to(a.dtype), torch.zeros_like(a))
        offset = -(mean.to(a.dtype) - shift) * a
        if bias is not None:
            offset = offset + bias.to(a.dtype)
        xc = xc - view(shift.to(cdt), nd, axes)
        b = offset
    return torch.addcmul(view(b.to(cdt), nd, axes), xc, view(a.to(cdt), nd, axes)).to(x.dtype)


def shifted_normalize(x, mean, var, weight, bias, eps: float, axes: tuple[int, ...], invstd=None) -> torch.Tensor:
    """y = (x − μ)·(γ·invstd) + β, invstd = 1/√(σ² + ε), coefficients in float32-or-wider; x's dtype out.

    The shifted form of :func:`normalize`, always: x − μ is exact for x near μ, so the output is as accurate
    as the statistics even where |μ| ≫ σ (what :func:`normalize` decides per feature). A compiler fuses
    either form into one pass, so the compiled door (:mod:`bnlab.nn._dispatch`) always takes this one.
    ``invstd``: 1/√(σ² + ε) when the caller has it already (then ``var`` is not read).
    """
    sdt = stat_dtype(x)
    cdt = sdt if x.dtype in (torch.float16, torch.bfloat16) else x.dtype  # compute dtype
    shape = [1 if i in axes else n for i, n in enumerate(x.shape)]
    if invstd is None:
        invstd = torch.rsqrt(var.to(sdt) + eps)
    a = invstd if weight is None else weight.to(sdt) * invstd
    y = (x.to(cdt) - mean.to(cdt).reshape(shape)) * a.to(cdt).reshape(shape)
    if bias is not None:
        y = y + bias.to(cdt).reshape(shape)
    return y.to(x.dtype)


def forward(x, weight, bias, eps: float, axes: tuple[int, ...], relu: bool = False):
    """Training forward of Alg. 1: returns ``(y, mean, var)`` (batch mean and biased variance).

    ``relu=True``: y = max(BN(x), 0) (the fused-activation contract of every kernel family).
    """
    mean, var = batch_stats(x, axes)
    y = normalize(x, mean, var, weight, bias, eps, axes)
    return (torch.relu(y) if relu else y), mean, var


def relu_mask(dy: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """dy where the ReLU output ``y`` is positive, else 0 (``y=None``: dy unchanged)."""
    return dy if y is None else torch.where(y > 0, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))


def grad_coefficients(invstd, weight, sum_dy, sum_dy_xhat, m):
    """Per-feature (c, d, e) of the closed-form input gradient dx = c·dy + d·(x − μ) + e of Alg. 1:

        ∂ℓ/∂x = γ·invstd/m · (m·dy − Σdy − x̂·Σdy·x̂)   ⇒   c = γ·invstd,  d = −c·invstd·Σdy·x̂/m,  e = −c·Σdy/m

    ``m`` values per statistic (the global count in synchronized BN); ``weight`` None means γ = 1. The division
    by m is a product with 1/m: per feature, a compiler that inlines these coefficients into the elementwise
    pass over dx (Inductor does) would otherwise divide at every value."""
    c = invstd if weight is None else weight.to(invstd.dtype) * invstd
    inv_m = 1.0 / m
    return c, -c * invstd * sum_dy_xhat * inv_m, -c * sum_dy * inv_m


def backward(dy, x, mean, var, weight, eps: float, axes: tuple[int, ...], needs=(True, True, True), y=None, sums=None):
    """Closed-form gradients of Alg. 1 (see :mod:`bnlab.reference`): :func:`invstd_backward` with
    invstd = 1/√(σ² + ε).

    ``y``: the output of a ``forward(..., relu=True)``; the gradient then flows only where y > 0.
    ``sums = (Σdy, Σdy·x̂, m)``: the reductions over a larger set B (synchronized BN: all ranks) to use for
    dx instead of this tensor's own; dweight/dbias stay local.
    Returns ``(dx, dweight, dbias)``, each None where not needed (dweight/dbias also None without γ).
    """
    return invstd_backward(dy, x, mean, torch.rsqrt(var + eps), weight, axes, needs, y=y, sums=sums)


def invstd_backward(dy, x, mean, invstd, weight, axes: tuple[int, ...], needs=(True, True, True), y=None, sums=None):
    """:func:`backward` given invstd = 1/√(σ² + ε) itself (the compiled door saves it from the forward).

    With x̂ = (x − μ)·invstd, m values per statistic:
        ∂ℓ/∂β = Σ dy,  ∂ℓ/∂γ = Σ dy·x̂,  ∂ℓ/∂x = γ·invstd/m · (m·dy − ∂ℓ/∂β − x̂·∂ℓ/∂γ)
    The last is evaluated as dx = c·dy + d·(x − μ) + e with per-feature c, d, e (:func:`grad_coefficients`;
    x − μ is the centred tensor of Σ dy·x̂ reused, so large offsets cancel exactly and x̂ is never materialized).
    """
    need_x, need_w, need_b = needs
    dy = relu_mask(dy, y)
    sdt = stat_dtype(x)
    dys = dy.to(sdt)
    xs = x.to(sdt)
    nd = x.dim()
    # Σ dy·x̂ = invstd · Σ dy·(x − μ): the centred product keeps float32 exact when |μ| ≫ σ
    centred = xs - view(mean.to(sdt), nd, axes)
    dbeta = dgamma = None
    if sums is None or need_w or need_b:
        dbeta = dys.sum(dim=axes)
        dgamma = (dys * centred).sum(dim=axes) * invstd
    dx = None
    if need_x:
        if sums is None:
            m = 1
            for a in axes:
                m *= x.shape[a]
            sum_dy, sum_dy_xhat = dbeta, dgamma
        else:
            sum_dy, sum_dy_xhat, m = sums[0].to(sdt), sums[1].to(sdt), sums[2]
        c, d, e = grad_coefficients(invstd, weight, sum_dy, sum_dy_xhat, m)
        dx = torch.addcmul(view(e, nd, axes) + view(d, nd, axes) * centred, dys, view(c, nd, axes))
        dx = dx.to(x.dtype)
    dweight = dgamma if (need_w and weight is not None) else None
    dbias = dbeta if need_b else None
    return dx, dweight, dbias


def native_backward(dy, x, mean, var, weight, eps: float, needs=(True, True, True), y=None):
    """torch's fused ``aten.native_batch_norm_backward`` given our μ_B and σ²_B (per-channel BN in torch's
    layout, dense NCHW or channels_last): the same closed form as :func:`backward`, centred on μ_B.

    Used by the :mod:`.cpu` and :mod:`.cuda` families; ``y`` (fused ReLU output) masks dy first.
    """
    need_x, need_w, need_b = needs
    dy = relu_mask(dy, y)
    dy = dy.to(x.dtype).contiguous(memory_format=dense_format(x) or torch.contiguous_format)
    invstd = torch.rsqrt(var + eps)
    mask = [bool(need_x), bool(need_w and weight is not None), bool(need_b)]
    dx, dweight, dbias = torch.ops.aten.native_batch_norm_backward(
        dy, x, weight, None, None, mean, invstd, True, float(eps), mask
    )
    return (dx if need_x else None), (dweight if mask[1] else None), (dbias if need_b else None)


# ---------------------------------------------------------------------------------------------------------
# Masked set B (padding): only the values where ``mask`` is True enter μ_B and σ²_B; every value is
# normalized with them. Not part of the kernel contract: every masked call runs these stock ops.


def masked_batch_stats(x: torch.Tensor, mask: torch.Tensor, axes: tuple[int, ...]):
    """``(μ_B, σ²_B, m')`` over the masked-in values of each feature (``mask``: bool, broadcastable to x).

    Sums in the statistics dtype (float32 or float64), the corrected two-pass of :func:`bnlab.moments.correct`:
    pass 1 μ̃ = Σ_B x / m', pass 2 Σ_B (x − μ̃)² and Σ_B (x − μ̃). Masked-out values are replaced by 0 (by
    ``torch.where``, so padding holding inf or NaN does not reach the statistics). ``m'`` is a feature-shaped
    tensor in the statistics dtype; a feature with m' = 0 gets NaN statistics (the callers refuse it).
    Differentiable in x (the double backward and the functorch door use that).
    """
    sdt = stat_dtype(x)
    nd = x.dim()
    keep = mask.expand(x.shape)
    zero = torch.zeros((), dtype=sdt, device=x.device)
    xs = x.to(sdt)
    count = keep.sum(dim=axes, dtype=sdt)  # m'
    rough = torch.where(keep, xs, zero).sum(dim=axes) / count  # pass 1
    d = torch.where(keep, xs - view(rough, nd, axes), zero)  # pass 2, centred on the rounded mean
    m = moments.correct(moments.Moments(count, rough, (d * d).sum(dim=axes)), d.sum(dim=axes))
    return m.mean, m.variance, count


def masked_forward(x, mask, weight, bias, eps: float, axes: tuple[int, ...], relu: bool = False):
    """Training forward over a masked set B: ``(y, μ_B, σ²_B, m')``; every value of x is normalized."""
    mean, var, count = masked_batch_stats(x, mask, axes)
    y = normalize(x, mean, var, weight, bias, eps, axes)
    return (torch.relu(y) if relu else y), mean, var, count


def masked_backward(dy, x, mask, mean, var, count, weight, eps: float, axes: tuple[int, ...], needs, y=None):
    """Closed-form gradients ``(dx, dγ, dβ)`` of :func:`masked_forward` (None where not needed).

    Every y_i = γ x̂_i + β depends on μ_B and σ²_B, but only the masked-in x_i enter them, so
    (sums over *all* values, m' the masked count, [i∈B] 1 for masked-in values, 0 for the others):

        ∂ℓ/∂β = Σ dy,  ∂ℓ/∂γ = Σ dy·x̂,  ∂ℓ/∂x_i = γ·invstd · (dy_i − [i∈B]·(∂ℓ/∂β + x̂_i·∂ℓ/∂γ)/m')

    i.e. :func:`grad_coefficients` with m = m', its d and e terms applied to the masked-in values only
    (a masked-out value gets γ·invstd·dy_i). Where the loss ignores padded outputs (dy = 0 there) the sums
    reduce to the masked set.
    """
    need_x, need_w, need_b = needs
    dy = relu_mask(dy, y)
    sdt = stat_dtype(x)
    nd = x.dim()
    invstd = torch.rsqrt(var.to(sdt) + eps)
    dys = dy.to(sdt)
    centred = x.to(sdt) - view(mean.to(sdt), nd, axes)
    dbeta = dys.sum(dim=axes)
    dgamma = (dys * centred).sum(dim=axes) * invstd
    dx = None
    if need_x:
        c, d, e = grad_coefficients(invstd, weight, dbeta, dgamma, count.to(sdt))
        zero = torch.zeros((), dtype=sdt, device=x.device)
        inner = torch.where(mask, view(d, nd, axes) * centred + view(e, nd, axes), zero)
        dx = torch.addcmul(inner, dys, view(c, nd, axes)).to(x.dtype)
    dweight = dgamma if (need_w and weight is not None) else None
    dbias = dbeta if need_b else None
    return dx, dweight, dbias


#: The contract's implementations (:func:`.contract.run` calls these once ``covers`` said yes).
IMPLEMENTATION = {"batch_stats": batch_stats, "normalize": normalize, "forward": forward, "backward": backward}
