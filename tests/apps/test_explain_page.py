"""The interactive set-B page in a real headless browser (Chromium from the distribution, via Selenium).

The page is loaded from disk; shapes and variants are picked with the page's own controls, values are
hovered, clicked and reached with the keyboard, and the highlighted cells and counts are compared with
bnlab.axes.norm_set / bnlab.explain computed here in Python. No browser is downloaded and Selenium Manager is
never run (tests/conftest.py starts the local chromedriver; a test checks it): the tests skip (with the
reason) when Chromium, its driver or Selenium is not installed; .ci/run installs them.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bnlab
from bnlab.axes import norm_set
from bnlab.explain_page import PAGE_MEMBERS, page_html, write_page

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
    with pytest.raises(ValueError, match="layout must be one of NC, NCL, NLC, NCHW, NHWC, NCDHW, NDHWC"):
        page_html(layout="NXHW")
    with pytest.raises(ValueError, match="3 positive sizes in NCL order"):
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
def browser(chromium):
    """The shared headless Chromium of tests/conftest.py (the local chromedriver, no Selenium Manager)."""
    chromium.set_window_size(1000, 900)
    return chromium


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
    """Type the shape, pick the layout (switching it reorders the shape: the shape is typed again) and the
    variant, and G when given."""
    from selenium.webdriver.support.ui import Select

    box = driver.find_element("id", "shape")

    def type_shape():
        box.clear()
        box.send_keys(",".join(map(str, shape)))

    type_shape()
    lay = Select(driver.find_element("id", "layout"))
    if lay.first_selected_option.get_attribute("value") != layout:
        lay.select_by_value(layout)
        type_shape()
    if groups is not None:
        g = driver.find_element("id", "groups")
        if not g.is_enabled():  # enabled only for group norm: pick it first
            Select(driver.find_element("id", "norm")).select_by_value("group")
        g.clear()
        g.send_keys(str(groups))
    Select(driver.find_element("id", "norm")).select_by_value(member)
    assert driver.find_element("id", "layout").get_attribute("value") == layout


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


def _spatial(shape, layout):
    c_axis = layout.index("C")
    return [n for i, n in enumerate(shape) if i not in (0, c_axis)]


def _expected_set(shape, layout, member, groups, sel):
    """The set B of the value sel = (n, c, loc), from bnlab.axes.norm_set, as page cells (n, c, loc); loc counts
    the locations (L, H×W or D×H×W) in row-major order."""
    norm, per = PAGE_MEMBERS[member]
    s = norm_set(shape, layout, norm, per=per, groups=groups if norm == "group" else None)
    ids = np.arange(math.prod(shape)).reshape(shape)
    kept = [a for a in range(len(s.split_shape)) if a not in s.axes]
    rows = np.moveaxis(ids.reshape(s.split_shape), kept, list(range(len(kept)))).reshape(s.num_sets, s.set_size)
    c_axis = layout.index("C")
    sp = _spatial(shape, layout)

    def flat(n, c, loc):
        where = iter(np.unravel_index(loc, sp) if sp else ())
        return int(ids[tuple(n if a == 0 else c if a == c_axis else int(next(where)) for a in range(len(shape)))])

    row = next(r for r in rows if flat(*sel) in r)
    members = set(row.tolist())
    cells = set()
    for n, c, loc in itertools.product(range(shape[0]), range(shape[c_axis]), range(math.prod(sp))):
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
    # a dense layer (N, C), sequences (N, L, C / N, C, L) and volumes (N, D, H, W, C / N, C, D, H, W)
    ((6, 4), "NC", "batch-channel", None),
    ((6, 4), "NC", "batch-activation", None),
    ((6, 4), "NC", "group", 2),
    ((3, 5, 4), "NLC", "batch-activation", None),
    ((3, 4, 5), "NCL", "instance", None),
    ((3, 4, 5), "NCL", "layer", None),
    ((2, 3, 2, 2, 4), "NDHWC", "group", 2),
    ((2, 4, 2, 2, 3), "NCDHW", "batch-channel", None),
    ((2, 4, 2, 2, 3), "NCDHW", "batch-activation", None),
]


@pytest.mark.slow
def test_rule_agrees_with_bnlab_axes_for_many_shapes(browser, pages):
    _open(browser, pages["en"])
    cases = []
    for n, a, b, c in itertools.product((1, 2, 5), (1, 3), (2, 4), (1, 4, 6, 12)):
        sp_by_layout = {"NC": (), "NLC": (a,), "NCL": (a,), "NHWC": (a, b), "NCHW": (a, b), "NDHWC": (b, a, 2),
                        "NCDHW": (b, a, 2)}  # fmt: skip
        for layout, sp in sp_by_layout.items():
            shape = (n, *sp, c) if layout.endswith("C") else (n, c, *sp)
            for member in PAGE_MEMBERS:
                groups = [g for g in range(1, c + 1) if c % g == 0] if member == "group" else [None]
                cases.extend((shape, layout, member, g) for g in groups)
    got = browser.execute_script(
        _EXACT + "return arguments[0].map(([s, l, m, g]) => { const r = window.bnlabNormSet(s, l, m, g); return "
        "exact([r.axes, r.split, r.stats, r.numSets, r.setSize, r.numParams, r.dependsOnBatch]); });",
        [[list(s), lay, m, g] for s, lay, m, g in cases],
    )
    assert len(got) == len(cases) > 1500
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
    cell.click()  # hover previews; a click pins the value, so moving to the button keeps it
    seen = []
    for _ in range(len(PAGE_MEMBERS)):
        browser.find_element("id", "other").click()
        member = browser.find_element("id", "norm").get_attribute("value")
        seen.append(member)
        lit, selected, _ = _lit(browser)
        assert selected == [(2, 5, 4)]  # the same value ...
        assert lit == _expected_set(shape, layout, member, 4, (2, 5, 4))[1]  # ... in the other member's set
    assert seen == ["batch-activation", "layer", "instance", "group", "batch-channel"]
    assert "pinned value: x[2, 1, 1, 5], indices in NHWC order (n, h, w, c)" == _text(browser, "selected")
    assert not _console_errors(browser)


@pytest.mark.slow
def test_bad_input_shows_a_message_not_an_exception(browser, pages):
    _open(browser, pages["es"])
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "group", groups=3)
    assert "G = 3 no divide los 8 canales; elige G entre 1, 2, 4, 8" in browser.find_element("id", "error").text
    box = browser.find_element("id", "shape")
    box.clear()
    box.send_keys("4,3,y")  # (x separates sizes: "4,3,x" is the 2-D shape 4×3)
    assert "de 2 a 5 enteros positivos" in browser.find_element("id", "error").text
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
    assert _text(browser, "drawn") == (
        "showing 8 of 32 samples, 16 of 16 channels, 8×8 of 28×28 = 784 locations (the counts are for the whole tensor)"
    )
    assert not _console_errors(browser)


@pytest.mark.parametrize(
    "lang, lit_text, more_text",
    [
        (
            "en",
            "1 value highlighted in the drawing (of 1 in the set)",
            "showing 1 of 1 sample, 1 of 1 channel, 1×8 of 1×12 = 12 locations",
        ),
        ("es", "1 valor resaltado en el dibujo (de 1 en el conjunto)", "se muestran 1 de 1 ejemplo, 1 de 1 canal,"),
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
    plural = {
        "en": "2 values highlighted in the drawing (of 2 in the set)",
        "es": "2 valores resaltados en el dibujo (de 2 en",
    }[lang]
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
        ("en", "showing 1 of 1 sample, 1 of 1 channel, 8×1 of 12×1 = 12 locations",
         "showing 8 of 9 samples, 1 of 1 channel, 1×1 of 1×1 = 1 location"),
        ("es", "se muestran 1 de 1 ejemplo, 1 de 1 canal, 8×1 de 12×1 = 12 ubicaciones",
         "se muestran 8 de 9 ejemplos, 1 de 1 canal, 1×1 de 1×1 = 1 ubicación"),
    ],
    ids=["en", "es"],
)  # fmt: skip
def test_locations_agree_with_h_times_w(browser, pages, lang, tall, one):
    """W = 1 but H = 12: 12 locations (plural); H×W = 1: one location (singular)."""
    _open(browser, pages[lang])
    _set_controls(browser, (1, 12, 1, 1), "NHWC", "batch-channel")
    assert _text(browser, "drawn").startswith(tall + " (")
    _set_controls(browser, (9, 1, 1, 1), "NHWC", "batch-channel")
    assert _text(browser, "drawn").startswith(one + " (")
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
        assert _text(browser, "error") == f"la forma debe ser de 2 a 5 enteros positivos separados por comas, " \
                                          f"como 8,4,4,16; se recibió '{typed}'"  # fmt: skip
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

    An unclosed '<!-- <script>' inside the script would make the page's own '</script>' not end it. The texts
    come from the page catalog: an added catalog folder (BNLAB_CATALOGS) overrides them."""
    title = "B </script> & &amp; <!-- <b>x</b> <script>"
    intro = "intro </script><!-- <script> &lt; &amp;"
    (tmp_path / "cat" / "en").mkdir(parents=True)
    texts = {"title": title, "intro": intro, "foot": "</SCRIPT >&"}
    (tmp_path / "cat" / "en" / "page.json").write_text(json.dumps(texts), encoding="utf-8")
    monkeypatch.setenv("BNLAB_CATALOGS", str(tmp_path / "cat"))
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
    assert _text(browser, "set-size").startswith(f"m' = m·p·q = {integer(HUGE, lang)}·3·3 = ")
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
    assert _text(browser, "selected") == "pinned value: x[1, 1, 1, 2], indices in NHWC order (n, h, w, c)"
    assert not _console_errors(browser)


def test_a_wrong_groups_for_a_huge_channel_count_answers_at_once(browser, pages):
    """The divisors are listed up to C = 10**12 (sqrt(C) steps), and not listed beyond: never a hung page."""
    import time

    _open(browser, pages["en"])
    start = time.monotonic()
    _set_controls(browser, (2, 1, 1, 999_999_999_989), "NHWC", "group", groups=2)  # the largest prime below 10**12
    assert _text(browser, "error") == "G = 2 does not divide the 999,999,999,989 channels; pick G among 1, " \
                                      "999,999,999,989"  # fmt: skip
    _set_controls(browser, (2, 1, 1, 2**61 - 1), "NHWC", "group", groups=3)
    assert _text(browser, "error") == "G = 3 does not divide the 2,305,843,009,213,693,951 channels; pick a divisor " \
                                      "of C"  # fmt: skip
    assert time.monotonic() - start < 60
    _set_controls(browser, (2, 1, 1, 2 * HUGE), "NHWC", "group", groups=HUGE)
    assert _text(browser, "error") == "" and _value(browser, "n-sets") == str(2 * HUGE)
    assert _text(browser, "member") == f"group norm, G = {HUGE:,}: one set per sample and group of channels"
    assert _text(browser, "set-size") == "m' = (C/G)·p·q = 2·1·1 = 2"
    assert not _console_errors(browser)


# ------------------------------------------------- issue 18 §4: the page's rough edges, each in the real browser

#: what a JavaScript value looks like when it leaks into the text
_JS_VALUES = re.compile(r"\b(null|undefined|NaN|Infinity)\b|\[object ")


def _visible_text(driver):
    return driver.execute_script("return document.body.innerText")


def _no_js_value(driver, where):
    text = _visible_text(driver)
    found = _JS_VALUES.search(text)
    assert found is None, (
        f"{where}: the page prints {found.group(0)!r}: ...{text[max(0, found.start() - 80) : found.end() + 40]}"
    )


def _panel(driver):
    """Every panel entry's text and data-value, and the selected-value line."""
    return driver.execute_script(
        "return [Array.from(document.querySelectorAll('#panel dd')).map(d => [d.id, d.textContent, "
        "d.dataset.value === undefined ? null : d.dataset.value]), document.getElementById('selected').textContent]"
    )


def _type(driver, element_id, text):
    box = driver.find_element("id", element_id)
    box.clear()
    box.send_keys(text)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_group_with_g_empty_picks_a_default_and_never_prints_a_javascript_value(browser, pages, lang):
    """'group' with the G field empty: G = the smallest divisor of C above 1 (said on the page), never 'null'."""
    from selenium.webdriver.support.ui import Select

    from bnlab.explain_page import default_groups

    _open(browser, pages[lang])
    _no_js_value(browser, "opened")
    _set_controls(browser, (4, 3, 3, 12), "NHWC", "instance")
    assert browser.find_element("id", "groups").get_attribute("value") == ""  # the page opened with no G
    Select(browser.find_element("id", "norm")).select_by_value("group")  # G empty: the page picks G
    assert default_groups(12) == 2
    assert browser.find_element("id", "groups").get_attribute("value") == "2"
    assert _text(browser, "error") == "" and _value(browser, "n-sets") == str(4 * 2)
    rule = {"en": "G was not given: G = 2, the smallest divisor of C = 12 above 1",
            "es": "No se indicó G: G = 2, el menor divisor de C = 12 mayor que 1"}[lang]  # fmt: skip
    assert rule in _text(browser, "notes")
    _no_js_value(browser, "group picked")
    _type(browser, "groups", "")  # emptied while group is picked: the same default, and the rule said again
    assert _text(browser, "error") == "" and _value(browser, "n-sets") == str(4 * 2) and rule in _text(browser, "notes")
    assert browser.find_elements("css selector", "#tensor .v")
    _no_js_value(browser, "G emptied under group")
    for typed in ("3", "5", "-2", "1.5"):  # a divisor, then errors: never a JavaScript value in the message
        _type(browser, "groups", typed)
        _no_js_value(browser, f"G = {typed}")
        assert rule not in _text(browser, "notes")
    assert "-2" in _text(browser, "error") or "1.5" in _text(browser, "error")
    for typed in ("7,7", "1,2,3,4,5,6", "4,,x", "", "4,3,3,7"):
        _type(browser, "shape", typed)
        _no_js_value(browser, f"shape {typed!r}")
    _type(browser, "groups", "")
    _set_controls(browser, (4, 3, 3, 7), "NHWC", "group")  # a prime C: G = 1
    assert browser.find_element("id", "groups").get_attribute("value") == ""
    assert _value(browser, "n-sets") == "4" and "C = 7" in _text(browser, "notes")
    _no_js_value(browser, "prime C")
    assert not _console_errors(browser)


@pytest.mark.parametrize(
    "shape_text, groups",
    [("32,64,-1", None), ("1,2,3,4,5,6", None), ("4,3,3,8", "3"), ("4,3,3,8", "0")],
    ids=["shape-negative", "shape-6d", "g-not-dividing", "g-zero"],
)
def test_an_error_clears_the_drawing_and_the_panel(browser, pages, shape_text, groups):
    _open(browser, pages["en"])
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "batch-activation")
    browser.find_element("css selector", '#tensor .v[data-n="1"][data-c="2"][data-loc="3"]').click()
    entries, selected = _panel(browser)
    assert all(text for id_, text, _ in entries if id_ != "notes") and selected.startswith("pinned value"), entries
    if groups is not None:
        _set_controls(browser, (4, 3, 3, 8), "NHWC", "group", groups=groups)
    else:
        _type(browser, "shape", shape_text)
    assert _text(browser, "error")
    assert not browser.find_elements("css selector", "#tensor .v")
    entries, selected = _panel(browser)
    assert all(text == "" and value is None for _, text, value in entries), entries  # nothing stale
    assert selected == "no result until the input above is fixed"
    assert "stale" in browser.find_element("id", "panel").get_attribute("class")
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "group", groups=2)  # fixed: everything back
    assert _text(browser, "error") == "" and _value(browser, "n-sets") == "8"
    assert "stale" not in browser.find_element("id", "panel").get_attribute("class")
    assert not _console_errors(browser)


@pytest.mark.parametrize(
    "shape, layout, other_shape, other, member, sel, index, other_index",
    [
        ((4, 3, 5, 8), "NHWC", "4,8,3,5", "NCHW", "group", (2, 5, 7), "x[2, 1, 2, 5]", "x[2, 5, 1, 2]"),
        ((3, 4, 5, 2), "NCHW", "3,5,2,4", "NHWC", "batch-activation", (1, 3, 6), "x[1, 3, 3, 0]", "x[1, 3, 0, 3]"),
        ((3, 6, 4), "NLC", "3,4,6", "NCL", "instance", (2, 1, 5), "x[2, 5, 1]", "x[2, 1, 5]"),
        ((2, 3, 2, 2, 4), "NDHWC", "2,4,3,2,2", "NCDHW", "layer", (1, 3, 9), "x[1, 2, 0, 1, 3]", "x[1, 3, 2, 0, 1]"),
    ],
    ids=["NHWC-NCHW", "NCHW-NHWC", "NLC-NCL", "NDHWC-NCDHW"],
)
def test_switching_the_layout_keeps_the_tensor(browser, pages, shape, layout, other_shape, other, member, sel, index,
                                               other_index):  # fmt: skip
    """NHWC ↔ NCHW (and NLC ↔ NCL, NDHWC ↔ NCDHW) reorders the shape: the same values, the same sets B."""
    from selenium.webdriver.support.ui import Select

    _open(browser, pages["en"])
    _set_controls(browser, shape, layout, member, groups=2 if member == "group" else None)
    _cell(browser, *sel).click()
    before = _lit(browser), [_value(browser, k) for k in ("n-sets", "set-size", "params")]
    assert before[0][1] == [sel] and before[0][0] == _expected_set(shape, layout, member, 2, sel)[1]
    assert _text(browser, "selected").startswith(f"pinned value: {index}, indices in {layout} order")
    Select(browser.find_element("id", "layout")).select_by_value(other)
    assert browser.find_element("id", "shape").get_attribute("value") == other_shape
    after = _lit(browser), [_value(browser, k) for k in ("n-sets", "set-size", "params")]
    assert after == before  # the same value pinned, the same set, the same counts
    moved = tuple(int(n) for n in other_shape.split(","))
    assert after[0][0] == _expected_set(moved, other, member, 2, sel)[1]  # bnlab.axes agrees on the moved tensor
    assert _text(browser, "selected").startswith(f"pinned value: {other_index}, indices in {other} order")
    Select(browser.find_element("id", "layout")).select_by_value(layout)
    assert browser.find_element("id", "shape").get_attribute("value") == ",".join(map(str, shape))
    assert _lit(browser) == before[0]
    assert not _console_errors(browser)


def test_hover_previews_and_a_click_pins_the_value(browser, pages):
    """Moving the mouse over other values and on to the panel does not lose the pinned value."""
    from selenium.webdriver.common.action_chains import ActionChains

    _open(browser, pages["en"])
    shape, layout = (4, 3, 3, 8), "NHWC"
    _set_controls(browser, shape, layout, "instance")
    _cell(browser, 1, 2, 3).click()
    pinned = _expected_set(shape, layout, "instance", None, (1, 2, 3))[1]
    assert _lit(browser)[:2] == (pinned, [(1, 2, 3)])
    ActionChains(browser).move_to_element(_cell(browser, 3, 6, 8)).perform()  # a preview of another value
    assert _lit(browser)[:2] == (_expected_set(shape, layout, "instance", None, (3, 6, 8))[1], [(3, 6, 8)])
    assert _text(browser, "selected").startswith("preview: x[3, 2, 2, 6]")
    ActionChains(browser).move_to_element(browser.find_element("id", "alg2")).perform()  # on to the panel
    assert _lit(browser)[:2] == (pinned, [(1, 2, 3)])
    assert _text(browser, "selected").startswith("pinned value: x[1, 1, 0, 2]")
    assert _value(browser, "lit-count") == "9"
    pins = browser.find_elements("css selector", "#tensor .v.pin")
    assert [(int(b.get_attribute("data-n")), int(b.get_attribute("data-c"))) for b in pins] == [(1, 2)]
    assert not _console_errors(browser)


def test_keyboard_moves_previews_and_pins_with_a_visible_focus(browser, pages):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open(browser, pages["en"])
    shape, layout = (2, 3, 3, 4), "NHWC"  # 3×3 maps
    _set_controls(browser, shape, layout, "batch-activation")
    focusable = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tensor .v')).filter(b => "
        "b.tabIndex === 0).map(b => [+b.dataset.n, +b.dataset.c, +b.dataset.loc])"
    )
    assert focusable == [[0, 0, 0]]  # one tab stop in the drawing: the pinned value
    browser.execute_script("document.getElementById('other').focus()")  # the last control: Tab enters the drawing
    ActionChains(browser).send_keys(Keys.TAB).perform()

    def active():
        return browser.execute_script(
            "const b = document.activeElement; if (!b.classList.contains('v')) return null; const s = "
            "getComputedStyle(b); return [+b.dataset.n, +b.dataset.c, +b.dataset.loc, b.matches(':focus-visible'), "
            "s.outlineStyle, parseFloat(s.outlineWidth), s.outlineColor]"
        )

    assert active() is not None and active()[:3] == [0, 0, 0]
    steps = [(Keys.ARROW_RIGHT, (0, 0, 1)), (Keys.ARROW_DOWN, (0, 0, 4)), (Keys.ARROW_DOWN, (0, 0, 7)),
             (Keys.ARROW_DOWN, (1, 0, 7)), (Keys.ARROW_LEFT, (1, 0, 6)), (Keys.ARROW_UP, (1, 0, 3))]  # fmt: skip
    for key, where in steps:
        ActionChains(browser).send_keys(key).perform()
        got = active()
        assert got is not None and tuple(got[:3]) == where, (key, got)
        assert got[3] and got[4] == "solid" and got[5] >= 3 and got[6] == "rgb(28, 93, 191)"  # a visible focus
        lit, selected, _ = _lit(browser)
        assert selected == [where] and lit == _expected_set(shape, layout, "batch-activation", None, where)[1]
        assert _text(browser, "selected").startswith("preview: ")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    assert _text(browser, "selected").startswith("pinned value: x[1, 1, 0, 0]")
    ActionChains(browser).move_to_element(browser.find_element("id", "foot")).perform()
    assert _lit(browser)[1] == [(1, 0, 3)]
    assert not _console_errors(browser)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_a_set_of_one_value_is_warned_and_the_dense_layer_is_named(browser, pages, lang):
    warn = {"en": "Each set B holds a single value", "es": "Cada conjunto B tiene un solo valor"}[lang]
    dense = {"en": "A dense layer's output (N, C)", "es": "La salida de una capa densa (N, C)"}[lang]
    _open(browser, pages[lang])
    for shape, layout, member, one in [
        ((1, 3, 3, 8), "NHWC", "batch-activation", True),
        ((6, 4), "NC", "instance", True),
        ((4, 3, 3, 8), "NHWC", "batch-activation", False),
        ((6, 4), "NC", "batch-channel", False),
        ((1, 1, 1, 1), "NHWC", "layer", True),
    ]:
        _set_controls(browser, shape, layout, member)
        assert (_value(browser, "set-size") == "1") is one
        assert (warn in _text(browser, "notes")) is one, (shape, member)
        assert (dense in _text(browser, "notes")) is (layout == "NC" and member.startswith("batch"))
        assert browser.find_element("id", "notes").is_displayed() is (one or layout == "NC" and member != "instance")
    _set_controls(browser, (6, 4), "NC", "batch-channel")
    assert _text(browser, "set-size") == "m' = m = 6" and _text(browser, "params") == "2·C = 2·4 = 8"
    assert browser.find_element("id", "layout").get_attribute("value") == "NC"
    assert {"en": "dense layer before it", "es": "capa densa anterior"}[lang] in _text(browser, "alg2")
    assert not _console_errors(browser)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_number_on_the_page_is_written_one_way(browser, pages, lang):
    """Grouped as the language's core catalog says everywhere: the factors too (not 'm = 1000' beside '9,000')."""
    from bnlab.i18n.numbers import integer

    _open(browser, pages[lang])
    _set_controls(browser, (1000, 3, 3, 8), "NHWC", "batch-channel")
    assert _text(browser, "set-size") == f"m' = m·p·q = {integer(1000, lang)}·3·3 = {integer(9000, lang)}"
    _set_controls(browser, (2, 10, 100, 1200), "NHWC", "batch-activation")
    assert _text(browser, "params") == f"2·H·W·C = 2·10·100·{integer(1200, lang)} = {integer(2_400_000, lang)}"
    for shape, layout, member in [
        ((1000, 3, 3, 8), "NHWC", "batch-channel"),
        ((12345, 1024), "NC", "layer"),
        ((3, 20000, 2), "NLC", "instance"),
        ((2, 1100, 5, 5, 3), "NCDHW", "group"),
    ]:
        _set_controls(browser, shape, layout, member, groups=11 if member == "group" else None)
        text = _visible_text(browser).replace("\xa0", " ").replace("2015", "").replace("2018", "")  # the papers' years
        if lang == "en":  # no run of 4 digits anywhere: every number ≥ 1000 is grouped
            assert not re.search(r"\d{4}", text), re.search(r".{40}\d{4}.{20}", text)
        else:  # Spanish groups from five digits on (RAE): no run of 5
            assert not re.search(r"\d{5}", text), re.search(r".{40}\d{5}.{20}", text)
    assert not _console_errors(browser)


def test_spanish_wording_of_the_page():
    from bnlab.i18n import catalog

    words = json.dumps(catalog("page", "es"), ensure_ascii=False).lower()
    for calque in ("miembro", "ilumin", "deben ser", "a lo largo de los elementos"):
        assert calque not in words, calque
    assert "variante" in words and "resaltados" in words and "en todos los ejemplos del minilote" in words


@pytest.mark.parametrize("width", [1280, 420])
def test_the_panel_stays_in_view_after_picking_a_value(browser, pages, width):
    """Beside the drawing from 1000 px on, sticky above it on a narrow screen: after a click far down the
    drawing the panel's top is inside the window; the drawing is a sample of a large tensor, and says so."""
    _open(browser, pages["es"])
    browser.set_window_size(width, 900)
    try:
        _set_controls(browser, (32, 28, 28, 64), "NHWC", "batch-channel")
        assert _text(browser, "drawn").startswith("se muestran 8 de 32 ejemplos, 16 de 64 canales, 8×8 de 28×28 = ")
        assert len(browser.find_elements("css selector", "#tensor .v")) == 8 * 16 * 64
        cell = _cell(browser, 7, 15, 7 * 28 + 7)
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
        cell.click()
        assert _lit(browser)[1] == [(7, 15, 7 * 28 + 7)]
        geo = browser.execute_script(
            "const s = document.getElementById('side').getBoundingClientRect(), "
            "d = document.getElementById('tensor').getBoundingClientRect(); "
            "return [s.top, s.bottom, s.left, d.left, d.right, window.innerHeight, window.scrollY, "
            "document.documentElement.scrollWidth, window.innerWidth]"
        )
        top, bottom, left, d_left, d_right, height, scrolled, scroll_w, inner_w = geo
        assert scrolled > 1000, geo  # the value was far down the page
        assert 0 <= top < height and bottom > top + 40, geo  # the panel's top is in view
        assert scroll_w <= inner_w, geo  # no sideways scrolling
        if width >= 1000:
            assert left >= d_right - 1, geo  # beside the drawing
        else:
            assert top <= 1 and bottom <= 0.5 * height, geo  # at the top, leaving the drawing visible
        assert _text(browser, "selected").startswith("valor fijado: x[7, 7, 7, 15]")
        assert browser.find_element("id", "selected").is_displayed()
    finally:
        browser.set_window_size(1000, 900)
    assert not _console_errors(browser)


@pytest.mark.slow
def test_the_driver_starts_without_selenium_manager(tmp_path):
    """The browser tests start the local chromedriver; Selenium Manager (which fetches driver metadata and
    sends usage statistics over the network) never runs. A stand-in manager records any call: the fixture's
    start leaves no record, and Selenium's own discovery (no driver path) does, so the check can fail."""
    from conftest import CHROMEDRIVER, CHROMIUM

    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium and chromedriver installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    record = tmp_path / "manager-called"
    fake = tmp_path / "selenium-manager"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> '{record}'\nexit 1\n", encoding="utf-8")
    fake.chmod(0o755)
    env = {**os.environ, "SE_MANAGER_PATH": str(fake)}
    tests = Path(__file__).resolve().parents[1]  # where conftest.py is
    start = (f"import sys; sys.path.insert(0, {str(tests)!r}); from conftest import start_chromium; "
             "d = start_chromium(); d.get('about:blank'); print(d.title == ''); d.quit()")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
    assert not record.exists(), record.read_text()
    discover = ("from selenium import webdriver\ntry:\n    webdriver.Chrome()\nexcept Exception as err:\n"
                "    print(type(err).__name__)")  # fmt: skip
    subprocess.run([sys.executable, "-c", discover], env=env, capture_output=True, text=True, timeout=180)
    assert record.exists() and "--browser" in record.read_text()  # the stand-in does see a call when there is one


# ------------------------------------------------------------------------- issue 17: a masked set B on the page

MASK_CASES = [
    ((4, 3, 3, 8), "NHWC", "batch-channel", 1, 2, (0, 1, 0)),
    ((4, 3, 3, 8), "NHWC", "batch-activation", 1, 2, (0, 1, 8)),  # a location masked out: m' = 0, refused
    ((4, 3, 3, 8), "NHWC", "batch-activation", 1, 2, (2, 1, 4)),
    ((3, 4, 6), "NCL", "batch-activation", 0, 3, (1, 2, 1)),
    ((6, 4), "NC", "batch-channel", 5, 0, (0, 0, 0)),  # one sample left: every set refused
    ((2, 3, 2, 2, 4), "NDHWC", "batch-channel", 1, 5, (0, 3, 2)),
]


@pytest.mark.parametrize("shape, layout, member, s, k, sel", MASK_CASES)
def test_a_masked_set_b_counts_only_the_values_masked_in(browser, pages, shape, layout, member, s, k, sel):
    """The last s samples and the last k locations of each sample masked out, as a padding mask passed to
    bnlab.nn.functional.batch_norm(..., mask=): m', the highlighted values and the refusal of a set with fewer
    than 2 values agree with bnlab.reference.masked_forward."""
    from bnlab.reference import masked_forward

    _open(browser, pages["en"])
    _set_controls(browser, shape, layout, member)
    _type(browser, "mask-samples", str(s))
    _type(browser, "mask-locations", str(k))
    _cell(browser, *sel).click()
    norm, per = PAGE_MEMBERS[member]
    ns = norm_set(shape, layout, norm, per=per)
    c_axis, sp = layout.index("C"), _spatial(shape, layout)
    locs = math.prod(sp)
    mask = np.zeros(shape, dtype=bool)  # True: in set B
    for idx in np.ndindex(*shape):
        where = [i for a, i in enumerate(idx) if a not in (0, c_axis)]
        loc = int(np.ravel_multi_index(where, sp)) if sp else 0
        mask[idx] = idx[0] < shape[0] - s and loc < locs - k
    x = np.random.default_rng(0).standard_normal(shape)
    m_per_feature = mask.sum(axis=ns.axes, keepdims=True)
    try:
        masked_forward(x, np.ones(ns.param_shape), np.zeros(ns.param_shape), mask, axes=ns.axes)
        refused = 0
    except ValueError as err:
        refused = int(re.search(r"leaves (\d+) feature", str(err)).group(1))
    assert refused == int((m_per_feature < 2).sum())
    _, cells = _expected_set(shape, layout, member, None, sel)

    def in_b(n, c, loc):
        return n < shape[0] - s and loc < locs - k

    lit, selected, drawn = _lit(browser)
    assert selected == [sel]
    assert lit == {cell for cell in cells if in_b(*cell)}
    m_sel = len(lit)  # every value is drawn here: the highlighted values are the masked set B
    assert _value(browser, "set-size") == str(m_sel) == _value(browser, "lit-count")
    assert m_sel in m_per_feature.ravel().tolist()
    hatched = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tensor .v.out')).map(b => [+b.dataset.n, +b.dataset.c, "
        "+b.dataset.loc])"
    )
    assert {tuple(h) for h in hatched} == {
        (n, c, loc) for n in range(shape[0]) for c in range(shape[c_axis]) for loc in range(locs) if not in_b(n, c, loc)
    }
    notes = _text(browser, "notes")
    assert "Hatched values are masked out" in notes
    if refused:
        assert f"{refused} set{'s' if refused > 1 else ''} B " in notes and "refuses this mask" in notes
    else:
        assert "refuses" not in notes
    _no_js_value(browser, "masked")
    assert not _console_errors(browser)


def test_the_mask_is_checked_and_applies_to_batch_norm_only(browser, pages):
    _open(browser, pages["es"])
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "batch-channel")
    _type(browser, "mask-samples", "5")
    want = "la máscara admite un entero de 0 a 4 (ejemplos fuera de la máscara al final del minilote); se recibió '5'"
    assert _text(browser, "error") == want
    assert not browser.find_elements("css selector", "#tensor .v") and _value(browser, "set-size") is None
    _type(browser, "mask-samples", "1")
    assert _text(browser, "error") == "" and _value(browser, "set-size") == str(3 * 9)
    assert _text(browser, "set-size") == "m' = (m − s)·(p·q − k) = (4 − 1)·(3·3 − 0) = 27"
    _set_controls(browser, (4, 3, 3, 8), "NHWC", "layer")  # no mask= for layer norm: the fields are off, and said
    assert not browser.find_element("id", "mask-samples").is_enabled()
    assert _value(browser, "set-size") == str(3 * 3 * 8) and not browser.find_elements("css selector", "#tensor .v.out")
    assert "La máscara solo se aplica a la normalización por lotes" in _text(browser, "notes")
    _no_js_value(browser, "mask ignored")
    assert not _console_errors(browser)


def test_an_added_language_brings_its_words_and_its_numbers(browser, tmp_path, monkeypatch):
    """A third language added with BNLAB_CATALOGS (core.json with its number conventions, a partial page.json):
    the page uses its words, English for a key it lacks, and groups numbers its way."""
    (tmp_path / "xx").mkdir()
    core = {"@language": "xx", "@plural-forms": "nplurals=2; plural=(n != 1);",
            "@number": {"decimal": ",", "group": ".", "group_min_digits": 4, "percent": "{} %"}}  # fmt: skip
    (tmp_path / "xx" / "core.json").write_text(json.dumps(core), encoding="utf-8")
    (tmp_path / "xx" / "page.json").write_text(json.dumps({"row": {"sets": "XX-SETS"}}), encoding="utf-8")
    monkeypatch.setenv("BNLAB_CATALOGS", str(tmp_path))
    url = write_page(tmp_path / "xx.html", lang="xx", shape=(1000, 3, 3, 8)).resolve().as_uri()
    _open(browser, url)
    assert _text(browser, "t-sets") == "XX-SETS" and _text(browser, "t-axes") == "reduce axes"
    assert _text(browser, "set-size") == "m' = m·p·q = 1.000·3·3 = 9.000"
    assert not _console_errors(browser)
