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
import sys
from collections.abc import Sequence

from . import choices as _choices

__all__ = [
    "LAYOUTS",
    "PER",
    "channel_axis",
    "reduce_axes",
    "TORCH_CHANNEL_AXIS",
    "torch_reduce_axes",
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
PER = _choices.PER


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


#: torch's tensors are logically NCHW whatever their memory format: the channels are axis 1.
TORCH_CHANNEL_AXIS = 1


def torch_reduce_axes(ndim: int) -> tuple[int, ...]:
    """Per-channel reduce axes of a torch tensor of ``ndim`` dims: every axis but 1 (``torch.nn.BatchNorm``).

    >>> torch_reduce_axes(4), torch_reduce_axes(2)
    ((0, 2, 3), (0,))
    """
    return tuple(a for a in range(ndim) if a != TORCH_CHANNEL_AXIS)


def normalize_axes(axes: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    """Sorted, non-negative, unique reduce axes for a tensor of ``ndim`` dimensions.

    Axis 0 (the mini-batch) must be among them: batch normalization always pools over the batch.
    """
    if isinstance(axes, int):
        axes = (axes,)
    if isinstance(axes, (str, bytes)):
        raise TypeError(f"axes must be an int or a sequence of ints, got {axes!r}")
    try:
        items = list(axes)
    except TypeError:
        raise TypeError(f"axes must be an int or a sequence of ints, got {axes!r}") from None
    raw = []
    for a in items:  # int(0.5) would silently give 0: accept only whole numbers (ints, integer NumPy scalars)
        if isinstance(a, bool) or not hasattr(a, "__index__"):
            raise TypeError(f"axes must be integers, got {a!r} in {tuple(items)!r}")
        raw.append(a.__index__())
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


def _size(n):
    """One size as an int; a tracer's symbolic size (``torch.SymInt``, under ``torch.compile(dynamic=True)``
    or ``torch.export`` with a ``Dim``) is kept symbolic, since ``int()`` would specialize the traced
    program to this one value. Duck-typed on the loaded torch: this module imports nothing outside the
    standard library."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(n, torch.SymInt):
        return n
    return int(n)


def feature_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    """Shape of the statistics and parameters: ``shape`` with the reduced axes removed."""
    axes = normalize_axes(axes, len(shape))
    return tuple(_size(n) for i, n in enumerate(shape) if i not in axes)


def param_shape(shape: Sequence[int], axes: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with the reduced axes set to 1: the statistics broadcast against the input."""
    axes = normalize_axes(axes, len(shape))
    return tuple(1 if i in axes else _size(n) for i, n in enumerate(shape))


def effective_batch_size(shape: Sequence[int], axes: Sequence[int]) -> int:
    """How many values one statistic pools: m for per-activation BN, m' = m·p·q for convolutional BN."""
    axes = normalize_axes(axes, len(shape))
    m = 1
    for a in axes:  # a loop, not math.prod over a generator: torch.compile traces this
        m *= _size(shape[a])
    return m


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not 0 < eps < math.inf:  # comparisons only (no math.isfinite): a traced, symbolic eps passes through
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
    shape = tuple(_size(n) for n in shape)
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
        pshape = tuple(_size(n) for n in pshape)
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


# ------------------------------------------------------------------------------ the normalization family
from typing import NamedTuple  # noqa: E402  (kept with the family, so the additions stay in one block)

# Batch, layer, instance and group normalization differ only in the set of values that share one mean and
# variance (Wu & He 2018, Group Normalization, Fig. 2). Batch norm pools over the mini-batch; the other
# three pool within one sample. Group norm splits the channel axis into (G, C/G) and pools over C/G and the
# locations. A set within one sample is written as batch norm on a *batch of one*: a leading axis of size 1
# in front, so the one statistics function (which always pools over axis 0) serves every member.

__all__ += ["FAMILY", "NormSet", "norm_set", "check_norm", "check_groups", "check_virtual_batch"]

#: The members of the family, by the set B each one normalizes over.
FAMILY = _choices.FAMILY


class NormSet(NamedTuple):
    """Which values share one mean and variance for one member of the family (see :func:`norm_set`).

    ``split_shape`` is the input shape with the channel axis split into (G, C/G) for group norm (the input
    shape otherwise) and ``axes`` are its reduce axes; ``view_shape``/``view_axes`` are what the statistics
    are computed on (a reshape of the input, with a batch axis of size 1 in front when the set stays within
    one sample, and adjacent axes merged), so ``view_axes`` always include 0. ``stats_shape`` is the shape
    of the means and variances, ``param_shape`` that of γ and β (one per feature map for instance and group
    norm; one per value of a sample for layer norm, as ``torch.nn.LayerNorm``).

    Ghost BN (``virtual_batch=k``, Hoffer et al. 2017) is batch norm whose set B is k consecutive samples:
    ``split_shape`` splits the batch axis into (N/k, k) and ``axes`` reduce the k (and, per channel, the
    locations); the statistics get a leading axis of N/k runs, γ and β stay one per feature.
    """

    norm: str
    per: str | None
    groups: int | None
    shape: tuple[int, ...]
    layout: str
    split_shape: tuple[int, ...]
    axes: tuple[int, ...]
    view_shape: tuple[int, ...]
    view_axes: tuple[int, ...]
    stats_shape: tuple[int, ...]
    param_shape: tuple[int, ...]
    num_sets: int
    set_size: int
    depends_on_batch: bool
    virtual_batch: int | None = None


def check_norm(norm: str) -> str:
    if norm not in FAMILY:
        raise ValueError(
            f"unknown norm {norm!r}; use 'batch' (pool over the mini-batch), 'layer' (one sample, all channels), "
            f"'instance' (one sample, one channel) or 'group' (one sample, a group of C/G channels)"
        )
    return norm


def check_groups(groups, channels: int) -> int:
    """G for group norm: a positive whole number that divides the number of channels."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive whole number (G, the number of channel groups), got {groups!r}")
    if channels % groups:
        divisors = _divisors(channels)
        among = f"pick G among {', '.join(map(str, divisors))}" if divisors else "pick a divisor of C"
        raise ValueError(f"groups={groups} does not divide the {channels} channels; {among}")
    return groups


def check_virtual_batch(k, batch: int | None = None) -> int | None:
    """``virtual_batch`` (ghost BN): None, or the number k ≥ 2 of consecutive samples that share one set B;
    with ``batch`` (N), k must divide it."""
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(
            f"virtual_batch must be an int ≥ 2 (the number of consecutive samples that share one set of "
            f"statistics) or None, got {k!r}"
        )
    if batch is not None and batch % k:
        raise ValueError(
            f"virtual_batch={k} needs a batch size that is a multiple of {k}, got {batch} samples; "
            f"pick k among the divisors of {batch} or change the batch size"
        )
    return k


def _divisors(n: int, limit: int = 10**6) -> list[int] | None:
    """The divisors of ``n`` in increasing order (trial division up to √n), or None when √n > ``limit``."""
    if math.isqrt(n) > limit:
        return None
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def _merge_runs(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Merge adjacent axes that are both reduced or both kept: same sets, fewer axes (a reshape, no copy)."""
    out_shape: list[int] = []
    out_axes: list[int] = []
    prev = None
    for i, n in enumerate(shape):
        reduced = i in axes
        if out_shape and reduced == prev:
            out_shape[-1] *= n
        else:
            out_shape.append(n)
            if reduced:
                out_axes.append(len(out_shape) - 1)
        prev = reduced
    return tuple(out_shape), tuple(out_axes)


def norm_set(
    shape: Sequence[int],
    layout: str,
    norm: str = "batch",
    per: str = "channel",
    groups: int | None = None,
    virtual_batch: int | None = None,
) -> NormSet:
    """The set B of one member of the family for an input ``shape`` in ``layout``.

    >>> s = norm_set((8, 32, 4, 4), "NCHW", "group", groups=8)
    >>> s.split_shape, s.axes, s.stats_shape, s.set_size, s.param_shape
    ((8, 8, 4, 4, 4), (2, 3, 4), (8, 8), 64, (32,))
    >>> s.view_shape, s.view_axes        # batch norm on a batch of one, over 64 sets of 64 values each
    ((1, 64, 64), (0, 2))
    >>> norm_set((8, 4, 4, 32), "NHWC", "layer").axes
    (1, 2, 3)
    >>> norm_set((8, 4, 4, 32), "NHWC", "instance").axes, norm_set((8, 4, 4, 32), "NHWC", "batch").axes
    ((1, 2), (0, 1, 2))
    >>> g = norm_set((8, 32, 4, 4), "NCHW", "batch", virtual_batch=2)   # ghost BN: runs of 2 samples
    >>> g.split_shape, g.axes, g.stats_shape, g.set_size, g.num_sets, g.param_shape
    ((4, 2, 32, 4, 4), (1, 3, 4), (4, 32), 32, 128, (32,))
    """
    layout = _check_layout(layout)
    norm = check_norm(norm)
    shape = tuple(int(n) for n in shape)
    if len(shape) != len(layout):
        raise ValueError(f"shape {shape} has {len(shape)} dimensions but layout {layout} needs {len(layout)}")
    c = LAYOUTS[layout]
    channels = shape[c]
    split = shape
    if virtual_batch is not None and norm != "batch":
        raise ValueError(
            f"virtual_batch (ghost BN) only applies to norm='batch' (got norm={norm!r}); drop virtual_batch"
        )
    if norm == "batch" and check_virtual_batch(virtual_batch, shape[0]):
        return _ghost_set(shape, layout, check_per(per), virtual_batch)
    if norm == "batch":
        axes = reduce_axes(layout, per=per)
        stats = feature_shape(shape, axes)
        return NormSet(
            norm, check_per(per), None, shape, layout, shape, axes, shape, axes, stats, stats,
            math.prod(stats), effective_batch_size(shape, axes), True,
        )  # fmt: skip
    if norm == "layer":
        g, axes = 1, tuple(range(1, len(shape)))
        params = shape[1:]
    elif norm == "instance":
        g, axes = channels, tuple(a for a in range(1, len(shape)) if a != c)
        params = (channels,)
    else:
        if groups is None:
            raise ValueError("norm='group' needs groups=G, the number of channel groups (a divisor of C)")
        g = check_groups(groups, channels)
        split = (*shape[:c], g, channels // g, *shape[c + 1 :])
        axes = tuple(a for a in range(1, len(split)) if a != c)  # all of one sample but the group index
        params = (channels,)
    view, view_axes = _merge_runs((1, *split), (0, *(a + 1 for a in axes)))
    stats = tuple(n for i, n in enumerate(split) if i not in axes)
    size = math.prod([split[a] for a in axes])  # a list: torch.compile traces math.prod of a list, not of a generator
    return NormSet(
        norm, None, g, shape, layout, split, axes, view, view_axes, stats, params, math.prod(stats), size, False
    )


def _ghost_set(shape: tuple[int, ...], layout: str, per: str, k: int) -> NormSet:
    """Ghost BN's set B: batch norm's, within each run of k consecutive samples (see :class:`NormSet`)."""
    base = reduce_axes(layout, per=per)
    split = (shape[0] // k, k, *shape[1:])
    axes = (1, *(a + 1 for a in base if a != 0))  # the k samples of one run (and the locations, per channel)
    view, view_axes = _merge_runs((1, *split), (0, *(a + 1 for a in axes)))
    stats = tuple(n for i, n in enumerate(split) if i not in axes)
    params = feature_shape(shape, base)
    size = math.prod([split[a] for a in axes])
    return NormSet(
        "batch", per, None, shape, layout, split, axes, view, view_axes, stats, params, math.prod(stats), size, True, k
    )
