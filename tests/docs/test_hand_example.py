"""The tutorial's example computed by hand (2 examples × 2 channels × a 2×2 map), read from the markdown of both
languages and checked against bnlab.reference (Alg. 1 in float64), so the text cannot drift from the math."""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import bnlab
from bnlab import reference

DOCS = Path(__file__).resolve().parents[2] / "docs"
SECTION = {"en": "## A tiny example by hand", "es": "## Un ejemplo diminuto, a mano"}
SET_ROW = {"en": "| channel c = ", "es": "| canal c = "}


def _section(lang: str) -> str:
    doc = (DOCS / {"en": "tutorial.md", "es": "tutorial.es.md"}[lang]).read_text(encoding="utf-8")
    start = doc.index(SECTION[lang])
    return doc[start : doc.index("\n## ", start + 1)]


def _maps(text: str, name: str) -> np.ndarray:
    """The (2, 2, 2, 2) tensor written as lines 'name[n, c] = [[.., ..], [.., ..]]'."""
    out = np.full((2, 2, 2, 2), np.nan)
    found = re.findall(rf"^{re.escape(name)}\[(\d), (\d)\] = (\[\[.*?\]\])", text, flags=re.M)
    assert len(found) == 4, found
    for n, c, values in found:
        out[int(n), int(c)] = ast.literal_eval(values)
    return out


def _last_number(cell: str) -> Fraction:
    return Fraction(re.findall(r"-?\d+(?:/\d+)?", cell)[-1])


def _parsed(lang: str):
    text = _section(lang)
    x, x_hat = _maps(text, "x"), _maps(text, "x̂")
    rows = [line for line in text.splitlines() if line.startswith(SET_ROW[lang])]
    assert len(rows) == 2
    sets = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        c = int(re.search(r"c = (\d)", cells[0]).group(1))
        values = [int(v) for v in cells[1].split(",")]
        sets[c] = (values, cells[2], cells[3])
    return text, x, x_hat, sets


def _check_sums(cell: str) -> None:
    """Each '(a+b+...)/k = s/k = v' or 's/k = v' cell is arithmetic that holds."""
    parts = [p.strip() for p in cell.split("=")]
    for left, right in zip(parts, parts[1:], strict=False):
        num, _, den = left.rpartition("/")
        total = sum(int(v) for v in num.strip("()").split("+"))
        assert Fraction(total, int(den)) == Fraction(right), cell


@pytest.mark.parametrize("lang", ["en", "es"])
def test_hand_example_sets_means_variances_and_normalized_values_are_alg1s(lang):
    text, x, x_hat, sets = _parsed(lang)
    e = bnlab.explain(x.shape, layout="NCHW", per="channel")
    assert (e.num_sets, e.set_size) == (2, 8) and f"m' = m·p·q = 2·2·2 = {e.set_size}" in text
    y, cache = reference.forward(x, np.ones(2), np.zeros(2), axes=e.axes, eps=1e-5)
    for c, (values, mean_cell, var_cell) in sets.items():
        assert sorted(values) == sorted(x[:, c].ravel().tolist())  # the set B of channel c: its map in both examples
        assert values == x[:, c].ravel().tolist()  # listed in order: example 0's map, then example 1's
        _check_sums(mean_cell)
        _check_sums(var_cell)
        assert float(_last_number(mean_cell)) == cache.mu_B.ravel()[c]
        assert float(_last_number(var_cell)) == pytest.approx(cache.sigma2_B.ravel()[c], abs=1e-12)
        squares = [int(v) for v in re.match(r"\(([\d+]+)\)/8", var_cell).group(1).split("+")]
        assert squares == [int((v - cache.mu_B.ravel()[c]) ** 2) for v in values]  # (x − μ_B)², value by value
    # "ε = 1e-5 changes them only in the sixth decimal"
    np.testing.assert_allclose(y, x_hat, atol=5e-6)
    assert np.abs(y - x_hat).max() > 0  # ε is really there
    assert np.array_equal(cache.x_hat.round(5), x_hat)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_hand_example_per_activation_sets_of_two_normalize_to_minus_and_plus_one(lang):
    text, x, _, _ = _parsed(lang)
    e = bnlab.explain(x.shape, layout="NCHW", per="activation")
    assert (e.num_sets, e.set_size) == (8, 2) and "C·p·q = 8" in text
    ones = np.ones(e.feature_shape)
    y, cache = reference.forward(x, ones, 0 * ones, axes=e.axes, eps=1e-5)
    pair = re.search(r"\{x\[0, 0, 0, 0\], x\[1, 0, 0, 0\]\} = \{(\d+), (\d+)\}, \w+ μ_B = (\d+) \w+ σ²_B = (\d+)", text)
    assert pair, "the per-activation pair of the text"
    a, b, mean, var = map(int, pair.groups())
    assert (a, b) == (x[0, 0, 0, 0], x[1, 0, 0, 0])
    assert (mean, var) == (cache.mu_B[0, 0, 0, 0], cache.sigma2_B[0, 0, 0, 0])
    np.testing.assert_allclose(np.abs(y), 1, atol=1e-5)  # every set here holds two different values
    np.testing.assert_allclose(y[0] + y[1], 0, atol=1e-12)
