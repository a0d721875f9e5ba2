"""Fast paths for the batch-norm transform, behind one written contract and one chain per device.

Every family (:mod:`.composed`, :mod:`.native`, :mod:`.cpu`, :mod:`.cuda`, :mod:`.triton`) satisfies
:class:`.contract.KernelFamily` — ``batch_stats``, ``normalize``, ``forward``, ``backward`` with the argument
order stated there once, and ``covers(x, axes, *tensors, op)`` — and is checked against the same float64
computations by ``tests/kernels/test_kernels.py`` (and ``tests/kernels/test_triton.py``).
:func:`select` walks one ordered chain per device, and the first family whose ``covers`` is true runs:

    cpu:  native → cpu → composed         cuda: triton → cuda → composed         other devices: composed

- :mod:`.native`: compiled C + OpenMP kernels for per-channel BN on dense float32/float64 NCHW or
  channels_last inputs, built at first use with the system C compiler (none, or ``BNLAB_NATIVE=0``: it
  covers nothing and :mod:`.cpu` runs);
- :mod:`.cpu`: per-channel BN on dense NCHW / channels_last inputs by cache-friendly row statistics and
  torch's native normalize/backward kernels (see ``docs/performance.md``);
- :mod:`.triton`: bnlab's Triton kernels (split reductions, ≤ 2 launches per direction), when triton is
  importable; :mod:`.cuda`: torch's own fused kernels for per-channel BN in torch's layout;
- :mod:`.composed`: stock torch ops, device-agnostic and differentiable — the definition every fast family
  is tested against (the double backward always uses it).

Where to change the forward math: :func:`bnlab.moments.batch_stats` (μ_B, σ²_B) and
:func:`.composed.normalize` / :func:`.composed.backward`; docs/design.md lists every formula's home.

``BNLAB_CUDA_KERNELS=cuda`` (or ``composed``) in the environment, or :func:`use_cuda_family`, starts the CUDA
chain further down (for comparisons; the default is ``triton``).
"""

from __future__ import annotations

import os
import warnings

from . import composed, contract, cpu, cuda, native

__all__ = ["composed", "contract", "cpu", "cuda", "native", "select", "chain", "use_cuda_family", "triton_family"]

_FAMILIES = contract.CHAINS["cuda"]
_cuda_choice = os.environ.get("BNLAB_CUDA_KERNELS", "triton")
if _cuda_choice not in _FAMILIES:
    warnings.warn(
        f"BNLAB_CUDA_KERNELS={_cuda_choice!r} is not one of {', '.join(_FAMILIES)}; using 'triton'",
        RuntimeWarning,
        stacklevel=2,
    )
    _cuda_choice = "triton"


def use_cuda_family(name: str) -> None:
    """Which family :func:`select` returns for CUDA tensors: ``"triton"`` (default), ``"cuda"`` or ``"composed"``."""
    global _cuda_choice
    if name not in _FAMILIES:
        raise ValueError(f"unknown kernel family {name!r}; choose one of {', '.join(_FAMILIES)}")
    _cuda_choice = name


def triton_family():
    """The :mod:`.triton` module, or None where triton cannot be imported (the CUDA chain then starts at :mod:`.cuda`).

    Imported on first use: importing triton costs ~1 s, and only CUDA needs it."""
    return contract.family("triton")


def chain(device: str) -> tuple:
    """The families :func:`select` walks for tensors on ``device`` (a device type such as ``"cpu"``), in order."""
    return contract.chain(device, _cuda_choice if device == "cuda" else None)


def select(x, axes=None, *tensors, op: str | None = None):
    """The kernels for ``x``.

    ``select(x)``: the head of x's chain (:mod:`.native` on the CPU; on CUDA :mod:`.triton`, or :mod:`.cuda`
    without triton or as :func:`use_cuda_family` says; :mod:`.composed` elsewhere) — its functions walk the
    chain call by call. ``select(x, axes, *tensors, op=...)``: the family that runs that call, the first of
    the chain whose ``covers(x, axes, *tensors, op=op)`` is true (tensors in the order of
    :class:`.contract.KernelFamily`).
    """
    families = chain(x.device.type)
    if op is None:
        return families[0]
    if op not in contract.OPS:
        raise ValueError(f"unknown kernel operation {op!r}; expected one of {', '.join(contract.OPS)}")
    return contract.first_covering(families, op, x, axes, tensors)
