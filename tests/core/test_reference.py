"""bnlab.reference against an independent float64 computation and numerical gradients."""

import numpy as np
import pytest

from bnlab import reduce_axes
from bnlab import reference as ref
from bnlab.moments import merge, merge_all, moments
from conftest import bn_float64

CASES = [
    ((16, 5), "NC"),
    ((8, 3, 7), "NCL"),
    ((8, 7, 3), "NLC"),
    ((6, 3, 5, 4), "NCHW"),
    ((6, 5, 4, 3), "NHWC"),
    ((4, 2, 3, 4, 5), "NCDHW"),
    ((4, 3, 4, 5, 2), "NDHWC"),
]


def _params(rng, fshape, dtype):
    return rng.normal(1, 0.3, fshape).astype(dtype), rng.normal(0, 0.5, fshape).astype(dtype)


@pytest.mark.parametrize("shape, layout", CASES)
@pytest.mark.parametrize("per", ["channel", "activation"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_forward_matches_float64(rng, shape, layout, per, dtype, tol):
    axes = reduce_axes(layout, per)
    x = rng.normal(2.0, 3.0, shape).astype(dtype)
    fshape = tuple(n for i, n in enumerate(shape) if i not in axes)
    gamma, beta = _params(rng, fshape, dtype)
    y, cache = ref.forward(x, gamma, beta, axes=axes, eps=1e-5)
    y64, mu64, var64 = bn_float64(x, gamma, beta, axes)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, y64, rtol=tol, atol=tol)
    np.testing.assert_allclose(cache.mu_B.squeeze(axis=axes), mu64, rtol=tol, atol=tol)
    np.testing.assert_allclose(cache.sigma2_B.squeeze(axis=axes), var64, rtol=tol * 10, atol=tol)
    assert cache.m == int(np.prod([shape[a] for a in axes]))


def _numerical_grad(f, x, h=1e-5):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def _rel_err(a, b):
    return np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))


@pytest.mark.parametrize("shape, axes", [((5, 3, 2, 2), (0, 2, 3)), ((6, 2, 3), (0,)), ((4, 3, 2, 2), (0, 1, 2))])
def test_backward_matches_numerical_gradients(rng, shape, axes):
    x = rng.normal(1, 2, shape)
    fshape = tuple(n for i, n in enumerate(shape) if i not in axes)
    gamma, beta = rng.normal(1, 0.5, fshape), rng.normal(0, 1, fshape)
    w = rng.normal(size=shape)  # loss = Σ w ⊙ y, so ∂ℓ/∂y = w

    def loss():
        return float(np.sum(w * ref.forward(x, gamma, beta, axes=axes)[0]))

    y, cache = ref.forward(x, gamma, beta, axes=axes)
    dx, dgamma, dbeta = ref.backward(w, cache)
    assert _rel_err(dx, _numerical_grad(loss, x)) < 1e-7
    assert _rel_err(dgamma, _numerical_grad(loss, gamma)) < 1e-7
    assert _rel_err(dbeta, _numerical_grad(loss, beta)) < 1e-7


def test_spatial_bn_is_per_activation_bn_on_the_flattened_view(rng):
    """CS231n's definition: convolutional BN ≡ per-activation BN over the (N·H·W, C) view (NHWC)."""
    x = rng.normal(size=(4, 5, 6, 3))
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    y_conv, c_conv = ref.forward(x, gamma, beta, axes=(0, 1, 2))
    y_flat, c_flat = ref.forward(x.reshape(-1, 3), gamma, beta, axes=(0,))
    np.testing.assert_allclose(y_conv.reshape(-1, 3), y_flat, atol=1e-12)
    assert c_conv.m == c_flat.m == 4 * 5 * 6
    dy = rng.normal(size=x.shape)
    g_conv, g_flat = ref.backward(dy, c_conv), ref.backward(dy.reshape(-1, 3), c_flat)
    np.testing.assert_allclose(g_conv[0].reshape(-1, 3), g_flat[0], atol=1e-12)
    np.testing.assert_allclose(g_conv[1], g_flat[1], atol=1e-12)


@pytest.mark.parametrize("per", ["channel", "activation"])
def test_nchw_equals_nhwc(rng, per):
    x = rng.normal(size=(4, 3, 5, 6))
    xl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    a_c, a_l = reduce_axes("NCHW", per), reduce_axes("NHWC", per)
    fc = (3,) if per == "channel" else (3, 5, 6)
    gamma, beta = rng.normal(size=fc), rng.normal(size=fc)
    gl = gamma if per == "channel" else gamma.transpose(1, 2, 0)
    bl = beta if per == "channel" else beta.transpose(1, 2, 0)
    y_c, _ = ref.forward(x, gamma, beta, axes=a_c)
    y_l, _ = ref.forward(xl, gl, bl, axes=a_l)
    np.testing.assert_allclose(y_c.transpose(0, 2, 3, 1), y_l, atol=1e-12)


def test_inference_is_the_affine_map_of_alg2(rng):
    x = rng.normal(3, 2, size=(7, 4, 3, 3))
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.5, 2, size=4)
    y = ref.inference(x, gamma, beta, mean, var, axes=(0, 2, 3), eps=1e-3)
    s = (gamma / np.sqrt(var + 1e-3))[None, :, None, None]
    expected = s * x + (beta - gamma * mean / np.sqrt(var + 1e-3))[None, :, None, None]
    np.testing.assert_allclose(y, expected, atol=1e-12)
    # with the batch's own statistics, inference reproduces training normalization
    y_train, cache = ref.forward(x, gamma, beta, axes=(0, 2, 3), eps=1e-3)
    y_inf = ref.inference(x, gamma, beta, cache.mu_B.ravel(), cache.sigma2_B.ravel(), axes=(0, 2, 3), eps=1e-3)
    np.testing.assert_allclose(y_inf, y_train, atol=1e-12)


def test_population_statistics_equal_batches(rng):
    batches = [rng.normal(1, 2, size=(10, 3)) for _ in range(5)]
    means = np.stack([b.mean(0) for b in batches])
    variances = np.stack([b.var(0) for b in batches])
    mean, var = ref.population_statistics(means, variances, 10)
    np.testing.assert_allclose(mean, means.mean(0), atol=1e-12)
    np.testing.assert_allclose(var, 10 / 9 * variances.mean(0), atol=1e-12)


def test_population_statistics_unequal_batches(rng):
    sizes = [3, 10, 7]
    batches = [rng.normal(1, 2, size=(n, 2)) for n in sizes]
    means = np.stack([b.mean(0) for b in batches])
    variances = np.stack([b.var(0) for b in batches])
    mean, var = ref.population_statistics(means, variances, np.array(sizes))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(mean, allx.mean(0), atol=1e-12)  # count-weighted mean
    pooled = sum(((b - b.mean(0)) ** 2).sum(0) for b in batches) / sum(n - 1 for n in sizes)
    np.testing.assert_allclose(var, pooled, atol=1e-12)


def test_population_statistics_rejects_bad_input():
    with pytest.raises(ValueError, match="more than one value"):
        ref.population_statistics(np.zeros((2, 3)), np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="stacked per batch"):
        ref.population_statistics(np.zeros((2, 3)), np.zeros((3, 3)), 4)


def test_chan_merge_is_exact(rng):
    x = rng.normal(5, 3, size=(40, 4))
    parts = [moments(p, (0,)) for p in np.split(x, [3, 4, 20])]
    total = merge_all(parts)
    assert total.count == 40
    np.testing.assert_allclose(total.mean, x.mean(0), atol=1e-12)
    np.testing.assert_allclose(total.variance, x.var(0), atol=1e-12)
    np.testing.assert_allclose(merge(parts[0], parts[1]).mean, x[:4].mean(0), atol=1e-12)
    with pytest.raises(ValueError, match="empty"):
        merge_all([])


@pytest.mark.parametrize("axes", [(0, 2, 3), (0,)])
def test_float32_statistics_stable_with_large_offset(rng, axes):
    x = (1e6 + rng.normal(size=(16, 4, 16, 16))).astype(np.float32)
    fshape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    _, cache = ref.forward(x, np.ones(fshape, np.float32), np.zeros(fshape, np.float32), axes=axes)
    x64 = x.astype(np.float64)
    mu64, var64 = x64.mean(axis=axes), x64.var(axis=axes)
    np.testing.assert_allclose(cache.mu_B.squeeze(axis=axes), mu64, rtol=1e-4)
    np.testing.assert_allclose(cache.sigma2_B.squeeze(axis=axes), var64, rtol=1e-4)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ref.forward(np.ones((4, 3), np.int64), np.ones(3), np.zeros(3)), TypeError, "float32 or float64"),
        (lambda: ref.forward(np.ones((1, 3)), np.ones(3), np.zeros(3)), ValueError, "more than 1 value"),
        (lambda: ref.forward(np.ones((4, 3)), np.ones(2), np.zeros(3)), ValueError, "gamma has shape"),
        (lambda: ref.forward(np.ones((4, 3)), np.ones(3), np.zeros(3), eps=0), ValueError, "eps"),
        (lambda: ref.forward(np.ones((0, 3)), np.ones(3), np.zeros(3)), ValueError, "empty batch"),
    ],
)
def test_reference_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- issue 7 item 15: the corrected two-pass, checked tightly against float64 -----------------------------
@pytest.mark.parametrize("axes", [(0,), (0, 2, 3)])
def test_corrected_two_pass_corrects_the_mean_at_a_large_offset(rng, axes):
    # float32 x = 1e6 + N(0, 1): the first pass leaves μ_B off by δ (0.2 here for axes (0,)); after the
    # correction μ_B is within one float32 spacing at 1e6 (0.0625) of the float64 mean of the same values
    x = (1e6 + rng.normal(size=(16, 4, 16, 16))).astype(np.float32)
    fshape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    _, cache = ref.forward(x, np.ones(fshape, np.float32), np.zeros(fshape, np.float32), axes=axes)
    mu64 = x.astype(np.float64).mean(axis=axes, keepdims=True)
    np.testing.assert_allclose(cache.mu_B, mu64, rtol=0, atol=float(np.spacing(np.float32(1e6))))


@pytest.mark.parametrize("axes", [(0,), (0, 2, 3)])
def test_corrected_two_pass_output_and_variance_at_a_large_offset(rng, axes):
    # an independent check of δ: x̂ (x_i − μ_B − δ) and σ²_B (Σ(x_i − μ_B)²/m − δ²) against float64
    x = (1e6 + rng.normal(size=(16, 4, 16, 16))).astype(np.float32)
    fshape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    y, cache = ref.forward(x, np.ones(fshape, np.float32), np.zeros(fshape, np.float32), axes=axes)
    x64 = x.astype(np.float64)
    mu64, var64 = x64.mean(axis=axes, keepdims=True), x64.var(axis=axes, keepdims=True)
    np.testing.assert_allclose(cache.sigma2_B, var64, rtol=1e-6)
    np.testing.assert_allclose(y, (x64 - mu64) / np.sqrt(var64 + 1e-5), rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    "m, batch_vars, match",
    [
        (2.5, np.ones((2, 3)), "whole number"),
        (np.nan, np.ones((2, 3)), "whole number"),
        (np.array([4, 4.5]), np.ones((2, 3)), "whole number"),
        (True, np.ones((2, 3)), "whole number"),
        (4, -np.ones((2, 3)), "negative"),
    ],
)
def test_population_statistics_rejects_fractional_m_and_negative_variances(m, batch_vars, match):
    with pytest.raises(ValueError, match=match):
        ref.population_statistics(np.zeros((2, 3)), batch_vars, m)
    mean, var = ref.population_statistics(np.zeros((2, 3)), np.ones((2, 3)), 4.0)  # a whole float is fine
    np.testing.assert_allclose(var, 4 / 3)
