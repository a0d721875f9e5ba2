"""``batch_norm``: torch's functional signature, any reduce axes, closed-form backward.

>>> import torch
>>> x = torch.randn(8, 3, 5, 5)
>>> rm, rv = torch.zeros(3), torch.ones(3)
>>> y = batch_norm(x, rm, rv, training=True, momentum=0.1)        # convolutional BN: axes (0, 2, 3)
>>> torch.allclose(y, torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-5)
True
>>> y = batch_norm(x, None, None, training=True, axes=(0,))        # per-activation BN: stats (3, 5, 5)

The training transform is a PyTorch **custom operator** (``torch.ops.bnlab.batch_norm_train`` and its
backward ``batch_norm_backward``), registered with
``torch.library``: an autograd formula (the closed form of Alg. 1; double backward re-derives it with
differentiable ops), a shape-only "fake" implementation so ``torch.compile`` and ``torch.export`` see one
opaque op without running it, and a vmap rule (a vmapped dimension is one more feature axis). The kernels
behind it are chosen per device by :func:`bnlab.kernels.select`. In plain eager mode a light autograd
Function calls the same implementation without the operator's dispatch layers; under forward-mode AD and
the functorch transforms that custom operators do not support (grad, jvp, ...) the same math runs as
differentiable stock ops (see :func:`_route`). Eval mode (Alg. 2's fixed affine map) needs no operator:
traced, it is written in stock ops, so exporters such as ONNX read it as plain arithmetic.

Numerical policy: statistics in at least float32 (float64 for float64 input) by Welford / two-pass
methods; normalization with the biased batch variance σ²_B; running variance updated with the unbiased
m'/(m'−1)·σ²_B (Alg. 2). Running statistics are updated as

    running = (1 − momentum) · running + momentum · batch_statistic

in float32 (or float64) arithmetic whatever the buffers' dtype, and only for features whose batch
statistics are finite: a NaN or Inf in the input propagates to the output (IEEE, as in every framework)
but never poisons the running statistics. Buffers of a narrower dtype (float16, bfloat16) receive the
result rounded and **saturated** at the dtype's largest finite value (65504 for float16): a variance too
large for float16 is stored as 65504, never as inf. The guard is a ``torch.where`` on the device, so it
costs no host synchronization.

Range: fp16/bf16 statistics are computed in float32 (σ² of an fp16 input of std 300 would overflow fp16).
Sums of squares that overflow while σ²_B itself fits are recomputed in float64 on the CPU, so σ²_B is right
wherever the statistics' dtype holds it; a finite input whose σ²_B does not fit (float32: a std above
~1.8e19) raises a ValueError on the CPU instead of the silent β that 1/√(inf) gives (and torch gives).

dtypes: the input may be float16/bfloat16 with float32 parameters and buffers (as torch and autocast
allow); otherwise parameters and buffers must have the input's dtype (torch raises "mixed dtype" on the
CPU; so do we, on every device, with the fix in the message).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from .. import kernels
from ..axes import check_eps, check_input, check_momentum

__all__ = [
    "batch_norm",
    "update_running_stats",
    "default_axes",
    "check_tensors",
    "check_dtype",
    "check_variance_fits",
    "VarianceOverflowError",
    "ACTIVATIONS",
]

#: values of ``activation=``: None (BN alone) or "relu" (y = max(BN(x), 0), fused where a kernel can)
ACTIVATIONS = (None, "relu")
_LOW = (torch.float16, torch.bfloat16)


def default_axes(ndim: int) -> tuple[int, ...]:
    """torch's convention: channels on axis 1, statistics over every other axis."""
    return tuple(a for a in range(ndim) if a != 1)


def check_dtype(name: str, t: Tensor, x: Tensor) -> None:
    ok = t.dtype == x.dtype or (x.dtype in _LOW and t.dtype == torch.float32)
    if not ok:
        raise TypeError(
            f"mixed dtype: the input is {x.dtype} but {name} is {t.dtype}; convert the layer to the input's "
            f"dtype (e.g. layer.to({x.dtype})) or the input to the layer's (x.to({t.dtype})). float16/bfloat16 "
            f"inputs may also use float32 parameters and statistics"
        )


def check_virtual_batch(k) -> int | None:
    """``virtual_batch`` (ghost BN): None, or the number k ≥ 2 of consecutive samples that share statistics."""
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(
            f"virtual_batch must be an int ≥ 2 (the number of consecutive samples that share one set of "
            f"statistics) or None, got {k!r}"
        )
    return k


def check_tensors(x, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation=None):
    """Validate everything before any state changes; return the normalized axes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"batch norm needs a floating-point input, got {x.dtype}; convert it with x.float()")
    check_eps(eps)
    if not isinstance(momentum, torch.Tensor):
        check_momentum(momentum)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if axes is None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions (N, C, ...), got shape {tuple(x.shape)}")
        axes = default_axes(x.dim())
    named = {"running_mean": running_mean, "running_var": running_var, "weight": weight, "bias": bias}
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != x.device:
            raise ValueError(
                f"{name} is on {t.device} but the input is on {x.device}; move the layer with .to({str(x.device)!r})"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
        check_dtype(name, t, x)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    if not training and running_mean is None:
        raise ValueError(
            "running_mean and running_var are required when training=False (eval mode uses them); "
            "pass training=True to normalize with batch statistics"
        )
    shapes = {k: (tuple(v.shape) if v is not None else None) for k, v in named.items()}
    return check_input(x.shape, axes, training=training, params=shapes, allow_empty=True)


# ---------------------------------------------------------------------------------------------------------
# The operator. Schema types: axes as int[], optional γ/β; outputs are fresh tensors (no aliasing).


def _stat_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _feature_shape(x: Tensor, axes) -> list[int]:
    return [n for i, n in enumerate(x.shape) if i not in axes]


@torch.library.custom_op("bnlab::batch_norm_train", mutates_args=())
def _train_op(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, axes: list[int], eps: float, relu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Alg. 1 in training mode: (y, μ_B, σ²_B); y = max(BN(x), 0) when ``relu``."""
    return _train_impl(x, weight, bias, tuple(axes), eps, relu)


def _train_impl(x, weight, bias, axes: tuple[int, ...], eps: float, relu: bool):
    k = kernels.select(x)
    with torch.no_grad():
        if relu:
            out = k.forward(x, weight, bias, eps, axes, relu=True)
        else:
            out = k.forward(x, weight, bias, eps, axes)
    check_variance_fits(x, out[1], out[2])
    return out


class VarianceOverflowError(ValueError):
    """A finite input whose batch variance σ²_B does not fit the statistics' dtype (see :func:`check_variance_fits`);
    in training this usually means the network diverged."""


def check_variance_fits(x: Tensor, mean: Tensor, var: Tensor) -> None:
    """Refuse a finite input whose σ²_B overflows the statistics' dtype (float32: a std above ~1.8e19):
    1/√(σ²_B + ε) would be 0 and the output a silent β. Checked on the CPU, where reading C numbers costs
    microseconds; elsewhere it would be a host synchronization per call (torch gives zeros there too)."""
    if x.device.type != "cpu" or math.isfinite(float(var.sum())):  # one reduction over C numbers: the common case
        return
    if bool((torch.isinf(var) & torch.isfinite(mean)).any()):
        raise VarianceOverflowError(
            f"the batch variance overflows {var.dtype} (largest {torch.finfo(var.dtype).max:.3g}, a standard "
            f"deviation above ~{torch.finfo(var.dtype).max ** 0.5:.2g}): the {x.dtype} input cannot be normalized "
            f"in this precision; divide it by a constant first (x̂ does not change, up to ε) or use float64 "
            f"(x.double() and layer.double())"
        )


@_train_op.register_fake
def _(x, weight, bias, axes, eps, relu):
    stats = _feature_shape(x, axes)
    return torch.empty_like(x), x.new_empty(stats, dtype=_stat_dtype(x)), x.new_empty(stats, dtype=_stat_dtype(x))


@torch.library.custom_op("bnlab::batch_norm_backward", mutates_args=())
def _backward_op(
    dy: Tensor,
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    weight: Tensor | None,
    y: Tensor | None,
    axes: list[int],
    eps: float,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """Closed-form gradients (dx, dγ, dβ); a gradient not asked for in ``needs`` comes back empty.

    ``y`` is the ReLU output when the forward was fused with a ReLU (gradients flow where y > 0), else None.
    """
    grads = _backward_impl(dy, x, mean, var, weight, y, tuple(axes), eps, tuple(needs))
    return tuple(x.new_empty(0) if g is None else g for g in grads)


def _backward_impl(dy, x, mean, var, weight, y, axes: tuple[int, ...], eps: float, needs: tuple[bool, ...]):
    k = kernels.select(x)
    with torch.no_grad():
        if y is not None:
            return k.backward(dy, x, mean, var, weight, eps, axes, needs, y=y)
        return k.backward(dy, x, mean, var, weight, eps, axes, needs)


@_backward_op.register_fake
def _(dy, x, mean, var, weight, y, axes, eps, needs):
    stats = _feature_shape(x, axes)
    dx = torch.empty_like(x) if needs[0] else x.new_empty(0)
    dw = x.new_empty(stats, dtype=_stat_dtype(x)) if (needs[1] and weight is not None) else x.new_empty(0)
    db = x.new_empty(stats, dtype=_stat_dtype(x)) if needs[2] else x.new_empty(0)
    return dx, dw, db


def _train_setup(ctx, inputs, output):
    x, weight, bias, axes, eps, relu = inputs
    y, mean, var = output
    ctx.save_for_backward(x, weight, mean, var, y if relu else None)
    ctx.axes, ctx.eps, ctx.relu = tuple(axes), eps, relu
    ctx.dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    ctx.mark_non_differentiable(mean, var)


def _train_backward(ctx, dy, _dmean, _dvar):
    x, weight, mean, var, y = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:3]]
    if torch.is_grad_enabled():
        # create_graph=True: rebuild μ_B and σ²_B from x with differentiable ops, so the closed-form
        # backward below is itself differentiated correctly (double backward).
        if y is not None:
            dy = dy * (y > 0)
        mean, var = kernels.composed.batch_stats(x, ctx.axes)
        dx, dw, db = kernels.composed.backward(dy, x, mean, var, weight, ctx.eps, ctx.axes, needs)
    elif _route(x) == "eager":
        dx, dw, db = _backward_impl(dy, x, mean, var, weight, y, ctx.axes, ctx.eps, tuple(needs))
    else:
        dx, dw, db = _backward_op(dy, x, mean, var, weight, y, list(ctx.axes), ctx.eps, needs)
    dx = dx if needs[0] else None
    dw = dw.to(ctx.dtypes[0]) if (needs[1] and weight is not None) else None
    db = db.to(ctx.dtypes[1] or dy.dtype) if needs[2] else None
    return dx, dw, db, None, None, None


_train_op.register_autograd(_train_backward, setup_context=_train_setup)


def _eval_impl(x, mean, var, weight, bias, axes: tuple[int, ...], eps: float, relu: bool):
    """Alg. 2, step 11: y = γ (x − E[x])/√(Var[x] + ε) + β with fixed statistics (max(·, 0) when ``relu``)."""
    with torch.no_grad():
        y = kernels.select(x).normalize(x, mean, var, weight, bias, eps, axes)
        return y.clamp_min_(0) if relu else y


def _eval_setup(ctx, inputs, output):
    x, mean, var, weight, bias, axes, eps, relu = inputs
    ctx.save_for_backward(x, mean, var, weight, output if relu else None)
    ctx.axes, ctx.eps, ctx.has_bias = tuple(axes), eps, bias is not None
    ctx.bias_dtype = None if bias is None else bias.dtype


def _eval_backward(ctx, dy):
    # y = a·x + b with a = γ/√(Var+ε): dx = a·dy, dγ = Σ dy·x̂, dβ = Σ dy. Stock ops, hence differentiable.
    x, mean, var, weight, y = ctx.saved_tensors
    composed = kernels.composed
    if y is not None:
        dy = dy * (y > 0)
    nd, axes = x.dim(), ctx.axes
    invstd = torch.rsqrt(var.to(_stat_dtype(x)) + ctx.eps)
    dys = dy.to(invstd.dtype)
    dx = dw = db = None
    if ctx.needs_input_grad[0]:
        a = invstd if weight is None else weight.to(invstd.dtype) * invstd
        dx = (dys * composed._view(a, nd, axes)).to(x.dtype)
    if weight is not None and ctx.needs_input_grad[3]:
        xhat = (x.to(invstd.dtype) - composed._view(mean.to(invstd.dtype), nd, axes)) * composed._view(invstd, nd, axes)
        dw = (dys * xhat).sum(dim=axes).to(weight.dtype)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        db = dys.sum(dim=axes).to(ctx.bias_dtype)
    return dx, None, None, dw, db, None, None, None


class _TrainFunction(torch.autograd.Function):
    """The eager door to the same implementation as ``bnlab::batch_norm_train`` (see :func:`_route`)."""

    # forward(ctx, ...) rather than a separate setup_context: apply() then skips binding the signature,
    # which costs more than the rest of the call on small tensors

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps, relu):
        out = _train_impl(x, weight, bias, axes, eps, relu)
        _train_setup(ctx, (x, weight, bias, axes, eps, relu), out)
        return out

    backward = staticmethod(_train_backward)


class _EvalFunction(torch.autograd.Function):
    """Eval mode in eager: the device's kernel forward, the closed-form backward of a fixed affine map."""

    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, axes, eps, relu):
        y = _eval_impl(x, mean, var, weight, bias, axes, eps, relu)
        _eval_setup(ctx, (x, mean, var, weight, bias, axes, eps, relu), y)
        return y

    backward = staticmethod(_eval_backward)


# vmap: the vmapped dimension of x becomes one more feature axis (a statistic per vmapped entry), so
# vmap(batch_norm) over k inputs equals k independent batch norms — as the vmap of stock ops would do.


def _front(t: Tensor | None, bdim: int | None, size: int) -> Tensor | None:
    """``t`` with its vmapped dim first, or expanded along a new first dim when it is not vmapped."""
    if t is None:
        return None
    if bdim is None:
        return t.unsqueeze(0).expand(size, *t.shape)
    return t.movedim(bdim, 0)


def _shift(axes) -> list[int]:
    return [a + 1 for a in axes]


def _train_vmap(info, in_dims, x, weight, bias, axes, eps, relu):
    n = info.batch_size
    out = _train_op(
        _front(x, in_dims[0], n), _front(weight, in_dims[1], n), _front(bias, in_dims[2], n), _shift(axes), eps, relu
    )
    return out, (0, 0, 0)


def _backward_vmap(info, in_dims, dy, x, mean, var, weight, y, axes, eps, needs):
    n = info.batch_size
    args = [_front(t, d, n) for t, d in zip((dy, x, mean, var, weight, y), in_dims[:6], strict=True)]
    dx, dw, db = _backward_op(*args, _shift(axes), eps, needs)
    dims = tuple(0 if g.numel() or g.dim() > 1 else None for g in (dx, dw, db))
    return (dx, dw, db), dims


if hasattr(_train_op, "register_vmap"):  # torch >= 2.5
    _train_op.register_vmap(_train_vmap)
    _backward_op.register_vmap(_backward_vmap)


# ---------------------------------------------------------------------------------------------------------


def _route(x: Tensor) -> str:
    """Which door a call takes to the one implementation (the kernels behind :mod:`bnlab.kernels`):

    - ``"eager"``: plain eager mode (no compiler, export, fake tensors, functorch transform, forward AD or
      tensor subclass). The registered operator's Python dispatch layers (tens of µs a call) buy nothing
      there, so light autograd Functions call the implementation directly;
    - ``"stock"``: forward-mode AD, or a functorch transform other than vmap (grad, jvp, vjp, jacrev...).
      PyTorch's custom operators support neither (no forward-mode formula; their generated autograd
      refuses functorch), so the same math runs as differentiable stock ops (:mod:`bnlab.kernels.composed`);
    - ``"op"``: everywhere else — ``torch.compile``, ``torch.export``, fake tensors, vmap, subclasses — the
      registered operator, so tracers see one op with its fake implementation and vmap rule.
    """
    compiling = torch.compiler.is_compiling()
    if not compiling and getattr(_forward_ad, "_current_level", -1) >= 0:
        return "stock"
    if torch._C._are_functorch_transforms_active():
        from torch._C._functorch import TransformType
        from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

        vmap_only = all(i.key() == TransformType.Vmap for i in retrieve_all_functorch_interpreters())
        return "op" if vmap_only else "stock"
    if (
        (type(x) is Tensor or type(x) is torch.nn.Parameter)
        and not compiling
        and not torch._C._len_torch_dispatch_stack()
        and not torch._C._is_torch_function_mode_enabled()
    ):
        return "eager"
    return "op"


def _composed_train(x, weight, bias, axes, eps, relu):
    y, mean, var = kernels.composed.forward(x, weight, bias, eps, axes)
    check_variance_fits(x, mean, var)
    return (torch.relu(y) if relu else y), mean.detach(), var.detach()


def update_running_stats(running_mean, running_var, mean, var, count: int, momentum) -> None:
    """Alg. 2's running averages, in place: ``running ← (1 − momentum)·running + momentum·statistic``.

    ``mean``/``var`` are the batch mean and biased variance of ``count`` values each; the running variance
    takes the unbiased ``count/(count − 1)·var``. Features whose statistics are not finite keep their
    values. The arithmetic is in float32 (float64 for float64 buffers); narrower buffers get the result
    saturated at their largest finite value. ``momentum`` is a float or a 0-dim tensor.
    """
    with torch.no_grad():
        unbiased = var * (count / (count - 1))
        ok = torch.isfinite(mean) & torch.isfinite(unbiased)
        for running, new in ((running_mean, mean), (running_var, unbiased)):
            if running.dtype in _LOW:
                wide = running.float()
                wide.lerp_(torch.where(ok, new.float(), wide), _weight(momentum, wide))
                big = torch.finfo(running.dtype).max
                running.copy_(wide.clamp_(-big, big))
            else:
                # where a statistic is not finite the "new" value is the old one: the lerp leaves it unchanged
                running.lerp_(torch.where(ok, new.to(running.dtype), running), _weight(momentum, running))


def _weight(momentum, like: Tensor):
    return momentum.to(like.dtype) if isinstance(momentum, Tensor) else momentum


def _empty_batch(x, running_mean, running_var, weight, bias, training, eps, axes):
    """An input with no values: an empty output connected to γ and β (their gradients are zeros)."""
    if training or running_mean is None:
        fshape = _feature_shape(x, axes)
        running_mean = x.new_zeros(fshape, dtype=_stat_dtype(x))
        running_var = x.new_ones(fshape, dtype=_stat_dtype(x))
    return kernels.composed.normalize(x, running_mean, running_var, weight, bias, eps, axes)


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | Tensor | None = 0.1,
    eps: float = 1e-5,
    axes: tuple[int, ...] | None = None,
    *,
    activation: str | None = None,
    virtual_batch: int | None = None,
) -> Tensor:
    """Batch normalization over ``axes`` (default: every axis but 1, as ``torch.nn.functional.batch_norm``).

    ``running_mean``/``running_var``/``weight``/``bias`` have the feature shape (``input.shape`` without
    the reduced axes). In training the batch statistics normalize and, when running statistics are given,
    update them in place with weight ``momentum`` (a float, or a 0-dim tensor); otherwise the running
    statistics normalize (Alg. 2). ``activation="relu"`` returns max(BN(x), 0), fused into one pass where
    the kernel can. An input with no values (a batch of 0 samples) gives an empty output and leaves the
    running statistics as they are, as torch does.

    ``virtual_batch=k`` (ghost BN, training only): the batch statistics pool over each run of k consecutive
    samples; the running statistics move towards the average of the runs' means and unbiased variances.
    The batch size must be a multiple of k.
    """
    axes = check_tensors(input, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation)
    if training and running_mean is not None and momentum is None:
        raise ValueError(
            "momentum=None (cumulative average) needs the number of batches seen: use a bnlab.nn module, "
            "or pass momentum=1/num_batches"
        )
    relu = activation == "relu"
    if check_virtual_batch(virtual_batch) and training and input.shape[0] % virtual_batch:
        raise ValueError(
            f"virtual_batch={virtual_batch} needs a batch size that is a multiple of {virtual_batch}, got "
            f"{input.shape[0]}; drop the incomplete last batch (DataLoader(drop_last=True)) or choose another k"
        )
    if input.numel() == 0:
        y = _empty_batch(input, running_mean, running_var, weight, bias, training, eps, axes)
        return torch.relu(y) if relu else y
    eps = float(eps)
    if not training:
        if _route(input) == "eager":
            return _EvalFunction.apply(input, running_mean, running_var, weight, bias, axes, eps, relu)
        # traced or transformed: a fixed per-feature affine map in stock ops, which every backend and
        # exporter (ONNX included) understands and a compiler fuses with its neighbours
        y = kernels.composed.normalize(input, running_mean, running_var, weight, bias, eps, axes)
        return torch.relu(y) if relu else y
    count = 1
    for a in axes:  # axes are checked already: m' = the product of the reduced sizes
        count *= input.shape[a]
    chunks = input.shape[0] // virtual_batch if virtual_batch else 1
    if chunks > 1:
        # ghost BN: (N, ...) -> (k, N/k, ...), the chunk index becoming one more feature axis
        k = virtual_batch
        x = input.unflatten(0, (chunks, k)).movedim(1, 0)
        axes_k = (0, *(a + 1 for a in axes if a != 0))
        weight_k = None if weight is None else weight.expand(chunks, *weight.shape)
        bias_k = None if bias is None else bias.expand(chunks, *bias.shape)
        y, mean, var = _train(x, weight_k, bias_k, axes_k, eps, relu)
        y = y.movedim(0, 1).flatten(0, 1)
        mean, var, count = mean.mean(0), var.mean(0), count // chunks
    else:
        y, mean, var = _train(input, weight, bias, axes, eps, relu)
    if running_mean is not None:
        update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return y


def _train(x, weight, bias, axes, eps, relu):
    route = _route(x)
    if route == "eager":
        return _TrainFunction.apply(x, weight, bias, axes, eps, relu)
    if route == "stock":
        return _composed_train(x, weight, bias, axes, eps, relu)
    return _train_op(x, weight, bias, list(axes), eps, relu)


# the rest of the normalization family, written with batch_norm above (bnlab/nn/family.py)
from .family import group_norm, instance_norm, layer_norm  # noqa: E402

__all__ += ["group_norm", "instance_norm", "layer_norm"]

from .renorm import batch_renorm  # noqa: E402  (Batch Renorm, bnlab/nn/renorm.py: batch_norm with r and d)

__all__ += ["batch_renorm"]
