"""The demo report page: results (from :func:`bnlab.report.demo.run_demo`) → ``index.html``.

One self-contained HTML file with relative links to its figures and ``results.json``; every word comes
from :mod:`bnlab.report.strings` in the report's language.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..io import write_text
from .strings import NORM_NAMES, S, integer, num, pct, secs

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 62rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }
h1 { font-size: 1.7rem; line-height: 1.25; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
.muted { color: #666; font-size: 0.9rem; } code { background: #f3f3f3; padding: 0 0.2rem; }
.none { color: #5f5f5f; } .activation { color: #b8610f; } .channel { color: #1f55b0; }
.tw { overflow-x: auto; max-width: 100%; } .look { font-size: 0.92rem; margin-top: -0.4rem; color: #333; }
.look::before { content: "→ "; } ul.notes { font-size: 0.92rem; color: #333; }
@media (max-width: 600px) {
  body { margin: 1rem auto; padding: 0 0.5rem; } h1 { font-size: 1.35rem; }
  table { font-size: 0.78rem; } th, td { padding: 0.2rem 0.3rem; }
}
"""

NORMS = ("none", "activation", "channel")


def _e(s) -> str:
    return html.escape(str(s))


def _table(head: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Cells are HTML already; the first ``left`` columns are left-aligned."""
    th = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(src: str, caption: str) -> str:
    img = f'<a href="{_e(src)}"><img src="{_e(src)}" alt="{_e(caption)}"></a>'
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def _norm(norm: str, lang: str) -> str:
    return f'<span class="{norm}">{_e(NORM_NAMES[lang][norm])}</span>'


def _count(x: float, lang: str) -> str:
    """A number of test images: an integer, or a mean over seeds with one decimal."""
    return str(int(x)) if float(x).is_integer() else num(x, lang, 1)


def _acc_over_seeds(runs: list[dict], lang: str) -> str:
    accs = [r["test"]["accuracy"] for r in runs]
    if len(accs) == 1:
        return pct(accs[0], lang)
    each = ", ".join(pct(a, lang) for a in accs)
    return S[lang]["mean_range"].format(mean=pct(float(np.mean(accs)), lang), each=each)


def _correct(run: dict, n_test: int, key: str | None = None) -> int:
    """Test images right: from ``errors`` (EMA), or from a traineval accuracy (``key`` = batch/ema/recal)."""
    if key is None:
        return n_test - run["errors"]
    return round(run["traineval"][key]["accuracy"] * n_test)


def setting_claim(results: dict, key: str) -> dict | None:
    """What the numbers say about BN in one setting, with the numbers that say it.

    ``kind`` is ``not_learned`` (no seed without BN above 20%), ``same`` (the three means over seeds within 3
    test images), ``helps`` (every BN run, both variants, every seed, above every run without BN), ``worse``
    (every BN run below every run without BN) or ``unclear`` (anything else: the seeds overlap).
    """
    n_test = results["data"]["test"]
    by_norm = {n: [r for r in results["runs"] if r["setting"] == key and r["norm"] == n] for n in NORMS}
    if not all(by_norm.values()):
        return None
    correct = {n: [_correct(r, n_test) for r in rs] for n, rs in by_norm.items()}
    mean = {n: float(np.mean(c)) for n, c in correct.items()}
    bn = correct["activation"] + correct["channel"]
    best_bn_mean = max(mean["activation"], mean["channel"])
    claim = {
        "setting": key,
        "mean_correct": mean,
        "correct": correct,
        "diff": round(best_bn_mean - mean["none"], 1),
        "span": round(max(mean.values()) - min(mean.values()), 1),
        "none_spread": max(correct["none"]) - min(correct["none"]),
        "worst_bn": min(bn),
        "best_bn": max(bn),
        "best_none": max(correct["none"]),
        "worst_none": min(correct["none"]),
    }
    if max(r["test"]["accuracy"] for r in by_norm["none"]) < 0.2:
        claim["kind"] = "not_learned"
    elif claim["span"] <= 3:
        claim["kind"] = "same"
    elif min(bn) > max(correct["none"]):
        claim["kind"] = "helps"
    elif max(bn) < min(correct["none"]):
        claim["kind"] = "worse"
    else:
        claim["kind"] = "unclear"
    return claim


def _claims(results: dict, settings, lang: str) -> list[tuple[dict, str]]:
    """(claim, sentence) for each setting, the sentence written from the claim's numbers."""
    t = S[lang]
    n_test = results["data"]["test"]
    out = []
    for setting in settings:
        c = setting_claim(results, setting.key)
        if c is None:
            continue
        rs = {n: [r for r in results["runs"] if r["setting"] == setting.key and r["norm"] == n] for n in NORMS}
        acc = {n: _acc_over_seeds(v, lang) for n, v in rs.items()}
        args = dict(setting=_e(setting.title(lang)), none=acc["none"], act=acc["activation"], chan=acc["channel"])
        kind = c["kind"]
        if kind == "not_learned":
            text = t["obs_not_learned"].format(epochs=results["epochs"], acc=acc["none"], **args)
        elif kind == "same":
            text = t["obs_bn_same"].format(diff=_count(c["span"], lang), **args)
        elif kind == "helps":
            text = t["obs_bn_helps"].format(worst_bn=pct(c["worst_bn"] / n_test, lang),
                                            best_none=pct(c["best_none"] / n_test, lang), **args)  # fmt: skip
        elif kind == "worse":
            text = t["obs_bn_worse"].format(best_bn=pct(c["best_bn"] / n_test, lang),
                                            worst_none=pct(c["worst_none"] / n_test, lang), **args)  # fmt: skip
        else:
            text = t["obs_bn_unclear"].format(diff=_count(c["diff"], lang), spread=c["none_spread"], test=n_test,
                                              **args)  # fmt: skip
        out.append((c, text))
    return out


def _observations(results: dict, settings, lang: str) -> list[tuple[str, str]]:
    """What happened, in words, computed from the numbers: (data-claim tag, sentence)."""
    t = S[lang]
    n_test = results["data"]["test"]
    out = [(f"setting:{c['setting']}:{c['kind']}", text) for c, text in _claims(results, settings, lang)]
    variant_gap = variant_gap_recal = 0.0
    for setting in settings:
        rs = {n: [r for r in results["runs"] if r["setting"] == setting.key and r["norm"] == n] for n in NORMS}
        if not rs["activation"] or not rs["channel"]:
            continue
        mean = {n: float(np.mean([_correct(r, n_test) for r in rs[n]])) for n in ("activation", "channel")}
        variant_gap = max(variant_gap, round(abs(mean["activation"] - mean["channel"]), 1))
        if all(r["traineval"]["recal"] for n in ("activation", "channel") for r in rs[n]):
            recal = {
                n: float(np.mean([_correct(r, n_test, "recal") for r in rs[n]])) for n in ("activation", "channel")
            }
            variant_gap_recal = max(variant_gap_recal, round(abs(recal["activation"] - recal["channel"]), 1))
    for r in results["runs"]:
        te = r["traineval"]
        if te and te["recal"] is not None:
            if abs(_correct(r, n_test, "ema") - _correct(r, n_test, "recal")) >= 3:
                title = next(s.title(lang) for s in settings if s.key == r["setting"])
                text = t["obs_ema"].format(setting=_e(title), run=_norm(r["norm"], lang), seed=r["seed"],
                                           ema=pct(te["ema"]["accuracy"], lang),
                                           recal=pct(te["recal"]["accuracy"], lang))  # fmt: skip
                out.append((f"ema:{r['setting']}:{r['norm']}:{r['seed']}", text))
    first = {r["norm"]: r for r in results["runs"]}
    if "activation" in first and "channel" in first:
        text = t["obs_variants"].format(
            diff=_count(variant_gap, lang),
            diff_recal=_count(variant_gap_recal, lang),
            pa=integer(first["activation"]["params"]["bn"], lang),
            pc=integer(first["channel"]["params"]["bn"], lang),
            m=results["batch_size"],
            mpq=integer(max(layer["channel"]["size"] for layer in results["layers"]), lang),
        )
        out.append(("variants", text))
    return out


def percentile_summary(h: dict) -> dict:
    """Over the watched unit's history: the median's move over the second half of training, the 15–85
    spread over the first and the last steps (means over 5% of the steps), and the final 85th percentile."""
    p15, p50, p85 = (np.asarray(h[k], dtype=np.float64) for k in ("p15", "p50", "p85"))
    n = len(p50)
    k = max(1, n // 20)
    mid = float(np.mean(p50[n // 2 - k // 2 : n // 2 - k // 2 + k]))
    end = float(np.mean(p50[-k:]))
    return {
        "drift": abs(end - mid),
        "spread_start": float(np.mean(p85[:k] - p15[:k])),
        "spread_end": float(np.mean(p85[-k:] - p15[-k:])),
        "p85_end": float(np.mean(p85[-k:])),
    }


def _drift(h: dict) -> tuple[float, float]:
    s = percentile_summary(h)
    return s["drift"], s["spread_end"]


def _wrap_table(table: str) -> str:
    return f'<div class="tw">{table}</div>'


def _small_batch_section(results: dict, figs: dict, lang: str) -> tuple[list[str], dict | None]:
    """The small mini-batch experiment, from the run the user made or the reference run (see small_batch)."""
    from .small_batch import findings

    t = S[lang]
    sb = results.get("small_batch")
    if not sb:
        return [], None
    cfg, summary = sb["config"], sb["summary"]
    ms = cfg["batch_sizes"]
    m_min, m_max = min(ms), max(ms)
    norms = [n for n in cfg["norms"] if n in summary]
    source = (t["smallbatch_source_user"].format(path=_e(sb["path"]), date=_e(sb["date"])) if sb["source"] == "user"
              else t["smallbatch_source_ref"].format(date=_e(sb["date"])))  # fmt: skip
    parts = [
        "<p>"
        + t["smallbatch_intro"].format(
            m=results["batch_size"],
            m_min=m_min,
            m_max=m_max,
            samples=integer(cfg["samples"], lang),
            n_seeds=len(cfg["seeds"]),
            source=source,
        )  # fmt: skip
        + "</p>"
    ]
    if figs.get("small_batch"):
        parts.append(_figure(figs["small_batch"], _e(t["smallbatch_fig"])))
        parts.append(f'<p class="look">{_e(t["smallbatch_look"])}</p>')

    def g(x: float) -> str:  # a learning rate as written: 0.00625, 0.2
        return f"{x:g}".replace(".", "," if lang == "es" else ".")

    lr32 = cfg["lr32"]
    if str(cfg.get("optimizer", "")).startswith("Adam"):  # the square-root rule (small_batch.adam_rule)
        from ..i18n import t as tr

        def g4(x: float) -> str:  # four significant digits: 0.0005, 0.002828
            return g(float(f"{x:.4g}"))

        lr_line = _e(tr("report.small_batch_lr", lang, lr32=g(lr32), m_min=m_min, m_max=m_max,
                        lr_min=g4(lr32 * math.sqrt(m_min / 32)), lr_max=g4(lr32 * math.sqrt(m_max / 32))))  # fmt: skip
    else:  # a run of the earlier protocol: SGD with momentum and the linear rule
        lr_line = t["smallbatch_lr"].format(
            lr32=g(lr32), m_min=m_min, m_max=m_max, lr_min=g(lr32 * m_min / 32), lr_max=g(lr32 * m_max / 32)
        )
    parts.append('<p data-claim="smallbatch:lr">' + lr_line + "</p>")
    head = [t["col_member"]] + [f"m = {m}" for m in ms]
    rows = []
    for n in norms:
        row = [_norm(n, lang)]
        for m in ms:
            v = summary[n][str(m)]
            row.append(f"{pct(v['mean'], lang)} ({pct(v['min'], lang)}–{pct(v['max'], lang)})")
        rows.append(row)
    parts.append(_wrap_table(_table(head, rows)))
    parts.append(f'<p class="muted">{_e(t["smallbatch_table_note"].format(n_seeds=len(cfg["seeds"])))}</p>')
    parts.append("<ul>")
    for n in norms:
        lo, hi = summary[n][str(m_min)]["min"], summary[n][str(m_min)]["max"]
        line = t["smallbatch_row"].format(run=_norm(n, lang), small=pct(summary[n][str(m_min)]["mean"], lang),
                                          large=pct(summary[n][str(m_max)]["mean"], lang), m_min=m_min, m_max=m_max,
                                          lo=pct(lo, lang), hi=pct(hi, lang))  # fmt: skip
        parts.append(f'<li data-claim="smallbatch:{n}">{line}</li>')
    parts.append("</ul>")
    first = next(iter(sb["set_sizes"][str(m_min)]), None)
    if first:
        parts.append("<p>" + t["smallbatch_setb"].format(m_min=m_min, mpq=integer(first["channel"], lang)) + "</p>")
    f = findings(summary, ms, sb.get("summary_ema"))
    at = {n: summary[n][str(m_min)] for n in norms}

    def rng(n: str) -> str:
        return f"{pct(at[n]['mean'], lang)} ({pct(at[n]['min'], lang)}–{pct(at[n]['max'], lang)})"

    if f["channel-conv"] and f["channel-ln"]:
        parts.append('<p data-claim="smallbatch:ablation">' + t["smallbatch_ablation"].format(
            m_min=m_min, conv=rng("channel-conv"), ln=rng("channel-ln"), channel=rng("channel"))
            + " " + t[f"smallbatch_ablation_ln_{f['channel-ln']}"].format(m_min=m_min)
            + " " + t[f"smallbatch_ablation_conv_{f['channel-conv']}"] + "</p>")  # fmt: skip
    advice = [t["smallbatch_best"].format(m_min=m_min, run=_norm(f["best"], lang), acc=pct(f["best_mean"], lang),
                                          lo=pct(f["best_min"], lang), hi=pct(f["best_max"], lang))]  # fmt: skip
    if f["holds_from"] is not None:
        advice.append(t["smallbatch_holds"].format(m=f["holds_from"], m_max=m_max, lo=pct(f["holds_lo"], lang),
                                                   hi=pct(f["holds_hi"], lang)))  # fmt: skip
    if f["renorm"]:
        advice.append(t[f"smallbatch_renorm_{f['renorm']}"].format(m_min=m_min, renorm=rng("renorm"),
                                                                    channel=rng("channel")))  # fmt: skip
    if f["renorm_gap_m"] is not None:
        m_gap = str(f["renorm_gap_m"])
        key = "smallbatch_renorm_ema" if f["renorm_gap"] >= 0.02 else "smallbatch_renorm_ema_close"
        advice.append(t[key].format(m=m_gap, ema=pct(sb["summary_ema"]["renorm"][m_gap]["mean"], lang),
                                    recal=pct(summary["renorm"][m_gap]["mean"], lang)))  # fmt: skip
    if f["group_dev"] is not None:
        key = "smallbatch_group_flat" if f["group_dev"] <= 0.01 else "smallbatch_group_varies"
        advice.append(t[key].format(avg=pct(f["group_avg"], lang), dev=num(100 * f["group_dev"], lang, 1),
                                    m_min=m_min, m_max=m_max))  # fmt: skip
    parts.append('<p data-claim="smallbatch:advice">' + " ".join(advice) + "</p>")
    parts.append(f"<p>{t['smallbatch_why']}</p>")
    return parts, {"source": source, "m_min": m_min, "m_max": m_max}


def render(results: dict, settings) -> str:
    lang = results["lang"]
    t = S[lang]
    data, runs, figs = results["data"], results["runs"], results["figures"]
    m = results["batch_size"]
    steps = runs[0]["steps"] if runs else 0
    titles = {s.key: s.title(lang) for s in settings}
    activation_of = {s.key: s.activation for s in settings}
    parts: list[str] = []
    add = parts.append
    sb_parts, sb_info = _small_batch_section(results, figs, lang)

    sections = [
        ("setup", "sec_setup"),
        ("questions", "sec_questions"),
        ("setb", "sec_setb"),
        ("summary", "sec_summary"),
        ("curves", "sec_curves"),
        ("percentiles", "sec_percentiles"),
        ("params", "sec_params"),
        ("traineval", "sec_traineval"),
        *([("smallbatch", "sec_smallbatch")] if sb_parts else []),
        ("conclusion", "sec_conclusion"),
        ("reproduce", "sec_reproduce"),
        ("timings", "sec_timings"),
    ]
    add(f"<h1>{_e(t['title'])}</h1>")
    add(f"<p>{t['lead'].format(n_settings=len(settings))}</p>")
    add(
        '<p class="muted">'
        + t["generated"].format(
            command=_e(results["command"]),
            total=secs(results["timings"]["total"], lang),
            date=_e(results["date"]),
            version=_e(__version__),
            torch=_e(torch.__version__),
        )
        + "</p>"
    )
    add(f"<nav><strong>{t['toc']}</strong><ol>")
    for anchor, key in sections:
        add(f'<li><a href="#{anchor}">{_e(t[key])}</a></li>')
    add("</ol></nav>")

    # -- setup, and the words the page uses (defined before they are used)
    add(f'<h2 id="setup">{_e(t["sec_setup"])}</h2>')
    one_test = pct(1 / data["test"], lang, 2)
    add("<p>" + t["setup_data"].format(train=data["train"], val=data["val"], test=data["test"],
                                       seed=results["seeds"][0], one_test=one_test) + "</p>")  # fmt: skip
    add("<p>" + t["setup_net"].format(m=m, epochs=results["epochs"], steps=steps) + "</p>")
    add(f"<p>{t['setup_settings']}</p><ul>")
    for s in settings:
        add(f"<li><strong>{_e(s.title(lang))}</strong>: {_e(s.why(lang))}</li>")
    add("</ul>")
    add(f"<h3>{_e(t['sec_words'])}</h3><ul>")
    for key in ("word_example", "word_setb", "word_modes", "word_ema", "word_recal"):
        add(f"<li>{t[key].format(m=m)}</li>")
    add("</ul>")

    # -- the learner's four questions, for the first conv BN layer
    add(f'<h2 id="questions">{_e(t["sec_questions"])}</h2>')
    conv = next((layer for layer in results["layers"] if layer["layout"] == "NCHW"), None)
    if conv is not None:
        n_, c_, h_, w_ = conv["shape"]
        q = dict(
            layer=_e(conv["name"]),
            m=n_,
            c=c_,
            h=h_,
            w=w_,
            hw=integer(h_ * w_, lang),
            mpq=integer(conv["channel"]["size"], lang),
            acts=integer(conv["activation"]["sets"], lang),
        )
        add(f'<p id="q1">{t["q1"].format(**q)}</p>')
        add(f'<p id="q2">{t["q2"].format(**q)}</p>')
        add(f'<p id="q3">{t["q3"]}</p>')
        if figs.get("filter"):
            add(_figure(figs["filter"], _e(t["q3_fig"])))
            add(f'<p class="look">{_e(t["q3_look"])}</p>')
        add(f'<p id="q4">{t["q4"].format(**q)}</p>')

    # -- set B
    add(f'<h2 id="setb">{_e(t["sec_setb"])}</h2>')
    add("<p>" + t["setb_intro"].format(m=m) + "</p>")
    rows = []
    for layer in results["layers"]:
        c, a = layer["channel"], layer["activation"]
        rows.append(
            [
                f"<code>{_e(layer['name'])}</code>",
                _e(tuple(layer["shape"])),
                f"{integer(c['sets'], lang)} × {integer(c['size'], lang)}",
                f"{integer(a['sets'], lang)} × {integer(a['size'], lang)}",
                f"{integer(c['params'] // 2, lang)} + {integer(c['params'] // 2, lang)}",
                f"{integer(a['params'] // 2, lang)} + {integer(a['params'] // 2, lang)}",
            ]
        )
    head = [t[k] for k in ("col_layer", "col_input", "col_per_channel", "col_per_activation", "col_params_channel",
                           "col_params_activation")]  # fmt: skip
    add(_wrap_table(_table(head, rows)))
    add(f"<p>{_e(t['setb_fc'])}</p>")
    add(f'<p class="look"><a href="{EXPLAINER}">{_e(t["setb_page"])}</a></p>')
    for layer in results["layers"]:
        src = figs["setb"].get(layer["name"])
        if src:
            add(_figure(src, _e(t["setb_fig"].format(layer=layer["name"]))))
            add(f'<p class="look">{_e(t["setb_fig_look"])}</p>')
        shape = ",".join(str(d) for d in layer["shape"])
        if layer["layout"] == "NCHW":
            summary = t["setb_text"].format(layer=_e(layer["name"]), shape=_e(shape))
            add(f"<details><summary>{summary}</summary><pre>{_e(layer['text'])}</pre></details>")

    # -- results
    add(f'<h2 id="summary">{_e(t["sec_summary"])}</h2>')
    seeds = results["seeds"]
    intro = t["summary_intro"].format(test=data["test"], n_seeds=len(seeds), seeds=", ".join(map(str, seeds)))
    add(f"<p>{intro}</p>")
    rows = []
    for s in settings:
        row = [_e(titles[s.key])]
        for norm in NORMS:
            cell = [
                f"{pct(r['test']['accuracy'], lang)} ({r['errors']})"
                for r in runs
                if r["setting"] == s.key and r["norm"] == norm
            ]
            row.append("<br>".join(cell) or "–")
        rows.append(row)
    head = [t["col_setting"]] + [f"{_norm(n, lang)}<br>{t['col_test_acc']} ({t['col_errors']})" for n in NORMS]
    add(_wrap_table(_table(head, rows)))
    add(f"<h3>{_e(t['observations'])}</h3><ul>")
    observations = _observations(results, settings, lang)
    for tag, line in observations:
        add(f'<li data-claim="{_e(tag)}">{line}</li>')
    add("</ul>")
    rows = []
    for r in runs:
        rows.append(
            [
                _e(titles[r["setting"]]),
                _norm(r["norm"], lang),
                str(r["seed"]),
                pct(r["test"]["accuracy"], lang),
                num(r["test"]["loss"], lang, 3),
                str(r["errors"]),
                pct(r["val_accuracy"], lang),
                num(r["train_loss"], lang, 3),
                secs(r["train_seconds"], lang),
            ]
        )
    head = [t[k] for k in ("col_setting", "col_run", "col_seed", "col_test_acc", "col_test_loss", "col_errors",
                           "col_val_acc", "col_train_loss", "col_time")]  # fmt: skip
    add(f"<details><summary>{_e(t['all_runs'])}</summary>{_wrap_table(_table(head, rows, left=2))}</details>")

    # -- curves
    add(f'<h2 id="curves">{_e(t["sec_curves"])}</h2>')
    from .plots import smoothing_window

    add("<p>" + t["curves_intro"].format(window=smoothing_window(steps)) + "</p>")
    for s in settings:
        add(_figure(figs["curves"][s.key], _e(t["curves_fig"].format(setting=titles[s.key], seed=seeds[0]))))
        add(f'<p class="look">{_e(t["curves_look"])}</p>')

    # -- percentiles
    add(f'<h2 id="percentiles">{_e(t["sec_percentiles"])}</h2>')
    rec = results["record"]
    add("<p>" + t["percentiles_intro"].format(unit=rec["unit"], layer=_e(rec["layer"])) + "</p>")
    for s in settings:
        caption = t["percentiles_fig"].format(setting=titles[s.key], seed=seeds[0])
        add(_figure(figs["percentiles"][s.key], _e(caption)))
        add(f'<p class="look">{_e(t["percentiles_look"])}</p>')
        add("<ul class='notes'>")
        for r in runs:
            if r["setting"] == s.key and r["seed"] == seeds[0]:
                p = percentile_summary(r["history"])
                line = t["drift"].format(
                    run=_norm(r["norm"], lang),
                    drift=num(p["drift"], lang),
                    spread0=num(p["spread_start"], lang),
                    spread=num(p["spread_end"], lang),
                )
                if p["spread_start"] < 0.05 and p["spread_end"] < 0.05:
                    line += " " + t["collapsed"].strip()
                if activation_of[s.key] == "relu" and p["p85_end"] < 0:
                    line += " " + t["dead"].strip()
                add(f'<li data-claim="percentiles:{s.key}:{r["norm"]}">{line}</li>')
        add("</ul>")

    # -- parameters
    add(f'<h2 id="params">{_e(t["sec_params"])}</h2>')
    add(f"<p>{_e(t['params_intro'])}</p>")
    rows, seen = [], set()
    for r in runs:
        if r["norm"] in seen:
            continue
        seen.add(r["norm"])
        p = r["params"]
        rows.append(
            [
                _norm(r["norm"], lang),
                integer(p["total"], lang),
                integer(p["bn"], lang),
                integer(p["other"], lang),
                integer(r["stats"], lang),
            ]
        )
    add(_wrap_table(_table([t[k] for k in ("col_run", "col_total", "col_bn", "col_other", "col_stats")], rows)))

    # -- train vs eval
    add(f'<h2 id="traineval">{_e(t["sec_traineval"])}</h2>')
    add("<p>" + t["traineval_intro"] + "</p>")
    bn_runs = [r for r in runs if r["traineval"]]
    recal_ok = bool(bn_runs) and all(r["traineval"]["recal"] is not None for r in bn_runs)
    if recal_ok:

        def cell(res):
            return f"{pct(res['accuracy'], lang)} ({num(res['loss'], lang, 3)})"

        rows = [
            [
                _e(titles[r["setting"]]),
                _norm(r["norm"], lang),
                str(r["seed"]),
                cell(r["traineval"]["batch"]),
                cell(r["traineval"]["ema"]),
                cell(r["traineval"]["recal"]),
            ]
            for r in bn_runs
        ]
        head = [t["col_setting"], t["col_run"], t["col_seed"], t["col_batch_stats"].format(m=m), t["col_ema"],
                t["col_recal"]]  # fmt: skip
        add(_wrap_table(_table(head, rows, left=2)))
        add(f"<p>{_e(t['traineval_note'])}</p>")
    else:
        add(f"<p><em>{_e(t['traineval_missing'])}</em></p>")

    # -- small mini-batches
    if sb_parts:
        add(f'<h2 id="smallbatch">{_e(t["sec_smallbatch"])}</h2>')
        parts.extend(sb_parts)

    # -- conclusion, from the same claims
    add(f'<h2 id="conclusion">{_e(t["sec_conclusion"])}</h2><ul>')
    first = {r["norm"]: r for r in runs}
    if "activation" in first and "channel" in first:
        add("<li>" + t["con_setb"].format(mpq=integer(max(layer["channel"]["size"] for layer in results["layers"]),
                                                          lang), m=m,
                                          pc=integer(first["channel"]["params"]["bn"], lang),
                                          pa=integer(first["activation"]["params"]["bn"], lang)) + "</li>")  # fmt: skip
    kinds: dict[str, list[str]] = {}
    for c, _ in _claims(results, settings, lang):
        kinds.setdefault(c["kind"], []).append(_e(titles[c["setting"]]))
    for kind in ("not_learned", "helps", "unclear", "same", "worse"):
        if kind in kinds:
            add(f'<li data-claim="conclusion:{kind}">' + t[f"con_{kind}"].format(settings="; ".join(kinds[kind]))
                + "</li>")  # fmt: skip
    if recal_ok:
        n_test = data["test"]
        changed = sum(abs(_correct(r, n_test, "ema") - _correct(r, n_test, "recal")) >= 3 for r in bn_runs)
        add(f'<li data-claim="conclusion:recal">{t["con_recal"].format(n_changed=changed, n_bn=len(bn_runs))}</li>')
    if sb_info:
        sm = results["small_batch"]["summary"]
        lo, hi = str(sb_info["m_min"]), str(sb_info["m_max"])
        add(
            '<li data-claim="conclusion:smallbatch">'
            + t["con_smallbatch"].format(
                source=sb_info["source"],
                m_min=lo,
                m_max=hi,
                act_large=pct(sm["activation"][hi]["mean"], lang),
                act_small=pct(sm["activation"][lo]["mean"], lang),
                chan_large=pct(sm["channel"][hi]["mean"], lang),
                chan_small=pct(sm["channel"][lo]["mean"], lang),
            )
            + "</li>"
        )
    add("</ul>")

    # -- reproduce
    add(f'<h2 id="reproduce">{_e(t["sec_reproduce"])}</h2>')
    out_name = _e(results.get("out_name", "bnlab-demo"))
    add("<p>" + t["reproduce"].format(command=_e(results["command"]), json="results.json", out=out_name) + "</p>")
    add(f"<h3>{_e(t['files'])}</h3><ul class='muted'>")
    files = ["results.json", *figs["setb"].values(), *figs["curves"].values(), *figs["percentiles"].values()]
    files += [figs[k] for k in ("filter", "small_batch") if figs.get(k)]
    for f in files:
        add(f'<li><a href="{_e(f)}">{_e(f)}</a></li>')
    add("</ul>")

    # -- timings, last
    add(f'<h2 id="timings">{_e(t["sec_timings"])}</h2>')
    add(f"<p>{_e(t['timings_intro'].format(threads=results['threads']))}</p>")
    rows = []
    for s in settings:
        for norm in NORMS:
            rs = [r for r in runs if r["setting"] == s.key and r["norm"] == norm]
            if not rs:
                continue
            train_s, n_steps = sum(r["train_seconds"] for r in rs), sum(r["steps"] for r in rs)
            rows.append([_e(titles[s.key]), _norm(norm, lang), str(len(rs)), str(n_steps), secs(train_s, lang),
                         num(1000 * train_s / max(n_steps, 1), lang, 2)])  # fmt: skip
    tm = results["timings"]
    for key in ("data", "eval", "figures", "other"):
        rows.append([_e(t[f"timing_{key}"]), "", "", "", secs(tm[key], lang), ""])
    total = f"<strong>{secs(tm['total'], lang)}</strong>"
    rows.append([f"<strong>{_e(t['timing_total'])}</strong>", "", "", "", total, ""])
    head = [t[k] for k in ("col_setting", "col_run", "col_runs", "col_steps", "col_time", "col_ms_step")]
    add(_wrap_table(_table(head, rows, left=2)))

    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(t['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


#: the interactive set-B page written beside the report (bnlab.explain_page), opened on the first conv layer
EXPLAINER = "explainer.html"


def write_report(results: dict, out_dir: Path, settings) -> Path:
    """Write ``out_dir/index.html`` from ``results`` and the interactive set-B page beside it; return its path."""
    from ..explain_page import write_page

    first = next((layer for layer in results["layers"] if len(layer["shape"]) == 4), None)
    opened = {"shape": tuple(first["shape"]), "layout": first["layout"]} if first else {}
    write_page(Path(out_dir) / EXPLAINER, lang=results["lang"], **opened)
    path = Path(out_dir) / "index.html"
    return write_text(path, render(results, settings))
