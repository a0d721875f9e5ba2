"""Planted bugs the perf helper's tests must kill (see tests/mutation/run.py)."""

K = "tests/kernels/test_kernels.py::"
F = "tests/distributed/test_distributed_faults.py::"

BUGS = [
    # the cheap shift decision: a max() lets a NaN channel hide one that needs the shifted form
    dict(name="cpu-shift-max-hides-nan", path="src/bnlab/kernels/cpu.py",
         old="    return bool((torch.add(mean.square(), var, alpha=-r2) > r2 * eps).any())",
         new="    return float(torch.add(mean.square(), var, alpha=-r2).max()) > r2 * eps",
         tests=[K + "test_cpu_shift_decision_is_the_definitions"]),
    dict(name="cpu-shift-threshold-unsquared", path="src/bnlab/kernels/cpu.py",
         old="    r2 = composed.SHIFT_RATIO * composed.SHIFT_RATIO",
         new="    r2 = composed.SHIFT_RATIO",
         tests=[K + "test_cpu_shift_decision_is_the_definitions"]),
    # long NCHW rows through vector_norm again: 2e-5 relative off at 1e6 values per row
    dict(name="cpu-long-rows-norm", path="src/bnlab/kernels/cpu.py",
         old="    if n_row <= _NORM_ROW:",
         new="    if True:",
         tests=[K + "test_statistics_within_1e6_of_float64_at_1e7_values_and_offset_1e4[long_rows-nchw]"]),
    # SyncBN: the header exchanged alone on every call again (two collectives forward)
    dict(name="sync-header-every-call", path="src/bnlab/distributed.py",
         old="    if features > _widths.get(key, 0):  # every rank: the headers agree, and so do the widths",
         new="    if True:",
         tests=[F + "test_a_skipped_hand_built_layer_fails_on_every_rank"]),
    # SyncBN: the width forgotten after it grew: every step of a wide layer makes two collectives
    dict(name="sync-width-not-kept", path="src/bnlab/distributed.py",
         old="        _widths[key] = features\n",
         new="        pass\n",
         tests=[F + "test_a_skipped_hand_built_layer_fails_on_every_rank"]),
]
