"""bnlab.explain: the numbers checked against NumPy on real arrays, the text, the figure, the errors."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import itertools
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlab
from bnlab.explain import Explanation, explain

ALL_LAYOUTS = ["NC", "NCL", "NLC", "NCHW", "NHWC", "NCDHW", "NDHWC"]


def independent_axes(layout: str, per: str) -> tuple[int, ...]:
    """Reduce axes worked out from the layout letters alone, not from bnlab.axes."""
    if per == "activation":
        return (0,)
    return tuple(i for i, letter in enumerate(layout) if letter != "C")


# ------------------------------------------------------------------------------------------ numbers


def test_paper_example_per_channel():
    e = explain((32, 28, 28, 16), layout="NHWC", per="channel")
    assert e.axes == (0, 1, 2)
    assert e.num_sets == 16
    assert e.set_size == 25_088 == 32 * 28 * 28
    assert e.feature_shape == (16,)
    assert e.num_params == 32
    assert dict(e.params_side_by_side) == {"channel": 32, "activation": 2 * 28 * 28 * 16}


def test_paper_example_per_activation():
    e = explain((32, 28, 28, 16), layout="NHWC", per="activation")
    assert e.axes == (0,)
    assert e.num_sets == 12_544 == 28 * 28 * 16
    assert e.set_size == 32
    assert e.feature_shape == (28, 28, 16)
    assert e.num_params == 25_088


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("per", ["channel", "activation"])
def test_counts_match_numpy_on_a_real_array(layout, per):
    shape = tuple(range(2, 2 + len(layout)))  # distinct sizes, so a wrong axis shows
    t = np.random.default_rng(0).standard_normal(shape)
    e = explain(shape, layout=layout, per=per)
    axes = independent_axes(layout, per)
    assert e.axes == axes
    mu = np.mean(t, axis=axes)
    assert e.num_sets == mu.size
    assert e.feature_shape == mu.shape
    assert e.set_size == t.size // mu.size
    assert e.num_params == 2 * mu.size
    assert e.params_side_by_side["channel"] == 2 * shape[layout.index("C")]
    assert e.params_side_by_side["activation"] == 2 * math.prod(shape[1:])


@settings(max_examples=60, deadline=None)
@given(
    layout=st.sampled_from(ALL_LAYOUTS),
    per=st.sampled_from(["channel", "activation"]),
    data=st.data(),
)
def test_every_value_falls_in_exactly_one_set(layout, per, data):
    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=len(layout), max_size=len(layout))))
    e = explain(shape, layout=layout, per=per)
    # label each value by the set B it belongs to: its index along the axes that are *not* reduced
    kept = [a for a in range(len(shape)) if a not in independent_axes(layout, per)]
    labels = np.zeros(shape, dtype=np.int64)
    for a in kept:
        labels = labels * shape[a] + np.indices(shape)[a]
    counts = np.bincount(labels.ravel())
    assert e.num_sets == counts.size
    assert np.all(counts == e.set_size)
    assert e.num_sets * e.set_size == math.prod(shape)


def test_channel_sets_are_the_same_values_in_nchw_and_nhwc():
    t_nchw = np.random.default_rng(1).standard_normal((4, 3, 5, 6))
    t_nhwc = t_nchw.transpose(0, 2, 3, 1)
    a = explain(t_nchw.shape, layout="NCHW")
    b = explain(t_nhwc.shape, layout="NHWC")
    assert a.num_sets == b.num_sets and a.set_size == b.set_size
    np.testing.assert_allclose(np.mean(t_nchw, axis=a.axes), np.mean(t_nhwc, axis=b.axes))
    np.testing.assert_allclose(np.var(t_nchw, axis=a.axes), np.var(t_nhwc, axis=b.axes))


def test_per_channel_is_per_activation_on_the_flattened_view():
    # CS231n's definition: spatial BN = per-activation BN on an (N·H·W, C) view
    t = np.random.default_rng(2).standard_normal((4, 5, 6, 3))
    e = explain(t.shape, layout="NHWC", per="channel")
    flat = t.reshape(-1, 3)
    f = explain(flat.shape, layout="NC", per="activation")
    assert e.set_size == f.set_size == 4 * 5 * 6
    np.testing.assert_allclose(np.mean(t, axis=e.axes), np.mean(flat, axis=f.axes))


def test_layout_is_case_insensitive_and_normalized():
    e = explain((2, 3, 4, 5), layout="nchw")
    assert e.layout == "NCHW" and e.axes == (0, 2, 3)


def test_numpy_integer_sizes_are_accepted():
    e = explain(np.array([32, 28, 28, 16]), layout="NHWC")
    assert e.shape == (32, 28, 28, 16) and all(type(n) is int for n in e.shape)


def test_explanation_is_frozen():
    e = explain((2, 3), layout="NC")
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.num_sets = 5


# --------------------------------------------------------------------------------------------- text


def test_english_text_has_the_sets_formula_and_parameters():
    text = explain((32, 28, 28, 16), layout="NHWC", per="channel", lang="en").text
    assert "16 sets B" in text
    assert "16 of 25,088 values" in text and "12,544 of 32 values" in text
    assert "m' = m·p·q = 32·28·28 = 25,088" in text
    assert "np.mean(t, axis=(0, 1, 2))" in text and "np.var(t, axis=(0, 1, 2))" in text
    assert "2·C = 2·16 = 32" in text and "2·C·H·W = 2·16·28·28 = 25,088" in text
    assert "a = γ/√(Var[x]+ε),  b = β − γ·E[x]/√(Var[x]+ε)" in text
    assert "location" in text and "conjunto" not in text


def test_spanish_text():
    text = explain((32, 28, 28, 16), layout="NHWC", per="activation", lang="es").text
    assert "12 544 conjuntos B" in text
    assert "cada uno con m = 32 valores" in text
    assert "np.mean(t, axis=(0,))" in text
    assert "ubicación" in text and "parámetros" in text
    assert " sets " not in text and "values" not in text


def test_text_is_str_and_marks_the_chosen_variant():
    e = explain((32, 28, 28, 16), layout="NHWC", per="activation")
    assert str(e) == e.text
    header = next(line for line in e.text.splitlines() if "per channel" in line and "per activation" in line)
    assert header.index("(this one)") > header.index("per activation")


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("per", ["channel", "activation"])
@pytest.mark.parametrize("lang", ["en", "es"])
def test_numpy_lines_in_the_text_run_and_give_the_statistics(layout, per, lang):
    shape = tuple(range(2, 2 + len(layout)))
    e = explain(shape, layout=layout, per=per, lang=lang)
    code = [line.split("#")[0].strip() for line in e.text.splitlines() if "= np." in line]
    assert len(code) == 2
    t = np.random.default_rng(3).standard_normal(shape)
    ns = {"np": np, "t": t}
    for line in code:
        exec(line, ns)
    axes = independent_axes(layout, per)
    np.testing.assert_allclose(ns["mu_B"], t.mean(axis=axes))
    np.testing.assert_allclose(ns["var_B"], t.var(axis=axes))


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_text_numbers_agree_with_the_fields(layout):
    shape = tuple(range(3, 3 + len(layout)))
    for per in ("channel", "activation"):
        e = explain(shape, layout=layout, per=per)
        row = next(line for line in e.text.splitlines() if line.strip().startswith("sets B"))
        cells = re.findall(r"([\d,]+) of ([\d,]+) values", row)
        got = [(int(a.replace(",", "")), int(b.replace(",", ""))) for a, b in cells]
        assert got == [
            (explain(shape, layout, p).num_sets, explain(shape, layout, p).set_size) for p in ("channel", "activation")
        ]
        assert all(len(line) <= 100 for line in e.text.splitlines()), "text should fit a terminal"


def test_fully_connected_layout_says_the_variants_coincide():
    en = explain((8, 5), layout="NC", per="activation").text
    es = explain((8, 5), layout="NC", per="activation", lang="es").text
    assert "same thing" in en and "coinciden" in es
    assert en.count("5 of 8 values") == 2  # both columns of the table


def test_a_set_of_one_value_is_flagged():
    assert "Warning" in explain((1, 3, 1, 1), layout="NCHW").text
    assert "Warning" not in explain((2, 3, 1, 1), layout="NCHW").text


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(shape=(2, 3, 4, 5), layout="NWHC"), ["NWHC", "NHWC"]),
        (dict(shape=(32, 28, 28), layout="NHWC"), ["3 dimensions", "needs 4", "NCL"]),
        (dict(shape=(32, 0, 28, 16), layout="NHWC"), ["positive", "H=0"]),
        (dict(shape=(-1, 3), layout="NC"), ["positive", "N=-1"]),
        (dict(shape=(2, 3), layout="NC", lang="fr"), ["lang", "'fr'", "'es'"]),
        (dict(shape=(2, 3), layout="NC", per="batch"), ["per", "'batch'", "'activation'"]),
        (dict(shape=(2.5, 3), layout="NC"), ["whole numbers"]),
        (dict(shape=(True, 3), layout="NC"), ["whole numbers"]),
        (dict(shape=32, layout="NC"), ["sequence"]),
    ],
)
def test_bad_input_names_the_problem(kwargs, words):
    with pytest.raises(ValueError) as info:
        explain(**kwargs)
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------------------------------- figure

ORANGE = np.array([0xF2, 0x8E, 0x2B]) / 255


def orange_pixels(img: np.ndarray) -> np.ndarray:
    return np.all(np.abs(img[..., :3] - ORANGE) < 0.02, axis=-1)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_figure_colours_more_values_per_channel_than_per_activation(tmp_path, lang):
    import matplotlib.image

    path = explain((32, 28, 28, 16), layout="NHWC", lang=lang).save_figure(tmp_path / "b.png")
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 600
    orange = orange_pixels(img)
    w = img.shape[1]
    left, right = orange[:, : w // 2].sum(), orange[:, w // 2 :].sum()
    # left: the whole c=0 map of 3 examples (3·16 cells); right: one cell in each of 3 examples (3 cells)
    assert right > 0
    assert 8 < left / right < 30


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_figure_for_every_layout(tmp_path, layout):
    shape = tuple([64, *range(3, 2 + len(layout))]) if len(layout) > 2 else (64, 100)
    path = tmp_path / "sub" / f"{layout}.png"
    out = explain(shape, layout=layout, lang="es").save_figure(path)
    assert out == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 200_000


def test_figure_does_not_touch_pyplot(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    explain((2, 3, 4, 4), layout="NCHW").save_figure(tmp_path / "x.svg")
    assert plt.get_fignums() == before
    assert (tmp_path / "x.svg").read_text().lstrip().startswith("<?xml")


# ----------------------------------------------------------------------------------------- plumbing


def test_lazy_export_and_module_import_agree():
    assert isinstance(bnlab.explain((2, 3), layout="NC"), Explanation)


def test_bnlab_explain_works_after_importing_the_submodule_first():
    code = (
        "import bnlab.explain, bnlab\nprint(bnlab.explain((32, 28, 28, 16), layout='NHWC', per='activation').num_sets)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "12544"


@pytest.mark.parametrize("name", ["bnlab.explain", "bnlab.i18n.words"])
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ the learner's questions (issue 11)

PAPER_Q3 = "different elements of the same feature map, at different locations, are normalized in the same way"


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("per", ["channel", "activation"])
def test_q3_elements_are_values_not_weights(lang, per):
    text = " ".join(explain((8, 20, 20, 6), layout="NHWC", per=per, lang=lang).text.split())
    assert PAPER_Q3 in text, "the paper's sentence is quoted"
    if lang == "en":
        assert "are the VALUES x[n, h, w, c] of the map" in text and "not the filter's weights" in text
        assert "shared by all 400 locations" in text and "the 8 examples" in text
    else:
        assert "son los VALORES x[n, h, w, c] del mapa" in text and "No son los pesos del filtro" in text
        assert "compartido por las 400 ubicaciones" in text and "los 8 ejemplos" in text


def test_no_locations_no_elements_paragraph():
    assert PAPER_Q3 not in " ".join(explain((8, 5), layout="NC").text.split())


_WORDS = {
    "en": r"In words: ([\d,]+) means?, ([\d,]+) variances?, ([\d,]+) γ and ([\d,]+) β",
    "es": r"Es decir: ([\d ]+) medias?, ([\d ]+) varianzas?, ([\d ]+) γ y ([\d ]+) β",
}


@settings(max_examples=40, deadline=None)
@given(
    layout=st.sampled_from(ALL_LAYOUTS),
    per=st.sampled_from(["channel", "activation"]),
    lang=st.sampled_from(["en", "es"]),
    data=st.data(),
)
def test_counts_in_words_match_numpy(layout, per, lang, data):
    """A shape shown nowhere: the counts said in words are those NumPy and torch.nn give."""
    shape = tuple(data.draw(st.lists(st.integers(1, 40), min_size=len(layout), max_size=len(layout))))
    text = " ".join(explain(shape, layout=layout, per=per, lang=lang).text.split())
    found = re.search(_WORDS[lang], text)
    assert found, text
    counts = {int(g.replace(",", "").replace(" ", "")) for g in found.groups()}
    small = np.zeros([min(n, 3) if i in independent_axes(layout, per) else n for i, n in enumerate(shape)])
    sets = small.mean(axis=independent_axes(layout, per)).size  # one mean per set B
    assert counts == {sets}


def test_counts_in_words_match_torch_batchnorm():
    import torch

    bn = torch.nn.BatchNorm2d(12)
    text = explain((5, 12, 9, 7), layout="NCHW", per="channel").text
    n = bn.weight.numel()
    assert f"In words: {n} means, {n} variances, {n} γ and {n} β" in text
    assert f"{n} pairs (a, b)" in " ".join(text.split())


def test_per_activation_counts_means_and_variances_not_statistics():
    text = " ".join(explain((32, 24, 24, 32), layout="NHWC", per="activation").text.split())
    assert "18,432 means and 18,432 variances" in text
    assert "each (location, channel) pair has its own mean, variance, γ and β" in text
    assert "18,432 statistics" not in text and "each location has its own" not in text


@pytest.mark.parametrize(
    "lang, word",
    [
        ("en", "the average over the training mini-batches B"),
        ("es", "el promedio sobre los minilotes B de entrenamiento"),
    ],
)
def test_e_b_notation_is_explained(lang, word):
    text = " ".join(explain((32, 28, 28, 12), layout="NHWC", lang=lang).text.split())
    assert "E_B[μ_B]" in text and word in text


def test_spanish_numbers_follow_the_rae():
    # four digits together, five or more grouped by a space; never a comma or a point as separator
    es = explain((32, 16, 8, 8), layout="NCHW", lang="es").text
    assert "2048 valores" in es and "2 048" not in es
    es = explain((32, 28, 28, 12), layout="NHWC", lang="es").text
    assert "25 088" in es and "9408" in es and "25,088" not in es
    from bnlab.i18n.numbers import decimal as num
    from bnlab.i18n.numbers import integer

    assert [integer(n, "es") for n in (2048, 25088, 999)] == ["2048", "25 088", "999"]
    assert [num(x, "es", 1) for x in (1234.5, 25088.0, 9999.7)] == ["1234,5", "25 088,0", "9999,7"]
    assert num(25088.0, "en", 1) == "25,088.0"


def test_spanish_groups_from_five_digits_on():
    """The boundary: 9999 together, 10 000 with its group space (RAE); English groups both."""
    from bnlab.i18n.numbers import integer

    assert [integer(n, "es") for n in (9999, 10_000, 99_999, 100_000)] == ["9999", "10 000", "99 999", "100 000"]
    assert [integer(n, "en") for n in (9999, 10_000)] == ["9,999", "10,000"]
    es = " ".join(explain((10_000, 1, 1, 1), layout="NHWC", lang="es").text.split())
    assert "m' = 10 000 valores" in es and "10000 valores" not in es
    es = " ".join(explain((9999, 1, 1, 1), layout="NHWC", lang="es").text.split())
    assert "m' = 9999 valores" in es and "9 999" not in es


@pytest.mark.parametrize("lang", ["en", "es"])
def test_tutorial_shows_what_explain_prints(lang, capsys):
    """The tutorial prints explain's text by running it when the site is built (markdown-exec blocks), so the
    docs cannot drift from the code: its executed blocks, run in order, print that text and the exercise's answers."""
    import textwrap
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    doc = (docs / {"en": "tutorial.md", "es": "tutorial.es.md"}[lang]).read_text(encoding="utf-8")
    blocks = re.findall(r"^( *)```python exec=\"on\"[^\n]*\n(.*?)^\1```", doc, flags=re.S | re.M)
    assert len(blocks) >= 6
    sys.path.insert(0, str(docs / "_hooks"))  # the blocks import the book's helpers, as the build does
    try:
        namespace: dict = {}
        for _, code in blocks:
            exec(compile(textwrap.dedent(code), "tutorial", "exec"), namespace)
    finally:
        sys.path.remove(str(docs / "_hooks"))
    out = capsys.readouterr().out
    assert explain((32, 28, 28, 12), layout="NHWC", per="channel", lang=lang).text.rstrip() in out
    one_set = "One set B" if lang == "en" else "Un conjunto B"
    act = explain((32, 28, 28, 12), layout="NHWC", per="activation", lang=lang).text
    assert next(p for p in act.split("\n\n") if p.startswith(one_set)) in out
    assert PAPER_Q3 in " ".join(doc.split())
    for per in ("channel", "activation"):
        e = explain((8, 64, 14, 14), layout="NCHW", per=per, lang=lang)  # the exercise's answers
        n = f"{e.num_sets:,}" if lang == "en" else str(e.num_sets)
        want = f"{n} sets of {e.set_size:,} values" if lang == "en" else f"{n} conjuntos de {e.set_size} valores"
        assert want in out
        assert f"{n} γ" in out
    assert "True" in out  # the folded affine map equals normalize-then-scale


# ------------------------------------------------------------------------- grammatical number (counts of 1)

_PLURALS = {
    "en": "examples|samples|channels|features|feature maps|maps|locations|values|sets|means|variances|pairs|groups",
    "es": "ejemplos|canales|características|mapas|ubicaciones|valores|conjuntos|medias|varianzas|pares|grupos",
}
_SINGULARS = {
    "en": "example|sample|channel|feature|feature map|map|location|value|set|mean|variance|pair|group",
    "es": "ejemplo|canal|característica|mapa|ubicación|valor|conjunto|media|varianza|par|grupo",
}
_ONE_BEFORE = {"en": r"the|all|its|each of the", "es": r"los|las|sus|de los|de las"}


def number_mistakes(text: str, lang: str) -> list[str]:
    """Phrases whose noun disagrees with its count: '1 values', '1×1 locations', 'the 1 maps', '2 value'.

    Wrapped prose is read as one line; the cells of a table (columns 3+ spaces apart) are kept apart."""
    table_row = re.compile(r"\S {3,}\S")
    lines = [re.sub(" {3,}", " | ", line) + " |" if table_row.search(line) else line for line in text.splitlines()]
    text = " ".join(" ".join(lines).split())
    one_plural = rf"(?<![\d,.·×])1(?:×1)* (?:{_PLURALS[lang]})\b"
    article_one = rf"\b(?:{_ONE_BEFORE[lang]}) 1\b"
    many_singular = rf"(?<![\d,.·])(?:0|[2-9]|[1-9][\d,  ]*\d)(?:×\d+)* (?:{_SINGULARS[lang]})\b(?! maps?\b)"
    return [m.group(0) for p in (one_plural, article_one, many_singular) for m in re.finditer(p, text, re.I)]


def test_number_mistakes_finds_what_the_old_text_said():
    """The checker itself: the sentences the regex-patched text printed for shape (2, 4, 4, 1) and (1, 1, 1, 1)."""
    assert number_mistakes("Each of the 1 feature maps has 16 locations. In words: 1 means, 1 variances", "en") == [
        "1 feature maps", "1 means", "1 variances", "Each of the 1"]  # fmt: skip
    assert number_mistakes("Cada uno de los 1 mapas tiene 1×1 ubicaciones; 1 medias, 2 valor", "es") == [
        "1 mapas", "1×1 ubicaciones", "1 medias", "de los 1", "2 valor"]  # fmt: skip
    assert number_mistakes("1 mean, 16 of 2 values, 4×4 = 16 locations, 25 088 valores, 12,544 sets", "en") == []


def _shapes_with_ones(layout: str):
    """Every shape of this layout whose sizes are 1 or 3 (the channel 1 or 4, so group norm can split it)."""
    c = layout.index("C")
    for sizes in itertools.product((1, 3), repeat=len(layout)):
        yield tuple((4 if sizes[i] == 3 else 1) if i == c else n for i, n in enumerate(sizes))


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_count_agrees_with_its_noun(layout, lang):
    """Counts of 1 read '1 mean', 'the single feature map', 'el único mapa'; others keep the plural."""
    for shape in _shapes_with_ones(layout):
        C = shape[layout.index("C")]
        cases = [dict(per="channel"), dict(per="activation"), dict(norm="layer"), dict(norm="instance"),
                 dict(norm="group", groups=1), dict(norm="group", groups=C)]  # fmt: skip
        for kwargs in cases:
            text = explain(shape, layout=layout, lang=lang, **kwargs).text
            assert number_mistakes(text, lang) == [], (shape, kwargs, text)


def test_exact_sentences_with_one_feature_map():
    en = " ".join(explain((2, 4, 4, 1), layout="NHWC", lang="en").text.split())
    assert "C=1 channel (feature map)." in en
    assert "The single feature map has 4×4 = 16 locations, in each of the 2 examples of the mini-batch." in en
    assert "1 set B (one per channel), each of m' = 32 values:" in en
    assert "In words: 1 mean, 1 variance, 1 γ and 1 β, one of each per feature map." in en
    assert "the same for every example: 1 pair (a, b) in all" in en
    es = " ".join(explain((2, 4, 4, 1), layout="NHWC", lang="es").text.split())
    assert "C=1 canal (mapa de características)." in es
    assert "El único mapa tiene 4×4 = 16 ubicaciones, en cada uno de los 2 ejemplos del minilote." in es
    assert "Es decir: 1 media, 1 varianza, 1 γ y 1 β, una de cada por mapa de características." in es
    assert "1 par (a, b) en total" in es


def test_exact_sentences_with_one_example():
    en = " ".join(explain((1, 3, 5), layout="NCL", per="activation", lang="en").text.split())
    assert "Each of the 3 feature maps has 5 locations, in the single example of the mini-batch." in en
    assert "the same location and channel in the single example." in en
    assert "each of m = 1 value." in en
    assert 'The paper\'s "elements of a mini-batch" are something else again: the single example.)' in en
    es = " ".join(explain((1, 3, 1), layout="NCL", per="channel", lang="es").text.split())
    assert "Cada uno de los 3 mapas tiene 1 ubicación, en el único ejemplo del minilote." in es
    assert "compartido por la única ubicación" in es
    assert "Un conjunto B = todos los valores x[n, c, l] de UN canal c: el único ejemplo × la única ubicación." in es
    assert "(m = 1 ejemplo, l = 1 ubicación)" in es


def test_exact_family_sentences_with_counts_of_one():
    en = " ".join(explain((2, 4, 1, 1), layout="NCHW", norm="group", groups=4, lang="en").text.split())
    assert "with G = 4 groups of C/G = 1 channel:" in en
    assert "ONE group g of channels (c = g): 1 channel × 1 location." in en
    assert "8 sets B (one per sample and group: N·G = 2·4), each of 1 value:" in en
    es = " ".join(explain((2, 1, 4, 4), layout="NCHW", norm="layer", lang="es").text.split())
    assert "de UN ejemplo n: el único canal × las 16 ubicaciones." in es
    es = " ".join(explain((2, 1), layout="NC", norm="instance", lang="es").text.split())
    assert "C=1 característica." in es and "cada uno con 1 valor. Atención" in es  # no colon: no m' formula


@pytest.mark.parametrize("lang", ["en", "es"])
def test_table_columns_stay_aligned_with_counts_of_one(lang):
    e = explain((1, 1, 1, 1), layout="NHWC", per="activation", lang=lang)
    lines = e.text.splitlines()
    first = next(i for i, line in enumerate(lines) if e.per == "activation" and ("(this one)" in line or
                                                                                 "(la elegida)" in line))  # fmt: skip
    header, rows = lines[first], lines[first + 1 : first + 5]
    starts = [m.start() for m in re.finditer(r"(?<=   )\S", header)]
    assert len(starts) == 2
    for row in rows:
        assert all(row[s - 3 : s] == "   " and row[s] != " " for s in starts), (header, row)


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("kwargs", [dict(per="channel"), dict(norm="group", groups=1)])
def test_figure_words_agree_with_counts_of_one(tmp_path, lang, kwargs):
    """The figure's titles and notes, read back from an SVG that keeps its text as text."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        path = explain((1, 1, 1, 1), layout="NCHW", lang=lang, **kwargs).save_figure(tmp_path / "one.svg")
    words = re.findall(r"<text[^>]*>(.*?)</text>", path.read_text(encoding="utf-8"), flags=re.S)
    assert words and [m for label in words for m in number_mistakes(label, lang)] == []
    assert any(("1 value" if lang == "en" else "1 valor") in w for w in words)


# ------------------------------------------------------------------ a critical reader's pass (issue 18)


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize(
    ("shape", "layout", "per"),
    [((32, 28, 28, 12), "NHWC", "channel"), ((32, 12, 28, 28), "NCHW", "activation"), ((8, 10), "NC", "channel")],
)
def test_alg2_factor_is_written_with_m_prime(shape, layout, per, lang):
    """Alg. 2's unbiasing factor is m'/(m'−1) with m' the values of one set B (m·p·q per channel), never m/(m−1)."""
    e = explain(shape, layout=layout, per=per, lang=lang)
    text = _flat(e.text)
    assert "m/(m−1)" not in text and "m'/(m'−1)·E_B[σ²_B]" in text
    here = {"en": "(here m' = {})", "es": "(aquí m' = {})"}[lang]
    assert here.format(bnlab.i18n.numbers.integer(e.set_size, lang)) in text


@pytest.mark.parametrize("lang", ["en", "es"])
def test_the_papers_index_k_is_an_activation_in_s3_and_a_feature_map_in_s3_2(lang):
    text = _flat(explain((32, 28, 28, 12), layout="NHWC", lang=lang).text)
    want = {
        "en": "means one activation in §3 and one feature map in §3.2: per activation k runs over the 9,408 pairs "
        "(location, channel), per channel over the 12 feature maps",
        "es": "designa una activación en la §3 y un mapa de características en la §3.2: por activación, k recorre "
        "los 9408 pares (ubicación, canal); por canal, los 12 mapas",
    }[lang]
    assert want in text


@pytest.mark.parametrize("lang", ["en", "es"])
def test_which_variant_torch_and_keras_implement_and_the_reshape_is_true(lang):
    """The text names torch's BatchNorm2d as per channel and BatchNorm1d(C·H·W) on x.flatten(1) as per activation:
    both checked against the float64 reference (Alg. 1) with the axes bnlab.explain gives."""
    import torch

    from bnlab import reference

    text = _flat(explain((4, 3, 2, 5), layout="NCHW", lang=lang).text)
    assert "torch.nn.BatchNorm2d" in text and "BatchNormalization(axis=-1)" in text
    assert "x.flatten(1)" in text and "torch.nn.BatchNorm1d(C·H·W)" in text
    assert "BatchNorm3d" in explain((2, 3, 2, 2, 2), layout="NCDHW", lang=lang).text
    x = np.random.default_rng(0).normal(size=(4, 3, 2, 5))
    for per, layer, inp in (("channel", torch.nn.BatchNorm2d(3), torch.tensor(x)),
                            ("activation", torch.nn.BatchNorm1d(3 * 2 * 5), torch.tensor(x).flatten(1))):  # fmt: skip
        e = explain(x.shape, layout="NCHW", per=per)
        ones = np.ones(e.feature_shape)
        want, _ = reference.forward(x, ones, 0 * ones, axes=e.axes, eps=layer.eps)
        got = layer.double().train()(inp).detach().numpy().reshape(x.shape)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_per_activation_after_a_conv_is_not_said_to_fold_into_its_weights(lang):
    """9,408 different (a, b) cannot go into a convolution's shared weights: the text says what is true instead."""
    act = _flat(explain((32, 28, 28, 12), layout="NHWC", per="activation", lang=lang).text)
    fold = {"en": "it can be folded into the weights and bias of the layer before it",
            "es": "se puede fusionar con los pesos y el sesgo de la capa anterior"}[lang]  # fmt: skip
    assert fold not in act
    true = {
        "en": "a fixed per-location affine map, 9,408 pairs (a, b), applied after the convolution",
        "es": "una transformación afín fija por ubicación, 9408 pares (a, b), aplicada después de la convolución",
    }
    assert true[lang] in act and ("locally connected" in act or "localmente conectada" in act)
    # per channel (one (a, b) per map) and in a dense layer (NC) the fold is true and still said
    assert fold in _flat(explain((32, 28, 28, 12), layout="NHWC", per="channel", lang=lang).text)
    assert fold in _flat(explain((8, 10), layout="NC", per="activation", lang=lang).text)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_running_statistics_are_named_once_as_the_ema_standing_in_for_the_population(lang):
    text = _flat(explain((32, 28, 28, 12), layout="NHWC", lang=lang).text)
    name = {
        "en": "running statistics (running_mean, running_var): an exponential moving average (EMA)",
        "es": "estadísticas acumuladas (running_mean, running_var): una media móvil exponencial (EMA)",
    }[lang]
    assert text.count(name) == 1 and "bnlab.recalibrate" in text


@pytest.mark.parametrize("lang", ["en", "es"])
def test_instance_norm_says_torchs_default_is_affine_false(lang):
    """What the text says about InstanceNorm2d's γ/β is what torch and bnlab do."""
    import torch

    import bnlab.nn

    e = explain((32, 28, 28, 16), layout="NHWC", norm="instance", lang=lang)
    text = _flat(e.text)
    assert "torch.nn.InstanceNorm2d" in text and "affine=False" in text and "affine=True" in text
    for cls in (torch.nn.InstanceNorm2d, bnlab.nn.InstanceNorm2d):
        assert cls(16).affine is False and not list(cls(16).parameters())
        assert sum(p.numel() for p in cls(16, affine=True).parameters()) == e.num_params
    assert "InstanceNorm1d" in explain((4, 16, 9), layout="NCL", norm="instance", lang=lang).text


@pytest.mark.parametrize("lang", ["en", "es"])
def test_cli_first_line_states_the_assumed_layout_and_how_to_ask_for_nchw(lang):
    """`bnlab explain 32,16,8,8` reads NHWC (C = 8): the first line says so and how to get PyTorch's C = 16."""
    run = [sys.executable, "-m", "bnlab", "explain"]
    out = subprocess.run([*run, "32,16,8,8", "--lang", lang], capture_output=True, text=True, timeout=120, check=True)
    first = " ".join(out.stdout.split("\n\n")[0].splitlines()[:2])
    assert "NHWC" in first and "C = 8" in first and "--layout NCHW" in first and "C = 16" in first
    nchw = subprocess.run([*run, "32,16,8,8", "--layout", "NCHW", "--lang", lang], capture_output=True, text=True,
                          timeout=120, check=True).stdout  # fmt: skip
    assert nchw.startswith(explain((32, 16, 8, 8), layout="NCHW", lang=lang).text.splitlines()[0])
    assert "C=16" in nchw.splitlines()[0] + nchw.splitlines()[1]
    dense = subprocess.run([*run, "8,10", "--lang", lang], capture_output=True, text=True, timeout=120, check=True)
    assert "NC" in dense.stdout.splitlines()[0] and "m' = m = 8" in _flat(dense.stdout)


_CALQUES = ["Dicho con palabras", "lado a lado", "Miembro", "miembro", "totalmente conectada", "Qué mirar",
            "modo entrenamiento", "a lo largo de los elementos", "iluminad", "tienen semilla", "Palabras que usa",
            "m/(m−1)"]  # fmt: skip


def test_no_spanish_calques_in_the_explainer_texts_and_docs():
    """Issue 18 §3: the Spanish reader's list, in every explain text and in the tutorial and explainer pages."""
    from pathlib import Path

    texts = {}
    for norm, kw in (("batch", {}), ("layer", {}), ("instance", {}), ("group", {"groups": 4})):
        for layout, shape in (("NHWC", (32, 28, 28, 16)), ("NC", (8, 16))):
            for per in ("channel", "activation"):
                e = explain(shape, layout=layout, norm=norm, per=per, lang="es", **kw)
                texts[f"{norm}/{layout}/{per}"] = e.text
    texts["ghost"] = explain((8, 4, 4, 16), virtual_batch=2, lang="es").text
    docs = Path(__file__).resolve().parents[2] / "docs"
    for name in ("tutorial.es.md", "explainer.es.md", "tutorial.md", "explainer.md"):
        texts[name] = (docs / name).read_text(encoding="utf-8")
    found = {name: [c for c in _CALQUES if c in " ".join(text.split())] for name, text in texts.items()}
    assert not {k: v for k, v in found.items() if v}


@pytest.mark.parametrize("lang", ["en", "es"])
def test_a_grouped_number_is_never_split_over_two_lines(lang):
    """The Spanish 12 544 is one number: the wrap keeps its group space."""
    from bnlab.explain.text import wrap

    assert wrap("a" * 95 + " 12 544 pares") == "a" * 95 + "\n12 544 pares"  # "12" alone would fit on line 1
    for shape in ((32, 28, 28, 16), (32, 28, 28, 12), (64, 56, 56, 32)):
        for per in ("channel", "activation"):
            text = explain(shape, layout="NHWC", per=per, lang=lang).text
            assert not re.search(r"\d\n *\d{3}(?!\d)", text), text


# ------------------------------------------------------------------ a masked set B (issue 17)


@pytest.mark.parametrize(
    ("shape", "layout", "per", "k", "axis"),
    [((6, 3, 4, 5), "NCHW", "channel", 2, None), ((6, 3, 4, 5), "NCHW", "channel", 4, "N"),
     ((7, 3, 5), "NCL", "activation", 3, "N"), ((5, 9, 2), "NCL", "channel", 1, "L")],
)  # fmt: skip
def test_masked_set_b_counts_are_those_of_a_real_masked_forward(shape, layout, per, k, axis):
    """m' in the text is the count bnlab.nn.functional.batch_norm(mask=) uses: read back from the running variance
    it writes (momentum 1: running_var = m'/(m'−1)·σ²_B over the masked-in values)."""
    import torch

    from bnlab.nn import functional as F

    e = explain(shape, layout=layout, per=per, mask_last=k, mask_axis=axis)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(shape))
    mask = torch.ones(shape, dtype=torch.bool)
    mask[(slice(None),) * e.mask_axis + (slice(-k, None),)] = False
    rm, rv = torch.zeros(e.feature_shape, dtype=x.dtype), torch.ones(e.feature_shape, dtype=x.dtype)
    F.batch_norm(x, rm, rv, training=True, momentum=1.0, axes=e.axes, mask=mask)
    biased = np.var(x.numpy(), axis=e.axes, where=mask.numpy())
    ratio = rv.numpy() / biased  # m'/(m'−1)
    np.testing.assert_allclose(ratio / (ratio - 1), e.set_size, rtol=1e-6)
    assert int(mask.sum()) == e.set_size * e.num_sets and e.full_set_size == math.prod(shape[a] for a in e.axes)
    assert e.set_size < e.full_set_size


@pytest.mark.parametrize("lang", ["en", "es"])
def test_masked_text_says_m_prime_counts_the_masked_in_values_and_its_numpy_runs(lang):
    e = explain((32, 28, 28, 12), layout="NHWC", mask_last=4, lang=lang)
    text = _flat(e.text)
    want = {"en": "m' is the count of masked-in values per feature: m' = 32·28·(28−4) = 21,504 values, of 25,088",
            "es": "m' es el número de valores dentro de la máscara por característica: m' = 32·28·(28−4) = 21 504 "
                  "valores, de 25 088"}[lang]  # fmt: skip
    assert want in text
    assert ("here m' = 21,504" if lang == "en" else "aquí m' = 21 504") in text  # Alg. 2's factor uses m'
    code = [line.split("#")[0].strip() for line in e.text.splitlines() if "np." in line]
    t = np.random.default_rng(2).standard_normal((4, 5, 6, 3))  # the same lines on a smaller tensor
    ns = {"np": np, "t": t}
    for line in code:
        exec(line, ns)
    np.testing.assert_allclose(ns["mu_B"], t[:, :, :-4, :].mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(ns["var_B"], t[:, :, :-4, :].var(axis=(0, 1, 2)))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [(dict(per="activation", mask_last=4), "sets B of the last 4 positions of W are empty"),
     (dict(per="activation", mask_last=31, mask_axis="N"), "keeps m' = 1 value"),
     (dict(mask_last=28), "from 1 to 27"), (dict(mask_last=0), "from 1 to 27"),
     (dict(mask_last=2, mask_axis="C"), "other than C"), (dict(mask_last=2, norm="layer"), "applies to batch norm"),
     (dict(mask_last=2, virtual_batch=2), "without virtual_batch")],
)  # fmt: skip
def test_a_mask_that_empties_a_set_b_is_refused_as_the_functional_refuses_it(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        explain((32, 28, 28, 12), layout="NHWC", **kwargs)


def test_cli_mask_last():
    cmd = [sys.executable, "-m", "bnlab", "explain", "16,3,10", "--layout", "NCL", "--mask-last", "3", "--lang", "en"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "m' = 16·(10−3) = 112 values, of 160" in _flat(out)
    bad = subprocess.run([sys.executable, "-m", "bnlab", "explain", "16,3,10", "--layout", "NCL", "--mask-last",
                          "10"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "from 1 to 9" in bad.stderr and "Traceback" not in bad.stderr


def test_a_third_language_adds_its_nouns_in_its_own_catalog(tmp_path, monkeypatch):
    """The agreement's nouns are catalog data (core.json's @words): a made-up language 'xx' with three plural
    forms brings its own; what it lacks (a noun, a template) falls back to English."""
    import json

    from bnlab.i18n.words import say

    root = tmp_path / "catalogs" / "xx"
    root.mkdir(parents=True)
    core = {
        "@plural-forms": "nplurals=3; plural=(n == 0 ? 0 : n == 1 ? 1 : 2);",
        "@number": {"decimal": "'", "group": "_", "group_min_digits": 4, "percent": "pc {}"},
        "@words": {"nouns": {"value": ["valorzero", "valoro", "valoroj"]},
                   "phrases": {"": ["{n} {noun}", "{n} {noun}"], "the": ["la sola {noun}", "la {n} {noun}"]}},
    }  # fmt: skip
    (root / "core.json").write_text(json.dumps(core), "utf-8")
    (root / "explain.json").write_text(json.dumps({"bn": {"numpy": "En NumPy-xx:"}}), "utf-8")
    monkeypatch.setenv("BNLAB_CATALOGS", str(tmp_path / "catalogs"))
    assert [say("xx", "{n:value}", n=k) for k in (0, 1, 25088)] == ["0 valorzero", "1 valoro", "25_088 valoroj"]
    assert say("xx", "{n:the value}", n=1) == "la sola valoro"
    assert say("xx", "{n:mean}", n=2) == "2 means"  # a noun xx lacks: English's
    text = explain((32, 28, 28, 12), layout="NHWC", lang="xx").text
    assert "En NumPy-xx:" in text and "m' = 25_088 valoroj" in _flat(text)
