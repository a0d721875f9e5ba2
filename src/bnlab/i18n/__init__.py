"""bnlab's one translation layer: every user-facing word comes from a catalog through :func:`t`.

Catalogs are JSON files, one per *domain* (``core``, ``cli``, ``report``, ``explain``, ``page``) and
language, under ``catalogs/<lang>/<domain>.json``. A key is ``"<domain>.<name>"``; names may nest with
dots (``t("cli.splits.test", "es")``). A value is one of

- a ``str.format`` template with named fields: ``"Checkpoint written to {ckpt}"``;
- a list of plural forms, chosen by the field ``n`` with the language's gettext ``Plural-Forms`` rule
  (``core.json``'s ``"@plural-forms"``): ``["{n} image", "{n} images"]``;
- an object of such values (a table looked up by its keys).

Catalog strings hold no HTML: the report's templates add the markup and escape what they insert.
Numbers are written by :mod:`bnlab.i18n.numbers` with each language's conventions (``core.json``'s
``"@number"``).

Adding a language is adding one catalog per domain: ``catalogs/<lang>/core.json``, ``cli.json``, ... .
A folder laid out the same way can be added with the environment variable ``BNLAB_CATALOGS`` (several
folders separated by ``os.pathsep``); it is read before the shipped catalogs, so it may also override a
shipped string. The tests add a tiny third language this way.

Library warnings and exceptions are in English only; the CLI and the reports translate.

>>> t("core.yes", "es")
'sí'
>>> t("core.count_values", "en", n=1), t("core.count_values", "es", n=25088)
('1 value', '25 088 valores')
"""

from __future__ import annotations

import functools
import gettext
import json
import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["t", "lookup", "languages", "catalog", "keys", "plural_index", "fields", "from_locale", "lang_from_argv",
           "DEFAULT_LANG", "CatalogError"]  # fmt: skip

#: The language used when a key is missing from a language's catalog (never silently: see ``lookup``).
DEFAULT_LANG = "en"

_SHIPPED = Path(__file__).resolve().parent / "catalogs"


class CatalogError(KeyError):
    """A key, domain or language that no catalog has (the message names what is missing and where)."""

    def __str__(self) -> str:  # KeyError quotes its argument; this one is a sentence
        return str(self.args[0])


def _roots() -> tuple[Path, ...]:
    extra = [Path(p) for p in os.environ.get("BNLAB_CATALOGS", "").split(os.pathsep) if p]
    return (*extra, _SHIPPED)


@functools.cache
def _languages(roots: tuple[Path, ...]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for root in roots:
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if (d / "core.json").is_file():
                    found.setdefault(d.name, None)
    # the shipped order first (en, es), then any added language in name order
    shipped = [lang for lang in ("en", "es") if lang in found]
    return (*shipped, *sorted(set(found) - set(shipped)))


def languages() -> tuple[str, ...]:
    """The languages that have a ``core`` catalog: ``('en', 'es')`` plus any added through ``BNLAB_CATALOGS``."""
    return _languages(_roots())


@functools.cache
def _load(roots: tuple[Path, ...], lang: str, domain: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for root in reversed(roots):  # shipped first, added folders override
        path = root / lang / f"{domain}.json"
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise CatalogError(f"{path}: a catalog must be a JSON object of keys to strings")
            merged.update(data)
    return merged


def catalog(domain: str, lang: str) -> dict[str, Any]:
    """The whole catalog of one domain in one language (``{}`` when that language lacks the domain)."""
    return _load(_roots(), lang, domain)


def keys(domain: str, lang: str = DEFAULT_LANG) -> dict[str, Any]:
    """Every entry of one domain in one language, flattened to full keys: ``{"cli.splits.test": "Test", ...}``.

    A table (a JSON object) gives one key per leaf; a plural entry is one key (its list of forms); ``"@..."``
    settings are left out. The tests compare the keys across languages and with the keys the code uses."""

    def flat(table: dict, prefix: str):
        for name, value in table.items():
            if name.startswith("@"):
                continue
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", value

    return dict(flat(catalog(domain, lang), f"{domain}."))


def from_locale(environ: Mapping[str, str] | None = None) -> str:
    """The language of the user's locale: the first of ``LC_ALL``, ``LC_MESSAGES``, ``LANG`` that is set decides;
    its language part (``es`` of ``es_MX.UTF-8``) when a catalog has it, else English (``C.UTF-8``, ``fr_FR``)."""
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var)
        if value:
            lang = value.split(".")[0].split("@")[0].split("_")[0].lower()
            return lang if lang in languages() else DEFAULT_LANG
    return DEFAULT_LANG


def lang_from_argv(argv: Sequence[str]) -> str | None:
    """The language a command line asks for with ``--lang L`` or ``--lang=L`` (a language of the catalogs), or None.
    The last one counts, as argparse reads a repeated option; read before the parser runs (or when it never
    does: a Ctrl-C during start-up), so that every message of a command speaks the language its options say."""
    found = None
    langs = languages()
    for i, a in enumerate(argv):
        value = argv[i + 1] if a == "--lang" and i + 1 < len(argv) else a[7:] if a.startswith("--lang=") else None
        if value in langs:
            found = value
    return found


def _check_lang(lang: str) -> str:
    langs = languages()
    if lang not in langs:
        raise CatalogError(f"unknown language {lang!r}; the catalogs have {', '.join(map(repr, langs))}")
    return lang


def _walk(table: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(table, dict) or part not in table:
            return _MISSING
        table = table[part]
    return table


_MISSING = object()


def lookup(key: str, lang: str, *, fallback: bool = True) -> Any:
    """The raw catalog value of ``key`` ("domain.name[.sub]") in ``lang``.

    A key missing in ``lang`` falls back to English when ``fallback`` (the tests check that no shipped key
    is missing in any language, so the fallback only serves a partial added catalog); a key missing in
    English too raises :class:`CatalogError`."""
    _check_lang(lang)
    domain, _, name = key.partition(".")
    if not name:
        raise CatalogError(f"catalog key {key!r} has no domain: write it as 'domain.name', e.g. 'cli.error'")
    value = _walk(catalog(domain, lang), name.split("."))
    if value is _MISSING and fallback and lang != DEFAULT_LANG:
        value = _walk(catalog(domain, DEFAULT_LANG), name.split("."))
    if value is _MISSING:
        raise CatalogError(f"no catalog entry {key!r} for language {lang!r} (catalogs/{lang}/{domain}.json)")
    return value


@functools.cache
def _plural_rule(roots: tuple[Path, ...], lang: str):
    forms = _load(roots, lang, "core").get("@plural-forms", "nplurals=2; plural=(n != 1);")
    expr = forms.split("plural=", 1)[1].rstrip("; ")
    return gettext.c2py(expr)


def plural_index(n: int, lang: str) -> int:
    """Which plural form ``n`` takes in ``lang`` (gettext's rule from the language's ``core.json``)."""
    return _plural_rule(_roots(), _check_lang(lang))(abs(int(n)))


def fields(template: str) -> set[str]:
    """The named fields a template uses (``{n}``, ``{ckpt}``); the tests compare them across languages."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def t(key: str, lang: str, /, **values: Any) -> Any:
    """The text of ``key`` in ``lang`` with ``values`` filled in.

    Plural entries pick their form from ``values["n"]``; an object entry comes back as a dict of its
    strings (unformatted); a number passed as a field is inserted as given, so format numbers first with
    :mod:`bnlab.i18n.numbers` (``n`` may be an int and is written by ``numbers.integer`` when the
    template says ``{n}``)."""
    value = lookup(key, lang)
    if isinstance(value, list):
        if "n" not in values:
            raise CatalogError(f"catalog entry {key!r} has plural forms: pass the count as n=")
        index = min(plural_index(values["n"], lang), len(value) - 1)
        value = value[index]
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise CatalogError(f"catalog entry {key!r} in {lang!r} is {type(value).__name__}, not text")
    if "n" in values and isinstance(values["n"], int) and not isinstance(values["n"], bool):
        from .numbers import integer

        values = {**values, "n": integer(values["n"], lang)}
    return value.format(**values) if values or "{" in value else value
