"""Progress bars for long work (training, Alg. 2 recalibration), labelled in English or Spanish.

A bottom layer: it needs only tqdm, so :mod:`bnlab.inference` and :mod:`bnlab.training` share it.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["progress_bar"]

#: What the bar counts, in each language (tqdm's own default, "it", means nothing to a reader).
UNITS = {
    "step": {"en": "step", "es": "paso"},
    "batch": {"en": "batch", "es": "minilote"},
}


class _Bar(tqdm):
    """A tqdm bar that shows where it ended (312/312, not the 311/312 of its last timed redraw) before it is
    removed: a redraw is throttled, so the last steps would otherwise never be shown."""

    def close(self) -> None:
        if not self.disable and self.n != self.last_print_n:
            self.refresh()
        super().close()


def progress_bar(
    total: int | None, initial: int = 0, desc: str = "", enabled: bool = True, lang: str = "en", unit: str = "step"
) -> tqdm:
    """A tqdm bar on stderr that counts ``unit`` (a key of :data:`UNITS`) in ``lang``; it shows its final count,
    then it is removed when closed. When stderr is not a terminal (a log file, a pipe) it is redrawn at most
    every 30 s instead of several times a second, so logs stay small."""
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return _Bar(
        total=total,
        initial=initial,
        desc=desc,
        unit=UNITS[unit].get(lang, UNITS[unit]["en"]),
        disable=not enabled,
        leave=False,
        dynamic_ncols=tty,
        ncols=None if tty else 80,
        mininterval=0.1 if tty else 30.0,
        file=sys.stderr,
    )
