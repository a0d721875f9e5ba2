"""Torch threads for the small networks bnlab trains: one thread policy for the library and the CLI.

The networks of the demo and the experiments are small: a second torch thread costs more in
synchronisation than it saves, and on a machine whose cores are busy a waiting thread stalls the others
(``paper-fig1 --steps 1500`` on a loaded 2-core machine: 222 s with torch's default threads, 21 s with one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .choices import DEFAULT_THREADS

__all__ = ["torch_threads", "DEFAULT_THREADS"]


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on ``n`` torch (intra-op) threads and restore the previous count; ``None``: leave it as is."""
    if n is None:
        yield
        return
    import torch

    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
