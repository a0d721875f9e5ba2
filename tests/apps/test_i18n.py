"""The translation layer: every key in every language with the same fields, no HTML in catalogs, numbers as
each language writes them, and a third language added with one catalog per domain."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab import i18n
from bnlab.i18n import numbers

SHIPPED = i18n._SHIPPED
SRC = Path(i18n.__file__).resolve().parents[2]  # the bnlab under test (a copy, for tests/mutation)


def _domains(lang: str) -> set[str]:
    return {p.stem for p in (SHIPPED / lang).glob("*.json")}


def _flat(table: dict, prefix: str = ""):
    for key, value in table.items():
        if key.startswith("@"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat(value, name + ".")
        else:
            yield name, value


def _templates(value) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_the_shipped_languages_are_english_and_spanish_with_the_same_domains():
    assert i18n.languages()[:2] == ("en", "es")
    assert _domains("en") == _domains("es") and "core" in _domains("en")


@pytest.mark.parametrize("domain", sorted(_domains("en")))
def test_every_key_exists_in_every_language_with_the_same_fields(domain):
    tables = {
        lang: dict(_flat(json.loads((SHIPPED / lang / f"{domain}.json").read_text("utf-8")))) for lang in ("en", "es")
    }
    assert tables["en"].keys() == tables["es"].keys(), (
        f"{domain}: only in en {sorted(tables['en'].keys() - tables['es'].keys())}, "
        f"only in es {sorted(tables['es'].keys() - tables['en'].keys())}"
    )
    for key, en in tables["en"].items():
        es = tables["es"][key]
        assert type(en) is type(es), f"{domain}.{key}: a {type(en).__name__} in en, a {type(es).__name__} in es"
        want = set().union(*(i18n.fields(s) for s in _templates(en)))
        for lang, value in (("en", en), ("es", es)):
            if isinstance(value, list):
                assert len(value) == 2, f"{domain}.{key} ({lang}): en and es have two plural forms"
                assert all("n" in i18n.fields(s) for s in value), f"{domain}.{key} ({lang}): a form without {{n}}"
            got = set().union(*(i18n.fields(s) for s in _templates(value)))
            assert got == want, f"{domain}.{key} ({lang}): fields {sorted(got)}, English has {sorted(want)}"


@pytest.mark.parametrize("lang", ["en", "es"])
def test_no_markup_inside_catalog_strings(lang):
    for path in (SHIPPED / lang).glob("*.json"):
        for key, value in _flat(json.loads(path.read_text("utf-8"))):
            for s in _templates(value):
                assert not re.search(r"</?[a-zA-Z][^>]*>|&[a-z]+;", s), f"{path.name}:{key} holds HTML: {s!r}"


def test_plural_forms_follow_the_count():
    assert i18n.t("core.count_values", "en", n=1) == "1 value"
    assert i18n.t("core.count_values", "en", n=0) == "0 values"
    assert i18n.t("core.count_values", "es", n=2) == "2 valores"
    assert i18n.t("core.count_values", "es", n=25088) == "25 088 valores"
    with pytest.raises(i18n.CatalogError, match="pass the count as n="):
        i18n.t("core.count_values", "en")


@pytest.mark.parametrize(
    "argv",
    [["train", "--lang", "en", "--epochs", "1", "--lang", "es"], ["train", "--lang=es", "--lang", "en"],
     ["--lang", "es", "train"], ["train", "--epochs", "1"], ["train", "--lang", "es", "--lang=en", "--quiet"]],
)  # fmt: skip
def test_the_language_read_before_parsing_is_the_one_argparse_reads(argv):
    """A repeated --lang: argparse keeps the last, and so does the reading done before the parser runs (the
    start-up messages, a Ctrl-C during imports), so that every message of one command speaks one language."""
    from bnlab import __main__ as entry
    from bnlab.cli import build_parser

    parsed = build_parser().parse_known_args(argv)[0]
    assert i18n.lang_from_argv(argv) == getattr(parsed, "lang", None)
    saved = sys.argv
    try:
        sys.argv = ["bnlab", *argv]
        want = i18n.t("cli.interrupted_plain", parsed.lang or i18n.from_locale())
        assert entry._interrupted_at_import() == want
    finally:
        sys.argv = saved


def test_unknown_keys_and_languages_name_what_is_missing():
    with pytest.raises(i18n.CatalogError, match=r"no catalog entry 'core.nope'.*catalogs/en/core.json"):
        i18n.t("core.nope", "en")
    with pytest.raises(i18n.CatalogError, match="unknown language 'fr'.*'en', 'es'"):
        i18n.t("core.yes", "fr")
    with pytest.raises(i18n.CatalogError, match="has no domain"):
        i18n.t("yes", "en")


@pytest.mark.parametrize(
    ("x", "digits", "en", "es"),
    [
        (0.0, 1, "0.0", "0,0"),
        (2048, 0, "2,048", "2048"),
        (25088.5, 1, "25,088.5", "25 088,5"),
        (-12345.678, 2, "-12,345.68", "-12 345,68"),
        (999.95, 1, "1,000.0", "1000,0"),
        (1e7, 0, "10,000,000", "10 000 000"),
    ],
)
def test_decimals_as_each_language_writes_them(x, digits, en, es):
    assert numbers.decimal(x, "en", digits) == en
    assert numbers.decimal(x, "es", digits) == es


def test_integers_percentages_and_seconds():
    assert [numbers.integer(n, "es") for n in (7, 2048, 10000, -25088)] == ["7", "2048", "10 000", "-25 088"]
    assert [numbers.integer(n, "en") for n in (7, 2048, 10000, -25088)] == ["7", "2,048", "10,000", "-25,088"]
    assert numbers.percent(0.724, "en") == "72.4%" and numbers.percent(0.724, "es") == "72,4 %"
    assert numbers.seconds(74.04, "en") == "74.0 s" and numbers.seconds(74.04, "es") == "74,0 s"


@pytest.fixture
def third_language(tmp_path, monkeypatch):
    """A tiny catalog of a made-up language 'xx' (one file per domain), added through BNLAB_CATALOGS."""
    root = tmp_path / "catalogs" / "xx"
    root.mkdir(parents=True)
    (root / "core.json").write_text(
        json.dumps(
            {
                "@plural-forms": "nplurals=3; plural=(n == 0 ? 0 : n == 1 ? 1 : 2);",
                "@number": {"decimal": "'", "group": "_", "group_min_digits": 4, "percent": "pc {}"},
                "yes": "ja",
                "count_values": ["{n} nulla", "{n} una", "{n} multa"],
            }
        ),
        "utf-8",
    )
    (root / "cli.json").write_text(
        json.dumps(
            {
                "error": "eraro",
                "need_data": "XX --data {dataset}: {what}",
                "arg": {"not_number": "XX {text} ne nombro"},
                "help": {"help": "XX helpo"},
                "progress": {"batch": "XX-aro"},
            }
        ),
        "utf-8",
    )
    monkeypatch.setenv("BNLAB_CATALOGS", str(tmp_path / "catalogs"))
    return root


def test_a_third_language_is_one_catalog_per_domain(third_language):
    assert i18n.languages() == ("en", "es", "xx")
    assert i18n.t("core.yes", "xx") == "ja"
    assert [i18n.t("core.count_values", "xx", n=k) for k in (0, 1, 1234)] == ["0 nulla", "1 una", "1_234 multa"]
    assert numbers.percent(0.5, "xx") == "pc 50'0"
    # a key the tiny catalog lacks falls back to English instead of failing
    assert i18n.t("core.no", "xx") == "no"


def test_the_locale_picks_a_language_the_catalogs_have(third_language):
    assert i18n.from_locale({"LANG": "es_MX.UTF-8"}) == "es"
    assert i18n.from_locale({"LC_ALL": "xx_YY.UTF-8", "LANG": "es_ES"}) == "xx"  # LC_ALL first
    assert i18n.from_locale({"LANG": "fr_FR.UTF-8"}) == "en"  # no French catalog
    assert i18n.from_locale({"LANG": "C.UTF-8"}) == i18n.from_locale({}) == "en"


def _bnlab(*args: str, lang_env: str = "C.UTF-8") -> subprocess.CompletedProcess:
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "LANG": lang_env, "LC_ALL": "", "LC_MESSAGES": "", "PYTHONPATH": f"{SRC}:{path}"}
    return subprocess.run([sys.executable, "-m", "bnlab", *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_command_speaks_a_third_language(third_language):
    """``--lang xx`` (or an xx locale) is accepted; the command says what xx's catalog has, English for the rest."""
    for r in (_bnlab("train", "--dataset", "cifar10", "--lang", "xx"), _bnlab("train", "--dataset", "cifar10",
                                                                              lang_env="xx_YY.UTF-8")):  # fmt: skip
        assert r.returncode == 2, r.stderr
        # xx's "error" and "need_data"; the English "what" and "try_help", which xx lacks
        assert "bnlab train: eraro: XX --data cifar10: the cifar-10-batches-py directory" in r.stderr, r.stderr
        assert "Try 'bnlab train --help' for more information." in r.stderr
    r = _bnlab("train", "--lr", "fast", "--lang", "xx")  # an argument type's message, nested in the catalog
    assert r.returncode == 2 and "argument --lr: XX 'fast' ne nombro" in r.stderr, r.stderr
    r = _bnlab("--lang", "xx", "--help")  # the help texts of every language side by side, xx after en and es
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())  # as argparse wraps it
    assert "show this help and exit / muestra esta ayuda y termina / XX helpo" in text
    assert text.count("show the version and exit") == 1  # xx lacks it: English once, not twice
    assert "--lang {en,es,xx}" in text


def test_a_progress_bar_in_a_third_language(third_language, capsys):
    import torch

    from bnlab.inference import recalibrate

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    recalibrate(model, [torch.randn(4, 1, 3, 3) for _ in range(3)], lang="xx")
    err = capsys.readouterr().err
    assert "recalibrate:" in err and "/3 [" in err and "XX-aro" in err  # English label, xx unit


# -- the keys of the cli domain: each one the code uses exists, each one the catalogs hold is used ----------------
_KEY = re.compile(r"""(?<=["'])cli\.[A-Za-z0-9_.]*(?=["'{])""")


def _cli_keys_in_the_code() -> set[str]:
    """Every literal "cli...." in the package's sources (i18n's own docstrings aside); one ending with "." is the
    start of a key made at run time (f"cli.splits.{split}")."""
    found: set[str] = set()
    for path in (SRC / "bnlab").rglob("*.py"):
        if "i18n" not in path.relative_to(SRC / "bnlab").parts:
            found.update(_KEY.findall(path.read_text("utf-8")))
    return found


def test_the_key_scan_finds_literal_and_run_time_keys():
    assert _KEY.findall("""t("cli.error", lang) t(f"cli.splits.{x}", lang) 'cli.a_b.c' "bnlab.cli.main" """) == [
        "cli.error", "cli.splits.", "cli.a_b.c"]  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_cli_key_the_code_uses_is_in_the_catalogs_and_every_entry_is_used(lang):
    held = set(i18n.keys("cli", lang))
    used = _cli_keys_in_the_code()
    assert len(used) > 100 and len(held) > 100
    missing = {k for k in used if not any(h == k or h.startswith(k if k.endswith(".") else k + ".") for h in held)}
    assert not missing, f"used in src/ but not in catalogs/{lang}/cli.json: {sorted(missing)}"
    dead = {h for h in held if not any(h == k or h.startswith(k if k.endswith(".") else k + ".") for k in used)}
    assert not dead, f"in catalogs/{lang}/cli.json but used nowhere in src/: {sorted(dead)}"
