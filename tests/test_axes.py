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
