"""The kernel contract: what every family offers, the helpers they share, and the one chain walk.

A *family* (:mod:`.composed`, :mod:`.native`, :mod:`.cpu`, :mod:`.cuda`, :mod:`.triton`) is a module that satisfies
:class:`KernelFamily`: four functions with the argument order stated once below, and ``covers``, which says
whether the family computes a call exactly (bnlab's numerical policy) for these tensors. Families never call
one another to hand over what they do not cover: :func:`first_covering` walks one ordered chain per device,

    cpu:  native → cpu → composed   cuda: triton → cuda → composed            other devices: composed

and the first family whose ``covers`` is true runs (a family may also *decline* at run time, e.g. Triton
kernels that fail to compile, by raising :class:`Declined`: the walk goes on). Each family's public
functions are entry points of that walk starting at the family itself (:func:`entry_points`), so
``kernels.cpu.forward(x, ...)`` is correct for any input and ``kernels.select(x)`` is the head of x's chain.

Where to change the forward math: :mod:`bnlab.moments` (μ_B, σ²_B, merges) and :mod:`.composed` (normalize,
closed-form backward) are the definitions; every fast family is tested against them.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from ..axes import torch_reduce_axes
from ..moments import statistics_dtype

__all__ = [
    "KernelFamily",
    "OPS",
    "CHAINS",
    "Declined",
    "statistics_dtype",
    "stat_dtype",
    "dense_format",
    "is_channel_axes",
    "view",
    "chain",
    "family",
    "first_covering",
    "entry_points",
]

#: The four operations of the contract, in the order the docs list them.
OPS = ("batch_stats", "normalize", "forward", "backward")

#: One ordered chain per device type; :mod:`.composed` (covers everything) ends every chain.
CHAINS: dict[str, tuple[str, ...]] = {"cpu": ("native", "cpu", "composed"), "cuda": ("triton", "cuda", "composed")}
_TAIL = ("composed",)


@runtime_checkable
class KernelFamily(Protocol):
    """What a kernel family offers (argument order stated once; every family and every caller keep it).

    - ``batch_stats(x, axes) -> (mean, var)``: μ_B and the biased σ²_B over ``axes``, feature-shaped, in
      :func:`statistics_dtype`;
    - ``normalize(x, mean, var, weight, bias, eps, axes) -> y``: y = γ (x − μ)/√(σ² + ε) + β in x's dtype
      and memory format;
    - ``forward(x, weight, bias, eps, axes, relu=False) -> (y, mean, var)``: the training forward of Alg. 1
      (``relu``: y = max(BN(x), 0));
    - ``backward(dy, x, mean, var, weight, eps, axes, needs=(True, True, True), y=None, sums=None)
      -> (dx, dweight, dbias)``: the closed-form gradients, None where ``needs`` is False; ``y`` is the ReLU
      output of a fused forward (dy flows where y > 0); ``sums = (Σdy, Σdy·x̂, m)``: reductions over a set B
      larger than ``x`` (synchronized BN: every rank's shard), used instead of the local ones for dx;
    - ``covers(x, axes, *tensors, op) -> bool``: whether this family computes ``op`` exactly for ``x`` and the
      call's other tensors (``normalize``: mean, var, weight, bias; ``forward``: weight, bias;
      ``backward``: dy, mean, var, weight, y; plus Σdy and Σdy·x̂ when ``sums`` is given).
    """

    NAME: str

    def covers(self, x: torch.Tensor, axes: tuple[int, ...], *tensors, op: str) -> bool: ...

    def batch_stats(self, x, axes): ...

    def normalize(self, x, mean, var, weight, bias, eps, axes): ...

    def forward(self, x, weight, bias, eps, axes, relu=False): ...

    def backward(self, dy, x, mean, var, weight, eps, axes, needs=(True, True, True), y=None, sums=None): ...


class Declined(Exception):
    """Raised by a family's implementation that cannot run after all (the walk goes on to the next one)."""


# ---- shared helpers (one home each) -----------------------------------------------------------------------


def stat_dtype(x: torch.Tensor) -> torch.dtype:
    """The statistics dtype of ``x`` (:func:`bnlab.moments.statistics_dtype`)."""
    return statistics_dtype(x.dtype)


def dense_format(x: torch.Tensor) -> torch.memory_format | None:
    """The layout test: ``torch.contiguous_format`` for a dense NCHW-like tensor, ``channels_last`` /
    ``channels_last_3d`` for a dense channels_last one (4-D / 5-D), else None (a strided view)."""
    if x.is_contiguous():
        return torch.contiguous_format
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return fmt if fmt is not None and x.is_contiguous(memory_format=fmt) else None


def is_channel_axes(x: torch.Tensor, axes: tuple[int, ...]) -> bool:
    """Per-channel BN in torch's convention: ``axes`` = every axis but 1 (:func:`bnlab.axes.torch_reduce_axes`)."""
    return tuple(axes) == torch_reduce_axes(x.dim())


def view(v: torch.Tensor, ndim: int, axes: tuple[int, ...]) -> torch.Tensor:
    """A feature-shaped tensor viewed to broadcast against an input of ``ndim`` dims reduced over ``axes``."""
    shape = []
    it = iter(v.shape)
    for i in range(ndim):
        shape.append(1 if i in axes else next(it))
    return v.reshape(shape)


# ---- the chain walk ---------------------------------------------------------------------------------------

_loaded: dict[str, object] = {}


def family(name: str):
    """The family module ``name``, or None where it cannot be imported (triton without the package)."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            if name != "triton":
                raise
            _loaded[name] = None
    return _loaded[name]


def chain(device: str, start: str | None = None) -> tuple:
    """The loaded families of ``device``'s chain, from ``start`` (a family name) on; missing ones skipped.

    A family named as ``start`` walks its own chain whatever the tensor's device (``kernels.triton.forward``
    on a CPU tensor: triton → cuda → composed, each deciding by its ``covers``).
    """
    key = (device, start)
    found = _chains.get(key)
    if found is None:
        found = _chains[key] = _build_chain(device, start)
    return found


_chains: dict = {}  # (device, start) -> the chain: the families and the import outcomes never change


def _build_chain(device: str, start: str | None) -> tuple:
    names = CHAINS.get(device, _TAIL)
    if start is not None:
        names = next((c for c in CHAINS.values() if start in c), _TAIL)
        names = names[names.index(start) :] if start in names else _TAIL
    return tuple(m for m in map(family, names) if m is not None)


def _chain_of(head) -> tuple:
    """``head`` (a family module) and the families after it in its chain."""
    key = (head.NAME, id(head))
    found = _chains_from.get(key)
    if found is None:
        found = _chains_from[key] = (head, *chain("", head.NAME)[1:])
    return found


_chains_from: dict = {}


def _call_args(op: str, args: tuple, kwargs: dict):
    """(x, axes, other tensors) of a call of ``op`` (the contract's argument order)."""
    return _EXTRACT[op](*args, **kwargs)


def _batch_stats_args(x, axes):
    return x, axes, ()


def _normalize_args(x, mean, var, weight, bias, eps, axes):
    return x, axes, (mean, var, weight, bias)


def _forward_args(x, weight, bias, eps, axes, relu=False):
    return x, axes, (weight, bias)


def _backward_args(dy, x, mean, var, weight, eps, axes, needs=(True, True, True), y=None, sums=None):
    return x, axes, (dy, mean, var, weight, y, *(() if sums is None else sums[:2]))


_EXTRACT: dict[str, Callable] = {
    "batch_stats": _batch_stats_args,
    "normalize": _normalize_args,
    "forward": _forward_args,
    "backward": _backward_args,
}


def first_covering(families, op: str, x: torch.Tensor, axes, tensors=()):
    """The first of ``families`` whose ``covers(x, axes, *tensors, op=op)`` is true."""
    for fam in families:
        if fam.covers(x, axes, *tensors, op=op):
            return fam
    raise RuntimeError(f"no kernel family covers {op} for {x.device.type} (the chain must end with composed)")


def run(head, op: str, args: tuple, kwargs: dict, after_head: bool = False):
    """Walk the chain from ``head`` (a family module) for one call of ``op``: the first family that covers it
    runs its implementation (``after_head``: from the family after ``head``, which declined)."""
    x, axes, tensors = _call_args(op, args, kwargs)
    families = _chain_of(head)[1:] if after_head else _chain_of(head)
    while True:
        fam = first_covering(families, op, x, axes, tensors)
        try:
            return fam.IMPLEMENTATION[op](*args, **kwargs)
        except Declined:
            families = families[families.index(fam) + 1 :]


def entry_points(name: str, covers, implementation: dict):
    """The public ``(batch_stats, normalize, forward, backward)`` of family ``name`` (its ``covers`` and
    ``implementation``): each walks the chain from this family on (see :func:`run`), so that a family's
    functions accept any input."""
    head = types.SimpleNamespace(NAME=name, covers=covers, IMPLEMENTATION=implementation)

    def batch_stats(x, axes):
        return run(head, "batch_stats", (x, axes), {})

    # the calls of every eager step (forward, normalize, backward) ask this family first, without the walk's
    # bookkeeping (a few µs of a small call); a decline or a no goes on down the chain from the next family
    def head_first(op: str, args: tuple, x, axes, tensors: tuple):
        if covers(x, axes, *tensors, op=op):
            try:
                return implementation[op](*args)
            except Declined:
                pass
        return run(head, op, args, {}, after_head=True)

    def normalize(x, mean, var, weight, bias, eps, axes):
        return head_first("normalize", (x, mean, var, weight, bias, eps, axes), x, axes, (mean, var, weight, bias))

    def forward(x, weight, bias, eps, axes, relu=False):
        return head_first("forward", (x, weight, bias, eps, axes, relu), x, axes, (weight, bias))

    def backward(dy, x, mean, var, weight, eps, axes, needs=(True, True, True), y=None, sums=None):
        args = (dy, x, mean, var, weight, eps, axes, needs, y, sums)
        return head_first("backward", args, *_backward_args(*args))

    fns = (batch_stats, normalize, forward, backward)
    for fn in fns:
        fn.__qualname__ = fn.__name__
        fn.__doc__ = f"``{fn.__name__}`` of the kernel contract (:class:`KernelFamily`), from the {name} family on."
    return fns
