"""Planted bugs for the compiled door, dynamic shapes and the export round trip (issue 15, items 2-nn, 3, 4)."""

C = "tests/nn/test_compile.py::"
LERP = (
    " " * 16 + "running.lerp_(torch.where(ok, new.to(running.dtype), running.detach()), _weight(momentum, running))\n"
)

BUGS = [
    dict(
        name="compile-normalizes-unshifted",
        path="src/bnlab/kernels/composed.py",
        old="    y = (x.to(cdt) - mean.to(cdt).reshape(shape)) * a.to(cdt).reshape(shape)\n",
        new="    y = x.to(cdt) * a.to(cdt).reshape(shape) - (mean.to(sdt) * a).to(cdt).reshape(shape)\n",
        tests=[C + "test_compiled_door_is_shifted_for_channels_far_from_zero"],
    ),
    dict(
        name="compile-skips-the-running-update",
        path="src/bnlab/nn/functional.py",
        old="    if running_mean is not None:\n        update_running_stats(",
        new="    if running_mean is not None and not torch.compiler.is_compiling():\n        update_running_stats(",
        tests=[
            C + "test_compiled_equals_eager[per_channel-f64]",
            C + "test_compile_hands_over_ordinary_ops_not_the_opaque_operator[None]",
        ],
    ),
    dict(
        name="compile-takes-the-opaque-operator",
        path="src/bnlab/nn/_dispatch.py",
        old='        return "compiled"\n',
        new='        return "op"\n',
        tests=[C + "test_compile_hands_over_ordinary_ops_not_the_opaque_operator[None]"],
    ),
    dict(
        name="compiled-fused-relu-backward-unmasked",
        path="src/bnlab/nn/_dispatch.py",
        old="composed.invstd_backward(dy, x, mean, invstd, weight, ctx.axes, needs, y=y)",
        new="composed.invstd_backward(dy, x, mean, invstd, weight, ctx.axes, needs, y=None)",
        tests=[C + "test_compiled_equals_eager[fused_relu-f64]"],
    ),
    dict(
        name="compiled-skips-the-variance-overflow-check",
        path="src/bnlab/nn/_dispatch.py",
        old="            var, invstd = checked_invstd_op(mean, var, eps, x.dtype)\n",
        new="            invstd = torch.rsqrt(var + eps)\n",
        tests=[C + "test_compiled_refuses_a_variance_beyond_float32_and_changes_nothing"],
    ),
    dict(
        name="symbolic-sizes-specialized-by-int",
        path="src/bnlab/axes.py",
        old="    if torch is not None and isinstance(n, torch.SymInt):\n",
        new="    if False:\n",
        tests=[
            C + "test_export_with_a_dynamic_batch_size_non_strict[train]",
            C + "test_export_with_a_dynamic_batch_size_non_strict[eval]",
        ],
    ),
    dict(
        name="eps-checked-with-math-isfinite",
        path="src/bnlab/axes.py",
        old="    if not 0 < eps < math.inf:",
        new="    if not eps > 0 or not math.isfinite(eps):",
        tests=[
            C + "test_dynamic_true_fullgraph_matches_eager_for_every_batch_size[eval]",
            C + "test_six_batch_sizes_compile_no_more_graphs_than_torch_bn[train-dynamic]",
        ],
    ),
    dict(
        name="running-update-in-a-no-grad-region",
        path="src/bnlab/nn/functional.py",
        old=LERP,
        new="                with torch.no_grad():\n    " + LERP,
        tests=[C + "test_training_export_saves_and_loads_back"],
    ),
]
