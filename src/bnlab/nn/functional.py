"""Batch normalization as functions: ``batch_norm`` (torch's functional signature, any reduce axes) and
``update_running_stats`` (Alg. 2's running averages).

>>> import torch
>>> x = torch.randn(8, 3, 5, 5)
>>> rm, rv = torch.zeros(3), torch.ones(3)
>>> y = batch_norm(x, rm, rv, training=True, momentum=0.1)        # convolutional BN: axes (0, 2, 3)
>>> torch.allclose(y, torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-5)
True
>>> y = batch_norm(x, None, None, training=True, axes=(0,))        # per-activation BN: stats (3, 5, 5)

**Where the math is, and which door runs when.** This module checks the arguments, handles ghost BN and
empty batches, and updates the running statistics; the forward and backward math is elsewhere:

- to change the forward/backward math, change the kernels: :mod:`bnlab.kernels.composed` is the one
  differentiable definition (stock torch ops; every fast family is tested against it), and the fast
  families (:mod:`bnlab.kernels.cpu`, ``cuda``, ``triton``, picked per device by
  :func:`bnlab.kernels.select`) implement the same contract;
- *how* a call reaches that math is :mod:`bnlab.nn._dispatch` (:func:`~bnlab.nn._dispatch.route`):
  plain eager → autograd Functions calling the device's kernel (``KernelTrainFunction``/``KernelEvalFunction``);
  ``torch.compile`` → ``ComposedTrainFunction``, the composed definition as ordinary ops with the
  closed-form backward, so Inductor fuses it; ``torch.export``/fake tensors/vmap → the custom operator
  ``torch.ops.bnlab.batch_norm_train`` (fake implementation, autograd formula, vmap rule);
  forward-mode AD and functorch's grad/jvp/... → the composed ops, differentiated by autograd. Eval mode
  outside eager is Alg. 2's fixed affine map in stock ops, which exporters such as ONNX read as arithmetic.

Numerical policy: statistics in at least float32 (float64 for float64 input) by Welford / two-pass
methods; normalization with the biased batch variance σ²_B; running variance updated with the unbiased
m'/(m'−1)·σ²_B (Alg. 2). Running statistics are updated as

    running = (1 − momentum) · running + momentum · batch_statistic

in float32 (or float64) arithmetic whatever the buffers' dtype, and only for features whose batch
statistics are finite: a NaN or Inf in the input propagates to the output (IEEE, as in every framework)
but never poisons the running statistics. Buffers of a narrower dtype (float16, bfloat16) receive the
result rounded and **saturated** at the dtype's largest finite value (65504 for float16): a variance too
large for float16 is stored as 65504, never as inf. The guard is a ``torch.where`` on the device, so it
costs no host synchronization, and it traces into a compiled graph without a break.

Range: fp16/bf16 statistics are computed in float32 (σ² of an fp16 input of std 300 would overflow fp16).
Sums of squares that overflow while σ²_B itself fits are recomputed in float64 on the CPU, so σ²_B is right
wherever the statistics' dtype holds it; a finite input whose σ²_B does not fit (float32: a std above
~1.8e19) raises a ValueError on the CPU instead of the silent β that 1/√(inf) gives (and torch gives).

dtypes: the input may be float16/bfloat16 with float32 parameters and buffers (as torch and autocast
allow); otherwise parameters and buffers must have the input's dtype (torch raises "mixed dtype" on the
CPU; so do we, on every device, with the fix in the message).

The rest of the family's functions (``group_norm``, ``layer_norm``, ``instance_norm``, ``batch_renorm``)
are written with :func:`batch_norm` in :mod:`bnlab.nn.family` and :mod:`bnlab.nn.renorm`, layers above this
one; :mod:`bnlab.nn` re-exports them here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _compat
from ..axes import check_eps, check_input, check_momentum
from ..kernels import composed, native
from . import _dispatch, _planned
from ._dispatch import VarianceOverflowError, check_variance_fits

__all__ = [
    "batch_norm",
    "update_running_stats",
    "default_axes",
    "check_tensors",
    "checked_axes",
    "check_dtype",
    "check_mask",
    "check_variance_fits",
    "VarianceOverflowError",
    "ACTIVATIONS",
]


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
    mask: Tensor | None = None,
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

    ``mask`` (a bool tensor broadcastable to ``input``, e.g. (N, 1, H, W) or (N, C, L)): which values belong
    to set B — padding in variable-length sequences or images is masked out. In training μ_B, σ²_B and the
    running update use only the masked-in values (m' = their count per feature, so the running variance
    takes m'/(m' − 1)·σ²_B); every value, masked out or not, is normalized with them. A feature with fewer
    than 2 masked-in values is refused (ValueError, no state changed). In eval mode the mask is checked and
    then ignored: the running statistics normalize every value. See docs/mask.md.
    """
    if axes is None and mask is None and virtual_batch is None:  # a plain eager CPU call: planned once
        planned = _planned.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps,
                                      activation)  # fmt: skip
        if planned is not None:
            y, mean, var, count = planned
            if training and running_mean is not None:
                update_running_stats(running_mean, running_var, mean, var, count, momentum)
            return y
    axes = checked_axes(input, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation)
    if mask is not None:
        return _masked_batch_norm(
            input,
            mask,
            running_mean,
            running_var,
            weight,
            bias,
            training,
            momentum,
            eps,
            axes,
            activation,
            virtual_batch,
        )
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
        return _dispatch.evaluate(input, running_mean, running_var, weight, bias, axes, eps, relu)
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
        y, mean, var = _dispatch.train(x, weight_k, bias_k, axes_k, eps, relu)
        y = y.movedim(0, 1).flatten(0, 1)
        mean, var, count = mean.mean(0), var.mean(0), count // chunks
    else:
        y, mean, var = _dispatch.train(input, weight, bias, axes, eps, relu)
    if running_mean is not None:
        update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return y


def _masked_batch_norm(x, mask, running_mean, running_var, weight, bias, training, momentum, eps, axes, activation, k):
    """:func:`batch_norm` with a masked set B (arguments checked by :func:`check_tensors` already)."""
    check_mask(mask, x)
    if k is not None:
        raise ValueError("mask= and virtual_batch= cannot be combined; use one of them")
    if training and running_mean is not None and momentum is None:
        raise ValueError(
            "momentum=None (cumulative average) needs the number of batches seen: use a bnlab.nn module, "
            "or pass momentum=1/num_batches"
        )
    relu = activation == "relu"
    if x.numel() == 0:
        y = _empty_batch(x, running_mean, running_var, weight, bias, training, eps, axes)
        return torch.relu(y) if relu else y
    eps = float(eps)
    if not training:  # eval: the running statistics normalize every value (Alg. 2); the mask plays no part
        return _dispatch.evaluate(x, running_mean, running_var, weight, bias, axes, eps, relu)
    if not torch.compiler.is_compiling() and _dispatch.route(x) == "eager" and bool(mask.all()):
        # set B is every value: the unmasked path, bit for bit (and its faster kernels)
        return batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps, axes, activation=activation)
    y, mean, var, m_in = _dispatch.train_masked(x, mask, weight, bias, axes, eps, relu)
    if running_mean is not None:  # the unbiased factor m'/(m' − 1) with m' = m_in, per feature
        update_running_stats(running_mean, running_var, mean, var, m_in, momentum)
    return y


def update_running_stats(running_mean, running_var, mean, var, count: int, momentum) -> None:
    """Alg. 2's running averages, in place: ``running ← (1 − momentum)·running + momentum·statistic``.

    ``mean``/``var`` are the batch mean and biased variance of ``count`` values each (an int, or a
    feature-shaped tensor: the m' of a masked set B); the running variance
    takes the unbiased ``count/(count − 1)·var``. Features whose statistics are not finite keep their
    values. The arithmetic is in float32 (float64 for float64 buffers); narrower buffers get the result
    saturated at their largest finite value. ``momentum`` is a float or a 0-dim tensor.
    """
    # detached operands rather than a no_grad block: the buffers (which never require grad) record no
    # graph either way, and a traced no_grad region becomes a higher-order op that a saved training-mode
    # torch.export program cannot load back
    mean, var = mean.detach(), var.detach()
    if _native_update(running_mean, running_var, mean, var, count, momentum):
        return
    unbiased = var * (count / (count - 1))
    if _all_finite_on_host(running_mean, running_var, mean, unbiased):
        # every statistic is finite (the common case, read on the host): the guard below would change nothing
        for running, new in ((running_mean, mean), (running_var, unbiased)):
            running.lerp_(new if new.dtype == running.dtype else new.to(running.dtype), _weight(momentum, running))
        return
    ok = torch.isfinite(mean) & torch.isfinite(unbiased)
    try:
        for running, new in ((running_mean, mean), (running_var, unbiased)):
            if running.dtype in _LOW:
                wide = running.detach().float()
                wide.lerp_(torch.where(ok, new.float(), wide), _weight(momentum, wide))
                big = torch.finfo(running.dtype).max
                running.copy_(wide.clamp_(-big, big))
            else:
                # where a statistic is not finite the "new" value is the old one: the lerp leaves it unchanged
                running.lerp_(torch.where(ok, new.to(running.dtype), running.detach()), _weight(momentum, running))
    except RuntimeError as err:  # the running mean fails first, before anything changed
        if not _compat.functorch_transforms_active():
            raise
        raise ValueError(
            "under vmap, running_mean/running_var that are not vmapped cannot take the statistics of every "
            "vmapped entry: vmap them too (one buffer per entry, in_dims=0; for a module, "
            "torch.func.functional_call with such buffers), or pass running_mean=None and running_var=None "
            "(training with batch statistics only)"
        ) from err


def _native_update(running_mean, running_var, mean, var, count, momentum) -> bool:
    """The update below in one call of the native CPU family (:func:`bnlab.kernels.native.update_running`,
    the same bits) for a plain eager call with an int count and a float momentum; False where it did not run."""
    if type(count) is not int or type(momentum) is not float or torch.compiler.is_compiling():
        return False
    if not mean.is_cpu or _dispatch.route(mean) != "eager":
        return False
    return native.update_running(running_mean, running_var, mean, var, count, momentum)


def _all_finite_on_host(running_mean, running_var, mean, unbiased) -> bool:
    """True where the statistics are known finite from two host reads of their sums (plain eager CPU calls
    with buffers of float32/float64: no host synchronization, no tracer, no narrow buffer to saturate). A
    non-finite value makes its sum inf or NaN; a sum that overflows while every value is finite only sends
    the call to the guarded update, which gives the same result."""
    if torch.compiler.is_compiling():
        return False
    if running_mean.device.type != "cpu" or running_mean.dtype in _LOW or running_var.dtype in _LOW:
        return False
    if type(mean) is not Tensor or _dispatch.route(mean) != "eager":
        return False
    if mean.numel() <= 64:  # C numbers read as Python floats: cheaper than two reductions, and no overflow
        return math.isfinite(sum(mean.reshape(-1).tolist()) + sum(unbiased.reshape(-1).tolist()))
    return math.isfinite(float(mean.sum()) + float(unbiased.sum()))


def _weight(momentum, like: Tensor):
    return momentum.detach().to(like.dtype) if isinstance(momentum, Tensor) else momentum


def _empty_batch(x, running_mean, running_var, weight, bias, training, eps, axes):
    """An input with no values: an empty output connected to γ and β (their gradients are zeros)."""
    if training or running_mean is None:
        fshape = _dispatch.feature_shape(x, axes)
        running_mean = x.new_zeros(fshape, dtype=_dispatch.stat_dtype(x))
        running_var = x.new_ones(fshape, dtype=_dispatch.stat_dtype(x))
    return composed.normalize(x, running_mean, running_var, weight, bias, eps, axes)


# ---------------------------------------------------------------------------------------------------------
# Checks

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


def check_mask(mask, x: Tensor) -> None:
    """``mask=`` of :func:`batch_norm`: a bool tensor on the input's device, broadcastable to the input's shape."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a bool tensor (True: the value belongs to set B), got {mask.dtype}; convert it with "
            f"mask.bool() or build it with a comparison (e.g. lengths[:, None] > torch.arange(L))"
        )
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but the input is on {x.device}; move it with mask.to(x.device)")
    shape, target = tuple(mask.shape), tuple(x.shape)
    fits = len(shape) <= len(target) and all(m in (1, n) for m, n in zip(shape[::-1], target[::-1], strict=False))
    if not fits:
        raise ValueError(
            f"mask of shape {shape} does not broadcast to the input's shape {target}; give it the input's shape, "
            f"or size 1 on the axes it does not vary along (e.g. (N, 1, H, W) for a padded image batch)"
        )


#: configurations :func:`check_tensors` accepted (key: :func:`_config_key`) -> the normalized axes
_ACCEPTED: dict = {}
_ACCEPTED_MAX = 256


def _tensor_key(t):
    return None if t is None else (type(t), t.shape, t.dtype, t.device)


def _config_key(x, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation):
    """Everything :func:`check_tensors` reads, as a hashable key; None where the call cannot be keyed safely
    (a tracer, unusual argument types: those calls are checked in full every time)."""
    if torch.compiler.is_compiling() or not isinstance(x, torch.Tensor):
        return None
    if type(axes) is tuple:
        axes = (axes, tuple(map(type, axes)))  # (0.0,) == (0,) as a key, but check_tensors refuses a float axis
    elif axes is not None:
        return None
    if type(eps) is not float or type(activation) not in (str, type(None)):
        return None
    if isinstance(momentum, torch.Tensor):
        momentum = torch.Tensor  # not checked (any 0-dim tensor): only its kind enters the key
    elif type(momentum) is not float and momentum is not None:
        return None
    return (
        _tensor_key(x), axes, bool(training), eps, momentum, activation,
        _tensor_key(running_mean), _tensor_key(running_var), _tensor_key(weight), _tensor_key(bias),
    )  # fmt: skip


def checked_axes(x, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation=None):
    """:func:`check_tensors`, run once per configuration: the input's and each tensor's type, shape, dtype and
    device, the axes, ``training``, ``eps``, ``momentum`` and ``activation`` form the key of a configuration
    that passed, so a call with a changed input (or a layer whose eps/momentum was reassigned) is checked in
    full again. Under a tracer (symbolic shapes) every call is checked."""
    key = _config_key(x, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation)
    if key is not None:
        found = _ACCEPTED.get(key)
        if found is not None:
            return found
    out = check_tensors(x, axes, training, running_mean, running_var, weight, bias, eps, momentum, activation)
    if key is not None:
        if len(_ACCEPTED) >= _ACCEPTED_MAX:
            _ACCEPTED.clear()
        _ACCEPTED[key] = out
    return out


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
