"""bnlab's torch layer: drop-in ``BatchNorm1d/2d/3d`` modules and the ``functional.batch_norm`` they use."""

from . import functional
from .family import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm  # noqa: F401
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, _BatchNorm

__all__ = ["functional", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "_BatchNorm"]


def __getattr__(name: str):  # SyncBatchNorm lives in bnlab.distributed (a layer above): loaded on first use
    if name == "SyncBatchNorm":
        from ..distributed import SyncBatchNorm

        return SyncBatchNorm
    raise AttributeError(f"module 'bnlab.nn' has no attribute {name!r}")
