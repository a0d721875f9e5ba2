"""Numbers as each language writes them, from the language's ``core.json`` (``"@number"``).

English: 2,048 and 25,088.5 and 72.4%; Spanish as the RAE writes them: 2048 and 25 088,5 (a decimal comma; a
space groups thousands only from five digits on) and 72,4 % (a space before the sign).

>>> integer(25088, "en"), integer(25088, "es"), integer(2048, "es")
('25,088', '25 088', '2048')
>>> decimal(1234.5, "en", 1), decimal(1234.5, "es", 1), percent(0.724, "es"), seconds(1.25, "es")
('1,234.5', '1234,5', '72,4 %', '1,2 s')
"""

from __future__ import annotations

__all__ = ["integer", "decimal", "general", "percent", "seconds"]

_DEFAULT = {"decimal": ".", "group": ",", "group_min_digits": 4, "percent": "{}%"}


def _conventions(lang: str) -> dict:
    from . import catalog

    return {**_DEFAULT, **catalog("core", lang).get("@number", {})}


def _group(whole: str, sep: str, min_digits: int) -> str:
    sign, digits = ("-", whole[1:]) if whole.startswith("-") else ("", whole)
    if len(digits) < min_digits:
        return whole
    head = len(digits) % 3 or 3
    parts = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return sign + sep.join(parts)


def decimal(x: float, lang: str, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals, grouped and with the decimal mark of ``lang``."""
    c = _conventions(lang)
    whole, _, frac = f"{x:.{digits}f}".partition(".")
    whole = _group(whole, c["group"], c["group_min_digits"])
    return whole + (c["decimal"] + frac if frac else "")


def integer(n: int, lang: str) -> str:
    """A whole number grouped as ``lang`` writes it."""
    c = _conventions(lang)
    return _group(str(int(n)), c["group"], c["group_min_digits"])


def percent(x: float, lang: str, digits: int = 1) -> str:
    """A fraction (0.724) as a percentage (72.4% / 72,4 %)."""
    return _conventions(lang)["percent"].format(decimal(100 * x, lang, digits))


def seconds(x: float, lang: str) -> str:
    """A duration in seconds with one decimal."""
    return decimal(x, lang, 1) + " s"


def general(x: float, lang: str) -> str:
    """``x`` as Python's ``g`` format writes it (0.003, 0.00625, 1), with the decimal mark of ``lang``: for rates
    and other settings quoted as given, not rounded to a fixed number of decimals."""
    return f"{x:g}".replace(".", _conventions(lang)["decimal"])
