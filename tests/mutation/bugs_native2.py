"""Planted bugs the native2 (compiled CPU family, second round) helper's tests must kill (tests/mutation/run.py)."""

N = "tests/kernels/test_native.py::"
C = "src/bnlab/kernels/csrc/bn.c"
PY = "src/bnlab/kernels/native.py"

BUGS = [
    # float32 backward lanes that (almost) never flush to float64: the error grows with the count
    dict(name="native2-f32-blocks-unbounded", path=C,
         old="#define F32_TERMS 8\n",
         new="#define F32_TERMS 100000\n",
         tests=[N + "test_backward_sums_within_the_stated_float32_block_bound[nchw]"]),
    # (native2-stream-misaligned, row-by-row streaming of rows that do not start on a cache line, was retired when
    # such rows became flat runs: rows of 8+ values no longer reach that condition and shorter ones have no vector
    # to stream, so the plant no longer changes the code's behaviour; flat-stream-* in bugs_overhead.py cover them)
    # the per-shape cache keyed without the strides: a channels_last input read as NCHW
    dict(name="native2-shape-cache-ignores-strides", path=PY,
         old="    key = (x.shape, x.stride())\n",
         new="    key = (x.shape,)\n",
         tests=[N + "test_statistics_within_1e_6_of_float64_with_large_offsets"]),
    # channels_last streamed rows: the fused ReLU dropped from the streamed normalize
    dict(name="native2-cl-stream-relu-dropped", path=C,
         old="        if (relu) v = (v8f)((v8i)v & (v > Z));\n        put8(y + ch, v, 1);",
         new="        put8(y + ch, v, 1);",
         tests=[N + "test_large_outputs_streamed_match_float64[cl-True]"]),
]  # fmt: skip
