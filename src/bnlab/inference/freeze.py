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

from .. import nn as bnn
from ._layers import bn_layers, describe, is_uninitialized

__all__ = ["freeze", "unfreeze", "is_frozen"]

_SAVED_GRAD = "_bnlab_frozen_requires_grad"  # {"weight": bool, "bias": bool} while affine is frozen
_SWITCHED = "_bnlab_frozen_switched"  # set by the pre-hook while a frozen torch layer runs in eval mode


def _frozen_pre_hook(module, args):
    if getattr(module, "frozen", False) and module.training:
        module.training = False
        module.__dict__[_SWITCHED] = True


def _frozen_post_hook(module, args, output):
    if module.__dict__.pop(_SWITCHED, False):
        module.training = True


def _has_hooks(module: nn.Module) -> bool:
    return any(h is _frozen_pre_hook for h in module._forward_pre_hooks.values())


def _install_hooks(module: nn.Module) -> None:
    if not _has_hooks(module):
        module.register_forward_pre_hook(_frozen_pre_hook)
        module.register_forward_hook(_frozen_post_hook, always_call=True)


def _remove_hooks(module: nn.Module) -> None:
    for hooks, fn in ((module._forward_pre_hooks, _frozen_pre_hook), (module._forward_hooks, _frozen_post_hook)):
        for key in [k for k, h in hooks.items() if h is fn]:
            del hooks[key]
            module._forward_hooks_always_called.pop(key, None)


def is_frozen(module: nn.Module) -> bool:
    """Whether a BN layer is frozen (by :func:`freeze`, or ``frozen=True`` on a bnlab.nn layer)."""
    return bool(getattr(module, "frozen", False))


def freeze_layer(module: nn.Module, affine: bool = False) -> None:
    """Freeze one BN layer (no checks; see :func:`freeze`)."""
    if not isinstance(module, bnn._BatchNorm):
        _install_hooks(module)
    module.frozen = True
    if affine and _SAVED_GRAD not in module.__dict__:
        saved = {}
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if p is not None:
                saved[pname] = p.requires_grad
                p.requires_grad_(False)
        module.__dict__[_SAVED_GRAD] = saved


def unfreeze_layer(module: nn.Module) -> None:
    for pname, flag in module.__dict__.pop(_SAVED_GRAD, {}).items():
        p = getattr(module, pname, None)
        if p is not None:
            p.requires_grad_(flag)
    if isinstance(module, bnn._BatchNorm):
        module.frozen = False
    else:
        _remove_hooks(module)
        module.__dict__.pop("frozen", None)
        module.__dict__.pop(_SWITCHED, None)


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
        if is_frozen(m) or _SAVED_GRAD in m.__dict__ or _has_hooks(m):
            unfreeze_layer(m)
    return model
