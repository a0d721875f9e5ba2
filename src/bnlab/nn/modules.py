"""``BatchNorm1d/2d/3d``: drop-ins for ``torch.nn.BatchNorm*d``, plus per-activation BN and ghost BN.

Modules only keep the books (parameters, buffers, train/eval/frozen); the math is
:func:`bnlab.nn.functional.batch_norm`. The classes **are** torch's BN classes as far as the ecosystem can
tell: ``bnlab.nn.BatchNorm2d`` subclasses ``torch.nn.BatchNorm2d`` (and so
``torch.nn.modules.batchnorm._BatchNorm``), which is how weight-decay filters, model surgery, FLOP counters
and ``convert_sync_batchnorm`` find BN layers. Same constructor arguments (``bias=`` included) and
``state_dict`` keys as torch (``weight, bias, running_mean, running_var, num_batches_tracked``), so weights
load both ways:

>>> import torch
>>> theirs = torch.nn.BatchNorm2d(16)
>>> ours = BatchNorm2d(16)
>>> ours.load_state_dict(theirs.state_dict())
<All keys matched successfully>
>>> isinstance(ours, torch.nn.BatchNorm2d)
True

``per="activation"`` gives the paper's per-activation BN (§3): one mean/variance and one (γ, β) per
activation, i.e. per (channel, location), with parameters of the feature shape ``(C, *spatial_size)``.
Without ``spatial_size`` the shapes are taken from the first (valid) input — in eval mode too, which then
normalizes with the initial running statistics (0 and 1), as torch's lazy layers do:

>>> bn = BatchNorm2d(16, per="activation", spatial_size=(28, 28))
>>> tuple(bn.weight.shape)
(16, 28, 28)

``virtual_batch=k`` gives ghost BN (Hoffer et al. 2017): in training, the statistics pool over each run of
k consecutive samples instead of the whole mini-batch (the set B made deliberately smaller); the output
and gradients equal plain BN applied to each chunk of k. The running statistics take one step per
mini-batch, towards the average over the chunks of their means and of their unbiased variances (Alg. 2's
E_B[μ_B] and m/(m−1)·E_B[σ²_B] over the chunks of this mini-batch). Eval mode is unchanged.

``activation="relu"`` returns max(BN(x), 0) from one fused op (the backward recomputes the mask from y).

Running statistics (``momentum`` as in PyTorch — the weight of the new batch; ``None`` for a cumulative
average over the ``num_batches_tracked`` batches seen)::

    running_mean = (1 − momentum)·running_mean + momentum·μ_B
    running_var  = (1 − momentum)·running_var  + momentum·m'/(m'−1)·σ²_B

Modes: ``module.training`` chooses batch statistics (train) or running statistics (eval), as in torch.
``module.frozen = True`` (see :func:`bnlab.freeze`) makes the layer use and keep its running statistics
even in training mode.

``torch.fx.symbolic_trace`` sees each layer as one ``call_module`` node, as it sees torch's own layers (see
:mod:`bnlab.nn.tracing`): the traced model calls the layer itself, so it counts batches, follows
``train()``/``eval()`` and keeps ``num_batches_tracked`` in its ``state_dict`` as eager does.
"""

from __future__ import annotations

import inspect
import sys

import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter
from torch.nn.utils import fusion

from .. import _compat
from ..axes import check_eps, check_momentum, check_per
from . import functional as F
from .functional import batch_norm
from .tracing import leaf_forward, refuse_scripting

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]

_UNINITIALIZED = (UninitializedParameter, UninitializedBuffer)


def _code(f) -> int:
    # keyed by id: hashing a code object hashes its constants and names on every lookup (~1 µs)
    return id(inspect.unwrap(getattr(f, "__func__", f)).__code__)


# torch's tools that rebuild or fold a BN layer from the attributes torch's classes have, so they would drop
# what bnlab adds. Each reads the layer's ``eps``: that read (from these functions' own frames) is where a
# layer whose function would change refuses (see BatchNormBase.eps and BatchNormBase._lost_by).
_TORCH_TOOLS = {
    _code(fusion.fuse_conv_bn_eval): "torch.nn.utils.fusion.fuse_conv_bn_eval",
    _code(fusion.fuse_linear_bn_eval): "torch.nn.utils.fusion.fuse_linear_bn_eval",
    _code(nn.SyncBatchNorm.convert_sync_batchnorm): "torch.nn.SyncBatchNorm.convert_sync_batchnorm",
}


def check_input_dim(x: torch.Tensor, input_dims: tuple[int, ...], num_features: int, spatial_size=None) -> None:
    """A layer's checks of its input's rank, channel count and (per-activation) locations."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in input_dims:
        want = " or ".join(f"{d}D" for d in input_dims)
        raise ValueError(f"expected {want} input (got {x.dim()}D input)")
    if x.shape[1] != num_features:
        raise ValueError(
            f"expected {num_features} channels on axis 1, got input of shape {tuple(x.shape)}; "
            f"build the layer with num_features={x.shape[1]}"
        )
    if spatial_size is not None and tuple(x.shape[2:]) != tuple(spatial_size):
        raise ValueError(
            f"this per-activation layer has parameters for locations of size {tuple(spatial_size)}, "
            f"got input of shape {tuple(x.shape)}; per-activation BN needs a fixed input size"
        )



class BatchNormBase(_compat.TorchBatchNormBase):
    """Shared state and forward of BatchNorm1d/2d/3d; subclasses set the accepted input ranks."""

    _version = 2
    _input_dims: tuple[int, ...] = ()
    _spatial_dims: int = 0

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:  # a subclass's own forward is a leaf for torch.fx too (bnlab.nn.tracing)
            cls.forward = leaf_forward(cls.__dict__["forward"])

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
        bias: bool = True,
        per: str = "channel",
        spatial_size: tuple[int, ...] | int | None = None,
        activation: str | None = None,
        virtual_batch: int | None = None,
    ) -> None:
        # torch's _NormBase.__init__ would build (C,)-shaped state; per-activation layers need (C, *spatial)
        nn.Module.__init__(self)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int (the number of channels), got {num_features!r}")
        check_eps(eps)
        check_momentum(momentum)
        if activation not in F.ACTIVATIONS:
            raise ValueError(f"activation must be one of {F.ACTIVATIONS}, got {activation!r}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.per = check_per(per)
        self.activation = activation
        self.virtual_batch = F.check_virtual_batch(virtual_batch)
        self.frozen = False
        self.spatial_size = self._check_spatial_size(spatial_size)
        factory = {"device": device, "dtype": dtype}
        lazy = per == "activation" and self.spatial_size is None
        shape = (num_features, *(self.spatial_size or ()))

        def parameter():
            return UninitializedParameter(**factory) if lazy else nn.Parameter(torch.empty(shape, **factory))

        def buffer(fill):
            return UninitializedBuffer(**factory) if lazy else torch.full(shape, fill, **factory)

        self.register_parameter("weight", parameter() if affine else None)
        self.register_parameter("bias", parameter() if affine and bias else None)
        if track_running_stats:
            self.register_buffer("running_mean", buffer(0.0))
            self.register_buffer("running_var", buffer(1.0))
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

    def _check_spatial_size(self, spatial_size) -> tuple[int, ...] | None:
        if spatial_size is None:
            return None
        if self.per == "channel":
            raise ValueError("spatial_size is only used with per='activation' (per='channel' has one γ/β per channel)")
        if isinstance(spatial_size, int):
            spatial_size = (spatial_size,) * max(self._spatial_dims, 1)
        size = tuple(spatial_size)
        if len(size) + 2 not in self._input_dims or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size
        ):
            raise ValueError(
                f"spatial_size must be the input's sizes after the channel axis ({self._spatial_dims} positive "
                f"int(s)), got {spatial_size!r}"
            )
        return size

    # -- torch's tools -----------------------------------------------------------------------------------
    __prepare_scriptable__ = refuse_scripting  # torch.jit.script: say it is unsupported, and what to use

    @property
    def eps(self) -> float:
        """ε of Alg. 1. Reading it is also where torch's fusers and ``convert_sync_batchnorm`` refuse a layer
        whose function they would change (they build torch's layers from torch's attributes only)."""
        if not torch.compiler.is_compiling():
            tool = _TORCH_TOOLS.get(id(sys._getframe(1).f_code))
            if tool is not None:
                self._refuse(tool)
        return self.__dict__["eps"]

    @eps.setter
    def eps(self, value: float) -> None:
        self.__dict__["eps"] = value  # where torch's layers keep it: pickles stay loadable both ways

    def _lost_by(self, kind: str) -> list[tuple[str, str]]:
        """(what, the fix) for each thing torch's tool of ``kind`` ("fuse": conv/linear–BN fusion in eval;
        "sync": rebuilding the layer as torch.nn.SyncBatchNorm) would silently drop from this layer."""
        fix = {
            "fuse": "fold with bnlab.fold(model), which keeps it",
            "sync": "convert with bnlab.convert_sync(model), whose layers keep it (CPU and GPU)",
        }[kind]
        lost = []
        if self.activation is not None:
            lost.append((f"its fused ReLU (activation={self.activation!r})", fix))
        if self.per == "activation" and self.spatial_size != ():
            lost.append(("its per-activation statistics (one per channel and location)", fix))
        if kind == "sync" and self.virtual_batch is not None:
            lost.append((
                f"ghost BN (virtual_batch={self.virtual_batch}: statistics over each {self.virtual_batch} samples)",
                "its set B stays within one process, so keep the layer out of the conversion or build it without "
                "virtual_batch",
            ))  # fmt: skip
        if kind == "sync" and self.frozen:
            lost.append(("its frozen state (the running statistics normalize in training too)", fix))
        return lost

    def _refuse(self, tool: str) -> None:
        lost = self._lost_by("sync" if tool.endswith("convert_sync_batchnorm") else "fuse")
        if lost:  # RuntimeError, not AttributeError: the refusal must not read as a missing attribute
            fixes = "; ".join(dict.fromkeys(fix for _, fix in lost))
            raise RuntimeError(
                f"{tool} would silently drop {' and '.join(what for what, _ in lost)} from this "
                f"{type(self).__name__}({self.num_features}), changing the model's function: {fixes}"
            )

    # -- state -------------------------------------------------------------------------------------------
    def _is_lazy(self) -> bool:
        # read the dicts directly: under torch.fx tracing, attribute access returns traced values
        tensors = (self._parameters.get("weight"), self._parameters.get("bias"))
        tensors += (self._buffers.get("running_mean"), self._buffers.get("running_var"))
        # the exact types (materialize() changes a tensor's class): isinstance goes through Parameter's metaclass
        # check, ~3 µs a forward for four tensors
        return type(tensors[0]) in _UNINITIALIZED or any(type(t) in _UNINITIALIZED for t in tensors[1:])

    def _materialize(self, shape: tuple[int, ...]) -> None:
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(self, name)
                if isinstance(t, _UNINITIALIZED):
                    t.materialize(shape)
        self.spatial_size = tuple(shape[1:])
        self.reset_parameters()

    def _materialize_from(self, x: torch.Tensor) -> None:
        """Shapes of a lazy per-activation layer from its first input — only once every check has passed."""
        check_input_dim(x, self._input_dims, self.num_features)
        if any(n < 1 for n in x.shape[2:]):
            raise ValueError(f"per-activation BN needs locations with values, got input of shape {tuple(x.shape)}")
        use_batch, update, momentum = self._mode()
        fshape = (x.shape[1], *x.shape[2:])
        # eval mode normalizes with the initial running statistics (0 and 1, as torch's lazy layers do):
        # stand-ins of the feature shape let the eval-mode checks run (a batch of one sample is fine there)
        stats = None if use_batch else x.new_empty(fshape)
        F.check_tensors(x, (0,), use_batch, stats, stats, None, None, self.eps, momentum, self.activation)
        for name, t in (*self._parameters.items(), *self._buffers.items()):
            if isinstance(t, _UNINITIALIZED):
                if t.device != x.device:
                    raise ValueError(
                        f"the layer is on {t.device} but the input is on {x.device}; move the layer with "
                        f".to({str(x.device)!r}) or the input with x.to({str(t.device)!r})"
                    )
                F.check_dtype(name, t, x)
        self._materialize(fshape)

    def reset_running_stats(self) -> None:
        if self.track_running_stats and not self._is_lazy():
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine and not self._is_lazy():
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def reduce_axes(self, ndim: int) -> tuple[int, ...]:
        """Axes the statistics pool over for an input of ``ndim`` dims (NCHW logical order)."""
        if self.per == "activation":
            return (0,)
        return F.default_axes(ndim)

    def feature_shape(self, shape) -> tuple[int, ...]:
        return tuple(n for i, n in enumerate(shape) if i not in self.reduce_axes(len(shape)))

    def _check_input_dim(self, x: torch.Tensor) -> None:
        check_input_dim(x, self._input_dims, self.num_features, self.spatial_size if self.per == "activation" else None)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        if self._is_lazy():
            w = state_dict.get(prefix + "weight", state_dict.get(prefix + "running_mean"))
            if w is not None:
                self._materialize(tuple(w.shape))
        # torch's rule for checkpoints saved before num_batches_tracked existed: keep the current count
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        s = (  # torch's words first, in torch's order
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )
        if self.per != "channel":
            s += f", per={self.per!r}, spatial_size={self.spatial_size}"
        if self.activation is not None:
            s += f", activation={self.activation!r}"
        if self.virtual_batch is not None:
            s += f", virtual_batch={self.virtual_batch}"
        if self.frozen:
            s += ", frozen=True"
        return s

    # -- forward -----------------------------------------------------------------------------------------
    def _mode(self):
        """(normalize with batch statistics?, update the running ones?, momentum of the update)."""
        has_stats = self._buffers.get("running_mean") is not None
        use_batch = (self.training and not self.frozen) or not has_stats
        update = use_batch and self.training and self.track_running_stats and has_stats
        momentum = 0.0
        if update:
            if self.momentum is None:  # cumulative average: the new batch weighs 1/(number of batches seen)
                # in the running statistics' precision (float64 for float64 buffers, else float32): a float32
                # 1/3 left a float64 running mean 5e-9 off the exact average. A tensor: no host sync.
                wide = torch.float64 if self.running_mean.dtype == torch.float64 else torch.float32
                momentum = (self.num_batches_tracked + 1).to(wide).reciprocal()
            else:
                momentum = self.momentum
        return use_batch, update, momentum

    @leaf_forward
    def forward(self, input: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """BN of ``input``; ``mask`` (bool, broadcastable to ``input``): the values of set B in training (see
        :func:`bnlab.nn.functional.batch_norm`; eval mode normalizes every value with the running statistics)."""
        if self._is_lazy():  # per-activation without spatial_size: shapes from the first (valid) input
            self._materialize_from(input)
        self._check_input_dim(input)
        use_batch, update, momentum = self._mode()
        stats = not use_batch or update
        y = batch_norm(
            input,
            self.running_mean if stats else None,
            self.running_var if stats else None,
            self.weight,
            self.bias,
            use_batch,
            momentum,
            self.__dict__["eps"],  # not the property: its check of the caller costs ~0.5 µs (see eps)
            (0,) if self.per == "activation" else None,  # None: every axis but 1 (torch's convention)
            activation=self.activation,
            virtual_batch=self.virtual_batch if use_batch else None,
            mask=mask,
        )
        if update:
            self.num_batches_tracked.add_(1)  # only after the checks in batch_norm passed
        return y


class BatchNorm1d(BatchNormBase, nn.BatchNorm1d):
    """Drop-in for ``torch.nn.BatchNorm1d``: input (N, C) or (N, C, L)."""

    _input_dims = (2, 3)
    _spatial_dims = 1


class BatchNorm2d(BatchNormBase, nn.BatchNorm2d):
    """Drop-in for ``torch.nn.BatchNorm2d``: input (N, C, H, W), contiguous or channels_last."""

    _input_dims = (4,)
    _spatial_dims = 2


class BatchNorm3d(BatchNormBase, nn.BatchNorm3d):
    """Drop-in for ``torch.nn.BatchNorm3d``: input (N, C, D, H, W)."""

    _input_dims = (5,)
    _spatial_dims = 3


#: The old private name of :class:`BatchNormBase`, kept for old importers.
_BatchNorm = BatchNormBase


# -- torch.ao.quantization.fuse_modules ----------------------------------------------------------------------
# torch's fuser looks its methods up by the exact classes of the modules listed (conv, bn[, relu]), so bnlab's
# layers are registered next to torch's. Eval fusion only (is_qat=False): the conv/linear weights absorb the
# BN map as in torch.nn.utils.fusion (a fused ReLU, activation="relu", stays as a ReLU after the fused layer).
# QAT fusion builds torch's ConvBn modules, which accept torch's BatchNorm only: refused with the fix.


def _fuse_eval(is_qat: bool, layer: nn.Module, bn: BatchNormBase, relu: nn.Module | None = None) -> nn.Module:
    import copy

    from torch.ao.nn import intrinsic as nni

    name = f"{type(layer).__name__} + bnlab {type(bn).__name__}"
    if is_qat:
        raise RuntimeError(
            f"torch.ao.quantization cannot fuse {name} for quantization-aware training: its ConvBn/LinearBn "
            f"modules accept torch.nn.BatchNorm only; convert the layers first with bnlab.convert(model, to='torch'), "
            f"or fuse for inference (model.eval(), fuse_modules)"
        )
    if layer.training or bn.training:
        raise AssertionError("Fusion only for eval!")  # torch's words for torch's layers
    if bn.per == "activation" and bn.spatial_size != ():
        raise ValueError(
            f"cannot fuse {name}: per-activation BN has a scale per location, which a layer's weights cannot "
            f"hold; bnlab.fold(model) turns it into an Affine layer instead"
        )
    if bn.running_mean is None:
        raise ValueError(f"cannot fuse {name}: the BN layer has no running statistics (track_running_stats=False)")
    fused = copy.deepcopy(layer)
    eps = bn.__dict__["eps"]
    if isinstance(layer, nn.Linear):
        fused.weight, fused.bias = fusion.fuse_linear_bn_weights(
            fused.weight, fused.bias, bn.running_mean, bn.running_var, eps, bn.weight, bn.bias
        )
    else:
        transpose = isinstance(layer, _TRANSPOSED)
        fused.weight, fused.bias = fusion.fuse_conv_bn_weights(
            fused.weight, fused.bias, bn.running_mean, bn.running_var, eps, bn.weight, bn.bias, transpose
        )
    if relu is None and bn.activation == "relu":
        relu = nn.ReLU()
    if relu is None:
        return fused
    with_relu = {nn.Conv1d: nni.ConvReLU1d, nn.Conv2d: nni.ConvReLU2d, nn.Conv3d: nni.ConvReLU3d}
    fused_cls = {**with_relu, nn.Linear: nni.LinearReLU}.get(type(layer))
    return fused_cls(fused, relu) if fused_cls is not None else nn.Sequential(fused, relu)


_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _register_torch_fusers() -> None:
    table = _compat.fuser_method_table()
    if table is None:  # a torch without the table: fuse_modules keeps not knowing bnlab
        return
    pairs = [
        (nn.Conv1d, BatchNorm1d), (nn.Conv2d, BatchNorm2d), (nn.Conv3d, BatchNorm3d), (nn.Linear, BatchNorm1d),
        (nn.ConvTranspose1d, BatchNorm1d), (nn.ConvTranspose2d, BatchNorm2d), (nn.ConvTranspose3d, BatchNorm3d),
    ]  # fmt: skip
    for layer, bn in pairs:
        table.setdefault((layer, bn), _fuse_eval)
        if not issubclass(layer, _TRANSPOSED):
            table.setdefault((layer, bn, nn.ReLU), _fuse_eval)


_register_torch_fusers()
