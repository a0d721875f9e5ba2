"""The book: the MkDocs site built from docs/ strictly, checked as files and in a real headless browser.

The site is built once per run into a temporary folder (``mkdocs build --strict``, as .ci/run does), then:
every page of the navigation exists in English and Spanish; the API reference lists every public name;
numbers on the pages are the ones bnlab and the committed results give; and in Chromium (the
distribution's package via Selenium, opened from disk, no network) the language switch, the navigation
and the embedded set-B page work with no console error. Skips with the reason when the docs tools
(``pip install -e ".[docs]"``) or Chromium are not installed.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
pytestmark = pytest.mark.slow  # one strict build of both languages: 20-60 s

#: the modules of the API reference (the brief of the book: every public name of these)
API_MODULES = [
    "bnlab",
    "bnlab.axes",
    "bnlab.moments",
    "bnlab.reference",
    "bnlab.nn",
    "bnlab.nn.functional",
    "bnlab.nn.renorm",
    "bnlab.distributed",
    "bnlab.inference",
    "bnlab.io",
    "bnlab.explain",
    "bnlab.explain_page",
    "bnlab.spec",
    "bnlab.vocabulary",
    "bnlab.i18n",
    "bnlab.i18n.numbers",
    "bnlab.i18n.words",
]

_TOOLS = ("mkdocs", "material", "mkdocs_static_i18n", "mkdocstrings", "mkdocstrings_handlers.python", "markdown_exec")


def nav_pages() -> list[str]:
    """The English source of every page in mkdocs.yml's navigation, in order."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:") : text.index("\nmarkdown_extensions:")]
    return re.findall(r":\s+(\S+\.md)\s*$", nav, flags=re.M)


def build_site(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # a PYTHONPATH already set comes first (the mutation runner points it at a planted copy of src/)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT / "src")]))
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = [m for m in _TOOLS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    if "failed" in _BUILD:  # one failed build fails every test of the module, without building again
        pytest.fail(_BUILD["failed"])
    out = tmp_path_factory.mktemp("book") / "site"
    start = time.perf_counter()
    done = build_site(out)
    if done.returncode != 0:
        _BUILD["failed"] = f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        pytest.fail(_BUILD["failed"])
    assert time.perf_counter() - start < 600
    return out


_BUILD: dict[str, str] = {}


def page_text(path: Path) -> str:
    """The visible text of a built page (tags dropped, entities decoded, whitespace collapsed)."""
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", raw)).split())


# ------------------------------------------------------------------------------------------- as files


def test_every_page_in_both_languages(site):
    pages = nav_pages()
    assert "index.md" in pages and "api.md" in pages and "tutorial.md" in pages and len(pages) >= 12
    for page in pages:
        stem = page.removesuffix(".md")
        assert (DOCS / f"{stem}.es.md").exists(), f"docs/{stem}.es.md is missing: every page exists in Spanish"
        en, es = site / f"{stem}.html", site / "es" / f"{stem}.html"
        assert en.exists() and es.exists(), stem
        assert '<html lang="en"' in en.read_text(encoding="utf-8") and '<html lang="es"' in es.read_text("utf-8")
        assert page_text(en) != page_text(es), stem
    assert not (DOCS / "tutorial.en.md").exists()  # page.md is English, page.es.md Spanish


def test_api_reference_lists_every_public_name(site):
    for lang_dir in (site, site / "es"):
        ids = set(re.findall(r'id="(bnlab[\w.]*)"', (lang_dir / "api.html").read_text(encoding="utf-8")))
        missing = []
        for name in API_MODULES:
            module = importlib.import_module(name)
            assert name in ids or name == "bnlab", name
            for public in module.__all__:
                if name == "bnlab":  # the top-level names are documented where they are defined (a table links them)
                    continue
                obj = getattr(module, public)
                home = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
                if f"{name}.{public}" not in ids and home not in ids:
                    missing.append(f"{name}.{public}")
        assert not missing, missing
        text = page_text(lang_dir / "api.html")
        for top in importlib.import_module("bnlab").__all__:
            assert f"`{top}`" in (DOCS / "api.md").read_text(encoding="utf-8") or top in text, top


def test_docstrings_render_as_markdown(site):
    raw = (site / "api.html").read_text(encoding="utf-8")
    assert ":func:" not in raw and ":class:" not in raw and ":mod:" not in raw  # Sphinx roles became code
    assert "&gt;&gt;&gt;" in raw and "<blockquote>" not in raw  # doctests are code blocks, not quotes
    assert "Batch Renormalization" in page_text(site / "api.html") or "BatchRenorm2d" in raw


def test_numbers_come_from_bnlab_and_the_committed_results(site):
    import bnlab
    from bnlab.report.small_batch_reference import REFERENCE

    for lang, folder in (("en", site), ("es", site / "es")):
        tutorial = page_text(folder / "tutorial.html")
        text = " ".join(bnlab.explain((32, 28, 28, 12), layout="NHWC", per="channel", lang=lang).text.split())
        assert text in tutorial  # executed when the site was built
        cell = REFERENCE["summary"]["channel"]["2"]["mean"] * 100
        assert (f"{cell:.1f}%" if lang == "en" else f"{cell:.1f} %".replace(".", ",")) in tutorial  # 55,7 % in Spanish

    fig1 = json.loads((DOCS / "data" / "paper-fig1-lr0.1.json").read_text(encoding="utf-8"))
    final = 100 * fig1["summary"]["activation"]["final_test_accuracy"]
    assert f"**{final:.1f}%**" not in page_text(site / "paper-fig1.html") and f"{final:.1f}%" in page_text(
        site / "paper-fig1.html"
    )
    cpu = json.loads((DOCS / "data" / "cpu.json").read_text(encoding="utf-8"))
    perf = page_text(site / "performance.html")
    assert all(f"{r['ratio']:.2f}" in perf for r in cpu["rows"]) and cpu["date"] in perf
    compiled = json.loads((DOCS / "data" / "compiled.json").read_text(encoding="utf-8"))
    assert all(f"{v['median_ms']:.1f}" in perf for res in compiled["results"].values() for v in res.values())
    demo = json.loads((DOCS / "data" / "demo.json").read_text(encoding="utf-8"))
    first = demo["runs"][0]
    assert f"{100 * first['test_accuracy']:.1f}% ({first['errors']})" in page_text(site / "demo.html")


def test_the_set_b_page_is_embedded_in_the_tutorial(site):
    for lang, folder in (("en", site), ("es", site / "es")):
        raw = (folder / "tutorial.html").read_text(encoding="utf-8")
        frames = re.findall(r'<iframe class="bnlab-setb"[^>]*srcdoc="([^"]*)"', raw)
        assert len(frames) == 1, lang
        page = html.unescape(frames[0])
        assert page.startswith("<!DOCTYPE html>") and f'<html lang="{lang}">' in page
        assert '"shape": ["32", "28", "28", "12"]' in page  # opened on the tutorial's tensor


# ------------------------------------------------------------------------------------------ in Chromium


@pytest.fixture(scope="module")
def browser(chromium):
    """The shared headless Chromium (tests/conftest.py: the local chromedriver, no Selenium Manager)."""
    chromium.set_window_size(1400, 1000)
    return chromium


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


_ES_WORDS = {"el", "la", "los", "las", "de", "del", "que", "con", "por", "una", "para", "es", "se", "y"}
_EN_WORDS = {"the", "of", "and", "to", "is", "with", "for", "that", "this", "one", "each", "are", "in"}


def _language(text: str) -> str:
    words = re.findall(r"[a-záéíóúñ]+", text.lower())
    es, en = sum(w in _ES_WORDS for w in words), sum(w in _EN_WORDS for w in words)
    return "es" if es > 2 * en else "en" if en > 2 * es else "?"


def _main_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, "article.md-content__inner").text


def _follow(driver, link_text: str) -> None:
    """Click the navigation entry whose text is ``link_text`` and wait for that page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    links = [a for a in driver.find_elements(By.CSS_SELECTOR, "nav.md-nav--primary a.md-nav__link")
             if a.get_attribute("textContent").strip() == link_text]  # fmt: skip
    assert links, f"no navigation entry {link_text!r}"
    href = links[0].get_attribute("href")
    driver.execute_script("arguments[0].click();", links[0])
    WebDriverWait(driver, 30).until(lambda d: d.current_url.split("#")[0] == href.split("#")[0])
    assert driver.execute_script("return document.readyState") == "complete"


def test_site_in_the_browser(site, browser):
    """Open the built site from disk, switch language, follow the navigation, use the embedded page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get((site / "index.html").as_uri())
    assert _errors(browser) == []
    assert _language(_main_text(browser)) == "en" and "bnlab" in browser.title

    # the language switch (Material's selector, filled by mkdocs-static-i18n)
    switch = browser.find_elements(By.CSS_SELECTOR, 'a[hreflang="es"]')
    assert switch, "no link to the Spanish site"
    browser.execute_script("arguments[0].click();", switch[0])
    WebDriverWait(browser, 30).until(lambda d: "/es/" in d.current_url)
    assert _errors(browser) == []
    assert _language(_main_text(browser)) == "es", _main_text(browser)[:300]
    assert "minilote" in _main_text(browser)

    visited = []
    for entry in ("Tutorial", "La demo y su informe", "Rendimiento", "Referencia de la API", "Historial de cambios"):
        _follow(browser, entry)
        visited.append(browser.current_url)
        assert "/es/" in browser.current_url, entry
        assert _errors(browser) == [], (entry, _errors(browser))
        text = _main_text(browser)
        if entry not in ("Referencia de la API", "Historial de cambios"):  # docstrings and changelog are English
            assert _language(text) == "es", (entry, text[:300])
    assert len(set(visited)) == 5

    # the interactive set-B page inside the Spanish tutorial: it draws, lights a set B, and speaks Spanish
    _follow(browser, "Tutorial")
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.bnlab-setb")
    browser.execute_script("arguments[0].scrollIntoView();", frame)
    browser.switch_to.frame(frame)
    try:
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "conjunto B" in body
        cells = browser.find_elements(By.CSS_SELECTOR, "#tensor .v")
        assert cells, "the page drew no values"
        browser.execute_script("arguments[0].click();", cells[70])
        assert "sel" in cells[70].get_attribute("class").split()
        # per channel on (32, 28, 28, 12): the set B of a value is its channel in every drawn example and location
        # (the page draws 8 of the 32 examples and 8×8 of the 28×28 locations)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#tensor .v.lit")) == 8 * 8 * 8
    finally:
        browser.switch_to.default_content()
    assert _errors(browser) == []

    # and back to English, on the same page
    back = browser.find_elements(By.CSS_SELECTOR, 'a[hreflang="en"]')
    browser.execute_script("arguments[0].click();", back[0])
    WebDriverWait(browser, 30).until(lambda d: "/es/" not in d.current_url)
    assert browser.current_url.endswith("tutorial.html")
    assert _language(_main_text(browser)) == "en" and _errors(browser) == []
    _follow(browser, "API reference")
    assert "bnlab.axes" in _main_text(browser) and _errors(browser) == []
