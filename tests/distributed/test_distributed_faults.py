"""Synchronized BN: precision at a large offset, empty shards in the merge, ranks that stall, skip a
hand-built layer or disagree on settings — with real gloo processes (launched by test_distributed's
``run_ranks``), compared with a float64 NumPy oracle of the whole batch and with one process."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

import bnlab
from bnlab.distributed import SyncBatchNorm, SyncBatchNormError, collective_count
from bnlab.moments import Moments, merge, merge_all, moments
from conftest import bn_float64
from test_distributed import run_ranks

# -- precision at a large offset -------------------------------------------------------------------------------
# (name, whole-batch shape, shard sizes of 2 ranks, per, offset of rank 1's shard relative to 1e6)
PRECISION = [
    ("conv", (24, 4, 20, 20), (15, 9), "channel", 0.0),  # rank 0 on the chunked CPU path, rank 1 on var_mean
    ("conv-apart", (24, 4, 20, 20), (15, 9), "channel", 5.0),  # shards with different means: the merge term
    ("flat", (40, 5), (25, 15), "channel", 0.0),
    ("activation", (16, 3, 7), (10, 6), "activation", 3.0),
    ("empty-shard", (12, 4, 5, 5), (12, 0), "channel", 0.0),
]
EPS = 1e-5


def _precision_data(i: int):
    name, shape, shards, per, apart = PRECISION[i]
    g = torch.Generator().manual_seed(200 + i)
    x = torch.randn(shape, generator=g, dtype=torch.float64) + 1e6
    x[shards[0] :] += apart
    fshape = (shape[1],) if per == "channel" else shape[1:]
    w = torch.rand(fshape, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(fshape, generator=g, dtype=torch.float64)
    return x.float(), w.float(), b.float()


def _layer(cls, i: int):
    _name, shape, _shards, per, _apart = PRECISION[i]
    bn = cls(shape[1], momentum=1.0, eps=EPS, per=per, spatial_size=shape[2:] if per == "activation" else None)
    _x, w, b = _precision_data(i)
    with torch.no_grad():
        bn.weight.copy_(w)
        bn.bias.copy_(b)
    return bn


def _precision(rank: int, world: int) -> dict:
    out = {}
    for i, (name, _shape, shards, _per, _apart) in enumerate(PRECISION):
        x, _w, _b = _precision_data(i)
        lo, hi = sum(shards[:rank]), sum(shards[: rank + 1])
        bn = _layer(SyncBatchNorm, i)
        y = bn(x[lo:hi])
        out[name] = {"y": y.detach(), "rm": bn.running_mean.clone(), "rv": bn.running_var.clone()}
    return out


def _errors(i: int, y, rm, rv) -> dict:
    """Largest errors against the float64 oracle of the whole (float32) batch: output (absolute), running
    mean (absolute), running variance (relative)."""
    _name, shape, _shards, per, _apart = PRECISION[i]
    x, w, b = (t.double().numpy() for t in _precision_data(i))
    axes = tuple(a for a in range(len(shape)) if a == 0 or (per == "channel" and a >= 2))
    y_ref, mu, var = bn_float64(x, w, b, axes, EPS)
    m = x.size // mu.size
    return {
        "y": float(np.abs(y.double().numpy() - y_ref).max()),
        "rm": float(np.abs(rm.double().numpy() - mu).max()),
        "rv": float(np.abs(rv.double().numpy() / (var * m / (m - 1)) - 1).max()),
    }


def _one_process_errors(i: int) -> dict:
    bn_class = {2: bnlab.nn.BatchNorm1d, 3: bnlab.nn.BatchNorm1d, 4: bnlab.nn.BatchNorm2d}[len(PRECISION[i][1])]
    bn = _layer(bn_class, i)
    x, _w, _b = _precision_data(i)
    y = bn(x)
    return _errors(i, y.detach(), bn.running_mean, bn.running_var)


# The one-process errors measured on this suite's data (float32 rounding of x near 1e6 is 0.0625):
# output ≤ 0.03 (the mean rounded to float32 before normalizing), running mean ≤ 0.03, running variance
# ≤ 1e-7 relative. The synchronized layer must meet the same bounds.
TOL = {"y": 0.05, "rm": 0.0313, "rv": 3e-7}


# -- faults that every rank must see ---------------------------------------------------------------------------
def _outcome(fn) -> str:
    try:
        fn()
    except SyncBatchNormError as err:
        return f"SyncBatchNormError: {err}"
    return "returned"


def _faults(rank: int, world: int, out_dir: str) -> dict:
    out = {"precision": _precision(rank, world)}
    x = torch.randn(4, 3, 5)
    # two hand-built layers of the same shape; rank 1 skips the first
    first, second = SyncBatchNorm(3, timeout=20), SyncBatchNorm(3, timeout=20)
    layer = first if rank == 0 else second
    out["skip"] = _outcome(lambda: layer(x))
    out["skip_state"] = [int(bn.num_batches_tracked) for bn in (first, second)]
    # settings that would silently make the ranks' outputs or running statistics differ
    bn = SyncBatchNorm(3, eps=1e-5 if rank == 0 else 1e-3, timeout=20)
    out["eps"] = _outcome(lambda: bn(x))
    bn = SyncBatchNorm(3, momentum=0.1 if rank == 0 else 0.2, timeout=20)
    out["momentum"] = _outcome(lambda: bn(x))
    bn = SyncBatchNorm(3, momentum=None, timeout=20)  # cumulative average: weighs 1/num_batches_tracked
    bn.num_batches_tracked += rank  # as after a rank counted a batch that the other did not
    out["count_drift"] = _outcome(lambda: bn(x))
    # still in step: both ranks call this one, rank 0 with 0s, rank 1 with 1s (global mean 0.5); the group has
    # seen 3 features already, so one collective forward (header and statistics together), one backward
    bn = SyncBatchNorm(3, timeout=20)
    out["collectives"] = _step_collectives(bn, torch.full((2, 3, 5), float(rank)))
    out["after_rm"] = bn.running_mean.clone()
    # a layer wider than the group has seen: its header alone first, then its statistics, once; then one
    wide = SyncBatchNorm(29, timeout=20)
    xw = torch.randn(3 + rank, 29, 4, generator=torch.Generator().manual_seed(rank))
    out["wide_collectives"] = [_step_collectives(wide, xw) for _ in range(3)]
    out["wide_rm"] = wide.running_mean.clone()
    # in step, rank 1 skips to a layer of another width: the rows still have one length, the error is clear
    narrow = SyncBatchNorm(2, timeout=20)
    narrow(torch.randn(4, 2, 5))  # both ranks: in step
    layer = wide if rank == 0 else narrow
    out["skip_wide"] = _outcome(lambda: layer(torch.randn(4, layer.num_features, 5)))
    out["skip_wide_state"] = [int(bn.num_batches_tracked) for bn in (wide, narrow)]
    out.update(_header_checks(rank))
    return out


def _header_checks(rank: int) -> dict:
    """How often the gathered headers are checked: once per layer and shapes, again after any change."""
    import bnlab.distributed as sync

    calls, original = [], sync._check_headers

    def counted(*args):
        calls.append(1)
        return original(*args)

    sync._check_headers = counted
    try:
        steady = SyncBatchNorm(3, timeout=20)
        for _ in range(4):
            steady(torch.randn(4, 3, 5))
        out = {"steady_checks": len(calls)}
        steady(torch.randn(4 + rank, 3, 5))  # rank 1's shard grows: checked again
        out["changed_checks"] = len(calls)
        steady.eps = 1e-5 if rank == 0 else 1e-3  # a layer checked before now differs on rank 1
        out["late_eps"] = _outcome(lambda: steady(torch.randn(4, 3, 5)))
        out["late_eps_state"] = int(steady.num_batches_tracked)
    finally:
        sync._check_headers = original
    return out


def _step_collectives(bn, x) -> tuple[int, int]:
    """(forward, backward) collectives of one training step of ``bn``."""
    x = x.clone().requires_grad_(True)
    before = collective_count()
    y = bn(x)
    forward = collective_count() - before
    (y * y).sum().backward()
    return forward, collective_count() - before - forward


def _stall_between(rank: int, out_dir: str, tag: str, bn, call, patch) -> dict:
    """Rank 1 stalls 8 s (``patch`` installs the stall), the layers' timeout is 4 s; rank 0 stays alive
    until rank 1 is done, so that rank 1 can complete the collective that rank 0 gave up on."""
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    undo = patch() if rank == 1 else (lambda: None)
    t0 = time.monotonic()
    try:
        outcome = _outcome(call)
    finally:
        undo()
    took = time.monotonic() - t0
    done = os.path.join(out_dir, f"{tag}.rank{rank}.done")
    open(done, "w").close()
    other = os.path.join(out_dir, f"{tag}.rank{1 - rank}.done")
    deadline = time.monotonic() + 60
    while not os.path.exists(other) and time.monotonic() < deadline:
        time.sleep(0.05)
    unchanged = (
        torch.equal(before[0], bn.running_mean) and torch.equal(before[1], bn.running_var)
        and before[2] == int(bn.num_batches_tracked)
    )  # fmt: skip
    return {"outcome": outcome, "unchanged": unchanged, "took": took}


def _sleep_after(module, name: str, seconds: float):
    """Install a stall: ``module.name`` sleeps ``seconds`` after running (returns the undo)."""
    original = getattr(module, name)

    def stalled(*args, **kwargs):
        result = original(*args, **kwargs)
        time.sleep(seconds)
        return result

    setattr(module, name, stalled)
    return lambda: setattr(module, name, original)


def _stalls(rank: int, world: int, out_dir: str) -> dict:
    import torch.distributed as dist

    import bnlab.distributed as sync

    groups = [dist.new_group(backend="gloo") for _ in range(2)]  # a stall leaves its group unusable
    x = torch.randn(4 + rank, 3, 5, requires_grad=True)
    out = {}
    # 1. between the exchange of headers and the exchange of statistics (forward)
    bn = SyncBatchNorm(3, timeout=4, process_group=groups[0])
    out["forward"] = _stall_between(rank, out_dir, "forward", bn, lambda: bn(x),
                                    lambda: _sleep_after(sync, "_check_headers", 8.0))  # fmt: skip
    # 2. between the forward and the backward (the exchange of the gradient sums)
    bn = SyncBatchNorm(3, timeout=4, process_group=groups[1])
    y = bn(x)
    loss = (y * torch.arange(y.numel()).reshape(y.shape)).sum()

    def backward():
        if rank == 1:
            time.sleep(8.0)
        loss.backward()

    out["backward"] = _stall_between(rank, out_dir, "backward", bn, backward, lambda: lambda: None)
    out["backward_grad"] = x.grad
    return out


# -- tests -----------------------------------------------------------------------------------------------------
def test_merge_with_empty_summaries_first_is_exact_never_nan(rng):
    x = rng.normal(5, 3, size=(9, 4))
    full = moments(x, (0,))
    empty = Moments(0, np.full(4, np.nan), np.full(4, np.nan))  # an empty shard's mean: anything, NaN too
    zero = Moments(0, np.zeros(4), np.zeros(4))
    for parts in ([empty, empty, full], [zero, zero, full, empty], [full, empty], [empty, zero, empty, full, zero]):
        total = merge_all(parts)
        assert total.count == 9
        np.testing.assert_array_equal(total.mean, full.mean)  # exactly the non-empty shard's statistics
        np.testing.assert_array_equal(total.m2, full.m2)
    halves = merge_all([empty, moments(x[:4], (0,)), zero, moments(x[4:], (0,)), empty])
    np.testing.assert_allclose(halves.mean, x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(halves.variance, x.var(0), rtol=1e-13)
    # torch tensors and a count per feature (feature 1 empty on one side, feature 2 on both)
    a = Moments(torch.tensor([2.0, 0.0, 0.0]), torch.tensor([1.0, float("nan"), float("nan")]),
                torch.tensor([2.0, float("nan"), float("nan")]))  # fmt: skip
    b = Moments(torch.tensor([2.0, 3.0, 0.0]), torch.tensor([3.0, 4.0, 7.0]), torch.tensor([2.0, 6.0, 0.0]))
    ab = merge(a, b)
    torch.testing.assert_close(ab.count, torch.tensor([4.0, 3.0, 0.0]))
    torch.testing.assert_close(ab.mean[:2], torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(ab.m2[:2], torch.tensor([8.0, 6.0]))


def test_one_process_meets_the_precision_bounds():
    for i, (name, *_rest) in enumerate(PRECISION):
        errors = _one_process_errors(i)
        assert all(errors[k] <= TOL[k] for k in TOL), (name, errors)


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    return run_ranks("test_distributed_faults:_faults", 2, tmp_path_factory.mktemp("faults"))


def test_sync_statistics_at_a_large_offset_as_accurate_as_one_process(faults):
    for i, (name, _shape, shards, _per, _apart) in enumerate(PRECISION):
        got = [r["precision"][name] for r in faults]
        y = torch.cat([g["y"] for g in got])
        assert y.shape[0] == sum(shards)
        for r, g in enumerate(got):
            errors = _errors(i, y, g["rm"], g["rv"])
            assert all(errors[k] <= TOL[k] for k in TOL), (name, r, errors, _one_process_errors(i))
            assert torch.equal(g["rm"], got[0]["rm"]) and torch.equal(g["rv"], got[0]["rv"]), name


def test_a_skipped_hand_built_layer_fails_on_every_rank(faults):
    for r in faults:
        assert "SyncBatchNormError" in r["skip"] and "out of step" in r["skip"], r["skip"]
        assert "hand-built layer #" in r["skip"], r["skip"]
        assert r["skip_state"] == [0, 0]  # nothing counted
    # the ranks are still in step afterwards
    for r in faults:
        torch.testing.assert_close(r["after_rm"], torch.full((3,), 0.05))
        assert r["collectives"] == (1, 1), r["collectives"]
        assert r["wide_collectives"] == [(2, 1), (1, 1), (1, 1)], r["wide_collectives"]
        # (the headers name both shapes, as when the header travelled alone: no garbage, no aborted process)
        assert "SyncBatchNormError" in r["skip_wide"] and "(29,)" in r["skip_wide"] and "(2,)" in r["skip_wide"]
        assert r["skip_wide_state"] == [3, 1]  # the skipped step counted nowhere
    # the one-collective steps merge the same statistics: the running mean of 29 channels (wider than any
    # layer before: 21) equals one process's
    full = torch.cat([torch.randn(3 + r, 29, 4, generator=torch.Generator().manual_seed(r)) for r in range(2)])
    rm = torch.zeros(29)
    for _ in range(3):
        torch.nn.functional.batch_norm(full, rm, torch.ones(29), training=True, momentum=0.1)
    for r in faults:
        torch.testing.assert_close(r["wide_rm"], rm, rtol=1e-5, atol=1e-6)


def test_headers_are_checked_once_per_layer_and_shape_and_a_later_change_still_fails(faults):
    for r in faults:
        assert r["steady_checks"] == 1, r["steady_checks"]  # 4 steps of one layer and shape: one check
        assert r["changed_checks"] == 2, r["changed_checks"]  # another shard size: checked again
        assert "SyncBatchNormError" in r["late_eps"] and "eps=0.001" in r["late_eps"], r["late_eps"]
        assert r["late_eps_state"] == 5  # the refused step counted nowhere


def test_ranks_disagreeing_on_eps_or_momentum_fail_on_every_rank(faults):
    for r in faults:
        assert "SyncBatchNormError" in r["eps"] and "eps=1e-05" in r["eps"] and "eps=0.001" in r["eps"], r["eps"]
        assert "momentum=0.1" in r["momentum"] and "momentum=0.2" in r["momentum"], r["momentum"]
        assert "momentum=1" in r["count_drift"] and "momentum=0.5" in r["count_drift"], r["count_drift"]


@pytest.mark.slow
def test_a_stalled_rank_fails_with_the_others_and_no_rank_counts_the_batch(tmp_path):
    results = run_ranks("test_distributed_faults:_stalls", 2, tmp_path, limit=180)
    for stage in ("forward", "backward"):
        for r, res in enumerate(results):
            got = res[stage]
            assert got["outcome"].startswith("SyncBatchNormError"), (stage, r, got["outcome"])
            assert got["unchanged"], (stage, r)
        assert "did not complete within 4 s" in results[0][stage]["outcome"], results[0][stage]["outcome"]
        assert results[0][stage]["took"] < 4 + 2 + 4, results[0][stage]["took"]
        assert "rank(s) [1]" in results[1][stage]["outcome"] and "gave up" in results[1][stage]["outcome"]
    assert results[1]["backward_grad"] is None  # the late rank's backward did not complete either
