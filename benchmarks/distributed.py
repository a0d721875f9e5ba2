"""Distributed benchmark: synchronized BN against per-process BN, forward+backward, on 2 local processes.

    python benchmarks/distributed.py                  # the five benchmark shapes, NCHW and channels_last
    python benchmarks/distributed.py --quick          # two shapes, fewer repeats
    python benchmarks/distributed.py --shapes 32x64x56x56 --nproc 2 --repeats 21
    python benchmarks/distributed.py --quick --json docs/data/distributed.json   # also write the rows as JSON

The shape is the *global* batch: each of the ``--nproc`` processes (gloo over 127.0.0.1, one thread each)
holds N/nproc samples. In every process, taking turns in blocks (see ``benchmarks/cpu.py``):

- ``local``: ``bnlab.nn.functional.batch_norm`` on the process's shard — what each process computes with
  plain BN in data-parallel training (statistics of its shard only);
- ``sync``: ``bnlab.distributed.sync_batch_norm`` on the same shard — statistics of the whole batch
  (one all-gather forward — header and statistics in one row — and one backward; ~4·C floats per rank);
- ``torch``: ``torch.nn.functional.batch_norm`` on the shard — per-process BN with torch's own kernels, the
  anchor a CPU user has (``torch.nn.SyncBatchNorm`` runs on GPUs only); timed after the other two, in turns
  with ``local``, so that its allocations do not change their page faults.

Both run forward (training, running statistics updated) and ``autograd.grad`` for x, γ, β; every timed
call starts on all ranks together (a barrier before it, not timed: in training DDP's gradient all-reduce
lines the ranks up every step). Reported:
rank 0's median (``--stat min``: minimum) milliseconds and ``ratio`` = sync ÷ local (the overhead of
synchronizing; goal ≤ 1.3 for shards ≥ 8 MB), ``cpu ratio``, the same ratio of rank 0's own CPU time
(``time.thread_time``: the work, without the waits for the other rank — on a loaded machine the wall-clock
ratio mostly measures when the other process was scheduled), and ``sync/torch`` = sync ÷ torch's per-process
BN. A benchmark, not a test: it prints numbers and never fails
on slowness. Plain processes: default allocator, no tuning.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import socket
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu  # noqa: E402 - the sibling benchmark's timer
from cpu import QUICK_SHAPES, SHAPES, _parse_shape, interleaved  # noqa: E402

LAYOUTS = ("NCHW", "CL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fwd_bwd(fn, x, dy, w, b, rm, rv, cpu_times: list, **kw):
    """One training forward + backward; appends the calling thread's CPU seconds to ``cpu_times``."""

    def run():
        t0 = time.thread_time()
        xr = x.detach().requires_grad_()
        wr, br = w.detach().requires_grad_(), b.detach().requires_grad_()
        y = fn(xr, rm, rv, wr, br, training=True, **kw)
        out = torch.autograd.grad(y, (xr, wr, br), dy)
        cpu_times.append(time.thread_time() - t0)
        return out

    return run


def _rank(rank: int, world: int, port: int, shapes, repeats: int, stat: str, queue) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F

    import bnlab.nn.functional as BF
    from bnlab.distributed import sync_batch_norm

    torch.set_num_threads(1)
    cpu._STAT = min if stat == "min" else cpu._STAT
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # fmt: skip
    rows = []
    for shape in shapes:
        n = shape[0] // world
        local_shape = (n, *shape[1:])
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(local_shape, generator=g) * 2 + 0.5
        dy = torch.randn(local_shape, generator=g)
        c = shape[1]
        w, b = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
        rm, rv = torch.zeros(c), torch.ones(c)
        for layout in LAYOUTS:
            xl, dyl = x, dy
            if layout == "CL":
                xl, dyl = (
                    x.contiguous(memory_format=torch.channels_last),
                    dy.contiguous(memory_format=torch.channels_last),
                )
            cpu_local, cpu_sync, cpu_other = [], [], []  # (cpu_other: the anchor turns' CPU times, not reported)
            variants = {
                "local": _fwd_bwd(BF.batch_norm, xl, dyl, w, b, rm, rv, cpu_local),
                "sync": _fwd_bwd(sync_batch_norm, xl, dyl, w, b, rm, rv, cpu_sync),
            }
            dist.barrier()
            # every timed call starts on all ranks together (a barrier, not timed), as DDP's gradient all-reduce
            # aligns the ranks every training step: otherwise a rank's sync call also waits out the other
            # rank's previous (local) call, and the ratio measures the drift between ranks
            turns = interleaved(variants, repeats, before=dist.barrier)
            # torch's per-process BN in turns of its own with the local call, after: its allocations between
            # the other two would change their page faults (glibc returns freed blocks to the system or not
            # depending on what was allocated since)
            with_torch = {"local": _fwd_bwd(BF.batch_norm, xl, dyl, w, b, rm, rv, cpu_other),
                          "torch": _fwd_bwd(F.batch_norm, xl, dyl, w, b, rm, rv, cpu_other)}
            turns["torch"] = interleaved(with_torch, repeats, before=dist.barrier)["torch"]
            t = {name: timing.seconds for name, timing in turns.items()}
            f = {name: timing.faults for name, timing in turns.items()}
            cpu_ratio = cpu._STAT(cpu_sync) / cpu._STAT(cpu_local)
            rows.append((layout, shape, x.numel() * 4 / 2**20, t["local"], t["sync"], f["local"], f["sync"], cpu_ratio,
                         t["torch"]))  # fmt: skip
    if rank == 0:
        queue.put(rows)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", help="comma-separated NxCxHxW global shapes (default: the five benchmark shapes)")
    p.add_argument("--nproc", type=int, default=2, help="processes (default: 2)")
    p.add_argument("--repeats", type=int, default=11, help="turns per variant (default: 11)")
    p.add_argument("--quick", action="store_true", help="two shapes, 5 repeats")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="per-variant statistic (min: less sensitive to other jobs on a shared machine)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file (times in ms)")
    args = p.parse_args(argv)
    shapes = (
        [_parse_shape(s) for s in args.shapes.split(",")] if args.shapes else (QUICK_SHAPES if args.quick else SHAPES)
    )
    repeats = 5 if args.quick and args.repeats == 11 else args.repeats
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_rank, args=(r, args.nproc, port, shapes, repeats, args.stat, queue))
        for r in range(args.nproc)
    ]
    for proc in procs:
        proc.start()
    rows = queue.get(timeout=3600)
    for proc in procs:
        proc.join(60)
    print(f"torch {torch.__version__}, {args.nproc} processes (gloo, 127.0.0.1, 1 thread each), {os.cpu_count()} CPUs, "
          f"{args.stat} of {repeats} turns")  # fmt: skip
    print(f"{'fwd+bwd float32':<16}{'global shape':<22}{'MB/rank':>8}{'local ms':>10}{'sync ms':>10}{'ratio':>8}"
          f"{'cpu ratio':>10}{'faults/call local, sync':>26}{'torch ms':>10}{'sync/torch':>11}")  # fmt: skip
    for layout, shape, mb, t_local, t_sync, f_local, f_sync, cpu_ratio, t_torch in rows:
        print(
            f"{layout:<16}{str(shape):<22}{mb:>8.1f}{t_local * 1e3:>10.2f}{t_sync * 1e3:>10.2f}{t_sync / t_local:>8.2f}"
            f"{cpu_ratio:>10.2f}{f_local:>18.0f}, {f_sync:<6.0f}{t_torch * 1e3:>10.2f}{t_sync / t_torch:>11.2f}"
        )
    if args.json:
        write_json(args.json, rows, nproc=args.nproc, repeats=repeats, stat=args.stat)
    return 0


def write_json(path: str, rows: list, **settings) -> None:
    """The measured rows as JSON, as the printed table: times in ms, ``ratio`` = sync ÷ local (wall clock),
    ``cpu_ratio`` the same of rank 0's CPU time, ``torch_ms`` torch's per-process BN and ``ratio_torch`` = sync ÷
    torch; the machine and its load average as ``benchmarks/cpu.py``."""
    out = [
        {
            "layout": layout,
            "shape": list(shape),
            "mb_per_rank": round(mb, 2),
            "local_ms": t_local * 1e3,
            "sync_ms": t_sync * 1e3,
            "ratio": t_sync / t_local,
            "cpu_ratio": cpu_ratio,
            "faults_per_call": [f_local, f_sync],
            "torch_ms": t_torch * 1e3,
            "ratio_torch": t_sync / t_torch,
        }  # fmt: skip
        for layout, shape, mb, t_local, t_sync, f_local, f_sync, cpu_ratio, t_torch in rows
    ]
    meta = {"torch": torch.__version__, **cpu.machine(), **settings, "backend": "gloo", "threads_per_process": 1}
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**meta, "rows": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
