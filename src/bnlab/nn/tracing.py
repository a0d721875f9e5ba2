"""How ``torch.fx.symbolic_trace`` sees bnlab's layers: as leaves, one ``call_module`` node each, like torch's.

torch's tracer treats the modules of ``torch.nn`` as leaves and traces into every other module's
``forward``. Traced into, a BN layer's bookkeeping would run once, at trace time: the counter
``num_batches_tracked`` would move in the original layer and never again in the traced model, the
cumulative average (``momentum=None``) would freeze at its first weight, and the train/eval choice
would be fixed. So a bnlab layer that receives a traced value records itself as one ``call_module``
node instead — exactly what torch's own layers look like in a graph — and the traced model calls the
real layer, which keeps its books as in eager (it is the same module object, as for torch's layers).

Users call ``torch.fx.symbolic_trace`` with torch's own tracer, so this must happen inside ``forward``:
:func:`leaf_forward` wraps a ``forward`` method with the check (one ``isinstance`` in eager).
"""

from __future__ import annotations

import functools

import torch
import torch.fx

__all__ = ["leaf_forward", "call_module_node", "refuse_scripting"]


def call_module_node(module: torch.nn.Module, args: tuple, kwargs: dict):
    """Record ``module(*args, **kwargs)`` as one ``call_module`` node of the graph being traced."""
    proxy = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.fx.Proxy))
    tracer = proxy.tracer
    try:
        path = tracer.path_of_module(module)
    except NameError:  # not a submodule of the traced root (e.g. a layer held outside the model)
        path = None
    if not path:  # "" is the root itself: a call_module node needs a submodule to call
        raise TypeError(
            f"torch.fx.symbolic_trace cannot trace bnlab's {type(module).__name__} on its own or held outside "
            f"the traced model: trace a model that contains it as a submodule (e.g. torch.nn.Sequential(layer)); "
            f"there it becomes one call_module node, as torch's own layers do"
        )
    return tracer.create_proxy("call_module", path, args, kwargs)


def leaf_forward(forward):
    """``forward`` that records the module as a leaf (one ``call_module`` node) when given traced values."""
    if getattr(forward, "_bnlab_leaf", False):
        return forward

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        if args and isinstance(args[0], torch.fx.Proxy):
            return call_module_node(self, args, kwargs)
        return forward(self, *args, **kwargs)

    wrapper._bnlab_leaf = True
    return wrapper


def refuse_scripting(module: torch.nn.Module):
    """``__prepare_scriptable__`` of bnlab's layers: ``torch.jit.script`` calls it (for every submodule) before
    compiling, so the user reads why and what to use instead rather than a TorchScript type error."""
    raise RuntimeError(
        f"torch.jit.script does not support bnlab's {type(module).__name__} (its forward is Python that "
        f"TorchScript cannot compile, and TorchScript is deprecated in PyTorch): use torch.compile(model) for "
        f"speed, or torch.export.export(model, args) (then torch.onnx.export or AOTInductor) to deploy"
    )
