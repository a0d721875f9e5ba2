"""recalibrate inside torch.distributed: real gloo processes, each iterating its own shard of the batches.

One launch of 3 ranks runs every scenario in order (spawning is slow); the parent compares what the ranks
return with one process running Alg. 2 (``bnlab.recalibrate`` without a process group) over the union of
the shards. Shards are uneven, and rank 2 has no batches at all.
"""

from __future__ import annotations

import copy
import datetime
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import traceback

import pytest
import torch
from torch import nn

import bnlab
import bnlab.nn as bnn
from bnlab.inference import load_checkpoint

WORLD = 3
# batches of each rank: (batch size, ...) — uneven shards, and rank 2 holds none
SHARDS = {0: (8, 8, 5), 1: (3, 6), 2: ()}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        bnn.BatchNorm2d(4),  # per channel: m' = m·p·q
        nn.ReLU(),
        bnn.BatchNorm2d(4, per="activation", spatial_size=(4, 4)),  # per activation: m' = m
        bnn.BatchRenorm2d(4, track_running_stats=False),  # gets statistics from the pass
        nn.Flatten(),
        nn.Linear(64, 6),
        nn.BatchNorm1d(6),  # torch's own layer
        nn.Dropout(0.5),
    )


def _batches(rank: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + rank)
    return [torch.randn(n, 3, 6, 6, generator=g, dtype=torch.float32) * (1 + rank) + rank for n in SHARDS[rank]]


def _union() -> list[torch.Tensor]:
    return [b for r in range(WORLD) for b in _batches(r)]


def _stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


# -- what each rank runs ------------------------------------------------------------------------------------
def _scenarios(rank: int, world: int) -> dict:
    import torch.distributed as dist

    out = {}
    # 1. the default group: every rank ends with the statistics of the union
    model = _model()
    before = _stats(model)
    bnlab.recalibrate(model, _batches(rank), progress=False)
    out["world"] = _stats(model)
    out["before"] = before
    out["nbt"] = int(model[1].num_batches_tracked)

    # 2. a bad batch on rank 1 (one sample: one value per statistic in the per-activation layer): its own
    #    error there, an error naming it on the others, nothing changed anywhere, the group still in step
    model = _model()
    state = copy.deepcopy(model.state_dict())
    bad = [torch.randn(1, 3, 6, 6)] if rank == 1 else _batches(rank)
    try:
        bnlab.recalibrate(model, bad, progress=False, timeout=60)
        out["bad"] = "no error"
    except Exception as err:  # noqa: BLE001 - compared by the parent
        out["bad"] = f"{type(err).__name__}: {err}"
    out["bad_unchanged"] = all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

    # 3. no batches on any rank: the same error everywhere
    try:
        bnlab.recalibrate(_model(), [], progress=False, timeout=60)
        out["empty"] = "no error"
    except Exception as err:  # noqa: BLE001
        out["empty"] = f"{type(err).__name__}: {err}"

    # 4. an explicit process_group: ranks 0 and 1 merge their shards; rank 2 takes no part
    pair = dist.new_group([0, 1])
    if rank in (0, 1):
        model = _model()
        bnlab.recalibrate(model, _batches(rank), progress=False, process_group=pair)
        out["pair"] = _stats(model)
    dist.barrier()
    return out


def _child(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=60),
        )  # fmt: skip
        torch.save(_scenarios(rank, world), os.path.join(out, f"rank{rank}.pt"))
    except BaseException:  # noqa: BLE001 - reported to the parent
        with open(os.path.join(out, f"rank{rank}.err"), "w") as f:
            f.write(traceback.format_exc())
        os._exit(1)
    os._exit(0)  # skip the process group's teardown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("recal_ranks")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_child, args=(r, WORLD, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 240
    try:
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    errors = {r: (out / f"rank{r}.err").read_text() for r in range(WORLD) if (out / f"rank{r}.err").exists()}
    assert not hung, f"ranks {hung} still running after 240 s (killed); errors: {errors}"
    assert not errors, "\n".join(f"rank {r}:\n{e}" for r, e in errors.items())
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


# -- the checks -------------------------------------------------------------------------------------------------
def _single_process(batches) -> dict[str, torch.Tensor]:
    model = _model()
    bnlab.recalibrate(model, batches, progress=False)
    return _stats(model)


def test_every_rank_ends_with_alg2_over_the_union_of_uneven_shards(ranks):
    expected = _single_process(_union())
    assert set(expected) == set(ranks[0]["world"]) and len(expected) == 8  # 4 layers; the BRN one got buffers
    for r, result in enumerate(ranks):
        for k, v in expected.items():
            got = result["world"][k]
            assert torch.equal(got, ranks[0]["world"][k]), f"rank {r} differs from rank 0 in {k}"
            torch.testing.assert_close(got, v, rtol=1e-6, atol=1e-6, msg=f"rank {r}, {k}")
            assert not torch.equal(got, result["before"].get(k, torch.zeros(0)))  # they did change
        assert result["nbt"] == 0
    # a rank's own shard alone gives other statistics: the merge is what makes them equal
    alone = _single_process(_batches(0))
    assert not torch.allclose(alone["1.running_var"], expected["1.running_var"], rtol=1e-3)


def test_an_error_on_one_rank_is_raised_on_every_rank_and_changes_nothing(ranks):
    assert "ValueError" in ranks[1]["bad"] and "1 value per statistic" in ranks[1]["bad"], ranks[1]["bad"]
    for r in (0, 2):
        assert "rank(s) [1] of 3 failed" in ranks[r]["bad"] and "nothing was changed" in ranks[r]["bad"]
    assert all(result["bad_unchanged"] for result in ranks)


def test_no_batches_on_any_rank_is_the_same_error_everywhere(ranks):
    for result in ranks:
        assert "ValueError" in result["empty"] and "no batches on any of the 3 ranks" in result["empty"]


def test_an_explicit_process_group_merges_over_its_ranks_only(ranks):
    expected = _single_process(_batches(0) + _batches(1))
    for r in (0, 1):
        for k, v in expected.items():
            torch.testing.assert_close(ranks[r]["pair"][k], v, rtol=1e-6, atol=1e-6)
    assert "pair" not in ranks[2]


def test_process_group_without_torch_distributed_is_refused():
    with pytest.raises(ValueError, match="torch.distributed is not initialized"):
        bnlab.recalibrate(_model(), _batches(0), progress=False, process_group=object())
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        bnlab.recalibrate(_model(), _batches(0), progress=False, timeout=0)


# -- through the command line: bnlab evaluate --recalibrate --nproc N -----------------------------------------
def _bnlab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnlab", *args, "--quiet", "--lang", "en"], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.slow  # a training run, then 1 and 4 real gloo processes
def test_evaluate_recalibrate_nproc_is_one_process_over_the_union(tmp_path):
    """5 mini-batches over 4 ranks: shards of 2, 2, 1 and none. Rank 0's statistics (which every rank must
    share, or the command fails) equal one process over the 5 batches within 1e-6, and so does the score."""
    run = _bnlab("train", "--epochs", "1", "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    one = _bnlab("evaluate", str(tmp_path / "run"), "--recalibrate", "--recal-batches", "5",
                 "--save-recalibrated", str(tmp_path / "one.pt"))  # fmt: skip
    four = _bnlab("evaluate", str(tmp_path / "run"), "--recalibrate", "--recal-batches", "5", "--nproc", "4",
                  "--save-recalibrated", str(tmp_path / "four.pt"))  # fmt: skip
    assert one.returncode == 0 and four.returncode == 0, (one.stderr, four.stderr)
    assert four.stdout.replace("four.pt", "one.pt") == one.stdout  # the same scores, printed once
    before = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    a, b = load_checkpoint(tmp_path / "one.pt")["model"], load_checkpoint(tmp_path / "four.pt")["model"]
    keys = [k for k in a if "running" in k]
    assert len(keys) == 6  # 3 BN layers of the CNN
    for k in keys:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
        assert not torch.allclose(a[k], before[k], rtol=1e-3)  # recalibration changed them
    for k in a:
        if "running" not in k and k.endswith(("weight", "bias")):
            assert torch.equal(a[k], b[k]) and torch.equal(a[k], before[k])


def test_evaluate_nproc_without_recalibrate_is_refused(tmp_path, capsys):
    from bnlab.cli import main

    for flag in (["--nproc", "2"], ["--recal-batches", "3"], ["--save-recalibrated", str(tmp_path / "x.pt")]):
        assert main(["evaluate", str(tmp_path / "missing.pt"), *flag, "--lang", "en"]) == 2
        assert f"{flag[0]} goes with --recalibrate" in capsys.readouterr().err
