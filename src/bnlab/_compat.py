"""torch's private APIs, in one place (core layer).

bnlab needs a few things torch offers only under private names: whether a functorch transform (vmap, grad,
jvp) or a torch-dispatch / torch-function mode is active (so that the data must not steer Python), which
functorch transforms are active, and a process group's own timeout. Every use goes through this module, so
that a torch release that moves one of them breaks here, loudly, in
``tests/project/test_import_layers.py`` — not silently in a numerical path. :data:`PRIVATE_APIS` lists each one;
:func:`check` looks them all up.
"""

from __future__ import annotations

import importlib

import torch

__all__ = [
    "PRIVATE_APIS",
    "check",
    "functorch_transforms_active",
    "torch_dispatch_mode_active",
    "torch_function_mode_enabled",
    "MODE_PROBES",
    "only_vmap_active",
    "process_group_timeout",
    "TorchBatchNormBase",
    "TorchNormBase",
    "fuser_method_table",
]

#: Every private name of torch that bnlab uses: (module, attribute path).
PRIVATE_APIS = (
    ("torch._C", "_are_functorch_transforms_active"),
    ("torch._C", "_len_torch_dispatch_stack"),
    ("torch._C", "_is_torch_function_mode_enabled"),
    ("torch._C._functorch", "TransformType"),
    ("torch._functorch.pyfunctorch", "retrieve_all_functorch_interpreters"),
    ("torch.distributed.distributed_c10d", "_get_default_group"),
    ("torch.distributed", "ProcessGroup._get_backend"),
    ("torch.nn.modules.batchnorm", "_BatchNorm"),
    ("torch.nn.modules.batchnorm", "_NormBase"),
    ("torch.ao.quantization.fuser_method_mappings", "_DEFAULT_OP_LIST_TO_FUSER_METHOD"),
)

#: torch's base class of every normalization layer with running statistics (BN and InstanceNorm).
TorchNormBase = torch.nn.modules.batchnorm._NormBase
#: torch's base class of BatchNorm1d/2d/3d, SyncBatchNorm and the lazy ones (a private name in torch).
TorchBatchNormBase = torch.nn.modules.batchnorm._BatchNorm


def _lookup(module: str, path: str):
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def check() -> list[str]:
    """The private APIs of :data:`PRIVATE_APIS` that this torch no longer has (empty: all present)."""
    missing = []
    for module, path in PRIVATE_APIS:
        try:
            _lookup(module, path)
        except (ImportError, AttributeError) as err:
            missing.append(f"{module}.{path} ({type(err).__name__}: {err})")
    return missing


def functorch_transforms_active() -> bool:
    """True inside vmap / grad / jvp / functionalize (functorch's transforms)."""
    return bool(torch._C._are_functorch_transforms_active())


def torch_dispatch_mode_active() -> bool:
    """True while a torch-dispatch mode (fake tensors, export's tracers, debug modes) is on the stack."""
    return bool(torch._C._len_torch_dispatch_stack())


def torch_function_mode_enabled() -> bool:
    """True while a ``__torch_function__`` mode is enabled."""
    return bool(torch._C._is_torch_function_mode_enabled())


#: The C calls behind :func:`functorch_transforms_active`, :func:`torch_dispatch_mode_active` and
#: :func:`torch_function_mode_enabled`, for a hot path that only needs their truth: no Python frame each
#: (bnlab.nn._dispatch.eager_state runs them on every eager call).
MODE_PROBES = (
    torch._C._are_functorch_transforms_active,
    torch._C._len_torch_dispatch_stack,
    torch._C._is_torch_function_mode_enabled,
)


def only_vmap_active() -> bool:
    """True where every active functorch transform is vmap (custom operators support vmap, not grad/jvp)."""
    from torch._C._functorch import TransformType
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    return all(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())


def process_group_timeout(group) -> float | None:
    """The process group's own timeout in seconds (its backend abandons a collective after it), or None where
    this torch does not expose it."""
    import torch.distributed as dist

    try:
        pg = group if group is not None else dist.distributed_c10d._get_default_group()
        backend = pg._get_backend(torch.device("cpu" if dist.get_backend(pg) == "gloo" else "cuda"))
        return backend.options._timeout.total_seconds()
    except Exception:  # noqa: BLE001 - private API of torch: without it only the layer's timeout is known
        return None


def fuser_method_table() -> dict | None:
    """torch.ao.quantization's table (module types -> fuser method) that ``fuse_modules`` looks fusions up in,
    or None where this torch has no such table."""
    try:
        from torch.ao.quantization import fuser_method_mappings
    except ImportError:
        return None
    return getattr(fuser_method_mappings, "_DEFAULT_OP_LIST_TO_FUSER_METHOD", None)
