"""Layer, instance and group norm (Wu & He 2018, Fig. 2) in :func:`bnlab.explain`: the same numbers for
another set B, from :func:`bnlab.axes.norm_set`, their text in English and Spanish and the family's table.
Batch norm keeps its own text (:mod:`.text`); the family's figure draws the members side by side."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..axes import FAMILY, PER, channel_axis, norm_set
from ..i18n.numbers import integer
from ..i18n.words import t as tr
from .text import spatial_axes, wrap

if TYPE_CHECKING:
    from . import Explanation


def member_key(norm: str, per: str) -> str:
    """Key of a member in the family's tables: batch norm by its variant, the others by name."""
    return f"batch_{per}" if norm == "batch" else norm


def family_counts(shape: tuple[int, ...], layout: str, per: str, groups: int | None) -> dict[str, int]:
    """γ/β count of each member for this shape (group norm only when G is known)."""
    out = {}
    for norm in FAMILY:
        if norm == "group" and groups is None:
            continue
        s = norm_set(shape, layout, norm, per=per, groups=groups if norm == "group" else None)
        out[member_key(norm, per)] = 2 * math.prod(s.param_shape)
    return out


def family_sets(e: Explanation) -> dict[str, tuple]:
    """member key -> its NormSet, for the members this explanation compares (both BN variants included)."""
    out = {}
    for norm in FAMILY:
        pers = PER if norm == "batch" else (e.per,)
        for per in pers:
            if norm == "group" and e.groups is None:
                continue
            out[member_key(norm, per)] = norm_set(
                e.shape, e.layout, norm, per=per, groups=e.groups if norm == "group" else None
            )
    return out


def render_family_text(e: Explanation) -> str:
    lang = e.lang

    def fill(key: str, **values) -> str:  # the family's template ``key`` in this language
        return tr(f"explain.family.{key}", lang, **values)

    n = e.shape[0]
    c_axis = channel_axis(e.layout)
    C = e.shape[c_axis]
    spatial = spatial_axes(e.layout)
    nloc = math.prod(e.shape[a] for a in spatial)
    g = e.groups or 1
    lines: list[str] = []

    def add(paragraph: str) -> None:
        lines.append(wrap(paragraph))

    dims = [tr("explain.bn.dim_n", lang, n=n), *(f"{e.layout[a]}={e.shape[a]}" for a in spatial)]
    dims.append(tr("explain.bn.dim_c" if spatial else "explain.bn.dim_c_fc", lang, c=C))
    add(tr("explain.bn.header", lang, shape=e.shape, layout=e.layout, dims=", ".join(dims)))
    cg = C // g
    add(fill(f"variant_{e.norm}", g=g, cg=cg))
    lines.append("")
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    key = f"set_{e.norm}" + ("" if spatial else "_fc")
    crange = "c = g" if cg == 1 else f"c = g·{cg} … g·{cg}+{cg - 1}"  # the channels of group g
    add(fill(key, idx=idx, c=C, nloc=nloc, cg=cg, crange=crange))
    how = fill(f"how_{e.norm}", n=n, c=C, g=g)
    count = "  " + fill("count", sets=e.num_sets, how=how, size=e.set_size)
    split = e.split_shape or e.shape
    letters = list(e.layout)
    if e.norm == "group":
        letters[c_axis : c_axis + 1] = ["G", "C/G"]
    sizes = [split[a] for a in e.axes]
    add(count + (":" if sizes else "."))  # the formula for m' follows, unless nothing is pooled
    if len(sizes) > 1:
        symbols = "·".join(f"({letters[a]})" if "/" in letters[a] else letters[a] for a in e.axes)
        lines.append(f"    m' = {symbols} = " + "·".join(map(str, sizes)) + " = " + integer(e.set_size, lang))
    elif sizes:
        lines.append(f"    m' = {letters[e.axes[0]]} = {integer(e.set_size, lang)}")
    if e.set_size == 1:
        add("  " + fill("tiny"))
    lines.append("")
    add(fill("numpy"))
    if e.norm == "group":
        lines.append(f"  tg    = t.reshape{split}".ljust(40) + fill("reshape", g=g, cg=cg))
    t_name = "tg" if e.norm == "group" else "t"
    comment = fill("comment_mean", fshape=e.feature_shape)
    lines.append(f"  mu_B  = np.mean({t_name}, axis={e.axes!r})".ljust(40) + comment)
    lines.append(f"  var_B = np.var({t_name}, axis={e.axes!r})")
    lines.append("")
    if e.norm == "layer":
        kept = "·".join(e.layout[1:])
        add(fill("params_layer", letters=kept, params=e.num_params))
    else:
        if e.norm == "group":
            add(fill("params_channel", cls="GroupNorm", params=e.num_params))
        else:  # torch's and bnlab's InstanceNorm have no γ/β unless affine=True
            cls = f"InstanceNorm{max(len(spatial), 1)}d"
            add(fill("params_instance", cls=cls, params=e.num_params))
    add(fill("batch_no"))
    add(fill("inference"))
    lines.append("")
    add(fill("table_title"))
    lines.extend(_family_table(e))
    return "\n".join(lines)


def _family_table(e: Explanation) -> list[str]:
    lang = e.lang

    def fill(key: str, **values) -> str:
        return tr(f"explain.family.{key}", lang, **values)

    sets = family_sets(e)
    chosen = member_key(e.norm, e.per)
    header = [""] + [fill(f"col_{k}", g=e.groups) + (" *" if k == chosen else "") for k in sets]
    rows = [header]
    rows.append([fill("row_sets"), *(integer(s.num_sets, lang) for s in sets.values())])
    rows.append([fill("row_size"), *(integer(s.set_size, lang) for s in sets.values())])
    rows.append([fill("row_params"), *(integer(2 * math.prod(s.param_shape), lang) for s in sets.values())])
    rows.append([fill("row_batch"), *(fill("yes") if s.depends_on_batch else fill("no") for s in sets.values())])
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    out = ["  " + "   ".join(r[j].ljust(widths[j]) for j in range(len(header))).rstrip() for r in rows]
    return [*out, "  " + fill("chosen")]
