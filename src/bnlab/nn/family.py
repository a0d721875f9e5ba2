"""Layer, instance and group norm: batch norm over another set B (Wu & He 2018, Fig. 2).

Each function reshapes the input as :func:`bnlab.axes.norm_set` says (a batch of one in front, the channels
split into G groups for group norm), calls :func:`bnlab.nn.functional.batch_norm` with ``training=True``
over that view's axes (no running statistics: the sets stay within one sample, so the batch never enters),
reshapes back and applies the member's own affine map. The modules are drop-ins for torch's: same
constructor arguments, same ``state_dict`` keys, and subclasses of torch's classes.

>>> import torch
>>> x = torch.randn(4, 6, 5, 5)
>>> torch.allclose(group_norm(x, 3), torch.nn.functional.group_norm(x, 3), atol=1e-5)
True
>>> torch.allclose(layer_norm(x, (6, 5, 5)), group_norm(x, 1), atol=1e-6)      # LN = GN with G = 1
True
>>> torch.allclose(instance_norm(x), group_norm(x, 6), atol=1e-6)             # IN = GN with G = C
True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..axes import LAYOUTS, check_eps, check_groups, norm_set
from .functional import batch_norm
from .tracing import leaf_forward, refuse_scripting

__all__ = ["layer_norm", "instance_norm", "group_norm", "LayerNorm", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "GroupNorm"]  # fmt: skip

# torch tensors are logically N, C, then the spatial axes
_LAYOUT_BY_NDIM = {len(name): name for name in LAYOUTS if name[:2] == "NC"}


def _check(input, what: str, max_dim: int | None = 5) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"{what} needs a floating-point input, got {input.dtype}; convert it with x.float()")
    if input.dim() < 2 or (max_dim is not None and input.dim() > max_dim):
        ranks = "2 or more" if max_dim is None else f"2 to {max_dim}"
        raise ValueError(f"{what} expects an input (N, C, ...) of {ranks} dimensions, got shape {tuple(input.shape)}")


# channels_last memory formats by rank: such an input is normalized in place of its NHWC/NDHWC view, so the
# output keeps the input's memory format (as torch's group_norm does) without a copy into NCHW order
_CHANNELS_LAST = {4: (torch.channels_last, "NHWC"), 5: (torch.channels_last_3d, "NDHWC")}


def _normalize(input: torch.Tensor, norm: str, groups: int | None, eps: float, keep_format: bool = False):
    """x̂ of ``norm`` for an (N, C, ...) input: batch_norm over the member's set, on a reshape of x.

    A set of one value gives x̂ = 0 (x − μ = 0 exactly), as torch does: the output is then β. With
    ``keep_format`` a channels_last input is normalized through its (N, ..., C) view and x̂ keeps that format.
    """
    check_eps(eps)
    if input.dim() > 5:  # any rank: the locations flattened into one axis give the same sets
        return _normalize(input.flatten(2), norm, groups, eps).reshape(input.shape)
    x, layout, back = input, _LAYOUT_BY_NDIM[input.dim()], None
    fmt = _CHANNELS_LAST.get(input.dim())
    if keep_format and fmt and not input.is_contiguous() and input.is_contiguous(memory_format=fmt[0]):
        x, layout = input.movedim(1, -1), fmt[1]  # a contiguous (N, ..., C) tensor: a view, no copy
        back = (-1, 1)
    s = norm_set(x.shape, layout, norm, groups=groups)
    if s.set_size <= 1:
        # torch's answer for sets of one value (and of none): x − μ_B = 0, so x̂ = 0 and y = β. x·0 keeps
        # NaN/Inf as NaN (as x − x does) and gives the zero gradient of x that torch's formula gives
        return input * 0
    x_hat = batch_norm(x.reshape(s.view_shape), None, None, training=True, eps=eps, axes=s.view_axes)
    x_hat = x_hat.reshape(x.shape)
    return x_hat.movedim(*back) if back else x_hat


def _affine(x_hat, weight, bias, shape: Sequence[int]) -> torch.Tensor:
    """y = γ x̂ + β with γ, β viewed as ``shape`` (broadcasting against x̂), in one pass when both are given.

    The output keeps the input's dtype, as torch's functions do (float16/bfloat16 input with float32 γ, β:
    the map is computed in float32, then rounded once).
    """
    if weight is not None and bias is not None:
        y = torch.addcmul(bias.reshape(shape), x_hat, weight.reshape(shape))
    elif weight is not None:
        y = x_hat * weight.reshape(shape)
    elif bias is not None:
        y = x_hat + bias.reshape(shape)
    else:
        return x_hat
    return y.to(x_hat.dtype)


def _check_param(t, name: str, shape: tuple[int, ...], input: torch.Tensor) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        hint = ""
        if len(shape) == 1 and t.dim() == 1:
            hint = f": the input has {shape[0]} channels but {name} has {t.shape[0]}; build the layer for {shape[0]}"
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} for input size {tuple(input.shape)}{hint}"
        )


def _per_channel(input, weight, bias):
    c = input.shape[1]
    for t, name in ((weight, "weight"), (bias, "bias")):
        _check_param(t, name, (c,), input)
    return (1, c) + (1,) * (input.dim() - 2)


def group_norm(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """``torch.nn.functional.group_norm``: one μ/σ² per sample and group of C/G channels, one γ/β per channel."""
    _check(input, "group_norm", max_dim=None)  # torch accepts any rank ≥ 2
    shape = _per_channel(input, weight, bias)
    return _affine(_normalize(input, "group", num_groups, eps, keep_format=True), weight, bias, shape)


def instance_norm(
    input, running_mean=None, running_var=None, weight=None, bias=None,
    use_input_stats: bool = True, momentum: float = 0.1, eps: float = 1e-5,
) -> torch.Tensor:  # fmt: skip
    """``torch.nn.functional.instance_norm``: one μ/σ² per sample and channel, over its locations.

    With running statistics and ``use_input_stats=True`` they are updated as torch does: each of the N
    instances updates a copy (batch norm's update, unbiased variance), and the copies are averaged over N.
    With ``use_input_stats=False`` the running statistics normalize (batch norm's inference, Alg. 2).
    """
    _check(input, "instance_norm")
    shape = _per_channel(input, weight, bias)
    if input.dim() < 3:
        raise ValueError(
            f"instance_norm needs locations: an input (N, C, ...) of 3 to 5 dimensions, got {tuple(input.shape)}"
        )
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        _check_param(t, name, (input.shape[1],), input)
    if use_input_stats and _prod(input.shape[2:]) == 1:  # torch refuses too (its message, with the fix)
        raise ValueError(
            f"instance norm of an input of size {tuple(input.shape)} pools 1 value per set, so its variance is 0; "
            f"it needs more than 1 spatial element when using input statistics"
        )
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("use_input_stats=False normalizes with running_mean and running_var: pass both")
        return batch_norm(input, running_mean, running_var, weight, bias, training=False, eps=eps)
    if running_mean is not None and running_var is not None:
        # torch's update: batch norm on the (1, N·C, ...) view with the running statistics repeated per instance
        n, c = input.shape[:2]
        rm, rv = running_mean.repeat(n), running_var.repeat(n)
        view = input.detach().reshape(1, n * c, *input.shape[2:])
        with torch.no_grad():
            batch_norm(view, rm, rv, training=True, momentum=momentum, eps=eps)
            running_mean.copy_(rm.view(n, c).mean(0))
            running_var.copy_(rv.view(n, c).mean(0))
    return _affine(_normalize(input, "instance", None, eps), weight, bias, shape)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """``torch.nn.functional.layer_norm``: one μ/σ² per sample over its trailing ``normalized_shape``
    axes, one γ/β per value of ``normalized_shape``. For an (N, C, ...) input normalized over every axis
    but N this is :func:`bnlab.axes.norm_set`'s "layer" set; fewer trailing axes pool within one sample too.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or k > input.dim() or tuple(input.shape[input.dim() - k :]) != normalized_shape:
        raise ValueError(
            f"normalized_shape {normalized_shape} must be the trailing sizes of the input, got input size "
            f"{tuple(input.shape)}; use normalized_shape={tuple(input.shape[1:])} to normalize each sample"
        )
    for t, name in ((weight, "weight"), (bias, "bias")):
        _check_param(t, name, normalized_shape, input)
    if not input.is_floating_point():
        raise TypeError(f"layer_norm needs a floating-point input, got {input.dtype}; convert it with x.float()")
    # (leading axes flattened into N', the normalized ones into one): the "layer" set of an (N', C') input
    lead = input.shape[: input.dim() - k]
    flat = input.reshape(-1, _prod(normalized_shape)) if lead else input.reshape(1, -1)
    x_hat = _normalize(flat, "layer", None, eps).reshape(input.shape)
    return _affine(x_hat, weight, bias, normalized_shape)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# ------------------------------------------------------------------------------------------------- modules
# Subclasses of torch's modules: constructor, parameters, buffers, state_dict and extra_repr are torch's;
# only forward changes. A module does bookkeeping, the functions above do the math.


class GroupNorm(torch.nn.GroupNorm):
    """Drop-in for ``torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)``."""

    __prepare_scriptable__ = refuse_scripting  # torch.jit.script: say it is unsupported, and what to use

    def __init__(self, num_groups: int, num_channels: int, *args, **kwargs) -> None:
        if isinstance(num_groups, int) and isinstance(num_channels, int) and num_groups > 0:
            check_groups(num_groups, num_channels)  # the clear error (with the divisors) before torch's
        super().__init__(num_groups, num_channels, *args, **kwargs)

    @leaf_forward
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class LayerNorm(torch.nn.LayerNorm):
    """Drop-in for ``torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``."""

    __prepare_scriptable__ = refuse_scripting  # torch.jit.script: say it is unsupported, and what to use

    @leaf_forward
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


def _instance_norm_module(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps,
                          no_batch_dim: int, num_features: int, check_channels: bool, name: str):  # fmt: skip
    """forward of torch's ``_InstanceNorm`` on :func:`instance_norm` (the unbatched (C, ...) input included)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    unbatched = input.dim() == no_batch_dim
    if unbatched:
        input = input.unsqueeze(0)
    if input.dim() != no_batch_dim + 1:
        raise ValueError(
            f"{name} expects an input of {no_batch_dim + 1} dimensions (N, C, ...) or {no_batch_dim} unbatched, "
            f"got size {tuple(input.shape)}"
        )
    if check_channels and input.shape[1] != num_features:
        raise ValueError(
            f"expected {num_features} channels on axis 1, got input size {tuple(input.shape)}; "
            f"build the layer with num_features={input.shape[1]}"
        )
    out = instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    return out.squeeze(0) if unbatched else out


# torch.fx records calls to these as single nodes instead of tracing into their shape checks, so code that
# calls the functions stays traceable; the modules are leaves (one call_module node, bnlab.nn.tracing), as
# torch's own layers are, so a traced model follows train()/eval() as eager does.
for _name in ("group_norm", "layer_norm", "_instance_norm_module"):
    torch.fx.wrap(_name)


class _InstanceNormMixin:
    __prepare_scriptable__ = refuse_scripting  # torch.jit.script: say it is unsupported, and what to use

    @leaf_forward
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _instance_norm_module(
            input, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0, self.eps,
            self._get_no_batch_dim(), self.num_features, self.affine or self.track_running_stats,
            type(self).__name__,
        )  # fmt: skip


class InstanceNorm1d(_InstanceNormMixin, torch.nn.InstanceNorm1d):
    """Drop-in for ``torch.nn.InstanceNorm1d(num_features, eps, momentum, affine, track_running_stats)``."""


class InstanceNorm2d(_InstanceNormMixin, torch.nn.InstanceNorm2d):
    """Drop-in for ``torch.nn.InstanceNorm2d(num_features, eps, momentum, affine, track_running_stats)``."""


class InstanceNorm3d(_InstanceNormMixin, torch.nn.InstanceNorm3d):
    """Drop-in for ``torch.nn.InstanceNorm3d(num_features, eps, momentum, affine, track_running_stats)``."""
