"""Build-time helpers of the bnlab book: numbers read from bnlab and from shipped results, formatted per language.

mkdocs.yml loads this file as a hook, whose ``on_config`` puts its folder on ``sys.path``; the pages' executed blocks
(markdown-exec) then ``import book``. Nothing here trains or measures: it reads bnlab's own functions, the
reference run shipped in the package and the JSON files committed under ``docs/data/``.
"""

from __future__ import annotations

import json
import math
import re
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


# ---------------------------------------------------------------------------------------------- demo tables

_SETTING_KEYS = {"adam": "relu-adam", "high_lr": "relu-sgd", "sigmoid": "sigmoid-sgd"}


def demo_runs(setting: str, norm: str) -> list[dict]:
    """The demo's runs of one setting and norm, by seed."""
    return sorted((r for r in demo()["runs"] if r["setting"] == setting and r["norm"] == norm), key=lambda r: r["seed"])


def demo_accuracy_table(lang: str = "en") -> str:
    """Test accuracy in eval mode per setting and norm, seed by seed, with the mistakes out of the test images."""
    d = demo()
    head = {"en": "setting", "es": "configuración"}[lang]
    rows = []
    for s in d["settings"]:
        cells = []
        for norm in ("none", "activation", "channel"):
            cells.append(
                " / ".join(f"{pct(r['test_accuracy'], lang)} ({r['errors']})" for r in demo_runs(s["key"], norm))
            )
        rows.append([_SETTINGS[lang][_SETTING_KEYS[s["key"]]], *cells])
    return table([head, *(_NORMS[lang][n] for n in ("none", "activation", "channel"))], rows)


def demo_traineval_table(lang: str = "en") -> str:
    """Train mode (mini-batch statistics) / eval mode with the EMA / eval mode with recalibrated statistics."""
    d = demo()
    head = {"en": ["setting", "run"], "es": ["configuración", "ejecución"]}[lang]
    seeds = [({"en": "seed ", "es": "semilla "}[lang]) + str(s) for s in d["seeds"]]
    rows = []
    for s in d["settings"]:
        for norm in ("activation", "channel"):
            cells = [
                " / ".join(num(100 * r["traineval"][m], lang, 1) for m in ("batch", "ema", "recal"))
                for r in demo_runs(s["key"], norm)
            ]
            rows.append([_SETTINGS[lang][_SETTING_KEYS[s["key"]]], _NORMS[lang][norm], *cells])
    return table([*head, *seeds], rows)


def demo_layers_table(lang: str = "en") -> str:
    d = demo()
    if lang == "en":
        head = [
            "BN layer",
            "input shape",
            "per channel: sets B × values",
            "per activation: sets B × values",
            "γ + β per channel",
            "γ + β per activation",
        ]
    else:
        head = [
            "capa BN",
            "forma de la entrada",
            "por canal: conjuntos B × valores",
            "por activación: conjuntos B × valores",
            "γ + β por canal",
            "γ + β por activación",
        ]
    rows = []
    for layer in d["layers"]:
        c, a = layer["channel"], layer["activation"]
        rows.append(
            [
                f"`{layer['name']}`",
                str(tuple(layer["shape"])),
                f"{num(c['sets'], lang)} × {num(c['size'], lang)}",
                f"{num(a['sets'], lang)} × {num(a['size'], lang)}",
                f"{num(c['params'] // 2, lang)} + {num(c['params'] // 2, lang)}",
                f"{num(a['params'] // 2, lang)} + {num(a['params'] // 2, lang)}",
            ]
        )
    return table(head, rows)


def demo_facts() -> dict:
    """The numbers the demo page's sentences state, from the committed run."""
    d = demo()
    acc = {(r["setting"], r["norm"], r["seed"]): r for r in d["runs"]}
    test = d["data"]["test"]
    f: dict = {"test": test, "point_per_image": 100 / test, "runs": len(d["runs"]), "seeds": d["seeds"]}
    bn = [r for r in d["runs"] if r["norm"] != "none"]
    f["params"] = {n: next(r["params"] for r in d["runs"] if r["norm"] == n) for n in ("none", "activation", "channel")}
    for key in ("adam", "high_lr", "sigmoid"):
        none = [acc[(key, "none", s)]["test_accuracy"] for s in d["seeds"]]
        with_bn = [r["test_accuracy"] for r in bn if r["setting"] == key]
        f[key] = {
            "none": none,
            "bn_min": min(with_bn),
            "bn_max": max(with_bn),
            "bn_beats_all": min(with_bn) > max(none),
        }
        # images between the worst BN run and the best run without BN, and between the two runs without BN
        f[key]["margin_images"] = round((min(with_bn) - max(none)) * test)
        f[key]["none_spread_images"] = round((max(none) - min(none)) * test)
    # per activation vs per channel, averaged over the seeds, in test images: eval with EMA and recalibrated
    gaps_ema, gaps_recal = [], []
    for key in ("adam", "high_lr", "sigmoid"):
        for mode, gaps in (("ema", gaps_ema), ("recal", gaps_recal)):
            mean = {
                n: sum(acc[(key, n, s)]["traineval"][mode] for s in d["seeds"]) / len(d["seeds"])
                for n in ("activation", "channel")
            }
            gaps.append(abs(mean["activation"] - mean["channel"]) * test)
    f["gap_ema_images"], f["gap_recal_images"] = max(gaps_ema), max(gaps_recal)
    worst = min(bn, key=lambda r: r["traineval"]["ema"])
    f["worst_ema"] = worst
    diffs = [(r["traineval"]["recal"] - r["traineval"]["ema"]) * test for r in bn]
    f["recal_worse_max_images"] = max(0, -min(diffs))
    f["recal_gain_max_images"] = max(diffs)
    f["recal_better"] = sum(x > 0.5 for x in diffs)
    f["recal_worse"] = sum(x < -0.5 for x in diffs)
    f["bn_runs"] = len(bn)
    f["wall"] = d["wall"]
    f["timings"] = d["timings"]
    f["date"] = d["date"]
    return f


def setting_name(key: str, lang: str = "en") -> str:
    """The demo setting ``key`` (adam, high_lr, sigmoid) in words."""
    return _SETTINGS[lang][_SETTING_KEYS[key]]


def norm_name(norm: str, lang: str = "en") -> str:
    return _NORMS[lang][norm]


# ------------------------------------------------------------------------------------------ benchmark tables


def bench_machine(meta: dict, lang: str = "en") -> str:
    """Where and when a benchmark JSON was measured, and whether the machine was busy: the load average against
    the CPUs, beyond the processes the benchmark itself runs (``nproc``: benchmarks/distributed.py's ranks)."""
    load = meta.get("loadavg") or [0.0]
    cpus = meta.get("cpus") or 1
    busy = load[0] > 0.5 * cpus + (meta.get("nproc") or 1) - 1
    if lang == "en":
        s = (
            f"Measured {meta['date']} on {meta['cpu_model'] or 'an unnamed CPU'} ({cpus} CPUs), torch {meta['torch']}; "
            f"load average {load[0]:.1f} when the run ended"
        )
        return s + (
            f": **the machine was shared** with other work ({cpus} CPUs), so every time is longer than on an idle "
            "machine and the ratios are pulled toward 1 by the waiting both sides share. Re-run before quoting."
            if busy
            else " (an idle machine)."
        )
    s = (
        f"Medido el {meta['date']} en {meta['cpu_model'] or 'una CPU sin nombre'} ({cpus} CPU), torch {meta['torch']}; "
        f"carga media de {num(load[0], 'es', 1)} al terminar"
    )
    return s + (
        f": **la máquina estaba compartida** con otro trabajo ({cpus} CPU), así que todos los tiempos son más largos "
        "que en una máquina libre y las razones se acercan a 1 por las esperas que comparten los dos lados. Vuelve a "
        "medir antes de citarlas."
        if busy
        else " (una máquina libre)."
    )


def cpu_table(lang: str = "en") -> str:
    """benchmarks/cpu.py --json: one row per case and shape."""
    d = load("cpu.json")
    if lang == "en":
        head = [
            "case",
            "shape",
            "torch ms",
            "bnlab ms",
            "bnlab ÷ torch",
            "÷ of the medians",
            "÷ of the minima",
            "page faults per call (torch, bnlab)",
            "torch.compile ms",
            "compile s",
        ]
    else:
        head = [
            "caso",
            "forma",
            "torch ms",
            "bnlab ms",
            "bnlab ÷ torch",
            "÷ de las medianas",
            "÷ de los mínimos",
            "fallos de página por llamada (torch, bnlab)",
            "torch.compile ms",
            "compilación s",
        ]
    threads = "threads" if lang == "en" else "hilos"
    pure = any("pure_ms" in r for r in d["rows"])  # bnlab with its compiled family switched off
    if pure:
        head[7:7] = ["pure ms", "pure ÷ torch"] if lang == "en" else ["pura ms", "pura ÷ torch"]
    rows = []
    for r in d["rows"]:
        comp = r.get("compiled_ms")
        rows.append(
            [
                r["case"],
                "×".join(map(str, r["shape"])) + ("" if r["threads"] == 1 else f" ({r['threads']} {threads})"),
                num(r["native_ms"], lang, 2),
                num(r["bnlab_ms"], lang, 2),
                f"**{num(r['ratio'], lang, 2)}**",
                num(r["ratio_median"], lang, 2) if "ratio_median" in r else "",
                num(r["ratio_min"], lang, 2) if "ratio_min" in r else "",
                *([num(r["pure_ms"], lang, 2), num(r["pure_ratio"], lang, 2)] if "pure_ms" in r else ["", ""])[
                    : 2 if pure else 0
                ],
                ", ".join(num(x, lang) for x in r["faults_per_call"]),
                num(comp, lang, 2) if comp is not None else "",
                num(r["compile_s"], lang, 1) if comp else "",
            ]
        )
    return table(head, rows)


def cpu_summary(lang: str = "en") -> str:
    """The 1-thread rows of benchmarks/cpu.py --json in words: each case's range of bnlab ÷ torch over the
    shapes (the pure family's in brackets), then every row where bnlab is still slower than torch."""
    d = load("cpu.json")
    rows = [r for r in d["rows"] if r["threads"] == 1 and not r["case"].startswith("ref")]
    shape = lambda r: "×".join(map(str, r["shape"]))  # noqa: E731
    rng = lambda xs: f"{num(min(xs), lang, 2)}–{num(max(xs), lang, 2)}"  # noqa: E731
    parts = []
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = [r for r in rows if r["case"] == case]
        pure = [r["pure_ratio"] for r in rs if "pure_ratio" in r]
        shapes = "" if len(rs) > 1 else (f" ({shape(rs[0])})")
        parts.append(f"{case}{shapes} {rng([r['ratio'] for r in rs])}" + (f" ({rng(pure)})" if pure else ""))
    slower = [f"{r['case']} {shape(r)} ({num(r['ratio'], lang, 2)})" for r in rows if r["ratio"] > 1]
    # the other statistic of the same calls (median where the table shows minima, and the reverse)
    other = "ratio_median" if d["stat"] == "min" else "ratio_min"
    by_other = [f"{r['case']} {shape(r)} ({num(r[other], lang, 2)})" for r in rows if r.get(other, 0) > 1]
    if lang == "en":
        text = (f"At 1 thread, bnlab ÷ torch over the shapes of the table ({d['stat']} of {d['repeats']} turns; the "
                f"pure family in brackets): " + "; ".join(parts) + ". ")
        text += ("Still slower than torch: " + "; ".join(slower) + ".") if slower else "No row is slower than torch."
        if any(other in r for r in rows):
            name = "medians" if other == "ratio_median" else "minima"
            text += (f" By the ratio of the {name} of the same calls: " + ("; ".join(by_other) + " slower."
                     if by_other else "no row slower either."))  # fmt: skip
    else:
        stat = {"median": "mediana", "min": "mínimo"}.get(d["stat"], d["stat"])
        text = (f"Con 1 hilo, bnlab ÷ torch en las formas de la tabla ({stat} de {d['repeats']} turnos; entre "
                f"paréntesis, la familia pura): " + "; ".join(parts) + ". ")
        text += ("Sigue siendo más lento que torch: " + "; ".join(slower) + ".") if slower else \
            "Ninguna fila es más lenta que torch."
        if any(other in r for r in rows):
            name = "las medianas" if other == "ratio_median" else "los mínimos"
            text += (f" Por el cociente de {name} de las mismas llamadas: " + ("; ".join(by_other) + ", más lentos."
                     if by_other else "ninguna fila más lenta tampoco."))  # fmt: skip
    return text


def cpu_meta() -> dict:
    return load("cpu.json")


def compiled_table(lang: str = "en") -> str:
    """benchmarks/compiled.py --json: median step time of each variant, ratio to torch compiled, first step."""
    d = load("compiled.json")
    names = {
        "en": {"nchw": "NCHW", "channels_last": "channels_last"},
        "es": {"nchw": "NCHW", "channels_last": "channels_last"},
    }
    if lang == "en":
        head = ["layout", "variant", "median step ms", "÷ torch compiled", "first step s (compiles)"]
    else:
        head = ["disposición", "variante", "mediana del paso ms", "÷ torch compilado", "primer paso s (compila)"]
    rows = []
    for layout, res in d["results"].items():
        for variant, r in res.items():
            rows.append(
                [
                    names[lang].get(layout, layout),
                    variant,
                    num(r["median_ms"], lang, 1),
                    f"**{num(r['ratio'], lang, 2)}**",
                    num(r["first_step_s"], lang, 1),
                ]
            )
    return table(head, rows)


def compiled_meta() -> dict:
    return load("compiled.json")


def compiled_spread(lang: str = "en") -> str:
    """The spread of benchmarks/compiled.py's ratios over its rounds (``--rounds``), and whether the target
    (bnlab compiled ≤ torch compiled in every layout, and faster than bnlab eager) held in each round."""
    d = load("compiled.json")
    res = d["results"]
    if not all(res[layout]["bnlab compiled"].get("rounds") for layout in res):
        return ""
    names = {"nchw": "NCHW", "channels_last": "channels_last"}

    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return num(lo, lang, 2) if f"{lo:.2f}" == f"{hi:.2f}" else f"{num(lo, lang, 2)}–{num(hi, lang, 2)}"

    vs_torch, vs_cpu, vs_eager, met = [], [], [], None
    for layout, r in res.items():
        compiled, eager = r["bnlab compiled"]["rounds"], r["bnlab eager"]["rounds"]
        ratios = [c["ratio"] for c in compiled]
        to_eager = [c["ratio"] / e["ratio"] for c, e in zip(compiled, eager, strict=True)]
        vs_torch.append((names.get(layout, layout), span(ratios)))
        vs_cpu.append(span([c["cpu_ratio"] for c in compiled]))
        vs_eager.append((names.get(layout, layout), span(to_eager)))
        ok = [a <= 1.0 and b < 1.0 for a, b in zip(ratios, to_eager, strict=True)]
        met = ok if met is None else [a and b for a, b in zip(met, ok, strict=True)]
    rounds = len(met)
    verdict = "all" if all(met) else ("none" if not any(met) else "some")
    pairs = list(zip(vs_torch, vs_cpu, strict=True))
    if lang == "en":
        parts = "; ".join(f"{span_} in {name} (CPU time {cpu})" for (name, span_), cpu in pairs)
        eager = " and ".join(f"{span_} ({name})" for name, span_ in vs_eager)
        held = {
            "all": "held in every round",
            "none": "held in no round",
            "some": "held in some rounds, not in others",
        }
        return (
            f"Over this run's {rounds} rounds of {d['steps']} steps, bnlab compiled ÷ torch compiled was {parts}, "
            f"and bnlab compiled ÷ bnlab eager {eager}. The target (≤ 1.0 in both layouts, compiled faster than "
            f"eager) {held[verdict]}."
        )
    parts = "; ".join(f"{span_} en {name} (tiempo de CPU {cpu})" for (name, span_), cpu in pairs)
    eager = " y ".join(f"{span_} ({name})" for name, span_ in vs_eager)
    held = {
        "all": "se cumplió en todas las rondas",
        "none": "no se cumplió en ninguna ronda",
        "some": "se cumplió en unas rondas y en otras no",
    }
    return (
        f"En las {rounds} rondas de {d['steps']} pasos de esta ejecución, bnlab compilado ÷ torch compilado fue "
        f"{parts}, y bnlab compilado ÷ bnlab sin compilar, {eager}. El objetivo (≤ 1,0 en las dos disposiciones, "
        f"compilado más rápido que sin compilar) {held[verdict]}."
    )


def distributed_table(lang: str = "en") -> str:
    """benchmarks/distributed.py --json: synchronized ÷ per-process BN, forward + backward, per layout and shard,
    and synchronized ÷ torch's per-process BN."""
    d = load("distributed.json")
    if lang == "en":
        head = ["layout", "global shape", "MB per process", "local ms", "sync ms", "sync ÷ local",
                "CPU time, sync ÷ local", "page faults per call (local, sync)", "torch local ms",
                "sync ÷ torch local"]  # fmt: skip
    else:
        head = ["disposición", "forma global", "MB por proceso", "local ms", "sincronizada ms",
                "sincronizada ÷ local", "tiempo de CPU, sincronizada ÷ local",
                "fallos de página por llamada (local, sincronizada)", "torch local ms",
                "sincronizada ÷ torch local"]  # fmt: skip
    rows = [
        [r["layout"], "×".join(map(str, r["shape"])), num(r["mb_per_rank"], lang, 1), num(r["local_ms"], lang, 2),
         num(r["sync_ms"], lang, 2), f"**{num(r['ratio'], lang, 2)}**", num(r["cpu_ratio"], lang, 2),
         ", ".join(num(x, lang) for x in r["faults_per_call"]), num(r["torch_ms"], lang, 2),
         num(r["ratio_torch"], lang, 2)]  # fmt: skip
        for r in d["rows"]
    ]
    return table(head, rows)


def distributed_meta() -> dict:
    return load("distributed.json")


def distributed_spread(lang: str = "en") -> str:
    """The range of sync ÷ local (wall and rank 0's CPU time) per layout and shard size over every shipped run of
    benchmarks/distributed.py (docs/data/distributed_runs.json)."""
    runs = load("distributed_runs.json")["runs"]
    groups: dict = {}
    for run in runs:
        for r in run["rows"]:
            key = (r["layout"], round(r["mb_per_rank"]))
            groups.setdefault(key, []).append(r)

    def span(xs):
        return f"{num(min(xs), lang, 2)}–{num(max(xs), lang, 2)}"

    parts = []
    for (layout, mb), rs in groups.items():
        wall, cpu = span([r["ratio"] for r in rs]), span([r["cpu_ratio"] for r in rs])
        faults = [f for r in rs for f in r["faults_per_call"]]
        lo, hi = num(min(faults), lang), num(max(faults), lang)
        faults_text = lo if lo == hi else f"{lo}–{hi}"
        anchored = [r["ratio_torch"] for r in rs if "ratio_torch" in r]  # (runs before the torch column: none)
        if lang == "en":
            vs_torch = f"; sync ÷ torch local {span(anchored)}" if anchored else ""
            parts.append(f"{layout} {mb} MB {wall} (CPU time {cpu}; page faults per call {faults_text}{vs_torch})")
        else:
            vs_torch = f"; sincronizada ÷ torch local {span(anchored)}" if anchored else ""
            parts.append(f"{layout} {mb} MB {wall} (tiempo de CPU {cpu}; fallos de página por llamada {faults_text}"
                         f"{vs_torch})")  # fmt: skip
    if lang == "en":
        return f"Over the {len(runs)} runs in `docs/data/distributed_runs.json`, sync ÷ local was: " + \
            "; ".join(parts) + "."
    return f"En las {len(runs)} ejecuciones de `docs/data/distributed_runs.json`, sincronizada ÷ local fue: " + \
        "; ".join(parts) + "."


# ------------------------------------------------------------------------------------ pages opened from disk

_ALTERNATE = re.compile(r'\s*<link rel="alternate" href="[^"]*" hreflang="[^"]*">')


def on_post_page(output: str, **kwargs) -> str:
    """MkDocs hook: no ``<link rel="alternate" hreflang>`` in the head. Material's script fetches the other
    language's sitemap.xml for each of them, which a page opened from disk (file://) is not allowed to do (a
    console error on every page); the language switch in the header links to the other language all the same."""
    return _ALTERNATE.sub("", output)


# ---------------------------------------------------------------------------------------------- changelog

CHANGELOG_MARK = "<!-- CHANGELOG.md -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    """MkDocs hook: the changelog pages show the repository's CHANGELOG.md (one file, never copied).

    Its links into docs/ are made relative to the site's pages; a page that has its own title drops the
    file's first heading."""
    if CHANGELOG_MARK not in markdown:
        return markdown
    text = (HERE.parents[1] / "CHANGELOG.md").read_text(encoding="utf-8").replace("](docs/", "](")
    if markdown.lstrip().startswith("# "):
        text = text.split("\n", 1)[1]
    return markdown.replace(CHANGELOG_MARK, text)
