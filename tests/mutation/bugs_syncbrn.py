"""Planted bugs for Batch Renorm under synchronized BN (issue 17, §1: SyncBatchRenorm, convert_sync)."""

S = "tests/distributed/test_sync_renorm.py::"
EQ = S + "test_two_ranks_equal_one_batch_renorm_layer_on_the_union"
# SyncBatchNorm.forward from where Batch Renorm's settings are read (inside the try that tells the other ranks of
# a local error) to where they are used; the plant reads them after the try, so a bad schedule value on one rank
# leaves the others waiting
_SETTINGS = "            renorm = self._renorm_settings() if synced else None  # a bad schedule: every rank stops"
_FORWARD = (
    _SETTINGS
    + """
        except (TypeError, ValueError) as err:
            if not (synced and isinstance(x, torch.Tensor) and x.dim() >= 1):
                raise
            # tell the other ranks before raising, so that they stop too instead of waiting for this one
            axes = tuple(range(x.dim()))
            group, timeout, name = self.process_group, self.timeout, self.layer_name
            return _sync(x, None, None, None, None, 0.0, self.eps, axes, group, timeout, err, name, self.layer_index)
        use_batch, update, momentum = self._mode()
        rm, rv = (self.running_mean, self.running_var) if (update or not use_batch) else (None, None)
        w, b, eps, axes = self.weight, self.bias, self.eps, self.reduce_axes(x.dim())
        if synced:
            group, timeout, name, index = self.process_group, self.timeout, self.layer_name, self.layer_index
            y = _sync(x, rm, rv, w, b, momentum, eps, axes, group, timeout, None, name, index, renorm)"""
)

BUGS = [
    dict(
        name="sync-renorm-r-d-dropped",
        path="src/bnlab/distributed.py",
        old="if renorm is not None and running_mean is not None and (renorm[0], renorm[1]) != (1.0, 0.0):",
        new="if False:",
        tests=[EQ + "[2d-float64-channel-clipped]", S + "test_during_warm_up_it_is_synchronized_bn_then_batch_renorm"],
    ),
    dict(
        name="sync-renorm-r-d-from-the-local-shard",
        path="src/bnlab/distributed.py",
        old="r, d = renorm_factors(mean, var, running_mean,",
        new="r, d = renorm_factors(*torch.var_mean(x.detach(), dim=axes, correction=0)[::-1], running_mean,",
        tests=[EQ + "[2d-float64-channel-clipped]", EQ + "[2d-float64-channel-unclipped]"],
    ),
    dict(
        name="sync-renorm-r-d-after-the-running-update",
        path="src/bnlab/distributed.py",
        old="            r, d = renorm_factors(mean, var, running_mean,",
        new="            F.update_running_stats(running_mean, running_var, mean, var, m, momentum)\n"
        "            r, d = renorm_factors(mean, var, running_mean,",
        tests=[EQ + "[2d-float64-channel-unclipped]"],
    ),
    dict(
        name="sync-renorm-gamma-beta-gradients-lost",
        path="src/bnlab/distributed.py",
        old="        weight, bias = renorm_affine(weight, bias, r, d)",
        new="        weight, bias = (t.detach() for t in renorm_affine(weight, bias, r, d))",
        tests=[EQ + "[2d-float64-channel-clipped]"],
    ),
    dict(
        name="sync-renorm-settings-not-compared",
        path="src/bnlab/distributed.py",
        old="renorm = {tuple(h[14:17]) for h in headers}",
        new="renorm = {tuple(h[14:14]) for h in headers}",
        tests=[S + "test_ranks_that_disagree_on_rmax_dmax_or_warm_up_fail_on_every_rank_and_change_nothing"],
    ),
    dict(
        name="sync-renorm-warm-up-ignored",
        path="src/bnlab/distributed.py",
        old="""        rmax, dmax = self.limits()
        return rmax, dmax, self.warmup_steps""",
        new="""        rmax, dmax = self.limits(self.warmup_steps)
        return rmax, dmax, self.warmup_steps""",
        tests=[S + "test_during_warm_up_it_is_synchronized_bn_then_batch_renorm"],
    ),
    dict(
        name="sync-renorm-layer-runs-as-plain-sync-bn",
        path="src/bnlab/distributed.py",
        old="""        if not self._mode()[1]:  # no running statistics to correct toward""",
        new="""        if True:  # no running statistics to correct toward""",
        tests=[EQ + "[2d-float64-channel-clipped]"],
    ),
    dict(
        name="sync-renorm-bad-schedule-not-told-to-peers",
        path="src/bnlab/distributed.py",
        old=_FORWARD,
        new=_FORWARD.replace(_SETTINGS, "            renorm = None").replace(
            "name, index, renorm)", "name, index, self._renorm_settings())"
        ),
        tests=[S + "test_ranks_that_disagree_on_rmax_dmax_or_warm_up_fail_on_every_rank_and_change_nothing"],
    ),
    dict(
        name="convert-sync-drops-the-renorm-schedule",
        path="src/bnlab/distributed.py",
        old="new = SyncBatchRenorm(old.num_features, rmax=old.rmax, dmax=old.dmax,",
        new="new = SyncBatchRenorm(old.num_features, rmax=3.0, dmax=old.dmax,",
        tests=[S + "test_convert_sync_makes_batch_renorm_sync_batch_renorm_with_the_same_state"],
    ),
]
