"""Property tests: random shapes, reduce axes and values; reference ≡ bnlab.nn ≡ float64 brute force."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab import reference as ref
from bnlab.moments import merge_all, moments
from bnlab.nn import functional as F
from conftest import bn_float64


@st.composite
def problems(draw):
    ndim = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    shape = (draw(st.integers(2, 5)),) + shape[1:]
    others = draw(st.lists(st.integers(1, ndim - 1), unique=True, max_size=ndim - 1))
    axes = tuple(sorted({0, *others}))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-2, 1.0, 1e2]))
    offset = draw(st.sampled_from([0.0, 5.0, -300.0]))
    return shape, axes, seed, scale, offset


def _reference_and_torch_agree_with_float64(problem):
    shape, axes, seed, scale, offset = problem
    rng = np.random.default_rng(seed)
    x = rng.normal(offset, scale, shape)
    fshape = tuple(n for i, n in enumerate(shape) if i not in axes)
    gamma, beta = rng.normal(1, 0.5, fshape), rng.normal(0, 1, fshape)
    y64, mu64, var64 = bn_float64(x, gamma, beta, axes)
    y_ref, cache = ref.forward(x, gamma, beta, axes=axes)
    np.testing.assert_allclose(y_ref, y64, atol=1e-8, rtol=1e-8)
    rm, rv = torch.zeros(fshape, dtype=torch.float64), torch.ones(fshape, dtype=torch.float64)
    xt = torch.from_numpy(x).requires_grad_()
    y_t = F.batch_norm(xt, rm, rv, torch.from_numpy(gamma), torch.from_numpy(beta), True, 1.0, 1e-5, axes)
    np.testing.assert_allclose(y_t.detach().numpy(), y64, atol=1e-8, rtol=1e-8)
    m = cache.m
    np.testing.assert_allclose(rm.numpy(), mu64, atol=1e-9 * (1 + abs(offset)))
    if m > 1:
        np.testing.assert_allclose(rv.numpy(), var64 * m / (m - 1), rtol=1e-8, atol=1e-12)
    dy = rng.normal(size=shape)
    y_t.backward(torch.from_numpy(dy))
    dx, _, _ = ref.backward(dy, cache)
    np.testing.assert_allclose(xt.grad.numpy(), dx, atol=1e-7 / scale, rtol=1e-6)


def _merging_moments_equals_moments_of_the_whole(sizes, seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(rng.uniform(-10, 10), rng.uniform(0.1, 5), (n, 3)) for n in sizes]
    total = merge_all(moments(p, (0,)) for p in parts)
    whole = np.concatenate(parts)
    assert total.count == len(whole)
    np.testing.assert_allclose(total.mean, whole.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(total.m2, ((whole - whole.mean(0)) ** 2).sum(0), rtol=1e-9, atol=1e-9)


# Each property runs twice: a quick pass in every test run, and a long pass of 500 examples against float64
# (marked slow; CI runs it).
_SIZES = (st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(0, 2**31 - 1))
test_reference_and_torch_agree_with_float64 = settings(max_examples=60, deadline=None)(
    given(problems())(_reference_and_torch_agree_with_float64)
)
test_reference_and_torch_agree_with_float64_500 = pytest.mark.slow(
    settings(max_examples=500, deadline=None)(given(problems())(_reference_and_torch_agree_with_float64))
)
test_merging_moments_equals_moments_of_the_whole = settings(max_examples=40, deadline=None)(
    given(*_SIZES)(_merging_moments_equals_moments_of_the_whole)
)
test_merging_moments_equals_moments_of_the_whole_500 = pytest.mark.slow(
    settings(max_examples=500, deadline=None)(given(*_SIZES)(_merging_moments_equals_moments_of_the_whole))
)
