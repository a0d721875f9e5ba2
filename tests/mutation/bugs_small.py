"""Planted bugs for issue 17's remaining parts: the small-batch protocol, evaluate --recalibrate --nproc, vmap over
a batched mask."""

T = "tests/apps/test_small_batch.py::"
M = "tests/nn/test_mask.py::"
R = "tests/distributed/test_recalibrate_distributed.py::"

BUGS = [
    dict(
        name="vmap-mask-host-checks",
        path="src/bnlab/nn/_dispatch.py",
        old="    if _compat.functorch_transforms_active():\n        # vmap (a batched mask)",
        new="    if False:\n        # vmap (a batched mask)",
        tests=[
            M + "test_vmap_over_a_batched_mask_equals_the_per_problem_loop[per-channel]",
            M + "test_vmap_with_vmapped_running_statistics_updates_each_problems_own",
        ],
    ),
    dict(
        name="vmap-count-rule-checks-one-entry",
        path="src/bnlab/nn/_dispatch.py",
        old="    return checked_masked_count_op(_front(count, in_dims[0], info.batch_size)), 0",
        new="    return checked_masked_count_op(_front(count, in_dims[0], info.batch_size)[0]).expand_as("
        "_front(count, in_dims[0], info.batch_size)).clone(), 0",
        tests=[M + "test_vmap_refuses_what_has_no_rule_with_the_workaround"],
    ),
    dict(
        name="vmap-unbatched-running-stats-unclear-error",
        path="src/bnlab/nn/functional.py",
        old="        if not _compat.functorch_transforms_active():\n            raise\n",
        new="        raise\n",
        tests=[M + "test_vmap_refuses_what_has_no_rule_with_the_workaround"],
    ),
    dict(
        name="study-adam-betas-not-scaled",
        path="src/bnlab/report/small_batch.py",
        old='"betas": (1 - 0.1 * k, 1 - 0.001 * k)',
        new='"betas": (0.9, 0.999)',
        tests=[T + "test_adam_rule_is_the_square_root_rule_with_adams_defaults_at_32"],
    ),
    dict(
        name="study-lr-linear-not-square-root",
        path="src/bnlab/report/small_batch.py",
        old='return {"lr": lr32 * math.sqrt(k),',
        new='return {"lr": lr32 * k,',
        tests=[T + "test_adam_rule_is_the_square_root_rule_with_adams_defaults_at_32"],
    ),
    dict(
        name="study-workers-lose-the-run-order",
        path="src/bnlab/report/small_batch.py",
        old="        runs = [done[c] for c in itertools.product(batch_sizes, norms, seeds)]",
        new="        runs = list(done.values())",
        tests=[T + "test_worker_processes_give_the_same_runs"],
    ),
    dict(
        name="evaluate-nproc-every-rank-the-first-shard",
        path="src/bnlab/cli/evaluate.py",
        old="            batches = batches[replica.rank * per : (replica.rank + 1) * per]",
        new="            batches = batches[:per]",
        tests=[R + "test_evaluate_recalibrate_nproc_is_one_process_over_the_union"],
    ),
]
