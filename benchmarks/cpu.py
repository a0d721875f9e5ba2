"""CPU benchmark: bnlab's batch norm against torch's own kernels, measured side by side in one run.

    python benchmarks/cpu.py                      # the five issue shapes and 16x8x4x4, 1 and 2 threads
    python benchmarks/cpu.py --quick --no-compile # two shapes (and 16x8x4x4), fewer repeats, no compile
    python benchmarks/cpu.py --shapes 32x64x56x56 --threads 1,2 --repeats 31
    python benchmarks/cpu.py --quick --json docs/data/cpu.json   # also write the rows as JSON

Measured as a user's process runs: the default allocator (no ``mallopt`` or other tuning), every call's
result dropped at once, as a training loop drops last step's activations. Every case times its
variants side by side, taking turns call by call (native, ours, native, ours, ...; ``--block k`` for k
calls per turn, the first of each not counted), and reports the median over ``--repeats`` turns in
milliseconds and the minor page faults per call (``resource.getrusage``: a freed buffer the allocator
handed back to the OS and faulted in again costs ~0.2 ms per MB here); ``ratio`` is ours ÷ native, so
< 1 means bnlab is faster. All inputs are float32. It is a benchmark, not a test: it prints numbers and
never fails on slowness.

``bnlab`` is what a user gets: the head of the CPU chain, the compiled family (:mod:`bnlab.kernels.native`)
where a C compiler built it. ``pure`` is the same bnlab call with that family switched off (the pure-torch
``cpu`` family runs, as on a machine without a compiler), timed in the same turns (``--no-pure`` skips it).

Cases (native = what a torch user runs today):
- ``fwd train NCHW``: ``bnlab.nn.functional.batch_norm(x, rm, rv, w, b, training=True)`` vs
  ``torch.nn.functional.batch_norm`` with the same arguments (both update the running statistics);
  ``compiled`` is ``torch.compile`` of that same torch call, its one-off compile time reported apart;
- ``fwd train CL``: the same on a channels_last input;
- ``fwd+bwd CL``: forward and ``autograd.grad`` for x, γ, β on a channels_last input;
- ``eval NCHW``: ``training=False`` with the running statistics;
- ``fwd+bwd NCHW``: the same on a contiguous input (and the small-tensor case, 16x8x4x4, which runs only this);
- ``bwd NCHW``: ``autograd.grad`` of a retained graph (backward only);
- ``ref fwd`` / ``ref bwd``: the NumPy reference (:mod:`bnlab.reference`, axes (0, 2, 3)) vs torch's native
  NCHW training forward / backward at the same thread count (the target is set at 1 thread).

Every thread count goes into one table. ``% copy`` is the share of the machine's copy bandwidth a call
reaches (measured first at each thread count: the fastest ``copy_`` of a 32 MB tensor, a read and a write per byte)
given the least traffic the case needs — a training forward 2 reads and 1 write of x (statistics, then the
output), eval 1 read and 1 write, the backward 2 reads (the reductions over dy and x) and 2 reads and 1 write
(dx), forward + backward the sum: 100 % is the physical limit of the algorithm, not of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np
import torch

import bnlab.nn.functional as BF
from bnlab import reference as ref
from bnlab.kernels import native as native_family

SHAPES = [(32, 64, 56, 56), (32, 256, 28, 28), (64, 512, 14, 14), (128, 64, 28, 28), (256, 32, 8, 8)]
QUICK_SHAPES = [(32, 64, 56, 56), (256, 32, 8, 8)]
SMALL = (16, 8, 4, 4)  # the small-tensor case: Python calls per step, not bandwidth (fwd+bwd NCHW only)
_STAT = statistics.median
CASES = ["fwd train NCHW", "fwd train CL", "fwd+bwd CL", "fwd+bwd NCHW", "eval NCHW", "bwd NCHW", "ref fwd", "ref bwd"]
# the least traffic of each case, in passes over x (reads and writes of x-sized tensors; see the docstring)
PASSES = {"fwd train NCHW": 3, "fwd train CL": 3, "fwd+bwd CL": 8, "fwd+bwd NCHW": 8, "eval NCHW": 2, "bwd NCHW": 5,
          "ref fwd": 3, "ref bwd": 5}  # fmt: skip


def copy_bandwidth(repeats: int = 21, nbytes: int = 32 << 20) -> float:
    """Bytes per second of ``copy_`` (one read and one write of each byte), the fastest of ``repeats``: the
    machine's capability (a median of fresh clones measured the load and page faults: 2.7 GB/s, cases at 300 %)."""
    src = torch.ones(nbytes // 4)
    dst = src.clone()  # into a buffer already faulted in: a fresh 32 MB clone measures page faults
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / min(times)


def _parse_shape(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.lower().split("x"))


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Timing(NamedTuple):
    """One variant's calls: ``seconds`` is the statistic the run reports (median, or minimum with ``--stat
    min``), ``faults`` the mean minor page faults per call; ``median`` and ``minimum`` both, always."""

    seconds: float
    faults: float
    median: float
    minimum: float


def interleaved(variants: dict, repeats: int, block: int = 1, warmup: int = 1, before=None) -> dict[str, Timing]:
    """A :class:`Timing` per variant, the variants taking turns call by call.

    ``block`` consecutive calls per turn; with block > 1 the first call of each block is not counted.
    ``before``: called (not timed) before every call, e.g. a barrier that starts all ranks together.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in variants}
    faults = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            for i in range(block):
                if before is not None:
                    before()
                f0 = _minor_faults()
                t0 = time.perf_counter()
                fn()
                dt = time.perf_counter() - t0
                if i > 0 or block == 1:
                    times[name].append(dt)
                    faults[name].append(_minor_faults() - f0)
    return {
        name: Timing(_STAT(ts), statistics.fmean(faults[name]), statistics.median(ts), min(ts))
        for name, ts in times.items()
    }


def pure(fn):
    """``fn`` run with the compiled family switched off (the chain starts at the pure ``cpu`` family)."""

    def run():
        saved = native_family._state.get("lib")
        native_family._state["lib"] = None
        try:
            return fn()
        finally:
            native_family._state["lib"] = saved

    return run


class Inputs:
    """Tensors for one shape: x (NCHW and channels_last), parameters, running stats, dy; NumPy copies."""

    def __init__(self, shape):
        g = torch.Generator().manual_seed(0)
        c = shape[1]
        self.x = torch.randn(shape, generator=g) * 2 + 0.5
        self.x_cl = self.x.contiguous(memory_format=torch.channels_last)
        self.dy = torch.randn(shape, generator=g)
        self.dy_cl = self.dy.contiguous(memory_format=torch.channels_last)
        self.w = torch.rand(c, generator=g) + 0.5
        self.b = torch.randn(c, generator=g)
        self.rm, self.rv = torch.zeros(c), torch.ones(c)
        self.x_np, self.dy_np = self.x.numpy(), self.dy.numpy()
        self.w_np, self.b_np = self.w.numpy(), self.b.numpy()


def _train(fn, t: Inputs, x):
    return lambda: fn(x, t.rm, t.rv, t.w, t.b, training=True)


def _fwd_bwd(fn, t: Inputs, x, dy):
    def run():
        xr = x.detach().requires_grad_()
        w = t.w.detach().requires_grad_()
        b = t.b.detach().requires_grad_()
        y = fn(xr, t.rm, t.rv, w, b, training=True)
        return torch.autograd.grad(y, (xr, w, b), dy)

    return run


def _bwd(fn, t: Inputs):
    xr = t.x.detach().requires_grad_()
    w = t.w.detach().requires_grad_()
    b = t.b.detach().requires_grad_()
    y = fn(xr, None, None, w, b, training=True)
    return lambda: torch.autograd.grad(y, (xr, w, b), t.dy, retain_graph=True)


class _Reference:
    """A NumPy reference call (no kernel family: no ``pure`` variant)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        return self.fn()


def compile_peer(t: Inputs):
    """torch.compile of the same F.batch_norm call; returns (callable, seconds of the first call).

    Dynamo's state is reset first, so every shape gets its own compile (no recompile limit, no reuse).
    """
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, rm, rv, w, b: torch.nn.functional.batch_norm(x, rm, rv, w, b, training=True), dynamic=False
    )
    t0 = time.perf_counter()
    compiled(t.x, t.rm, t.rv, t.w, t.b)
    return (lambda: compiled(t.x, t.rm, t.rv, t.w, t.b)), time.perf_counter() - t0


def run_shape(shape, repeats: int, block: int, use_compile: bool, cases, with_pure: bool = True) -> list[dict]:
    t = Inputs(shape)
    with_pure = with_pure and native_family.available()

    def timed(variants):
        if with_pure and "ours" in variants and not isinstance(variants["ours"], _Reference):
            variants = {**variants, "pure": pure(variants["ours"])}
        return interleaved(variants, repeats, block)

    def ms(result, name):
        return result[name][0]

    F = torch.nn.functional
    rows = []

    def add(case, result, extra=None):
        native, ours = result["native"], result["ours"]
        row = {"case": case, "shape": shape, "native": native.seconds, "ours": ours.seconds}
        row["faults"] = (native.faults, ours.faults)
        row["ratio_median"], row["ratio_min"] = ours.median / native.median, ours.minimum / native.minimum
        if "pure" in result:
            row["pure"] = result["pure"][0]
        row.update(extra or {})
        rows.append(row)

    if "fwd train NCHW" in cases:
        variants = {"native": _train(F.batch_norm, t, t.x), "ours": _train(BF.batch_norm, t, t.x)}
        extra = {}
        if use_compile:
            try:
                variants["compiled"], extra["compile_s"] = compile_peer(t)
            except Exception as exc:  # no C++ compiler, unsupported platform, ...
                print(f"  torch.compile unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        result = timed(variants)
        if "compiled" in result:
            extra["compiled"] = ms(result, "compiled")
        add("fwd train NCHW", result, extra)
    if "fwd train CL" in cases:
        add(
            "fwd train CL",
            timed({"native": _train(F.batch_norm, t, t.x_cl), "ours": _train(BF.batch_norm, t, t.x_cl)}),
        )
    if "fwd+bwd CL" in cases:
        variants = {
            "native": _fwd_bwd(F.batch_norm, t, t.x_cl, t.dy_cl),
            "ours": _fwd_bwd(BF.batch_norm, t, t.x_cl, t.dy_cl),
        }
        add("fwd+bwd CL", timed(variants))
    if "fwd+bwd NCHW" in cases:
        variants = {"native": _fwd_bwd(F.batch_norm, t, t.x, t.dy), "ours": _fwd_bwd(BF.batch_norm, t, t.x, t.dy)}
        add("fwd+bwd NCHW", timed(variants))
    if "eval NCHW" in cases:
        variants = {
            "native": lambda: F.batch_norm(t.x, t.rm, t.rv, t.w, t.b, training=False),
            "ours": lambda: BF.batch_norm(t.x, t.rm, t.rv, t.w, t.b, training=False),
        }
        add("eval NCHW", timed(variants))
    if "bwd NCHW" in cases:
        add("bwd NCHW", timed({"native": _bwd(F.batch_norm, t), "ours": _bwd(BF.batch_norm, t)}))
    axes = (0, 2, 3)
    if "ref fwd" in cases:
        variants = {
            "native": lambda: F.batch_norm(t.x, None, None, t.w, t.b, training=True),
            "ours": _Reference(lambda: ref.forward(t.x_np, t.w_np, t.b_np, axes=axes)),
        }
        add("ref fwd", timed(variants))
    if "ref bwd" in cases:
        _, cache = ref.forward(t.x_np, t.w_np, t.b_np, axes=axes)
        variants = {"native": _bwd(F.batch_norm, t), "ours": _Reference(lambda: ref.backward(t.dy_np, cache))}
        add("ref bwd", timed(variants))
    return rows


def bandwidth_pct(row: dict, copy_bps: float) -> tuple[float, float]:
    """(native, bnlab) % of the copy bandwidth, given the case's least traffic (:data:`PASSES`)."""
    nbytes = PASSES[row["case"]] * 4 * np.prod(row["shape"])
    return tuple(100 * nbytes / row[k] / copy_bps for k in ("native", "ours"))


def format_table(rows: list[dict]) -> str:
    """One table, every thread count (``rows`` carry ``threads`` and ``copy_bps``)."""
    head = (
        "| threads | case | shape | native ms | bnlab ms | ratio bnlab/native | median ratio | min ratio "
        "| % copy native, bnlab | faults/call native, bnlab | pure ms | ratio pure/native | compiled ms "
        "| ratio compiled/native | compile s |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        comp = r.get("compiled")
        comp_ms = f"{comp * 1e3:.2f}" if comp is not None else ""
        comp_ratio = f"{comp / r['native']:.2f}" if comp is not None else ""
        comp_s = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        pct = bandwidth_pct(r, r["copy_bps"])
        pure_ms = f"{r['pure'] * 1e3:.2f}" if r.get("pure") is not None else ""
        pure_ratio = f"{r['pure'] / r['native']:.2f}" if r.get("pure") is not None else ""
        lines.append(
            f"| {r['threads']} | {r['case']} | {shape} | {r['native'] * 1e3:.2f} | {r['ours'] * 1e3:.2f} | "
            f"{r['ours'] / r['native']:.2f} | {r['ratio_median']:.2f} | {r['ratio_min']:.2f} | "
            f"{pct[0]:.0f}, {pct[1]:.0f} | "
            f"{r['faults'][0]:.0f}, {r['faults'][1]:.0f} | {pure_ms} | {pure_ratio} | "
            f"{comp_ms} | {comp_ratio} | {comp_s} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", help="comma-separated NxCxHxW shapes (default: the five issue shapes)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=15, help="turns per variant (median reported)")
    p.add_argument(
        "--block", type=int, default=1, help="calls per variant per turn (default 1; if > 1 the first is not counted)"
    )
    p.add_argument("--quick", action="store_true", help="two shapes, 5 repeats")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile peer")
    p.add_argument("--no-pure", dest="pure", action="store_false", help="skip bnlab's pure family (no compiled code)")
    p.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="let torch.compile reuse its on-disk caches (default: a fresh cache dir, so compile times are cold)",
    )
    p.add_argument("--stat", choices=("median", "min"), default="median", help="statistic of the timed calls")
    p.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)}")
    p.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file (times in ms)")
    args = p.parse_args(argv)

    shapes = (
        [_parse_shape(s) for s in args.shapes.split(",")] if args.shapes else (QUICK_SHAPES if args.quick else SHAPES)
    )
    repeats = 5 if args.quick and args.repeats == 15 else args.repeats
    cases = set(CASES if not args.cases else (c.strip() for c in args.cases.split(",")))
    unknown = cases - set(CASES)
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; choose from {CASES}")
    if args.compile and not args.warm_compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bnlab-bench-inductor-")
    global _STAT
    _STAT = statistics.median if args.stat == "median" else min
    print(
        f"# torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads available, "
        f"float32, {args.stat} over {repeats} turns of blocks of {args.block} calls, default allocator, "
        "results dropped each call; ratio < 1: bnlab faster"
    )
    lib = native_family.library_path()
    print(f"# bnlab's CPU family: {'native (compiled: ' + lib.name + ')' if lib else 'cpu (no compiled family)'}")
    measured, copy = [], {}
    for threads in (int(s) for s in args.threads.split(",")):
        torch.set_num_threads(threads)
        copy[threads] = copy_bandwidth()
        print(f"# {threads} thread(s): copy bandwidth {copy[threads] / 1e9:.1f} GB/s", flush=True)
        for shape in shapes:
            rows = run_shape(shape, repeats, args.block, args.compile, cases, args.pure)
            measured += [{"threads": threads, "copy_bps": copy[threads], **r} for r in rows]
        if "fwd+bwd NCHW" in cases and SMALL not in shapes:
            rows = run_shape(SMALL, repeats, args.block, False, {"fwd+bwd NCHW"}, args.pure)
            measured += [{"threads": threads, "copy_bps": copy[threads], **r} for r in rows]
    print()
    print(format_table(measured), flush=True)
    if args.json:
        copy_gbs = {str(t): round(v / 1e9, 2) for t, v in copy.items()}
        write_json(args.json, measured, repeats=repeats, stat=args.stat, block=args.block, copy_gbs=copy_gbs)
    return 0


def machine() -> dict:
    """Where and when: the date, the CPU model, the CPU count and the load average when the run ended."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu_model": model, "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def command_line() -> str:
    """This run's command, as a user would type it from the repository's root (the book prints it)."""
    return shlex.join(["python", "benchmarks/" + os.path.basename(sys.argv[0]), *sys.argv[1:]])


def write_json(path: str, rows: list[dict], **settings) -> None:
    """The measured rows as JSON: times in ms, ``ratio`` = bnlab ÷ native, as the printed table."""
    out = []
    for r in rows:
        row = {"threads": r["threads"], "case": r["case"], "shape": list(r["shape"]),
               "native_ms": r["native"] * 1e3, "bnlab_ms": r["ours"] * 1e3, "ratio": r["ours"] / r["native"],
               "ratio_median": r["ratio_median"], "ratio_min": r["ratio_min"],
               "faults_per_call": list(r["faults"]), "min_passes": PASSES[r["case"]],
               "copy_pct": [round(float(v), 1) for v in bandwidth_pct(r, r["copy_bps"])]}  # fmt: skip
        if r.get("pure") is not None:
            row.update(pure_ms=r["pure"] * 1e3, pure_ratio=r["pure"] / r["native"])
        if r.get("compiled") is not None:
            row.update(compiled_ms=r["compiled"] * 1e3, compile_s=r.get("compile_s"))
        out.append(row)
    lib = native_family.library_path()
    meta = {"torch": torch.__version__, "numpy": np.__version__, **machine(), **settings,
            "bnlab_family": "native" if lib else "cpu", "command": command_line()}  # fmt: skip
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**meta, "rows": out}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
