"""Fast paths for the batch-norm transform.

Each kernel family offers the same functions (``batch_stats``, ``normalize``, ``forward``, ``backward``;
see :mod:`.composed` for their contracts) and is checked against the same float64 computations by
``tests/test_kernels.py``. :func:`select` picks one for a tensor:

- :mod:`.cpu` for CPU tensors: routes per-channel BN on dense NCHW / channels_last inputs to
  cache-friendly row statistics and torch's native normalize/backward kernels, everything else to
  :mod:`.composed` (see ``docs/performance.md`` for what is routed where and why);
- :mod:`.composed` elsewhere: stock torch ops, device-agnostic and differentiable (the double backward
  always uses it).
"""

from __future__ import annotations

from . import composed, cpu

__all__ = ["composed", "cpu", "select"]


def select(x):
    """Kernel module for ``x``: :mod:`.cpu` on the CPU, :mod:`.composed` on other devices."""
    return cpu if x.device.type == "cpu" else composed
