"""``BatchNorm1d/2d/3d``: drop-ins for ``torch.nn.BatchNorm*d``, plus per-activation BN.

Modules only keep the books (parameters, buffers, train/eval/frozen); the math is
:func:`bnlab.nn.functional.batch_norm`. Same constructor arguments and ``state_dict`` keys as torch
(``weight, bias, running_mean, running_var, num_batches_tracked``), so weights load both ways:

>>> import torch
>>> theirs = torch.nn.BatchNorm2d(16)
>>> ours = BatchNorm2d(16)
>>> ours.load_state_dict(theirs.state_dict())
<All keys matched successfully>

``per="activation"`` gives the paper's per-activation BN (§3): one mean/variance and one (γ, β) per
activation, i.e. per (channel, location), with parameters of the feature shape ``(C, *spatial_size)``.
Without ``spatial_size`` the shapes are taken from the first input:

>>> bn = BatchNorm2d(16, per="activation", spatial_size=(28, 28))
>>> tuple(bn.weight.shape)
(16, 28, 28)

Running statistics (``momentum`` as in PyTorch — the weight of the new batch; ``None`` for a cumulative
average over the ``num_batches_tracked`` batches seen)::

    running_mean = (1 − momentum)·running_mean + momentum·μ_B
    running_var  = (1 − momentum)·running_var  + momentum·m'/(m'−1)·σ²_B

Modes: ``module.training`` chooses batch statistics (train) or running statistics (eval), as in torch.
``module.frozen = True`` (see :func:`bnlab.freeze`) makes the layer use and keep its running statistics
even in training mode.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from ..axes import check_eps, check_input, check_momentum, check_per
from . import functional as F

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _BatchNorm(nn.Module):
    """Shared state and forward of BatchNorm1d/2d/3d; subclasses set the accepted input ranks."""

    _version = 2
    _input_dims: tuple[int, ...] = ()
    _spatial_dims: int = 0

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        per: str = "channel",
        spatial_size: tuple[int, ...] | int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int (the number of channels), got {num_features!r}")
        check_eps(eps)
        check_momentum(momentum)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.per = check_per(per)
        self.frozen = False
        if isinstance(spatial_size, int):
            spatial_size = (spatial_size,) * max(self._spatial_dims, 1)
        if spatial_size is not None and per == "channel":
            raise ValueError("spatial_size is only used with per='activation' (per='channel' has one γ/β per channel)")
        self.spatial_size = tuple(spatial_size) if spatial_size is not None else None
        factory = {"device": device, "dtype": dtype}
        lazy = per == "activation" and spatial_size is None
        shape = (num_features, *(self.spatial_size or ()))
        if affine:
            if lazy:
                self.weight = UninitializedParameter(**factory)
                self.bias = UninitializedParameter(**factory)
            else:
                self.weight = nn.Parameter(torch.empty(shape, **factory))
                self.bias = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            if lazy:
                self.register_buffer("running_mean", UninitializedBuffer(**factory))
                self.register_buffer("running_var", UninitializedBuffer(**factory))
            else:
                self.register_buffer("running_mean", torch.zeros(shape, **factory))
                self.register_buffer("running_var", torch.ones(shape, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, **{k: v for k, v in factory.items() if k != "dtype"}),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if not lazy:
            self.reset_parameters()

    # -- state -------------------------------------------------------------------------------------------
    def _is_lazy(self) -> bool:
        return any(
            isinstance(t, (UninitializedParameter, UninitializedBuffer))
            for t in (self.weight, self.bias, self.running_mean, self.running_var)
        )

    def _materialize(self, shape: tuple[int, ...]) -> None:
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(self, name)
                if isinstance(t, (UninitializedParameter, UninitializedBuffer)):
                    t.materialize(shape)
        self.spatial_size = tuple(shape[1:])
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats and not self._is_lazy():
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine and not self._is_lazy():
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def reduce_axes(self, ndim: int) -> tuple[int, ...]:
        """Axes the statistics pool over for an input of ``ndim`` dims (NCHW logical order)."""
        if self.per == "activation":
            return (0,)
        return F.default_axes(ndim)

    def feature_shape(self, shape) -> tuple[int, ...]:
        return tuple(n for i, n in enumerate(shape) if i not in self.reduce_axes(len(shape)))

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in self._input_dims:
            want = " or ".join(f"{d}D" for d in self._input_dims)
            raise ValueError(f"expected {want} input (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"expected {self.num_features} channels on axis 1, got input of shape {tuple(x.shape)}; "
                f"build the layer with num_features={x.shape[1]}"
            )
        if self.per == "activation" and self.spatial_size is not None and tuple(x.shape[2:]) != self.spatial_size:
            raise ValueError(
                f"this per-activation layer has parameters for locations of size {self.spatial_size}, "
                f"got input of shape {tuple(x.shape)}; per-activation BN needs a fixed input size"
            )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)  # saved before num_batches_tracked existed
        if self._is_lazy():
            w = state_dict.get(prefix + "weight", state_dict.get(prefix + "running_mean"))
            if w is not None:
                self._materialize(tuple(w.shape))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )
        if self.per != "channel":
            s += f", per={self.per!r}, spatial_size={self.spatial_size}"
        if self.frozen:
            s += ", frozen=True"
        return s

    # -- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if self._is_lazy():  # per-activation without spatial_size: shapes from the first (valid) input
            check_input(x.shape, self.reduce_axes(x.dim()), training=self.training)
            self._materialize(tuple(x.shape[1:]))
        use_batch_stats = (self.training and not self.frozen) or self.running_mean is None
        update = use_batch_stats and self.training and self.track_running_stats and self.running_mean is not None
        momentum = 0.0
        if update:
            # momentum=None: cumulative average, the new batch weighs 1/(number of batches seen)
            if self.momentum is None:
                momentum = 1.0 / (int(self.num_batches_tracked) + 1)
            else:
                momentum = self.momentum
        y = F.batch_norm(
            x,
            self.running_mean if (update or not use_batch_stats) else None,
            self.running_var if (update or not use_batch_stats) else None,
            self.weight,
            self.bias,
            training=use_batch_stats,
            momentum=momentum,
            eps=self.eps,
            axes=self.reduce_axes(x.dim()),
        )
        if update:
            self.num_batches_tracked.add_(1)  # only after the checks in batch_norm passed
        return y


class BatchNorm1d(_BatchNorm):
    """Drop-in for ``torch.nn.BatchNorm1d``: input (N, C) or (N, C, L)."""

    _input_dims = (2, 3)
    _spatial_dims = 1


class BatchNorm2d(_BatchNorm):
    """Drop-in for ``torch.nn.BatchNorm2d``: input (N, C, H, W), contiguous or channels_last."""

    _input_dims = (4,)
    _spatial_dims = 2


class BatchNorm3d(_BatchNorm):
    """Drop-in for ``torch.nn.BatchNorm3d``: input (N, C, D, H, W)."""

    _input_dims = (5,)
    _spatial_dims = 3
