"""``convert``: swap ``torch.nn.BatchNorm1d/2d/3d`` ↔ ``bnlab.nn.BatchNorm1d/2d/3d`` throughout a model.

The swap happens in place and the new layer takes over the old layer's very tensors: the same
``Parameter`` objects (so an optimizer built on ``model.parameters()`` keeps working, with its state) and
the same buffers, hence the same values, device, dtype and ``requires_grad``; the constructor arguments
(eps, momentum, affine, track_running_stats), the train/eval mode and the frozen state (see
:func:`bnlab.freeze`) carry over. ``state_dict`` keys are identical. Hooks registered on the old layer by
the user are not carried over.

Only those exact classes are converted. Other normalization layers — SyncBatchNorm, LazyBatchNorm*
that have not seen an input, subclasses, GroupNorm, LayerNorm, InstanceNorm, ... — are left as they are
and listed in a warning. bnlab's per-activation layers have no torch.nn equivalent: converting them to
torch raises ValueError naming the layer (before anything is changed).

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
>>> convert(model, to="bnlab")[1]
BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)
>>> type(convert(model, to="torch")[1]).__module__
'torch.nn.modules.batchnorm'
"""

from __future__ import annotations

import warnings

from torch import nn

from .. import nn as bnn
from .._compat import TorchNormBase
from ..nn.surgery import adopt_state, replace_module
from .layers import describe

__all__ = ["convert", "adopt_state"]  # adopt_state lives in bnlab.nn.surgery (re-exported for old importers)

_TO_BNLAB = {nn.BatchNorm1d: bnn.BatchNorm1d, nn.BatchNorm2d: bnn.BatchNorm2d, nn.BatchNorm3d: bnn.BatchNorm3d}
_TO_TORCH = {v: k for k, v in _TO_BNLAB.items()}
_NORM_TYPES = (
    TorchNormBase,
    bnn.BatchNormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _is_normalization(m: nn.Module) -> bool:
    return isinstance(m, _NORM_TYPES) or "norm" in type(m).__name__.lower()


def _swap(old: nn.Module, cls: type) -> nn.Module:
    # build on the meta device (no memory), then adopt the old layer's tensors
    new = cls(
        old.num_features,
        eps=old.eps,
        momentum=old.momentum,
        affine=old.affine,
        track_running_stats=old.track_running_stats,
        device="meta",
    )
    return adopt_state(old, new)


def convert(model: nn.Module, to: str = "bnlab") -> nn.Module:
    """Replace every torch.nn BatchNorm1d/2d/3d by its bnlab.nn twin (``to="torch"``: the reverse).

    In place; returns ``model`` (or the new layer, when ``model`` itself is a BN layer). See the module
    docstring for what carries over and what is left alone (with a warning).
    """
    if to not in ("bnlab", "torch"):
        raise ValueError(f"to must be 'bnlab' or 'torch', got {to!r}")
    table = _TO_BNLAB if to == "bnlab" else _TO_TORCH
    todo, unknown = [], []
    for name, m in model.named_modules():
        if type(m) in table:
            if to == "torch" and m.per != "channel":
                raise ValueError(
                    f"cannot convert layer {describe(name, m)} to torch: it is per-activation BN (statistics of "
                    f"shape {m.feature_shape((1, m.num_features, *(m.spatial_size or ())))}), which torch.nn has "
                    f"no layer for; keep it as bnlab.nn or turn the model into its inference network with "
                    f"bnlab.fold"
                )
            todo.append((name, m))
        elif _is_normalization(m) and not (type(m) in _TO_BNLAB or type(m) in _TO_TORCH):
            unknown.append(describe(name, m))
    for _, old in todo:
        model = replace_module(model, old, _swap(old, table[type(old)]))
    if unknown:
        warnings.warn(
            f"convert(to={to!r}) left {len(unknown)} normalization layer(s) as they are: {', '.join(unknown)}",
            stacklevel=2,
        )
    return model
