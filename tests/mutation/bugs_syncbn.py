"""Planted bugs for synchronized BN's speed work (issue 19, item 4): each must make the listed tests fail."""

F = "tests/distributed/test_distributed_faults.py"
N = "tests/kernels/test_native.py"

BUGS = [
    # the native family refuses the backward's float64 global sums again: every synchronized dx goes to the pure
    # chain (torch's affine kernel + addcmul_: two more passes over the shard, 1.6x local in channels_last)
    dict(
        name="native-refuses-float64-sums",
        path="src/bnlab/kernels/native.py",
        old='if t.dtype != dtype and not (op == "backward" and i >= _SUMS_AT and t.dtype == torch.float64):',
        new="if t.dtype != dtype:",
        tests=[f"{N}::test_global_float64_sums_backward_runs_natively"],
    ),
    # the float64 statistics rounded to float32 on their way out (what the refine pass existed to undo)
    dict(
        name="native-stats64-rounded",
        path="src/bnlab/kernels/native.py",
        old="return (mean, var) if ok == 1 else None",
        new="return (mean.float().double(), var) if ok == 1 else None",
        tests=[f"{N}::test_float64_statistics_for_synchronized_bn"],
    ),
    # synchronized BN merges the native statistics' mean rounded to float32: 1e6 + N(0, 1) loses σ²
    dict(
        name="sync-native-mean-rounded",
        path="src/bnlab/distributed.py",
        old="return exact[0], exact[1] * count",
        new="return exact[0].float().double(), exact[1] * count",
        tests=[f"{F}::test_sync_statistics_at_a_large_offset_as_accurate_as_one_process"],
    ),
    # Chan's merge on the CPU (NumPy) in float32
    dict(
        name="sync-numpy-merge-float32",
        path="src/bnlab/distributed.py",
        old="gathered = (gathered.numpy() if cpu else gathered).reshape(len(counts), 2, *fshape)",
        new="gathered = (gathered.numpy().astype(np.float32) if cpu else gathered).reshape(len(counts), 2, *fshape)",
        tests=[f"{F}::test_sync_statistics_at_a_large_offset_as_accurate_as_one_process"],
    ),
    # the cached header values keyed by the layer alone: a later eps (or shape) travels as the first one's
    dict(
        name="sync-header-values-cached-per-layer",
        path="src/bnlab/distributed.py",
        old="    key = tuple(header)\n    found = _header_values.get(key)",
        new="    key = header[1]\n    found = _header_values.get(key)",
        tests=[f"{F}::test_headers_are_checked_once_per_layer_and_shape_and_a_later_change_still_fails"],
    ),
]
