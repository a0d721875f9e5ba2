"""Progress bars for long work (training, Alg. 2 recalibration), labelled in the language of the command.

A bottom layer: it needs only tqdm and the catalogs (:mod:`bnlab.i18n`: what a bar counts, ``cli.progress.*``), so
:mod:`bnlab.inference` and :mod:`bnlab.training` share it.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from .i18n import DEFAULT_LANG, languages, t

__all__ = ["progress_bar", "UNITS"]

#: What a bar may count (tqdm's own default, "it", means nothing to a reader); the words are the catalog
#: entries ``cli.progress.<unit>`` of each language.
UNITS = ("step", "batch")


class _Bar(tqdm):
    """A tqdm bar that shows where it ended (312/312, not the 311/312 of its last timed redraw) before it is
    removed: a redraw is throttled, so the last steps would otherwise never be shown."""

    def close(self) -> None:
        # a Ctrl-C inside tqdm's __init__ leaves a half-built bar whose __del__ still closes it: no attribute
        # may be assumed (seen as "Exception ignored ... no attribute 'disable'" after "Interrupted.")
        if not getattr(self, "disable", True) and getattr(self, "n", 0) != getattr(self, "last_print_n", 0):
            self.refresh()
        super().close()


def progress_bar(
    total: int | None, initial: int = 0, desc: str = "", enabled: bool = True, lang: str = "en", unit: str = "step"
) -> tqdm:
    """A tqdm bar on stderr that counts ``unit`` (one of :data:`UNITS`) in ``lang``; it shows its final count,
    then it is removed when closed. When stderr is not a terminal (a log file, a pipe) it is redrawn at most
    every 30 s instead of several times a second, so logs stay small."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of {', '.join(map(repr, UNITS))}")
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return _Bar(
        total=total,
        initial=initial,
        desc=desc,
        unit=t(f"cli.progress.{unit}", lang if lang in languages() else DEFAULT_LANG),  # the caller checks lang
        disable=not enabled,
        leave=False,
        dynamic_ncols=tty,
        ncols=None if tty else 80,
        mininterval=0.1 if tty else 30.0,
        file=sys.stderr,
    )
