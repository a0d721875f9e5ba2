"""explain(norm=..., groups=...): numbers checked against NumPy on real arrays, text, figure, CLI, errors."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlab


def numpy_stats(t, layout, norm, groups):
    """The mean of every set B with NumPy, written from the definitions (channel last via moveaxis)."""
    tc = np.moveaxis(t, layout.index("C"), -1)  # (N, ..., C)
    n, C = tc.shape[0], tc.shape[-1]
    if norm == "layer":
        return tc.reshape(n, -1).mean(axis=1)
    if norm == "instance":
        return tc.reshape(n, -1, C).mean(axis=1)
    return tc.reshape(n, -1, groups, C // groups).mean(axis=(1, 3))


@settings(max_examples=60, deadline=None)
@given(layout=st.sampled_from(["NCHW", "NHWC", "NCL", "NLC", "NCDHW", "NDHWC"]), data=st.data())
def test_every_member_counts_match_numpy(layout, data):
    shape = list(data.draw(st.lists(st.integers(1, 4), min_size=len(layout), max_size=len(layout))))
    shape[layout.index("C")] = data.draw(st.sampled_from([1, 2, 3, 4, 6]))
    shape = tuple(shape)
    C = shape[layout.index("C")]
    t = np.random.default_rng(0).standard_normal(shape)
    for norm in ("layer", "instance", "group"):
        groups = data.draw(st.sampled_from([g for g in range(1, C + 1) if C % g == 0])) if norm == "group" else None
        e = bnlab.explain(shape, layout=layout, norm=norm, groups=groups)
        mu = numpy_stats(t, layout, norm, groups)
        assert e.num_sets == mu.size
        assert e.feature_shape == mu.shape
        assert e.set_size == t.size // mu.size
        assert e.depends_on_batch is False
        assert e.num_params == (2 * math.prod(shape[1:]) if norm == "layer" else 2 * C)
        # the reported axes reproduce the statistics on (the split of) t
        split = t.reshape(e.split_shape)
        np.testing.assert_allclose(split.mean(axis=e.axes).reshape(mu.shape), mu, atol=1e-12)


def test_batch_member_is_unchanged():
    e = bnlab.explain((32, 28, 28, 16), layout="NHWC", per="channel", norm="batch")
    assert (e.axes, e.num_sets, e.set_size, e.num_params, e.depends_on_batch) == ((0, 1, 2), 16, 25_088, 32, True)
    assert e.text == bnlab.explain((32, 28, 28, 16), layout="NHWC", per="channel").text


@pytest.mark.parametrize("lang", ["en", "es"])
def test_group_text_has_the_numbers(lang):
    e = bnlab.explain((32, 28, 28, 16), layout="NHWC", norm="group", groups=4, lang=lang)
    text = e.text
    sep = " " if lang == "es" else ","  # 12 544 / 12,544; the RAE writes four digits together: 3136
    assert ("3136" if lang == "es" else "3,136") in text and "128" in text and "28·28·4" in text
    assert "t.reshape(32, 28, 28, 4, 4)" in text and "axis=(1, 2, 4)" in text
    assert ("GroupNorm" in text) and ("No." in text or "no" in text)
    # the side-by-side table: sets B per member
    table = text.split("\n")[-6:]
    assert any("12" + sep + "544" in row for row in table)


def test_family_figure(tmp_path):
    for lang in ("en", "es"):
        path = bnlab.explain((8, 16, 5, 5), layout="NCHW", norm="group", groups=4, lang=lang).save_figure(
            tmp_path / f"fam.{lang}.png"
        )
        assert path.stat().st_size > 10_000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"norm": "group", "groups": 3}, "does not divide the 16 channels"),
        ({"norm": "group"}, "needs groups=G"),
        ({"norm": "layer", "groups": 2}, "only applies to norm='group'"),
        ({"norm": "batch", "groups": 2}, "only applies to norm='group'"),
        ({"norm": "pixel"}, "unknown norm 'pixel'"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bnlab.explain((4, 5, 5, 16), layout="NHWC", **kwargs)


def test_cli_norm_group(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bnlab", "explain", "32,28,28,16", "--norm", "group", "--groups", "8", "--lang", "en",
         "--figure", str(tmp_path / "f.png")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "256 sets B" in out.stdout and "1,568 values" in out.stdout
    assert (tmp_path / "f.png").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "bnlab", "explain", "32,28,28,16", "--norm", "group", "--groups", "5", "--lang", "es"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "pick G among" in bad.stderr


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("C, G", [(16, 4), (12, 3), (6, 6), (8, 1)])
def test_group_channel_range_is_the_channels_of_group_g(lang, C, G):
    """'(c = g·4 … g·4+3)': for every g, the channels the text names are those NumPy's reshape puts in group g."""
    text = " ".join(bnlab.explain((2, 3, 3, C), layout="NHWC", norm="group", groups=G, lang=lang).text.split())
    m = re.search(r"\(c = g(?:·(\d+) … g·(\d+)\+(\d+))?\)", text)
    assert m, text
    first, last = (lambda g: g * int(m[1]), lambda g: g * int(m[2]) + int(m[3])) if m[1] else (lambda g: g,) * 2
    groups_of_channels = np.arange(C).reshape(G, C // G)  # as GroupNorm splits C: group g = row g
    for g in range(G):
        assert list(range(first(g), last(g) + 1)) == groups_of_channels[g].tolist(), (g, m[0])


def _family_table(text):
    """The rows of the family's side-by-side table: name -> its cells (columns are 3+ spaces apart)."""
    lines = text.splitlines()
    heads = ("The family side", "Las variantes de la familia")
    start = next(i for i, line in enumerate(lines) if line.startswith(heads))
    rows = [re.split(r" {3,}", line.strip()) for line in lines[start + 1 : start + 6]]
    return {row[0]: row[1:] for row in rows[1:]}


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("shape, layout", [((2, 5, 3, 12), "NHWC"), ((3, 12, 1, 4), "NCHW"), ((1, 1, 1, 1), "NCHW")])
def test_family_table_counts_every_gamma_and_beta(lang, shape, layout):
    """The γ/β row: 2·C for BN per channel, instance and group norm; 2·C·H·W per activation and for layer norm."""
    from bnlab.i18n.numbers import integer

    C = shape[layout.index("C")]
    G = 4 if C % 4 == 0 else 1
    e = bnlab.explain(shape, layout=layout, norm="group", groups=G, lang=lang)
    row = _family_table(e.text)["γ/β"]
    chw = math.prod(shape[1:])
    expect = [2 * C, 2 * chw, 2 * chw, 2 * C, 2 * C]  # BN channel, BN activation, layer, instance, group
    assert row == [integer(n, lang) for n in expect], row


@pytest.mark.parametrize("lang", ["en", "es"])
def test_family_figure_says_how_many_locations_are_drawn(tmp_path, lang):
    """Issue 18 §5: like the BN figure, the family figure says how many locations a map has and how many it draws."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        e = bnlab.explain((32, 28, 28, 16), layout="NHWC", norm="group", groups=4, lang=lang)
        path = e.save_figure(tmp_path / "family.svg")
    text = " ".join(re.findall(r"<text[^>]*>(.*?)</text>", path.read_text(encoding="utf-8"), flags=re.S))
    want = {"en": "28×28 = 784 locations per map (4 shown, in a row)",
            "es": "28×28 = 784 ubicaciones por mapa (4 en el dibujo, en fila)"}[lang]  # fmt: skip
    assert want in text
