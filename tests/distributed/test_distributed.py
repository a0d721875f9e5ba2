"""Synchronized BN with real processes: gloo on CPU over 127.0.0.1, every launch bounded in time.

Each launch spawns the ranks once and runs many checks in them (spawning is slow); the parent compares
what the ranks return with one process on the concatenated batch, computed by ``torch.nn.functional``
(per-activation BN as torch's BN over the (N, C·H·W) view).
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import socket
import time
import traceback

import pytest
import torch

import bnlab
from bnlab.distributed import SyncBatchNorm, SyncBatchNormError, collective_count, convert_sync, sync_batch_norm

C = 3
SHARDS = {4: (5, 3, 1, 0), 2: (4, 1)}
MOMENTUM = 0.3
TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2}


# -- launching ranks ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, world: int, port: int, out: str, scenario: str) -> None:
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=30),
        )  # fmt: skip
        if ":" in scenario:  # "module:function" of another test file
            import importlib

            module, function = scenario.split(":")
            result = getattr(importlib.import_module(module), function)(rank, world, out)
        else:
            result = SCENARIOS[scenario](rank, world, out)
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    except BaseException:  # noqa: BLE001 - reported to the parent
        with open(os.path.join(out, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        os._exit(1)
    os._exit(0)  # skip the process group's teardown (a dead peer would make it wait)


def run_ranks(scenario: str, world: int, tmp_path, limit: float = 120.0, expect_exit: dict | None = None) -> list:
    """Run ``SCENARIOS[scenario]`` on ``world`` fresh processes; their results, in rank order."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_child, args=(r, world, port, str(tmp_path), scenario)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + limit
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    errors = {r: (tmp_path / f"rank{r}.err").read_text() for r in range(world) if (tmp_path / f"rank{r}.err").exists()}
    assert not hung, f"ranks {hung} still running after {limit} s (killed); errors: {errors}"
    assert not errors, "\n".join(f"rank {r}:\n{e}" for r, e in errors.items())
    expect_exit = expect_exit or {}
    codes = {r: p.exitcode for r, p in enumerate(procs)}
    assert codes == {r: expect_exit.get(r, 0) for r in range(world)}, codes
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


# -- the cases: the same full batch everywhere, each rank takes its shard -----------------------------------
CASES = [
    # (name, shape of one sample, dtype, channels_last, per)
    *[
        (f"4d-{dt}-{'cl' if cl else 'nchw'}-{per}", (C, 4, 5), dt, cl, per)
        for dt in (torch.float64, torch.float32)
        for cl in (False, True)
        for per in ("channel", "activation")
    ],
    ("2d-float64-channel", (C,), torch.float64, False, "channel"),
    ("3d-float64-activation", (C, 7), torch.float64, False, "activation"),
    ("5d-float32-cl3d-channel", (C, 2, 3, 4), torch.float32, True, "channel"),
    ("4d-float16-cl-channel", (C, 4, 5), torch.float16, True, "channel"),  # statistics in float32
]


def _case_data(i: int, n: int, sample: tuple, dtype, per: str):
    g = torch.Generator().manual_seed(100 + i)
    x = torch.randn(n, *sample, generator=g, dtype=torch.float64) * 2 + 3
    dy = torch.randn(n, *sample, generator=g, dtype=torch.float64)
    fshape = (C,) if per == "channel" else sample
    w = torch.rand(fshape, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(fshape, generator=g, dtype=torch.float64)
    return x.to(dtype), dy.to(dtype), w.to(dtype), b.to(dtype)


def _layout(t: torch.Tensor, cl: bool) -> torch.Tensor:
    if not cl:
        return t
    return t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)


def _equality(rank: int, world: int, out_dir: str = "") -> dict:
    shards = SHARDS[world]
    lo, hi = sum(shards[:rank]), sum(shards[: rank + 1])
    out = {}
    for i, (name, sample, dtype, cl, per) in enumerate(CASES):
        x, dy, w, b = _case_data(i, sum(shards), sample, dtype, per)
        bn = SyncBatchNorm(C, momentum=MOMENTUM, per=per, spatial_size=sample[1:] if per == "activation" else None,
                           dtype=torch.float32 if dtype == torch.float16 else dtype)  # fmt: skip
        with torch.no_grad():
            bn.weight.copy_(w)
            bn.bias.copy_(b)
        xs = _layout(x[lo:hi].clone(), cl).requires_grad_(True)
        y = bn(xs)
        (y * _layout(dy[lo:hi], cl)).sum().backward()
        # (per-activation output follows the kernels' composed path, contiguous, as in one process)
        fmt = torch.channels_last if y.dim() == 4 else torch.channels_last_3d
        layout_kept = (not cl) or hi == lo or per == "activation" or y.is_contiguous(memory_format=fmt)
        bn.eval()
        before = collective_count()
        y_eval = bn(xs.detach())
        out[name] = {
            "y": y.detach(), "dx": xs.grad, "dw": bn.weight.grad, "db": bn.bias.grad,
            "rm": bn.running_mean.clone(), "rv": bn.running_var.clone(), "nbt": int(bn.num_batches_tracked),
            "layout_kept": layout_kept, "y_eval": y_eval, "eval_collectives": collective_count() - before,
        }  # fmt: skip
    return out


def _reference(i: int, world: int):
    name, sample, dtype, cl, per = CASES[i]
    x, dy, w, b = (t.double() for t in _case_data(i, sum(SHARDS[world]), sample, dtype, per))
    n = x.shape[0]
    view = (lambda t: t) if per == "channel" else (lambda t: t.reshape(n, -1))
    wv = w.reshape(-1).clone().requires_grad_(True)
    bv = b.reshape(-1).clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    rm = torch.zeros(wv.shape, dtype=torch.float64)
    rv = torch.ones(wv.shape, dtype=torch.float64)
    y = torch.nn.functional.batch_norm(view(xr), rm, rv, wv, bv, training=True, momentum=MOMENTUM)
    (y * view(dy)).sum().backward()
    y_eval = torch.nn.functional.batch_norm(view(x), rm, rv, wv.detach(), bv.detach(), training=False)
    fshape = w.shape
    return {
        "y": y.detach().reshape(x.shape), "dx": xr.grad, "dw": wv.grad.reshape(fshape), "db": bv.grad.reshape(fshape),
        "rm": rm.reshape(fshape), "rv": rv.reshape(fshape), "y_eval": y_eval.reshape(x.shape),
    }  # fmt: skip


def _check_equality(results: list, world: int) -> None:
    for i, (name, _sample, dtype, _cl, _per) in enumerate(CASES):
        ref = _reference(i, world)
        got = [r[name] for r in results]
        tol = TOL[dtype]

        def close(a, b, what, tol=tol, name=name):
            torch.testing.assert_close(a.double(), b, atol=tol, rtol=tol, msg=lambda m: f"{name} {what}: {m}")

        close(torch.cat([g["y"] for g in got]), ref["y"], "output")
        close(torch.cat([g["dx"] for g in got]), ref["dx"], "input gradient")
        close(sum(g["dw"] for g in got), ref["dw"], "summed γ gradient")
        close(sum(g["db"] for g in got), ref["db"], "summed β gradient")
        close(torch.cat([g["y_eval"] for g in got]), ref["y_eval"], "eval output")
        for r, g in enumerate(got):
            close(g["rm"], ref["rm"], f"running mean on rank {r}")
            close(g["rv"], ref["rv"], f"running var on rank {r}")
            assert torch.equal(g["rm"], got[0]["rm"]) and torch.equal(g["rv"], got[0]["rv"]), f"{name}: ranks differ"
            assert g["nbt"] == 1 and g["layout_kept"], (name, r)
            assert g["eval_collectives"] == 0, f"{name}: eval mode started {g['eval_collectives']} collectives"
        for g, n in zip(got, SHARDS[world], strict=True):
            assert g["y"].shape[0] == n


# -- faults --------------------------------------------------------------------------------------------------
def _expect_error(fn, kind=SyncBatchNormError) -> str:
    try:
        fn()
    except kind as err:
        return str(err)
    raise AssertionError(f"expected {kind.__name__}")


def _equality_then_faults(rank: int, world: int, out_dir: str) -> dict:
    x = torch.randn(4, 3, 5)
    out = {"x": x, "equality": _equality(rank, world)}

    # disagreeing ranks: a clear error on every rank (and the group stays usable)
    bn = SyncBatchNorm(3 if rank == 0 else 4, timeout=20)
    out["channels"] = _expect_error(lambda: bn(torch.randn(4, bn.num_features, 5)))
    bn = SyncBatchNorm(3, dtype=torch.float64 if rank == 1 else None, timeout=20)
    out["dtype"] = _expect_error(lambda: bn(x.to(bn.weight.dtype)))
    bn = SyncBatchNorm(3, per="channel" if rank == 0 else "activation", timeout=20)
    out["variant"] = _expect_error(lambda: bn(x))
    # a rank whose own input is wrong raises its own error; the other one stops too
    w = torch.ones(3 if rank == 0 else 2)
    kind = ValueError if rank == 1 else SyncBatchNormError
    out["local"] = _expect_error(
        lambda: sync_batch_norm(x, None, None, w, None, training=True, timeout=20), kind
    )  # fmt: skip
    bn = SyncBatchNorm(3, timeout=20)
    out["module_local"] = _expect_error(lambda: bn(torch.randn(4, 3 + rank, 5)), kind)
    # one value per statistic over all ranks: the same error everywhere
    bn = SyncBatchNorm(3, per="activation", timeout=20)
    out["one_value"] = _expect_error(lambda: bn(torch.randn(1 - rank, 3, 5)), ValueError)
    # fused ReLU (carried over by convert_sync from bnlab layers): max(BN(x), 0) with the global statistics
    xs = torch.randn(3 + 2 * rank, 3, 5, generator=torch.Generator().manual_seed(rank))
    out["relu"] = (SyncBatchNorm(3, activation="relu")(xs), SyncBatchNorm(3)(xs))
    # a rank that skips a layer: same shapes, but the layers' names differ, so every rank stops
    model = convert_sync(torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)), timeout=20)
    out["skipped"] = _expect_error(lambda: model[rank](x))
    # still in step after all that
    bn = SyncBatchNorm(3, timeout=20)
    xs = torch.full((2, 3, 5), float(rank))
    out["after"] = bn(xs).mean(dim=(0, 2))
    out["after_rm"] = bn.running_mean.clone()
    # eval on one rank alone: would time out if it communicated
    bn = SyncBatchNorm(3, timeout=2).eval()
    frozen = SyncBatchNorm(3, timeout=2).train()
    frozen.frozen = True  # frozen layers use their running statistics, in training mode too
    if rank == 0:
        before = collective_count()
        out["eval_alone"] = (bn(x), collective_count() - before)
        out["frozen_alone"] = (frozen(x), collective_count() - before)
    # rank 1 stops calling BN: rank 0 gets an error within its timeout, not a hang
    if rank == 0:
        bn = SyncBatchNorm(3, timeout=1.5).train()
        t0 = time.monotonic()
        out["stopped"] = _expect_error(lambda: bn(x))
        out["stopped_after"] = time.monotonic() - t0
    else:
        time.sleep(10)  # longer than rank 0 can take to reach its timed-out call on a loaded machine
    return out


def _equality_then_death(rank: int, world: int, out_dir: str) -> dict:
    import torch.distributed as dist

    out = {"equality": _equality(rank, world)}
    dist.barrier()
    if rank == world - 1:
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
        os._exit(3)  # then dies without a word
    bn = SyncBatchNorm(3, timeout=3)
    t0 = time.monotonic()
    out["dead"] = _expect_error(lambda: [bn(torch.randn(2, 3, 4)) for _ in range(2)])
    out["dead_after"] = time.monotonic() - t0
    return out


SCENARIOS = {"faults": _equality_then_faults, "death": _equality_then_death}


# -- tests ---------------------------------------------------------------------------------------------------
def test_four_ranks_uneven_shards_equal_one_process_and_a_dead_rank_is_reported(tmp_path):
    results = run_ranks("death", 4, tmp_path, expect_exit={3: 3})
    _check_equality([r["equality"] for r in results], 4)
    for r in results[:3]:
        assert "rank" in r["dead"] and "stop all processes" in r["dead"], r["dead"]
        assert r["dead_after"] < 3 * 2 + 1, r["dead_after"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One launch of 2 ranks: the equality cases, then the faults."""
    return run_ranks("faults", 2, tmp_path_factory.mktemp("two_ranks"))


def test_two_ranks_uneven_shards_equal_one_process(two_ranks):
    _check_equality([r["equality"] for r in two_ranks], 2)


def test_faults_give_clear_errors_on_every_rank_never_a_hang(two_ranks):
    r0, r1 = two_ranks
    for r in (r0, r1):
        assert "disagree" in r["channels"] and "(3,)" in r["channels"] and "(4,)" in r["channels"]
        assert "disagree" in r["dtype"] and "float64" in r["dtype"] and "float32" in r["dtype"]
        assert "disagree" in r["variant"] and "(3, 5)" in r["variant"]
        assert "Expected more than 1 value" in r["one_value"]
    assert "weight has shape (2,)" in r1["local"]
    assert "rank(s) [1] rejected their input" in r0["local"]
    assert "expected 3 channels on axis 1" in r1["module_local"]
    assert "rank(s) [1] rejected their input" in r0["module_local"]
    # the group is still usable and in step: ranks hold 0s and 1s, so the global mean is 0.5
    for r in (r0, r1):
        torch.testing.assert_close(r["after_rm"], torch.full((3,), 0.05))
    y, n = r0["eval_alone"]
    assert n == 0 and y.shape == (4, 3, 5)
    assert "out of step" in r0["skipped"] and "layer '0'" in r0["skipped"] and "layer '1'" in r1["skipped"]
    for r in (r0, r1):
        y_relu, y = r["relu"]
        torch.testing.assert_close(y_relu, torch.relu(y))
        assert (y_relu == 0).any() and (y_relu > 0).any()
    y, n = r0["frozen_alone"]
    assert n == 0
    torch.testing.assert_close(y, torch.nn.functional.batch_norm(r0["x"], torch.zeros(3), torch.ones(3)))
    assert "did not complete within 1.5 s" in r0["stopped"] and "stopped calling" in r0["stopped"]
    assert r0["stopped_after"] < 1.5 + 2 + 3, r0["stopped_after"]  # its timeout, the grace (_GRACE_S), slack


# -- one process -----------------------------------------------------------------------------------------------
def test_without_process_group_it_is_plain_batch_norm():
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    ours, theirs = SyncBatchNorm(4, dtype=torch.float64), torch.nn.BatchNorm2d(4, dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours.train()(x[:0]).shape == theirs.train()(x[:0]).shape == (0, 4, 5, 5)  # an empty batch, as torch
    # torch's _BatchNorm (model surgery finds it), not torch's SyncBatchNorm (which DDP refuses on the CPU)
    assert isinstance(ours, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(ours, torch.nn.SyncBatchNorm)


def test_convert_sync_keeps_tensors_state_and_modes():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        bnlab.nn.BatchNorm2d(4, per="activation", spatial_size=(4, 4)), torch.nn.Flatten(),
        torch.nn.BatchNorm1d(64, momentum=None),
    )  # fmt: skip
    model(torch.randn(8, 3, 6, 6))
    model[3].eval()
    tensors = [(m.weight, m.bias, m.running_mean, m.running_var) for m in (model[1], model[3], model[5])]
    x = torch.randn(8, 3, 6, 6)
    with torch.no_grad():
        expected = model(x)
    out = convert_sync(model)
    assert out is model and all(isinstance(model[i], SyncBatchNorm) for i in (1, 3, 5))
    assert model[3].per == "activation" and model[3].spatial_size == (4, 4) and not model[3].training
    assert model[5].momentum is None
    for m, ts in zip((model[1], model[3], model[5]), tensors, strict=True):
        assert all(a is b for a, b in zip((m.weight, m.bias, m.running_mean, m.running_var), ts, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert bnlab.convert_sync is convert_sync and bnlab.nn.SyncBatchNorm is SyncBatchNorm
    assert isinstance(convert_sync(torch.nn.BatchNorm3d(2)), SyncBatchNorm)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="timeout"):
        SyncBatchNorm(3, timeout=0)
    with pytest.raises(ValueError, match="expected 3 channels"):
        SyncBatchNorm(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="cannot convert"):
        convert_sync(torch.nn.LazyBatchNorm2d())
    with pytest.raises(ValueError, match="ghost BN"):
        convert_sync(bnlab.nn.BatchNorm2d(3, virtual_batch=4))


def test_docstring_and_docs_examples_run():
    import doctest
    import pathlib
    import re

    import bnlab.distributed

    assert doctest.testmod(bnlab.distributed).failed == 0
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "distributed.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/distributed.md", "exec"), {})
