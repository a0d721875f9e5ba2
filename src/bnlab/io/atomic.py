"""Atomic file writes: the one place bnlab writes files.

Every file bnlab writes (checkpoints, ``history.json``, ``results.json``, report pages, figures, the
explainer page, exported networks) goes through this module. The bytes go to a temporary file in the
target's folder (``.<name>.<random>.tmp``), which is flushed, fsync'ed and only then renamed over the
target with ``os.replace`` (atomic on POSIX and Windows): a reader sees the old file or the new one, never
a mix, and a writer that fails half-way leaves the old file and no temporary file.

Links are never written through: when the target is a symbolic link, the link itself is replaced by the
new file and whatever it pointed to is left untouched (a link planted in an output folder cannot make
bnlab overwrite another file). A folder, device, pipe or socket in the target's place is refused before
anything is written.

Permissions: a new file gets ``0o666`` minus the umask, as ``open(path, "w")`` would give it; a file that
replaces a *regular* file keeps that file's permission bits (``chmod 600 last.pt`` stays 600). A file
that replaces a symbolic link gets the umask's mode, never the mode of the link's target.

Errors are :class:`WriteError`, an :class:`OSError` whose ``filename`` is the target (not the temporary
file) and which is also the matching built-in (``PermissionError``, ``FileNotFoundError``,
``IsADirectoryError``, ...): code that catches those keeps working, and a caller can tell a failed write
from a failed read.

>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> path = write_text(os.path.join(folder, "a.txt"), "hello")
>>> os.symlink(path, os.path.join(folder, "link.txt"))
>>> _ = write_text(os.path.join(folder, "link.txt"), "new")  # replaces the link, not a.txt
>>> path.read_text(), os.path.islink(os.path.join(folder, "link.txt"))
('hello', False)
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "WriteError",
    "atomic_path",
    "atomic_file",
    "write_bytes",
    "write_text",
    "write_json",
    "finite_json",
    "save_figure",
    "make_dirs",
]

# Part of the target's name kept in the temporary file's name: a name near the file system's limit
# (255 bytes) must not fail only because its temporary twin is longer.
_NAME_KEPT = 40


class WriteError(OSError):
    """A file bnlab was writing could not be written; ``filename`` is the file it was writing.

    Raised as a subclass that is also the matching built-in OSError subclass (``PermissionError``,
    ``FileNotFoundError``, ``IsADirectoryError``, ...).
    """


@functools.cache
def _error_class(base: type[OSError]) -> type[WriteError]:
    if base is OSError:
        return WriteError
    return type(base.__name__, (WriteError, base), {"__module__": __name__, "__doc__": WriteError.__doc__})


def _write_error(err_no: int | None, message: str, target: Path) -> WriteError:
    """A WriteError for ``target`` that is also the built-in OSError subclass of ``err_no``."""
    base = type(OSError(err_no, message)) if err_no is not None else OSError
    return _error_class(base)(err_no, message, str(target))


def _from_os_error(err: OSError, target: Path) -> WriteError:
    if isinstance(err, WriteError):
        return err
    return _write_error(err.errno, err.strerror or str(err), target)


def _umask_mode() -> int:
    """0o666 minus the process's umask, read without changing it (os.umask would race with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


def _check_target(target: Path) -> int:
    """Refuse a target that cannot be replaced by a regular file; return the new file's permission bits."""
    try:
        st = os.lstat(target)  # lstat: a link is judged as a link, never by what it points to
    except FileNotFoundError:
        st = None
    except OSError as err:  # e.g. ENAMETOOLONG, ENOTDIR (a file where a folder should be)
        raise _from_os_error(err, target) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise _write_error(errno.EISDIR, "Is a folder, not a file", target)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise _write_error(errno.EEXIST, "Exists and is not a regular file (a device, pipe or socket)", target)
    folder = target.parent
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise _write_error(errno.ENOENT if not folder.exists() else errno.ENOTDIR, f"Folder {folder} {what}", target)
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode) & 0o777  # a replaced regular file keeps its mode (no setuid/sticky bits)
    return _umask_mode()


def _fsync_folder(folder: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the path of an empty temporary file in ``path``'s folder; on success it replaces ``path``.

    For writers that take a file name (matplotlib, ``torch.onnx.export``): write the whole file to the
    yielded path inside the ``with`` block. When the block raises, the temporary file is removed, ``path``
    is left as it was, and an OSError becomes a :class:`WriteError` naming ``path``.
    """
    target = Path(path)
    mode = _check_target(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:_NAME_KEPT]}.", suffix=".tmp")
        os.close(fd)
    except OSError as err:
        raise _from_os_error(err, target) from None
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes are on disk before the rename makes them the target
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _from_os_error(exc, target) from exc
        raise
    try:
        _fsync_folder(target.parent)  # make the rename itself durable
    except OSError as err:
        raise _from_os_error(err, target) from err


class _RecordingFile:
    """A binary file that remembers the first OSError of a write.

    Some writers swallow it: ``torch.save`` reports a failed write (a full disk, EFBIG) as a RuntimeError
    ("unexpected pos ..."); :func:`atomic_file` raises the recorded OSError instead.
    """

    def __init__(self, f) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:  # seek, tell, fileno, ... for writers that need them
        return getattr(self._f, name)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Any]:
    """Yield a binary file open for writing; on success its contents replace ``path`` atomically.

    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "data.bin")
    >>> with atomic_file(target) as f:
    ...     _ = f.write(b"abc")
    >>> open(target, "rb").read()
    b'abc'
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as raw:
            f = _RecordingFile(raw)
            try:
                yield f
                f.flush()
            except BaseException as exc:
                if f.error is not None and not isinstance(exc, OSError):
                    raise _from_os_error(f.error, target) from exc
                raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module's docstring); return the path."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, encoded with ``encoding``; return the path."""
    return write_bytes(path, text.encode(encoding))


def finite_json(obj: Any) -> Any:
    """Copy of ``obj`` (dicts, lists, tuples, numbers, strings) with NaN and ±inf replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``obj`` as strict JSON (NaN and ±inf become ``null``) atomically; return the path.

    ``dumps_kwargs`` go to :func:`json.dumps` (``indent``, ``separators``, ...); ``allow_nan`` is always False.
    """
    dumps_kwargs["allow_nan"] = False
    return write_text(path, json.dumps(finite_json(obj), **dumps_kwargs))


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` (a matplotlib Figure) to ``path`` atomically, in the format its suffix names."""
    target = Path(path)
    savefig_kwargs.setdefault("format", target.suffix.lstrip(".").lower() or None)
    with atomic_file(target) as f:
        fig.savefig(f, **savefig_kwargs)
    return target


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; a failure is a :class:`WriteError` naming ``path``."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _from_os_error(err, folder) from None
    return folder
