"""Planted bugs for the masked set B (issue 17, part 2): each must make the named tests fail."""

BUGS = [
    dict(
        name="mask-stats-ignore-the-mask",
        path="src/bnlab/kernels/composed.py",
        old="keep = mask.expand(x.shape)",
        new="keep = torch.ones_like(x, dtype=torch.bool)",
        tests=[
            "tests/nn/test_mask.py::test_masked_out_values_do_not_move_the_statistics",
            "tests/nn/test_mask.py::test_layer_matches_float64_numpy_on_the_valid_subset[contiguous-channel]",
        ],
    ),
    dict(
        name="mask-backward-uses-m-not-m-prime",
        path="src/bnlab/kernels/composed.py",
        old="grad_coefficients(invstd, weight, dbeta, dgamma, count.to(sdt))",
        new="grad_coefficients(invstd, weight, dbeta, dgamma, x.numel() // count.numel())",
        tests=[
            "tests/nn/test_mask.py::test_gradcheck_and_gradgradcheck[False-channel]",
            "tests/nn/test_mask.py::test_layer_matches_float64_numpy_on_the_valid_subset[contiguous-channel]",
        ],
    ),
    dict(
        name="mask-backward-centring-terms-on-padding-too",
        path="src/bnlab/kernels/composed.py",
        old="inner = torch.where(mask, view(d, nd, axes) * centred + view(e, nd, axes), zero)",
        new="inner = view(d, nd, axes) * centred + view(e, nd, axes)",
        tests=[
            "tests/nn/test_mask.py::test_gradcheck_and_gradgradcheck[False-activation]",
            "tests/nn/test_mask.py::test_layer_matches_float64_numpy_on_the_valid_subset[channels_last-channel]",
        ],
    ),
    dict(
        # the rule "dy of masked-out values does not enter the sums" is wrong: their outputs depend on μ_B, σ²_B
        name="mask-backward-sums-over-the-masked-set-only",
        path="src/bnlab/kernels/composed.py",
        old="    dys = dy.to(sdt)\n    centred = x.to(sdt) - view(mean.to(sdt), nd, axes)\n    dbeta",
        new="    dys = torch.where(mask, dy.to(sdt), 0)\n    centred = x.to(sdt) - view(mean.to(sdt), nd, axes)\n"
        "    dbeta",
        tests=["tests/nn/test_mask.py::test_gradcheck_and_gradgradcheck[False-channel]"],
    ),
    dict(
        name="mask-running-variance-with-the-full-count",
        path="src/bnlab/nn/functional.py",
        old="update_running_stats(running_mean, running_var, mean, var, m_in, momentum)",
        new="update_running_stats(running_mean, running_var, mean, var, x.numel() // mean.numel(), momentum)",
        tests=["tests/nn/test_mask.py::test_layer_matches_float64_numpy_on_the_valid_subset[contiguous-channel]"],
    ),
    dict(
        name="mask-count-check-gone",
        path="src/bnlab/nn/_dispatch.py",
        old="low = count < 2",
        new="low = count < 0",
        tests=[
            "tests/nn/test_mask.py::test_a_feature_with_fewer_than_two_values_is_refused_and_nothing_changes[0]",
            "tests/nn/test_mask.py::test_a_feature_with_fewer_than_two_values_is_refused_and_nothing_changes[1]",
        ],
    ),
    dict(
        name="mask-all-true-not-the-unmasked-path",
        path="src/bnlab/nn/functional.py",
        old='_dispatch.route(x) == "eager" and bool(mask.all())',
        new='_dispatch.route(x) == "eager" and False',
        tests=["tests/nn/test_mask.py::test_all_true_mask_equals_no_mask_exactly"],
    ),
    dict(
        name="mask-shape-check-gone",
        path="src/bnlab/nn/functional.py",
        old="    if not fits:\n        raise ValueError(\n            f\"mask of shape",
        new="    if False:\n        raise ValueError(\n            f\"mask of shape",
        tests=[
            "tests/nn/test_mask.py::test_bad_masks_are_refused_with_state_unchanged[True-wrong-size]",
            "tests/nn/test_mask.py::test_bad_masks_are_refused_with_state_unchanged[False-wrong-size]",
        ],
    ),
    dict(
        name="reference-masked-dx-centring-on-padding",
        path="src/bnlab/reference.py",
        old="(dy - in_B * (dbeta + x_hat * dgamma) / m)",
        new="(dy - (dbeta + x_hat * dgamma) / m)",
        tests=["tests/nn/test_mask.py::test_reference_gradients_equal_autograd_of_the_subset_definition[channel]"],
    ),
]
