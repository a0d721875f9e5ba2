"""The text of :func:`bnlab.explain` for batch norm, per channel and per activation: its strings in
English and Spanish, and how they are put together for one shape."""

from __future__ import annotations

import math
import re
import textwrap
from typing import TYPE_CHECKING

from ..axes import PER, channel_axis, effective_batch_size, feature_shape, reduce_axes
from ..i18n.numbers import integer
from ..i18n.words import Shown
from ..i18n.words import t as tr

if TYPE_CHECKING:
    from . import Explanation

# Spatial axis letter -> symbol in the formula for m' (the paper writes p×q for an H×W feature map).
_FORMULA_SYMBOL = {"D": "d", "H": "p", "W": "q", "L": "l"}


def spatial_axes(layout: str) -> list[int]:
    c = channel_axis(layout)
    return [a for a in range(1, len(layout)) if a != c]


def _params_formula(e: Explanation, per: str) -> str:
    """'2·C = 2·16 = 32' or '2·C·H·W = 2·16·28·28 = 25,088'."""
    axes = reduce_axes(e.layout, per=per)
    kept = [a for a in range(len(e.layout)) if a not in axes]
    # letters in the order C, then the spatial ones, as the paper's reader would say them
    c = channel_axis(e.layout)
    kept.sort(key=lambda a: (a != c, a))
    letters = "·".join(e.layout[a] for a in kept)
    values = "·".join(str(e.shape[a]) for a in kept)
    total = integer(e.params_side_by_side[per], e.lang)
    return f"2·{letters} = 2·{values} = {total}"


def render_text(e: Explanation) -> str:
    """The text of batch norm, per channel or per activation (the family's is in :mod:`.family`)."""
    lang = e.lang

    def fill(key: str, **values) -> str:  # the template ``key`` in this language
        return tr(f"explain.bn.{key}", lang, **values)

    n = e.shape[0]
    C = e.shape[channel_axis(e.layout)]
    spatial = spatial_axes(e.layout)
    nloc = math.prod(e.shape[a] for a in spatial)
    fc = not spatial  # layout NC: no locations, the two variants coincide
    sets, size = e.num_sets, e.full_set_size or e.set_size  # size: set B without a mask; e.set_size: m'
    lines: list[str] = []

    def add(paragraph: str) -> None:  # prose is wrapped; code, formulas and the table are not
        lines.append(wrap(paragraph))

    dims = [fill("dim_n", n=n), *(f"{e.layout[a]}={e.shape[a]}" for a in spatial)]
    dims.append(fill("dim_c_fc" if fc else "dim_c", c=C))
    add(fill("header", shape=e.shape, layout=e.layout, dims=", ".join(dims)))
    add(fill(f"variant_{e.per}"))
    lines.append("")

    # what a location is
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    if fc:
        add(fill("no_location"))
    else:
        letters = [e.layout[a].lower() for a in spatial]
        pos = letters[0] if len(letters) == 1 else "(" + ", ".join(letters) + ")"
        locs = "×".join(str(e.shape[a]) for a in spatial)
        if len(spatial) > 1:
            locs += f" = {integer(nloc, lang)}"
        add(fill("location", pos=pos, c=C, locs=Shown(nloc, locs), n=n))
        lines.append("")
        add(fill("elements", idx=idx, nloc=nloc, n=n))
    lines.append("")

    # one set B, how many, how big
    if fc:
        add(fill("set_fc", idx=idx, n=n))
        add("  " + fill("count_fc", sets=sets, m=size))
    elif e.per == "channel":
        add(fill("set_channel", idx=idx, n=n, nloc=nloc))
        add("  " + fill("count_channel", sets=sets, size=size))
        symbols = "·".join(["m", *(_FORMULA_SYMBOL[e.layout[a]] for a in spatial)])
        values = "·".join(str(e.shape[a]) for a in (0, *spatial))
        syms = "×".join(_FORMULA_SYMBOL[e.layout[a]] for a in spatial)
        locs = Shown(nloc, "×".join(str(e.shape[a]) for a in spatial))
        where = fill("where", n=n, syms=syms, locs=locs)
        lines.append(f"    m' = {symbols} = {values} = {integer(size, lang)}   " + where)
    else:
        act = "(" + ", ".join(letter.lower() for letter in e.layout[1:]) + ")"
        add(fill("set_activation", idx=idx, act=act, n=n))
        acts = "·".join(str(e.shape[a]) for a in range(1, len(e.layout)))
        add("  " + fill("count_activation", sets=sets, acts=acts, m=size))
    add("  " + fill("words_fc" if fc else f"words_{e.per}", sets=sets))
    if e.set_size == 1:
        add("  " + fill("tiny"))
    lines.append("")
    if e.mask_last is not None:  # a masked set B: m' counts the masked-in values
        add(_mask_paragraph(e, fill))
        lines.append("")

    # the same in NumPy
    add(fill("numpy"))
    axes = repr(tuple(e.axes))
    where = ", where=mask" if e.mask_last is not None else ""
    if e.mask_last is not None:
        index = ", ".join(f"-{e.mask_last}:" if a == e.mask_axis else ":" for a in range(len(e.layout)))
        comment = fill("comment_mask", start=e.shape[e.mask_axis] - e.mask_last, letter=e.layout[e.mask_axis])
        lines.append(f"  mask = np.ones(t.shape, bool); mask[{index}] = False   " + comment)
    mean_expr = f"  mu_B  = np.mean(t, axis={axes}{where})"
    var_expr = f"  var_B = np.var(t, axis={axes}{where})"
    width = max(len(mean_expr), len(var_expr)) + 3
    lines.append(mean_expr.ljust(width) + fill("comment_mean", fshape=e.feature_shape))
    lines.append(var_expr.ljust(width) + fill("comment_var"))
    lines.append("")

    add(fill("table_title"))
    lines.extend(_table(e))
    lines.append("")
    if not fc:  # the paper's k, and what torch and Keras call these variants
        nact = math.prod(feature_shape(e.shape, reduce_axes(e.layout, per="activation")))
        add(fill("index_k", nact=nact, c=C))
        kept = [e.layout[a] for a in (channel_axis(e.layout), *spatial)]
        reduced = ", ".join(e.layout[a] for a in (0, *spatial))
        add(fill("libraries", cls=f"BatchNorm{len(spatial)}d", reduced=reduced, letters="·".join(kept)))
        lines.append("")

    # why, and what inference does with it
    if fc:
        add(fill("why_fc", m=n))
    elif e.per == "channel":
        add(fill("why_channel", size=size, m=n))
    else:
        add(fill("why_activation", sets=sets, m=n))
    unit = fill("unit_fc") if fc else fill(f"unit_{e.per}")
    add(fill("inference", unit=unit, sets=sets, size=e.set_size))
    lines.append("  a = γ/√(Var[x]+ε),  b = β − γ·E[x]/√(Var[x]+ε)")
    add(fill("fold_activation", sets=sets) if e.per == "activation" and not fc else fill("fold"))
    add(fill("running"))
    return "\n".join(lines)


def _mask_paragraph(e: Explanation, fill) -> str:
    """What a masked set B keeps: the last K positions of one axis are padding; m' counts the rest."""
    a, k = e.mask_axis, e.mask_last
    factors = [f"({e.shape[i]}−{k})" if i == a else str(e.shape[i]) for i in e.axes]
    start = e.shape[a] - k
    return fill("mask", letter=e.layout[a], start=start, k=k, s=e.shape[a], formula="·".join(factors),
                m_in=e.set_size, full=e.full_set_size)  # fmt: skip


def wrap(line: str, width: int = 100) -> str:
    """Wrap one paragraph to ``width`` columns; continuation lines are indented two more spaces."""
    indent = " " * (len(line) - len(line.lstrip(" ")))
    sub = indent + "  " if indent else ""
    # a number grouped with spaces (Spanish 12 544) is one word: never split across two lines
    line = _GROUP_SPACE.sub("\u00a0", line)
    text = textwrap.fill(line, width=width, subsequent_indent=sub, break_on_hyphens=False, break_long_words=False)
    return text.replace("\u00a0", " ")


_GROUP_SPACE = re.compile(r"(?<=\d) (?=\d{3}(?!\d))")


def _table(e: Explanation) -> list[str]:
    def fill(key: str, **values) -> str:
        return tr(f"explain.bn.{key}", e.lang, **values)

    rows = [["", *(fill(f"col_{p}") + (fill("chosen") if p == e.per else "") for p in PER)]]
    cells = {p: [] for p in PER}
    for p in PER:
        axes = reduce_axes(e.layout, per=p)
        fshape = feature_shape(e.shape, axes)
        size, empty = effective_batch_size(e.shape, axes), False
        if e.mask_last is not None:
            from . import masked_count

            size, empty = masked_count(e.shape, axes, e.mask_axis, e.mask_last)
        n_sets = math.prod(fshape)
        cells[p] = [
            repr(axes),
            fill("row_sets_empty", sets=n_sets, empty=n_sets * e.mask_last // e.shape[e.mask_axis])
            if empty
            else fill("row_sets_cell", sets=n_sets, size=size),
            repr(fshape),
            _params_formula(e, p),
        ]
    for i, name in enumerate(("row_axes", "row_sets", "row_shape", "row_params")):
        rows.append([fill(name), *(cells[p][i] for p in PER)])
    widths = [max(len(r[j]) for r in rows) for j in range(3)]
    return ["  " + "   ".join(r[j].ljust(widths[j]) for j in range(3)).rstrip() for r in rows]


def render_ghost_text(e: Explanation) -> str:
    """The text of ghost BN (``e.virtual_batch`` = k): batch norm's set B within each run of k examples."""
    lang = e.lang
    k, n = e.virtual_batch, e.shape[0]
    runs = n // k
    nloc = math.prod(e.shape[a] for a in spatial_axes(e.layout))
    feats = math.prod(e.feature_shape) // runs
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    per = tr(f"explain.per_word.{e.per}", lang)
    values = dict(
        shape=e.shape, layout=e.layout, per=per, k=k, n=n, runs=runs, idx=idx, nloc=nloc,
        size=e.set_size, sets=e.num_sets, feats=feats, stats=e.feature_shape, split=e.split_shape, axes=e.axes,
    )  # fmt: skip
    keys = ["header", "ghost", f"set_{e.per}", "count", "numpy"]
    return "\n".join(wrap(tr(f"explain.ghost.{key}", lang, **values)) for key in keys)
