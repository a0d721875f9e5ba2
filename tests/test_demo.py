"""bnlab demo: a short run writes a report whose links all exist and which holds the three runs."""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bnlab.cli import main
from bnlab.report.strings import NORM_NAMES, S

PNG = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key])
        if a.get("id"):
            self.ids.add(a["id"])


def _check_report(out: Path, lang: str) -> str:
    index = out / "index.html"
    assert index.is_file()
    text = index.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    assert parser.links, "the report links nothing"
    for link in parser.links:
        assert not re.match(r"^[a-z]+:", link), f"absolute link {link!r}: the folder must be self-contained"
        if link.startswith("#"):
            assert link[1:] in parser.ids, f"anchor {link} has no target"
            continue
        target = out / link
        assert target.is_file(), f"link {link!r} points to a missing file"
        if link.endswith(".png"):
            assert target.read_bytes()[:8] == PNG
    assert f'<html lang="{lang}">' in text
    for norm in ("none", "activation", "channel"):
        assert NORM_NAMES[lang][norm] in text
    return text


def test_short_demo_report(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--epochs", "1", "--seeds", "0", "--quiet", "--lang", "en"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"Report written to {(out / 'index.html').resolve()}" in printed
    text = _check_report(out, "en")
    for section in ("What set B is in this network", "Training curves", "Parameter counts", "Timings",
                    "Train mode vs eval mode"):  # fmt: skip
        assert section in text
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert {(r["setting"], r["norm"]) for r in runs} == {
        (s, n) for s in ("adam", "high_lr", "sigmoid") for n in ("none", "activation", "channel")
    }
    steps = results["data"]["train"] // results["batch_size"]
    for r in runs:
        assert 0.0 <= r["test"]["accuracy"] <= 1.0 and r["steps"] == steps
        assert len(r["history"]["p50"]) == steps
        assert (r["traineval"] is None) == (r["norm"] == "none")
        if r["traineval"]:
            assert r["traineval"]["ema"] == r["test"]
            assert r["traineval"]["recal"] is not None  # bnlab.recalibrate ran
    by_norm = {r["norm"]: r["params"]["bn"] for r in runs}
    assert by_norm == {"none": 0, "activation": 3200, "channel": 224}
    # the set B table comes from bnlab.explain: conv1 per channel pools m·p·q = 32·8·8 values
    assert results["layers"][0]["channel"] == {"sets": 16, "size": 2048, "params": 32}
    assert results["layers"][0]["activation"] == {"sets": 1024, "size": 32, "params": 2048}


@pytest.mark.slow
def test_demo_in_spanish_from_the_locale(tmp_path):
    out = tmp_path / "informe"
    env = {**os.environ, "LANG": "es_ES.UTF-8", "LC_ALL": "", "LC_MESSAGES": ""}
    r = subprocess.run(
        [sys.executable, "-m", "bnlab", "demo", "--out", str(out), "--epochs", "1", "--seeds", "0", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Informe escrito en" in r.stdout
    text = _check_report(out, "es")
    assert "Qué es el conjunto B en esta red" in text and "Curvas de entrenamiento" in text
    assert "exactitud de prueba" in text
    assert re.search(r"\d+,\d %", text), "Spanish numbers use a decimal comma"


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def test_both_languages_have_the_same_strings():
    assert S["en"].keys() == S["es"].keys()
    for key in S["en"]:
        assert _fields(S["en"][key]) == _fields(S["es"][key]), key
    assert NORM_NAMES["en"].keys() == NORM_NAMES["es"].keys()
