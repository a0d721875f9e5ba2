"""The figures of :func:`bnlab.explain`: a slice of the tensor with the values of one set B coloured, for
both batch-norm variants side by side, or for the members of the family. matplotlib is imported here
only, and this module only when a figure is saved, so the text needs neither."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..axes import PER, channel_axis, effective_batch_size, feature_shape, reduce_axes
from ..i18n.words import Shown
from ..i18n.words import t as tr
from ..io import make_dirs
from ..io import save_figure as _save_atomically
from .family import family_sets, member_key
from .text import spatial_axes

if TYPE_CHECKING:
    from . import Explanation


def _words(section: str, lang: str) -> Callable[..., str]:
    """The figure's templates of one section of the explain catalog (``bn`` or ``family``) in ``lang``."""
    return lambda key, **values: tr(f"explain.{section}.{key}", lang, **values)


_SHOW_N, _SHOW_C, _SHOW_SIDE, _SHOW_LEN, _SHOW_D = 3, 3, 4, 6, 2
_IN_B, _OUT_B, _EDGE = "#f28e2b", "#e4e4e4", "#9a9a9a"


def _shown_grid(e: Explanation) -> tuple[int, int, int, str, str]:
    """(depth, rows, cols) of the spatial slice drawn per feature map, and the real/shown size labels."""
    spatial = spatial_axes(e.layout)
    real = [e.shape[a] for a in spatial]
    if not spatial:
        return 1, 1, 1, "", ""
    if len(spatial) == 1:
        shown = [min(real[0], _SHOW_LEN)]
        return 1, 1, shown[0], f"{real[0]}", f"{shown[0]}"
    if len(spatial) == 2:
        shown = [min(real[0], _SHOW_SIDE), min(real[1], _SHOW_SIDE)]
        return 1, shown[0], shown[1], "×".join(map(str, real)), "×".join(map(str, shown))
    shown = [min(real[0], _SHOW_D), min(real[1], _SHOW_SIDE), min(real[2], _SHOW_SIDE)]
    return shown[0], shown[1], shown[2], "×".join(map(str, real)), "×".join(map(str, shown))


def _draw_panel(ax, e: Explanation, per: str, t: Callable[..., str]) -> None:
    n_real, c_real = e.shape[0], e.shape[channel_axis(e.layout)]
    n_show, c_show = min(n_real, _SHOW_N), min(c_real, _SHOW_C)
    depth, rows, cols, real_s, shown_s = _shown_grid(e)
    # the coloured activation for per="activation": channel 0, a location near the top-left corner
    pick = (0, min(1, rows - 1), min(1, cols - 1))
    off = 0.3  # offset of a deeper slice (3-D layouts), drawn behind the front one
    block_w = cols + off * (depth - 1)
    block_h = rows + off * (depth - 1)
    gap_x, gap_y = 1.4, 1.6
    x0, top = 2.2, 0.0

    for ni in range(n_show):
        y_top = top - ni * (block_h + gap_y)
        ax.text(x0 - 0.4, y_top - block_h / 2, f"n={ni}", ha="right", va="center", fontsize=10)
        for ci in range(c_show):
            bx = x0 + ci * (block_w + gap_x)
            if ni == 0:
                ax.text(bx + block_w / 2, top + 0.6, f"c={ci}", ha="center", va="bottom", fontsize=10)
            for d in reversed(range(depth)):
                dx, dy = off * d, off * d
                for r in range(rows):
                    for q in range(cols):
                        in_b = ci == 0 and (per == "channel" or (d, r, q) == pick)
                        ax.add_patch(
                            Rectangle(
                                (bx + q + dx, y_top - r - 1 + dy - off * (depth - 1)),
                                1,
                                1,
                                facecolor=_IN_B if in_b else _OUT_B,
                                edgecolor=_EDGE,
                                linewidth=0.8,
                            )
                        )
    right = x0 + c_show * (block_w + gap_x) - gap_x
    bottom = top - n_show * (block_h + gap_y) + gap_y
    if c_real > c_show:
        more_c = t("fig_more_c", c=c_real)
        ax.text(right + 0.4, top - block_h / 2, more_c, ha="left", va="center", fontsize=10)
    if n_real > n_show:
        more_n = t("fig_more_n", n=n_real)
        ax.text(x0 + block_w / 2, bottom - 0.4, more_n, ha="center", va="top", fontsize=10)
    nloc = math.prod(e.shape[a] for a in spatial_axes(e.layout))
    note = t("fig_spatial", real=Shown(nloc, real_s), shown=shown_s) if real_s else t("fig_no_spatial")
    ax.text(x0, bottom - 1.6, note, ha="left", va="top", fontsize=10, color="#222222")
    axes = reduce_axes(e.layout, per=per)
    fshape = feature_shape(e.shape, axes)
    key = f"fig_{per}_fc" if not spatial_axes(e.layout) else f"fig_{per}"
    title = t(key, size=effective_batch_size(e.shape, axes))
    ax.set_title(title, fontsize=11, fontweight="bold" if per == e.per else "normal")
    foot = t("fig_foot", sets=math.prod(fshape))
    ax.text(x0, bottom - 2.6, foot, ha="left", va="top", fontsize=10)
    ax.set_xlim(0, max(right + 4.2, 15))
    ax.set_ylim(bottom - 4.6, top + 1.6)
    ax.set_aspect("equal")
    ax.axis("off")


def save_figure(e: Explanation, path: Path, dpi: int = 100) -> Path:
    """Draw ``e`` and save it to ``path`` (PNG, SVG, PDF: by suffix): batch norm's two variants, or the family."""
    if e.norm != "batch":
        return _save_family_figure(e, path, dpi=dpi)
    # A Figure on its own Agg canvas, not pyplot: no global backend switch, nothing left open.
    t = _words("bn", e.lang)
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, 2)
    for ax, per in zip(axs, PER, strict=True):
        _draw_panel(ax, e, per, t)
    return _finish(fig, e, t, path, dpi)


def _finish(fig: Figure, e: Explanation, t: Callable[..., str], path: Path, dpi: int, note: str = "") -> Path:
    """Title (and a note under it), legend (in set B / other values) and save: the same for both figures."""
    fig.suptitle(t("fig_title", shape=e.shape, layout=e.layout) + (f"\n{note}" if note else ""), fontsize=12)
    fig.legend(
        handles=[
            Patch(facecolor=_IN_B, edgecolor=_EDGE, label=t("fig_legend_in")),
            Patch(facecolor=_OUT_B, edgecolor=_EDGE, label=t("fig_legend_out")),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
        fontsize=10,
    )
    make_dirs(path.parent)
    return _save_atomically(fig, path, dpi=dpi)


def _in_family_set(norm: str, n: int, c: int, loc: int, cg: int) -> bool:
    """Whether value (n, c, loc) shares the set B of value (0, 0, 0) under ``norm`` (per-channel BN for batch)."""
    if norm == "batch":
        return c == 0
    if norm == "layer":
        return n == 0
    if norm == "instance":
        return n == 0 and c == 0
    return n == 0 and c // cg == 0


def _save_family_figure(e: Explanation, path: Path, dpi: int = 100) -> Path:
    """The family side by side: samples × channels × locations, the set B of value (0, 0, 0) coloured."""
    tf = _words("family", e.lang)
    sets = {k: s for k, s in family_sets(e).items() if k != "batch_activation"}
    C = e.shape[channel_axis(e.layout)]
    nloc = math.prod(e.shape[a] for a in spatial_axes(e.layout))
    n_show, c_show, l_show = min(e.shape[0], 3), min(C, 6), min(nloc, 4)
    cg = C // (e.groups or 1)
    rows = math.ceil(len(sets) / 2)
    fig = Figure(figsize=(11, 2.2 * rows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axs = list(fig.subplots(rows, 2).ravel())
    for ax in axs[len(sets) :]:
        ax.axis("off")
    for ax, (key, s) in zip(axs, sets.items(), strict=False):
        norm = s.norm
        for ni in range(n_show):
            for ci in range(c_show):
                for li in range(l_show):
                    lit = _in_family_set(norm, ni, ci, li, cg)
                    ax.add_patch(
                        Rectangle((li + ci * (l_show + 0.6), -ni * 1.6), 1, 1,
                                  facecolor=_IN_B if lit else _OUT_B, edgecolor=_EDGE, linewidth=0.8)
                    )  # fmt: skip
        width = c_show * (l_show + 0.6)
        for ci in range(c_show):
            ax.text(ci * (l_show + 0.6) + l_show / 2, 1.3, f"c={ci}", ha="center", fontsize=8)
        for ni in range(n_show):
            ax.text(-0.3, -ni * 1.6 + 0.5, f"n={ni}", ha="right", va="center", fontsize=8)
        if C > c_show:
            ax.text(width, 0.5, tf("fig_more_c", c=C), ha="left", va="center", fontsize=8)
        if e.shape[0] > n_show:
            ax.text(0, -n_show * 1.6 + 0.6, tf("fig_more_n", n=e.shape[0]), va="top", fontsize=8)
        chosen = key == member_key(e.norm, e.per)
        title = tf("fig_panel", name=tf(key), sets=s.num_sets, size=s.set_size,
                     params=2 * math.prod(s.param_shape))  # fmt: skip
        ax.set_title(title, fontsize=10, fontweight="bold" if chosen else "normal")
        ax.set_xlim(-1.5, width + 2.5)
        ax.set_ylim(-n_show * 1.6 - 0.8, 2.2)
        ax.set_aspect("equal")
        ax.axis("off")
    _, _, _, real_s, _ = _shown_grid(e)  # how many locations a map has, and how many are drawn (in a row)
    note = tf("fig_spatial", real=Shown(nloc, real_s + (f" = {nloc}" if "×" in real_s else "")), shown=l_show)
    return _finish(fig, e, tf, path, dpi, note=note if real_s else tf("fig_no_spatial"))
