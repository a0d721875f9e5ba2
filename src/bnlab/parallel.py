"""Data-parallel training on several processes: ``bnlab train --nproc N``, or under ``torchrun``.

Every process (a *replica*) holds the whole model, converted to synchronized BN
(:func:`bnlab.convert_sync`) and wrapped in ``DistributedDataParallel``; every step, each takes its shard
of the global mini-batch (the same batches :func:`bnlab.training.fit` draws in one process), so BN sees
the paper's set B — the whole mini-batch — and DDP sums the gradients. The loss is computed from the
logits of the whole batch (gathered), so a run on N processes equals the run on one process with the same
global batch size, up to float rounding. Only rank 0 shows progress, prints and writes checkpoints
(atomically, as in one process); ``--resume`` works the same; on Ctrl-C all ranks stop after the same
step.

Launching: :func:`spawn` starts N local processes (gloo: ``bnlab train`` runs on the CPU); under ``torchrun``
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set) :func:`current` joins the process group
from those variables — which is how a run goes to several machines::

    bnlab train --nproc 2 --epochs 1
    torchrun --nproc-per-node 2 -m bnlab train --epochs 1
"""

from __future__ import annotations

import atexit
import datetime
import gc
import inspect
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .distributed import _all_gather, convert_sync

__all__ = ["Replica", "ShardedModel", "current", "exit_process", "spawn", "TIMEOUT_S"]

#: seconds any collective may wait for the other ranks before the run stops with an error
TIMEOUT_S = float(os.environ.get("BNLAB_DIST_TIMEOUT", "300"))

_current: Replica | None = None


class Replica:
    """This process's place in a data-parallel run: ``rank``, ``world`` size, ``is_main`` (rank 0)."""

    def __init__(self, rank: int, world: int, group=None) -> None:
        self.rank, self.world, self.group = rank, world, group
        self.is_main = rank == 0

    def wrap(self, model: nn.Module) -> ShardedModel:
        """``model`` with synchronized BN, in DDP, taking this rank's shard of each batch."""
        return ShardedModel(model, self)

    def agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any (e.g. Ctrl-C): all ranks stop after the same step."""
        t = torch.tensor([1.0 if flag else 0.0])
        work = dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        work.wait(timeout=datetime.timedelta(seconds=TIMEOUT_S))
        return bool(t.item() > 0)


class _GatherBatch(torch.autograd.Function):
    """All ranks' outputs (shards padded to the largest) concatenated in rank order.

    Every rank computes the same loss from the same gathered tensor, so the gradient of its own rows is
    the same everywhere: backward needs no communication. It is scaled by the world size because DDP
    averages (rather than sums) the ranks' gradients.
    """

    @staticmethod
    def forward(ctx, z, sizes, rank, world, group):
        pad = max(sizes)
        buf = z.new_zeros((pad, *z.shape[1:]))
        buf[: z.shape[0]] = z
        out = _all_gather(buf, group, TIMEOUT_S, "gather of the batch outputs")  # (world, pad, ...)
        ctx.lo, ctx.hi, ctx.world = sum(sizes[:rank]), sum(sizes[: rank + 1]), world
        return torch.cat([out[r, :n] for r, n in enumerate(sizes)])

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.lo : ctx.hi] * ctx.world, None, None, None, None


class ShardedModel(nn.Module):
    """A model as one replica of a data-parallel run.

    In training, ``forward(x)`` takes the whole global batch ``x``, runs this rank's shard (rows
    ``x.tensor_split(world)[rank]``) through the DDP-wrapped model with synchronized BN, and returns the
    outputs of the whole batch (gathered from all ranks). In eval mode it is the plain model (eval never
    communicates). ``state_dict``/``spec`` are those of the plain model, so checkpoints are the same as in
    one process.
    """

    def __init__(self, model: nn.Module, replica: Replica) -> None:
        super().__init__()
        self.net = convert_sync(model, process_group=replica.group, timeout=TIMEOUT_S)
        self.replica = replica
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        # DDP is kept out of the module tree: parameters, state_dict and hooks see the plain model
        ddp = nn.parallel.DistributedDataParallel
        # BN running statistics are identical on every rank already (synchronized BN): no buffer broadcast
        no_sync = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(ddp).parameters
            else "broadcast_buffers"
        )
        self.__dict__["ddp"] = ddp(self.net, device_ids=ids, process_group=replica.group, **{no_sync: False})

    @property
    def spec(self) -> dict:
        return self.net.spec

    def pre_activation_layers(self) -> list[str]:
        return [f"net.{n}" for n in self.net.pre_activation_layers()]

    def state_dict(self, *args, **kwargs):
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.net(x)
        r = self.replica
        sizes = [len(s) for s in torch.arange(x.shape[0]).tensor_split(r.world)]
        shard = x.tensor_split(r.world)[r.rank]
        return _GatherBatch.apply(self.ddp(shard), sizes, r.rank, r.world, r.group)


def current() -> Replica | None:
    """This process's :class:`Replica` in a data-parallel run, or None in a plain single-process run.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the first call joins the process group
    (``env://``: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
    """
    global _current
    if _current is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        _init(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://")
        # torchrun starts us, so nobody else tears the group down; ``python -m bnlab`` ends through
        # :func:`exit_process`, a script of the user's through this handler
        atexit.register(_leave)
    return _current


def _leave() -> None:
    """Leave the process group while the interpreter is fully alive.

    DDP and the synchronized layers hold the group through reference cycles; freed only during the
    interpreter's teardown, the group's gloo threads still hold work whose tensors reach into Python, and
    the process aborts ("terminate called without an active exception", exit status 134 or -6). So the
    cycles are collected first, and the group destroyed from the main thread.
    """
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End this replica's process with status ``code``, skipping the interpreter's teardown.

    After a clean end (0, or 130 for Ctrl-C after the same step on every rank) the process group is left
    first (:func:`_leave`); after a failure it is not, since a peer may be gone and the teardown would wait
    for it. Standard streams are flushed; no C++ destructor runs after that, so the exit cannot abort.
    """
    if code in (0, 130):
        try:
            _leave()
        except Exception:  # noqa: BLE001 - the work is done and saved; a teardown error must not change the status
            traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _init(rank: int, world: int, init_method: str) -> Replica:
    global _current
    # bnlab train runs on the CPU: gloo (BNLAB_DIST_BACKEND=nccl for a CUDA training loop of your own)
    backend = os.environ.get("BNLAB_DIST_BACKEND", "gloo")
    dist.init_process_group(
        backend, init_method=init_method, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S)
    )
    _current = Replica(rank, world)
    # tqdm's default lock is a multiprocessing semaphore, which exit_process would leave to the resource
    # tracker ("leaked semaphore objects" at exit); only one thread of this process draws bars
    tqdm.set_lock(threading.RLock())
    return _current


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank: int, world: int, port: int, fn: Callable[..., int], args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    _init(rank, world, f"tcp://127.0.0.1:{port}")
    code = 1
    try:
        code = int(fn(*args) or 0)
    except BaseException:  # noqa: BLE001 - reported here, the exit status tells the launcher
        traceback.print_exc()
    exit_process(code)


def spawn(nproc: int, fn: Callable[..., int], *args) -> int:
    """Run ``fn(*args)`` in ``nproc`` new local processes, each a :class:`Replica` (see :func:`current`).

    Returns rank 0's exit status (or the first failing rank's). Ctrl-C reaches every process: each
    finishes its step and rank 0 saves; this process waits for them. If a rank fails, the others stop
    with an error within :data:`TIMEOUT_S` seconds, and any still running after that are ended.
    """
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_child, args=(r, nproc, port, fn, args)) for r in range(nproc)]
    for p in procs:
        p.start()
    failed_at = None
    while any(p.is_alive() for p in procs):
        try:
            for p in procs:
                p.join(0.2)
        except KeyboardInterrupt:  # the children got the same Ctrl-C: they save and stop
            continue
        if failed_at is None and any(p.exitcode not in (None, 0) for p in procs):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > TIMEOUT_S + 10:
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGKILL)
    codes = [p.exitcode for p in procs]
    return next((c for c in codes if c), 0)
