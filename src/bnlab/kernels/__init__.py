"""Fast paths for the batch-norm transform.

Each kernel family offers the same functions (``batch_stats``, ``normalize``, ``forward``, ``backward``;
see :mod:`.composed` for their contracts, including the fused-ReLU arguments ``forward(..., relu=False)``
and ``backward(..., needs, y=None)``) and is checked against the same float64 computations by
``tests/test_kernels.py`` (and ``tests/test_triton.py``). :func:`select` picks one for a tensor:

- :mod:`.cpu` for CPU tensors: routes per-channel BN on dense NCHW / channels_last inputs to
  cache-friendly row statistics and torch's native normalize/backward kernels, everything else to
  :mod:`.composed` (see ``docs/performance.md`` for what is routed where and why);
- on CUDA, :mod:`.triton` (bnlab's Triton kernels: split reductions, ≤ 2 launches per direction) when
  triton is importable, else :mod:`.cuda` (torch's own fused kernels for per-channel BN in torch's
  layout); each sends what it does not cover to the next (triton → cuda → composed);
- :mod:`.composed` elsewhere: stock torch ops, device-agnostic and differentiable (the double backward
  always uses it).

``BNLAB_CUDA_KERNELS=cuda`` (or ``composed``) in the environment, or :func:`use_cuda_family`, makes CUDA
tensors skip the Triton kernels (for comparisons; the default is ``triton``).
"""

from __future__ import annotations

import os
import warnings

from . import composed, cpu, cuda

__all__ = ["composed", "cpu", "cuda", "select", "use_cuda_family", "triton_family"]

_FAMILIES = ("triton", "cuda", "composed")
_cuda_choice = os.environ.get("BNLAB_CUDA_KERNELS", "triton")
if _cuda_choice not in _FAMILIES:
    warnings.warn(
        f"BNLAB_CUDA_KERNELS={_cuda_choice!r} is not one of {', '.join(_FAMILIES)}; using 'triton' / "
        f"BNLAB_CUDA_KERNELS={_cuda_choice!r} no es ninguna de {', '.join(_FAMILIES)}; se usa 'triton'",
        RuntimeWarning,
        stacklevel=2,
    )
    _cuda_choice = "triton"
_triton_module = None  # imported on first use (importing triton costs ~1 s, and only CUDA needs it)


def use_cuda_family(name: str) -> None:
    """Which family :func:`select` returns for CUDA tensors: ``"triton"`` (default), ``"cuda"`` or ``"composed"``."""
    global _cuda_choice
    if name not in _FAMILIES:
        raise ValueError(
            f"unknown kernel family {name!r}; choose one of {', '.join(_FAMILIES)} / "
            f"familia de kernels desconocida {name!r}; elija una de {', '.join(_FAMILIES)}"
        )
    _cuda_choice = name


def triton_family():
    """The :mod:`.triton` module, or None where triton cannot be imported (it then falls back to :mod:`.cuda`)."""
    global _triton_module
    if _triton_module is None:
        try:
            from . import triton as module
        except ImportError:
            module = False
        _triton_module = module
    return _triton_module or None


def select(x):
    """Kernel module for ``x``: :mod:`.cpu` on the CPU; on CUDA :mod:`.triton` (or :mod:`.cuda` without
    triton, or as :func:`use_cuda_family` says); :mod:`.composed` on other devices."""
    device = x.device.type
    if device == "cpu":
        return cpu
    if device == "cuda":
        if _cuda_choice == "triton":
            return triton_family() or cuda
        return cuda if _cuda_choice == "cuda" else composed
    return composed
