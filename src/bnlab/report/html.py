"""The demo report page: results (from :func:`bnlab.report.demo.run_demo`) → ``index.html``.

One self-contained HTML file with relative links to its figures and ``results.json``. What the page claims
is computed by :mod:`bnlab.report.analysis`; its words come from the ``report`` catalogs
(``bnlab/i18n/catalogs/<lang>/report.json``); its markup from the Jinja2 templates in ``templates/`` (a base
page and one template per section), rendered with autoescape, so every inserted value is escaped unless it
is marked safe explicitly; the stylesheet ``assets/report.css`` is inlined into the page.

Catalog strings hold no HTML. The report's sentences follow one small rule, applied by :func:`say` after the
template text has been escaped: ``**strong**``, ``*emphasis*`` and ```code``` become ``<strong>``, ``<em>``
and ``<code>``; a link is a placeholder (``{results_link}``) that the page fills with the link's markup from
``templates/_macros.html.j2``. The fields a sentence inserts are escaped.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np
import torch
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from .. import __version__
from ..i18n import lookup, plural_index, t
from ..i18n.numbers import decimal, general, integer, percent, seconds
from ..io import write_text
from . import analysis
from .analysis import NORMS, percentile_summary, setting_claim  # noqa: F401  (kept importable from here)

__all__ = ["render", "write_report", "say", "small_batch_section", "EXPLAINER", "CSS"]

_HERE = Path(__file__).resolve().parent

#: The page's stylesheet, inlined into every report (one self-contained file).
CSS = (_HERE / "assets" / "report.css").read_text(encoding="utf-8")

#: the interactive set-B page written beside the report (bnlab.explain_page), opened on the first conv layer
EXPLAINER = "explainer.html"

_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")
_CODE = re.compile(r"`(.+?)`")


def _inline(text: str) -> Markup:
    """A catalog sentence as markup: escaped, then ``**x**``, ``*x*`` and ```x``` as strong, em and code."""
    s = str(escape(text))
    s = _STRONG.sub(r"<strong>\1</strong>", s)
    s = _EM.sub(r"<em>\1</em>", s)
    s = _CODE.sub(r"<code>\1</code>", s)
    return Markup(s)


def say(key: str, lang: str, **fields) -> Markup:
    """The report sentence ``report.<key>`` in ``lang`` as markup, with ``fields`` escaped into it (a field
    that is :class:`~markupsafe.Markup` already, e.g. a coloured run name or a link, goes in as is)."""
    value = lookup(f"report.{key}", lang)
    if isinstance(value, list):
        value = value[min(plural_index(fields["n"], lang), len(value) - 1)]
    if not isinstance(value, str):
        raise TypeError(f"report.{key} is not a sentence")
    if isinstance(fields.get("n"), int) and not isinstance(fields["n"], bool):
        fields["n"] = integer(fields["n"], lang)
    return _inline(value).format(**fields)


@functools.cache
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(_HERE / "templates")),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.do"],
    )
    return env


def _macros():
    return _env().get_template("_macros.html.j2").module


class _Words:
    """What the templates use to write words and numbers in the report's language."""

    def __init__(self, lang: str):
        self.lang = lang
        self._macros = _macros()

    def __call__(self, key: str, **fields) -> Markup:
        return say(key, self.lang, **fields)

    def norm(self, norm: str) -> Markup:
        """A run's name, coloured as in the figures."""
        return self._macros.norm(norm, t(f"report.norm.{norm}", self.lang))

    def pct(self, x: float, digits: int = 1) -> str:
        return percent(x, self.lang, digits)

    def num(self, x: float, digits: int = 2) -> str:
        return decimal(x, self.lang, digits)

    def int(self, n: int) -> str:
        return integer(n, self.lang)

    def secs(self, x: float) -> str:
        return seconds(x, self.lang)

    def count(self, x: float) -> str:
        """A number of test images: an integer, or a mean over seeds with one decimal."""
        return str(int(x)) if float(x).is_integer() else decimal(x, self.lang, 1)

    def range(self, cell: dict) -> str:
        """A small-batch cell: the mean over seeds (lowest–highest seed)."""
        return f"{self.pct(cell['mean'])} ({self.pct(cell['min'])}–{self.pct(cell['max'])})"


def _acc_over_seeds(runs: list[dict], w: _Words) -> str:
    accs = [r["test"]["accuracy"] for r in runs]
    if len(accs) == 1:
        return w.pct(accs[0])
    each = ", ".join(w.pct(a) for a in accs)
    return t("report.mean_range", w.lang, mean=w.pct(float(np.mean(accs))), each=each)


def _setting_sentence(results: dict, claim: dict, title: str, w: _Words, activation: str = "relu") -> Markup:
    """One setting's verdict, written from its claim's numbers."""
    n_test = results["data"]["test"]
    acc = {n: _acc_over_seeds(analysis.runs_of(results, claim["setting"], n), w) for n in NORMS}
    args = dict(setting=title, none=acc["none"], act=acc["activation"], chan=acc["channel"])
    kind = claim["kind"]
    args["n_seeds"] = claim["n_seeds"]
    if kind == "not_learned":
        text = w("obs_not_learned", epochs=results["epochs"], acc=acc["none"], **args)
        if activation == "sigmoid" and claim["helped"]:  # the paper's Fig. 1: sigmoid without BN learns, slower
            text = Markup(f"{text} {w('obs_fig1_unlike')}")
        return text
    if kind == "same":
        return w("obs_bn_same", diff=w.count(claim["span"]), same=analysis.SAME, **args)
    if kind == "helps":
        return w("obs_bn_helps", worst_bn=w.pct(claim["worst_bn"] / n_test), k=claim["seeds_helped"],
                 best_none=w.pct(claim["best_none"] / n_test), **args)  # fmt: skip
    if kind == "worse":
        return w("obs_bn_worse", best_bn=w.pct(claim["best_bn"] / n_test),
                 worst_none=w.pct(claim["worst_none"] / n_test), **args)  # fmt: skip
    return w("obs_bn_unclear", diff=w.count(claim["diff"]), spread=claim["none_spread"], test=n_test,
             k=claim["seeds_helped"], **args)  # fmt: skip


def _observations(results: dict, settings, w: _Words, claims: list[dict]) -> list[tuple[str, Markup]]:
    """What happened, in words, computed from the numbers: (data-claim tag, sentence)."""
    titles = {s.key: s.title(w.lang) for s in settings}
    act = {s.key: s.activation for s in settings}
    out = [(f"setting:{c['setting']}:{c['kind']}",
            _setting_sentence(results, c, titles[c["setting"]], w, act[c["setting"]])) for c in claims]  # fmt: skip
    for ch in analysis.ema_changes(results):
        r = ch["run"]
        text = w("obs_ema", setting=titles[r["setting"]], run=w.norm(r["norm"]), seed=r["seed"], ema=w.pct(ch["ema"]),
                 recal=w.pct(ch["recal"]))  # fmt: skip
        out.append((f"ema:{r['setting']}:{r['norm']}:{r['seed']}", text))
    first = {r["norm"]: r for r in results["runs"]}
    if "activation" in first and "channel" in first:
        gaps = analysis.variant_gaps(results, settings)
        text = w(
            "obs_variants",
            diff=w.count(gaps["ema"]),
            diff_recal=w.count(gaps["recal"]),
            pa=w.int(first["activation"]["params"]["bn"]),
            pc=w.int(first["channel"]["params"]["bn"]),
            m=results["batch_size"],
            mpq=w.int(max(layer["channel"]["size"] for layer in results["layers"])),
        )
        out.append(("variants", text))
    return out


def _lr_rule(s: dict, w: _Words) -> Markup:
    """How the study's learning rate follows m: Adam's square-root rule (small_batch.adam_rule), or, in runs of the
    earlier protocol, SGD with momentum and the linear rule."""
    lr32, m_min, m_max = s["lr32"], s["m_min"], s["m_max"]
    if s["adam"]:
        return w("small_batch_lr", lr32=general(lr32, w.lang), m_min=m_min, m_max=m_max,
                 lr_min=general(float(f"{lr32 * math.sqrt(m_min / 32):.4g}"), w.lang),
                 lr_max=general(float(f"{lr32 * math.sqrt(m_max / 32):.4g}"), w.lang))  # fmt: skip
    return w("smallbatch_lr", lr32=general(lr32, w.lang), m_min=m_min, m_max=m_max,
             lr_min=general(lr32 * m_min / 32, w.lang), lr_max=general(lr32 * m_max / 32, w.lang))  # fmt: skip


def _small_batch(results: dict, w: _Words) -> dict | None:
    """The small mini-batch experiment's section, from the run the user made or the reference run."""
    sb = results.get("small_batch")
    if not sb:
        return None
    s = analysis.small_batch_summary(sb)
    summary, f = sb["summary"], s["findings"]
    m_min, m_max = s["m_min"], s["m_max"]
    if sb["source"] == "user":
        source = w("smallbatch_source_user", path=sb["path"], date=sb["date"])
    else:
        source = w("smallbatch_source_ref", date=sb["date"])
    at = {n: summary[n][str(m_min)] for n in s["norms"]}
    out = {
        "source": source,
        "intro": w(
            "smallbatch_intro",
            m=results["batch_size"],
            m_min=m_min,
            m_max=m_max,
            samples=w.int(s["samples"]),
            n_seeds=s["n_seeds"],
            source=source,
        ),  # fmt: skip
        "lr": _lr_rule(s, w),
        "head": [f"m = {m}" for m in s["ms"]],
        "rows": [(n, [w.range(summary[n][str(m)]) for m in s["ms"]]) for n in s["norms"]],
        "table_note": w("smallbatch_table_note", n_seeds=s["n_seeds"]),
        "lines": [
            (
                n,
                w(
                    "smallbatch_row",
                    run=w.norm(n),
                    small=w.pct(summary[n][str(m_min)]["mean"]),
                    large=w.pct(summary[n][str(m_max)]["mean"]),
                    m_min=m_min,
                    m_max=m_max,
                    lo=w.pct(at[n]["min"]),
                    hi=w.pct(at[n]["max"]),
                ),
            )  # fmt: skip
            for n in s["norms"]
        ],
        "setb": None,
        "ablation": None,
    }
    out["none_falls"] = None
    if analysis.none_falls_with_m(summary, s["ms"]):
        out["none_falls"] = w("smallbatch_none_falls", m_min=m_min, m_max=m_max, samples=w.int(s["samples"]),
                              small=w.pct(summary["none"][str(m_min)]["mean"]),
                              large=w.pct(summary["none"][str(m_max)]["mean"]), ratio=m_max // m_min)  # fmt: skip
    out["variants"] = None
    m_demo = str(results["batch_size"])
    if all(n in summary and m_demo in summary[n] for n in ("activation", "channel")):
        ch, ac = summary["channel"][m_demo], summary["activation"][m_demo]
        order = analysis.range_order(ch, ac)
        out["variants"] = (order, [w("smallbatch_variants", m=m_demo, channel=w.range(ch), act=w.range(ac)),
                                   w(f"smallbatch_variants_{order}")])  # fmt: skip
    if s["first_layer_set"]:
        out["setb"] = w("smallbatch_setb", m_min=m_min, mpq=w.int(s["first_layer_set"]))
    if f["channel-conv"] and f["channel-ln"]:
        out["ablation"] = [
            w(
                "smallbatch_ablation",
                m_min=m_min,
                conv=w.range(at["channel-conv"]),
                ln=w.range(at["channel-ln"]),
                channel=w.range(at["channel"]),
            ),  # fmt: skip
            w(f"smallbatch_ablation_ln_{f['channel-ln']}", m_min=m_min),
            w(f"smallbatch_ablation_conv_{f['channel-conv']}", m_min=m_min),
        ]
    advice = [w("smallbatch_best", m_min=m_min, run=w.norm(f["best"]), acc=w.pct(f["best_mean"]),
                lo=w.pct(f["best_min"]), hi=w.pct(f["best_max"]))]  # fmt: skip
    if f["holds_from"] is not None:
        advice.append(w("smallbatch_holds", m=f["holds_from"], m_max=m_max, lo=w.pct(f["holds_lo"]),
                        hi=w.pct(f["holds_hi"])))  # fmt: skip
    if f["renorm"]:
        advice.append(w(f"smallbatch_renorm_{f['renorm']}", m_min=m_min, renorm=w.range(at["renorm"]),
                        channel=w.range(at["channel"])))  # fmt: skip
    if f["renorm_gap_m"] is not None:
        m_gap = str(f["renorm_gap_m"])
        key = "smallbatch_renorm_ema" if f["renorm_gap"] >= 0.02 else "smallbatch_renorm_ema_close"
        advice.append(w(key, m=m_gap, ema=w.pct(sb["summary_ema"]["renorm"][m_gap]["mean"]),
                        recal=w.pct(summary["renorm"][m_gap]["mean"])))  # fmt: skip
    if f["group_dev"] is not None:
        key = "smallbatch_group_flat" if f["group_dev"] <= 0.01 else "smallbatch_group_varies"
        advice.append(w(key, avg=w.pct(f["group_avg"]), dev=w.num(100 * f["group_dev"], 1), m_min=m_min,
                        m_max=m_max))  # fmt: skip
    out["advice"] = advice
    out["m_min"], out["m_max"] = m_min, m_max
    return out


def _percentile_verdict(notes: dict, w: _Words) -> Markup | None:
    """The verdict under one setting's percentile figure (:func:`bnlab.report.analysis.percentile_verdict`)."""
    v = analysis.percentile_verdict(notes)
    if v is None or not {"activation", "channel"} <= notes.keys():
        return None

    def change(norm: str) -> str:
        c = v["change"][norm]
        if c is None:
            return str(w("percentile_na", thr=w.num(analysis.COLLAPSED)))
        sign = "+" if c >= 0 else "−"
        return sign + w.pct(abs(c), 0)

    return w("percentile_verdict", steadier=len(v["steadier"]), n_bn=v["n_bn"], k=notes["none"]["k"],
             none=change("none"), act=change("activation"), chan=change("channel"))  # fmt: skip


def _record_where(results: dict, w: _Words) -> dict:
    """Where the watched unit is: its layer, channel and location (the centre of the map, as UnitRecorder)."""
    rec = results["record"]
    bn = rec["layer"].replace("act", "bn")
    layer = next((layer for layer in results["layers"] if layer["name"] == bn), None)
    where = "–"
    if layer is not None and len(layer["shape"]) == 4:
        where = f"({layer['shape'][2] // 2}, {layer['shape'][3] // 2})"
    return {"unit": rec["unit"], "layer": rec["layer"], "where": where}


def _dips(results: dict, titles: dict, w: _Words) -> list[tuple[str, Markup]]:
    """The BN runs of the figures' seed whose validation accuracy dipped during training (the ``val_dips`` rule),
    with the EMA-against-recalibrated check at the end."""
    n_test = results["data"]["test"]
    out = []
    for r in results["runs"]:
        if r["seed"] != results["seeds"][0]:  # the seed the training-curve figures show
            continue
        dips = analysis.val_dips(r)
        te = r["traineval"]
        if not dips or not te or te["recal"] is None:
            continue
        ema, recal = analysis.correct(r, n_test, "ema"), analysis.correct(r, n_test, "recal")
        text = w("traineval_dips", setting=titles[r["setting"]], run=w.norm(r["norm"]), seed=r["seed"],
                 dips=", ".join(w.pct(d, 0) for d in dips), dip=w.int(round(100 * analysis.DIP)),
                 ema=w.pct(te["ema"]["accuracy"]), recal=w.pct(te["recal"]["accuracy"]))  # fmt: skip
        if abs(ema - recal) >= analysis.RECAL_CHANGE:
            text = Markup(f"{text} {w('traineval_dips_yes', n=abs(ema - recal))}")
        else:
            text = Markup(f"{text} {w('traineval_dips_no', n=analysis.RECAL_CHANGE)}")
        out.append((f"dips:{r['setting']}:{r['norm']}:{r['seed']}", text))
    return out


def _context(results: dict, settings) -> dict:
    lang = results["lang"]
    w = _Words(lang)
    data, runs, figs = results["data"], results["runs"], results["figures"]
    m = results["batch_size"]
    steps = runs[0]["steps"] if runs else 0
    seeds = results["seeds"]
    titles = {s.key: s.title(lang) for s in settings}
    activation_of = {s.key: s.activation for s in settings}
    claims = analysis.setting_claims(results, settings)
    recal = analysis.recal_summary(results)
    small = _small_batch(results, w)
    first = {r["norm"]: r for r in runs}
    from .plots import smoothing_window

    conv = next((layer for layer in results["layers"] if layer["layout"] == "NCHW"), None)
    questions = None
    if conv is not None:
        n_, c_, h_, w_ = conv["shape"]
        questions = dict(layer=conv["name"], m=n_, c=c_, h=h_, w=w_, hw=w.int(h_ * w_),
                         mpq=w.int(conv["channel"]["size"]), acts=w.int(conv["activation"]["sets"]),
                         shape=",".join(map(str, conv["shape"])))  # fmt: skip
    percentiles = []
    for s in settings:
        notes = []
        for r in runs:
            if r["setting"] == s.key and r["seed"] == seeds[0]:
                p = analysis.percentile_notes(r, activation_of[s.key])
                notes.append((r["norm"], p))
        percentiles.append((s, notes, _percentile_verdict(dict(notes), w)))
    kinds: dict[str, list[str]] = {}
    for c in claims:
        kinds.setdefault(c["kind"], []).append(titles[c["setting"]])
    # "BN helped" lists every setting where its rule passes, a setting where the network without BN learned
    # nothing included (the clearest case)
    helped = [titles[c["setting"]] for c in claims if c["helped"]]
    kinds.pop("helps", None)
    if helped:
        kinds["helps"] = helped
    why = {s.key: s.why(lang) for s in settings}
    if "high_lr" in why:
        low = analysis.higher_rate_run(results, settings, "high_lr")
        if low is not None:
            why["high_lr"] = t("report.setting_high_lr_why_tested", lang, lr_low=general(low["lr"], lang))
    files = ["results.json", *figs["setb"].values(), *figs["curves"].values(), *figs["percentiles"].values()]
    files += [figs[k] for k in ("filter", "small_batch") if figs.get(k)]
    sections = [
        "setup", "questions", "setb", "summary", "curves", "percentiles", "params", "traineval",
        *(["smallbatch"] if small else []), "conclusion", "reproduce", "timings",
    ]  # fmt: skip
    return dict(
        w=w,
        lang=lang,
        css=Markup(CSS),  # the package's own stylesheet, inlined as is
        results=results,
        settings=settings,
        titles=titles,
        data=data,
        runs=runs,
        figs=figs,
        m=m,
        steps=steps,
        seeds=seeds,
        norms=NORMS,
        sections=sections,
        version=__version__,
        torch_version=torch.__version__,
        questions=questions,
        observations=_observations(results, settings, w, claims),
        percentiles=percentiles,
        window=smoothing_window(steps),
        params_rows=[r for i, r in enumerate(runs) if r["norm"] not in {x["norm"] for x in runs[:i]}],
        recal=recal,
        small=small,
        first=first,
        max_set=max(layer["channel"]["size"] for layer in results["layers"]),
        kinds=[(k, kinds[k]) for k in ("not_learned", "helps", "unclear", "same", "worse") if k in kinds],
        n_seeds=len(seeds),
        why=why,
        record=_record_where(results, w),
        dips=_dips(results, titles, w),
        out_name=results.get("out_name", "bnlab-demo"),
        files=files,
        timing_rows=analysis.timing_rows(results, settings),
        explainer=EXPLAINER,
    )


def render(results: dict, settings) -> str:
    """The report page for ``results`` (as :func:`bnlab.report.demo.run_demo` returns them), as one string."""
    return _env().get_template("report.html.j2").render(**_context(results, settings))


def small_batch_section(results: dict, lang: str) -> str:
    """The small mini-batch section alone (its ``<h2>`` and body), or ``""`` when ``results`` has none; for
    the tests, which check it against the reference run."""
    small = _small_batch(results, _Words(lang))
    if small is None:
        return ""
    figs = results.get("figures", {})
    template = _env().get_template("sections/smallbatch.html.j2")
    return template.render(w=_Words(lang), small=small, figs=figs)


def write_report(results: dict, out_dir: Path, settings) -> Path:
    """Write ``out_dir/index.html`` from ``results`` and the interactive set-B page beside it; return its path."""
    from ..explain_page import write_page

    first = next((layer for layer in results["layers"] if len(layer["shape"]) == 4), None)
    opened = {"shape": tuple(first["shape"]), "layout": first["layout"]} if first else {}
    write_page(Path(out_dir) / EXPLAINER, lang=results["lang"], **opened)
    path = Path(out_dir) / "index.html"
    return write_text(path, render(results, settings))
