"""``freeze`` / ``unfreeze``: BN layers that use and keep their running statistics, even in training mode.

The fine-tuning mode of Keras (``trainable=False``) and detectron (``FrozenBatchNorm2d``): a frozen layer
normalizes with its running statistics (Alg. 2) and never updates them, whatever ``model.train()`` says;
gradients still flow through it to the layers before it.

- bnlab.nn layers have this built in: ``freeze`` sets their ``frozen`` attribute.
- torch.nn layers get the same ``frozen`` attribute plus a forward pre-hook that runs the layer in eval
  mode when it is frozen, and a forward hook (``always_call``) that puts ``training`` back afterwards, so
  ``module.training`` still reports what ``model.train()``/``eval()`` set. ``unfreeze`` removes both hooks
  and the attribute: the layer is exactly as before. Hooks survive ``copy.deepcopy``, ``state_dict`` is
  unchanged.

``affine=True`` also stops the updates of γ and β (``requires_grad=False``); ``unfreeze`` restores the
``requires_grad`` flags they had.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
>>> _ = freeze(model).train()
>>> before = model[1].running_mean.clone()
>>> _ = model(torch.randn(2, 3, 5, 5))
>>> torch.equal(model[1].running_mean, before), model[1].training
(True, True)
>>> _ = unfreeze(model)
"""

from __future__ import annotations

from torch import nn

from ..nn.surgery import SAVED_GRAD, freeze_layer, has_freeze_hooks, is_frozen, unfreeze_layer
from .layers import bn_layers, describe, is_uninitialized

__all__ = ["freeze", "unfreeze", "is_frozen", "freeze_layer", "unfreeze_layer", "SAVED_GRAD"]

_SAVED_GRAD = SAVED_GRAD  # old private name (kept for importers outside this package)
_has_hooks = has_freeze_hooks


def freeze(model: nn.Module, *, affine: bool = False) -> nn.Module:
    """Freeze every BN layer of ``model`` in place (see the module docstring); return ``model``.

    Raises ValueError naming the layer, before changing anything, when a layer has no running statistics
    to use (``track_running_stats=False`` and never recalibrated) or is lazy and has not seen an input.
    """
    layers = bn_layers(model)
    for name, m in layers:
        if m.running_mean is None or is_uninitialized(m.running_mean):
            why = "has not seen an input yet (lazy)" if m.running_mean is not None else "has no running statistics"
            raise ValueError(
                f"cannot freeze: layer {describe(name, m)} {why}; a frozen layer normalizes with its running "
                f"statistics. Call bnlab.recalibrate(model, batches) first or build it with track_running_stats=True"
            )
    for _, m in layers:
        freeze_layer(m, affine=affine)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze` on every BN layer of ``model`` (in place; layers not frozen are untouched)."""
    for _, m in bn_layers(model):
        if is_frozen(m) or SAVED_GRAD in m.__dict__ or has_freeze_hooks(m):
            unfreeze_layer(m)
    return model
