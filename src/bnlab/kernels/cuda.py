"""CUDA parity path: torch's own fused batch-norm kernels where they compute what bnlab computes.

The contract of :mod:`.contract` (chain: triton → cuda → composed). :func:`covers`: per-channel BN in
torch's convention (reduce axes = every axis but 1, ≥ 3 dims) on a dense NCHW / channels_last CUDA input
in float32, fp16 or bf16, with parameters and statistics in the input's dtype or float32 (the combinations
torch's kernels accept). Everything else — per-activation and other axes,
float64, strided views, a call that autograd records, the global sums of synchronized BN — is not covered
(the chain walk goes on to :mod:`.composed`), and the double backward always uses :mod:`.composed`.

Why these kernels keep bnlab's numerical policy (read in ATen's ``Normalization.cuh``, torch 2.x):

- training statistics: ``native_batch_norm`` reduces each channel with Welford's algorithm in float32
  (``accscalar_t``; ``var_mean`` or the per-channel Welford kernels, merging partial moments with
  Chan's formula) — the stable method of :mod:`bnlab.moments`, not E[x²] − E[x]²; it returns μ_B and
  1/√(σ²_B + ε), from which
  σ²_B = invstd⁻² − ε (float32: absolute error ~1e-7·(σ²_B + ε), clamped at 0);
- normalize: ``(x − μ)·invstd·γ + β`` in float32 — the shifted form, so the output is as accurate as
  the statistics for any |μ|/σ (issue 7, item 3) — with fp16/bf16 statistics converted to float32
  first (the coefficients in float32);
- backward: ``native_batch_norm_backward`` computes Σdy and Σdy·(x − μ) (centred) in float32 and the
  same closed form as :func:`.composed.backward`.

Nothing here synchronizes with the host. Step 1 of issue 9; measured on a GPU: see docs/performance.md.
"""

from __future__ import annotations

import torch

from . import composed, contract

__all__ = ["NAME", "covers", "batch_stats", "normalize", "forward", "backward", "covered"]

NAME = "cuda"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def covered(x: torch.Tensor, axes: tuple[int, ...], *params) -> bool:
    """True where torch's fused CUDA kernels compute exactly bnlab's transform (see the module docstring)."""
    if x.device.type != "cuda" or x.dtype not in _DTYPES or x.dim() < 3 or x.numel() == 0:
        return False
    if not contract.is_channel_axes(x, axes) or contract.dense_format(x) is None:
        return False
    ok = (x.dtype, torch.float32)
    return all(p is None or (p.dtype in ok and p.device == x.device and not p.requires_grad) for p in params)


def _recorded(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def covers(x: torch.Tensor, axes: tuple[int, ...], *tensors, op: str) -> bool:
    """:func:`covered`, with what each of torch's kernels takes (:class:`.contract.KernelFamily`)."""
    if op == "batch_stats":
        return covered(x, axes)
    if op == "forward":
        return covered(x, axes, *tensors) and not _recorded(x, *tensors)
    if op == "normalize":
        mean, var, weight, bias = tensors
        same = mean.dtype == var.dtype and all(p is None or p.dtype == mean.dtype for p in (weight, bias))
        return same and covered(x, axes, *tensors) and not _recorded(x, *tensors)
    dy, mean, var, weight, y, *sums = tensors  # backward
    stats_ok = mean.dtype == var.dtype == torch.float32
    return not sums and stats_ok and covered(x, axes, weight) and not _recorded(x, weight, mean, var, dy)


def _var_from_invstd(invstd: torch.Tensor, eps: float) -> torch.Tensor:
    return (invstd.reciprocal().square_() - eps).clamp_(min=0)


def _batch_stats(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mini-batch mean and biased variance over ``axes``: :func:`bnlab.moments.batch_stats` (on CUDA one
    ``var_mean`` kernel, Welford, in float32)."""
    return composed.batch_stats(x, axes)


def _normalize(x, mean, var, weight, bias, eps: float, axes: tuple[int, ...]) -> torch.Tensor:
    """y = γ (x − μ)/√(σ² + ε) + β in x's dtype and memory format (torch's eval kernel).

    ``native_batch_norm`` in eval mode, not ``torch.batch_norm`` (which may pick cuDNN, whose inference
    formula is not documented): ATen's elementwise kernel is the shifted form in float32.
    """
    return torch.ops.aten.native_batch_norm(x, weight, bias, mean, var, False, 0.0, float(eps))[0]


def _forward(x, weight, bias, eps: float, axes: tuple[int, ...], relu: bool = False):
    """Training forward: ``(y, mean, var)`` by ``native_batch_norm`` (statistics + normalize)."""
    y, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.0, float(eps))
    var = _var_from_invstd(invstd, float(eps))
    return (y.relu_() if relu else y), mean, var


def _backward(dy, x, mean, var, weight, eps: float, axes: tuple[int, ...], needs=(True, True, True), y=None,
              sums=None):  # fmt: skip
    """Closed-form gradients ``(dx, dweight, dbias)`` by ``native_batch_norm_backward``.

    ``y``: the output of ``forward(..., relu=True)``; dy is masked to where y > 0 first.
    """
    return composed.native_backward(dy, x, mean, var, weight, eps, needs, y)


#: The contract's implementations, run by :func:`.contract.run` once :func:`covers` said yes.
IMPLEMENTATION = {"batch_stats": _batch_stats, "normalize": _normalize, "forward": _forward, "backward": _backward}
batch_stats, normalize, forward, backward = contract.entry_points(NAME, covers, IMPLEMENTATION)
