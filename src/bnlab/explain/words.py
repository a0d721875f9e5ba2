"""Counts in words, English and Spanish: numbers grouped as each language writes them, and nouns that
agree with their count ('1 mean', '2 means', 'the single feature map', 'el único mapa').

>>> say("en", "{c:Each feature_map} has {n:location}.", c=1, n=Shown(784, "28×28 = 784"))
'The single feature map has 28×28 = 784 locations.'
>>> say("es", "{c:Each map} tiene {n:location}.", c=3, n=1)
'Cada uno de los 3 mapas tiene 1 ubicación.'
>>> integer(25088, "en"), integer(25088, "es"), integer(2048, "es")
('25,088', '25 088', '2048')
"""

from __future__ import annotations

import string
from typing import NamedTuple

#: Languages of the text and the figure.
LANGS = ("en", "es")


def integer(n: int, lang: str) -> str:
    """Thousands grouped: 2,048 and 25,088 in English; 2048 and 25 088 in Spanish (the RAE groups only
    numbers of five or more digits, with a space)."""
    if lang == "es":
        return f"{n:,}".replace(",", " ") if abs(n) >= 10_000 else str(n)
    return f"{n:,}"


class Shown(NamedTuple):
    """A count written as an expression ('4×4 = 16'); the words around it agree with ``value``."""

    value: int
    text: str


# Nouns that follow a count: key -> (singular, plural), and in Spanish the gender its article takes.
_NOUNS = {
    "en": {
        "example": ("example", "examples"), "sample": ("sample", "samples"), "channel": ("channel", "channels"),
        "channel_map": ("channel (feature map)", "channels (feature maps)"), "feature": ("feature", "features"),
        "feature_map": ("feature map", "feature maps"), "location": ("location", "locations"),
        "value": ("value", "values"), "set": ("set", "sets"), "set_B": ("set B", "sets B"),
        "mean": ("mean", "means"), "variance": ("variance", "variances"), "pair": ("pair", "pairs"),
        "group": ("group", "groups"), "run": ("run", "runs"),
    },
    "es": {
        "example": ("ejemplo", "ejemplos", "m"), "sample": ("ejemplo", "ejemplos", "m"),
        "channel": ("canal", "canales", "m"),
        "channel_map": ("canal (mapa de características)", "canales (mapas de características)", "m"),
        "feature": ("característica", "características", "f"), "map": ("mapa", "mapas", "m"),
        "location": ("ubicación", "ubicaciones", "f"), "value": ("valor", "valores", "m"),
        "set": ("conjunto", "conjuntos", "m"), "set_B": ("conjunto B", "conjuntos B", "m"),
        "mean": ("media", "medias", "f"), "variance": ("varianza", "varianzas", "f"), "pair": ("par", "pares", "m"),
        "group": ("grupo", "grupos", "m"), "run": ("tanda", "tandas", "f"),
    },
}  # fmt: skip
# How a count reads, one form for 1 and one for any other number: kind -> (one, many). {n} is the number,
# {sg}/{pl} the noun; Spanish articles follow the noun's gender ({el} = el/la, {los} = los/las, ...).
_PHRASES = {
    "en": {
        "": ("{n} {sg}", "{n} {pl}"),                    # 1 example, 2 examples
        "the": ("the single {sg}", "the {n} {pl}"),
        "all": ("the single {sg}", "all {n} {pl}"),
        "each": ("the single {sg}", "each of the {n} {pl}"),
        "its": ("its single {sg}", "its {n} {pl}"),
    },
    "es": {
        "": ("{n} {sg}", "{n} {pl}"),                    # 1 ejemplo, 2 ejemplos
        "the": ("{el} {único} {sg}", "{los} {n} {pl}"),  # el único ejemplo, los 2 ejemplos
        "each": ("{el} {único} {sg}", "cada {uno} de {los} {n} {pl}"),
        "its": ("su {único} {sg}", "sus {n} {pl}"),
    },
}  # fmt: skip
_ARTICLES = {
    "m": {"el": "el", "los": "los", "único": "único", "uno": "uno"},
    "f": {"el": "la", "los": "las", "único": "única", "uno": "una"},
}


class _Words(string.Formatter):
    """``str.format`` for the templates, with counts that agree with their nouns.

    ``{n:example}`` gives '1 example' or '2 examples'; ``{n:each example}`` gives 'the single example' or
    'each of the 2 examples' (kinds in ``_PHRASES``); a capital kind (``{c:Each feature_map}``) starts a
    sentence. Whole numbers are grouped as the language writes them; a :class:`Shown` count prints its
    expression. Templates are written for both numbers, so no text is patched afterwards.
    """

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
        kind, _, noun = format_spec.rpartition(" ")
        sg, pl, *gender = _NOUNS[self.lang][noun]
        words = _ARTICLES[gender[0]] if gender else {}
        phrase = _PHRASES[self.lang][kind.lower()][number != 1].format(n=text, sg=sg, pl=pl, **words)
        return phrase[:1].upper() + phrase[1:] if kind[:1].isupper() else phrase


_WORDS = {lang: _Words(lang) for lang in LANGS}


def say(lang: str, template: str, **values) -> str:
    """Fill ``template`` (one of the strings below) in ``lang``: see :class:`_Words`."""
    return _WORDS[lang].format(template, **values)
