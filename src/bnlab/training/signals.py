"""Ctrl-C during :func:`bnlab.training.fit`: the first SIGINT finishes the step and saves, a second stops at once."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

__all__ = ["TrainingInterrupted", "SigintFlag"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`fit`; ``checkpoint`` is where the state was saved (None without ``out_dir``)."""

    def __init__(self, message: str, checkpoint: Path | None, step: int) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


class SigintFlag:
    """While active, the first SIGINT only sets ``raised``; a second one interrupts at once."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self) -> SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
