"""Batch Renorm under synchronized BN (issue 17, §1): bnlab.nn.SyncBatchRenorm and convert_sync of BatchRenorm*d.

One launch of 2 gloo ranks (``run_ranks`` of tests/distributed/test_distributed.py) runs every case:
several training steps of a layer converted by ``convert_sync`` from ``BatchRenorm1d/2d/3d``, each rank on its
shard of the batch
(uneven, a rank with one sample, an empty one). The parent replays the steps with one float64 ``BatchRenorm``
layer on the union of the shards and compares output, dx, dγ, dβ (summed over ranks, as data-parallel training
does) and the running statistics after every step; then eval mode. r and d are clipped at their bounds in some
cases and not in others (checked on the float64 NumPy reference, independent of bnlab's torch code).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import bnlab
from bnlab import reference as ref
from bnlab.distributed import (
    SyncBatchNorm,
    SyncBatchNormError,
    SyncBatchRenorm,
    collective_count,
    convert_sync,
    sync_batch_renorm,
)
from bnlab.nn import BatchRenorm1d, BatchRenorm2d, BatchRenorm3d
from bnlab.nn.functional import batch_renorm
from bnlab.nn.renorm import LinearSchedule
from test_distributed import run_ranks

C = 3
MOMENTUM = 0.3
EPS = 1e-5
STEPS = 3
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
CLASSES = {1: BatchRenorm1d, 2: BatchRenorm2d, 3: BatchRenorm3d}
# running statistics per channel on entry: far from the batch's (x ≈ 3 + 2·N(0, 1)): r and d clipped at both
# bounds with rmax = 1.5, dmax = 0.5 (channel 2 stays inside); near it: nothing clipped with rmax = 3, dmax = 5
FAR = ([-20.0, 20.0, 3.1], [0.25, 100.0, 4.4])
NEAR = ([2.6, 3.3, 2.9], [3.0, 5.0, 4.5])

# (name, sample shape, dtype, per, shards of ranks 0 and 1, rmax, dmax, warmup_steps, running stats, channels_last)
CASES = [
    ("2d-float64-channel-clipped", (C, 4, 5), torch.float64, "channel", (5, 1), 1.5, 0.5, 0, FAR, False),
    ("2d-float64-channel-unclipped", (C, 4, 5), torch.float64, "channel", (3, 4), 3.0, 5.0, 0, NEAR, False),
    ("2d-float32-channel-clipped-cl", (C, 4, 5), torch.float32, "channel", (2, 5), 1.5, 0.5, 0, FAR, True),
    ("2d-float32-channel-unclipped", (C, 4, 5), torch.float32, "channel", (0, 4), 3.0, 5.0, 0, NEAR, False),
    ("2d-float64-activation-clipped", (C, 2, 3), torch.float64, "activation", (1, 5), 1.5, 0.5, 0, FAR, False),
    ("2d-float32-activation-unclipped", (C, 2, 3), torch.float32, "activation", (6, 3), 3.0, 5.0, 0, NEAR, False),
    ("1d-float64-channel-clipped", (C,), torch.float64, "channel", (7, 1), 1.5, 0.5, 0, FAR, False),
    ("3d-float32-channel-clipped", (C, 2, 3, 2), torch.float32, "channel", (1, 2), 1.5, 0.5, 0, FAR, False),
    ("2d-float64-channel-warmup", (C, 4, 5), torch.float64, "channel", (4, 1), 1.5, 0.5, 2, FAR, False),
]


def _layer(i: int, dtype) -> torch.nn.Module:
    """Case ``i``'s BatchRenorm layer with its initial state (random γ, β; running statistics FAR or NEAR)."""
    _name, sample, _dt, per, _shards, rmax, dmax, warmup, (rm, rv), _cl = CASES[i]
    spatial = sample[1:] if per == "activation" else None
    layer = CLASSES[max(len(sample) - 1, 1)](
        C, eps=EPS, momentum=MOMENTUM, rmax=rmax, dmax=dmax, warmup_steps=warmup, per=per, spatial_size=spatial,
        dtype=dtype,
    )  # fmt: skip
    g = torch.Generator().manual_seed(10 + i)
    fshape = layer.weight.shape
    with torch.no_grad():
        layer.weight.copy_(torch.rand(fshape, generator=g, dtype=torch.float64) + 0.5)
        layer.bias.copy_(torch.randn(fshape, generator=g, dtype=torch.float64))
        view = (C,) + (1,) * (len(fshape) - 1)
        layer.running_mean.copy_(torch.tensor(rm, dtype=torch.float64).reshape(view).expand(fshape))
        layer.running_var.copy_(torch.tensor(rv, dtype=torch.float64).reshape(view).expand(fshape))
    return layer


def _data(i: int, step: int):
    """The whole batch of case ``i`` at ``step`` (x, dy), in the case's dtype: every rank takes its shard."""
    _name, sample, dtype, *_rest = CASES[i]
    n = sum(CASES[i][4])
    g = torch.Generator().manual_seed(1000 * i + step)
    x = torch.randn(n, *sample, generator=g, dtype=torch.float64) * 2 + 3
    dy = torch.randn(n, *sample, generator=g, dtype=torch.float64)
    return x.to(dtype), dy.to(dtype)


def _layout(t: torch.Tensor, cl: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if cl and t.dim() == 4 else t


def _steps(layer, x_of, cl: bool) -> list[dict]:
    """STEPS training steps of ``layer`` on x_of(step) = (x, dy); what each step gives and leaves."""
    out = []
    for step in range(STEPS):
        x, dy = x_of(step)
        x = _layout(x.clone(), cl).requires_grad_(True)
        layer.weight.grad = layer.bias.grad = None
        y = layer(x)
        (y * _layout(dy, cl)).sum().backward()
        out.append({
            "y": y.detach(), "dx": x.grad, "dw": layer.weight.grad, "db": layer.bias.grad,
            "rm": layer.running_mean.clone(), "rv": layer.running_var.clone(), "nbt": int(layer.num_batches_tracked),
        })  # fmt: skip
    return out


# -- what each rank runs -----------------------------------------------------------------------------------------
def _outcome(fn) -> str:
    try:
        fn()
    except (SyncBatchNormError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return "returned"


def _equality(rank: int) -> dict:
    out = {}
    for i, (name, _sample, dtype, _per, shards, *_rest, cl) in enumerate(CASES):
        lo, hi = sum(shards[:rank]), sum(shards[: rank + 1])
        layer = convert_sync(_layer(i, dtype), timeout=60)
        assert type(layer) is SyncBatchRenorm
        steps = _steps(layer, lambda step, lo=lo, hi=hi, i=i: tuple(t[lo:hi] for t in _data(i, step)), cl)
        layer.eval()
        before = collective_count()
        with torch.no_grad():
            y_eval = layer(_data(i, 0)[0][lo:hi])
        out[name] = {"steps": steps, "y_eval": y_eval, "eval_collectives": collective_count() - before}
        if CASES[i][7]:  # warm-up: a SyncBatchNorm with the same state, on the same shards
            plain = _layer(i, dtype)
            bn = SyncBatchNorm(C, eps=EPS, momentum=MOMENTUM, dtype=dtype, timeout=60)
            bn.load_state_dict(plain.state_dict())
            out[name]["sync_bn"] = _steps(bn, lambda step, lo=lo, hi=hi, i=i: tuple(t[lo:hi] for t in _data(i, step)),
                                          cl)  # fmt: skip
    return out


def _step_collectives(layer, x) -> tuple[int, int]:
    x = x.clone().requires_grad_(True)
    before = collective_count()
    y = layer(x)
    forward = collective_count() - before
    (y * y).sum().backward()
    return forward, collective_count() - before - forward


def _state(layer) -> list[torch.Tensor]:
    return [layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone()]


def _disagreements(rank: int) -> dict:
    out = {}
    x = torch.randn(4, C, 5, generator=torch.Generator().manual_seed(rank)) * 2 + 1

    def refused(key, layer):
        before = _state(layer)
        out[key] = _outcome(lambda: layer(x))
        out[key + "_unchanged"] = all(torch.equal(a, b) for a, b in zip(before, _state(layer), strict=True))

    refused("rmax", SyncBatchRenorm(C, rmax=2.0 if rank == 0 else 3.0, timeout=20))
    refused("dmax", SyncBatchRenorm(C, dmax=5.0 if rank == 0 else 4.0, timeout=20))
    refused("warmup", SyncBatchRenorm(C, warmup_steps=0 if rank == 0 else 1, timeout=20))
    drift = SyncBatchRenorm(C, rmax=LinearSchedule(1.0, 3.0, 0, 10), timeout=20)
    drift.num_batches_tracked += 5 * rank  # as after a rank counted batches the other did not
    refused("schedule_drift", drift)
    # the same layer name, Batch Renorm on rank 0 and plain BN on rank 1
    model = convert_sync(torch.nn.Sequential(BatchRenorm1d(C) if rank == 0 else torch.nn.BatchNorm1d(C)), timeout=20)
    refused("plain_vs_renorm", model[0])
    # a bad schedule value on rank 1: its own ValueError there, the other rank stops too
    refused(
        "bad_schedule", SyncBatchRenorm(C, rmax=(lambda step: 3.0) if rank == 0 else (lambda step: 0.5), timeout=20)
    )
    # still in step, and a Batch Renorm step costs what a synchronized BN step costs: one collective each way
    layer, bn = SyncBatchRenorm(C, timeout=20), SyncBatchNorm(C, timeout=20)
    out["collectives"] = [_step_collectives(layer, x) for _ in range(2)] + [_step_collectives(bn, x)]
    out["after_nbt"] = int(layer.num_batches_tracked)
    # the functional form: one step, merged statistics
    full = torch.randn(5, C, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 + 3
    shard = full[:2] if rank == 0 else full[2:]
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.full((C,), 9.0, dtype=torch.float64)
    out["functional"] = (sync_batch_renorm(shard, rm, rv, training=True, momentum=MOMENTUM, rmax=1.2, dmax=0.3), rm, rv)
    return out


def _ranks(rank: int, world: int, out_dir: str) -> dict:
    return {"equality": _equality(rank), "faults": _disagreements(rank)}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_ranks("test_sync_renorm:_ranks", 2, tmp_path_factory.mktemp("sync_renorm"), limit=240)


# -- the parent: one process, float64 -------------------------------------------------------------------------------
def _reference(i: int) -> tuple[list[dict], torch.Tensor]:
    layer = _layer(i, torch.float64)
    steps = _steps(layer, lambda step: tuple(t.double() for t in _data(i, step)), False)
    layer.eval()
    with torch.no_grad():
        return steps, layer(_data(i, 0)[0].double())


def _clipped_at_step0(i: int) -> tuple[bool, bool]:
    """(some r or d at a bound, every r and d inside) at step 0, from the NumPy reference on the union."""
    _name, sample, _dtype, per, _shards, rmax, dmax, _w, _stats, _cl = CASES[i]
    layer = _layer(i, torch.float64)
    x = _data(i, 0)[0].double().numpy()
    axes = (0,) if per == "activation" else tuple(a for a in range(x.ndim) if a != 1)
    args = [t.detach().numpy() for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var)]
    _, cache = ref.renorm_forward(x, *args, axes, EPS, rmax, dmax)
    at = [
        np.isclose(cache.r, rmax),
        np.isclose(cache.r, 1 / rmax),
        np.isclose(cache.d, dmax),
        np.isclose(cache.d, -dmax),
    ]
    return all(a.any() for a in at), not any(a.any() for a in at)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_two_ranks_equal_one_batch_renorm_layer_on_the_union(ranks, i):
    name, _sample, dtype, _per, shards, *_rest = CASES[i]
    expected, y_eval = _reference(i)
    got = [r["equality"][name] for r in ranks]
    tol = TOL[dtype]

    def close(a, b, what):
        torch.testing.assert_close(a.double(), b, atol=tol, rtol=tol, msg=lambda m: f"{name} {what}: {m}")

    for step, want in enumerate(expected):
        mine = [g["steps"][step] for g in got]
        close(torch.cat([s["y"] for s in mine]), want["y"], f"output at step {step}")
        close(torch.cat([s["dx"] for s in mine]), want["dx"], f"input gradient at step {step}")
        close(sum(s["dw"] for s in mine), want["dw"], f"summed γ gradient at step {step}")
        close(sum(s["db"] for s in mine), want["db"], f"summed β gradient at step {step}")
        for r, s in enumerate(mine):
            close(s["rm"], want["rm"], f"running mean on rank {r} after step {step}")
            close(s["rv"], want["rv"], f"running var on rank {r} after step {step}")
            assert torch.equal(s["rm"], mine[0]["rm"]) and torch.equal(s["rv"], mine[0]["rv"]), (name, step)
            assert s["nbt"] == step + 1 and s["y"].shape[0] == shards[r]
    close(torch.cat([g["y_eval"] for g in got]), y_eval, "eval output")
    assert all(g["eval_collectives"] == 0 for g in got)


def test_the_cases_clip_r_and_d_at_both_bounds_or_not_at_all():
    for i, case in enumerate(CASES):
        some, none = _clipped_at_step0(i)
        assert (some, none) == ((True, False) if case[8] is FAR else (False, True)), case[0]


def test_during_warm_up_it_is_synchronized_bn_then_batch_renorm(ranks):
    i = next(i for i, c in enumerate(CASES) if c[7])
    name, warmup = CASES[i][0], CASES[i][7]
    for r in ranks:
        got, bn = r["equality"][name]["steps"], r["equality"][name]["sync_bn"]
        for step in range(warmup):
            for k in ("y", "dx", "dw", "db", "rm", "rv"):
                assert torch.equal(got[step][k], bn[step][k]), (step, k)
        assert not torch.allclose(got[warmup]["y"], bn[warmup]["y"])  # from then on, r and d act (FAR: clipped)


def test_eval_is_bn_eval_with_the_running_statistics(ranks):
    for i, (name, _sample, dtype, per, shards, *_rest) in enumerate(CASES):
        if per != "channel":
            continue
        layer = _layer(i, torch.float64)
        for r, res in enumerate(ranks):
            last = res["equality"][name]["steps"][-1]
            lo, hi = sum(shards[:r]), sum(shards[: r + 1])
            x = _data(i, 0)[0][lo:hi].double()
            want = torch.nn.functional.batch_norm(x, last["rm"].double(), last["rv"].double(),
                                                  layer.weight.detach(), layer.bias.detach(), eps=EPS)  # fmt: skip
            got = res["equality"][name]["y_eval"].double()
            torch.testing.assert_close(got, want, atol=TOL[dtype], rtol=TOL[dtype])


def test_ranks_that_disagree_on_rmax_dmax_or_warm_up_fail_on_every_rank_and_change_nothing(ranks):
    for r, res in enumerate(ranks):
        f = res["faults"]
        assert "SyncBatchNormError" in f["rmax"] and "rmax=2" in f["rmax"] and "rmax=3" in f["rmax"], f["rmax"]
        assert "dmax=5" in f["dmax"] and "dmax=4" in f["dmax"], f["dmax"]
        assert "warmup_steps=0" in f["warmup"] and "warmup_steps=1" in f["warmup"], f["warmup"]
        drift = f["schedule_drift"]
        assert "Batch Renorm's settings" in drift and "rmax=1, dmax=5" in drift and "rmax=2, dmax=5" in drift, drift
        assert "plain batch norm (not Batch Renorm)" in f["plain_vs_renorm"], f["plain_vs_renorm"]
        for k in ("rmax", "dmax", "warmup", "schedule_drift", "plain_vs_renorm", "bad_schedule"):
            assert f[k + "_unchanged"], (r, k)
        # after all that, still in step: a Batch Renorm step costs one collective forward and one backward
        assert f["collectives"] == [(1, 1)] * 3, f["collectives"]
        assert f["after_nbt"] == 2
    assert "ValueError: rmax must be ≥ 1" in ranks[1]["faults"]["bad_schedule"]
    assert "rank(s) [1] rejected their input" in ranks[0]["faults"]["bad_schedule"]


def test_functional_sync_batch_renorm_equals_batch_renorm_on_the_union(ranks):
    full = torch.randn(5, C, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 + 3
    rm, rv = torch.zeros(C, dtype=torch.float64), torch.full((C,), 9.0, dtype=torch.float64)
    want = batch_renorm(full, rm, rv, training=True, momentum=MOMENTUM, rmax=1.2, dmax=0.3)
    y = torch.cat([r["faults"]["functional"][0] for r in ranks])
    torch.testing.assert_close(y, want, atol=1e-10, rtol=1e-10)
    for r in ranks:
        torch.testing.assert_close(r["faults"]["functional"][1], rm, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(r["faults"]["functional"][2], rv, atol=1e-10, rtol=1e-10)


# -- one process --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, shape", [(BatchRenorm1d, (6, C)), (BatchRenorm2d, (6, C, 3, 4)),
                                        (BatchRenorm3d, (4, C, 2, 3, 2))])  # fmt: skip
def test_convert_sync_makes_batch_renorm_sync_batch_renorm_with_the_same_state(cls, shape):
    sched = LinearSchedule(1.0, 2.0, 1, 4)
    old = cls(C, momentum=None, rmax=sched, dmax=0.7, warmup_steps=1)
    for _ in range(2):
        old(torch.randn(shape) * 2 + 1)
    twin = copy.deepcopy(old)
    tensors = [old.weight, old.bias, old.running_mean, old.running_var, old.num_batches_tracked]
    model = torch.nn.Sequential(torch.nn.Identity(), old)
    out = convert_sync(model, timeout=30)
    new = model[1]
    assert out is model and type(new) is SyncBatchRenorm and isinstance(new, bnlab.nn.BatchRenormBase)
    assert new.rmax is sched and new.dmax == 0.7 and new.warmup_steps == 1 and new.momentum is None
    assert new.layer_name == "1" and new.timeout == 30
    got = [new.weight, new.bias, new.running_mean, new.running_var, new.num_batches_tracked]
    assert all(a is b for a, b in zip(got, tensors, strict=True))
    assert list(new.state_dict()) == list(twin.state_dict())
    # no process group: it is the local layer (training steps, then eval)
    for _ in range(3):
        x = torch.randn(shape) * 3 - 1
        torch.testing.assert_close(new(x), twin(x))
    torch.testing.assert_close(new.running_var, twin.running_var)
    new.eval(), twin.eval()
    torch.testing.assert_close(new(x), twin(x))
    twin.load_state_dict(new.state_dict())  # and back: the same buffers
    assert isinstance(convert_sync(cls(C)), SyncBatchRenorm)


def test_sync_batch_renorm_refuses_bad_settings_and_is_listed():
    with pytest.raises(ValueError, match="rmax must be ≥ 1"):
        SyncBatchRenorm(C, rmax=0.5)
    with pytest.raises(ValueError, match="warmup_steps must be"):
        SyncBatchRenorm(C, warmup_steps=-1)
    with pytest.raises(ValueError, match="timeout"):
        SyncBatchRenorm(C, timeout=0)
    with pytest.raises(ValueError, match="pass running_mean and running_var"):
        sync_batch_renorm(torch.randn(4, C), None, None, training=True)
    assert bnlab.nn.SyncBatchRenorm is SyncBatchRenorm
    assert "rmax=1.5" in repr(SyncBatchRenorm(C, rmax=1.5, timeout=5)) and "timeout=5" in repr(
        SyncBatchRenorm(C, timeout=5)
    )
