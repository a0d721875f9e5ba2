import math

import numpy as np
import pytest

import bnlab
from bnlab import axes as ax


@pytest.mark.parametrize(
    "layout, per, expected",
    [
        ("NC", "channel", (0,)),
        ("NCL", "channel", (0, 2)),
        ("NLC", "channel", (0, 1)),
        ("NCHW", "channel", (0, 2, 3)),
        ("NHWC", "channel", (0, 1, 2)),
        ("NCDHW", "channel", (0, 2, 3, 4)),
        ("NDHWC", "channel", (0, 1, 2, 3)),
        ("NHWC", "activation", (0,)),
        ("NCHW", "activation", (0,)),
    ],
)
def test_reduce_axes(layout, per, expected):
    assert bnlab.reduce_axes(layout, per=per) == expected


def test_feature_shape_and_effective_batch_size():
    shape = (32, 28, 28, 16)
    assert ax.feature_shape(shape, (0, 1, 2)) == (16,)
    assert ax.feature_shape(shape, (0,)) == (28, 28, 16)
    assert ax.effective_batch_size(shape, (0, 1, 2)) == 32 * 28 * 28 == 25088
    assert ax.effective_batch_size(shape, (0,)) == 32
    assert ax.param_shape(shape, (0, 1, 2)) == (1, 1, 1, 16)
    assert ax.normalize_axes((-1, 0), 3) == (0, 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ax.reduce_axes("NXYZ"), "unknown layout"),
        (lambda: ax.reduce_axes("NCHW", per="pixel"), "per must be"),
        (lambda: ax.normalize_axes((1, 2), 4), "must include axis 0"),
        (lambda: ax.normalize_axes((0, 4), 4), "out of range"),
        (lambda: ax.normalize_axes((0, 0), 4), "repeat"),
        (lambda: ax.check_eps(0.0), "eps must be a positive"),
        (lambda: ax.check_eps(-1e-5), "eps must be a positive"),
        (lambda: ax.check_momentum(1.5), r"momentum must be in \[0, 1\]"),
        (lambda: ax.check_momentum(-0.1), r"momentum must be in \[0, 1\]"),
        (lambda: ax.check_input((0, 3, 4, 4), (0, 2, 3), training=True), "empty batch"),
        (lambda: ax.check_input((1, 3, 1, 1), (0, 2, 3), training=True), "more than 1 value per channel"),
        (lambda: ax.check_input((5,), (0,), training=True), "2 or more dimensions"),
        (
            lambda: ax.check_input((4, 3, 2, 2), (0, 2, 3), training=True, params={"weight": (5,)}),
            "input has 3 channels but weight has 5",
        ),
    ],
)
def test_bad_input_messages(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_single_value_allowed_outside_training():
    assert ax.check_input((1, 3, 1, 1), (0, 2, 3), training=False) == (0, 2, 3)


@pytest.mark.parametrize("axes", [(0.5,), (0, 2.0), ("0",), "0", (True,), 0.0])
def test_axes_must_be_integers_not_truncated(axes):
    from bnlab.axes import normalize_axes

    with pytest.raises(TypeError, match="integers|int or a sequence"):
        normalize_axes(axes, 4)
    assert normalize_axes((np.int64(0), 2), 4) == (0, 2)  # integer NumPy scalars are whole numbers


def test_a_wrong_groups_lists_the_divisors_at_once_even_for_a_huge_channel_count():
    import time

    from bnlab.axes import check_groups

    with pytest.raises(ValueError, match=r"pick G among 1, 2, 3, 4, 6, 12$"):
        check_groups(5, 12)
    start = time.monotonic()
    with pytest.raises(ValueError, match="pick G among 1, 999999999989$"):  # the largest prime below 10^12
        check_groups(2, 999_999_999_989)
    with pytest.raises(ValueError, match="pick a divisor of C$"):
        check_groups(3, 10**13 + 1)
    assert time.monotonic() - start < 5  # counting up to C took hours


# ---- the torch layout helper and ghost BN inside norm_set (issue 15, item 1) -----------------------------------


def test_torch_reduce_axes_is_every_axis_but_one():
    assert ax.torch_reduce_axes(2) == (0,)
    assert ax.torch_reduce_axes(4) == (0, 2, 3) == ax.reduce_axes("NCHW")
    assert ax.torch_reduce_axes(5) == ax.reduce_axes("NCDHW")


@pytest.mark.parametrize("layout, shape, per", [("NCHW", (8, 3, 4, 5), "channel"), ("NHWC", (6, 4, 5, 3), "channel"),
                                                ("NCHW", (8, 3, 2, 2), "activation")])  # fmt: skip
def test_ghost_set_is_what_ghost_bn_normalizes_with(layout, shape, per):
    """norm_set(..., virtual_batch=k)'s split shape and axes give the statistics bnlab.nn's ghost BN uses."""
    import torch

    import bnlab.nn.functional as BF

    k = 2
    s = ax.norm_set(shape, layout, "batch", per=per, virtual_batch=k)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xs = x.reshape(s.split_shape)
    mean = xs.mean(dim=s.axes, keepdim=True)
    var = xs.var(dim=s.axes, unbiased=False, keepdim=True)
    want = ((xs - mean) / torch.sqrt(var + 1e-5)).reshape(shape)
    assert mean.squeeze(s.axes).shape == s.stats_shape and s.num_sets == mean.numel()
    assert s.set_size * s.num_sets == x.numel() and s.set_size == x.numel() // mean.numel()
    # the same sets through the NCHW module (channels on axis 1: NHWC input moved there)
    c = ax.channel_axis(layout)
    xt = x.movedim(c, 1)
    axes = ax.torch_reduce_axes(x.dim()) if per == "channel" else (0,)
    y = BF.batch_norm(xt, None, None, None, None, training=True, axes=axes, virtual_batch=k).movedim(1, c)
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)
    assert s.param_shape == ax.norm_set(shape, layout, "batch", per=per).param_shape
    assert s.view_axes[0] == 0 and math.prod(s.view_shape) == x.numel()


def test_ghost_set_refuses_what_it_cannot_describe():
    with pytest.raises(ValueError, match="multiple of 4, got 6"):
        ax.norm_set((6, 3, 2, 2), "NCHW", virtual_batch=4)
    with pytest.raises(ValueError, match="only applies to norm='batch'"):
        ax.norm_set((8, 4, 2, 2), "NCHW", "group", groups=2, virtual_batch=2)
    with pytest.raises(ValueError, match="virtual_batch must be an int ≥ 2"):
        ax.norm_set((8, 4, 2, 2), "NCHW", virtual_batch=1)


def test_explain_shows_ghost_bn_set_in_english_and_spanish():
    e = bnlab.explain((8, 4, 4, 16), layout="NHWC", virtual_batch=2)
    assert (e.split_shape, e.axes, e.num_sets, e.set_size) == ((4, 2, 4, 4, 16), (1, 2, 3), 64, 32)
    assert "4 runs of 2 examples" in e.text and "64 sets B = 4 runs × 16 features" in e.text
    es = bnlab.explain((8, 4, 4, 16), layout="NHWC", virtual_batch=2, lang="es").text
    assert "4 tandas de 2 ejemplos" in es and "64 conjuntos B" in es
    with pytest.raises(ValueError, match="drop the figure or virtual_batch"):
        e.save_figure("never.png")


def test_cli_explain_virtual_batch_in_a_real_process():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(bnlab.__file__).resolve().parents[1])}
    run = [sys.executable, "-m", "bnlab", "explain", "8,16,4,4", "--layout", "NCHW", "--virtual-batch", "4"]
    out = subprocess.run([*run, "--lang", "es"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "BN fantasma" in out.stdout and "2 tandas de 4 ejemplos" in out.stdout
    bad = subprocess.run([*run[:-1], "3"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "multiple of 3, got 8" in bad.stderr
