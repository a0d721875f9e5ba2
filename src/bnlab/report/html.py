"""The demo report page: results (from :func:`bnlab.report.demo.run_demo`) → ``index.html``.

One self-contained HTML file with relative links to its figures and ``results.json``; every word comes
from :mod:`bnlab.report.strings` in the report's language.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch

from .. import __version__
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


def _observations(results: dict, settings, lang: str) -> list[str]:
    """What happened, in words, computed from the numbers (means over seeds)."""
    t = S[lang]
    n_test = results["data"]["test"]
    out = []
    variant_gap = variant_gap_recal = 0.0
    for setting in settings:
        by_norm = {n: [r for r in results["runs"] if r["setting"] == setting.key and r["norm"] == n] for n in NORMS}
        if not all(by_norm.values()):
            continue
        correct = {n: float(np.mean([n_test - r["errors"] for r in rs])) for n, rs in by_norm.items()}
        acc = {n: _acc_over_seeds(rs, lang) for n, rs in by_norm.items()}
        variant_gap = max(variant_gap, abs(correct["activation"] - correct["channel"]))
        recal = {
            n: [n_test * r["traineval"]["recal"]["accuracy"] for r in by_norm[n] if r["traineval"]["recal"]]
            for n in ("activation", "channel")
        }
        if all(recal.values()):
            gap = abs(float(np.mean(recal["activation"])) - float(np.mean(recal["channel"])))
            variant_gap_recal = max(variant_gap_recal, round(gap, 1))
        best_bn = max(correct["activation"], correct["channel"])
        span = max(correct.values()) - min(correct.values())
        args = dict(setting=_e(setting.title(lang)), none=acc["none"], act=acc["activation"], chan=acc["channel"])
        if max(r["test"]["accuracy"] for r in by_norm["none"]) < 0.2:
            out.append(t["obs_not_learned"].format(epochs=results["epochs"], acc=acc["none"], **args))
        elif span <= 3:
            out.append(t["obs_bn_same"].format(diff=_count(span, lang), **args))
        elif best_bn > correct["none"]:
            out.append(t["obs_bn_helps"].format(diff=_count(best_bn - correct["none"], lang), test=n_test, **args))
        else:
            out.append(t["obs_bn_worse"].format(**args))
    for r in results["runs"]:
        te = r["traineval"]
        if te and te["recal"] is not None:
            ema, recal = (round((1 - te[k]["accuracy"]) * n_test) for k in ("ema", "recal"))
            if abs(ema - recal) >= 3:
                title = next(s.title(lang) for s in settings if s.key == r["setting"])
                out.append(
                    t["obs_ema"].format(
                        setting=_e(title),
                        run=_norm(r["norm"], lang),
                        seed=r["seed"],
                        ema=pct(te["ema"]["accuracy"], lang),
                        recal=pct(te["recal"]["accuracy"], lang),
                    )  # fmt: skip
                )
    first = {r["norm"]: r for r in results["runs"]}
    if "activation" in first and "channel" in first:
        out.append(
            t["obs_variants"].format(
                diff=_count(variant_gap, lang),
                diff_recal=_count(variant_gap_recal, lang),
                pa=integer(first["activation"]["params"]["bn"], lang),
                pc=integer(first["channel"]["params"]["bn"], lang),
                m=results["batch_size"],
                mpq=integer(max(layer["channel"]["size"] for layer in results["layers"]), lang),
            )
        )
    return out


def _drift(h: dict) -> tuple[float, float]:
    """How far the median moved over the second half of training, and the final 15–85% spread."""
    p50 = np.asarray(h["p50"], dtype=np.float64)
    n = len(p50)
    k = max(1, n // 20)
    mid = float(np.mean(p50[n // 2 - k // 2 : n // 2 - k // 2 + k]))
    end = float(np.mean(p50[-k:]))
    spread = float(np.mean(np.asarray(h["p85"][-k:], dtype=np.float64) - np.asarray(h["p15"][-k:], dtype=np.float64)))
    return abs(end - mid), spread


def render(results: dict, settings) -> str:
    lang = results["lang"]
    t = S[lang]
    data, runs, figs = results["data"], results["runs"], results["figures"]
    m = results["batch_size"]
    steps = runs[0]["steps"] if runs else 0
    titles = {s.key: s.title(lang) for s in settings}
    parts: list[str] = []
    add = parts.append

    sections = [
        ("setup", "sec_setup"),
        ("summary", "sec_summary"),
        ("setb", "sec_setb"),
        ("curves", "sec_curves"),
        ("percentiles", "sec_percentiles"),
        ("params", "sec_params"),
        ("traineval", "sec_traineval"),
        ("timings", "sec_timings"),
        ("reproduce", "sec_reproduce"),
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

    # -- setup
    add(f'<h2 id="setup">{_e(t["sec_setup"])}</h2>')
    add(
        "<p>"
        + t["setup_data"].format(
            train=data["train"],
            val=data["val"],
            test=data["test"],
            seed=results["seeds"][0],
            one_test=pct(1 / data["test"], lang, 2),
        )  # fmt: skip
        + "</p>"
    )
    add("<p>" + t["setup_net"].format(m=m, epochs=results["epochs"], steps=steps) + "</p>")
    add(f"<p>{t['setup_settings']}</p><ul>")
    for s in settings:
        add(f"<li><strong>{_e(s.title(lang))}</strong>: {_e(s.why(lang))}</li>")
    add("</ul>")

    # -- summary
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
            row.append(" / ".join(cell) or "–")
        rows.append(row)
    head = [t["col_setting"]] + [f"{_norm(n, lang)}<br>{t['col_test_acc']} ({t['col_errors']})" for n in NORMS]
    add(_table(head, rows))
    add(f"<h3>{_e(t['observations'])}</h3><ul>")
    for line in _observations(results, settings, lang):
        add(f"<li>{line}</li>")
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
    add(f"<details><summary>{_e(t['all_runs'])}</summary>{_table(head, rows, left=2)}</details>")

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
                integer(c["params"], lang),
                integer(a["params"], lang),
            ]
        )
    head = [t[k] for k in ("col_layer", "col_input", "col_per_channel", "col_per_activation", "col_params_channel",
                           "col_params_activation")]  # fmt: skip
    add(_table(head, rows))
    add(f"<p>{_e(t['setb_fc'])}</p>")
    for layer in results["layers"]:
        src = figs["setb"].get(layer["name"])
        if src:
            add(_figure(src, _e(t["setb_fig"].format(layer=layer["name"]))))
        shape = ",".join(str(d) for d in layer["shape"])
        if layer["layout"] == "NCHW":
            summary = t["setb_text"].format(layer=_e(layer["name"]), shape=_e(shape))
            add(f"<details><summary>{summary}</summary><pre>{_e(layer['text'])}</pre></details>")

    # -- curves
    add(f'<h2 id="curves">{_e(t["sec_curves"])}</h2>')
    from .plots import smoothing_window

    add("<p>" + t["curves_intro"].format(window=smoothing_window(steps)) + "</p>")
    for s in settings:
        add(_figure(figs["curves"][s.key], _e(t["curves_fig"].format(setting=titles[s.key], seed=seeds[0]))))

    # -- percentiles
    add(f'<h2 id="percentiles">{_e(t["sec_percentiles"])}</h2>')
    rec = results["record"]
    add("<p>" + t["percentiles_intro"].format(unit=rec["unit"], layer=_e(rec["layer"])) + "</p>")
    for s in settings:
        caption = t["percentiles_fig"].format(setting=titles[s.key], seed=seeds[0])
        add(_figure(figs["percentiles"][s.key], _e(caption)))
        add("<ul class='muted'>")
        for r in runs:
            if r["setting"] == s.key and r["seed"] == seeds[0]:
                drift, spread = _drift(r["history"])
                line = t["drift"].format(run=_norm(r["norm"], lang), drift=num(drift, lang), spread=num(spread, lang))
                if spread < 0.05:
                    line += t["collapsed"]
                add(f"<li>{line}</li>")
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
    add(_table([t[k] for k in ("col_run", "col_total", "col_bn", "col_other", "col_stats")], rows))

    # -- train vs eval
    add(f'<h2 id="traineval">{_e(t["sec_traineval"])}</h2>')
    add("<p>" + t["traineval_intro"] + "</p>")
    bn_runs = [r for r in runs if r["traineval"]]
    if bn_runs and all(r["traineval"]["recal"] is not None for r in bn_runs):

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
        add(_table(head, rows, left=2))
        add(f"<p>{_e(t['traineval_note'])}</p>")
    else:
        add(f"<p><em>{_e(t['traineval_missing'])}</em></p>")

    # -- timings
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
    add(_table(head, rows, left=2))

    # -- reproduce
    add(f'<h2 id="reproduce">{_e(t["sec_reproduce"])}</h2>')
    add("<p>" + t["reproduce"].format(command=_e(results["command"]), json="results.json") + "</p>")
    add(f"<h3>{_e(t['files'])}</h3><ul class='muted'>")
    files = ["results.json", *figs["setb"].values(), *figs["curves"].values(), *figs["percentiles"].values()]
    for f in files:
        add(f'<li><a href="{_e(f)}">{_e(f)}</a></li>')
    add("</ul>")

    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(t['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(results: dict, out_dir: Path, settings) -> Path:
    """Write ``out_dir/index.html`` from ``results``; return its path."""
    path = Path(out_dir) / "index.html"
    path.write_text(render(results, settings), encoding="utf-8")
    return path
