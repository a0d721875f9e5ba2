"""Planted bugs for the compiled door's statistics and 1/√(σ²_B + ε) on the CPU (helper "compiled")."""

C = "tests/nn/test_compile.py::test_checked_invstd_comes_before_every_use_and_is_saved_for_the_backward"
K = "tests/kernels/test_kernels.py::test_shifted_batch_stats_match_float64_with_large_offsets_and_a_far_shift"

BUGS = [
    dict(
        name="compiled-normalize-recomputes-invstd",
        path="src/bnlab/nn/_dispatch.py",
        old="y = shifted_normalize(x, mean, var, weight, bias, eps, axes, invstd=invstd)",
        new="y = shifted_normalize(x, mean, var, weight, bias, eps, axes)",
        tests=[C],
    ),
    dict(
        name="compiled-statistics-by-welford",
        path="src/bnlab/nn/_dispatch.py",
        old="            mean, var = moments.shifted_batch_stats(x, axes)\n",
        new="            mean, var = composed.batch_stats(x, axes)\n",
        tests=[C],
    ),
    dict(
        name="shifted-stats-unshifted",
        path="src/bnlab/moments.py",
        old="        shift = shift.narrow(a, 0, 1)\n",
        new="        shift = shift.narrow(a, 0, 1) * 0\n",
        tests=[K],
    ),
    dict(
        name="shifted-stats-summed-in-float32",
        path="src/bnlab/moments.py",
        old="    d = x.to(torch.float64) - shift.to(torch.float64)\n",
        new="    d = x.float() - shift.float()\n",
        tests=[K + "[dtype0]"],
    ),
]
