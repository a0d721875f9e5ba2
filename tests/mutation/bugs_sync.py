"""Planted bugs for synchronized BN (issue 20): each must make the listed tests fail."""

F = "tests/distributed/test_distributed_faults.py"

BUGS = [
    # 1. precision at a large offset: the shard's float32 mean goes into the merge unrefined
    dict(
        name="sync-mean-not-refined",
        path="src/bnlab/distributed.py",
        old="_REFINE_RATIO = 1.0",
        new="_REFINE_RATIO = float('inf')",
        tests=[f"{F}::test_sync_statistics_at_a_large_offset_as_accurate_as_one_process"],
    ),
    # 1. ... or refined with a float32 sum
    dict(
        name="sync-refine-sum-float32",
        path="src/bnlab/distributed.py",
        old="mean = torch.sum(x, dim=axes, dtype=torch.float64) / count",
        new="mean = torch.sum(x, dim=axes, dtype=torch.float32).double() / count",
        tests=[f"{F}::test_sync_statistics_at_a_large_offset_as_accurate_as_one_process"],
    ),
    # 2. Chan's merge without its count-0 guard: two empty summaries first divide 0/0
    dict(
        name="merge-empty-first-nan",
        path="src/bnlab/moments.py",
        old="        if a.count == 0:\n            return b\n",
        new="",
        tests=[f"{F}::test_merge_with_empty_summaries_first_is_exact_never_nan"],
    ),
    # 2. ... per-feature counts: an empty side's NaN mean is not masked
    dict(
        name="merge-masked-nan",
        path="src/bnlab/moments.py",
        old="a_mean, b_mean = where(a_empty, b.mean, a.mean), where(b_empty, a.mean, b.mean)",
        new="a_mean, b_mean = a.mean, b.mean",
        tests=[f"{F}::test_merge_with_empty_summaries_first_is_exact_never_nan"],
    ),
    # 3. the deadlines in the exchanged rows are ignored: a late rank goes on alone after another gave up
    dict(
        name="sync-late-rank-goes-on",
        path="src/bnlab/distributed.py",
        old="late = [r for r, t in enumerate(starts) if t > deadlines[first]]",
        new="late = []",
        tests=[f"{F}::test_a_stalled_rank_fails_with_the_others_and_no_rank_counts_the_batch"],
    ),
    # 4. hand-built layers carry no identity: a rank that skipped one merges with another layer
    dict(
        name="sync-hand-built-no-identity",
        path="src/bnlab/distributed.py",
        old="    return -index\n",
        new="    return 0\n",
        tests=[f"{F}::test_a_skipped_hand_built_layer_fails_on_every_rank"],
    ),
    # 5. eps and momentum (hence num_batches_tracked with momentum=None) not compared across ranks
    dict(
        name="sync-settings-not-compared",
        path="src/bnlab/distributed.py",
        old="settings = {(h[12], h[13]) for h in headers}",
        new="settings = {0}",
        tests=[f"{F}::test_ranks_disagreeing_on_eps_or_momentum_fail_on_every_rank"],
    ),
]
