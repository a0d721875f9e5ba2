"""The interactive set-B page in a real headless browser (Chromium from the distribution, via Selenium).

The page is loaded from disk; shapes and members are picked with the page's own controls, values are
clicked, and the lit cells and counts are compared with bnlab.axes.norm_set / bnlab.explain computed
here in Python. No browser is downloaded: the tests skip (with the reason) when Chromium, its driver or
Selenium is not installed; .ci/run installs them.
"""

from __future__ import annotations

import itertools
import math
import shutil

import numpy as np
import pytest

import bnlab
from bnlab.axes import norm_set
from bnlab.explain_page import PAGE_MEMBERS, page_html, write_page


def _find(*names):
    return next((p for p in map(shutil.which, names) if p), None)


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("chromedriver")


# ------------------------------------------------------------------------------ without a browser


def test_page_is_self_contained(tmp_path):
    for lang in ("en", "es"):
        html = write_page(tmp_path / f"p.{lang}.html", lang=lang).read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>") and f'<html lang="{lang}">' in html
        low = html.lower()
        for ref in ("http:", "https:", "<link", " src=", "@import", "url("):
            assert ref not in low, ref
    assert "conjunto B" in (tmp_path / "p.es.html").read_text(encoding="utf-8")


def test_page_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="layout must be NHWC or NCHW"):
        page_html(layout="NCL")
    with pytest.raises(ValueError, match="4 positive sizes"):
        page_html(shape=(4, 3, 3))
    with pytest.raises(ValueError, match="does not divide the 8 channels"):
        page_html(norm="group", groups=3)
    with pytest.raises(ValueError, match="unknown lang"):
        page_html(lang="fr")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium and chromedriver installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("page")
    return {lang: write_page(d / f"setb.{lang}.html", lang=lang).resolve().as_uri() for lang in ("en", "es")}


def _console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _open(driver, url):
    driver.get(url)
    _console_errors(driver)  # drain the log
    driver.set_window_size(1000, 900)


def _set_controls(driver, shape, layout, member, groups=None):
    from selenium.webdriver.support.ui import Select

    box = driver.find_element("id", "shape")
    box.clear()
    box.send_keys(",".join(map(str, shape)))
    Select(driver.find_element("id", "layout")).select_by_value(layout)
    if groups is not None:
        g = driver.find_element("id", "groups")
        if not g.is_enabled():  # enabled only for group norm: pick it first
            Select(driver.find_element("id", "norm")).select_by_value("group")
        g.clear()
        g.send_keys(str(groups))
    Select(driver.find_element("id", "norm")).select_by_value(member)


def _cell(driver, n, c, loc):
    return driver.find_element("css selector", f'#tensor .v[data-n="{n}"][data-c="{c}"][data-loc="{loc}"]')


def _value(driver, element_id):
    return driver.find_element("id", element_id).get_attribute("data-value")


def _lit(driver):
    """(n, c, loc) of every lit cell, and the selected one, read from the DOM."""
    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll('#tensor .v')).map(b => "
        "[+b.dataset.n, +b.dataset.c, +b.dataset.loc, b.classList.contains('lit'), b.classList.contains('sel')])"
    )
    lit = {tuple(c[:3]) for c in cells if c[3]}
    sel = [tuple(c[:3]) for c in cells if c[4]]
    return lit, sel, len(cells)


def _expected_set(shape, layout, member, groups, sel):
    """The set B of the value sel = (n, c, loc), from bnlab.axes.norm_set, as page cells (n, c, loc)."""
    norm, per = PAGE_MEMBERS[member]
    s = norm_set(shape, layout, norm, per=per, groups=groups if norm == "group" else None)
    ids = np.arange(math.prod(shape)).reshape(shape)
    kept = [a for a in range(len(s.split_shape)) if a not in s.axes]
    rows = np.moveaxis(ids.reshape(s.split_shape), kept, list(range(len(kept)))).reshape(s.num_sets, s.set_size)
    c_axis = layout.index("C")
    W = shape[[a for a in (1, 2, 3) if a != c_axis][1]]

    def flat(n, c, loc):
        idx = {"N": n, "C": c, "H": loc // W, "W": loc % W}
        return int(ids[tuple(idx[k] for k in layout)])

    row = next(r for r in rows if flat(*sel) in r)
    members = set(row.tolist())
    cells = set()
    for n, c, loc in itertools.product(
        range(shape[0]), range(shape[c_axis]), range(math.prod(shape) // shape[0] // shape[c_axis])
    ):
        if flat(n, c, loc) in members:
            cells.add((n, c, loc))
    return s, cells


# the page counts in BigInt: read its numbers back as exact decimal strings (sizes are strings, axes numbers)
_EXACT = "const exact = v => Array.isArray(v) ? v.map(exact) : typeof v === 'bigint' ? v.toString() : v; "


def _strs(sizes):
    return [str(n) for n in sizes]


CASES = [
    ((4, 3, 3, 8), "NHWC", "batch-channel", None),
    ((4, 3, 3, 8), "NHWC", "batch-activation", None),
    ((4, 3, 3, 8), "NHWC", "layer", None),
    ((4, 3, 3, 8), "NHWC", "instance", None),
    ((4, 3, 3, 8), "NHWC", "group", 4),
    ((3, 6, 2, 5), "NCHW", "group", 3),
    ((3, 6, 2, 5), "NCHW", "batch-channel", None),
    ((3, 6, 2, 5), "NCHW", "instance", None),
    ((2, 4, 3, 2), "NCHW", "layer", None),
    ((5, 2, 4, 6), "NHWC", "group", 2),
]


@pytest.mark.slow
def test_rule_agrees_with_bnlab_axes_for_many_shapes(browser, pages):
    _open(browser, pages["en"])
    cases = []
    for n, a, b, c in itertools.product((1, 2, 5), (1, 3), (2, 4), (1, 4, 6, 12)):
        for layout in ("NHWC", "NCHW"):
            shape = (n, a, b, c) if layout == "NHWC" else (n, c, a, b)
            for member in PAGE_MEMBERS:
                groups = [g for g in range(1, c + 1) if c % g == 0] if member == "group" else [None]
                cases.extend((shape, layout, member, g) for g in groups)
    got = browser.execute_script(
        _EXACT + "return arguments[0].map(([s, l, m, g]) => { const r = window.bnlabNormSet(s, l, m, g); return "
        "exact([r.axes, r.split, r.stats, r.numSets, r.setSize, r.numParams, r.dependsOnBatch]); });",
        [[list(s), lay, m, g] for s, lay, m, g in cases],
    )
    assert len(got) == len(cases) > 500
    for (shape, layout, member, g), r in zip(cases, got, strict=True):
        norm, per = PAGE_MEMBERS[member]
        s = norm_set(shape, layout, norm, per=per, groups=g)
        e = bnlab.explain(shape, layout=layout, per=per, norm=norm, groups=g)
        expect = [list(s.axes), _strs(s.split_shape), _strs(s.stats_shape), str(s.num_sets), str(s.set_size),
                  str(e.num_params), s.depends_on_batch]  # fmt: skip
        assert r == expect, (shape, layout, member, g)
    assert not _console_errors(browser)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "es"])
def test_clicking_a_value_lights_its_set_and_counts_match_explain(browser, pages, lang):
    _open(browser, pages[lang])
    for shape, layout, member, groups in CASES:
        _set_controls(browser, shape, layout, member, groups)
        N, C = shape[0], shape[layout.index("C")]
        locs = math.prod(shape) // N // C
        for sel in [(0, 0, 0), (N - 1, C - 1, locs - 1), (N // 2, C // 2, locs // 2)]:
            browser.find_element(
                "css selector", f'#tensor .v[data-n="{sel[0]}"][data-c="{sel[1]}"][data-loc="{sel[2]}"]'
            ).click()
            lit, selected, drawn = _lit(browser)
            s, expected = _expected_set(shape, layout, member, groups, sel)
            assert drawn == math.prod(shape)
            assert selected == [sel]
            assert lit == expected, (shape, layout, member, sel)
            assert int(_value(browser, "lit-count")) == len(expected) == s.set_size
        norm, per = PAGE_MEMBERS[member]
        e = bnlab.explain(shape, layout=layout, per=per, norm=norm, groups=groups, lang=lang)
        assert int(_value(browser, "n-sets")) == e.num_sets
        assert int(_value(browser, "set-size")) == e.set_size
        assert int(_value(browser, "params")) == e.num_params
        assert _value(browser, "depends") == ("yes" if e.depends_on_batch else "no")
        assert _value(browser, "axes") == ",".join(map(str, e.axes))
        # the numbers are written out: m' = ... = set size
        assert browser.find_element("id", "set-size").text.endswith(f"= {e.set_size}")  # sets of < 1000 here
    assert not _console_errors(browser)


@pytest.mark.slow
def test_hover_and_other_variant_keep_the_value(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains

    _open(browser, pages["en"])
    shape, layout = (4, 3, 3, 8), "NHWC"
    _set_controls(browser, shape, layout, "batch-channel", groups=4)
    cell = browser.find_element("css selector", '#tensor .v[data-n="2"][data-c="5"][data-loc="4"]')
    ActionChains(browser).move_to_element(cell).perform()
    lit, selected, _ = _lit(browser)
    assert selected == [(2, 5, 4)]
    assert lit == _expected_set(shape, layout, "batch-channel", 4, (2, 5, 4))[1]
    seen = []
    for _ in range(len(PAGE_MEMBERS)):
        browser.find_element("id", "other").click()
        member = browser.find_element("id", "norm").get_attribute("value")
        seen.append(member)
        lit, selected, _ = _lit(browser)
        assert selected == [(2, 5, 4)]  # the same value ...
        assert lit == _expected_set(shape, layout, member, 4, (2, 5, 4))[1]  # ... in the other member's set
    assert seen == ["batch-activation", "layer", "instance", "group", "batch-channel"]
    assert "x[2, 1, 1, 5]" in browser.find_element("id", "selected").text
    assert not _console_errors(browser)


@pytest.mark.slow
def test_bad_input_shows_a_message_not_an_exception(browser, pages):
    _open(browser, pages["es"])
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "group", groups=3)
    assert "G = 3 no divide los 8 canales; elige G entre 1, 2, 4, 8" in browser.find_element("id", "error").text
    box = browser.find_element("id", "shape")
    box.clear()
    box.send_keys("4,3,x")
    assert "4 enteros positivos" in browser.find_element("id", "error").text
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "group", groups=2)
    assert browser.find_element("id", "error").text == ""
    assert int(_value(browser, "n-sets")) == 8
    assert not _console_errors(browser)


@pytest.mark.slow
def test_usable_at_420_px(browser, pages):
    _open(browser, pages["en"])
    browser.set_window_size(420, 900)
    try:
        _set_controls(browser, (2, 4, 4, 16), "NHWC", "group", groups=4)
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways at 420 px: {width}"
        for el_id in ("shape", "layout", "norm", "groups", "other"):
            rect = browser.execute_script(
                "const r = document.getElementById(arguments[0]).getBoundingClientRect(); return [r.left, r.right];",
                el_id,
            )
            assert 0 <= rect[0] and rect[1] <= width[1], (el_id, rect)
        cell = browser.find_element("css selector", '#tensor .v[data-n="1"][data-c="13"][data-loc="5"]')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        cell.click()
        lit, selected, _ = _lit(browser)
        assert selected == [(1, 13, 5)]
        assert lit == _expected_set((2, 4, 4, 16), "NHWC", "group", 4, (1, 13, 5))[1]
    finally:
        browser.set_window_size(1000, 900)
    assert not _console_errors(browser)


def test_cli_writes_the_page(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bnlab", "explain", "8,4,4,16", "--norm", "group", "--groups", "4", "--lang", "es",
         "--html", str(tmp_path / "p.html")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "p.html" in out.stdout
    html = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert '"member": "group"' in html and '"groups": "4"' in html and '"shape": ["8", "4", "4", "16"]' in html
    bad = subprocess.run(
        [sys.executable, "-m", "bnlab", "explain", "--html", str(tmp_path / "missing" / "p.html"), "--lang", "en"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "--html" in bad.stderr and not (tmp_path / "missing").exists()
    none = subprocess.run([sys.executable, "-m", "bnlab", "explain", "--lang", "en"], capture_output=True, text=True)
    assert none.returncode != 0 and "SHAPE" in none.stderr


def test_doctest_of_the_page_module():
    import doctest

    import bnlab.explain_page

    result = doctest.testmod(bnlab.explain_page, verbose=False)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
def test_large_shapes_are_drawn_in_part_and_counted_in_full(browser, pages):
    _open(browser, pages["en"])
    shape = (32, 28, 28, 16)
    # value (0, 0, 0) selected; drawn: 8 samples, 16 channels, 8×8 of the 28×28 locations
    lit_drawn = {"batch-channel": 8 * 64, "batch-activation": 8, "layer": 16 * 64, "instance": 64, "group": 4 * 64}
    for member in PAGE_MEMBERS:
        _set_controls(browser, shape, "NHWC", member, groups=4 if member == "group" else None)
        norm, per = PAGE_MEMBERS[member]
        e = bnlab.explain(shape, layout="NHWC", per=per, norm=norm, groups=4 if norm == "group" else None)
        assert int(_value(browser, "n-sets")) == e.num_sets
        assert int(_value(browser, "set-size")) == e.set_size
        assert int(_value(browser, "params")) == e.num_params
        lit, selected, drawn = _lit(browser)
        assert drawn == 8 * 16 * 8 * 8
        assert selected == [(0, 0, 0)]
        assert len(lit) == lit_drawn[member] == int(_value(browser, "lit-count"))
    assert browser.find_element("id", "set-size").text == "m' = (C/G)·p·q = 4·28·28 = 3,136"
    assert "drawn: 8 of 32 samples, 8×8 of 28×28 locations" in browser.find_element("id", "tensor").text
    assert not _console_errors(browser)


@pytest.mark.parametrize(
    "lang, lit_text, more_text",
    [
        ("en", "1 value drawn lit (of 1 in the set)", "drawn: 1 of 1 sample, 1×8 of 1×12 locations"),
        ("es", "1 valor iluminado en el dibujo (de 1 en el conjunto)", "en el dibujo: 1 de 1 ejemplo,"),
    ],
)
def test_counts_of_one_read_in_the_singular(browser, pages, lang, lit_text, more_text):
    _open(browser, pages[lang])
    # one sample, one channel: batch norm per activation lights a set of 1 value; W = 12 is drawn in part
    _set_controls(browser, (1, 1, 12, 1), "NHWC", "batch-activation", None)
    assert int(_value(browser, "lit-count")) == 1 == int(_value(browser, "set-size"))
    assert browser.find_element("id", "lit-count").text == lit_text
    assert more_text in browser.find_element("id", "tensor").text
    _set_controls(browser, (2, 1, 12, 1), "NHWC", "batch-activation", None)
    plural = {"en": "2 values drawn lit (of 2 in the set)", "es": "2 valores iluminados en el dibujo (de 2 en"}[lang]
    assert plural in browser.find_element("id", "lit-count").text
    assert not _console_errors(browser)


def test_spanish_numbers_are_grouped_as_explain_groups_them(browser, pages):
    from bnlab.i18n.numbers import integer

    _open(browser, pages["es"])
    _set_controls(browser, (32, 28, 28, 16), "NHWC", "group", groups=4)  # sets of 4·28·28 = 3136 values
    assert browser.find_element("id", "set-size").text.replace("\xa0", " ").endswith("= " + integer(3136, "es"))
    _set_controls(browser, (32, 28, 28, 16), "NHWC", "batch-activation")  # 28·28·16 = 12 544 sets
    sets = browser.find_element("id", "n-sets").text.replace("\xa0", " ")
    assert sets.startswith(integer(12544, "es") + " ") and integer(12544, "es") == "12 544"
    assert not _console_errors(browser)


# ------------------------------------------------------------------ boundaries, agreement, escapes, exact counts


def _text(driver, element_id):
    """The text an element shows, with the page's no-break group spaces read as spaces."""
    return driver.find_element("id", element_id).text.replace("\xa0", " ")


@pytest.mark.parametrize("lang", ["en", "es"])
def test_numbers_group_from_five_digits_on_in_spanish(browser, pages, lang):
    from bnlab.i18n.numbers import integer

    _open(browser, pages[lang])
    for shape, sets in (((1, 100, 100, 1), 10_000), ((1, 9, 11, 101), 9999)):  # H·W·C sets B per activation
        _set_controls(browser, shape, "NHWC", "batch-activation")
        assert int(_value(browser, "n-sets")) == sets
        assert _text(browser, "n-sets").startswith(integer(sets, lang) + " — ")
    assert integer(10_000, "es") == "10 000" and integer(9999, "es") == "9999"
    assert not _console_errors(browser)


@pytest.mark.parametrize(
    "lang, tall, one",
    [
        ("en", "drawn: 1 of 1 sample, 8×1 of 12×1 locations", "drawn: 8 of 9 samples, 1×1 of 1×1 location"),
        ("es", "en el dibujo: 1 de 1 ejemplo, 8×1 de 12×1 ubicaciones",
         "en el dibujo: 8 de 9 ejemplos, 1×1 de 1×1 ubicación"),
    ],
    ids=["en", "es"],
)  # fmt: skip
def test_locations_agree_with_h_times_w(browser, pages, lang, tall, one):
    """W = 1 but H = 12: 12 locations (plural); H×W = 1: one location (singular)."""
    _open(browser, pages[lang])
    _set_controls(browser, (1, 12, 1, 1), "NHWC", "batch-channel")
    assert _text(browser, "tensor").endswith(tall)
    _set_controls(browser, (9, 1, 1, 1), "NHWC", "batch-channel")
    assert _text(browser, "tensor").endswith(one)
    assert not _console_errors(browser)


def test_one_reduced_axis_is_a_tuple_of_one(browser, pages):
    _open(browser, pages["en"])
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "batch-activation")
    assert _text(browser, "axes") == "(0,)" == repr(bnlab.explain((4, 3, 3, 8), per="activation").axes)
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "batch-channel")
    assert _text(browser, "axes") == "(0, 1, 2)"
    assert not _console_errors(browser)


def test_default_groups_is_the_smallest_divisor_above_one():
    from bnlab.explain_page import default_groups

    assert [default_groups(c) for c in (1, 2, 3, 4, 6, 8, 9, 15, 49, 7)] == [1, 1, 1, 2, 2, 2, 3, 3, 7, 1]
    for C, G in ((6, 2), (9, 3), (7, 1)):
        assert f'"groups": "{G}"' in page_html(shape=(4, 3, 3, C), norm="group")
    # a prime C of 19 digits answers at once: the search stops at 10**6
    assert '"groups": "1"' in page_html(shape=(1, 1, 1, 2**61 - 1), norm="group")


@pytest.mark.parametrize("C, G", [(8, 2), (9, 3), (7, 1), (2**61 - 1, 1)])
def test_other_variant_picks_the_same_default_groups(browser, pages, C, G):
    """'Other variant' steps to group norm with G empty: the page picks what page_html(norm='group') picks."""
    from bnlab.explain_page import default_groups

    _open(browser, pages["en"])
    _set_controls(browser, (4, 3, 3, C), "NHWC", "instance")
    assert browser.find_element("id", "groups").get_attribute("value") == ""
    browser.find_element("id", "other").click()
    assert browser.find_element("id", "norm").get_attribute("value") == "group"
    assert browser.find_element("id", "groups").get_attribute("value") == str(G) == str(default_groups(C))
    assert _value(browser, "n-sets") == str(4 * G)
    assert not _console_errors(browser)


def test_a_size_of_zero_is_refused_with_a_message(browser, pages):
    with pytest.raises(ValueError, match="4 positive sizes"):
        page_html(shape=(4, 0, 3, 8))
    _open(browser, pages["es"])
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "batch-channel")
    assert browser.find_elements("css selector", "#tensor .v")
    for typed in ("4,0,3,8", "0,3,3,8", "4,3,3,0"):
        box = browser.find_element("id", "shape")
        box.clear()
        box.send_keys(typed)
        assert _text(browser, "error") == f"la forma deben ser 4 enteros positivos separados por comas, como " \
                                          f"8,4,4,16; se recibió '{typed}'"  # fmt: skip
        assert not browser.find_elements("css selector", "#tensor .v")
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "group", groups=0)
    assert _text(browser, "error") == "G debe ser un entero positivo; se recibió 0"
    assert not _console_errors(browser)


def test_typed_text_is_shown_as_typed_in_the_message(browser, pages):
    """'$&' and "$'" are replacement patterns of String.replace: the message must still show what was typed."""
    _open(browser, pages["en"])
    box = browser.find_element("id", "shape")
    for typed in ("4,$&,3", "4,$',3", "$$"):
        box.clear()
        box.send_keys(typed)
        assert _text(browser, "error").endswith(f"— got '{typed}'"), typed
    assert not _console_errors(browser)


def test_markup_in_the_texts_is_shown_as_text(browser, tmp_path, monkeypatch):
    """A title and texts holding '</script>', '&amp;', '<!--' and '<script>' read in the DOM exactly as written.

    An unclosed '<!-- <script>' inside the script would make the page's own '</script>' not end it."""
    from bnlab import explain_page

    title = "B </script> & &amp; <!-- <b>x</b> <script>"
    intro = "intro </script><!-- <script> &lt; &amp;"
    en = dict(explain_page._TEXT["en"], title=title, intro=intro, foot="</SCRIPT >&")
    monkeypatch.setitem(explain_page._TEXT, "en", en)
    url = write_page(tmp_path / "markup.html", lang="en").resolve().as_uri()
    _open(browser, url)
    shown = browser.execute_script(
        "return [document.title, document.querySelector('h1').textContent, document.getElementById('intro')"
        ".textContent, document.getElementById('foot').textContent, document.querySelectorAll('#tensor .v').length]"
    )
    assert shown == [title, title, intro, "</SCRIPT >&", 4 * 3 * 3 * 8]
    assert not _console_errors(browser)


HUGE = 9_007_199_254_740_993  # 2**53 + 1: the first whole number a double cannot hold


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "es"])
def test_counts_are_exact_beyond_two_to_the_53(browser, tmp_path, lang):
    """`bnlab explain 9007199254740993,3,3,8 --html`: the page's counts are explain's, digit for digit."""
    import subprocess
    import sys

    from bnlab.i18n.numbers import integer

    path = tmp_path / "huge.html"
    shape = (HUGE, 3, 3, 8)
    subprocess.run([sys.executable, "-m", "bnlab", "explain", ",".join(map(str, shape)), "--lang", lang, "--html",
                    str(path)], check=True, capture_output=True)  # fmt: skip
    _open(browser, path.resolve().as_uri())
    for member in PAGE_MEMBERS:
        if member != "batch-channel":  # first as the CLI opened it, then through the controls
            _set_controls(browser, shape, "NHWC", member, groups=2 if member == "group" else None)
        norm, per = PAGE_MEMBERS[member]
        e = bnlab.explain(shape, layout="NHWC", per=per, norm=norm, groups=2 if norm == "group" else None, lang=lang)
        assert [_value(browser, k) for k in ("n-sets", "set-size", "params")] == [
            str(e.num_sets), str(e.set_size), str(e.num_params)], member  # fmt: skip
        assert _text(browser, "n-sets").startswith(integer(e.num_sets, lang) + " — ")
        assert _text(browser, "params").endswith("= " + integer(e.num_params, lang))
        if member != "batch-activation":
            assert _text(browser, "set-size").endswith("= " + integer(e.set_size, lang))
        assert integer(e.set_size, lang) in " ".join(e.text.split())  # ... as the text writes it
    assert _text(browser, "set-size") == "m' = (C/G)·p·q = 4·3·3 = 36"
    _set_controls(browser, shape, "NHWC", "batch-channel")
    assert _text(browser, "set-size").startswith(f"m' = m·p·q = {HUGE}·3·3 = ")
    assert integer(81_064_793_292_668_937, lang) in _text(browser, "set-size")
    assert f" {integer(HUGE, lang)} " in _text(browser, "tensor")  # drawn: 8 of 9,007,199,254,740,993 samples
    assert not _console_errors(browser)


def test_values_are_told_apart_in_a_row_longer_than_two_to_the_53(browser, pages):
    """W = 2**53 + 1: every drawn value has its own location index, and its title names its own (h, w)."""
    _open(browser, pages["en"])
    shape = (2, 2, HUGE, 3)
    _set_controls(browser, shape, "NHWC", "batch-activation")
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tensor .v')).map(b => [+b.dataset.n, +b.dataset.c, "
        "b.dataset.loc, b.title])"
    )
    locs = {loc for _, _, loc, _ in cells}
    assert locs == {str(h * HUGE + w) for h in range(2) for w in range(8)}
    for n, c, loc, title in cells:
        assert title == f"x[{n}, {int(loc) // HUGE}, {int(loc) % HUGE}, {c}]"
    sel = browser.find_element("css selector", f'#tensor .v[data-n="1"][data-c="2"][data-loc="{HUGE + 1}"]')
    sel.click()
    lit = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tensor .v.lit')).map(b => [+b.dataset.n, +b.dataset.c, "
        "b.dataset.loc])"
    )
    assert sorted(map(tuple, lit)) == [(0, 2, str(HUGE + 1)), (1, 2, str(HUGE + 1))]
    assert _text(browser, "selected") == "selected value: x[1, 1, 1, 2]"
    assert not _console_errors(browser)


def test_a_wrong_groups_for_a_huge_channel_count_answers_at_once(browser, pages):
    """The divisors are listed up to C = 10**12 (sqrt(C) steps), and not listed beyond: never a hung page."""
    import time

    _open(browser, pages["en"])
    start = time.monotonic()
    _set_controls(browser, (2, 1, 1, 999_999_999_989), "NHWC", "group", groups=2)  # the largest prime below 10**12
    assert _text(browser, "error") == "G = 2 does not divide the 999999999989 channels; pick G among 1, " \
                                      "999999999989"  # fmt: skip
    _set_controls(browser, (2, 1, 1, 2**61 - 1), "NHWC", "group", groups=3)
    assert _text(browser, "error") == "G = 3 does not divide the 2305843009213693951 channels; pick a divisor of C"
    assert time.monotonic() - start < 60
    _set_controls(browser, (2, 1, 1, 2 * HUGE), "NHWC", "group", groups=HUGE)
    assert _text(browser, "error") == "" and _value(browser, "n-sets") == str(2 * HUGE)
    assert _text(browser, "member") == f"group norm, G = {HUGE}: one set per sample and group of channels"
    assert _text(browser, "set-size") == "m' = (C/G)·p·q = 2·1·1 = 2"
    assert not _console_errors(browser)


def test_english_and_spanish_tables_have_the_same_keys_and_blanks():
    """Every text table of the page: the same keys in both languages, the same {fields} in each (explain's words
    are in the explain catalogs, checked by tests/test_i18n.py)."""
    import re

    from bnlab.explain_page import _TEXT

    for table in (_TEXT,):
        assert table["en"].keys() == table["es"].keys()
        for key, en in table["en"].items():
            fields = [re.findall(r"\{(\w+)", s) for s in (en, table["es"][key])]
            assert sorted(fields[0]) == sorted(fields[1]), key
