"""What counts as a BN layer, its reduce axes and statistics: the helpers the tools share (public names)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from .._compat import TorchBatchNormBase
from ..axes import torch_reduce_axes
from ..nn import BatchNormBase
from ..nn.surgery import module_counts, replace_module

__all__ = [
    "BN_TYPES",
    "is_bn",
    "bn_layers",
    "describe",
    "reduce_axes",
    "per_activation",
    "is_uninitialized",
    "accumulation_dtype",
    "inference_map",
    "replace_module",
    "module_counts",
    "Affine",
]

#: torch.nn BN layers (BatchNorm1d/2d/3d, SyncBatchNorm, LazyBatchNorm*) and bnlab.nn BN layers
BN_TYPES = (TorchBatchNormBase, BatchNormBase)


def is_bn(module: nn.Module) -> bool:
    return isinstance(module, BN_TYPES)


def bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every BN layer of ``model`` (each once) with its qualified name."""
    return [(name, m) for name, m in model.named_modules() if is_bn(m)]


def describe(name: str, module: nn.Module) -> str:
    """``'features.1' (BatchNorm2d)``: how errors name a layer."""
    return f"{name or '<the model itself>'!r} ({type(module).__name__})"


def reduce_axes(module: nn.Module, ndim: int) -> tuple[int, ...]:
    """Axes a BN layer pools over for an input of ``ndim`` dims: its own rule, or torch's (all but axis 1)."""
    if isinstance(module, BatchNormBase):
        return tuple(module.reduce_axes(ndim))
    return torch_reduce_axes(ndim)


def per_activation(module: nn.Module) -> bool:
    return getattr(module, "per", "channel") == "activation"


def is_uninitialized(t) -> bool:
    return isinstance(t, (UninitializedParameter, UninitializedBuffer))


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 for statistics and folding, except where the device has none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def inference_map(name: str, module: nn.Module, action: str = "fold") -> tuple[torch.Tensor, torch.Tensor]:
    """Alg. 2, step 11 as (scale, shift) of the feature shape, in float64 on the layer's device.

    y = γ/√(Var[x]+ε) · x + (β − γ·E[x]/√(Var[x]+ε)) = scale · x + shift. Raises ValueError naming the
    layer when it has no usable running statistics.
    """
    mean, var = module.running_mean, module.running_var
    if is_uninitialized(mean) or is_uninitialized(getattr(module, "weight", None)):
        raise ValueError(
            f"cannot {action}: layer {describe(name, module)} is lazy and has not seen an input yet, so its "
            f"shape is unknown; run a forward pass (or bnlab.recalibrate) first"
        )
    if mean is None or var is None:
        raise ValueError(
            f"cannot {action}: layer {describe(name, module)} has no running statistics; call "
            f"bnlab.recalibrate(model, batches) first or build it with track_running_stats=True"
        )
    acc = accumulation_dtype(mean.device)
    mean, var = mean.detach().to(acc), var.detach().to(acc)
    if not (torch.isfinite(mean).all() and torch.isfinite(var).all() and (var + module.eps > 0).all()):
        raise ValueError(
            f"cannot {action}: layer {describe(name, module)} has non-finite or negative running statistics; "
            f"call bnlab.recalibrate(model, batches) to recompute them"
        )
    inv_std = torch.rsqrt(var + module.eps)
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    scale = inv_std if weight is None else weight.detach().to(acc) * inv_std
    shift = -mean * scale if bias is None else bias.detach().to(acc) - mean * scale
    return scale, shift


class Affine(nn.Module):
    """The fixed map a BN layer becomes at inference (Alg. 2, step 11): ``y = x · scale + shift``.

    ``per="channel"``: ``scale``/``shift`` have shape (C,) and act on axis 1 of inputs of any rank (every
    location of a feature map gets the same map, §3.2). ``per="activation"``: they have the feature shape,
    e.g. (C, H, W), one map per activation; such a layer cannot be folded into a convolution's weights.

    >>> a = Affine(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.0]))
    >>> a(torch.ones(1, 2, 1, 1)).flatten().tolist()
    [3.0, 3.0]
    """

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, per: str = "channel") -> None:
        super().__init__()
        if scale.shape != shift.shape:
            raise ValueError(f"scale {tuple(scale.shape)} and shift {tuple(shift.shape)} must have the same shape")
        if per not in ("channel", "activation"):
            raise ValueError(f"per must be 'channel' or 'activation', got {per!r}")
        if per == "channel" and scale.dim() != 1:
            raise ValueError(f"per='channel' needs a scale of shape (C,), got {tuple(scale.shape)}")
        self.per = per
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per == "channel":
            shape = (1, -1) + (1,) * (x.dim() - 2)
        else:
            shape = (1, *self.scale.shape)
        return x * self.scale.view(shape) + self.shift.view(shape)

    def extra_repr(self) -> str:
        return f"{tuple(self.scale.shape)}, per={self.per!r}"
