"""Planted bugs for Batch Renormalization and recalibration across processes (issue 17, parts 1 and 3)."""

T = "tests/nn/test_renorm.py::"
D = "tests/distributed/test_recalibrate_distributed.py::"

BUGS = [
    dict(
        name="renorm-r-d-not-detached",
        path="src/bnlab/nn/renorm.py",
        old="    with torch.no_grad():  # r and d are constants for autograd",
        new="    with torch.enable_grad():  # r and d are constants for autograd",
        tests=[
            T + "test_one_step_matches_the_float64_closed_form[dtype0-channel-2d]",
            T + "test_one_step_matches_the_float64_closed_form[dtype0-activation-2d]",
        ],
    ),
    dict(
        name="renorm-running-stats-read-after-the-update",
        path="src/bnlab/nn/renorm.py",
        old="""        r, d = renorm_factors(mean_B, var_B, running_mean, running_var, eps, rmax, dmax)
    scale, shift = renorm_affine(weight, bias, r, d)
    return batch_norm(input, running_mean, running_var, scale, shift, True, momentum, eps, axes)""",
        new="""        from .functional import update_running_stats

        m = math.prod(input.shape[a] for a in axes)
        update_running_stats(running_mean, running_var, mean_B, var_B, m, momentum)
        r, d = renorm_factors(mean_B, var_B, running_mean, running_var, eps, rmax, dmax)
    scale, shift = renorm_affine(weight, bias, r, d)
    return batch_norm(input, None, None, scale, shift, True, momentum, eps, axes)""",
        tests=[
            T + "test_one_step_matches_the_float64_closed_form[dtype0-channel-2d]",
            T + "test_equal_to_bn_during_warm_up_and_renormalizing_from_the_next_step",
        ],
    ),
    dict(
        name="renorm-warm-up-off-by-one",
        path="src/bnlab/nn/renorm.py",
        old="if step is not None and step < self.warmup_steps:",
        new="if step is not None and step <= self.warmup_steps:",
        tests=[T + "test_equal_to_bn_during_warm_up_and_renormalizing_from_the_next_step"],
    ),
    dict(
        name="renorm-r-not-clipped-below",
        path="src/bnlab/nn/renorm.py",
        old="r = (sigma_B / sigma).clamp_(1 / rmax, rmax)",
        new="r = (sigma_B / sigma).clamp_(max=rmax)",
        tests=[T + "test_one_step_matches_the_float64_closed_form[dtype0-channel-2d]"],
    ),
    dict(
        name="renorm-corrects-during-recalibration",
        path="src/bnlab/nn/renorm.py",
        old="        if not update:  # eval, frozen, or no running statistics to correct toward: batch norm",
        new="        if not use_batch:  # eval, frozen, or no running statistics to correct toward: batch norm",
        tests=[T + "test_recalibrate_treats_it_as_bn"],
    ),
    dict(
        name="renorm-reference-dx-without-r",
        path="src/bnlab/reference.py",
        old="dx = dx_hat * r / sigma_B + dsigma_B",
        new="dx = dx_hat / sigma_B + dsigma_B",
        tests=[
            T + "test_reference_backward_matches_numerical_gradients_where_r_and_d_are_clipped",
            T + "test_reference_equals_an_independent_torch_formula_with_r_and_d_free",
        ],
    ),
    dict(
        name="convert-sync-makes-batch-renorm-plain-sync-bn",
        path="src/bnlab/distributed.py",
        old="if isinstance(old, BatchRenormBase):  # Batch Renorm stays Batch Renorm",
        new="if False:  # Batch Renorm stays Batch Renorm",
        tests=[T + "test_convert_leaves_it_as_it_is_and_convert_sync_synchronizes_it"],
    ),
    dict(
        name="recalibrate-not-merging-across-ranks",
        path="src/bnlab/inference/recalibrate.py",
        old="stats = _merged_across_ranks(layers, records, n, error, group, timeout, device)",
        new="stats = {id(m): records[id(m)].statistics() for _, m in layers if records[id(m)].batches}",
        tests=[D + "test_every_rank_ends_with_alg2_over_the_union_of_uneven_shards"],
    ),
    dict(
        name="recalibrate-ranks-means-unweighted",
        path="src/bnlab/inference/recalibrate.py",
        old="mean, var = total.mean, within_m2 / dof",
        new="mean, var = sum(chunk[r, 2 : 2 + numel] for r in ranks) / len(ranks), within_m2 / dof",
        tests=[D + "test_every_rank_ends_with_alg2_over_the_union_of_uneven_shards"],
    ),
    dict(
        name="recalibrate-error-on-one-rank-not-shared",
        path="src/bnlab/inference/recalibrate.py",
        old="""        raise RuntimeError(
            f"recalibrate: rank(s) {failed} of {world} failed""",
        new="""        return {}
        raise RuntimeError(
            f"recalibrate: rank(s) {failed} of {world} failed""",
        tests=[D + "test_an_error_on_one_rank_is_raised_on_every_rank_and_changes_nothing"],
    ),
]
