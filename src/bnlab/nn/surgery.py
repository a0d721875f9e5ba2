"""Model surgery on BN layers (layers tier): put a module in another's place, hand one layer's state to another,
and the frozen state of one layer.

The tools (:mod:`bnlab.inference`: convert, fold, freeze) and synchronized BN (:func:`bnlab.convert_sync`) build
on these; they live in ``nn`` so that a layer never imports a tool (docs/design.md, the import contract).
"""

from __future__ import annotations

from torch import nn

from .modules import BatchNormBase

__all__ = [
    "replace_module",
    "module_counts",
    "adopt_state",
    "SAVED_GRAD",
    "is_frozen",
    "freeze_layer",
    "unfreeze_layer",
    "has_freeze_hooks",
]


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` wherever ``old`` sits in ``root`` (every path, if shared); return the (new) root."""
    if root is old:
        return new
    for parent in root.modules():
        for key, child in list(parent._modules.items()):
            if child is old:
                parent._modules[key] = new
    return root


def module_counts(root: nn.Module) -> dict[int, int]:
    """How many paths lead to each module (a module registered twice is shared)."""
    counts: dict[int, int] = {}
    for _, m in root.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    return counts


def adopt_state(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give ``new`` (a BN layer built on the meta device) the very tensors, mode and frozen state of ``old``.

    The same Parameter and buffer objects, so an optimizer built on the old model keeps working.
    """
    for pname in ("weight", "bias"):
        new._parameters[pname] = old._parameters.get(pname)
    for bname in ("running_mean", "running_var", "num_batches_tracked"):
        new._buffers[bname] = old._buffers.get(bname)
        if bname in old._non_persistent_buffers_set:
            new._non_persistent_buffers_set.add(bname)
    new.training = old.training
    if is_frozen(old):
        saved = old.__dict__.get(SAVED_GRAD)
        freeze_layer(new)
        if saved is not None:
            new.__dict__[SAVED_GRAD] = dict(saved)
    return new


# ---- the frozen state of one layer (bnlab.freeze / unfreeze apply it to a model) -----------------------------

SAVED_GRAD = "_bnlab_frozen_requires_grad"  # {"weight": bool, "bias": bool} while affine is frozen
_SWITCHED = "_bnlab_frozen_switched"  # set by the pre-hook while a frozen torch layer runs in eval mode


def _frozen_pre_hook(module, args):
    if getattr(module, "frozen", False) and module.training:
        module.training = False
        module.__dict__[_SWITCHED] = True


def _frozen_post_hook(module, args, output):
    if module.__dict__.pop(_SWITCHED, False):
        module.training = True


def has_freeze_hooks(module: nn.Module) -> bool:
    return any(h is _frozen_pre_hook for h in module._forward_pre_hooks.values())


def _install_hooks(module: nn.Module) -> None:
    if not has_freeze_hooks(module):
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
    if not isinstance(module, BatchNormBase):
        _install_hooks(module)
    module.frozen = True
    if affine and SAVED_GRAD not in module.__dict__:
        saved = {}
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if p is not None:
                saved[pname] = p.requires_grad
                p.requires_grad_(False)
        module.__dict__[SAVED_GRAD] = saved


def unfreeze_layer(module: nn.Module) -> None:
    for pname, flag in module.__dict__.pop(SAVED_GRAD, {}).items():
        p = getattr(module, pname, None)
        if p is not None:
            p.requires_grad_(flag)
    if isinstance(module, BatchNormBase):
        module.frozen = False
    else:
        _remove_hooks(module)
        module.__dict__.pop("frozen", None)
        module.__dict__.pop(_SWITCHED, None)


