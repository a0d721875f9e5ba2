"""Counts that agree with their nouns, in any catalog language: '1 mean', '2 means', 'the single feature map',
'el único mapa', 'cada una de las 3 medias'.

A template names the noun a count takes in its format spec: ``{n:example}`` gives '1 example' or '2 examples';
a kind before the noun picks a phrase (``{n:each example}``: 'the single example' / 'each of the 2 examples');
a capital kind starts a sentence (``{c:Each feature_map}``). The nouns, the phrases and the words that follow a
noun's gender are language data: each language's ``core.json`` holds them under ``"@words"``::

    "@words": {
      "nouns": {"example": ["example", "examples"], ...},                 # plural forms, by @plural-forms
      "phrases": {"each": ["the single {noun}", "each of the {n} {noun}"], ...},   # [n == 1, any other n]
      "genders": {"f": {"el": "la", ...}}                                 # optional: fields a gender fills
    }

A noun may be ``{"forms": [...], "gender": "f"}``; its gender's words fill the phrase's other fields ({el},
{los}, ...). So a third language adds its nouns in its own ``core.json`` (a noun it lacks is taken from
English, as :func:`bnlab.i18n.lookup` does for keys). Whole numbers are written by
:func:`bnlab.i18n.numbers.integer`; a :class:`Shown` count prints its expression ('28×28 = 784').

>>> say("en", "{c:Each feature_map} has {n:location}.", c=1, n=Shown(784, "28×28 = 784"))
'The single feature map has 28×28 = 784 locations.'
>>> say("es", "{c:Each map} tiene {n:location}.", c=3, n=1)
'Cada uno de los 3 mapas tiene 1 ubicación.'
>>> t("explain.bn.count_fc", "es", sets=1, m=32)
'1 conjunto B (uno por característica), cada uno con m = 32 valores.'
"""

from __future__ import annotations

import string
from typing import Any, NamedTuple

from . import DEFAULT_LANG, CatalogError, catalog, lookup, plural_index
from .numbers import integer

__all__ = ["Shown", "say", "t"]


class Shown(NamedTuple):
    """A count written as an expression ('4×4 = 16'); the words around it agree with ``value``."""

    value: int
    text: str


def _grammar(lang: str, table: str, name: str) -> Any:
    """One entry of a language's ``@words`` table (nouns/phrases/genders), else English's."""
    for source in (lang, DEFAULT_LANG):
        entry = catalog("core", source).get("@words", {}).get(table, {}).get(name)
        if entry is not None:
            return entry
    raise CatalogError(f"no {table[:-1]} {name!r} in the '@words' of catalogs/{lang}/core.json (nor in English)")


class _Words(string.Formatter):
    """``str.format`` for the templates, with counts that agree with their nouns (see the module)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def format_field(self, value, format_spec: str) -> str:
        if isinstance(value, Shown):
            number, text = value.value, value.text
        elif isinstance(value, int) and not isinstance(value, bool):
            number, text = value, integer(value, self.lang)
        else:
            return super().format_field(value, format_spec)
        if not format_spec:
            return text
        kind, _, name = format_spec.rpartition(" ")
        noun = _grammar(self.lang, "nouns", name)
        forms, gender = (noun["forms"], noun.get("gender")) if isinstance(noun, dict) else (noun, None)
        words = _grammar(self.lang, "genders", gender) if gender else {}
        form = forms[min(plural_index(number, self.lang), len(forms) - 1)]
        phrase = _grammar(self.lang, "phrases", kind.lower())[number != 1]
        phrase = phrase.format(n=text, noun=form, **words)
        return phrase[:1].upper() + phrase[1:] if kind[:1].isupper() else phrase


def say(lang: str, template: str, **values) -> str:
    """Fill ``template`` in ``lang``, counts agreeing with their nouns (see the module)."""
    return _Words(lang).format(template, **values)


def t(key: str, lang: str, /, **values) -> str:
    """:func:`bnlab.i18n.t` for templates whose counts agree with their nouns: the catalog text of ``key``
    filled by :func:`say`."""
    value = lookup(key, lang)
    if not isinstance(value, str):
        raise CatalogError(f"catalog entry {key!r} in {lang!r} is {type(value).__name__}, not text")
    return say(lang, value, **values)
