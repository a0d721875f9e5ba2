"""The interactive set-B page: one self-contained HTML file (no server, no network, no external files).

The reader types a shape of 2 to 5 sizes (N, C for a dense layer; N, L, C or N, C, L; N, H, W, C or
N, C, H, W; N, D, H, W, C or N, C, D, H, W), picks the channel position and a variant of the family (batch
norm per channel or per activation, layer, instance, group norm), sees the tensor drawn as samples ×
channels × locations (a sample of it when it is large), hovers a value to preview its set B and clicks it
(or presses Enter) to pin it. The counts update with the numbers filled in: how many sets, m' = m·p·q (or
the variant's own product), the γ/β count, whether the batch enters, and what Alg. 2 turns it into.
"Other variant" steps to the same value under the next variant; switching NHWC ↔ NCHW keeps the tensor
(the shape is reordered). The page's JavaScript follows :func:`bnlab.axes.norm_set` (tests compare the two
for many shapes in a real browser). Its words come from the ``page`` catalog of :mod:`bnlab.i18n`, its
numbers are written with the language's ``core`` ``"@number"`` conventions.

>>> import tempfile, pathlib
>>> path = write_page(pathlib.Path(tempfile.mkdtemp()) / "setb.html", lang="es")
>>> "<script src" in path.read_text(encoding="utf-8"), path.read_text(encoding="utf-8").count("http")
(False, 0)
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from . import i18n
from .axes import LAYOUTS, check_groups, check_norm, check_per, norm_set
from .io import make_dirs, write_text

__all__ = ["write_page", "page_html", "PAGE_LAYOUTS", "PAGE_MEMBERS"]

#: Layouts the page draws: a dense layer's (N, C) and the 3-, 4- and 5-D activations of conv layers.
PAGE_LAYOUTS = tuple(LAYOUTS)
#: The members the page offers, as (norm, per) pairs keyed by the page's names.
PAGE_MEMBERS = {
    "batch-channel": ("batch", "channel"),
    "batch-activation": ("batch", "activation"),
    "layer": ("layer", "channel"),
    "instance": ("instance", "channel"),
    "group": ("group", "channel"),
}


# -- argument checks --------------------------------------------------------------------------------------
# Every argument is checked, whatever the norm: ``groups`` and ``per`` also reach the page's data (its
# controls open on them) when the norm does not use them, so nothing unchecked may pass.
def _check_page_arguments(lang, shape, layout, norm, per, groups) -> tuple[int, ...]:
    """Raise ValueError naming the first bad argument of :func:`page_html`; return the shape as ints."""
    if not isinstance(lang, str) or lang not in i18n.languages():
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(map(repr, i18n.languages()))}")
    if not isinstance(layout, str) or layout.upper() not in PAGE_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(PAGE_LAYOUTS)} (2- to 5-D activations), got {layout!r}")
    layout = layout.upper()
    rank = len(layout)
    if (
        isinstance(shape, (str, bytes))
        or not isinstance(shape, Sequence)
        or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape)
    ):
        raise ValueError(f"the page needs a shape of {rank} positive whole numbers in {layout} order, got {shape!r}")
    dims = tuple(int(n) for n in shape)
    if len(dims) != rank or min(dims) < 1:
        raise ValueError(f"the page needs a shape of {rank} positive sizes in {layout} order, got {dims}")
    for name, value in (("norm", norm), ("per", per)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    check_norm(norm)
    check_per(per)
    if groups is not None:  # G preselected for the group member, even when the page opens on another one
        check_groups(groups, dims[layout.index("C")])
    return dims


def page_html(
    lang: str = "en",
    shape: Sequence[int] = (4, 3, 3, 8),
    layout: str = "NHWC",
    norm: str = "batch",
    per: str = "channel",
    groups: int | None = None,
) -> str:
    """The page as one HTML string, opening on ``shape``/``layout``/``norm`` (checked with bnlab.axes)."""
    shape = _check_page_arguments(lang, shape, layout, norm, per, groups)
    layout = layout.upper()
    if norm == "group" and groups is None:
        c = shape[layout.index("C")]
        groups = default_groups(c)
    s = norm_set(shape, layout, norm, per=per, groups=groups)  # the same checks (and messages) as explain
    member = f"batch-{per}" if norm == "batch" else norm
    groups = s.groups if norm == "group" else groups
    # sizes as decimal strings: the page counts with BigInt, and a JSON number would reach it as a double
    plural = i18n.catalog("core", lang).get("@plural-forms", "")
    data = {"lang": lang, "shape": [str(n) for n in shape], "layout": layout, "member": member,
            "groups": None if groups is None else str(groups), "text": page_texts(lang),
            "number": number_conventions(lang), "plural": plural}  # fmt: skip
    template = resources.files("bnlab").joinpath("assets/explain_page.html").read_text(encoding="utf-8")
    # no "<" inside the script: "</script" cannot close it early, nor "<!--" and "<script" start a comment
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    title = i18n.t("page.title", lang).replace("&", "&amp;").replace("<", "&lt;")
    return template.replace("__LANG__", lang).replace("__TITLE__", title).replace("__BNLAB_DATA__", payload)


def page_texts(lang: str) -> dict:
    """The page's words in ``lang``: the ``page`` catalog, over English for any key an added language lacks
    (merged key by key inside tables too: a partial ``"row"`` keeps the English rows it does not name)."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return out

    return merge(i18n.catalog("page", i18n.DEFAULT_LANG), i18n.catalog("page", lang))


def number_conventions(lang: str) -> dict:
    """How ``lang`` writes numbers (``core.json``'s ``"@number"``), for the page's own formatter."""
    return {
        **i18n.catalog("core", i18n.DEFAULT_LANG).get("@number", {}),
        **i18n.catalog("core", lang).get("@number", {}),
    }


#: Divisor searches stop here (at sqrt(C) <= 10**6), in Python and in the page alike.
_SEARCH = 10**6


def default_groups(channels: int) -> int:
    """The G the page opens group norm with: the smallest divisor of C above 1 and below C, else 1.

    >>> default_groups(8), default_groups(9), default_groups(7), default_groups(1)
    (2, 3, 1, 1)
    """
    return next((g for g in range(2, min(math.isqrt(channels), _SEARCH) + 1) if channels % g == 0), 1)


def write_page(path: str | Path, lang: str = "en", **kwargs) -> Path:
    """Write the interactive page to ``path`` (one self-contained HTML file) and return the path.

    ``kwargs`` (``shape``, ``layout``, ``norm``, ``per``, ``groups``) set what the page opens on.
    """
    path = Path(path)
    html = page_html(lang, **kwargs)
    make_dirs(path.parent)
    return write_text(path, html)
