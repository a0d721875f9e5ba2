"""The doors: how autograd, compilers, exporters and functorch see one batch-norm call.

The forward math itself is not written here: the fast paths are the kernel families behind
:func:`bnlab.kernels.select`, and the differentiable definition is :mod:`bnlab.kernels.composed`. This
module only decides *which door* a call of :func:`bnlab.nn.functional.batch_norm` takes to that math
(:func:`route`), and builds each door:

=============  =====================================================  ==========================================
route          when                                                   training / eval
=============  =====================================================  ==========================================
``eager``      plain eager mode (no tracer, transform, forward AD     :class:`KernelTrainFunction` /
               or tensor subclass)                                    :class:`KernelEvalFunction`: autograd
                                                                      Functions calling the device's kernels
``compiled``   ``torch.compile`` (Dynamo, not export)                 :class:`ComposedTrainFunction` / stock ops:
                                                                      ordinary ops that Inductor fuses
``op``         ``torch.export``, fake tensors, vmap, subclasses       the custom operator
                                                                      ``torch.ops.bnlab.batch_norm_train``
                                                                      (:data:`train_op`) / stock ops
``stock``      forward-mode AD, functorch transforms but vmap         :func:`composed_train` / stock ops:
                                                                      differentiable by any transform
=============  =====================================================  ==========================================

In door ``eager``, a small dense NCHW float32/float64 CPU training call whose statistics torch computes exactly
(float64 accumulators, |μ|/σ ≤ SHIFT_RATIO, checked first) runs torch's own ``batch_norm`` instead of the
Function: its backward is recorded in C++, where an autograd Function's Python costs more than the whole
batch norm (:func:`_torch_small_train`).

Numerical policy, on every door: statistics in float32 or wider (float64 for float64 input), biased σ²_B
to normalize. The ``compiled`` door always normalizes in the shifted form y = (x − μ)·(γ·invstd) + β (x − μ
is exact near μ, and Inductor fuses it into one pass anyway); the others use the kernels' choice. The
host-side check that σ²_B fits its dtype (:func:`check_variance_fits`, CPU only) runs on every door; in a
compiled graph (which cannot raise on data) it is the small opaque operator :data:`checked_invstd_op`
(:data:`checked_variance_op` for a masked set B and under vmap).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd import forward_ad

from .. import _compat, kernels, moments
from ..kernels import composed

__all__ = [
    "route",
    "eager_state",
    "records_grad",
    "train",
    "evaluate",
    "KernelTrainFunction",
    "KernelEvalFunction",
    "ComposedTrainFunction",
    "composed_train",
    "shifted_normalize",
    "train_op",
    "backward_op",
    "VarianceOverflowError",
    "check_variance_fits",
    "checked_variance_op",
    "checked_invstd_op",
    "stat_dtype",
    "feature_shape",
    "train_masked",
    "MaskedTrainFunction",
    "check_masked_count",
    "checked_masked_count_op",
]

_LOW = (torch.float16, torch.bfloat16)


def stat_dtype(x: Tensor) -> torch.dtype:
    """The statistics' dtype for an input: float64 for float64, float32 otherwise (fp16/bf16 included)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def feature_shape(x: Tensor, axes) -> list:
    """The statistics' shape: ``x.shape`` without the reduced axes (sizes may be symbolic under a tracer)."""
    return [n for i, n in enumerate(x.shape) if i not in axes]


def _feature_view(x: Tensor, axes) -> list:
    """The shape that broadcasts a feature-shaped tensor against ``x`` (1 on the reduced axes)."""
    return [1 if i in axes else n for i, n in enumerate(x.shape)]


# ---------------------------------------------------------------------------------------------------------
# Which door


def records_grad(*tensors) -> bool:
    """Whether autograd would record a call on these tensors (grad mode on and one of them requires grad).
    Where it would not, door ``eager`` calls the kernels without an autograd Function: the output is the
    same tensor, and the Function's Python (≈15 µs a call) buys nothing — torch's own C++ ops skip their
    autograd node the same way."""
    if not torch.is_grad_enabled():
        return False
    for t in tensors:
        if t is not None and t.requires_grad:
            return True
    return False


def eager_state() -> bool:
    """No compiler tracing, forward-mode AD, functorch transform, torch-dispatch mode or ``__torch_function__``
    mode is active: the state in which a plain tensor takes door ``eager`` (:func:`route`)."""
    transforms, dispatch_modes, function_modes = _compat.MODE_PROBES
    return not (
        torch.compiler.is_compiling()
        or getattr(forward_ad, "_current_level", -1) >= 0
        or transforms()
        or dispatch_modes()
        or function_modes()
    )


def route(x: Tensor) -> str:
    """Which door a call takes to the one implementation (see the module docstring's table):

    - ``"stock"``: forward-mode AD, or a functorch transform other than vmap (grad, jvp, vjp, jacrev...).
      PyTorch's custom operators support neither (no forward-mode formula; their generated autograd
      refuses functorch), so the math runs as differentiable stock ops (:mod:`bnlab.kernels.composed`);
    - ``"compiled"``: ``torch.compile``'s Dynamo is tracing (and it is not an export). The math is traced as
      ordinary ops, so Inductor fuses it with its neighbours (conv epilogue, ReLU, residual add) and
      dynamic shapes stay symbolic;
    - ``"eager"``: plain eager mode (no compiler, export, fake tensors, functorch transform, forward AD or
      tensor subclass). The registered operator's Python dispatch layers (tens of µs a call) buy nothing
      there, so light autograd Functions call the kernels directly;
    - ``"op"``: everywhere else — ``torch.export``, fake tensors, vmap, subclasses — the registered
      operator, so tracers see one op with its fake implementation and vmap rule.
    """
    if (type(x) is Tensor or type(x) is torch.nn.Parameter) and eager_state():
        return "eager"
    compiling = torch.compiler.is_compiling()
    if not compiling and getattr(forward_ad, "_current_level", -1) >= 0:
        return "stock"
    if _compat.functorch_transforms_active():
        return "op" if _compat.only_vmap_active() else "stock"
    if compiling and torch.compiler.is_dynamo_compiling() and not torch.compiler.is_exporting():
        return "compiled"
    return "op"


def train(x: Tensor, weight, bias, axes: tuple[int, ...], eps: float, relu: bool):
    """Alg. 1 in training mode through the door :func:`route` picks: ``(y, μ_B, σ²_B)``."""
    door = route(x)
    if door == "eager":
        if not records_grad(x, weight, bias):  # nothing to differentiate: no autograd node, as torch's C++
            return kernel_train(x, weight, bias, axes, eps, relu)
        small = _torch_small_train(x, weight, bias, axes, eps, relu)  # (what it saves is an autograd Function)
        if small is not None:
            return small
        return KernelTrainFunction.apply(x, weight, bias, axes, eps, relu)
    if door == "compiled":
        return ComposedTrainFunction.apply(x, weight, bias, axes, eps, relu)
    if door == "stock":
        return composed_train(x, weight, bias, axes, eps, relu)
    return train_op(x, weight, bias, list(axes), eps, relu)


#: Up to this many values a dense NCHW training call may take :func:`_torch_small_train`.
SMALL_NUMEL = 1 << 14
_SMALL_HOST_C = 64  # up to this many channels the checks read the statistics on the host


def _torch_small_train(x: Tensor, weight, bias, axes: tuple[int, ...], eps: float, relu: bool):
    """Door ``eager`` for small tensors: ``(y, μ_B, σ²_B)`` from torch's own CPU batch norm, or None.

    On a small tensor the Python of an autograd Function (forward and backward) costs more than torch's
    whole batch norm; torch's ``batch_norm`` records its backward in C++ — the same closed form, the same
    ``aten.native_batch_norm_backward`` that the cpu family's backward calls. It is taken only where torch's
    statistics meet bnlab's numerical policy: a dense contiguous NCHW float32/float64 CPU input with more than
    one value per row (torch's contiguous CPU path: a two-pass mean and Σ(x − μ)² with float64 accumulators,
    within 1e-7 of float64; rows of one value and channels_last take its float32 path instead), at most
    :data:`SMALL_NUMEL` values, parameters of x's dtype, and every channel with |μ|/σ ≤
    :data:`bnlab.kernels.composed.SHIFT_RATIO` and a finite σ²_B (read before any output is made). Anything
    else — an offset that needs the shifted normalize, a variance that overflows, NaN/inf — returns None and
    the call takes the kernels (:class:`KernelTrainFunction`), which decide as usual.
    """
    if not small_train_shape(x, weight, bias, axes):
        return None
    return torch_small_run(x, weight, bias, eps, relu)


def torch_small_run(x: Tensor, weight, bias, eps: float, relu: bool):
    """:func:`_torch_small_train` for a call known to pass :func:`small_train_shape` (a plan knows it from its key
    and its per-call checks): the part that reads the data."""
    mean, var = torch.batch_norm_update_stats(x.detach(), None, None, 0.0)  # (detached: no autograd record)
    if not _fits_without_shift(mean, var, eps):
        return None
    y = torch.batch_norm(x, weight, bias, None, None, True, 0.0, eps, False)
    return (torch.relu(y) if relu else y), mean, var


def small_train_shape(x: Tensor, weight, bias, axes: tuple[int, ...]) -> bool:
    """The part of :func:`_torch_small_train`'s condition that does not read the data: dense contiguous NCHW
    float32/float64 CPU, more than one value per row, at most :data:`SMALL_NUMEL` values, parameters of x's
    dtype."""
    return not (
        x.dtype not in (torch.float32, torch.float64)
        or x.device.type != "cpu"
        or x.numel() > SMALL_NUMEL
        or x.dim() < 3
        or not x.is_contiguous()
        or x.numel() == x.shape[0] * x.shape[1]  # H·W = 1: torch's float32 (channels_last) statistics
        or axes != tuple(range(0, 1)) + tuple(range(2, x.dim()))
        or (weight is not None and weight.dtype != x.dtype)
        or (bias is not None and bias.dtype != x.dtype)
    )


def _fits_without_shift(mean: Tensor, var: Tensor, eps: float) -> bool:
    """Every σ²_B finite and every |μ|/√(σ²+ε) ≤ SHIFT_RATIO (:func:`bnlab.kernels.composed.needs_shift`)."""
    r2 = composed.SHIFT_RATIO * composed.SHIFT_RATIO
    if mean.numel() <= _SMALL_HOST_C:
        for m, v in zip(mean.tolist(), var.tolist(), strict=True):
            if not (math.isfinite(v) and m * m <= r2 * (v + eps)):
                return False
        return True
    return math.isfinite(float(var.sum())) and not bool(composed.needs_shift(mean, var, eps).any())


def train_masked(x: Tensor, mask: Tensor, weight, bias, axes: tuple[int, ...], eps: float, relu: bool):
    """Alg. 1 over a masked set B: ``(y, μ_B, σ²_B, m')``. One implementation
    (:func:`bnlab.kernels.composed.masked_forward`): doors ``eager`` and ``compiled`` run it in
    :class:`MaskedTrainFunction` (closed-form backward); ``stock`` and ``op`` (functorch transforms, forward
    AD, export, subclasses) run the same stock ops, differentiated by autograd. Refuses (ValueError) a
    feature with fewer than 2 masked-in values."""
    if route(x) in ("eager", "compiled"):
        return MaskedTrainFunction.apply(x, mask, weight, bias, axes, eps, relu)
    y, mean, var, count = composed.masked_forward(x, mask, weight, bias, eps, axes, relu)
    mean, var = mean.detach(), var.detach()
    if _compat.functorch_transforms_active():
        # vmap (a batched mask): a host read of a batched value is data-dependent control flow, so the two
        # checks run as operators, whose vmap rules check every vmapped entry at once
        count = checked_masked_count_op(count)
        if x.device.type == "cpu":
            var = checked_variance_op(mean, var, x.dtype)  # σ²_B of every entry
        return y, mean, var, count
    check_masked_count(count)
    check_variance_fits(x, mean, var)
    return y, mean, var, count


def evaluate(x: Tensor, mean, var, weight, bias, axes: tuple[int, ...], eps: float, relu: bool) -> Tensor:
    """Alg. 2, step 11 (fixed statistics) through the door :func:`route` picks."""
    door = route(x)
    if door == "eager":
        if not records_grad(x, mean, var, weight, bias):  # inference: the kernel alone, no autograd node
            y = kernels.select(x).normalize(x, mean, var, weight, bias, eps, axes)
            return y.clamp_min_(0) if relu else y
        return KernelEvalFunction.apply(x, mean, var, weight, bias, axes, eps, relu)
    if door == "compiled":
        y = shifted_normalize(x, mean, var, weight, bias, eps, axes)
    else:
        # traced or transformed: a fixed per-feature affine map in stock ops, which every backend and
        # exporter (ONNX included) understands
        y = composed.normalize(x, mean, var, weight, bias, eps, axes)
    return torch.relu(y) if relu else y


# ---------------------------------------------------------------------------------------------------------
# The overflow check of σ²_B (host side)


class VarianceOverflowError(ValueError):
    """A finite input whose batch variance σ²_B does not fit the statistics' dtype (see :func:`check_variance_fits`);
    in training this usually means the network diverged."""


def check_variance_fits(x: Tensor, mean: Tensor, var: Tensor) -> None:
    """Refuse a finite input whose σ²_B overflows the statistics' dtype (float32: a std above ~1.8e19):
    1/√(σ²_B + ε) would be 0 and the output a silent β. Checked on the CPU, where reading C numbers costs
    microseconds; elsewhere it would be a host synchronization per call (torch gives zeros there too)."""
    if x.is_cpu:
        _refuse_overflow(mean, var, x.dtype)


def _refuse_overflow(mean: Tensor, var: Tensor, input_dtype: torch.dtype) -> None:
    # the common case, every σ²_B finite: up to _SMALL_HOST_C numbers read as Python floats (their float64 sum
    # cannot overflow), else one reduction; a sum that overflows goes on to the exact check below
    if type(var) is Tensor and var.dim() == 1 and var.shape[0] <= _SMALL_HOST_C:
        if math.isfinite(sum(var.tolist())):
            return
    elif math.isfinite(float(var.sum())):
        return
    if bool((torch.isinf(var) & torch.isfinite(mean)).any()):
        raise VarianceOverflowError(
            f"the batch variance overflows {var.dtype} (largest {torch.finfo(var.dtype).max:.3g}, a standard "
            f"deviation above ~{torch.finfo(var.dtype).max ** 0.5:.2g}): the {input_dtype} input cannot be "
            f"normalized in this precision; divide it by a constant first (x̂ does not change, up to ε) or use "
            f"float64 (x.double() and layer.double())"
        )


@torch.library.custom_op("bnlab::checked_variance", mutates_args=())
def checked_variance_op(mean: Tensor, var: Tensor, input_dtype: torch.dtype) -> Tensor:
    """σ²_B again, after :func:`check_variance_fits`'s host check (a copy: an operator's output may not alias
    its input). The ``compiled`` door's graph calls it on the CPU: a traced graph cannot raise on data, an
    opaque operator can, and it costs one read of C numbers."""
    _refuse_overflow(mean, var, input_dtype)
    return var.clone()


@checked_variance_op.register_fake
def _(mean, var, input_dtype):
    return torch.empty_like(var)


def _checked_invstd(mean: Tensor, var: Tensor, eps: float, input_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(σ²_B, 1/√(σ²_B + ε))`` after :func:`check_variance_fits`'s host check (σ²_B a copy: an operator's output
    may not alias its input). The ``compiled`` door's graph calls it on the CPU as :data:`checked_invstd_op`,
    between the statistics and everything that uses them, so the graph raises before the output or any state
    is made.

    It also hands Inductor 1/√(σ²_B + ε) as a stored per-feature tensor: computed in the graph instead, the
    reciprocal square root is inlined into the elementwise passes over x (forward) and dx (backward) and
    evaluated at every value, and AOTAutograd's partitioner recomputes it in the backward from σ²_B rather
    than saving it; an operator's output is neither inlined nor recomputed.
    """
    _refuse_overflow(mean, var, input_dtype)
    return var.clone(), torch.rsqrt(var + eps)


# Registered with torch.library's low-level API, a CPU kernel and a fake: called once per layer and step, a
# call costs 14-23 µs where torch.library.custom_op's autograd and dispatch wrappers made it 26-42 µs (same
# runs, loaded machine; 9 layers of benchmarks/compiled.py: 0.1-0.17 ms a step). Its inputs never require
# grad (they are statistics), so it needs no autograd formula.
_LIB = torch.library.Library("bnlab", "FRAGMENT")
_LIB.define("checked_invstd(Tensor mean, Tensor var, float eps, ScalarType input_dtype) -> (Tensor, Tensor)")
_LIB.impl("checked_invstd", _checked_invstd, "CPU")
torch.library.register_fake(
    "bnlab::checked_invstd",
    lambda mean, var, eps, input_dtype: (torch.empty_like(var), torch.empty_like(var)),
    lib=_LIB,
)
#: the opaque check of σ²_B that returns ``(σ²_B, 1/√(σ²_B + ε))``: :func:`_checked_invstd`
checked_invstd_op = torch.ops.bnlab.checked_invstd.default


def check_masked_count(count: Tensor) -> None:
    """Refuse a masked set B with fewer than 2 values in some feature (m' = 0: no statistics; m' = 1: σ²_B = 0
    and no unbiased variance), before any state changes. Host side: one read of C numbers."""
    low = count < 2
    if bool(low.any()):
        empty, single = int((count == 0).sum()), int((count == 1).sum())
        raise ValueError(
            f"the mask leaves {empty + single} of {count.numel()} features with fewer than 2 values in set B "
            f"({empty} with none, {single} with one); training needs at least 2 masked-in values per feature: "
            f"mask in more values (e.g. drop fully padded samples or positions from the batch), "
            f"or normalize with the running statistics (layer.eval())"
        )


@torch.library.custom_op("bnlab::checked_masked_count", mutates_args=())
def checked_masked_count_op(count: Tensor) -> Tensor:
    """m' again, after :func:`check_masked_count` (a copy: an operator's output may not alias its input): the
    ``compiled`` door's graph cannot raise on data, an opaque operator can."""
    check_masked_count(count)
    return count.clone()


@checked_masked_count_op.register_fake
def _(count):
    return torch.empty_like(count)


# ---------------------------------------------------------------------------------------------------------
# Door "eager": autograd Functions that call the device's kernels (bnlab.kernels.select)


# Both run where autograd records nothing, so they need no ``torch.no_grad()`` block (≈4 µs a call): inside an
# autograd Function's forward (grad mode off), in a backward taken without create_graph, in the custom
# operator's implementation (below the autograd dispatch key), or where no tensor requires grad (:func:`train`).


def kernel_train(x, weight, bias, axes: tuple[int, ...], eps: float, relu: bool):
    k = kernels.select(x)
    if relu:
        out = k.forward(x, weight, bias, eps, axes, relu=True)
    else:
        out = k.forward(x, weight, bias, eps, axes)
    check_variance_fits(x, out[1], out[2])
    return out


def _kernel_backward(dy, x, mean, var, weight, y, axes: tuple[int, ...], eps: float, needs: tuple[bool, ...]):
    k = kernels.select(x)
    if y is not None:
        return k.backward(dy, x, mean, var, weight, eps, axes, needs, y=y)
    return k.backward(dy, x, mean, var, weight, eps, axes, needs)


def train_setup(ctx, inputs, output):
    x, weight, bias, axes, eps, relu = inputs
    y, mean, var = output
    ctx.save_for_backward(x, weight, mean, var, y if relu else None)
    ctx.axes, ctx.eps, ctx.relu = tuple(axes), eps, relu
    ctx.dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
    ctx.mark_non_differentiable(mean, var)


def train_backward(ctx, dy, _dmean, _dvar):
    """The backward of the kernel door and of the custom operator (closed form, Alg. 1)."""
    x, weight, mean, var, y = ctx.saved_tensors
    needs = [bool(n) for n in ctx.needs_input_grad[:3]]
    if torch.is_grad_enabled():
        # create_graph=True: rebuild μ_B and σ²_B from x with differentiable ops, so the closed-form
        # backward below is itself differentiated correctly (double backward).
        if y is not None:
            dy = dy * (y > 0)
        mean, var = composed.batch_stats(x, ctx.axes)
        dx, dw, db = composed.backward(dy, x, mean, var, weight, ctx.eps, ctx.axes, needs)
    elif route(x) == "eager":
        dx, dw, db = _kernel_backward(dy, x, mean, var, weight, y, ctx.axes, ctx.eps, tuple(needs))
    else:
        dx, dw, db = backward_op(dy, x, mean, var, weight, y, list(ctx.axes), ctx.eps, needs)
    dx = dx if needs[0] else None
    dw = _as(dw, ctx.dtypes[0]) if (needs[1] and weight is not None) else None
    db = _as(db, ctx.dtypes[1] or dy.dtype) if needs[2] else None
    return dx, dw, db, None, None, None


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, without the call where the dtype is already right (the common case, ~1 µs a call)."""
    return t if t.dtype == dtype else t.to(dtype)


class KernelTrainFunction(torch.autograd.Function):
    """Door ``eager``, training: the device's kernel forward, the closed-form backward."""

    # forward(ctx, ...) rather than a separate setup_context: apply() then skips binding the signature,
    # which costs more than the rest of the call on small tensors

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps, relu):
        out = kernel_train(x, weight, bias, axes, eps, relu)
        train_setup(ctx, (x, weight, bias, axes, eps, relu), out)
        return out

    backward = staticmethod(train_backward)


class KernelEvalFunction(torch.autograd.Function):
    """Door ``eager``, eval: the device's kernel forward, the closed-form backward of a fixed affine map."""

    @staticmethod
    def forward(ctx, x, mean, var, weight, bias, axes, eps, relu):
        with torch.no_grad():
            y = kernels.select(x).normalize(x, mean, var, weight, bias, eps, axes)
            y = y.clamp_min_(0) if relu else y
        ctx.save_for_backward(x, mean, var, weight, y if relu else None)
        ctx.axes, ctx.eps, ctx.has_bias = tuple(axes), eps, bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        # y = a·x + b with a = γ/√(Var+ε): dx = a·dy, dγ = Σ dy·x̂, dβ = Σ dy. Stock ops, hence differentiable.
        x, mean, var, weight, y = ctx.saved_tensors
        dy = composed.relu_mask(dy, y)
        axes, view = ctx.axes, _feature_view(x, ctx.axes)
        invstd = torch.rsqrt(var.to(stat_dtype(x)) + ctx.eps)
        dys = dy.to(invstd.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            a = invstd if weight is None else weight.to(invstd.dtype) * invstd
            dx = (dys * a.reshape(view)).to(x.dtype)
        if weight is not None and ctx.needs_input_grad[3]:
            xhat = (x.to(invstd.dtype) - mean.to(invstd.dtype).reshape(view)) * invstd.reshape(view)
            dw = (dys * xhat).sum(dim=axes).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            db = dys.sum(dim=axes).to(ctx.bias_dtype)
        return dx, None, None, dw, db, None, None, None


# ---------------------------------------------------------------------------------------------------------
# Door "compiled": the differentiable definition as ordinary ops, closed-form backward


shifted_normalize = composed.shifted_normalize  # the compiled door's normalize (one home: composed)


class ComposedTrainFunction(torch.autograd.Function):
    """Door ``compiled``, training: the statistics, the shifted normalize, and
    :func:`bnlab.kernels.composed.backward` (the closed form) as its backward — stock ops, so Dynamo traces
    both directions and Inductor fuses them with their neighbours.

    On the CPU the statistics are :func:`bnlab.moments.shifted_batch_stats` (two shifted sums in float64: one
    pass whose additions do not wait on each other, closer to the exact statistics than ``var_mean``'s float32
    Welford update) and 1/√(σ²_B + ε) comes from :data:`checked_invstd_op` (the overflow check, and a stored
    per-feature tensor that the elementwise passes read instead of evaluating a square root at every value);
    elsewhere :func:`bnlab.kernels.composed.batch_stats` (``var_mean``) and an inline reciprocal square root."""

    @staticmethod
    def forward(ctx, x, weight, bias, axes, eps, relu):
        if x.device.type == "cpu":
            mean, var = moments.shifted_batch_stats(x, axes)
            var, invstd = checked_invstd_op(mean, var, eps, x.dtype)
        else:
            mean, var = composed.batch_stats(x, axes)
            invstd = torch.rsqrt(var + eps)
        y = shifted_normalize(x, mean, var, weight, bias, eps, axes, invstd=invstd)
        if relu:
            y = torch.relu(y)
        ctx.save_for_backward(x, weight, mean, invstd, y if relu else None)
        ctx.axes, ctx.eps = tuple(axes), eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, mean, invstd, y = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        dx, dw, db = composed.invstd_backward(dy, x, mean, invstd, weight, ctx.axes, needs, y=y)
        if dw is not None:
            dw = dw.to(weight.dtype)
        if db is not None:
            db = db.to(ctx.bias_dtype)
        return dx, dw, db, None, None, None


class MaskedTrainFunction(torch.autograd.Function):
    """Doors ``eager`` and ``compiled``, training over a masked set B: :func:`bnlab.kernels.composed.masked_forward`
    with :func:`bnlab.kernels.composed.masked_backward` (the closed form) as its backward; stock ops, so Dynamo
    traces both directions."""

    @staticmethod
    def forward(ctx, x, mask, weight, bias, axes, eps, relu):
        y, mean, var, count = composed.masked_forward(x, mask, weight, bias, eps, axes, relu)
        if torch.compiler.is_compiling():
            count = checked_masked_count_op(count)
            if x.device.type == "cpu":
                var = checked_variance_op(mean, var, x.dtype)  # the host check of σ²_B, as an opaque op
        else:
            check_masked_count(count)
            check_variance_fits(x, mean, var)
        ctx.save_for_backward(x, mask, weight, mean, var, count, y if relu else None)
        ctx.axes, ctx.eps = tuple(axes), eps
        ctx.dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dcount):
        x, mask, weight, mean, var, count, y = ctx.saved_tensors
        needs = [bool(n) for n in (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:4])]
        if torch.is_grad_enabled():
            # create_graph=True: μ_B and σ²_B rebuilt from x with differentiable ops, so that the closed
            # form below is itself differentiated correctly (double backward)
            mean, var, count = composed.masked_batch_stats(x, mask, ctx.axes)
        dx, dw, db = composed.masked_backward(dy, x, mask, mean, var, count, weight, ctx.eps, ctx.axes, needs, y=y)
        dw = dw.to(ctx.dtypes[0]) if dw is not None else None
        db = db.to(ctx.dtypes[1] or dy.dtype) if db is not None else None
        return dx, None, dw, db, None, None, None


# ---------------------------------------------------------------------------------------------------------
# Door "stock": differentiable stock ops (forward-mode AD, functorch transforms)


def composed_train(x, weight, bias, axes, eps, relu):
    """Training forward in differentiable stock ops: autograd differentiates it in any mode or transform."""
    y, mean, var = composed.forward(x, weight, bias, eps, axes)
    mean, var = mean.detach(), var.detach()
    check_variance_fits(x, mean, var)
    return (torch.relu(y) if relu else y), mean, var


# ---------------------------------------------------------------------------------------------------------
# Door "op": the custom operator (export, fake tensors, vmap, subclasses). Schema types: axes as int[],
# optional γ/β; outputs are fresh tensors (no aliasing).


@torch.library.custom_op("bnlab::batch_norm_train", mutates_args=())
def train_op(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, axes: list[int], eps: float, relu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Alg. 1 in training mode: (y, μ_B, σ²_B); y = max(BN(x), 0) when ``relu``."""
    return kernel_train(x, weight, bias, tuple(axes), eps, relu)


@train_op.register_fake
def _(x, weight, bias, axes, eps, relu):
    stats = feature_shape(x, axes)
    return torch.empty_like(x), x.new_empty(stats, dtype=stat_dtype(x)), x.new_empty(stats, dtype=stat_dtype(x))


@torch.library.custom_op("bnlab::batch_norm_backward", mutates_args=())
def backward_op(
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
    grads = _kernel_backward(dy, x, mean, var, weight, y, tuple(axes), eps, tuple(needs))
    return tuple(x.new_empty(0) if g is None else g for g in grads)


@backward_op.register_fake
def _(dy, x, mean, var, weight, y, axes, eps, needs):
    stats = feature_shape(x, axes)
    dx = torch.empty_like(x) if needs[0] else x.new_empty(0)
    dw = x.new_empty(stats, dtype=stat_dtype(x)) if (needs[1] and weight is not None) else x.new_empty(0)
    db = x.new_empty(stats, dtype=stat_dtype(x)) if needs[2] else x.new_empty(0)
    return dx, dw, db


train_op.register_autograd(train_backward, setup_context=train_setup)


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
    out = train_op(
        _front(x, in_dims[0], n), _front(weight, in_dims[1], n), _front(bias, in_dims[2], n), _shift(axes), eps, relu
    )
    return out, (0, 0, 0)


def _backward_vmap(info, in_dims, dy, x, mean, var, weight, y, axes, eps, needs):
    n = info.batch_size
    args = [_front(t, d, n) for t, d in zip((dy, x, mean, var, weight, y), in_dims[:6], strict=True)]
    dx, dw, db = backward_op(*args, _shift(axes), eps, needs)
    dims = tuple(0 if g.numel() or g.dim() > 1 else None for g in (dx, dw, db))
    return (dx, dw, db), dims


def _count_vmap(info, in_dims, count):
    return checked_masked_count_op(_front(count, in_dims[0], info.batch_size)), 0


def _variance_vmap(info, in_dims, mean, var, input_dtype):
    n = info.batch_size
    return checked_variance_op(_front(mean, in_dims[0], n), _front(var, in_dims[1], n), input_dtype), 0


if hasattr(train_op, "register_vmap"):  # torch >= 2.5
    train_op.register_vmap(_train_vmap)
    backward_op.register_vmap(_backward_vmap)
    checked_masked_count_op.register_vmap(_count_vmap)
    checked_variance_op.register_vmap(_variance_vmap)
