"""bnlab's torch layer: drop-in ``BatchNorm1d/2d/3d`` (and ``SyncBatchNorm``, ``SyncBatchRenorm``) modules, the
rest of the normalization family (``GroupNorm``, ``LayerNorm``, ``InstanceNorm1d/2d/3d``), and ``functional``."""

from . import family, functional, renorm
from .family import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase
from .renorm import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d, BatchRenormBase, paper_relaxation

_BatchNorm = BatchNormBase  # old names, kept for importers (use the public ones)
_BatchRenorm = BatchRenormBase

# The family's functions call functional.batch_norm, so they live in layers above it (family, renorm) and
# functional does not import them (no import cycle); this package, above both, re-exports them there.
for _fn in (family.group_norm, family.instance_norm, family.layer_norm, renorm.batch_renorm):
    setattr(functional, _fn.__name__, _fn)
    functional.__all__.append(_fn.__name__)
del _fn

__all__ = [
    "functional",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "SyncBatchNorm",
    "SyncBatchRenorm",
    "GroupNorm",
    "LayerNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "BatchNormBase",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "BatchRenormBase",
    "paper_relaxation",
]


def __getattr__(name: str):  # SyncBatchNorm/SyncBatchRenorm live in bnlab.distributed (a layer above): loaded on use
    if name in ("SyncBatchNorm", "SyncBatchRenorm"):
        from .. import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module 'bnlab.nn' has no attribute {name!r}")
