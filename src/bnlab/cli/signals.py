"""Signals in the ``bnlab`` command: Ctrl-C never lands inside an import, and a closed pipe ends quietly.

The interrupt plumbing of ``train --nproc`` (replicas that die with the launcher, one Ctrl-C forwarded to
every replica) lives in :mod:`bnlab._lifeline` and :mod:`bnlab.parallel`; ``bnlab bench`` uses
:func:`start_child` below for the same guarantees with one child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from .common import EXIT_BROKEN_PIPE

__all__ = ["SigintWatch", "quiet_broken_pipe", "start_child"]


class SigintWatch:
    """Ctrl-C while ``main`` runs: KeyboardInterrupt, but never in the middle of a module's import.

    A KeyboardInterrupt raised inside an import can leave a library half-initialized (numpy's lazy
    submodules then fail with unrelated errors), or escape from C++ code that called back into Python
    while torch registers its operators (``torch._C._c10d_init``: the process aborts, exit −6). So while an
    import runs the interrupt is held back and re-sent every ``_RETRY_S`` seconds, and it is raised at the
    first moment no import is under way; ``seen`` records that one arrived. Installed only over Python's
    default handler, in the main thread; the previous handler comes back at exit. Training installs its
    own handler (a clean stop after the current step) and restores this one.
    """

    _RETRY_S = 0.05

    def __init__(self) -> None:
        self.seen = False
        self._previous = None
        self._retry = None

    def _handle(self, signum, frame):
        self.seen = True
        if _importing(frame):
            self._send_later(signum)
            return
        raise KeyboardInterrupt

    def _send_later(self, signum) -> None:
        # one re-send pending at a time; the timer forgets itself *before* it sends, so the handler that its
        # signal runs can always plan the next one (asking is_alive() instead lost the interrupt when the
        # timer's thread was still alive as its own signal was handled: a race seen on a loaded machine)
        if self._retry is None:
            self._retry = threading.Timer(self._RETRY_S, self._resend, (signum,))
            self._retry.daemon = True
            self._retry.start()

    def _resend(self, signum) -> None:
        self._retry = None
        os.kill(os.getpid(), signum)

    def __enter__(self) -> SigintWatch:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        retry = self._retry
        if retry is not None:
            retry.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _importing(frame) -> bool:
    """True if ``frame`` or a caller of it runs the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def quiet_broken_pipe() -> int:
    """The reader went away (`bnlab explain ... | head`): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def start_child(argv: list[str]) -> subprocess.Popen:
    """Start ``argv`` in its own process group, tied to this process (see :mod:`bnlab._lifeline`).

    A Ctrl-C in the terminal reaches bnlab alone, which ends the child (one "Interrupted." message, no
    traceback of the child's); the child dies with bnlab even if bnlab is killed.
    """
    from .._lifeline import die_with_parent

    parent = os.getpid()
    return subprocess.Popen(argv, process_group=0, preexec_fn=lambda: die_with_parent(parent))
