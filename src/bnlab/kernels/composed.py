"""Batch-norm kernels composed of stock torch ops: device-agnostic, and differentiable.

The pieces, each used by :mod:`bnlab.nn.functional`:

- :func:`batch_stats`: μ_B and the biased σ²_B over the reduce axes, in at least float32, by a stable
  one-pass (Welford) or two-pass method — never the unshifted E[x²] − E[x]²;
- :func:`normalize`: y = a·x + b with the per-feature a = γ/√(σ²+ε), b = β − a·μ (one pass over x,
  and the output keeps x's memory format);
- :func:`forward`: the two above, in training mode;
- :func:`backward`: the closed-form gradients of Alg. 1.

Because they are plain torch ops they are also differentiable, which is how the double backward works:
the autograd Function re-runs :func:`batch_stats` and :func:`backward` under grad mode.
"""

from __future__ import annotations

import torch

__all__ = ["batch_stats", "normalize", "forward", "backward", "affine_coefficients"]


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _view(v: torch.Tensor, ndim: int, axes: tuple[int, ...]) -> torch.Tensor:
    """A feature-shaped tensor viewed to broadcast against an input of ``ndim`` dims."""
    shape = []
    it = iter(v.shape)
    for i in range(ndim):
        shape.append(1 if i in axes else next(it))
    return v.reshape(shape)


def batch_stats(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mini-batch mean and biased variance over ``axes`` (feature-shaped, float32 or float64)."""
    xs = x.to(_stat_dtype(x))
    var, mean = torch.var_mean(xs, dim=axes, correction=0)
    return mean, var


def affine_coefficients(mean, var, weight, bias, eps: float):
    """Per-feature (a, b) with γ x̂ + β = a·x + b: a = γ/√(σ²+ε), b = β − a·μ."""
    invstd = torch.rsqrt(var + eps)
    a = invstd if weight is None else weight.to(invstd.dtype) * invstd
    b = -mean * a
    if bias is not None:
        b = b + bias.to(b.dtype)
    return a, b


def normalize(x, mean, var, weight, bias, eps: float, axes: tuple[int, ...]) -> torch.Tensor:
    """y = γ (x − μ)/√(σ² + ε) + β, computed as one affine pass y = a·x + b in x's dtype."""
    a, b = affine_coefficients(mean, var, weight, bias, eps)
    a = _view(a, x.dim(), axes)
    b = _view(b, x.dim(), axes)
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.addcmul(b, x.to(a.dtype), a).to(x.dtype)
    return torch.addcmul(b.to(x.dtype), x, a.to(x.dtype))


def forward(x, weight, bias, eps: float, axes: tuple[int, ...]):
    """Training forward of Alg. 1: returns ``(y, mean, var)`` (batch mean and biased variance)."""
    mean, var = batch_stats(x, axes)
    return normalize(x, mean, var, weight, bias, eps, axes), mean, var


def backward(dy, x, mean, var, weight, eps: float, axes: tuple[int, ...], needs=(True, True, True)):
    """Closed-form gradients of Alg. 1 (see :mod:`bnlab.reference`).

    With x̂ = (x − μ)·invstd, m values per statistic:
        ∂ℓ/∂β = Σ dy,  ∂ℓ/∂γ = Σ dy·x̂,  ∂ℓ/∂x = γ·invstd/m · (m·dy − ∂ℓ/∂β − x̂·∂ℓ/∂γ)
    The last is evaluated as dx = c·dy + d·x + e with per-feature c, d, e, so x̂ is never materialized.
    Returns ``(dx, dweight, dbias)``, each None where not needed (dweight/dbias also None without γ).
    """
    need_x, need_w, need_b = needs
    sdt = _stat_dtype(x)
    m = 1
    for a in axes:
        m *= x.shape[a]
    invstd = torch.rsqrt(var + eps)
    dys = dy.to(sdt)
    xs = x.to(sdt)
    dbeta = dys.sum(dim=axes)
    # Σ dy·x̂ = invstd · Σ dy·(x − μ): the centred product keeps float32 exact when |μ| ≫ σ
    dgamma = (dys * (xs - _view(mean, x.dim(), axes))).sum(dim=axes) * invstd
    dx = None
    if need_x:
        g = invstd if weight is None else weight.to(sdt) * invstd
        c = g
        d = -g * invstd * dgamma / m
        e = -g * dbeta / m - d * mean
        nd = x.dim()
        dx = torch.addcmul(_view(e, nd, axes) + _view(d, nd, axes) * xs, dys, _view(c, nd, axes))
        dx = dx.to(x.dtype)
    dweight = dgamma if (need_w and weight is not None) else None
    dbias = dbeta if need_b else None
    return dx, dweight, dbias
