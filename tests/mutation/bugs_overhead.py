"""Planted bugs for issue 19's per-call overhead: the native running-statistics update, door eager without autograd."""

N = "tests/kernels/test_native.py::"

BUGS = [
    dict(
        name="running-update-no-version-bump",
        path="src/bnlab/kernels/native.py",
        old="        torch.autograd.graph.increment_version((running_mean, running_var))",
        new="        pass",
        tests=[N + "test_a_graph_that_saved_the_running_statistics_sees_their_update"],
    ),
    dict(
        name="running-update-one-lerp-formula",
        path="src/bnlab/kernels/csrc/bn_body.h",
        old="    const int small = (w < 0 ? -w : w) < (T)0.5;",
        new="    const int small = 1;",
        tests=[N + "test_running_update_has_the_stock_ops_bits[0.9-100-f32]"],
    ),
    dict(
        name="running-update-ignores-nan",
        path="src/bnlab/kernels/csrc/bn_body.h",
        old="        if (!isfinite(mean[ch]) || !isfinite(var[ch] * f)) return 0;",
        new="        if (!isfinite(var[ch] * f)) return 0;",
        tests=[N + "test_running_update_declines_without_changing_anything"],
    ),
    dict(
        name="no-grad-door-always",
        path="src/bnlab/nn/_dispatch.py",
        old="    if not torch.is_grad_enabled():\n        return False\n    for t in tensors:",
        new="    if True:\n        return False\n    for t in tensors:",
        tests=[N + "test_calls_without_autograd_give_the_same_bits_and_no_graph[train-nchw]"],
    ),
    dict(
        name="running-update-fused-unbiased",
        path="src/bnlab/kernels/csrc/bn_body.h",
        old="        volatile T product = var[ch] * f;",
        new="        T product = var[ch] * f;",
        tests=[N + "test_running_update_has_the_stock_ops_bits[0.1-32-f32]"],
    ),
]
BUGS += [
    dict(
        name="flat-stream-straddle-one-channel",
        path="src/bnlab/kernels/csrc/bn.c",
        old="a = pick8(first, A[ch], A[nx]);",
        new="a = pick8(first, A[ch], A[ch]);",
        tests=["tests/kernels/test_native.py::test_streamed_flat_runs_have_the_bits_of_the_row_by_row_pass[14x14]"],
    ),
    dict(
        name="flat-stream-dx-straddle-one-channel",
        path="src/bnlab/kernels/csrc/bn.c",
        old="c1 = pick8(first, C1[ch], C1[nx]);",
        new="c1 = pick8(first, C1[ch], C1[ch]);",
        tests=["tests/kernels/test_native.py::test_streamed_flat_runs_have_the_bits_of_the_row_by_row_pass[odd]"],
    ),
    dict(
        name="flat-stream-rows-shorter-than-a-vector",
        path="src/bnlab/kernels/csrc/bn.c",
        old=" && s % 16 != 0 && s >= 8;",
        new=" && s % 16 != 0;",
        tests=["tests/kernels/test_native.py::test_large_outputs_streamed_match_float64[nchw-2x3-False]"],
    ),
]
BUGS += [
    dict(
        name="head-first-decline-not-passed-on",
        path="src/bnlab/kernels/contract.py",
        old="            except Declined:\n                pass\n",
        new="            except Declined:\n                raise\n",
        tests=["tests/kernels/test_native.py::test_non_finite_input_declines_to_the_pure_family"],
    ),
]
