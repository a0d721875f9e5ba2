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

Everything is derived from :mod:`bnlab.axes`; this module only words and draws it.
"""

from __future__ import annotations

import math
import operator
import string
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .axes import LAYOUTS, PER, channel_axis, effective_batch_size, feature_shape, reduce_axes

__all__ = ["Explanation", "explain", "explain_family", "LANGS"]

#: Languages of the text and the figure.
LANGS = ("en", "es")

# Spatial axis letter -> symbol in the formula for m' (the paper writes p×q for an H×W feature map).
_FORMULA_SYMBOL = {"D": "d", "H": "p", "W": "q", "L": "l"}


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
    # the family (see explain_family at the end): which member, its G, and whether the batch enters
    norm: str = "batch"
    groups: int | None = None
    depends_on_batch: bool = True
    split_shape: tuple[int, ...] | None = None

    @property
    def text(self) -> str:
        """The explanation, several lines, in ``self.lang``."""
        return _render_text(self)

    def __str__(self) -> str:
        return self.text

    def save_figure(self, path: str | Path, dpi: int = 100) -> Path:
        """Draw one set B for both variants side by side and save it (PNG, SVG, PDF: by suffix)."""
        return _save_figure(self, Path(path), dpi=dpi)


def explain(
    shape: Sequence[int],
    layout: str = "NHWC",
    per: str = "channel",
    lang: str = "en",
    norm: str = "batch",
    groups: int | None = None,
) -> Explanation:
    """Explain which values form one set B for a tensor of ``shape`` in ``layout``.

    ``per="channel"`` is convolutional BN (one statistic and one (γ, β) per feature map, pooled over the
    mini-batch and every spatial location); ``per="activation"`` pools over the mini-batch only.
    ``norm`` picks the member of the family: ``"batch"`` (the default, with ``per``), ``"layer"``,
    ``"instance"`` or ``"group"`` (with ``groups=G``); see :func:`explain_family`.
    """
    layout, shape = _check_shape(shape, layout)
    if not isinstance(lang, str) or lang.lower() not in LANGS:
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(map(repr, LANGS))}")
    if check_norm(norm) != "batch" or groups is not None:
        return explain_family(shape, layout, norm, per=per, groups=groups, lang=lang.lower())
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
        lang=lang.lower(),
        axes=axes,
        num_sets=math.prod(fshape),
        set_size=effective_batch_size(shape, axes),
        feature_shape=fshape,
        num_params=counts[per],
        params_side_by_side=counts,
    )


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


# --------------------------------------------------------------------------------------------- text


def _fmt(n: int, lang: str) -> str:
    """Thousands grouped: 2,048 and 25,088 in English; 2048 and 25 088 in Spanish (the RAE groups only
    numbers of five or more digits, with a space)."""
    if lang == "es":
        return f"{n:,}".replace(",", " ") if abs(n) >= 10_000 else str(n)
    return f"{n:,}"


class Shown(NamedTuple):
    """A count written as an expression ('4×4 = 16'); the words around it agree with ``value``."""

    value: int
    text: str


# Nouns that follow a count: key -> (singular, plural), and in Spanish the gender its article takes.
_NOUNS = {
    "en": {
        "example": ("example", "examples"), "sample": ("sample", "samples"), "channel": ("channel", "channels"),
        "channel_map": ("channel (feature map)", "channels (feature maps)"), "feature": ("feature", "features"),
        "feature_map": ("feature map", "feature maps"), "location": ("location", "locations"),
        "value": ("value", "values"), "set": ("set", "sets"), "set_B": ("set B", "sets B"),
        "mean": ("mean", "means"), "variance": ("variance", "variances"), "pair": ("pair", "pairs"),
        "group": ("group", "groups"),
    },
    "es": {
        "example": ("ejemplo", "ejemplos", "m"), "sample": ("ejemplo", "ejemplos", "m"),
        "channel": ("canal", "canales", "m"),
        "channel_map": ("canal (mapa de características)", "canales (mapas de características)", "m"),
        "feature": ("característica", "características", "f"), "map": ("mapa", "mapas", "m"),
        "location": ("ubicación", "ubicaciones", "f"), "value": ("valor", "valores", "m"),
        "set": ("conjunto", "conjuntos", "m"), "set_B": ("conjunto B", "conjuntos B", "m"),
        "mean": ("media", "medias", "f"), "variance": ("varianza", "varianzas", "f"), "pair": ("par", "pares", "m"),
        "group": ("grupo", "grupos", "m"),
    },
}  # fmt: skip
# How a count reads, one form for 1 and one for any other number: kind -> (one, many). {n} is the number,
# {sg}/{pl} the noun; Spanish articles follow the noun's gender ({el} = el/la, {los} = los/las, ...).
_PHRASES = {
    "en": {
        "": ("{n} {sg}", "{n} {pl}"),                    # 1 example, 2 examples
        "the": ("the single {sg}", "the {n} {pl}"),
        "all": ("the single {sg}", "all {n} {pl}"),
        "each": ("the single {sg}", "each of the {n} {pl}"),
        "its": ("its single {sg}", "its {n} {pl}"),
    },
    "es": {
        "": ("{n} {sg}", "{n} {pl}"),                    # 1 ejemplo, 2 ejemplos
        "the": ("{el} {único} {sg}", "{los} {n} {pl}"),  # el único ejemplo, los 2 ejemplos
        "each": ("{el} {único} {sg}", "cada {uno} de {los} {n} {pl}"),
        "its": ("su {único} {sg}", "sus {n} {pl}"),
    },
}  # fmt: skip
_ARTICLES = {
    "m": {"el": "el", "los": "los", "único": "único", "uno": "uno"},
    "f": {"el": "la", "los": "las", "único": "única", "uno": "una"},
}


class _Words(string.Formatter):
    """``str.format`` for the templates, with counts that agree with their nouns.

    ``{n:example}`` gives '1 example' or '2 examples'; ``{n:each example}`` gives 'the single example' or
    'each of the 2 examples' (kinds in ``_PHRASES``); a capital kind (``{c:Each feature_map}``) starts a
    sentence. Whole numbers are grouped as the language writes them; a :class:`Shown` count prints its
    expression. Templates are written for both numbers, so no text is patched afterwards.
    """

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def format_field(self, value, format_spec: str) -> str:
        if isinstance(value, Shown):
            number, text = value.value, value.text
        elif isinstance(value, int) and not isinstance(value, bool):
            number, text = value, _fmt(value, self.lang)
        else:
            return super().format_field(value, format_spec)
        if not format_spec:
            return text
        kind, _, noun = format_spec.rpartition(" ")
        sg, pl, *gender = _NOUNS[self.lang][noun]
        words = _ARTICLES[gender[0]] if gender else {}
        phrase = _PHRASES[self.lang][kind.lower()][number != 1].format(n=text, sg=sg, pl=pl, **words)
        return phrase[:1].upper() + phrase[1:] if kind[:1].isupper() else phrase


_WORDS = {lang: _Words(lang) for lang in LANGS}


def _say(lang: str, template: str, **values) -> str:
    """Fill ``template`` (one of the strings below) in ``lang``: see :class:`_Words`."""
    return _WORDS[lang].format(template, **values)


def _spatial(layout: str) -> list[int]:
    c = channel_axis(layout)
    return [a for a in range(1, len(layout)) if a != c]


_TEXT = {
    "en": {
        "header": "x has shape {shape} in layout {layout}: {dims}.",
        "dim_n": "N={n:example}",
        "dim_c": "C={c:channel_map}",
        "dim_c_fc": "C={c:feature}",
        "variant_channel": "Variant: per channel = convolutional BN (Ioffe & Szegedy 2015, §3.2).",
        "variant_activation": "Variant: per activation = BN as in §3, one mean and one variance per activation.",
        "location": "A location is one spatial position {pos} of a feature map. {c:Each feature_map} has "
        "{locs:location}, in {n:each example} of the mini-batch.",
        "no_location": "Layout NC (a fully connected layer) has no spatial locations: every feature is a "
        "single activation, so the two variants are the same thing here.",
        "elements": "What the \"elements\" of a feature map are: the paper (§3.2) wants the normalization to "
        "obey the convolutional property, \"so that different elements of the same feature map, at "
        "different locations, are normalized in the same way\". Those elements "
        "are the VALUES {idx} of the map, the activations: one number per location, computed by the filter "
        "of channel c at that location. They are not the filter's weights: the filter (say 3×3 weights per "
        "input channel) is one set of numbers shared by {nloc:all location}, and BN never touches it. (The "
        "paper's \"elements of a mini-batch\" are something else again: {n:the example}.)",
        "set_channel": "One set B = every value {idx} of ONE channel c: {n:all example} × {nloc:all location}.",
        "set_fc": "One set B = the values {idx} of ONE feature c in {n:the example}.",
        "count_fc": "{sets:set_B} (one per feature), each of m = {m:value}.",
        "words_channel": "In words: {sets:mean}, {sets:variance}, {sets} γ and {sets} β, one of each per "
        "feature map.",
        "words_activation": "In words: {sets:mean}, {sets:variance}, {sets} γ and {sets} β, one of each per "
        "(location, channel) pair, that is per activation.",
        "words_fc": "In words: {sets:mean}, {sets:variance}, {sets} γ and {sets} β, one of each per feature.",
        "set_activation": "One set B = the values {idx} of ONE activation {act}: the same location and "
        "channel in {n:each example}.",
        "count_channel": "{sets:set_B} (one per channel), each of m' = {size:value}:",
        "where": "(m = {n:example}, {syms} = {locs:location})",
        "count_activation": "{sets:set_B} (one per activation, {acts}), each of m = {m:value}.",
        "numpy": "In NumPy, for the tensor t:",
        "comment_mean": "# shape {fshape}: one mean per set B",
        "comment_var": "# biased variance, as Alg. 1 normalizes with",
        "table_title": "γ and β, one pair per set B, side by side:",
        "col_channel": "per channel",
        "col_activation": "per activation",
        "chosen": " (this one)",
        "row_axes": "reduce axes",
        "row_sets": "sets B",
        "row_sets_cell": "{sets} of {size:value}",
        "row_shape": "γ/β shape",
        "row_params": "parameters",
        "why_channel": "Why one γ/β per feature map: a convolution applies the same filter at every "
        "location, so every location of a feature map is normalized the same way and the layer stays "
        "convolutional; each statistic is estimated from m' = {size:value} instead of m = {m}.",
        "why_fc": "With no locations, m' = m = {m}: one statistic and one γ/β per feature.",
        "unit_fc": "feature",
        "why_activation": "Per activation, each (location, channel) pair has its own mean, variance, γ and β: "
        "{sets:mean} and {sets:variance}, each from only m = {m:value}, and one filter's output is "
        "normalized differently at different locations.",
        "inference": "At inference (Alg. 2) each set's batch mean and variance are replaced by fixed "
        "population statistics, measured once over the training data: E[x] = E_B[μ_B] and Var[x] = "
        "m/(m−1)·E_B[σ²_B], where E_B[·] means \"the average over the training mini-batches B\" and m is "
        "the number of values per set B (here {size}). Then each {unit} becomes one fixed affine map "
        "y = a·x + b, the same for every example: {sets:pair} (a, b) in all, with",
        "unit_channel": "feature map",
        "unit_activation": "activation",
        "fold": "(it can be folded into the weights and bias of the layer before it).",
        "tiny": "Warning: each set B holds a single value, so its variance is 0 and training cannot "
        "normalize it; use a larger mini-batch.",
        # figure
        "fig_title": "x: {shape}, layout {layout}. Coloured: the values of ONE set B "
        "(one mean, one variance, one γ/β pair)",
        "fig_channel": "Per channel (convolutional BN)\nset B = channel c=0, every example, every "
        "location\n{size:value}",
        "fig_activation": "Per activation\nset B = one location of channel c=0, every example\n{size:value}",
        "fig_foot": "{sets:set_B}: {sets:mean}, {sets:variance}\n{sets} γ + {sets} β",
        "fig_channel_fc": "Per channel\nset B = feature c=0, every example\n{size:value}",
        "fig_activation_fc": "Per activation (the same, in layout NC)\nset B = feature c=0, every "
        "example\n{size:value}",
        "fig_more_n": "⋮ {n:example}",
        "fig_more_c": "… {c:channel}",
        "fig_spatial": "{real:location} per map ({shown} shown)",
        "fig_no_spatial": "1 value per feature (no locations)",
        "fig_legend_in": "in set B",
        "fig_legend_out": "other values",
    },
    "es": {
        "header": "x tiene forma {shape} con disposición {layout}: {dims}.",
        "dim_n": "N={n:example}",
        "dim_c": "C={c:channel_map}",
        "dim_c_fc": "C={c:feature}",
        "variant_channel": "Variante: por canal = BN convolucional (Ioffe y Szegedy 2015, §3.2).",
        "variant_activation": "Variante: por activación = BN como en §3, una media y una varianza por activación.",
        "location": "Una ubicación (en el artículo, location) es una posición espacial {pos} de un mapa "
        "de características. {c:Each map} tiene {locs:location}, en {n:each example} del minilote.",
        "no_location": "La disposición NC (una capa totalmente conectada) no tiene ubicaciones "
        "espaciales: cada característica es una sola activación, así que aquí las dos variantes "
        "coinciden.",
        "elements": "Qué son los «elementos» de un mapa de características: el artículo quiere que "
        "«different elements of the same feature map, at different locations, are normalized in the same "
        "way» (§3.2), es decir, que los distintos elementos de un mismo mapa, en distintas ubicaciones, se "
        "normalicen igual. Esos elementos son los VALORES {idx} del mapa, las activaciones: un número por "
        "ubicación, el que calcula el filtro del canal c en esa ubicación. No son los pesos del filtro: el "
        "filtro (por ejemplo, 3×3 pesos por canal de entrada) es un solo juego de números compartido por "
        "{nloc:the location}, y BN no lo toca. (Los «elements of a mini-batch» del artículo son otra cosa: "
        "{n:the example}.)",
        "set_channel": "Un conjunto B = todos los valores {idx} de UN canal c: {n:the example} × "
        "{nloc:the location}.",
        "set_fc": "Un conjunto B = los valores {idx} de UNA característica c en {n:the example}.",
        "count_fc": "{sets:set_B} (uno por característica), cada uno con m = {m:value}.",
        "words_channel": "Dicho con palabras: {sets:mean}, {sets:variance}, {sets} γ y {sets} β, una de "
        "cada por mapa de características.",
        "words_activation": "Dicho con palabras: {sets:mean}, {sets:variance}, {sets} γ y {sets} β, una de "
        "cada por par (ubicación, canal), es decir, por activación.",
        "words_fc": "Dicho con palabras: {sets:mean}, {sets:variance}, {sets} γ y {sets} β, una de cada "
        "por característica.",
        "set_activation": "Un conjunto B = los valores {idx} de UNA activación {act}: la misma ubicación "
        "y el mismo canal en {n:each example}.",
        "count_channel": "{sets:set_B} (uno por canal), cada uno con m' = {size:value}:",
        "where": "(m = {n:example}, {syms} = {locs:location})",
        "count_activation": "{sets:set_B} (uno por activación, {acts}), cada uno con m = {m:value}.",
        "numpy": "En NumPy, para el tensor t:",
        "comment_mean": "# forma {fshape}: una media por conjunto B",
        "comment_var": "# varianza sesgada, la que usa el Alg. 1 para normalizar",
        "table_title": "γ y β, un par por conjunto B, lado a lado:",
        "col_channel": "por canal",
        "col_activation": "por activación",
        "chosen": " (la elegida)",
        "row_axes": "ejes reducidos",
        "row_sets": "conjuntos B",
        "row_sets_cell": "{sets} de {size:value}",
        "row_shape": "forma de γ/β",
        "row_params": "parámetros",
        "why_channel": "Por qué un γ/β por mapa de características: la convolución aplica el mismo "
        "filtro en todas las ubicaciones, así que todas las ubicaciones de un mapa se normalizan igual y "
        "la capa sigue siendo convolucional; además, cada estadística se estima con m' = {size:value} "
        "en lugar de m = {m}.",
        "why_fc": "Sin ubicaciones, m' = m = {m}: una estadística y un γ/β por característica.",
        "unit_fc": "característica",
        "why_activation": "Por activación, cada par (ubicación, canal) tiene su propia media, su varianza, "
        "su γ y su β: {sets:mean} y {sets:variance}, cada una con solo m = {m:value}, y la salida de un "
        "mismo filtro se normaliza de forma distinta según la ubicación.",
        "inference": "En inferencia (Alg. 2) la media y la varianza del minilote de cada conjunto se "
        "sustituyen por estadísticas de población fijas, medidas una vez sobre los datos de entrenamiento: "
        "E[x] = E_B[μ_B] y Var[x] = m/(m−1)·E_B[σ²_B], donde E_B[·] significa «el promedio sobre los "
        "minilotes B de entrenamiento» y m es el número de valores de cada conjunto B (aquí {size}). "
        "Entonces cada {unit} se convierte en una única transformación afín fija y = a·x + b, la misma "
        "para todos los ejemplos: {sets:pair} (a, b) en total, con",
        "unit_channel": "mapa de características",
        "unit_activation": "activación",
        "fold": "(se puede fusionar con los pesos y el sesgo de la capa anterior).",
        "tiny": "Atención: cada conjunto B tiene un solo valor, su varianza es 0 y el entrenamiento no "
        "puede normalizarlo; usa un minilote más grande.",
        "fig_title": "x: {shape}, disposición {layout}. En color: los valores de UN conjunto B "
        "(una media, una varianza, un par γ/β)",
        "fig_channel": "Por canal (BN convolucional)\nB = canal c=0, todos los ejemplos, todas las "
        "ubicaciones\n{size:value}",
        "fig_activation": "Por activación\nB = una ubicación del canal c=0, todos los ejemplos\n{size:value}",
        "fig_foot": "{sets:set_B}: {sets:mean}, {sets:variance}\n{sets} γ + {sets} β",
        "fig_channel_fc": "Por canal\nB = característica c=0, todos los ejemplos\n{size:value}",
        "fig_activation_fc": "Por activación (lo mismo, en la disposición NC)\nB = característica c=0, "
        "todos los ejemplos\n{size:value}",
        "fig_more_n": "⋮ {n:example}",
        "fig_more_c": "… {c:channel}",
        "fig_spatial": "{real:location} por mapa ({shown} en el dibujo)",
        "fig_no_spatial": "1 valor por característica (sin ubicaciones)",
        "fig_legend_in": "en el conjunto B",
        "fig_legend_out": "otros valores",
    },
}


def _params_formula(e: Explanation, per: str) -> str:
    """'2·C = 2·16 = 32' or '2·C·H·W = 2·16·28·28 = 25,088'."""
    axes = reduce_axes(e.layout, per=per)
    kept = [a for a in range(len(e.layout)) if a not in axes]
    # letters in the order C, then the spatial ones, as the paper's reader would say them
    c = channel_axis(e.layout)
    kept.sort(key=lambda a: (a != c, a))
    letters = "·".join(e.layout[a] for a in kept)
    values = "·".join(str(e.shape[a]) for a in kept)
    total = _fmt(e.params_side_by_side[per], e.lang)
    return f"2·{letters} = 2·{values} = {total}"


def _render_text(e: Explanation) -> str:
    if e.norm != "batch":
        return _render_family_text(e)
    t, lang = _TEXT[e.lang], e.lang

    def say(key: str, **values) -> str:
        return _say(lang, t[key], **values)

    n = e.shape[0]
    C = e.shape[channel_axis(e.layout)]
    spatial = _spatial(e.layout)
    nloc = math.prod(e.shape[a] for a in spatial)
    fc = not spatial  # layout NC: no locations, the two variants coincide
    sets, size = e.num_sets, e.set_size
    lines: list[str] = []

    def add(paragraph: str) -> None:  # prose is wrapped; code, formulas and the table are not
        lines.append(_wrap(paragraph))

    dims = [say("dim_n", n=n), *(f"{e.layout[a]}={e.shape[a]}" for a in spatial)]
    dims.append(say("dim_c_fc" if fc else "dim_c", c=C))
    add(say("header", shape=e.shape, layout=e.layout, dims=", ".join(dims)))
    add(t[f"variant_{e.per}"])
    lines.append("")

    # what a location is
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    if fc:
        add(t["no_location"])
    else:
        letters = [e.layout[a].lower() for a in spatial]
        pos = letters[0] if len(letters) == 1 else "(" + ", ".join(letters) + ")"
        locs = "×".join(str(e.shape[a]) for a in spatial)
        if len(spatial) > 1:
            locs += f" = {_fmt(nloc, lang)}"
        add(say("location", pos=pos, c=C, locs=Shown(nloc, locs), n=n))
        lines.append("")
        add(say("elements", idx=idx, nloc=nloc, n=n))
    lines.append("")

    # one set B, how many, how big
    if fc:
        add(say("set_fc", idx=idx, n=n))
        add("  " + say("count_fc", sets=sets, m=size))
    elif e.per == "channel":
        add(say("set_channel", idx=idx, n=n, nloc=nloc))
        add("  " + say("count_channel", sets=sets, size=size))
        symbols = "·".join(["m", *(_FORMULA_SYMBOL[e.layout[a]] for a in spatial)])
        values = "·".join(str(e.shape[a]) for a in (0, *spatial))
        syms = "×".join(_FORMULA_SYMBOL[e.layout[a]] for a in spatial)
        locs = Shown(nloc, "×".join(str(e.shape[a]) for a in spatial))
        where = say("where", n=n, syms=syms, locs=locs)
        lines.append(f"    m' = {symbols} = {values} = {_fmt(size, lang)}   " + where)
    else:
        act = "(" + ", ".join(letter.lower() for letter in e.layout[1:]) + ")"
        add(say("set_activation", idx=idx, act=act, n=n))
        acts = "·".join(str(e.shape[a]) for a in range(1, len(e.layout)))
        add("  " + say("count_activation", sets=sets, acts=acts, m=size))
    add("  " + say("words_fc" if fc else f"words_{e.per}", sets=sets))
    if e.set_size == 1:
        add("  " + t["tiny"])
    lines.append("")

    # the same in NumPy
    add(t["numpy"])
    axes = repr(tuple(e.axes))
    mean_expr = f"  mu_B  = np.mean(t, axis={axes})"
    var_expr = f"  var_B = np.var(t, axis={axes})"
    width = max(len(mean_expr), len(var_expr)) + 3
    lines.append(mean_expr.ljust(width) + say("comment_mean", fshape=e.feature_shape))
    lines.append(var_expr.ljust(width) + t["comment_var"])
    lines.append("")

    add(t["table_title"])
    lines.extend(_table(e))
    lines.append("")

    # why, and what inference does with it
    if fc:
        add(say("why_fc", m=n))
    elif e.per == "channel":
        add(say("why_channel", size=size, m=n))
    else:
        add(say("why_activation", sets=sets, m=n))
    unit = t["unit_fc"] if fc else t[f"unit_{e.per}"]
    add(say("inference", unit=unit, sets=sets, size=size))
    lines.append("  a = γ/√(Var[x]+ε),  b = β − γ·E[x]/√(Var[x]+ε)")
    add(t["fold"])
    return "\n".join(lines)


def _wrap(line: str, width: int = 100) -> str:
    """Wrap one paragraph to ``width`` columns; continuation lines are indented two more spaces."""
    indent = " " * (len(line) - len(line.lstrip(" ")))
    sub = indent + "  " if indent else ""
    return textwrap.fill(line, width=width, subsequent_indent=sub, break_on_hyphens=False, break_long_words=False)


def _table(e: Explanation) -> list[str]:
    t = _TEXT[e.lang]
    rows = [["", *(t[f"col_{p}"] + (t["chosen"] if p == e.per else "") for p in PER)]]
    cells = {p: [] for p in PER}
    for p in PER:
        axes = reduce_axes(e.layout, per=p)
        fshape = feature_shape(e.shape, axes)
        cells[p] = [
            repr(axes),
            _say(e.lang, t["row_sets_cell"], sets=math.prod(fshape), size=effective_batch_size(e.shape, axes)),
            repr(fshape),
            _params_formula(e, p),
        ]
    for i, name in enumerate(("row_axes", "row_sets", "row_shape", "row_params")):
        rows.append([t[name], *(cells[p][i] for p in PER)])
    widths = [max(len(r[j]) for r in rows) for j in range(3)]
    return ["  " + "   ".join(r[j].ljust(widths[j]) for j in range(3)).rstrip() for r in rows]


# ------------------------------------------------------------------------------------------- figure

_SHOW_N, _SHOW_C, _SHOW_SIDE, _SHOW_LEN, _SHOW_D = 3, 3, 4, 6, 2
_IN_B, _OUT_B, _EDGE = "#f28e2b", "#e4e4e4", "#9a9a9a"


def _shown_grid(e: Explanation) -> tuple[int, int, int, str, str]:
    """(depth, rows, cols) of the spatial slice drawn per feature map, and the real/shown size labels."""
    spatial = _spatial(e.layout)
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


def _draw_panel(ax, e: Explanation, per: str, t: dict) -> None:
    from matplotlib.patches import Rectangle

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
        more_c = _say(e.lang, t["fig_more_c"], c=c_real)
        ax.text(right + 0.4, top - block_h / 2, more_c, ha="left", va="center", fontsize=10)
    if n_real > n_show:
        more_n = _say(e.lang, t["fig_more_n"], n=n_real)
        ax.text(x0 + block_w / 2, bottom - 0.4, more_n, ha="center", va="top", fontsize=10)
    nloc = math.prod(e.shape[a] for a in _spatial(e.layout))
    note = _say(e.lang, t["fig_spatial"], real=Shown(nloc, real_s), shown=shown_s) if real_s else t["fig_no_spatial"]
    ax.text(x0, bottom - 1.6, note, ha="left", va="top", fontsize=10, color="#222222")
    axes = reduce_axes(e.layout, per=per)
    fshape = feature_shape(e.shape, axes)
    key = f"fig_{per}_fc" if not _spatial(e.layout) else f"fig_{per}"
    title = _say(e.lang, t[key], size=effective_batch_size(e.shape, axes))
    ax.set_title(title, fontsize=11, fontweight="bold" if per == e.per else "normal")
    foot = _say(e.lang, t["fig_foot"], sets=math.prod(fshape))
    ax.text(x0, bottom - 2.6, foot, ha="left", va="top", fontsize=10)
    ax.set_xlim(0, max(right + 4.2, 15))
    ax.set_ylim(bottom - 4.6, top + 1.6)
    ax.set_aspect("equal")
    ax.axis("off")


def _save_figure(e: Explanation, path: Path, dpi: int = 100) -> Path:
    if e.norm != "batch":
        return _save_family_figure(e, path, dpi=dpi)
    # A Figure on its own Agg canvas, not pyplot: no global backend switch, nothing left open.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    t = _TEXT[e.lang]
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, 2)
    for ax, per in zip(axs, PER, strict=True):
        _draw_panel(ax, e, per, t)
    fig.suptitle(_say(e.lang, t["fig_title"], shape=e.shape, layout=e.layout), fontsize=12)
    fig.legend(
        handles=[
            Patch(facecolor=_IN_B, edgecolor=_EDGE, label=t["fig_legend_in"]),
            Patch(facecolor=_OUT_B, edgecolor=_EDGE, label=t["fig_legend_out"]),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# ------------------------------------------------------------------------------------- the family
# Layer, instance and group norm (Wu & He 2018, Fig. 2): the same numbers for another set B, from
# bnlab.axes.norm_set. Batch norm keeps the text above; the family's figure draws the four side by side.
from .axes import FAMILY, check_norm, norm_set  # noqa: E402  (kept with the family additions)


def _family_member(norm: str, per: str) -> str:
    """Key of a member in the family's tables: batch norm by its variant, the others by name."""
    return f"batch_{per}" if norm == "batch" else norm


def _family_counts(shape: tuple[int, ...], layout: str, per: str, groups: int | None) -> dict[str, int]:
    """γ/β count of each member for this shape (group norm only when G is known)."""
    out = {}
    for norm in FAMILY:
        if norm == "group" and groups is None:
            continue
        s = norm_set(shape, layout, norm, per=per, groups=groups if norm == "group" else None)
        out[_family_member(norm, per)] = 2 * math.prod(s.param_shape)
    return out


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
    if not isinstance(lang, str) or lang.lower() not in LANGS:
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(map(repr, LANGS))}")
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
        lang=lang.lower(),
        axes=s.axes,
        num_sets=s.num_sets,
        set_size=s.set_size,
        feature_shape=s.stats_shape,
        num_params=2 * math.prod(s.param_shape),
        params_side_by_side=_family_counts(shape, layout, per, s.groups if norm == "group" else groups),
        norm=norm,
        groups=s.groups if norm == "group" else None,
        depends_on_batch=s.depends_on_batch,
        split_shape=s.split_shape,
    )


_FAMILY_TEXT = {
    "en": {
        "batch_channel": "batch norm, per channel",
        "batch_activation": "batch norm, per activation",
        "layer": "layer norm",
        "instance": "instance norm",
        "group": "group norm",
        "variant_layer": "Member: layer norm (Ba et al. 2016): each sample is normalized over all its values.",
        "variant_instance": "Member: instance norm (Ulyanov et al. 2016): each channel of each sample is "
        "normalized over its locations.",
        "variant_group": "Member: group norm (Wu & He 2018) with G = {g:group} of C/G = {cg:channel}: each "
        "group of channels of each sample is normalized over its channels and locations.",
        "set_layer": "One set B = every value {idx} of ONE sample n: {c:all channel} × {nloc:all location}.",
        "set_instance": "One set B = the values {idx} of ONE sample n and ONE channel c: {nloc:its location}.",
        "set_layer_fc": "One set B = every value {idx} of ONE sample n: {c:its feature}.",
        "set_instance_fc": "One set B = the value {idx} of ONE sample n and ONE feature c: a single value.",
        "set_group_fc": "One set B = the values {idx} of ONE sample n and ONE group g of features "
        "({crange}): {cg:value}.",
        "set_group": "One set B = the values {idx} of ONE sample n and ONE group g of channels "
        "({crange}): {cg:channel} × {nloc:location}.",
        "count": "{sets:set_B} ({how}), each of {size:value}",
        "how_layer": "one per sample: N = {n}",
        "how_instance": "one per sample and channel: N·C = {n}·{c}",
        "how_group": "one per sample and group: N·G = {n}·{g}",
        "numpy": "In NumPy, for the tensor t:",
        "reshape": "# channels split into (G, C/G) = ({g}, {cg})",
        "comment_mean": "# shape {fshape}: one mean per set B",
        "params_layer": "γ and β: one pair per value of a sample (as torch.nn.LayerNorm), 2·{letters} = {params}.",
        "params_channel": "γ and β: one pair per channel (as torch.nn.{cls}), 2·C = {params}.",
        "batch_no": "Depends on the batch: no. Each sample is normalized with its own statistics, so its output "
        "is the same whatever else is in the mini-batch, even with a batch of one.",
        "inference": "At inference: the same computation as in training. There are no running statistics and "
        "Alg. 2 has nothing to fix: the mean and variance come from each input, so the map is not one fixed "
        "affine map and cannot be folded into the layer before it.",
        "table_title": "The family side by side for this shape:",
        "row_sets": "sets B",
        "row_size": "values per set",
        "row_params": "γ/β",
        "row_batch": "uses the batch",
        "yes": "yes",
        "no": "no",
        "chosen": "* this one",
        "col_batch_channel": "BN per channel",
        "col_batch_activation": "BN per activation",
        "col_layer": "layer",
        "col_instance": "instance",
        "col_group": "group G={g}",
        "tiny": "Warning: each set B holds a single value, so its variance is 0: this member cannot normalize "
        "this shape.",
        # figure
        "fig_title": "x: {shape}, layout {layout}. Coloured: the values of ONE set B (one mean, one variance)",
        "fig_panel": "{name}\n{sets:set} × {size:value}\nγ, β: {params}",
        "fig_more_n": "⋮ {n:sample}",
        "fig_more_c": "… {c:channel}",
        "fig_legend_in": "in set B",
        "fig_legend_out": "other values",
    },
    "es": {
        "batch_channel": "norm. por lotes, por canal",
        "batch_activation": "norm. por lotes, por activación",
        "layer": "norm. por capa",
        "instance": "norm. por instancia",
        "group": "norm. por grupos",
        "variant_layer": "Miembro: normalización por capa (layer norm, Ba et al. 2016): cada ejemplo se "
        "normaliza con todos sus valores.",
        "variant_instance": "Miembro: normalización por instancia (instance norm, Ulyanov et al. 2016): cada "
        "canal de cada ejemplo se normaliza con sus ubicaciones.",
        "variant_group": "Miembro: normalización por grupos (group norm, Wu y He 2018) con G = {g:group} de "
        "C/G = {cg:channel}: cada grupo de canales de cada ejemplo se normaliza con sus canales y ubicaciones.",
        "set_layer": "Un conjunto B = todos los valores {idx} de UN ejemplo n: {c:the channel} × "
        "{nloc:the location}.",
        "set_instance": "Un conjunto B = los valores {idx} de UN ejemplo n y UN canal c: {nloc:its location}.",
        "set_layer_fc": "Un conjunto B = todos los valores {idx} de UN ejemplo n: {c:its feature}.",
        "set_instance_fc": "Un conjunto B = el valor {idx} de UN ejemplo n y UNA característica c: un solo valor.",
        "set_group_fc": "Un conjunto B = los valores {idx} de UN ejemplo n y UN grupo g de características "
        "({crange}): {cg:value}.",
        "set_group": "Un conjunto B = los valores {idx} de UN ejemplo n y UN grupo g de canales "
        "({crange}): {cg:channel} × {nloc:location}.",
        "count": "{sets:set_B} ({how}), cada uno con {size:value}",
        "how_layer": "uno por ejemplo: N = {n}",
        "how_instance": "uno por ejemplo y canal: N·C = {n}·{c}",
        "how_group": "uno por ejemplo y grupo: N·G = {n}·{g}",
        "numpy": "En NumPy, para el tensor t:",
        "reshape": "# canales divididos en (G, C/G) = ({g}, {cg})",
        "comment_mean": "# forma {fshape}: una media por conjunto B",
        "params_layer": "γ y β: un par por valor de un ejemplo (como torch.nn.LayerNorm), 2·{letters} = {params}.",
        "params_channel": "γ y β: un par por canal (como torch.nn.{cls}), 2·C = {params}.",
        "batch_no": "¿Depende del minilote? No. Cada ejemplo se normaliza con sus propias estadísticas, así que "
        "su salida no cambia con el resto del minilote, ni siquiera con un minilote de un ejemplo.",
        "inference": "En inferencia: el mismo cálculo que en entrenamiento. No hay estadísticas acumuladas y el "
        "Alg. 2 no tiene nada que fijar: la media y la varianza salen de cada entrada, así que no es una "
        "transformación afín fija y no se puede fusionar con la capa anterior.",
        "table_title": "La familia lado a lado para esta forma:",
        "row_sets": "conjuntos B",
        "row_size": "valores por conjunto",
        "row_params": "γ/β",
        "row_batch": "usa el minilote",
        "yes": "sí",
        "no": "no",
        "chosen": "* el elegido",
        "col_batch_channel": "BN por canal",
        "col_batch_activation": "BN por activación",
        "col_layer": "por capa",
        "col_instance": "por instancia",
        "col_group": "grupos G={g}",
        "tiny": "Atención: cada conjunto B tiene un solo valor, su varianza es 0: este miembro no puede "
        "normalizar esta forma.",
        "fig_title": "x: {shape}, disposición {layout}. En color: los valores de UN conjunto B (una media, una "
        "varianza)",
        "fig_panel": "{name}\n{sets:set} × {size:value}\nγ, β: {params}",
        "fig_more_n": "⋮ {n:sample}",
        "fig_more_c": "… {c:channel}",
        "fig_legend_in": "en el conjunto B",
        "fig_legend_out": "otros valores",
    },
}


def _family_sets(e: Explanation) -> dict[str, tuple]:
    """member key -> its NormSet, for the members this explanation compares (both BN variants included)."""
    out = {}
    for norm in FAMILY:
        pers = PER if norm == "batch" else (e.per,)
        for per in pers:
            if norm == "group" and e.groups is None:
                continue
            out[_family_member(norm, per)] = norm_set(
                e.shape, e.layout, norm, per=per, groups=e.groups if norm == "group" else None
            )
    return out


def _render_family_text(e: Explanation) -> str:
    t, tf, lang = _TEXT[e.lang], _FAMILY_TEXT[e.lang], e.lang
    n = e.shape[0]
    c_axis = channel_axis(e.layout)
    C = e.shape[c_axis]
    spatial = _spatial(e.layout)
    nloc = math.prod(e.shape[a] for a in spatial)
    g = e.groups or 1
    lines: list[str] = []

    def add(paragraph: str) -> None:
        lines.append(_wrap(paragraph))

    dims = [_say(lang, t["dim_n"], n=n), *(f"{e.layout[a]}={e.shape[a]}" for a in spatial)]
    dims.append(_say(lang, t["dim_c" if spatial else "dim_c_fc"], c=C))
    add(_say(lang, t["header"], shape=e.shape, layout=e.layout, dims=", ".join(dims)))
    cg = C // g
    add(_say(lang, tf[f"variant_{e.norm}"], g=g, cg=cg))
    lines.append("")
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    key = f"set_{e.norm}" + ("" if spatial else "_fc")
    crange = "c = g" if cg == 1 else f"c = g·{cg} … g·{cg}+{cg - 1}"  # the channels of group g
    add(_say(lang, tf[key], idx=idx, c=C, nloc=nloc, cg=cg, crange=crange))
    how = _say(lang, tf[f"how_{e.norm}"], n=n, c=C, g=g)
    count = "  " + _say(lang, tf["count"], sets=e.num_sets, how=how, size=e.set_size)
    split = e.split_shape or e.shape
    letters = list(e.layout)
    if e.norm == "group":
        letters[c_axis : c_axis + 1] = ["G", "C/G"]
    sizes = [split[a] for a in e.axes]
    add(count + (":" if sizes else "."))  # the formula for m' follows, unless nothing is pooled
    if len(sizes) > 1:
        symbols = "·".join(f"({letters[a]})" if "/" in letters[a] else letters[a] for a in e.axes)
        lines.append(f"    m' = {symbols} = " + "·".join(map(str, sizes)) + " = " + _fmt(e.set_size, lang))
    elif sizes:
        lines.append(f"    m' = {letters[e.axes[0]]} = {_fmt(e.set_size, lang)}")
    if e.set_size == 1:
        add("  " + tf["tiny"])
    lines.append("")
    add(tf["numpy"])
    if e.norm == "group":
        lines.append(f"  tg    = t.reshape{split}".ljust(40) + _say(lang, tf["reshape"], g=g, cg=cg))
    t_name = "tg" if e.norm == "group" else "t"
    comment = _say(lang, tf["comment_mean"], fshape=e.feature_shape)
    lines.append(f"  mu_B  = np.mean({t_name}, axis={e.axes!r})".ljust(40) + comment)
    lines.append(f"  var_B = np.var({t_name}, axis={e.axes!r})")
    lines.append("")
    if e.norm == "layer":
        kept = "·".join(e.layout[1:])
        add(_say(lang, tf["params_layer"], letters=kept, params=e.num_params))
    else:
        cls = "GroupNorm" if e.norm == "group" else "InstanceNorm2d"
        add(_say(lang, tf["params_channel"], cls=cls, params=e.num_params))
    add(tf["batch_no"])
    add(tf["inference"])
    lines.append("")
    add(tf["table_title"])
    lines.extend(_family_table(e))
    return "\n".join(lines)


def _family_table(e: Explanation) -> list[str]:
    tf, lang = _FAMILY_TEXT[e.lang], e.lang
    sets = _family_sets(e)
    chosen = _family_member(e.norm, e.per)
    header = [""] + [tf[f"col_{k}"].format(g=e.groups) + (" *" if k == chosen else "") for k in sets]
    rows = [header]
    rows.append([tf["row_sets"], *(_fmt(s.num_sets, lang) for s in sets.values())])
    rows.append([tf["row_size"], *(_fmt(s.set_size, lang) for s in sets.values())])
    rows.append([tf["row_params"], *(_fmt(2 * math.prod(s.param_shape), lang) for s in sets.values())])
    rows.append([tf["row_batch"], *(tf["yes"] if s.depends_on_batch else tf["no"] for s in sets.values())])
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    out = ["  " + "   ".join(r[j].ljust(widths[j]) for j in range(len(header))).rstrip() for r in rows]
    return [*out, "  " + tf["chosen"]]


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    tf = _FAMILY_TEXT[e.lang]
    sets = {k: s for k, s in _family_sets(e).items() if k != "batch_activation"}
    C = e.shape[channel_axis(e.layout)]
    nloc = math.prod(e.shape[a] for a in _spatial(e.layout))
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
            ax.text(width, 0.5, _say(e.lang, tf["fig_more_c"], c=C), ha="left", va="center", fontsize=8)
        if e.shape[0] > n_show:
            ax.text(0, -n_show * 1.6 + 0.6, _say(e.lang, tf["fig_more_n"], n=e.shape[0]), va="top", fontsize=8)
        chosen = key == _family_member(e.norm, e.per)
        title = _say(e.lang, tf["fig_panel"], name=tf[key], sets=s.num_sets, size=s.set_size,
                     params=2 * math.prod(s.param_shape))  # fmt: skip
        ax.set_title(title, fontsize=10, fontweight="bold" if chosen else "normal")
        ax.set_xlim(-1.5, width + 2.5)
        ax.set_ylim(-n_show * 1.6 - 0.8, 2.2)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(_say(e.lang, tf["fig_title"], shape=e.shape, layout=e.layout), fontsize=12)
    fig.legend(
        handles=[Patch(facecolor=_IN_B, edgecolor=_EDGE, label=tf["fig_legend_in"]),
                 Patch(facecolor=_OUT_B, edgecolor=_EDGE, label=tf["fig_legend_out"])],
        loc="outside lower center", ncol=2, frameon=False, fontsize=10,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
