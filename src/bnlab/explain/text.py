"""The text of :func:`bnlab.explain` for batch norm, per channel and per activation: its strings in
English and Spanish, and how they are put together for one shape."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

from ..axes import PER, channel_axis, effective_batch_size, feature_shape, reduce_axes
from .words import Shown, integer, say

if TYPE_CHECKING:
    from . import Explanation

# Spatial axis letter -> symbol in the formula for m' (the paper writes p×q for an H×W feature map).
_FORMULA_SYMBOL = {"D": "d", "H": "p", "W": "q", "L": "l"}


def spatial_axes(layout: str) -> list[int]:
    c = channel_axis(layout)
    return [a for a in range(1, len(layout)) if a != c]


TEXT = {
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
    total = integer(e.params_side_by_side[per], e.lang)
    return f"2·{letters} = 2·{values} = {total}"


def render_text(e: Explanation) -> str:
    """The text of batch norm, per channel or per activation (the family's is in :mod:`.family`)."""
    t, lang = TEXT[e.lang], e.lang

    def fill(key: str, **values) -> str:  # the template ``key`` in this language
        return say(lang, t[key], **values)

    n = e.shape[0]
    C = e.shape[channel_axis(e.layout)]
    spatial = spatial_axes(e.layout)
    nloc = math.prod(e.shape[a] for a in spatial)
    fc = not spatial  # layout NC: no locations, the two variants coincide
    sets, size = e.num_sets, e.set_size
    lines: list[str] = []

    def add(paragraph: str) -> None:  # prose is wrapped; code, formulas and the table are not
        lines.append(wrap(paragraph))

    dims = [fill("dim_n", n=n), *(f"{e.layout[a]}={e.shape[a]}" for a in spatial)]
    dims.append(fill("dim_c_fc" if fc else "dim_c", c=C))
    add(fill("header", shape=e.shape, layout=e.layout, dims=", ".join(dims)))
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
        add("  " + t["tiny"])
    lines.append("")

    # the same in NumPy
    add(t["numpy"])
    axes = repr(tuple(e.axes))
    mean_expr = f"  mu_B  = np.mean(t, axis={axes})"
    var_expr = f"  var_B = np.var(t, axis={axes})"
    width = max(len(mean_expr), len(var_expr)) + 3
    lines.append(mean_expr.ljust(width) + fill("comment_mean", fshape=e.feature_shape))
    lines.append(var_expr.ljust(width) + t["comment_var"])
    lines.append("")

    add(t["table_title"])
    lines.extend(_table(e))
    lines.append("")

    # why, and what inference does with it
    if fc:
        add(fill("why_fc", m=n))
    elif e.per == "channel":
        add(fill("why_channel", size=size, m=n))
    else:
        add(fill("why_activation", sets=sets, m=n))
    unit = t["unit_fc"] if fc else t[f"unit_{e.per}"]
    add(fill("inference", unit=unit, sets=sets, size=size))
    lines.append("  a = γ/√(Var[x]+ε),  b = β − γ·E[x]/√(Var[x]+ε)")
    add(t["fold"])
    return "\n".join(lines)


def wrap(line: str, width: int = 100) -> str:
    """Wrap one paragraph to ``width`` columns; continuation lines are indented two more spaces."""
    indent = " " * (len(line) - len(line.lstrip(" ")))
    sub = indent + "  " if indent else ""
    return textwrap.fill(line, width=width, subsequent_indent=sub, break_on_hyphens=False, break_long_words=False)


def _table(e: Explanation) -> list[str]:
    t = TEXT[e.lang]
    rows = [["", *(t[f"col_{p}"] + (t["chosen"] if p == e.per else "") for p in PER)]]
    cells = {p: [] for p in PER}
    for p in PER:
        axes = reduce_axes(e.layout, per=p)
        fshape = feature_shape(e.shape, axes)
        cells[p] = [
            repr(axes),
            say(e.lang, t["row_sets_cell"], sets=math.prod(fshape), size=effective_batch_size(e.shape, axes)),
            repr(fshape),
            _params_formula(e, p),
        ]
    for i, name in enumerate(("row_axes", "row_sets", "row_shape", "row_params")):
        rows.append([t[name], *(cells[p][i] for p in PER)])
    widths = [max(len(r[j]) for r in rows) for j in range(3)]
    return ["  " + "   ".join(r[j].ljust(widths[j]) for j in range(3)).rstrip() for r in rows]


# Ghost BN (virtual_batch=k): batch norm's set B within each run of k consecutive examples.
GHOST_TEXT = {
    "en": {
        "header": "x has shape {shape} in layout {layout}; per {per}.",
        "ghost": "Ghost BN (Hoffer et al. 2017), virtual_batch = {k}: in training the mini-batch of {n:example} is "
        "split into {runs:run} of {k:example} each (consecutive examples), and each run is normalized with its "
        "own mean and variance. At inference the running statistics serve, as in plain BN.",
        "set_channel": "One set B = every value {idx} of ONE channel c in the {k} examples of ONE run, at "
        "{nloc:all location}: {size:value}.",
        "set_activation": "One set B = the values {idx} of ONE activation in the {k} examples of ONE run: "
        "{size:value}.",
        "count": "{sets:set_B} = {runs:run} × {feats:feature}; the statistics have shape {stats} (in split shape "
        "{split}, reduce axes {axes}). γ and β stay one pair per feature ({feats:pair}), shared by every run.",
        "numpy": "In NumPy: t.reshape({split}).mean(axis={axes})",
    },
    "es": {
        "header": "x tiene forma {shape} en la disposición {layout}; por {per}.",
        "ghost": "BN fantasma (Hoffer et al. 2017), virtual_batch = {k}: en entrenamiento el minilote de "
        "{n:example} se divide en {runs:run} de {k:example} cada una (ejemplos consecutivos), y cada tanda se "
        "normaliza con su propia media y varianza. En inferencia se usan las estadísticas acumuladas, como en "
        "la BN normal.",
        "set_channel": "Un conjunto B = todos los valores {idx} de UN canal c en los {k} ejemplos de UNA tanda, en "
        "{nloc:the location}: {size:value}.",
        "set_activation": "Un conjunto B = los valores {idx} de UNA activación en los {k} ejemplos de UNA tanda: "
        "{size:value}.",
        "count": "{sets:set_B} = {runs:run} × {feats:feature}; las estadísticas tienen forma {stats} (en la forma "
        "dividida {split}, ejes reducidos {axes}). γ y β siguen siendo un par por característica "
        "({feats:pair}), compartido por todas las tandas.",
        "numpy": "En NumPy: t.reshape({split}).mean(axis={axes})",
    },
}
_PER_WORD = {
    "en": {"channel": "channel", "activation": "activation"},
    "es": {"channel": "canal", "activation": "activación"},
}


def render_ghost_text(e: Explanation) -> str:
    """The text of ghost BN (``e.virtual_batch`` = k): batch norm's set B within each run of k examples."""
    t, lang = GHOST_TEXT[e.lang], e.lang
    k, n = e.virtual_batch, e.shape[0]
    runs = n // k
    nloc = math.prod(e.shape[a] for a in spatial_axes(e.layout))
    feats = math.prod(e.feature_shape) // runs
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    values = dict(
        shape=e.shape, layout=e.layout, per=_PER_WORD[lang][e.per], k=k, n=n, runs=runs, idx=idx, nloc=nloc,
        size=e.set_size, sets=e.num_sets, feats=feats, stats=e.feature_shape, split=e.split_shape, axes=e.axes,
    )  # fmt: skip
    keys = ["header", "ghost", f"set_{e.per}", "count", "numpy"]
    return "\n".join(wrap(say(lang, t[key], **values)) for key in keys)
