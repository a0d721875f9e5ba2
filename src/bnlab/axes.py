"""Which values share one mean and variance: layouts, reduce axes, feature shapes.

Every batch-normalization variant in bnlab differs only in the set B of Ioffe & Szegedy (2015), Alg. 1:
the values that share one mean and variance. For a tensor ``x`` that set is described by the axes the
statistics are reduced over:

>>> reduce_axes("NHWC", per="channel")       # convolutional BN (§3.2): batch and spatial locations
(0, 1, 2)
>>> reduce_axes("NHWC", per="activation")    # per-activation BN (§3): the batch axis only
(0,)
>>> feature_shape((32, 28, 28, 16), (0, 1, 2))   # one mean/variance and one (gamma, beta) per feature map
(16,)
>>> effective_batch_size((32, 28, 28, 16), (0, 1, 2))   # m' = m * p * q
25088

This module depends on nothing but the standard library; it also holds the input checks and their error
messages, so that the NumPy reference and the torch path fail the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "LAYOUTS",
    "PER",
    "channel_axis",
    "reduce_axes",
    "normalize_axes",
    "feature_shape",
    "param_shape",
    "effective_batch_size",
    "check_per",
    "check_eps",
    "check_momentum",
    "check_input",
]

#: Layout name -> position of the channel (feature-map) axis. ``N`` is always axis 0.
LAYOUTS: dict[str, int] = {
    "NC": 1,
    "NCL": 1,
    "NLC": 2,
    "NCHW": 1,
    "NHWC": 3,
    "NCDHW": 1,
    "NDHWC": 4,
}

#: The two variants of the paper: one statistic per feature map, or one per activation.
PER = ("channel", "activation")


def _check_layout(layout: str) -> str:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    return layout.upper()


def check_per(per: str) -> str:
    if per not in PER:
        raise ValueError(
            f"per must be 'channel' (convolutional BN, one statistic per feature map) or 'activation' "
            f"(one statistic per activation), got {per!r}"
        )
    return per


def channel_axis(layout: str) -> int:
    """Axis that holds the channels (feature maps) in ``layout``: 1 for ``NCHW``, 3 for ``NHWC``."""
    return LAYOUTS[_check_layout(layout)]


def reduce_axes(layout: str, per: str = "channel") -> tuple[int, ...]:
    """Axes the statistics are computed over, for a layout and a variant.

    ``per="channel"`` (convolutional BN): every axis but the channel axis, so the set B of one feature
    map holds its values across the mini-batch *and* all spatial locations (m' = m·p·q values).
    ``per="activation"``: the batch axis only (m values), one statistic per (location, channel).
    """
    layout = _check_layout(layout)
    if check_per(per) == "activation":
        return (0,)
    c = LAYOUTS[layout]
    return tuple(a for a in range(len(layout)) if a != c)


def normalize_axes(axes: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    """Sorted, non-negative, unique reduce axes for a tensor of ``ndim`` dimensions.

    Axis 0 (the mini-batch) must be among them: batch normalization always pools over the batch.
    """
    if isinstance(axes, int):
        axes = (axes,)
    try:
        raw = [int(a) for a in axes]
    except TypeError:
        raise TypeError(f"axes must be an int or a sequence of ints, got {axes!r}") from None
    out = []
    for a in raw:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an input with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axes {tuple(raw)} repeat an axis")
    if not out or 0 not in out:
        raise ValueError(f"axes {tuple(raw)} must include axis 0 (the mini-batch): batch normalization pools over it")
    return tuple(sorted(out))


def feature_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    """Shape of the statistics and parameters: ``shape`` with the reduced axes removed."""
    axes = normalize_axes(axes, len(shape))
    return tuple(int(n) for i, n in enumerate(shape) if i not in axes)


def param_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with the reduced axes set to 1: the statistics broadcast against the input."""
    axes = normalize_axes(axes, len(shape))
    return tuple(1 if i in axes else int(n) for i, n in enumerate(shape))


def effective_batch_size(shape: Sequence[int], axes: Sequence[int]) -> int:
    """How many values one statistic pools: m for per-activation BN, m' = m·p·q for convolutional BN."""
    axes = normalize_axes(axes, len(shape))
    m = 1
    for a in axes:  # a loop, not math.prod over a generator: torch.compile traces this
        m *= int(shape[a])
    return m


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a positive finite number (it keeps 1/sqrt(var + eps) finite), got {eps}")
    return eps


def check_momentum(momentum: float | None) -> float | None:
    if momentum is None:
        return None
    momentum = float(momentum)
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(
            f"momentum must be in [0, 1] (the weight of the new batch in the running statistics) or None "
            f"(cumulative average), got {momentum}"
        )
    return momentum


def check_input(
    shape: Sequence[int],
    axes: Sequence[int],
    *,
    training: bool,
    params: dict[str, Sequence[int] | None] | None = None,
    allow_empty: bool = False,
) -> tuple[int, ...]:
    """Check an input shape against its reduce axes and parameter shapes; return the normalized axes.

    ``params`` maps a name (``"weight"``, ``"running_mean"``, ...) to that tensor's shape, or None when
    it is absent. Each must equal the feature shape. In training, every statistic must pool more than
    one value, or the variance is zero and the output meaningless (PyTorch's wording is kept).
    ``allow_empty=True`` accepts an input with no values (a batch of 0 samples, as torch does).
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim < 2:
        raise ValueError(
            f"expected an input with a batch axis and at least one feature axis (2 or more dimensions), "
            f"got shape {shape}"
        )
    axes = normalize_axes(axes, ndim)
    empty = 0 in shape
    if empty and not allow_empty and shape[0] == 0:
        raise ValueError(f"got an empty batch (input shape {shape}); batch normalization needs values")
    if empty and not allow_empty:
        raise ValueError(f"input shape {shape} has an empty axis; batch normalization needs values")
    fshape = feature_shape(shape, axes)
    for name, pshape in (params or {}).items():
        if pshape is None:
            continue
        pshape = tuple(int(n) for n in pshape)
        if pshape != fshape:
            hint = ""
            if len(fshape) == 1 and len(pshape) == 1:
                hint = (
                    f": the input has {fshape[0]} channels but {name} has {pshape[0]}; "
                    f"build the layer with num_features={fshape[0]}"
                )
            elif len(pshape) != len(fshape):
                hint = f"; reducing over axes {axes} leaves feature shape {fshape}"
            raise ValueError(f"{name} has shape {pshape}, expected {fshape} for input shape {shape}{hint}")
    if training and not empty:
        m = effective_batch_size(shape, axes)
        if m <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {shape} "
                f"({m} value per statistic over axes {axes}); use a larger batch or eval mode"
            )
    return axes
