"""Data-parallel training on several processes: ``bnlab train --nproc N``, or under ``torchrun``.

Every process (a *replica*) holds the whole model, converted to synchronized BN
(:func:`bnlab.convert_sync`) and wrapped in ``DistributedDataParallel``; every step, each takes its shard
of the global mini-batch (the same batches :func:`bnlab.training.fit` draws in one process), so BN sees
the paper's set B — the whole mini-batch — and DDP sums the gradients. The loss is computed from the
logits of the whole batch (gathered), so a run on N processes equals the run on one process with the same
global batch size, up to float rounding. Only rank 0 shows progress, prints and writes checkpoints
(atomically, as in one process); ``--resume`` works the same; on Ctrl-C all ranks stop after the same
step.

The launcher (:func:`launch`, behind ``--nproc``) owns the run: Ctrl-C reaches it alone (the replicas
leave its process group) and it forwards it once to every replica; SIGTERM ends every replica; the
replicas die with it even if it is killed (:mod:`bnlab._lifeline`); a replica that dies or fails ends the
others, and the launcher says which rank it was.

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
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from . import _lifeline
from .distributed import all_gather, convert_sync

__all__ = [
    "Launch", "Replica", "ShardedModel", "current", "exit_process", "launch", "run_replica", "spawn", "TIMEOUT_S",
]  # fmt: skip

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
        out = all_gather(buf, group, TIMEOUT_S, "gather of the batch outputs")  # (world, pad, ...)
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


def run_replica(rank: int, world: int, port: int, flags, fn: Callable[..., int], args: tuple) -> NoReturn:
    """Body of one replica process started by :func:`launch` (through :func:`bnlab._lifeline.bootstrap`).

    Joins the process group, runs ``fn(*args)`` and ends the process with its status. An error is printed
    with its traceback, unless the launcher has asked every replica to stop (Ctrl-C: status 130) or is
    ending them because another rank failed: then it is only the echo of that (e.g. gloo's "Connection
    closed by peer") and nothing is printed.
    """
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    code = 1
    try:
        if not flags[_lifeline.STOP]:  # interrupted while starting: no need to meet the others
            _init(rank, world, f"tcp://127.0.0.1:{port}")
        # from here Ctrl-C (forwarded by the launcher) is fn's to handle; one that came before is in STOP
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if flags[_lifeline.STOP]:
            raise KeyboardInterrupt
        flags[_lifeline.READY + rank] = 1
        code = int(fn(*args) or 0)
        if rank == 0:
            flags[_lifeline.TOLD] = 1
    except BaseException:  # noqa: BLE001 - reported here, the exit status tells the launcher
        deadline = time.monotonic() + _ECHO_WAIT_S
        while not (flags[_lifeline.STOP] or flags[_lifeline.ABORT]) and time.monotonic() < deadline:
            time.sleep(0.05)  # a peer that died is noticed by the launcher, which then sets ABORT
        if flags[_lifeline.STOP]:
            code = 130
        elif not flags[_lifeline.ABORT]:
            traceback.print_exc()
    exit_process(code)


#: seconds a failing replica waits to learn from the launcher whether its error is the echo of another's
_ECHO_WAIT_S = 3.0
#: seconds the others get to end on their own after a rank other than 0 ended with an error status (rank 0
#: may be about to report the same error, e.g. an unreadable --data)
_FAILURE_GRACE_S = 1.5
#: after Ctrl-C: seconds to wait for the replicas to stop after their step (then they are killed), and
#: seconds the others get once one of them has ended
_STOP_WAIT_S = 120.0
_STOP_GRACE_S = 5.0


@dataclass
class Launch:
    """How a :func:`launch` ended.

    ``code``: the exit status to return (0; rank 0's own status when it reported its outcome itself; the
    first failing rank's status, 128 + N for a rank killed by signal N; 130 after Ctrl-C; 128 + N when the
    launcher got signal N, e.g. 143 for SIGTERM). ``how``: ``"ok"``, ``"reported"`` (rank 0 returned a
    non-zero status and said why), ``"failed"`` (``rank`` ended with ``status``: an exit status, or -N for
    signal N, as :attr:`multiprocessing.Process.exitcode`), ``"interrupted"`` or ``"terminated"``
    (``signal``). ``told``: rank 0's function returned, so it printed its own outcome.
    """

    code: int
    how: str
    told: bool = False
    rank: int | None = None
    status: int | None = None
    signal: int | None = None
    statuses: list = field(default_factory=list)


def launch(nproc: int, fn: Callable[..., int], *args) -> Launch:
    """Run ``fn(*args)`` in ``nproc`` new local processes, each a :class:`Replica`; say how it ended.

    The replicas die with this process, even when it is killed with SIGKILL (see :mod:`bnlab._lifeline`).
    While they run, this process handles the signals: Ctrl-C (SIGINT, to this process or its whole process
    group) is forwarded once to every replica, which stop after the same step (rank 0 saves); a second one
    is forwarded again (they stop at once), a third kills them; so does the first while a replica is still
    starting (no step can have been done yet: there is nothing to save). SIGTERM (or SIGHUP) kills every replica.
    When a replica dies or fails, the others are killed at once (after a short grace when a rank other
    than 0 ended with an error status, so that rank 0 can report an error they share).
    """
    ctx = mp.get_context("spawn")
    flags = ctx.RawArray("b", _lifeline.READY + nproc)
    port = _free_port()
    procs: list = []
    killed: set[int] = set()
    state = {"interrupts": 0, "stop_at": None, "signal": None}

    def kill(reason: int) -> None:
        flags[reason] = 1
        for r, p in enumerate(procs):
            if p.exitcode is None:
                killed.add(r)
                _signal(p, signal.SIGKILL)

    def on_signal(signum, frame) -> None:
        if signum == signal.SIGINT:
            state["interrupts"] += 1
            state["stop_at"] = state["stop_at"] or time.monotonic()
            flags[_lifeline.STOP] = 1
            if state["interrupts"] > 2 or len(procs) < nproc or not all(flags[_lifeline.READY :]):
                kill(_lifeline.ABORT)  # a third Ctrl-C, or still starting: no training step to finish yet
            for p in procs:
                _signal(p, signal.SIGINT)
        else:
            state["signal"] = signum
            kill(_lifeline.ABORT)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in handled} if main_thread else {}
    failure: tuple[int, int] | None = None  # (rank, status) of the first rank that failed on its own
    failed_at = first_end = None
    try:
        # the tracker's start unblocks SIGINT in this thread (bpo-33613): start it before blocking
        resource_tracker.ensure_running()
        for rank in range(nproc):
            if flags[_lifeline.STOP] or state["signal"]:
                break
            # a replica is born with SIGINT blocked, so a Ctrl-C that lands before it left our process group
            # waits until it has a handler (see bnlab._lifeline.bootstrap)
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                entry = (os.getpid(), "bnlab.parallel:run_replica", rank, nproc, port, flags, fn, args)
                p = ctx.Process(target=_lifeline.bootstrap, name=f"bnlab-rank-{rank}", args=entry)
                p.start()
                procs.append(p)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        while True:
            running = [p for p in procs if p.exitcode is None]  # before the statuses below: none is missed
            now = time.monotonic()
            for r, p in enumerate(procs):
                if p.exitcode is not None and first_end is None:
                    first_end = now
                if failure is None and p.exitcode not in (None, 0) and r not in killed and not state["stop_at"]:
                    failure, failed_at = (r, p.exitcode), now
            if not running:
                break
            mp.connection.wait([p.sentinel for p in running], timeout=0.1)
            if flags[_lifeline.ABORT]:
                kill(_lifeline.ABORT)  # again: a replica started while the signal was handled
                continue
            if state["stop_at"]:  # Ctrl-C: they stop after the same step; do not wait forever
                if now - state["stop_at"] > _STOP_WAIT_S or (first_end is not None and now - first_end > _STOP_GRACE_S):
                    kill(_lifeline.ABORT)
            elif failure is not None:
                rank, status = failure
                if status < 0 or rank == 0 or now - failed_at > _FAILURE_GRACE_S:
                    kill(_lifeline.ABORT)
    finally:
        if any(p.exitcode is None for p in procs):  # an error in this function: leave no replica behind
            kill(_lifeline.ABORT)
        for p in procs:
            p.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
    statuses = [p.exitcode for p in procs]
    told = bool(flags[_lifeline.TOLD])
    if state["signal"]:
        return Launch(128 + state["signal"], "terminated", told, signal=state["signal"], statuses=statuses)
    if state["stop_at"] or len(procs) < nproc:
        return Launch(130, "interrupted", told, statuses=statuses)
    if told and statuses[0] != 0:
        return Launch(statuses[0], "reported", told, rank=0, status=statuses[0], statuses=statuses)
    if failure is not None:
        rank, status = failure
        code = status if status > 0 else 128 - status
        return Launch(code, "failed", told, rank=rank, status=status, statuses=statuses)
    return Launch(0, "ok", told, statuses=statuses)


def _signal(p, signum: int) -> None:
    if p.exitcode is None:
        try:
            os.kill(p.pid, signum)
        except ProcessLookupError:  # ended meanwhile
            pass


def spawn(nproc: int, fn: Callable[..., int], *args) -> int:
    """Run ``fn(*args)`` in ``nproc`` new local processes; return the exit status (see :func:`launch`).

    0 only when every rank's ``fn`` returned 0: a rank that fails (returns non-zero, raises, or is killed)
    fails the whole run, and the other ranks are stopped.
    """
    return launch(nproc, fn, *args).code
