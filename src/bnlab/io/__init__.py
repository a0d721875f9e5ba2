"""Files: the one place bnlab writes them (atomically, never through a link); strict JSON.

See :mod:`bnlab.io.atomic`. This package sits in the tools layer and imports only the standard library.
"""

from __future__ import annotations

from .atomic import (
    WriteError,
    atomic_file,
    atomic_path,
    finite_json,
    make_dirs,
    save_figure,
    write_bytes,
    write_json,
    write_text,
)

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
