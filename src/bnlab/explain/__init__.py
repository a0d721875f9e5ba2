"""What set B is for a given tensor shape, layout and variant: numbers, text (en/es) and a figure.

The question learners ask about Ioffe & Szegedy (2015), §3.2: for a convolutional layer "B is the set of
all values in a feature map across both the elements of a mini-batch and spatial locations", so the
effective mini-batch is m' = m·p·q. :func:`explain` answers it for a concrete shape:

>>> e = explain((32, 28, 28, 12), layout="NHWC", per="channel")   # m = 32 examples, C = 12 maps of 28×28
>>> e.axes, e.num_sets, e.set_size, e.num_params                 # 12 sets of m' = 32·28·28; 12 γ + 12 β
((0, 1, 2), 12, 25088, 24)
>>> e = explain((32, 28, 28, 12), layout="NHWC", per="activation")
>>> e.axes, e.num_sets, e.set_size, e.num_params                 # 28·28·12 sets of m = 32; as many γ and β
((0,), 9408, 32, 18816)
>>> dict(e.params_side_by_side)
{'channel': 24, 'activation': 18816}

``e.text`` is a multi-line explanation in ``lang`` ("en" or "es"); ``e.save_figure(path)`` draws a small
slice of the tensor and colours the values of one set B for both variants side by side.

Everything is derived from :mod:`bnlab.axes`; this package only words and draws it: :mod:`.text` (batch
norm's text), :mod:`.family` (layer, instance and group norm), :mod:`.figure` (matplotlib, loaded only to
draw). The words are in the ``explain`` catalogs (:mod:`bnlab.i18n`), counts agreeing with their nouns through
:mod:`bnlab.i18n.words`.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..axes import LAYOUTS, PER, check_norm, effective_batch_size, feature_shape, norm_set, reduce_axes
from ..i18n import languages
from .family import family_counts, render_family_text
from .text import render_ghost_text, render_text

__all__ = ["Explanation", "explain", "explain_family", "LANGS"]

#: The shipped languages of the text and the figure (a language added to the catalogs works too).
LANGS = ("en", "es")


@dataclass(frozen=True)
class Explanation:
    """What set B is for one tensor shape, layout and variant (see :func:`explain`).

    ``axes`` are the reduce axes; ``num_sets`` is how many sets B there are (= means, variances and
    (γ, β) pairs); ``set_size`` is how many values each pools (m, or m' = m·p·q); ``num_params`` counts
    γ and β together (2·C per channel, 2·C·H·W per activation); ``params_side_by_side`` gives that
    count for both variants.
    """

    shape: tuple[int, ...]
    layout: str
    per: str
    lang: str
    axes: tuple[int, ...]
    num_sets: int
    set_size: int
    feature_shape: tuple[int, ...]
    num_params: int
    params_side_by_side: dict[str, int] = field(hash=False)
    # the family (see explain_family): which member, its G, and whether the batch enters
    norm: str = "batch"
    groups: int | None = None
    depends_on_batch: bool = True
    split_shape: tuple[int, ...] | None = None
    # ghost BN (explain(..., virtual_batch=k)): batch norm within runs of k examples; axes are then those of
    # split_shape, the batch axis split into (N/k, k)
    virtual_batch: int | None = None
    # a masked set B (explain(..., mask_last=K)): the last K positions of axis ``layout[mask_axis]`` are masked
    # out (padding); set_size is then m', the count of masked-in values per set, and full_set_size the count
    # without the mask
    mask_last: int | None = None
    mask_axis: int | None = None
    full_set_size: int | None = None

    @property
    def text(self) -> str:
        """The explanation, several lines, in ``self.lang``."""
        if self.virtual_batch is not None:
            return render_ghost_text(self)
        return render_text(self) if self.norm == "batch" else render_family_text(self)

    def __str__(self) -> str:
        return self.text

    def save_figure(self, path: str | Path, dpi: int = 100) -> Path:
        """Draw one set B for both variants side by side and save it (PNG, SVG, PDF: by suffix)."""
        if self.virtual_batch is not None:
            raise ValueError(
                "the figure draws batch norm's set B over the whole mini-batch, not ghost BN's runs; drop the "
                "figure or virtual_batch"
            )
        from .figure import save_figure  # matplotlib loads only when a figure is drawn

        return save_figure(self, Path(path), dpi=dpi)


def explain(
    shape: Sequence[int],
    layout: str = "NHWC",
    per: str = "channel",
    lang: str = "en",
    norm: str = "batch",
    groups: int | None = None,
    virtual_batch: int | None = None,
    mask_last: int | None = None,
    mask_axis: str | None = None,
) -> Explanation:
    """Explain which values form one set B for a tensor of ``shape`` in ``layout``.

    ``per="channel"`` is convolutional BN (one statistic and one (γ, β) per feature map, pooled over the
    mini-batch and every spatial location); ``per="activation"`` pools over the mini-batch only.
    ``norm`` picks the member of the family: ``"batch"`` (the default, with ``per``), ``"layer"``,
    ``"instance"`` or ``"group"`` (with ``groups=G``); see :func:`explain_family`. ``virtual_batch=k``: ghost
    BN, batch norm within each run of k consecutive examples (:func:`bnlab.axes.norm_set`).

    ``mask_last=K``: a masked set B (``mask=`` of :func:`bnlab.nn.functional.batch_norm`), the last K positions
    of axis ``mask_axis`` (a letter of the layout: the last spatial axis by default, N without one) masked out
    as padding; ``set_size`` is then m', the count of masked-in values of each set B.

    >>> e = explain((8, 4, 4, 16), virtual_batch=2)
    >>> e.split_shape, e.axes, e.num_sets, e.set_size, e.num_params
    ((4, 2, 4, 4, 16), (1, 2, 3), 64, 32, 32)
    >>> e = explain((32, 28, 28, 12), mask_last=4)                # the last 4 columns (W) are padding
    >>> e.mask_axis, e.full_set_size, e.set_size                   # m' = 32·28·(28−4)
    (2, 25088, 21504)
    """
    layout, shape = _check_shape(shape, layout)
    lang = _check_lang(lang)
    if mask_last is not None or mask_axis is not None:
        if virtual_batch is not None or check_norm(norm) != "batch" or groups is not None:
            raise ValueError(
                "mask_last (a masked set B) applies to batch norm without virtual_batch, as mask= of "
                "bnlab.nn.functional.batch_norm; drop mask_last or use norm='batch' without virtual_batch"
            )
        e = explain(shape, layout=layout, per=per, lang=lang)
        axis, full = _mask_axis(layout, shape, mask_last, mask_axis), e.set_size
        m_in, empty = masked_count(shape, e.axes, axis, mask_last)
        if empty or m_in < 2:
            if empty:
                where = f"the sets B of the last {mask_last} positions of {layout[axis]} are empty"
                fix = "mask samples instead (mask_axis='N') or use per='channel'"
            else:
                where, fix = f"each set B keeps m' = {m_in} value" + "s" * (m_in != 1), "mask fewer positions"
            raise ValueError(
                f"mask_last={mask_last} on axis {layout[axis]} with per={per!r}: {where}, and "
                f"bnlab.nn.functional.batch_norm refuses a set B of fewer than 2 masked-in values; {fix}"
            )
        return dataclasses.replace(e, set_size=m_in, mask_last=mask_last, mask_axis=axis, full_set_size=full)
    if virtual_batch is not None:
        if check_norm(norm) != "batch" or groups is not None:
            raise ValueError(f"virtual_batch (ghost BN) only applies to norm='batch', got norm={norm!r}")
        if per not in PER:
            raise ValueError(f"unknown per {per!r}; use per='channel' or per='activation'")
        s = norm_set(shape, layout, "batch", per=per, virtual_batch=virtual_batch)
        counts = {p: 2 * math.prod(feature_shape(shape, reduce_axes(layout, per=p))) for p in PER}
        return Explanation(
            shape=shape, layout=layout, per=per, lang=lang, axes=s.axes, num_sets=s.num_sets, set_size=s.set_size,
            feature_shape=s.stats_shape, num_params=counts[per], params_side_by_side=counts,
            split_shape=s.split_shape, virtual_batch=s.virtual_batch,
        )  # fmt: skip
    if check_norm(norm) != "batch" or groups is not None:
        return explain_family(shape, layout, norm, per=per, groups=groups, lang=lang)
    if per not in PER:
        raise ValueError(
            f"unknown per {per!r}; use per='channel' (convolutional BN, one statistic per feature map) "
            f"or per='activation' (one statistic per activation)"
        )
    axes = reduce_axes(layout, per=per)
    counts = {p: 2 * math.prod(feature_shape(shape, reduce_axes(layout, per=p))) for p in PER}
    fshape = feature_shape(shape, axes)
    return Explanation(
        shape=shape,
        layout=layout,
        per=per,
        lang=lang,
        axes=axes,
        num_sets=math.prod(fshape),
        set_size=effective_batch_size(shape, axes),
        feature_shape=fshape,
        num_params=counts[per],
        params_side_by_side=counts,
    )


def _mask_axis(layout: str, shape: tuple[int, ...], k, letter) -> int:
    """The axis ``mask_last`` masks: ``letter`` (default: the last spatial axis, N without one), checked."""
    spatial = [a for a, name in enumerate(layout) if name not in "NC"]
    if letter is None:
        axis = spatial[-1] if spatial else 0
    elif not isinstance(letter, str) or letter.upper() not in layout or letter.upper() == "C":
        names = ", ".join(name for name in layout if name != "C")
        raise ValueError(f"mask_axis must be one of the layout's axes other than C ({names}), got {letter!r}")
    else:
        axis = layout.index(letter.upper())
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < shape[axis]:
        raise ValueError(
            f"mask_last must be a whole number from 1 to {shape[axis] - 1} (the positions of {layout[axis]} "
            f"= {shape[axis]} masked out at its end, leaving at least one), got {k!r}"
        )
    return axis


def masked_count(shape: tuple[int, ...], axes: tuple[int, ...], axis: int, k: int) -> tuple[int, bool]:
    """(m', empty): the masked-in values of a set B when the last ``k`` positions of ``axis`` are masked out.

    If ``axis`` is reduced, every set loses the same share: m' = (set size)·(size − k)/size; otherwise the
    sets at the masked positions are empty (``empty`` is True) and the others keep every value."""
    full = math.prod(shape[a] for a in axes)
    if axis in axes:
        return full // shape[axis] * (shape[axis] - k), False
    return full, True


def _check_shape(shape: Sequence[int], layout: str) -> tuple[str, tuple[int, ...]]:
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    layout = layout.upper()
    try:
        dims = [operator.index(n) for n in shape if not isinstance(n, bool)]
        if len(dims) != len(shape):
            raise TypeError
    except TypeError:
        raise ValueError(f"shape must be a sequence of whole numbers such as (32, 28, 28, 16), got {shape!r}") from None
    if len(dims) != len(layout):
        same = [name for name in LAYOUTS if len(name) == len(dims)]
        hint = f" or use a {len(dims)}-letter layout ({', '.join(same)})" if same else ""
        raise ValueError(
            f"shape {tuple(dims)} has {len(dims)} dimensions but layout {layout} needs {len(layout)} "
            f"({', '.join(layout)}); pass a shape with one size per letter{hint}"
        )
    bad = [f"{letter}={n}" for letter, n in zip(layout, dims, strict=True) if n <= 0]
    if bad:
        raise ValueError(f"every size must be positive, got {', '.join(bad)} in shape {tuple(dims)} ({layout})")
    return layout, tuple(dims)


def _check_lang(lang: str) -> str:
    langs = languages()
    if not isinstance(lang, str) or lang.lower() not in langs:
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(map(repr, langs))}")
    return lang.lower()


def explain_family(
    shape: Sequence[int],
    layout: str = "NHWC",
    norm: str = "group",
    per: str = "channel",
    groups: int | None = None,
    lang: str = "en",
) -> Explanation:
    """The set B of one member of the family (what :func:`explain` returns for ``norm=...``).

    >>> e = explain((32, 28, 28, 16), layout="NHWC", norm="group", groups=4)
    >>> e.axes, e.num_sets, e.set_size, e.num_params, e.depends_on_batch
    ((1, 2, 4), 128, 3136, 32, False)
    >>> e = explain((32, 28, 28, 16), layout="NHWC", norm="layer")
    >>> e.axes, e.num_sets, e.set_size, e.num_params
    ((1, 2, 3), 32, 12544, 25088)
    >>> explain((32, 28, 28, 16), norm="instance").feature_shape
    (32, 16)
    """
    layout, shape = _check_shape(shape, layout)
    lang = _check_lang(lang)
    norm = check_norm(norm)
    if norm != "group" and groups is not None:
        raise ValueError(f"groups=G only applies to norm='group' (got norm={norm!r}); drop groups or use norm='group'")
    if per not in PER:
        raise ValueError(f"unknown per {per!r}; use per='channel' or per='activation'")
    s = norm_set(shape, layout, norm, per=per, groups=groups)
    return Explanation(
        shape=shape,
        layout=layout,
        per=per,
        lang=lang,
        axes=s.axes,
        num_sets=s.num_sets,
        set_size=s.set_size,
        feature_shape=s.stats_shape,
        num_params=2 * math.prod(s.param_shape),
        params_side_by_side=family_counts(shape, layout, per, s.groups if norm == "group" else groups),
        norm=norm,
        groups=s.groups if norm == "group" else None,
        depends_on_batch=s.depends_on_batch,
        split_shape=s.split_shape,
    )
