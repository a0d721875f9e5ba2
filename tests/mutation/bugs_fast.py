"""Planted bugs for the fast paths of small tensors, synchronized BN and the compiled step (helper "fast")."""

N = "tests/nn/test_layers_match_torch.py::"

BUGS = [
    dict(
        name="checks-cache-ignores-hyperparameters",
        path="src/bnlab/nn/functional.py",
        old="_tensor_key(x), axes, bool(training), eps, momentum, activation,",
        new="_tensor_key(x), axes, bool(training), activation,",
        tests=[N + "test_cached_checks_still_refuse_a_changed_call"],
    ),
    dict(
        name="checks-cache-ignores-parameters",
        path="src/bnlab/nn/functional.py",
        old="_tensor_key(running_mean), _tensor_key(running_var), _tensor_key(weight), _tensor_key(bias),",
        new="",
        tests=[N + "test_cached_checks_still_refuse_a_changed_call"],
    ),
    dict(
        name="running-update-host-guard-always-finite",
        path="src/bnlab/nn/functional.py",
        old="return math.isfinite(sum(mean.reshape(-1).tolist()) + sum(unbiased.reshape(-1).tolist()))",
        new="return True",
        tests=[
            N + "test_running_update_skips_only_non_finite_features_on_the_fast_path",
            N + "test_running_update_of_feature_shaped_statistics",
            N + "test_nan_input_does_not_poison_running_statistics",
        ],
    ),
    dict(  # (moved by helper "compiled": the check now precedes the normalize and returns 1/√(σ²_B + ε))
        name="compiled-variance-check-dropped-with-running-stats",
        path="src/bnlab/nn/_dispatch.py",
        old="            var, invstd = checked_invstd_op(mean, var, eps, x.dtype)\n",
        new="            _, invstd = checked_invstd_op(mean, var, eps, x.dtype)\n",
        tests=[
            "tests/nn/test_compile.py::test_checked_invstd_comes_before_every_use_and_is_saved_for_the_backward",
        ],
    ),
    dict(
        name="sync-header-check-cached-without-comparing",
        path="src/bnlab/distributed.py",
        old="if last is not None and last.shape == block.shape and torch.equal(last, block):",
        new="if last is not None:",
        tests=[
            "tests/distributed/test_distributed_faults.py::test_headers_are_checked_once_per_layer_and_shape_and_a_later_change_still_fails"
        ],
    ),
    dict(
        name="sync-header-checked-every-call",
        path="src/bnlab/distributed.py",
        old="    _validated[slot] = block.clone()\n",
        new="",
        tests=[
            "tests/distributed/test_distributed_faults.py::test_headers_are_checked_once_per_layer_and_shape_and_a_later_change_still_fails"
        ],
    ),
    dict(
        name="small-door-ignores-the-offset",
        path="src/bnlab/nn/_dispatch.py",
        old="if not (math.isfinite(v) and m * m <= r2 * (v + eps)):",
        new="if not math.isfinite(v):",
        tests=[N + "test_small_tensors_take_torch_batch_norm_only_where_its_statistics_are_exact"],
    ),
    dict(
        name="small-door-takes-one-value-rows",
        path="src/bnlab/nn/_dispatch.py",
        old="or x.numel() == x.shape[0] * x.shape[1]  # H·W = 1",
        new="or False  # H·W = 1",
        tests=[N + "test_small_tensors_take_torch_batch_norm_only_where_its_statistics_are_exact"],
    ),
    dict(
        name="small-door-lets-an-overflowing-variance-through",
        path="src/bnlab/nn/_dispatch.py",
        old="if not (math.isfinite(v) and m * m <= r2 * (v + eps)):",
        new="if not (m * m <= r2 * (v + eps)):",
        tests=[
            "tests/core/test_numerics.py::test_variance_beyond_float32_is_refused_and_changes_nothing",
            N + "test_nan_input_does_not_poison_running_statistics",
        ],
    ),
]
