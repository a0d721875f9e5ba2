"""Child processes that cannot outlive the process that started them (standard library only).

Used by the ``--nproc`` launcher (:func:`bnlab.parallel.launch`) and by ``bnlab bench``. A child asks the
kernel to send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux), checks that the
parent did not die before that request, and keeps a watchdog thread polling ``os.getppid()`` as a
fallback (other systems, or a parent that died in between): a launcher killed by SIGKILL leaves no
replica training and writing checkpoints behind.

This module imports nothing heavy, so a replica sets all this up *before* it imports torch (seconds).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent", "watch_parent", "bootstrap", "STOP", "ABORT", "TOLD", "READY"]

# indices into the launcher's shared flags (a multiprocessing RawArray of bytes)
STOP = 0  #: the launcher got Ctrl-C: stop after the same step; errors that follow are the interrupt's doing
ABORT = 1  #: the launcher is ending every replica (a rank died or failed, or SIGTERM): nothing more to say
TOLD = 2  #: rank 0's function returned: it reported the outcome to the user itself
READY = 3  #: READY + rank: that rank has started its function (before that, nothing can need saving)

_PR_SET_PDEATHSIG = 1
_WATCH_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Be killed (SIGKILL) when the process ``parent_pid`` dies; exit at once if it is already gone.

    Safe to call between fork and exec (``preexec_fn``): no thread is started here.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog thread is the only guard
            pass
    if os.getppid() != parent_pid:  # the parent died before the request above: nobody would kill us
        os._exit(1)


def watch_parent(parent_pid: int, interval: float = _WATCH_S) -> threading.Thread:
    """Start a daemon thread that kills this process (SIGKILL) once ``parent_pid`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="bnlab-parent-watchdog", daemon=True)
    thread.start()
    return thread


def bootstrap(parent_pid: int, target: str, *args) -> None:
    """Entry point of a replica process: tie it to the launcher, then run ``target(*args)``.

    ``target`` is ``"module:function"``, imported only after the set-up, so that the heavy import (torch)
    already runs under it. The replica leaves the launcher's process group: a Ctrl-C in the terminal
    reaches the launcher alone, which forwards it once to every replica (no replica sees it twice, which
    would mean "stop at once"). Until ``target`` installs its own handler, a forwarded Ctrl-C is only
    recorded (the launcher's shared STOP flag says it came): an interrupt raised inside torch's import can
    abort the process.
    """
    die_with_parent(parent_pid)
    watch_parent(parent_pid)
    try:
        os.setpgrp()
    except OSError:  # already a group leader (cannot happen for a fresh child); keep going
        pass
    signal.signal(signal.SIGINT, lambda signum, frame: None)  # recorded in the launcher's STOP flag
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the launcher while starting us
    module, name = target.split(":")
    getattr(importlib.import_module(module), name)(*args)
