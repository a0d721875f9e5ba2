"""The demo report rendered from results without training: its claims (bnlab.report.analysis), the text of
its key sections against the results, escaping (Jinja2 autoescape), the catalogs' markup rule, and the
fixes of issue 18 on the report side (Spanish words, m'/(m'−1), a runnable command, narrow screens)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bnlab.i18n import catalog, t
from bnlab.report import analysis
from bnlab.report.demo import SETTINGS
from bnlab.report.html import CSS, render, say
from bnlab.report.small_batch import for_report

N_TEST = 359
NORMS = ("none", "activation", "channel")
# mistakes per (setting, norm), one per seed: adam "same" (means exactly 3 images apart: the rule's edge),
# high_lr "not_learned", sigmoid "unclear"
ERRORS = {
    ("adam", "none"): (20, 22), ("adam", "activation"): (18, 18), ("adam", "channel"): (21, 20),
    ("high_lr", "none"): (320, 300), ("high_lr", "activation"): (40, 30), ("high_lr", "channel"): (35, 45),
    ("sigmoid", "none"): (100, 60), ("sigmoid", "activation"): (50, 40), ("sigmoid", "channel"): (80, 70),
}  # fmt: skip
LAYERS = (
    ("features.bn1", (32, 16, 8, 8), "NCHW"),
    ("features.bn2", (32, 32, 4, 4), "NCHW"),
    ("head.bn3", (32, 64), "NC"),
)


def make_results(lang: str = "en", tmp: Path | None = None, command: str = "bnlab demo") -> dict:
    """A results dict shaped as run_demo's (the keys render reads), with made-up numbers: no training."""
    from bnlab.explain import explain

    rng = np.random.default_rng(0)
    seeds = [0, 1]
    layers = []
    for name, shape, layout in LAYERS:
        row = {"name": name, "shape": list(shape), "layout": layout}
        for per in ("channel", "activation"):
            e = explain(shape, layout=layout, per=per, lang=lang)
            row[per] = {"sets": e.num_sets, "size": e.set_size, "params": e.num_params}
        row["text"] = explain(shape, layout=layout, per="channel", lang=lang).text
        layers.append(row)
    bn_params = {"none": 0, "activation": 3200, "channel": 224}
    runs = []
    for i, seed in enumerate(seeds):
        for s in SETTINGS:
            for norm in NORMS:
                errors = ERRORS[(s.key, norm)][i]
                acc = 1 - errors / N_TEST
                test = {"loss": float(rng.uniform(0.1, 2)), "accuracy": acc}
                steps = 20
                p50 = rng.normal(0, 1, steps).cumsum() * 0.1
                traineval = None
                if norm != "none":
                    shift = 5 if (s.key, norm, seed) == ("adam", "channel", 0) else 1  # one run changes by 5 images
                    traineval = {"batch": {"loss": 0.5, "accuracy": acc - 2 / N_TEST}, "ema": test,
                                 "recal": {"loss": 0.4, "accuracy": acc + shift / N_TEST}}  # fmt: skip
                runs.append({
                    "setting": s.key, "norm": norm, "seed": seed,
                    "params": {"total": 13594 + bn_params[norm] + (112 if norm == "none" else 0),
                               "bn": bn_params[norm], "other": 13594 + (112 if norm == "none" else 0)},
                    "stats": bn_params[norm], "test": test, "errors": errors,
                    "val_accuracy": acc, "train_loss": 0.3, "train_seconds": 0.25 + 0.01 * len(runs), "steps": steps,
                    "traineval": traineval,
                    "history": {"p15": list(p50 - 1), "p50": list(p50), "p85": list(p50 + 1)},
                })  # fmt: skip
    figs = {
        "setb": {"features.bn1": "figures/setb-features-bn1.png", "features.bn2": "figures/setb-features-bn2.png"},
        "curves": {s.key: f"figures/curves-{s.key}.png" for s in SETTINGS},
        "percentiles": {s.key: f"figures/percentiles-{s.key}.png" for s in SETTINGS},
        "filter": "figures/filter-vs-map.png",
    }
    results = {
        "lang": lang, "command": command, "date": "2026-01-01", "seeds": seeds, "epochs": 1, "batch_size": 32,
        "threads": 1, "data": {"name": "digits", "train": 1258, "val": 180, "test": N_TEST},
        "record": {"layer": "features.act2", "unit": 0}, "layers": layers, "runs": runs, "out_name": "bnlab-demo",
        "timings": {"data": 1.0, "train": 5.0, "eval": 2.0, "figures": 4.0, "other": 1.0, "total": 13.0},
        "figures": figs,
    }  # fmt: skip
    small = for_report((tmp or Path("/nonexistent")) / "no-user-run")
    if small is not None:
        results["small_batch"] = small
        figs["small_batch"] = "figures/small-batch.png"
    return results


class _Page(HTMLParser):
    """Text of elements by id / data-claim, table rows by the id of the h2 above them, <code> texts, figures."""

    def __init__(self):
        super().__init__()
        self.section = None
        self.tables: dict[str, list[list[str]]] = {}
        self.cell: list[str] | None = None
        self.code: list[str] = []
        self.in_code = False
        self.zoom: list[tuple[str, str]] = []  # (href of the figure, href of its zoom link)
        self.zoom_text: list[str] = []
        self.fig_src = None
        self.in_zoom = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self.section = a.get("id")
        if tag == "tr":
            self.tables.setdefault(self.section, []).append([])
        if tag in ("td", "th"):
            self.tables[self.section][-1].append("")
            self.cell = self.tables[self.section][-1]
        if tag == "br" and self.cell is not None:
            self.cell[-1] += "\n"
        if tag == "code":
            self.code.append("")
            self.in_code = True
        if tag == "img":
            self.fig_src = a["src"]
        if tag == "a" and a.get("class") == "zoom":
            self.zoom.append((self.fig_src, a["href"]))
            self.zoom_text.append("")
            self.in_zoom = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.cell = None
        if tag == "code":
            self.in_code = False
        if tag == "a":
            self.in_zoom = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[-1] += data
        if self.in_code:
            self.code[-1] += data
        if self.in_zoom:
            self.zoom_text[-1] += data


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


@pytest.fixture(scope="module", params=["en", "es"])
def rendered(request, tmp_path_factory):
    lang = request.param
    results = make_results(lang, tmp_path_factory.mktemp("r"))
    return lang, results, render(results, SETTINGS)


def _pct(x: float, lang: str) -> str:
    s = f"{100 * x:.1f}"
    return s.replace(".", ",") + " %" if lang == "es" else s + "%"


def test_claims_follow_their_rules():
    results = make_results()
    kinds = {c["setting"]: c["kind"] for c in analysis.setting_claims(results, SETTINGS)}
    assert kinds == {"adam": "same", "high_lr": "not_learned", "sigmoid": "unclear"}
    changed = analysis.ema_changes(results)
    assert [(c["run"]["setting"], c["run"]["norm"], c["run"]["seed"]) for c in changed] == [("adam", "channel", 0)]
    assert analysis.recal_summary(results)["changed"] == 1
    # the BN variants' largest gap between means over seeds, in test images (sigmoid: 45 vs 75 mistakes)
    assert analysis.variant_gaps(results, SETTINGS)["ema"] == 30.0


def test_key_sections_state_the_results(rendered):
    """The summary, parameter, set-B and timing tables hold exactly what results says, cell by cell."""
    lang, results, page = rendered
    tables = _parse(page).tables
    titles = {s.key: s.title(lang) for s in SETTINGS}
    summary = [r for r in tables["summary"] if r and r[0] in titles.values()][:3]
    for row, s in zip(summary, SETTINGS, strict=True):
        expected = []
        for norm in NORMS:
            runs = [r for r in results["runs"] if r["setting"] == s.key and r["norm"] == norm]
            expected.append("\n".join(f"{_pct(r['test']['accuracy'], lang)} ({r['errors']})" for r in runs))
        assert row == [titles[s.key], *expected]
    params = tables["params"][1:]
    names = t("report.norm", lang)
    sep = " " if lang == "es" else ","
    for row, norm in zip(params, NORMS, strict=True):
        p = next(r for r in results["runs"] if r["norm"] == norm)["params"]
        ints = [f"{v:,}".replace(",", sep) if v >= (10_000 if lang == "es" else 1000) else str(v)
                for v in (p["total"], p["bn"], p["other"], p["bn"])]  # fmt: skip
        assert row == [names[norm], *ints]
    setb = tables["setb"][1:]
    assert [r[0] for r in setb] == [name for name, _, _ in LAYERS]
    assert setb[0][1] == "(32, 16, 8, 8)" and setb[2][1] == "(32, 64)"
    total = tables["timings"][-1]
    assert total[0] == t("report.timing_total", lang) and total[4] == ("13,0 s" if lang == "es" else "13.0 s")


def test_values_are_escaped_and_only_catalog_markup_becomes_tags(tmp_path):
    evil = "bnlab demo --out '<script>alert(1)</script>' **bold** & `x`"
    results = make_results("en", tmp_path, command=evil)
    results["layers"][0]["text"] = "<script>alert(2)</script>"  # inserted by the template itself
    page = render(results, SETTINGS)
    assert "<script>alert(2)</script>" not in page and "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<strong>bold</strong>" not in page and "**bold**" in page and "&amp; `x`" in page
    # the catalog's rule: **x**, *x* and `x` become tags, the fields do not
    assert say("setb_text", "en", layer="<b>", shape="1,2") == (
        "The explanation for layer &lt;b&gt;, as <code>bnlab explain 1,2 --layout NCHW</code> gives it"
    )
    assert "<em>approximation</em>" in page and "<strong>Set B</strong>" in page


@pytest.mark.parametrize("lang", ["en", "es"])
def test_report_catalog_markup_is_balanced(lang):
    for key, value in catalog("report", lang).items():
        if isinstance(value, str):
            assert value.count("**") % 2 == 0 and value.count("`") % 2 == 0, key
            assert value.replace("**", "").count("*") % 2 == 0, key


def test_spanish_words_of_issue_18(rendered):
    lang, _, page = rendered
    # the report's own words: bnlab.explain's text inside <pre> has its own catalogs
    body = re.sub(r"<pre>.*?</pre>", " ", page.split("<body>")[1], flags=re.S)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    if lang == "en":
        assert "fully connected" not in text and "dense 64" in text
        return
    for good in ("En qué fijarse", "Glosario", "modo de entrenamiento", "modo de evaluación",
                 "en todos los ejemplos del minilote", "usan semillas fijas", "puntos porcentuales"):  # fmt: skip
        assert good in text, good
    calques = ("Qué mirar", "Palabras que usa esta página", "tienen semilla", "adivinar", "modo entrenamiento",
               "modo evaluación", "a lo largo de los elementos", "totalmente conectada", "equivale a 0,28 %",
               "Miembro", "lado a lado", "Dicho con palabras", "iluminad", "(semillas:")  # fmt: skip
    words = json.dumps(catalog("report", "es"), ensure_ascii=False)
    for calque in calques:
        assert calque not in text and calque not in words, calque


@pytest.mark.parametrize("lang", ["en", "es"])
def test_alg2_factor_is_written_with_m_prime(lang):
    line = say("word_recal", lang)
    assert "m'/(m'−1)" in line.unescape() and "m/(m−1)" not in line.unescape()
    assert "m·p·q" in line


def test_every_explain_command_in_the_report_runs(rendered):
    """No placeholder shown as a command: each `bnlab explain …` of the page runs as written."""
    from bnlab.cli import main

    lang, results, page = rendered
    commands = [c for c in _parse(page).code if c.startswith("bnlab explain")]
    assert len(commands) >= 3
    shape = ",".join(map(str, results["layers"][0]["shape"]))
    assert any(c.startswith(f"bnlab explain {shape} ") for c in commands)
    for command in commands:
        assert not re.search(r"\b[A-Z](,[A-Z])+\b", command), command
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = main(command.split()[1:])
        assert rc == 0, command


def test_figures_link_their_full_size_png_in_both_languages(rendered):
    lang, _, page = rendered
    p = _parse(page)
    n_figures = page.count("<figure>")
    assert n_figures >= 8 and len(p.zoom) == n_figures
    assert all(src == href for src, href in p.zoom)
    assert set(p.zoom_text) == {t("report.fig_zoom", lang)}
    narrow = CSS[CSS.index("@media (max-width: 600px)") :]
    assert "figure > a img { max-width: none; }" in narrow and "td.l, th.l { white-space: nowrap; }" in narrow


# ------------------------------------------------------------------------------------------------ Chromium

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "es"])
def test_narrow_screen_figures_stay_legible_and_names_do_not_wrap(lang, tmp_path):
    """At 420 px: the page itself does not scroll sideways, each figure is drawn at its own pixel width (inside a
    box that scrolls), and no name in a table's first columns wraps onto a second line."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium and chromedriver installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from matplotlib.figure import Figure
    from selenium.webdriver.chrome.service import Service

    from bnlab.io import save_figure

    results = make_results(lang, tmp_path)
    png = tmp_path / "one.png"
    fig = Figure(figsize=(10, 4))
    fig.subplots().plot([0, 1], [0, 1])
    save_figure(fig, png, dpi=100)  # 1000 × 400 px, as the report's figures
    (tmp_path / "figures").mkdir()
    for src in re.findall(r'<img src="([^"]+)"', render(results, SETTINGS)):
        shutil.copy(png, tmp_path / src)
    (tmp_path / "index.html").write_text(render(results, SETTINGS), encoding="utf-8")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=420,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the local driver, no download
    try:
        driver.set_page_load_timeout(60)
        # a window is at least 500 px wide: emulate a 420 px phone screen instead
        metrics = {"width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": True}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.get((tmp_path / "index.html").as_uri())
        got = driver.execute_script("""
            const imgs = [...document.querySelectorAll('figure img')];
            const names = [...document.querySelectorAll('td.l')].filter(td => !td.querySelector('br'));
            return {
              viewport: document.documentElement.clientWidth,
              page: document.documentElement.scrollWidth,
              imgs: imgs.map(i => [i.complete ? i.naturalWidth : -1, i.getBoundingClientRect().width]),
              lines: names.map(td => {  // the height of the cell's text (not of its row), in lines
                const r = document.createRange();
                r.selectNodeContents(td);
                return [td.textContent, r.getBoundingClientRect().height / parseFloat(getComputedStyle(td).lineHeight)];
              }),
              zoom: [...document.querySelectorAll('a.zoom')].map(a => a.getBoundingClientRect().width > 0),
            };""")
    finally:
        driver.quit()
    assert got["viewport"] <= 420 and got["page"] <= got["viewport"] + 1, got["page"]
    drawn = got["imgs"]  # (natural width, drawn width incl. a 1 px border each side)
    assert drawn and all(natural == 1000 and abs(width - 1000) <= 2 for natural, width in drawn), drawn
    wrapped = [(text, lines) for text, lines in got["lines"] if lines > 1.5]  # one line is about 0.8
    assert not wrapped, wrapped
    assert got["zoom"] and all(got["zoom"])
