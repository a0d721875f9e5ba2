"""Per-call overhead of bnlab's batch norm on small tensors, side by side with torch in one run.

    python benchmarks/overhead.py            # (256, 32, 8, 8) and (16, 8, 4, 4), 1 thread
    python benchmarks/overhead.py --cpu      # the thread's CPU time instead of wall time (a shared machine)

Where a call is cheap, Python around the kernel decides the time. Three ways to run the same training
forward + backward are timed in turns (torch, eager door, operator, torch, ...), median over the turns:

- ``torch``: ``torch.nn.functional.batch_norm`` (the anchor);
- ``bnlab``: ``bnlab.nn.functional.batch_norm`` as a user calls it (plain eager mode takes the light
  autograd Function, see ``bnlab.nn._dispatch.route``);
- ``bnlab via op``: the same implementation through the registered ``torch.ops.bnlab.batch_norm_train``
  (what compile/export/vmap see), to show what the eager door saves.

A benchmark, not a test: it prints numbers (µs per call and ratios to torch) and never fails.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bnlab.nn
import bnlab.nn.functional as BF

_CLOCK = time.perf_counter


def _turns(fns: dict, calls: int, repeats: int) -> dict[str, float]:
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()  # not counted: the first call of a turn
            t0 = _CLOCK()
            for _ in range(calls):
                fn()
            times[name].append((_CLOCK() - t0) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def _module_case(shape: tuple[int, ...], calls: int, repeats: int) -> dict[str, float]:
    """torch.nn.BatchNorm2d against the drop-in bnlab.nn.BatchNorm2d, training forward + backward."""
    c = shape[1]
    x = torch.randn(shape, requires_grad=True)
    dy = torch.randn(shape)
    theirs, ours = torch.nn.BatchNorm2d(c), bnlab.nn.BatchNorm2d(c)

    def step(layer):
        def run():
            y = layer(x)
            torch.autograd.grad(y, (x, layer.weight, layer.bias), dy)

        return run

    return _turns({"torch": step(theirs), "bnlab": step(ours)}, calls, repeats)


def _case(shape: tuple[int, ...], calls: int, repeats: int) -> dict[str, float]:
    c = shape[1]
    x = torch.randn(shape, requires_grad=True)
    w = torch.ones(c, requires_grad=True)
    b = torch.zeros(c, requires_grad=True)
    rm, rv = torch.zeros(c), torch.ones(c)
    dy = torch.randn(shape)
    count = shape[0] * shape[2] * shape[3]

    def run_torch():
        y = torch.nn.functional.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
        torch.autograd.grad(y, (x, w, b), dy)

    def run_bnlab():
        y = BF.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
        torch.autograd.grad(y, (x, w, b), dy)

    def run_op():
        y, mean, var = torch.ops.bnlab.batch_norm_train(x, w, b, [0, 2, 3], 1e-5, False)
        BF.update_running_stats(rm, rv, mean, var, count, 0.1)
        torch.autograd.grad(y, (x, w, b), dy)

    return _turns({"torch": run_torch, "bnlab": run_bnlab, "op": run_op}, calls, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--cpu", action="store_true", help="time the thread's CPU time (less disturbed by other jobs)")
    args = p.parse_args()
    global _CLOCK
    _CLOCK = time.thread_time if args.cpu else time.perf_counter
    torch.set_num_threads(1)
    clock = "CPU" if args.cpu else "wall"
    print(
        f"torch {torch.__version__}, 1 thread; {clock} µs per training forward + backward "
        f"(median of {args.repeats} turns)"
    )
    print(f"{'shape':>18} {'torch':>9} {'bnlab':>9} {'via op':>9} {'bnlab/torch':>12} {'op/torch':>9}")
    for shape in [(256, 32, 8, 8), (16, 8, 4, 4)]:
        t = _case(shape, args.calls, args.repeats)
        name = "x".join(map(str, shape))
        print(
            f"{name:>18} {t['torch']:9.1f} {t['bnlab']:9.1f} {t['op']:9.1f} "
            f"{t['bnlab'] / t['torch']:12.2f} {t['op'] / t['torch']:9.2f}"
        )
    print(f"\n{'nn.BatchNorm2d':>18} {'torch':>9} {'bnlab':>9} {'bnlab/torch':>12}")
    for shape in [(256, 32, 8, 8), (16, 8, 4, 4)]:
        t = _module_case(shape, args.calls, args.repeats)
        name = "x".join(map(str, shape))
        print(f"{name:>18} {t['torch']:9.1f} {t['bnlab']:9.1f} {t['bnlab'] / t['torch']:12.2f}")


if __name__ == "__main__":
    main()
