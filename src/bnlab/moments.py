"""Mergeable batch statistics: (count, mean, M2) triples and Chan's merge.

A set B of values is summarized by its count m, its mean μ_B and M2 = Σ (x_i − μ_B)², so that
σ²_B = M2 / m (the biased variance Alg. 1 normalizes with) and M2 / (m − 1) is the unbiased one. Two
summaries merge exactly, without revisiting the values (Chan, Golub & LeVeque 1979):

    m = m_a + m_b,  δ = μ_b − μ_a,  μ = μ_a + δ·m_b/m,  M2 = M2_a + M2_b + δ²·m_a·m_b/m

This module is the one home of the statistics every fast path uses (docs/design.md):

- :func:`moments`: the corrected two-pass (count, mean, M2) of a set B, with :func:`correct` the
  correction itself (the mean of x − μ undoes the rounding of μ);
- :func:`merge` (pairwise, Chan) and :func:`merge_groups` (k groups of equal size), :func:`merge_all`;
- :func:`statistics_dtype` (the dtype rule: statistics in float32, or float64 for float64 data) and
  :func:`batch_stats` (μ_B and the biased σ²_B of a torch tensor by that rule, the definition the kernels
  are checked against); :func:`shifted_batch_stats`, the same statistics as two shifted sums in float64 (the
  compiled door's form on the CPU).

The NumPy reference keeps its literal paper lines; recalibration (Alg. 2 over many batches), synchronized BN
(over processes) and the kernels (:mod:`bnlab.kernels`) use the functions here. Everything but
:func:`statistics_dtype`/:func:`batch_stats` uses only arithmetic operators, so it works on NumPy arrays and
torch tensors alike (and is differentiable in torch).

>>> import numpy as np
>>> x = np.arange(10.0)
>>> a, b = moments(x[:3], axes=(0,)), moments(x[3:], axes=(0,))
>>> m = merge(a, b)
>>> float(m.mean), float(m.variance), float(m.unbiased_variance)
(4.5, 8.25, 9.166666666666666)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = [
    "Moments",
    "moments",
    "correct",
    "merge",
    "merge_groups",
    "merge_all",
    "statistics_dtype",
    "batch_stats",
    "shifted_batch_stats",
    "Population",
    "population_statistics",
]


class Moments(NamedTuple):
    """Summary of one set B per feature: ``count`` values, their ``mean`` and ``m2`` = Σ (x − mean)²."""

    count: Any  # int, or an array broadcastable against mean (a count per feature)
    mean: Any
    m2: Any

    @property
    def variance(self):
        """σ²_B = M2 / m: the biased variance used to normalize (Alg. 1)."""
        return self.m2 / self.count

    @property
    def unbiased_variance(self):
        """M2 / (m − 1): the estimate stored in running statistics."""
        return self.m2 / (self.count - 1)


def moments(x, axes: tuple[int, ...]) -> Moments:
    """Corrected two-pass moments of ``x`` over ``axes`` (never the unshifted E[x²] − E[x]²).

    Pass 1: μ = mean(x). Pass 2: d = x − μ, M2 = Σ d², corrected by :func:`correct` with Σ d (what the
    rounding of μ left over). Works for NumPy arrays (``axis=``) and torch tensors (``dim=``) through their
    ``mean``/``sum`` methods; the result has the feature shape (reduced axes removed).
    """
    count = 1
    for a in axes:
        count *= x.shape[a]
    try:
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        m2, d_sum = (d * d).sum(axis=axes), d.sum(axis=axes)
        mean = mean.squeeze(axis=axes)
    except TypeError:  # torch
        mean = x.mean(dim=axes, keepdim=True)
        d = x - mean
        m2, d_sum = (d * d).sum(dim=axes), d.sum(dim=axes)
        mean = mean.squeeze(axes) if len(axes) else mean
    return correct(Moments(count, mean, m2), d_sum)


def correct(rough: Moments, d_sum) -> Moments:
    """The corrected two-pass step: ``rough`` = (m, μ̃, Σ (x − μ̃)²) with μ̃ a rounded mean, ``d_sum`` =
    Σ (x − μ̃). With δ = d_sum/m: μ = μ̃ + δ and M2 = Σ (x − μ̃)² − m·δ² (clipped at 0), exact in exact
    arithmetic and accurate to the data's rounding when |μ| ≫ σ (Chan, Golub & LeVeque 1983, eq. 1.7).

    The CPU rows (:mod:`bnlab.kernels.cpu`) use it as is; the Triton tiles write the same two lines.
    """
    delta = d_sum / rough.count
    m2 = rough.m2 - delta * d_sum
    return Moments(rough.count, rough.mean + delta, m2 * (m2 > 0))


def merge(a: Moments, b: Moments) -> Moments:
    """Chan's exact merge of two summaries of disjoint sets (see module docstring).

    An empty summary (count 0: an empty shard, whose mean and M2 may be anything, NaN included) is the
    identity: the other summary comes back unchanged, so merging [0, 0, n, ...] never divides 0/0. With a
    count per feature (arrays), features where one side is empty take the other side's values.
    """
    if _is_scalar(a.count) and _is_scalar(b.count):
        if b.count == 0:
            return a
        if a.count == 0:
            return b
    elif _any_zero(a.count) or _any_zero(b.count):
        return _merge_masked(a, b)
    count = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / count)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / count)
    return Moments(count, mean, m2)


def _is_scalar(c) -> bool:
    return getattr(c, "ndim", 0) == 0


def _any_zero(c) -> bool:
    return bool((c == 0).any())


def _merge_masked(a: Moments, b: Moments) -> Moments:
    """:func:`merge` per feature where some features are empty on one side (array counts)."""
    where = _where_for(a.count, b.count, a.mean, b.mean)
    a_empty, b_empty = a.count == 0, b.count == 0
    count = a.count + b.count
    safe = count + (count == 0)  # 0 only where both are empty: those features keep a's values
    a_mean, b_mean = where(a_empty, b.mean, a.mean), where(b_empty, a.mean, b.mean)
    a_m2, b_m2 = where(a_empty, 0 * b.m2, a.m2), where(b_empty, 0 * a.m2, b.m2)
    delta = b_mean - a_mean
    mean = a_mean + delta * (b.count / safe)
    m2 = a_m2 + b_m2 + delta * delta * (a.count * b.count / safe)
    return Moments(count, mean, m2)


def _where_for(*values):
    """``where`` of the array library these values come from (torch or NumPy)."""
    if any(type(v).__module__.startswith("torch") for v in values):
        import torch

        return lambda c, x, y: torch.where(torch.as_tensor(c), x, y)
    import numpy as np

    return np.where


def merge_all(parts: Iterable[Moments]) -> Moments:
    """Merge any number of summaries (left fold of :func:`merge`); raises on an empty iterable."""
    total = None
    for part in parts:
        total = part if total is None else merge(total, part)
    if total is None:
        raise ValueError("no statistics to merge: got an empty sequence of batches")
    return total


def merge_groups(means, m2s, count_each) -> Moments:
    """Chan's merge of k summaries of equal size in one step (axis 0 of ``means``/``m2s`` indexes them).

    For k groups of ``count_each`` values each the pairwise :func:`merge` folds into
        μ = mean_r μ_r,   M2 = Σ_r M2_r + m_r · Σ_r (μ_r − μ)²
    (within-group plus between-group sums of squares); the between-group part is itself the corrected
    two-pass :func:`moments` of the group means. Used by the CPU rows and written once more in the Triton
    merge of partials.
    """
    between = moments(means, axes=(0,))
    return Moments(between.count * count_each, between.mean, m2s.sum(0) + count_each * between.m2)


def statistics_dtype(dtype):
    """The dtype rule: statistics (and their accumulation) in float32, or float64 for float64 data —
    never in float16/bfloat16. ``dtype``: a torch dtype."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32


def batch_stats(x, axes: tuple[int, ...]):
    """μ_B and the biased σ²_B of a torch tensor over ``axes`` (feature-shaped, :func:`statistics_dtype`).

    ``torch.var_mean`` in the statistics dtype: a Welford reduction (the one-value-at-a-time form of
    Chan's merge) on every device and under Inductor, never E[x²] − E[x]²; differentiable. This is the
    definition :mod:`bnlab.kernels.composed` computes and every fast family is checked against.
    """
    import torch

    var, mean = torch.var_mean(x.to(statistics_dtype(x.dtype)), dim=axes, correction=0)
    return mean, var


def shifted_batch_stats(x, axes: tuple[int, ...]):
    """μ_B and the biased σ²_B of a torch tensor over ``axes`` as :func:`batch_stats` gives them (feature-shaped,
    :func:`statistics_dtype`), computed as two shifted sums accumulated in float64 and then :func:`correct`:

        K = each feature's first value (index 0 on every reduced axis),  S1 = Σ (x − K),  S2 = Σ (x − K)²,
        δ = S1/m,  μ_B = K + δ,  σ²_B = (S2 − δ·S1)/m

    Why: a compiler fuses the two sums into one pass over x whose additions do not wait on each other, where
    ``var_mean``'s Welford update waits on the previous mean at every value (in Inductor's CPU code at 1 thread
    the pass took 3–4% less time than var_mean's in a ResNet step, where it is bound by reading x, and up to
    half the time on inputs that stay in cache). Accuracy: x − K is exact in float64 for float32, float16 and
    bfloat16 input, so the only cancellation is S2 − δ·S1, a relative error of about
    ε_float64·(1 + (μ_B − K)²/σ²_B): even a first value 10⁴·σ off the mean costs 1e-8 relative. The shift is
    what keeps |μ| ≫ σ exact (never the unshifted E[x²] − E[x]²), and the float64 sums land within a float32
    rounding of the exact statistics, closer than a float32 Welford update. Differentiable in x (stock ops).
    """
    import torch

    sdt = statistics_dtype(x.dtype)
    count = 1
    shift = x
    for a in axes:
        count *= x.shape[a]
        shift = shift.narrow(a, 0, 1)
    d = x.to(torch.float64) - shift.to(torch.float64)
    s1 = d.sum(dim=axes)
    m = correct(Moments(count, shift.to(torch.float64).reshape(s1.shape), (d * d).sum(dim=axes)), s1)
    return m.mean.to(sdt), m.variance.to(sdt)


class Population:
    """Running Alg. 2 population statistics: :meth:`add` each training mini-batch's moments, then
    :meth:`statistics` gives ``(E[x], Var[x])`` with

        E[x]   = Σ_b m_b μ_b / Σ_b m_b                      (= E_B[μ_B] when all m_b = m)
        Var[x] = Σ_b m_b σ²_b / Σ_b (m_b − 1)              (= m/(m−1) · E_B[σ²_B] when all m_b = m)

    i.e. each batch weighs in proportion to its size, and the variance is the pooled *within-batch*
    unbiased estimate: the spread of the batch means is not added, exactly as in Alg. 2 (the network was
    trained with within-batch statistics). The mean is the count-weighted mean that :func:`merge` gives.
    Memory stays one feature-shaped triple however many batches are added.
    """

    def __init__(self) -> None:
        self.total: Moments | None = None  # Chan-merged moments of everything seen (for the mean)
        self.within_m2 = 0  # Σ_b M2_b
        self.dof = 0  # Σ_b (m_b − 1)
        self.batches = 0

    def add(self, batch: Moments) -> None:
        self.total = batch if self.total is None else merge(self.total, batch)
        self.within_m2 = self.within_m2 + batch.m2
        self.dof = self.dof + (batch.count - 1)
        self.batches += 1

    def statistics(self):
        if self.total is None:
            raise ValueError("population statistics need at least one mini-batch, got none")
        return self.total.mean, self.within_m2 / self.dof


def population_statistics(batches: Iterable[Moments]):
    """Alg. 2 population statistics ``(E[x], Var[x])`` from per-mini-batch moments (see :class:`Population`)."""
    population = Population()
    for b in batches:
        population.add(b)
    return population.statistics()
