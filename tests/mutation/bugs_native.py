"""Planted bugs the native (compiled CPU family) helper's tests must kill (see tests/mutation/run.py)."""

N = "tests/kernels/test_native.py::"
K = "tests/kernels/test_kernels.py::"
BODY = "src/bnlab/kernels/csrc/bn_body.h"
PY = "src/bnlab/kernels/native.py"

BUGS = [
    # statistics without the shift by a sample value: float64 sums of x and x² cancel at |μ|/σ = 1e7
    dict(name="native-nchw-unshifted", path=BODY,
         old="    for (int64_t ch = 0; ch < c; ch++) k[ch] = (double)x[ch * s];",
         new="    for (int64_t ch = 0; ch < c; ch++) k[ch] = 0.0;",
         tests=[N + "test_statistics_within_1e_6_of_float64_with_large_offsets[10000000.0-nchw]"]),
    dict(name="native-cl-unshifted", path=BODY,
         old="    for (int64_t ch = 0; ch < c; ch++) k[ch] = (double)x[ch];",
         new="    for (int64_t ch = 0; ch < c; ch++) k[ch] = 0.0;",
         tests=[N + "test_statistics_within_1e_6_of_float64_with_large_offsets[10000000.0-cl]"]),
    # the variance without the shifted mean's correction term
    dict(name="native-var-uncentred", path="src/bnlab/kernels/csrc/bn.c",
         old="    double v = (s2 - s1 * q) / m;",
         new="    double v = s2 / m;",
         tests=[N + "test_forward_normalize_backward_vs_float64_numpy"]),
    # channels_last tile partials overwrite instead of adding (blocks of several row chunks)
    dict(name="native-cl-tile-overwrites", path=BODY,
         old="            p2[ch0 + 4 * q + l] += a2[q][l];",
         new="            p2[ch0 + 4 * q + l] = a2[q][l];",
         tests=[N + "test_forward_normalize_backward_vs_float64_numpy"]),
    # the fused ReLU's mask dropped from the channels_last / NCHW backward reductions
    dict(name="native-cl-relu-mask-dropped", path=BODY,
         old="                if (ym) u = (v4d)((v4di)u & (CAT(load4_, SFX)(ym + r * c + ch0 + 4 * q) > 0));\n",
         new="",
         tests=[N + "test_forward_normalize_backward_vs_float64_numpy"]),
    dict(name="native-f64-nchw-relu-mask-dropped", path="src/bnlab/kernels/csrc/bn.c",
         old="                u = (v4d)((v4di)u & (y > 0));",
         new="                (void)y;",
         tests=[N + "test_forward_normalize_backward_vs_float64_numpy"]),
    dict(name="native-nchw-relu-mask-dropped", path="src/bnlab/kernels/csrc/bn.c",
         old="    return ym ? (v8f)((v8i)u & (ld8(ym + o) > 0)) : u;",
         new="    return u;",
         tests=[N + "test_forward_normalize_backward_vs_float64_numpy"]),
    # synchronized BN's global sums ignored for dx
    dict(name="native-given-sums-ignored", path=BODY,
         old="        CAT(dx_coefficients_, SFX)(ch, w, invstd, given_sums ? given_sums[ch] : s1[ch],",
         new="        CAT(dx_coefficients_, SFX)(ch, w, invstd, s1[ch],",
         tests=[K + "test_global_sums_backward_matches_local_and_float64"]),
    # normalize without the shifted form where |μ|/σ is large
    dict(name="native-no-shifted-normalize", path=BODY.replace("bn_body.h", "bn.c"),
         old="        double shift = fabs(mean[ch]) * invstd > SHIFT_RATIO ? mean[ch] : 0.0;",
         new="        double shift = 0.0;",
         tests=[N + "test_constant_and_large_offset_channels_normalize_exactly"]),
    # the number of channels_last blocks follows the thread count: 1 and 2 threads sum in different orders
    dict(name="native-blocks-follow-threads", path=BODY,
         old="    int64_t nb = rows < BLOCKS ? rows : BLOCKS;",
         new="    int64_t nb = rows < nt ? rows : nt;",
         tests=[N + "test_one_and_two_threads_agree_bitwise[cl]"]),
    # a truncated library loaded without the stamp check: SIGBUS in the loader
    dict(name="native-no-stamp-check", path=PY,
         old="        return _stamp(path).read_text().strip() == _digest(path)",
         new="        return path.exists()",
         tests=[N + "test_truncated_library_is_rebuilt"]),
    # nn.Parameter refused: layers never reach the compiled family
    dict(name="native-parameters-refused", path=PY,
         old="_PLAIN = (torch.Tensor, torch.nn.Parameter)",
         new="_PLAIN = (torch.Tensor,)",
         tests=[N + "test_layer_running_statistics_match_the_pure_path", N + "test_covers_and_the_chain"]),
    # calls autograd records are taken (not differentiable)
    dict(name="native-covers-recorded-calls", path=PY,
         old='    if op != "batch_stats" and torch.is_grad_enabled() and any(',
         new='    if False and any(',
         tests=[N + "test_covers_and_the_chain"]),
    # BNLAB_NATIVE=0 ignored
    dict(name="native-switch-ignored", path=PY,
         old='    return os.environ.get("BNLAB_NATIVE", "1").strip().lower() in ("0", "off", "false", "no")',
         new="    return False",
         tests=[N + "test_bnlab_native_0_disables_the_family"]),
    # a fork()ed child runs GNU OpenMP with 2 threads: it hangs
    dict(name="native-fork-threads", path=PY,
         old='    if _state.get("forked"):\n        return 1\n',
         new="",
         tests=[N + "test_a_forked_child_does_not_hang"]),
]  # fmt: skip
