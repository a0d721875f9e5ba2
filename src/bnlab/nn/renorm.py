"""Batch Renormalization (Ioffe 2017, arXiv 1702.03275): BN's set B, corrected toward the population.

With a small set B, μ_B and σ_B are noisy, and the network learns to rely on that noise; at inference the
running statistics replace them and the outputs change. Batch Renorm keeps BN's set B but normalizes as
inference will, up to a clipped correction. Its Algorithm 1, for every feature::

    μ_B = 1/m Σ x_i ,   σ_B = √(σ²_B + ε)                   (set B as in BN: per channel or per activation)
    μ   = running_mean ,  σ = √(running_var + ε)            (as they were *before* this step's update)
    r   = clip(σ_B/σ, 1/rmax, rmax) ,  d = clip((μ_B − μ)/σ, −dmax, dmax)      (constants for autograd)
    y   = γ·((x − μ_B)/σ_B · r + d) + β

When r and d are not clipped, y = γ·(x − μ)/σ + β: training normalizes with the running statistics, as
eval mode does, yet the gradient still flows through μ_B and σ_B (r and d are not differentiated), so the
layer keeps BN's conditioning. rmax = 1, dmax = 0 is BN exactly.

>>> import torch
>>> brn = BatchRenorm2d(8, warmup_steps=2)
>>> bn = torch.nn.BatchNorm2d(8)
>>> x = torch.randn(4, 8, 5, 5) * 3 + 1
>>> torch.allclose(brn(x), bn(x), atol=1e-5)          # warm-up: r = 1, d = 0, it is BN
True
>>> _ = brn(x); brn.limits()                           # from step 2 on: rmax, dmax
(3.0, 5.0)
>>> bn.load_state_dict(brn.state_dict())               # the same buffers as BN
<All keys matched successfully>

**Running statistics** are BN's, updated exactly as :class:`bnlab.nn.BatchNorm2d` updates them
(``momentum``, ``None`` = cumulative average, the unbiased m'/(m'−1)·σ²_B in ``running_var``). The paper
instead averages σ itself (σ ← σ + α(σ_B − σ)). bnlab keeps BN's buffers because (1) a BN ``state_dict``
then loads into a Batch Renorm layer and back, torch's included; (2) every tool that reads BN layers —
eval mode (Alg. 2), :func:`bnlab.fold`, :func:`bnlab.freeze`, :func:`bnlab.export_onnx` — reads
``running_var``, and :func:`bnlab.recalibrate` computes Alg. 2's population variance, not an average σ;
(3) averaging σ estimates E[σ_B], which by Jensen's inequality is below √E[σ²_B], a bias that grows as m'
shrinks — the very regime Batch Renorm is for. σ is √(running_var + ε) here.

**Warm-up and schedules.** For the first ``warmup_steps`` training steps (counted by
``num_batches_tracked``: the steps 0 … warmup_steps − 1) r = 1 and d = 0, so the layer is BN while the
running statistics settle. ``rmax``/``dmax`` are numbers or callables of the step (the value of
``num_batches_tracked`` before the step); :func:`paper_relaxation` gives the paper's (rmax 1 → 3 and
dmax 0 → 5, linear over given step ranges)::

    BatchRenorm2d(64, **paper_relaxation(rmax_steps=(5000, 40000), dmax_steps=(5000, 25000)))

**Modes.** Eval mode (and a frozen layer, see :func:`bnlab.freeze`) is BN's eval: Alg. 2's fixed map with
the running statistics. Without running statistics to correct toward (``track_running_stats=False``, as
during :func:`bnlab.recalibrate`'s pass) training mode is BN's. The layers subclass bnlab's (and torch's)
``BatchNorm1d/2d/3d``, so fold, freeze, recalibrate and ONNX export treat them as BN layers;
:func:`bnlab.convert` leaves them as they are (torch has no Batch Renorm), and :func:`bnlab.convert_sync`
makes them :class:`bnlab.nn.SyncBatchRenorm` (r and d from the statistics merged over every rank's shard;
torch's ``convert_sync_batchnorm`` is refused: its plain SyncBN would silently drop r and d).

The math runs through :func:`bnlab.nn.functional.batch_norm` with the per-feature affine map
(γ·r, β + γ·d): its kernels, closed-form backward, layouts (channels_last included) and dtype policy
(float16/bfloat16 input, statistics in float32). r and d cost one more statistics pass (the device's
kernel, as BN's own).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .. import _compat, kernels
from .functional import batch_norm, check_tensors
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase

__all__ = [
    "batch_renorm",
    "renorm_factors",
    "renorm_affine",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "BatchRenorm3d",
    "LinearSchedule",
    "paper_relaxation",
    "check_rmax",
    "check_dmax",
]

Limit = float | Callable[[int], float]


def check_rmax(rmax, step: int | None = None) -> float:
    """rmax: a finite number ≥ 1 (r is clipped to [1/rmax, rmax]; 1 means r = 1, i.e. BN)."""
    v = _number(rmax, "rmax", step)
    if not v >= 1:
        raise ValueError(
            f"rmax must be ≥ 1 (r is clipped to [1/rmax, rmax]; rmax = 1 keeps r = 1, as BN), got {v}"
            + _at(step)
            + "; use rmax=1 for no scale correction"
        )
    return v


def check_dmax(dmax, step: int | None = None) -> float:
    """dmax: a finite number ≥ 0 (d is clipped to [−dmax, dmax]; 0 means d = 0, i.e. BN)."""
    v = _number(dmax, "dmax", step)
    if not v >= 0:
        raise ValueError(
            f"dmax must be ≥ 0 (d is clipped to [−dmax, dmax]; dmax = 0 keeps d = 0, as BN), got {v}"
            + _at(step)
            + "; use dmax=0 for no shift correction"
        )
    return v


def _at(step: int | None) -> str:
    return "" if step is None else f" from its schedule at step {step}"


def _number(v, name: str, step: int | None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(
            f"{name} must be a finite number (or a schedule: a callable of the step), got {v!r}{_at(step)}"
        )
    return float(v)


def _check_limit(v, check) -> Limit:
    return v if callable(v) else check(v)


def check_warmup_steps(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(
            f"warmup_steps must be an int ≥ 0 (the number of first training steps with r = 1, d = 0), got {n!r}"
        )
    return n


class LinearSchedule:
    """``start`` up to step ``first``, then linear to ``end`` at step ``last``, then ``end`` (picklable).

    >>> s = LinearSchedule(1.0, 3.0, first=10, last=30)
    >>> s(0), s(10), s(20), s(30), s(99)
    (1.0, 1.0, 2.0, 3.0, 3.0)
    """

    def __init__(self, start: float, end: float, first: int, last: int) -> None:
        if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last):
            raise ValueError(f"need steps 0 ≤ first ≤ last (ints), got first={first!r}, last={last!r}")
        self.start, self.end = _number(start, "start", None), _number(end, "end", None)
        self.first, self.last = first, last

    def __call__(self, step: int) -> float:
        if step <= self.first:
            return self.start
        if step >= self.last:
            return self.end
        return self.start + (self.end - self.start) * (step - self.first) / (self.last - self.first)

    def __repr__(self) -> str:
        return f"LinearSchedule({self.start}, {self.end}, first={self.first}, last={self.last})"


def paper_relaxation(
    rmax_steps: tuple[int, int] = (5000, 40000),
    dmax_steps: tuple[int, int] = (5000, 25000),
    rmax: float = 3.0,
    dmax: float = 5.0,
) -> dict[str, LinearSchedule]:
    """The paper's relaxation (§4.1): rmax = 1, dmax = 0 (BN) until the first step of each range, then
    linear up to ``rmax``/``dmax`` at its last step. Returns ``{"rmax": ..., "dmax": ...}`` to pass as
    keyword arguments; the defaults are the paper's ImageNet steps (scale them to your run).

    >>> s = paper_relaxation((10, 40), (10, 20))
    >>> s["rmax"](25), s["dmax"](15), s["dmax"](30)
    (2.0, 2.5, 5.0)
    """
    check_rmax(rmax)
    check_dmax(dmax)
    return {"rmax": LinearSchedule(1.0, rmax, *rmax_steps), "dmax": LinearSchedule(0.0, dmax, *dmax_steps)}


def batch_renorm(
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
    rmax: float = 3.0,
    dmax: float = 5.0,
) -> Tensor:
    """Batch Renorm (see the module docstring): :func:`bnlab.nn.functional.batch_norm`'s arguments plus
    ``rmax``/``dmax`` (numbers here; the modules resolve schedules and warm-up).

    In training, r and d are computed from the batch statistics and the running statistics as they are
    on entry, then the running statistics are updated in place as BN's. ``training=False`` is BN's eval.

    >>> x = torch.randn(16, 3) * 2 + 5
    >>> rm, rv = torch.zeros(3), torch.ones(3)
    >>> y = batch_renorm(x, rm, rv, training=True, rmax=1e9, dmax=1e9)   # nothing clipped:
    >>> torch.allclose(y, (x - 0) / (1 + 1e-5) ** 0.5, atol=1e-5)      # normalized by μ, σ on entry
    True
    """
    rmax, dmax = check_rmax(rmax), check_dmax(dmax)
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps, axes)
    if running_mean is None or running_var is None:
        raise ValueError(
            "batch renormalization corrects the batch statistics toward the running statistics: pass "
            "running_mean and running_var (or use batch_norm for plain batch statistics)"
        )
    axes = check_tensors(input, axes, True, running_mean, running_var, weight, bias, eps, momentum)
    if input.numel() == 0 or (rmax == 1 and dmax == 0):  # no values, or r = 1 and d = 0: batch norm
        return batch_norm(input, running_mean, running_var, weight, bias, True, momentum, eps, axes)
    eps = float(eps)
    with torch.no_grad():  # r and d are constants for autograd (stop_gradient in the paper)
        mean_B, var_B = _batch_stats(input, axes)  # float32, float64 for float64 x
        r, d = renorm_factors(mean_B, var_B, running_mean, running_var, eps, rmax, dmax)
    scale, shift = renorm_affine(weight, bias, r, d)
    return batch_norm(input, running_mean, running_var, scale, shift, True, momentum, eps, axes)


def renorm_factors(
    mean_B: Tensor, var_B: Tensor, running_mean: Tensor, running_var: Tensor, eps: float, rmax: float, dmax: float
) -> tuple[Tensor, Tensor]:
    """Alg. 1's r and d per feature, from given batch statistics μ_B, σ²_B (biased: one process's, or merged
    over every rank's shard by :class:`bnlab.nn.SyncBatchRenorm`) and the running statistics *as they are
    before this step's update* — the one home of the formula::

        r = clip(σ_B/σ, 1/rmax, rmax) ,  d = clip((μ_B − μ)/σ, −dmax, dmax)
        σ_B = √(σ²_B + ε) ,  σ = √(running_var + ε)

    Call it under ``torch.no_grad()`` (as both callers do): r and d are constants for autograd. In the
    dtype of the statistics given (float32, float64 for float64 input).
    """
    sigma_B = torch.sqrt(var_B + eps)
    sigma = torch.sqrt(running_var.to(var_B.dtype) + eps)  # running statistics before the update
    r = (sigma_B / sigma).clamp_(1 / rmax, rmax)
    d = ((mean_B - running_mean.to(mean_B.dtype)) / sigma).clamp_(-dmax, dmax)
    return r, d


def renorm_affine(weight: Tensor | None, bias: Tensor | None, r: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """BN's per-feature affine map (γ·r, β + γ·d) that makes BN of x̂ Batch Renorm (call it with autograd on:
    dγ = r·Σdy·x̂ + d·Σdy and dβ = Σdy flow through it)."""
    # γ·((x − μ_B)/σ_B · r + d) + β = (γ·r)·x̂ + (β + γ·d): batch norm with that affine map
    scale = r if weight is None else weight * r
    shift = d if weight is None else weight * d
    if bias is not None:
        shift = bias + shift
    return scale, shift


def _batch_stats(x: Tensor, axes: tuple[int, ...]):
    """μ_B, σ²_B by the device's kernels (as the BN op computes them); by stock ops when traced/transformed."""
    plain = type(x) is Tensor and not torch.compiler.is_compiling() and not _compat.functorch_transforms_active()
    return (kernels.select(x) if plain else kernels.composed).batch_stats(x, axes)


class BatchRenormBase(BatchNormBase):
    """Shared state and forward of BatchRenorm1d/2d/3d (the BN layer's state, plus rmax, dmax, warm-up)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        *,
        rmax: Limit = 3.0,
        dmax: Limit = 5.0,
        warmup_steps: int = 0,
        per: str = "channel",
        spatial_size: tuple[int, ...] | int | None = None,
        track_running_stats: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        rmax, dmax = _check_limit(rmax, check_rmax), _check_limit(dmax, check_dmax)
        warmup_steps = check_warmup_steps(warmup_steps)
        # by keyword, and the rest passed on: the next class may be SyncBatchNorm (process_group=, timeout=)
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats=track_running_stats, device=device,
            dtype=dtype, bias=bias, per=per, spatial_size=spatial_size, **kwargs,
        )  # fmt: skip
        self.rmax, self.dmax, self.warmup_steps = rmax, dmax, warmup_steps

    def limits(self, step: int | None = None) -> tuple[float, float]:
        """(rmax, dmax) in effect at training ``step`` (default: the next one, ``num_batches_tracked``);
        (1.0, 0.0) during warm-up."""
        if step is None and (self.warmup_steps or callable(self.rmax) or callable(self.dmax)):
            step = int(self.num_batches_tracked) if self.num_batches_tracked is not None else 0
        if step is not None and step < self.warmup_steps:
            return 1.0, 0.0
        rmax = check_rmax(self.rmax(step), step) if callable(self.rmax) else self.rmax
        dmax = check_dmax(self.dmax(step), step) if callable(self.dmax) else self.dmax
        return rmax, dmax

    def forward(self, input: Tensor) -> Tensor:
        use_batch, update, momentum = self._mode()
        if not update:  # eval, frozen, or no running statistics to correct toward: batch norm
            return super().forward(input)
        if self._is_lazy():
            self._materialize_from(input)
        self._check_input_dim(input)
        rmax, dmax = self.limits()
        axes = (0,) if self.per == "activation" else None  # None: every axis but 1
        eps = self.__dict__["eps"]  # not the property, whose check of the caller is for torch's tools
        y = batch_renorm(
            input, self.running_mean, self.running_var, self.weight, self.bias, True, momentum, eps, axes,
            rmax=rmax, dmax=dmax,
        )  # fmt: skip
        self.num_batches_tracked.add_(1)  # only after the checks in batch_norm passed
        return y

    def _lost_by(self, kind: str) -> list[tuple[str, str]]:
        lost = super()._lost_by(kind)
        if kind == "sync":  # torch's SyncBatchNorm is plain BN: r and d would be gone (eval is BN's: fusing is fine)
            lost.append((
                "Batch Renorm's correction (r, d) toward the running statistics",
                "convert with bnlab.convert_sync(model), whose SyncBatchRenorm keeps it (r and d from the statistics "
                "of every rank's shard)",
            ))  # fmt: skip
        return lost

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", rmax={self.rmax}, dmax={self.dmax}"
        return s + (f", warmup_steps={self.warmup_steps}" if self.warmup_steps else "")


class BatchRenorm1d(BatchRenormBase, BatchNorm1d):
    """Batch Renorm for input (N, C) or (N, C, L); a ``bnlab.nn.BatchNorm1d`` (and torch's) by class."""


class BatchRenorm2d(BatchRenormBase, BatchNorm2d):
    """Batch Renorm for input (N, C, H, W), contiguous or channels_last; a ``bnlab.nn.BatchNorm2d``."""


class BatchRenorm3d(BatchRenormBase, BatchNorm3d):
    """Batch Renorm for input (N, C, D, H, W); a ``bnlab.nn.BatchNorm3d`` (and torch's) by class."""


#: The old private name of :class:`BatchRenormBase`, kept for old importers.
_BatchRenorm = BatchRenormBase
