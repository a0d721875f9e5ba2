"""The interactive set-B page: one self-contained HTML file (no server, no network, no external files).

The reader types or picks a shape (N, H, W, C in NHWC or N, C, H, W in NCHW) and a member of the family
(batch norm per channel or per activation, layer, instance, group norm), sees the tensor drawn as samples ×
channels × locations, and hovers or clicks a value to light up every value of its set B. The counts update
with the numbers filled in: how many sets, m' = m·p·q (or the member's own product), the γ/β count, whether
the batch enters, and what Alg. 2 turns it into. "Other variant" steps to the same value under the next
member. The page's JavaScript follows :func:`bnlab.axes.norm_set` (tests compare the two for many shapes
in a real browser).

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

from .axes import check_groups, check_norm, check_per, norm_set
from .io import make_dirs, write_text

__all__ = ["write_page", "page_html", "PAGE_LAYOUTS", "PAGE_MEMBERS"]

#: Layouts the page draws (a 4-D activation of a conv layer).
PAGE_LAYOUTS = ("NHWC", "NCHW")
#: The members the page offers, as (norm, per) pairs keyed by the page's names.
PAGE_MEMBERS = {
    "batch-channel": ("batch", "channel"),
    "batch-activation": ("batch", "activation"),
    "layer": ("layer", "channel"),
    "instance": ("instance", "channel"),
    "group": ("group", "channel"),
}

_TEXT = {
    "en": {
        "title": "Which values share one mean and variance? The set B of each normalization",
        "intro": "Type a shape and pick a layout and a normalization. Hover over or click any value: every value "
        "of its set B lights up — they share one mean and one variance (Ioffe & Szegedy 2015, Alg. 1; "
        "Wu & He 2018, Fig. 2).",
        "foot": "N = samples (m in the paper), C = channels (feature maps), H×W = p×q locations. Drawings are "
        "limited to 8 samples, 16 channels and 8×8 locations; the counts are always for the whole shape.",
        "l-shape": "shape",
        "l-layout": "layout",
        "l-norm": "normalization",
        "l-groups": "groups G",
        "other": "Same value, other variant →",
        "t-member": "member",
        "t-axes": "reduce axes",
        "t-sets": "sets B",
        "t-size": "values per set",
        "t-lit": "lit here",
        "t-params": "γ and β",
        "t-batch": "depends on the batch",
        "t-alg2": "at inference (Alg. 2)",
        "o_batch-channel": "batch norm, per channel (convolutional BN)",
        "o_batch-activation": "batch norm, per activation",
        "o_layer": "layer norm",
        "o_instance": "instance norm",
        "o_group": "group norm",
        "m_batch-channel": "batch norm per channel: one set per feature map, across the mini-batch and all locations",
        "m_batch-activation": "batch norm per activation: one set per (location, channel), across the mini-batch",
        "m_layer": "layer norm: one set per sample, all its channels and locations",
        "m_instance": "instance norm: one set per sample and channel, its locations",
        "m_group": "group norm, G = {g}: one set per sample and group of channels",
        "sets_batch-channel": "one per channel",
        "sets_batch-activation": "one per activation (location, channel)",
        "sets_layer": "one per sample",
        "sets_instance": "one per sample and channel",
        "sets_group": "one per sample and group",
        "of_split": "of x reshaped to {split}",
        "lit": "{lit} values drawn lit (of {size} in the set)",
        "lit_1": "1 value drawn lit (of {size} in the set)",
        "yes": "yes: the statistics pool over the mini-batch",
        "no": "no: each sample is normalized with its own statistics",
        "alg2_batch-channel": "one fixed affine map per feature map, {sets} in all: y = γ/√(Var[x]+ε)·x + "
        "(β − γ·E[x]/√(Var[x]+ε)), foldable into the convolution before it",
        "alg2_batch-activation": "one fixed affine map per activation, {sets} in all, from the population "
        "statistics E[x], Var[x]",
        "alg2_none": "nothing to fix: the same per-sample statistics are computed at inference as in training "
        "(no running statistics, no fixed affine map)",
        "selected": "selected value: {idx}",
        "more_c": "… {c} channels",
        "more": "drawn: {sn} of {n} {samples}, {sh}×{sw} of {h}×{w} {locations}",
        "samples": "samples",
        "samples_1": "sample",
        "locations": "locations",
        "locations_1": "location",
        "err_shape": "shape must be 4 positive whole numbers separated by commas, such as 8,4,4,16 — got '{shape}'",
        "err_groups": "G = {g} does not divide the {c} channels; pick G among {divs}",
        "err_groups_positive": "G must be a positive whole number, got {g}",
        "err_groups_many": "G = {g} does not divide the {c} channels; pick a divisor of C",
    },
    "es": {
        "title": "¿Qué valores comparten una media y una varianza? El conjunto B de cada normalización",
        "intro": "Escribe una forma y elige una disposición y una normalización. Pasa el ratón por encima de "
        "cualquier valor o haz clic en él: se iluminan todos los valores de su conjunto B, que comparten una "
        "media y una varianza (Ioffe y Szegedy 2015, Alg. 1; Wu y He 2018, fig. 2).",
        "foot": "N = ejemplos (m en el artículo), C = canales (mapas de características), H×W = p×q "
        "ubicaciones. El dibujo se limita a 8 ejemplos, 16 canales y 8×8 ubicaciones; las cuentas son "
        "siempre para la forma completa.",
        "l-shape": "forma",
        "l-layout": "disposición",
        "l-norm": "normalización",
        "l-groups": "grupos G",
        "other": "Mismo valor, otra variante →",
        "t-member": "miembro",
        "t-axes": "ejes reducidos",
        "t-sets": "conjuntos B",
        "t-size": "valores por conjunto",
        "t-lit": "iluminados aquí",
        "t-params": "γ y β",
        "t-batch": "depende del minilote",
        "t-alg2": "en inferencia (Alg. 2)",
        "o_batch-channel": "por lotes, por canal (BN convolucional)",
        "o_batch-activation": "por lotes, por activación",
        "o_layer": "por capa (layer norm)",
        "o_instance": "por instancia (instance norm)",
        "o_group": "por grupos (group norm)",
        "m_batch-channel": "BN por canal: un conjunto por mapa de características, en todo el minilote y todas "
        "las ubicaciones",
        "m_batch-activation": "BN por activación: un conjunto por (ubicación, canal), en todo el minilote",
        "m_layer": "normalización por capa: un conjunto por ejemplo, con todos sus canales y ubicaciones",
        "m_instance": "normalización por instancia: un conjunto por ejemplo y canal, con sus ubicaciones",
        "m_group": "normalización por grupos, G = {g}: un conjunto por ejemplo y grupo de canales",
        "sets_batch-channel": "uno por canal",
        "sets_batch-activation": "uno por activación (ubicación, canal)",
        "sets_layer": "uno por ejemplo",
        "sets_instance": "uno por ejemplo y canal",
        "sets_group": "uno por ejemplo y grupo",
        "of_split": "de x con la forma {split}",
        "lit": "{lit} valores iluminados en el dibujo (de {size} en el conjunto)",
        "lit_1": "1 valor iluminado en el dibujo (de {size} en el conjunto)",
        "yes": "sí: las estadísticas se calculan sobre el minilote",
        "no": "no: cada ejemplo se normaliza con sus propias estadísticas",
        "alg2_batch-channel": "una transformación afín fija por mapa de características, {sets} en total: "
        "y = γ/√(Var[x]+ε)·x + (β − γ·E[x]/√(Var[x]+ε)), que se puede fusionar con la convolución anterior",
        "alg2_batch-activation": "una transformación afín fija por activación, {sets} en total, con las "
        "estadísticas de población E[x], Var[x]",
        "alg2_none": "nada que fijar: en inferencia se calculan las mismas estadísticas por ejemplo que en "
        "entrenamiento (sin estadísticas acumuladas ni transformación afín fija)",
        "selected": "valor elegido: {idx}",
        "more_c": "… {c} canales",
        "more": "en el dibujo: {sn} de {n} {samples}, {sh}×{sw} de {h}×{w} {locations}",
        "samples": "ejemplos",
        "samples_1": "ejemplo",
        "locations": "ubicaciones",
        "locations_1": "ubicación",
        "err_shape": "la forma deben ser 4 enteros positivos separados por comas, como 8,4,4,16; se recibió "
        "'{shape}'",
        "err_groups": "G = {g} no divide los {c} canales; elige G entre {divs}",
        "err_groups_positive": "G debe ser un entero positivo; se recibió {g}",
        "err_groups_many": "G = {g} no divide los {c} canales; elige un divisor de C",
    },
}


# -- argument checks --------------------------------------------------------------------------------------
# Every argument is checked, whatever the norm: ``groups`` and ``per`` also reach the page's data (its
# controls open on them) when the norm does not use them, so nothing unchecked may pass.
def _check_page_arguments(lang, shape, layout, norm, per, groups) -> tuple[int, ...]:
    """Raise ValueError naming the first bad argument of :func:`page_html`; return the shape as ints."""
    if not isinstance(lang, str) or lang not in _TEXT:
        raise ValueError(f"unknown lang {lang!r}; use 'en' or 'es'")
    if not isinstance(layout, str) or layout.upper() not in PAGE_LAYOUTS:
        raise ValueError(f"the page draws 4-D activations: layout must be NHWC or NCHW, got {layout!r}")
    layout = layout.upper()
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in shape
    ):
        raise ValueError(f"the page needs a shape of 4 positive whole numbers in {layout} order, got {shape!r}")
    dims = tuple(int(n) for n in shape)
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"the page needs a shape of 4 positive sizes in {layout} order, got {dims}")
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
    data = {"lang": lang, "shape": [str(n) for n in shape], "layout": layout, "member": member,
            "groups": None if groups is None else str(groups), "text": _TEXT[lang]}  # fmt: skip
    template = resources.files("bnlab").joinpath("assets/explain_page.html").read_text(encoding="utf-8")
    # no "<" inside the script: "</script" cannot close it early, nor "<!--" and "<script" start a comment
    payload = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
    title = _TEXT[lang]["title"].replace("&", "&amp;").replace("<", "&lt;")
    return template.replace("__LANG__", lang).replace("__TITLE__", title).replace("__BNLAB_DATA__", payload)


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
