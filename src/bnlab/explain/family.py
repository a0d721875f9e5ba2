"""Layer, instance and group norm (Wu & He 2018, Fig. 2) in :func:`bnlab.explain`: the same numbers for
another set B, from :func:`bnlab.axes.norm_set`, their text in English and Spanish and the family's table.
Batch norm keeps its own text (:mod:`.text`); the family's figure draws the members side by side."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..axes import FAMILY, PER, channel_axis, norm_set
from .text import TEXT, spatial_axes, wrap
from .words import integer, say

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


FAMILY_TEXT = {
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
    t, tf, lang = TEXT[e.lang], FAMILY_TEXT[e.lang], e.lang
    n = e.shape[0]
    c_axis = channel_axis(e.layout)
    C = e.shape[c_axis]
    spatial = spatial_axes(e.layout)
    nloc = math.prod(e.shape[a] for a in spatial)
    g = e.groups or 1
    lines: list[str] = []

    def add(paragraph: str) -> None:
        lines.append(wrap(paragraph))

    dims = [say(lang, t["dim_n"], n=n), *(f"{e.layout[a]}={e.shape[a]}" for a in spatial)]
    dims.append(say(lang, t["dim_c" if spatial else "dim_c_fc"], c=C))
    add(say(lang, t["header"], shape=e.shape, layout=e.layout, dims=", ".join(dims)))
    cg = C // g
    add(say(lang, tf[f"variant_{e.norm}"], g=g, cg=cg))
    lines.append("")
    idx = "x[" + ", ".join(letter.lower() for letter in e.layout) + "]"
    key = f"set_{e.norm}" + ("" if spatial else "_fc")
    crange = "c = g" if cg == 1 else f"c = g·{cg} … g·{cg}+{cg - 1}"  # the channels of group g
    add(say(lang, tf[key], idx=idx, c=C, nloc=nloc, cg=cg, crange=crange))
    how = say(lang, tf[f"how_{e.norm}"], n=n, c=C, g=g)
    count = "  " + say(lang, tf["count"], sets=e.num_sets, how=how, size=e.set_size)
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
        add("  " + tf["tiny"])
    lines.append("")
    add(tf["numpy"])
    if e.norm == "group":
        lines.append(f"  tg    = t.reshape{split}".ljust(40) + say(lang, tf["reshape"], g=g, cg=cg))
    t_name = "tg" if e.norm == "group" else "t"
    comment = say(lang, tf["comment_mean"], fshape=e.feature_shape)
    lines.append(f"  mu_B  = np.mean({t_name}, axis={e.axes!r})".ljust(40) + comment)
    lines.append(f"  var_B = np.var({t_name}, axis={e.axes!r})")
    lines.append("")
    if e.norm == "layer":
        kept = "·".join(e.layout[1:])
        add(say(lang, tf["params_layer"], letters=kept, params=e.num_params))
    else:
        cls = "GroupNorm" if e.norm == "group" else "InstanceNorm2d"
        add(say(lang, tf["params_channel"], cls=cls, params=e.num_params))
    add(tf["batch_no"])
    add(tf["inference"])
    lines.append("")
    add(tf["table_title"])
    lines.extend(_family_table(e))
    return "\n".join(lines)


def _family_table(e: Explanation) -> list[str]:
    tf, lang = FAMILY_TEXT[e.lang], e.lang
    sets = family_sets(e)
    chosen = member_key(e.norm, e.per)
    header = [""] + [tf[f"col_{k}"].format(g=e.groups) + (" *" if k == chosen else "") for k in sets]
    rows = [header]
    rows.append([tf["row_sets"], *(integer(s.num_sets, lang) for s in sets.values())])
    rows.append([tf["row_size"], *(integer(s.set_size, lang) for s in sets.values())])
    rows.append([tf["row_params"], *(integer(2 * math.prod(s.param_shape), lang) for s in sets.values())])
    rows.append([tf["row_batch"], *(tf["yes"] if s.depends_on_batch else tf["no"] for s in sets.values())])
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    out = ["  " + "   ".join(r[j].ljust(widths[j]) for j in range(len(header))).rstrip() for r in rows]
    return [*out, "  " + tf["chosen"]]
