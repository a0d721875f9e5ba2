"""Build-time helpers of the bnlab book: numbers read from bnlab and from shipped results, formatted per language.

mkdocs.yml loads this file as a hook, whose ``on_config`` puts its folder on ``sys.path``; the pages' executed blocks
(markdown-exec) then ``import book``. Nothing here trains or measures: it reads bnlab's own functions, the
reference run shipped in the package and the JSON files committed under ``docs/data/``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"


def on_config(config, **kwargs):
    """MkDocs hook: make this module importable as ``book`` by the pages' executed blocks."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return config


# ------------------------------------------------------------------------------------------------ numbers


def num(x: float, lang: str = "en", digits: int = 0) -> str:
    """``x`` with ``digits`` decimals, grouped as bnlab writes numbers: 25,088 in English; 25 088 and 9408 in
    Spanish (RAE: no grouping below 10 000), with a decimal comma."""
    s = f"{x:,.{digits}f}"
    if lang == "en":
        return s
    whole, _, frac = s.partition(".")
    if abs(x) < 10_000:
        whole = whole.replace(",", "")
    s = whole.replace(",", "\u00a0") + ("," + frac if frac else "")
    return s


def pct(x: float, lang: str = "en", digits: int = 1) -> str:
    """A fraction as a percentage: 93.8% / 93,8 %."""
    return num(100 * x, lang, digits) + ("%" if lang == "en" else "\u00a0%")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def load(name: str) -> dict:
    """A committed result file under docs/data/."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ set B counts

_WORDS = {
    "en": {
        "channel": "per channel (convolutional BN)",
        "activation": "per activation",
        "axes": "reduce axes",
        "sets": "sets B",
        "values": "values in each set B",
        "stats": "means, variances",
        "params": "γ, β",
        "pairs": "at inference: pairs (a, b)",
        "each": "{n} of each",
    },
    "es": {
        "channel": "por canal (BN convolucional)",
        "activation": "por activación",
        "axes": "ejes reducidos",
        "sets": "conjuntos B",
        "values": "valores en cada conjunto B",
        "stats": "medias, varianzas",
        "params": "γ, β",
        "pairs": "en inferencia: pares (a, b)",
        "each": "{n} de cada",
    },
}


def counts_table(shape: tuple[int, ...], layout: str, lang: str = "en") -> str:
    """How many sets, values per set, statistics and γ/β for both variants, from ``bnlab.explain``."""
    import bnlab

    w = _WORDS[lang]
    cols = {per: bnlab.explain(shape, layout=layout, per=per) for per in ("channel", "activation")}
    rows = [
        [w["axes"], *(f"`{e.axes}`" for e in cols.values())],
        [w["sets"], *(num(e.num_sets, lang) for e in cols.values())],
        [w["values"], *(num(e.set_size, lang) for e in cols.values())],
        [w["stats"], *(w["each"].format(n=num(e.num_sets, lang)) for e in cols.values())],
        [w["params"], *(w["each"].format(n=num(e.num_params // 2, lang)) for e in cols.values())],
        [w["pairs"], *(num(e.num_sets, lang) for e in cols.values())],
    ]
    return table(["", w["channel"], w["activation"]], rows)


# ------------------------------------------------------------------------------- small-batch reference run

_NORMS = {
    "en": {"none": "no BN", "activation": "BN per activation", "channel": "BN per channel"},
    "es": {"none": "sin BN", "activation": "BN por activación", "channel": "BN por canal"},
}


def small_batch_table(lang: str = "en") -> str:
    """Recalibrated test accuracy against m, mean over the seeds (lowest–highest), from the shipped run."""
    from bnlab.report.small_batch_reference import REFERENCE

    summary = REFERENCE["summary"]
    names = _NORMS[lang]
    head = ["m", *(names[n] for n in ("none", "activation", "channel"))]
    rows = []
    for m in REFERENCE["config"]["batch_sizes"]:
        cells = []
        for norm in ("none", "activation", "channel"):
            s = summary[norm][str(m)]
            cells.append(f"{pct(s['mean'], lang)} ({num(100 * s['min'], lang, 1)}–{num(100 * s['max'], lang, 1)})")
        rows.append([str(m), *cells])
    return table(head, rows)


def small_batch_config() -> dict:
    from bnlab.report.small_batch_reference import REFERENCE

    return REFERENCE["config"]


# ----------------------------------------------------------------------------------------- paper Fig. 1


def fig1(lr: str) -> dict:
    """The summary of the committed paper-fig1 run at learning rate ``lr`` (docs/data/paper-fig1-lr*.json)."""
    return load(f"paper-fig1-lr{lr}.json")


def fig1_accuracy_table(lr: str, lang: str = "en") -> str:
    r = fig1(lr)
    marks = list(r["summary"]["none"]["test_accuracy_at"])
    best = {"en": "best", "es": "mejor"}[lang]
    steps = {"en": "steps", "es": "pasos"}[lang]
    rows = []
    for norm in ("none", "activation"):
        s = r["summary"][norm]
        cells = [pct(s["test_accuracy_at"][k], lang) for k in marks]
        cells[-1] = f"**{cells[-1]}**"
        rows.append([_FIG1_RUN[lang][norm], *cells, pct(s["best_test_accuracy"], lang)])
    return table([steps, *(num(int(k), lang) for k in marks), best], rows)


_FIG1_RUN = {"en": {"none": "without BN", "activation": "with BN"}, "es": {"none": "sin BN", "activation": "con BN"}}


def fig1_window(r: dict, norm: str, start: int, stop: int) -> list[float]:
    """Mean 15th/50th/85th percentile of the watched input over steps [start, stop), from the 50-step means."""
    block = r["block"]
    rows = r["percentiles"][norm][start // block : stop // block]
    return [sum(row[i] for row in rows) / len(rows) for i in range(3)]


def fig1_percentile_table(lr: str, lang: str = "en") -> str:
    r = fig1(lr)
    last = r["config"]["steps"]
    windows = [(0, 100), (last // 5 - 50, last // 5 + 50), (last - 100, last)]
    head = [""] + [
        ("steps " if lang == "en" else "pasos ") + f"{num(a, lang)}–{num(b, lang)}" + (" (15/50/85)" if i == 0 else "")
        for i, (a, b) in enumerate(windows)
    ]
    rows = []
    for norm in ("none", "activation"):
        cells = [" / ".join(num(v, lang, 2).replace("-", "−") for v in fig1_window(r, norm, a, b)) for a, b in windows]
        rows.append([_FIG1_RUN[lang][norm], *cells])
    return table(head, rows)


def fig1_first_step(lr: str, norm: str, threshold: float = 0.9) -> int | None:
    """The first evaluation step at which test accuracy reached ``threshold``."""
    r = fig1(lr)
    for step, acc in zip(r["eval"][norm]["step"], r["eval"][norm]["accuracy"], strict=True):
        if acc >= threshold:
            return step
    return None


# ------------------------------------------------------------------------------------------------- demo

_SETTINGS = {
    "en": {
        "relu-adam": "ReLU, Adam, lr 0.003",
        "relu-sgd": "ReLU, plain SGD, lr 1",
        "sigmoid-sgd": "sigmoid, plain SGD, lr 0.5",
    },
    "es": {
        "relu-adam": "ReLU, Adam, tasa 0,003",
        "relu-sgd": "ReLU, SGD simple, tasa 1",
        "sigmoid-sgd": "sigmoide, SGD simple, tasa 0,5",
    },
}


def demo() -> dict:
    return load("demo.json")


# ---------------------------------------------------------------------------------------------- benchmarks


def machine_line(meta: dict, lang: str = "en") -> str:
    """One sentence: where and when a benchmark JSON was measured."""
    m = meta.get("machine", {})
    if lang == "en":
        load_ = m.get("load_note", "")
        return (
            f"Measured on {m.get('date', '?')} with torch {meta.get('torch', '?')}, "
            f"{meta.get('threads', 1)} thread(s), on {m.get('cpu', '?')} ({m.get('cores', '?')} cores). {load_}"
        )
    load_ = m.get("load_note_es", "")
    return (
        f"Medido el {m.get('date', '?')} con torch {meta.get('torch', '?')}, "
        f"{meta.get('threads', 1)} hilo(s), en {m.get('cpu', '?')} ({m.get('cores', '?')} núcleos). {load_}"
    )


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# ------------------------------------------------------------------------------------------ the set-B page


def set_b_page(lang: str = "en", **kwargs) -> str:
    """bnlab's interactive set-B page (``bnlab.explain_page.page_html``), built now, inside an iframe.

    The page is self-contained (no script, style or font from elsewhere), so it travels in ``srcdoc``."""
    import html

    from bnlab.explain_page import page_html

    page = page_html(lang, **kwargs)
    title = {"en": "The interactive set-B page", "es": "La página interactiva del conjunto B"}[lang]
    return (
        f'<iframe class="bnlab-setb" title="{title}" loading="lazy" width="100%" height="760" '
        f'style="border: 1px solid var(--md-default-fg-color--lightest); border-radius: 4px" '
        f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
    )


def fig1_facts(lr: str) -> dict:
    """The numbers the Fig. 1 page states, computed from the committed run."""
    r = fig1(lr)
    last = r["config"]["steps"]
    block = r["block"]
    facts: dict = {"steps": last, "lr": lr, "command": r.get("command", {})}
    for norm in ("none", "activation"):
        first = fig1_window(r, norm, 0, 100)
        end = fig1_window(r, norm, last - 100, last)
        medians = [sum(p[1] for p in r["percentiles"][norm][i : i + 2]) / 2 for i in range(0, last // block, 2)]
        loss = r["loss"][norm]
        facts[norm] = {
            "first90": fig1_first_step(lr, norm),
            "final": r["summary"][norm]["final_test_accuracy"],
            "best": r["summary"][norm]["best_test_accuracy"],
            "start": first,
            "end": end,
            "spread_start": first[2] - first[0],
            "spread_end": end[2] - end[0],
            "median_move": abs(end[1] - first[1]),
            "median_max_abs": max(abs(m) for m in medians),
            "loss_mid": sum(loss[(last // 2 - 100) // block : last // 2 // block]) / (100 // block),
            "loss_end": sum(loss[(last - 100) // block :]) / (100 // block),
            "seconds": r["summary"][norm]["seconds"],
        }
    facts["gap_points"] = 100 * (facts["activation"]["final"] - facts["none"]["final"])
    facts["test_images"] = r["data"]["test"]
    facts["train_images"] = r["data"]["train"]
    return facts
