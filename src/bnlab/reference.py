"""The batch-normalizing transform in NumPy, as written in Ioffe & Szegedy (2015).

Read it with the paper open. For every feature, the set B = {x_1 … x_m} is the values that share one
mean and variance: the values along the reduce ``axes`` (``(0,)`` for per-activation BN, ``(0, 2, 3)``
in NCHW or ``(0, 1, 2)`` in NHWC for convolutional BN, §3.2, where m is the effective mini-batch
m' = m·p·q).

Alg. 1 (training, one mini-batch)::

    μ_B  = 1/m Σ x_i                    mini-batch mean
    σ²_B = 1/m Σ (x_i − μ_B)²           mini-batch variance (two-pass: never E[x²] − E[x]²)
    x̂_i  = (x_i − μ_B) / √(σ²_B + ε)    normalize
    y_i  = γ x̂_i + β                     scale and shift

Backward (closed form, §3, with g_i = ∂ℓ/∂x̂_i = ∂ℓ/∂y_i · γ)::

    ∂ℓ/∂x_i = [ m g_i − Σ_j g_j − x̂_i Σ_j g_j x̂_j ] / ( m √(σ²_B + ε) )
    ∂ℓ/∂γ   = Σ_i ∂ℓ/∂y_i x̂_i ,   ∂ℓ/∂β = Σ_i ∂ℓ/∂y_i

Alg. 2 (inference): E[x] = E_B[μ_B], Var[x] = m/(m−1) E_B[σ²_B] over training mini-batches, then the
fixed affine map y = γ/√(Var[x]+ε) · x + (β − γ E[x]/√(Var[x]+ε)) — one per feature map for conv layers.

A masked set B (padding: :func:`masked_forward` / :func:`masked_backward`): B is the values where the
mask is True, m' their count per feature; every value x_i is normalized with μ_B and σ²_B of B.

Batch Renormalization (Ioffe 2017, Alg. 1): :func:`renorm_forward` / :func:`renorm_backward` below.

Arrays of float32 stay float32 (statistics are sums along contiguous rows, with the corrected two-pass
variance below); float64 stays float64. A sum of squares that overflows is redone on (x − μ_B)/s (s a
power of two); a σ²_B beyond the dtype's range is refused with a ValueError, never normalized to 0.
The code computes each line of the paper once, in place where it can, so that this literal reference is also
fast (about torch's own CPU kernel, see docs/performance.md).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(8, 5, 5, 4))      # NHWC
>>> y, cache = forward(x, np.ones(4), np.zeros(4), axes=(0, 1, 2))
>>> cache.m                                                                  # m' = m·p·q = 8·5·5
200
>>> bool(np.allclose(y.mean(axis=(0, 1, 2)), 0) and np.allclose(y.var(axis=(0, 1, 2)), 1, atol=1e-4))
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .axes import check_eps, check_input, param_shape
from .moments import Moments
from .moments import population_statistics as _pooled

__all__ = [
    "Cache",
    "forward",
    "backward",
    "inference",
    "population_statistics",
    "MaskedCache",
    "masked_forward",
    "masked_backward",
]


class Cache(NamedTuple):
    """What the backward pass needs from Alg. 1, by the paper's names (feature-shaped, keepdims)."""

    x_hat: np.ndarray  # normalized input x̂, shape of x
    mu_B: np.ndarray  # mini-batch mean, reduced axes kept as size 1
    sigma2_B: np.ndarray  # mini-batch (biased) variance, reduced axes kept as size 1
    gamma: np.ndarray  # scale γ, broadcastable against x
    eps: float
    axes: tuple[int, ...]
    m: int  # values per set B: m, or m' = m·p·q for convolutional BN


def _as_float(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{name} must be a float32 or float64 array, got {x.dtype}; convert it with {name}.astype(np.float32)"
        )
    return x


def _broadcast(p: np.ndarray, shape: Sequence[int], axes: tuple[int, ...], dtype) -> np.ndarray:
    """A feature-shaped parameter (γ, β, μ, σ²) reshaped to broadcast against x, in x's dtype."""
    return np.asarray(p, dtype=dtype).reshape(param_shape(shape, axes))


# Speed without changing a line of the paper. The sums run along contiguous memory (the trailing reduced axes
# as rows, then the rest). The elementwise lines take their per-feature operands (μ_B, γ, ...) spread over one
# sample, so that only the batch axis broadcasts (NumPy's loops run several times faster than when a feature
# vector broadcasts inside every row), and run in chunks of the batch axis small enough to stay in cache from
# one line to the next.
_CHUNK_BYTES = 1 << 19


def _row_sum(rows: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Σ along the last axis of ``rows`` (or of rows·other): a SIMD loop without temporaries."""
    if other is None:
        return np.einsum("...i->...", rows)
    if hasattr(np, "vecdot"):
        return np.vecdot(rows, other)
    return np.einsum("...i,...i->...", rows, other)


def _sum(a: np.ndarray, axes: tuple[int, ...], b: np.ndarray | None = None) -> np.ndarray:
    """Σ over ``axes`` of ``a`` (or of a·b, without forming the product), reduced axes kept as size 1."""
    k = a.ndim
    while k > 0 and k - 1 in axes:
        k -= 1
    if k < a.ndim:  # rows over the trailing reduced axes (contiguous for C-ordered arrays)
        rows = a.reshape(a.shape[:k] + (-1,))
        s = _row_sum(rows, None if b is None else b.reshape(rows.shape))
        s = s.sum(axis=tuple(ax for ax in axes if ax < k))
    else:
        s = (a if b is None else a * b).sum(axis=axes)
    return s.reshape(param_shape(a.shape, axes))


def _max_abs(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """max |a| over ``axes`` (reduced axes kept as size 1), in float64."""
    return np.abs(a).max(axis=axes, keepdims=True).astype(np.float64)


def _per_sample(p: np.ndarray, shape: Sequence[int], axes: tuple[int, ...]) -> np.ndarray:
    """A per-feature array (reduced axes of size 1) spread over one sample: broadcasts on the batch axis only."""
    if 0 not in axes:
        return p
    return np.ascontiguousarray(np.broadcast_to(p, (1, *shape[1:])))


def _batches(axes: tuple[int, ...], *arrays: np.ndarray):
    """The arrays (shape of x) in matching chunks of the batch axis, for the elementwise lines."""
    n = arrays[0].shape[0]
    step = n if 0 not in axes else max(1, _CHUNK_BYTES // max(1, arrays[0][:1].nbytes))
    for i in range(0, n, step):
        yield tuple(a[i : i + step] for a in arrays)


def forward(x, gamma, beta, axes=(0,), eps: float = 1e-5):
    """Alg. 1: normalize ``x`` over ``axes`` and scale/shift; returns ``(y, cache)``.

    ``gamma`` and ``beta`` have the feature shape (``x.shape`` without the reduced axes).
    """
    x = _as_float(x, "x")
    eps = check_eps(eps)
    axes = check_input(x.shape, axes, training=True, params={"gamma": np.shape(gamma), "beta": np.shape(beta)})
    gamma = _broadcast(gamma, x.shape, axes, x.dtype)
    beta = _broadcast(beta, x.shape, axes, x.dtype)
    m = int(np.prod([x.shape[a] for a in axes]))

    mu_B = _sum(x, axes) / m  # μ_B = 1/m Σ x_i
    x_hat = np.subtract(x, _per_sample(mu_B, x.shape, axes))  # x_i − μ_B  (becomes x̂ in place below)
    # Rounding in the first pass leaves μ_B off by δ (large when |μ_B| ≫ σ_B, as with x = 1e6 + N(0, 1)).
    # x_i − μ_B is exact there, so its mean is that δ: correct μ_B and x_i − μ_B by it (corrected two-pass),
    # using Σ (x_i − μ_B − δ)² = Σ (x_i − μ_B)² − m δ².
    delta = _sum(x_hat, axes) / m
    mu_B += delta
    with np.errstate(over="ignore"):  # an overflow is handled here, and refused below if σ²_B itself overflows
        mean_sq = _sum(x_hat, axes, x_hat) / m  # 1/m Σ (x_i − μ_B)²
        if not np.all(np.isfinite(mean_sq)) and np.all(np.isfinite(x_hat)):
            # the sum overflowed (float32 holds up to 3.4e38: a std above ~1.8e19/√m): sum ((x_i − μ_B)/s)²
            # instead, with s a power of two per feature (dividing by it is exact), and multiply by s² after /m
            s = 2.0 ** np.ceil(np.log2(np.maximum(_max_abs(x_hat, axes), np.finfo(x.dtype).tiny)))
            scaled = x_hat / _per_sample(s.astype(x.dtype), x.shape, axes)
            mean_sq = (_sum(scaled, axes, scaled) / m * (s * s)).astype(x.dtype)
    sigma2_B = np.maximum(mean_sq - delta * delta, 0)  # σ²_B = 1/m Σ (x_i − μ_B)²
    if np.any(np.isinf(sigma2_B)) and np.all(np.isfinite(x)):
        raise ValueError(
            f"the mini-batch variance σ²_B overflows {x.dtype} (largest {np.finfo(x.dtype).max:.3g}): the input's "
            f"spread is too large to normalize in this precision; use float64 (x.astype(np.float64)) or "
            f"divide x by a constant first (x̂ does not change when x is scaled, up to ε)"
        )
    y = np.empty_like(x)
    delta_, inv_sigma_, gamma_, beta_ = (
        _per_sample(p, x.shape, axes) for p in (delta, 1 / np.sqrt(sigma2_B + eps), gamma, beta)
    )
    for x_hat_c, y_c in _batches(axes, x_hat, y):
        x_hat_c -= delta_
        x_hat_c *= inv_sigma_  # x̂_i = (x_i − μ_B) / √(σ²_B + ε)
        np.multiply(gamma_, x_hat_c, out=y_c)  # y_i = γ x̂_i + β
        y_c += beta_
    return y, Cache(x_hat, mu_B, sigma2_B, gamma, eps, axes, m)


def backward(dy, cache: Cache):
    """Closed-form gradients of Alg. 1: returns ``(dx, dgamma, dbeta)`` (``dgamma``, ``dbeta`` feature-shaped)."""
    dy = _as_float(dy, "dy")
    x_hat, _, sigma2_B, gamma, eps, axes, m = cache
    if dy.shape != x_hat.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the shape of x {x_hat.shape}")

    dbeta = _sum(dy, axes)  # ∂ℓ/∂β = Σ ∂ℓ/∂y_i
    dgamma = _sum(dy, axes, x_hat)  # ∂ℓ/∂γ = Σ ∂ℓ/∂y_i x̂_i
    # With g_i = γ ∂ℓ/∂y_i:  Σ g_j = γ ∂ℓ/∂β  and  Σ g_j x̂_j = γ ∂ℓ/∂γ, so
    # ∂ℓ/∂x_i = γ/(m √(σ²_B+ε)) · [ m ∂ℓ/∂y_i − ∂ℓ/∂β − x̂_i ∂ℓ/∂γ ]
    #         = γ/√(σ²_B+ε) · [ ∂ℓ/∂y_i − ∂ℓ/∂β / m − x̂_i ∂ℓ/∂γ / m ].
    scale, dbeta_m, dgamma_m = (
        _per_sample(p, dy.shape, axes).astype(dy.dtype, copy=False)
        for p in (gamma / np.sqrt(sigma2_B + eps), dbeta / m, dgamma / m)
    )
    dx = np.empty(dy.shape, np.result_type(dy, x_hat))
    for dy_c, x_hat_c, dx_c in _batches(axes, dy, x_hat, dx):
        np.multiply(dgamma_m, x_hat_c, out=dx_c)  # x̂_i ∂ℓ/∂γ / m
        np.subtract(dy_c, dx_c, out=dx_c)  # ∂ℓ/∂y_i − x̂_i ∂ℓ/∂γ / m
        dx_c -= dbeta_m  # − ∂ℓ/∂β / m
        dx_c *= scale  # · γ/√(σ²_B+ε)
    return dx, dgamma.squeeze(axis=axes), dbeta.squeeze(axis=axes)


class MaskedCache(NamedTuple):
    """What :func:`masked_backward` needs from :func:`masked_forward` (feature-shaped arrays keep the reduced
    axes as size 1)."""

    x_hat: np.ndarray  # every value normalized with B's statistics, shape of x
    in_B: np.ndarray  # the mask broadcast to x's shape: True where x_i belongs to B
    sigma2_B: np.ndarray
    gamma: np.ndarray
    eps: float
    axes: tuple[int, ...]
    m: np.ndarray  # m' = |B| per feature


def masked_forward(x, gamma, beta, mask, axes=(0,), eps: float = 1e-5):
    """Alg. 1 over a masked set B: B = {x_i : mask_i}, m' = |B| per feature; returns ``(y, cache)``.

    ``mask`` is a bool array broadcastable to x. Every x_i (in B or not) is normalized with μ_B and σ²_B::

        μ_B  = 1/m' Σ_{i∈B} x_i
        σ²_B = 1/m' Σ_{i∈B} (x_i − μ_B)²
        x̂_i  = (x_i − μ_B) / √(σ²_B + ε)        for every i
        y_i  = γ x̂_i + β
    """
    x = _as_float(x, "x")
    eps = check_eps(eps)
    axes = check_input(x.shape, axes, training=True, params={"gamma": np.shape(gamma), "beta": np.shape(beta)})
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array (True: x_i belongs to B), got {mask.dtype}; use mask.astype(bool)")
    in_B = np.broadcast_to(mask, x.shape)
    m = in_B.sum(axis=axes, keepdims=True)  # m' = |B|
    if np.any(m < 2):
        raise ValueError(
            f"the mask leaves {int(np.sum(m < 2))} feature(s) with fewer than 2 values in B; mask in more values"
        )
    gamma = _broadcast(gamma, x.shape, axes, x.dtype)
    beta = _broadcast(beta, x.shape, axes, x.dtype)
    mu_B = np.where(in_B, x, 0).sum(axis=axes, keepdims=True) / m  # μ_B = 1/m' Σ_{i∈B} x_i
    sigma2_B = np.where(in_B, (x - mu_B) ** 2, 0).sum(axis=axes, keepdims=True) / m  # σ²_B
    x_hat = (x - mu_B) / np.sqrt(sigma2_B + eps)  # x̂_i, every i
    y = gamma * x_hat + beta  # y_i = γ x̂_i + β
    return y, MaskedCache(x_hat, in_B, sigma2_B, gamma, eps, axes, m)


def masked_backward(dy, cache: MaskedCache):
    """Gradients of :func:`masked_forward`: ``(dx, dgamma, dbeta)``.

    Every y_i depends on μ_B and σ²_B, which only the x_i in B enter, so (sums over every i)::

        ∂ℓ/∂β   = Σ_i ∂ℓ/∂y_i ,   ∂ℓ/∂γ = Σ_i ∂ℓ/∂y_i x̂_i
        ∂ℓ/∂x_i = γ/√(σ²_B+ε) · [ ∂ℓ/∂y_i − (∂ℓ/∂β + x̂_i ∂ℓ/∂γ)/m' ]   for x_i in B
        ∂ℓ/∂x_i = γ/√(σ²_B+ε) · ∂ℓ/∂y_i                                  for x_i not in B
    """
    dy = _as_float(dy, "dy")
    x_hat, in_B, sigma2_B, gamma, eps, axes, m = cache
    if dy.shape != x_hat.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the shape of x {x_hat.shape}")
    dbeta = dy.sum(axis=axes, keepdims=True)  # ∂ℓ/∂β
    dgamma = (dy * x_hat).sum(axis=axes, keepdims=True)  # ∂ℓ/∂γ
    dx = gamma / np.sqrt(sigma2_B + eps) * (dy - in_B * (dbeta + x_hat * dgamma) / m)
    return dx, dgamma.squeeze(axis=axes), dbeta.squeeze(axis=axes)


def inference(x, gamma, beta, mean, var, axes=(0,), eps: float = 1e-5):
    """Alg. 2, step 11: y = γ/√(Var[x]+ε) · x + (β − γ E[x]/√(Var[x]+ε)), one affine map per feature."""
    x = _as_float(x, "x")
    eps = check_eps(eps)
    shapes = {"gamma": np.shape(gamma), "beta": np.shape(beta), "mean": np.shape(mean), "var": np.shape(var)}
    axes = check_input(x.shape, axes, training=False, params=shapes)
    if np.any(np.asarray(var) < 0):
        raise ValueError(
            "var holds negative values; a population variance Var[x] is never negative (pass the running "
            "variance, or the Var[x] of population_statistics)"
        )
    gamma, beta, mean, var = (_broadcast(p, x.shape, axes, x.dtype) for p in (gamma, beta, mean, var))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - scale * mean
    y = np.multiply(x, scale)
    y += shift
    return y


def population_statistics(batch_means, batch_vars, m):
    """Alg. 2, step 10: E[x] = E_B[μ_B], Var[x] = m/(m−1) · E_B[σ²_B].

    ``batch_means``/``batch_vars``: the μ_B and (biased) σ²_B of each training mini-batch, stacked on
    axis 0. ``m``: the number of values per set B (an int), or one count per batch when batches differ in
    size — then each batch weighs by its size (see :func:`bnlab.moments.population_statistics`).
    """
    batch_means = np.asarray(batch_means)
    batch_vars = np.asarray(batch_vars)
    if batch_means.shape != batch_vars.shape or batch_means.ndim < 1 or len(batch_means) == 0:
        raise ValueError(
            f"batch_means and batch_vars must be stacked per batch on axis 0 with equal shapes, got "
            f"{batch_means.shape} and {batch_vars.shape}"
        )
    m_arr = np.asarray(m)
    if m_arr.dtype == bool or not (
        np.issubdtype(m_arr.dtype, np.integer)
        or (np.issubdtype(m_arr.dtype, np.floating) and np.all(np.isfinite(m_arr)) and np.all(m_arr == np.round(m_arr)))
    ):
        raise ValueError(f"m must be a whole number of values per set B (or one per batch), got m={m}")
    if np.any(batch_vars < 0):
        raise ValueError(
            "batch_vars holds negative values; a variance σ²_B is never negative (pass the biased batch "
            "variances of Alg. 1)"
        )
    counts = np.broadcast_to(m_arr, (len(batch_means),))
    if np.any(counts < 1) or counts.sum() - len(counts) < 1:
        raise ValueError(f"need more than one value per statistic to estimate a variance, got m={m}")
    return _pooled(
        Moments(float(c), mu, float(c) * var) for c, mu, var in zip(counts, batch_means, batch_vars, strict=True)
    )


# ------------------------------------------------------------------------- Batch Renormalization (2017)
# Ioffe (2017), "Batch Renormalization", arXiv 1702.03275, Algorithm 1. The same set B as Alg. 1 above, but
# the normalized value is corrected toward the running statistics μ, σ (the values *before* this step's
# update) by two per-feature numbers r and d that the gradient treats as constants (stop_gradient):
#
#     μ_B  = 1/m Σ x_i
#     σ_B  = √(ε + 1/m Σ (x_i − μ_B)²)
#     r    = stop_gradient(clip_[1/rmax, rmax](σ_B / σ))
#     d    = stop_gradient(clip_[−dmax, dmax]((μ_B − μ) / σ))
#     x̂_i  = (x_i − μ_B)/σ_B · r + d
#     y_i  = γ x̂_i + β
#
# With σ = √(Var + ε) and μ = E from running statistics (Var, E). When r and d are not clipped, x̂_i equals
# (x_i − μ)/σ: training normalizes as inference will. r = 1, d = 0 gives Alg. 1 exactly.
__all__ += ["RenormCache", "renorm_forward", "renorm_backward"]


class RenormCache(NamedTuple):
    """What :func:`renorm_backward` needs from Batch Renorm's Alg. 1, by the paper's names (keepdims)."""

    x: np.ndarray
    mu_B: np.ndarray  # mini-batch mean
    sigma_B: np.ndarray  # √(σ²_B + ε)
    r: np.ndarray  # clip(σ_B/σ, 1/rmax, rmax): a constant for the gradient
    d: np.ndarray  # clip((μ_B − μ)/σ, −dmax, dmax): a constant for the gradient
    x_hat: np.ndarray  # (x − μ_B)/σ_B · r + d
    gamma: np.ndarray
    axes: tuple[int, ...]
    m: int


def renorm_forward(x, gamma, beta, mean, var, axes=(0,), eps: float = 1e-5, rmax: float = 3.0, dmax: float = 5.0):
    """Batch Renorm's Alg. 1 (training) with running statistics ``mean`` = μ and ``var`` (σ = √(var + ε)).

    Returns ``(y, cache)``; ``cache.mu_B`` and ``cache.sigma_B`` are what the running statistics move toward.
    Plain loops over the paper's lines: the book, not the fast path.
    """
    x = _as_float(x, "x")
    eps = check_eps(eps)
    if not rmax >= 1 or not dmax >= 0:
        raise ValueError(f"need rmax ≥ 1 and dmax ≥ 0 (rmax = 1, dmax = 0 is batch norm), got {rmax=}, {dmax=}")
    shapes = {"gamma": np.shape(gamma), "beta": np.shape(beta), "mean": np.shape(mean), "var": np.shape(var)}
    axes = check_input(x.shape, axes, training=True, params=shapes)
    gamma, beta, mu, var = (_broadcast(p, x.shape, axes, x.dtype) for p in (gamma, beta, mean, var))
    m = int(np.prod([x.shape[a] for a in axes]))

    mu_B = x.sum(axis=axes, keepdims=True) / m  # μ_B = 1/m Σ x_i
    sigma_B = np.sqrt(eps + ((x - mu_B) ** 2).sum(axis=axes, keepdims=True) / m)  # σ_B = √(ε + 1/m Σ (x_i − μ_B)²)
    sigma = np.sqrt(var + eps)  # σ from the running variance
    r = np.clip(sigma_B / sigma, 1 / rmax, rmax)  # r = stop_gradient(clip_[1/rmax, rmax](σ_B/σ))
    d = np.clip((mu_B - mu) / sigma, -dmax, dmax)  # d = stop_gradient(clip_[−dmax, dmax]((μ_B − μ)/σ))
    x_hat = (x - mu_B) / sigma_B * r + d  # x̂_i = (x_i − μ_B)/σ_B · r + d
    y = gamma * x_hat + beta  # y_i = γ x̂_i + β
    return y, RenormCache(x, mu_B, sigma_B, r, d, x_hat, gamma, axes, m)


def renorm_backward(dy, cache: RenormCache):
    """Gradients of Batch Renorm (r and d constant), as written in the paper (§3):

        ∂ℓ/∂x̂_i  = ∂ℓ/∂y_i · γ
        ∂ℓ/∂σ_B  = Σ_i ∂ℓ/∂x̂_i (x_i − μ_B) · (−r/σ_B²)
        ∂ℓ/∂μ_B  = Σ_i ∂ℓ/∂x̂_i · (−r/σ_B)
        ∂ℓ/∂x_i  = ∂ℓ/∂x̂_i · r/σ_B + ∂ℓ/∂σ_B · (x_i − μ_B)/(m σ_B) + ∂ℓ/∂μ_B · 1/m
        ∂ℓ/∂γ    = Σ_i ∂ℓ/∂y_i x̂_i ,   ∂ℓ/∂β = Σ_i ∂ℓ/∂y_i

    Returns ``(dx, dgamma, dbeta)`` (``dgamma``, ``dbeta`` feature-shaped).
    """
    dy = _as_float(dy, "dy")
    x, mu_B, sigma_B, r, _, x_hat, gamma, axes, m = cache
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the shape of x {x.shape}")
    dx_hat = dy * gamma  # ∂ℓ/∂x̂_i
    dsigma_B = (dx_hat * (x - mu_B)).sum(axis=axes, keepdims=True) * (-r / sigma_B**2)  # ∂ℓ/∂σ_B
    dmu_B = dx_hat.sum(axis=axes, keepdims=True) * (-r / sigma_B)  # ∂ℓ/∂μ_B
    dx = dx_hat * r / sigma_B + dsigma_B * (x - mu_B) / (m * sigma_B) + dmu_B / m  # ∂ℓ/∂x_i
    dgamma = (dy * x_hat).sum(axis=axes)  # ∂ℓ/∂γ
    dbeta = dy.sum(axis=axes)  # ∂ℓ/∂β
    return dx, dgamma, dbeta


# ------------------------------------------------------------------------------ the normalization family
# Layer, instance and group norm pool within one sample (bnlab.axes.norm_set): the statistics are Alg. 1's,
# computed by forward() on a reshape of x (a batch of one in front, the channels split into G groups for
# group norm) with γ = 1, β = 0; the result is reshaped back and the member's own γ, β applied.
import math  # noqa: E402

from .axes import NormSet, channel_axis, feature_shape, norm_set  # noqa: E402  (kept with the family additions)

__all__ += ["FamilyCache", "family_forward", "family_backward"]


class FamilyCache(NamedTuple):
    """What :func:`family_backward` needs: the set, Alg. 1's cache on the reshaped x, γ broadcast against x."""

    set: NormSet
    bn: Cache  # Alg. 1 on x.reshape(set.view_shape) with γ = 1, β = 0: x̂ and the statistics
    gamma: np.ndarray


def _family_param(p, s: NormSet, name: str, dtype) -> np.ndarray:
    p = np.asarray(p, dtype=dtype)
    if p.shape != s.param_shape:
        raise ValueError(f"{name} has shape {p.shape}, expected {s.param_shape} for {s.norm} norm of shape {s.shape}")
    if s.norm == "batch":
        return p.reshape(param_shape(s.shape, s.axes))
    if s.norm == "layer":
        return p.reshape(1, *p.shape)
    c = channel_axis(s.layout)
    return p.reshape(tuple(n if a == c else 1 for a, n in enumerate(s.shape)))


def family_forward(x, gamma, beta, norm="batch", layout="NHWC", per="channel", groups=None, eps: float = 1e-5):
    """Normalize ``x`` over the set B of ``norm`` (batch, layer, instance, group), then y = γ x̂ + β.

    γ and β have ``norm_set(...).param_shape``: the feature shape for batch norm, ``(C,)`` for instance
    and group norm, ``x.shape[1:]`` for layer norm. Returns ``(y, cache)``.

    >>> x = np.random.default_rng(0).normal(size=(4, 6, 3, 3))            # NCHW
    >>> y, _ = family_forward(x, np.ones(6), np.zeros(6), "group", "NCHW", groups=3)
    >>> g = y.reshape(4, 3, 2 * 3 * 3)                                       # (N, G, values of one group)
    >>> bool(np.allclose(g.mean(axis=2), 0) and np.allclose(g.var(axis=2), 1, atol=1e-3))
    True
    """
    x = _as_float(x, "x")
    s = norm_set(x.shape, layout, norm, per=per, groups=groups)
    if s.set_size <= 1:
        raise ValueError(
            f"{norm} norm of an input of shape {s.shape} ({s.layout}) pools {s.set_size} value per set, so its "
            f"variance is 0; it needs sets of more than one value (more locations, or fewer groups)"
        )
    gamma_, beta_ = (_family_param(p, s, name, x.dtype) for p, name in ((gamma, "gamma"), (beta, "beta")))
    one = np.ones(math.prod(s.view_shape[a] for a in range(len(s.view_shape)) if a not in s.view_axes), x.dtype)
    one = one.reshape(feature_shape(s.view_shape, s.view_axes))
    x_hat, cache = forward(x.reshape(s.view_shape), one, np.zeros_like(one), axes=s.view_axes, eps=eps)
    y = gamma_ * x_hat.reshape(x.shape) + beta_  # the member's own γ, β
    return y, FamilyCache(s, cache, gamma_)


def family_backward(dy, cache: FamilyCache):
    """Gradients of :func:`family_forward`: ``(dx, dgamma, dbeta)``, through Alg. 1's closed-form backward."""
    dy = _as_float(dy, "dy")
    s, bn, gamma = cache
    if dy.shape != s.shape:
        raise ValueError(f"dy has shape {dy.shape}, expected the shape of x {s.shape}")
    x_hat = bn.x_hat.reshape(s.shape)
    if s.norm == "batch":
        keep = s.axes
    elif s.norm == "layer":
        keep = (0,)
    else:
        keep = tuple(a for a in range(len(s.shape)) if a != channel_axis(s.layout))
    dgamma = (dy * x_hat).sum(axis=keep).reshape(s.param_shape)  # ∂ℓ/∂γ = Σ ∂ℓ/∂y x̂
    dbeta = dy.sum(axis=keep).reshape(s.param_shape)  # ∂ℓ/∂β = Σ ∂ℓ/∂y
    dx, _, _ = backward((dy * gamma).reshape(s.view_shape), bn)  # ∂ℓ/∂x̂ = γ ∂ℓ/∂y, then Alg. 1's backward
    return dx.reshape(s.shape), dgamma, dbeta
