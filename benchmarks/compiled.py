"""A compiled ResNet-style training step with bnlab's BN against the same step with torch's BN.

    python benchmarks/compiled.py                 # NCHW and channels_last, 1 thread
    python benchmarks/compiled.py --steps 15 --layouts nchw --json out.json

The model: a stem conv–BN–ReLU, then residual blocks (conv–BN–ReLU–conv–BN, plus the input, then ReLU)
at 32, 64 and 128 channels (the later ones with stride 2), global average pooling and a linear head;
batch 32 of 3×32×32 images, cross-entropy, SGD with momentum. Three variants run the same step on the
same weights and data, measured side by side in one process (taking turns step by step, medians; with
``--rounds R`` the steps run in R rounds, each giving its own ratio, so that the spread over time on a
shared machine shows):

- ``torch compiled``: torch.nn.BatchNorm2d under ``torch.compile`` (the anchor);
- ``bnlab compiled``: bnlab.nn.BatchNorm2d under ``torch.compile``;
- ``bnlab eager``: bnlab.nn.BatchNorm2d without compile.

It prints each variant's median step time, its ratio to the anchor (wall time, and the ratio of the
thread's CPU time, which other jobs on the machine disturb less), and each compile's one-off time (the
first step's wall time). A plain process: default allocator, no tuning, one thread unless told.
It is a benchmark, not a test: it prints numbers and never fails on slowness.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from cpu import machine  # the date, CPU and load average, as benchmarks/cpu.py records them
from torch import nn

import bnlab.nn


def block(c_in: int, c_out: int, stride: int, norm) -> nn.Module:
    return _Block(c_in, c_out, stride, norm)


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.skip = None
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


def resnet(norm) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1, bias=False), norm(32), nn.ReLU(),
        block(32, 32, 1, norm), block(32, 64, 2, norm), block(64, 128, 2, norm),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


def make_step(model: nn.Module, compiled: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        fwd = torch.compile(model)

        def step(x, y):  # noqa: F811 - the compiled model inside the same step
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(fwd(x), y)
            loss.backward()
            opt.step()
            return loss

    return step


def run(layout: str, steps: int, batch: int, rounds: int = 1) -> dict:
    torch.manual_seed(0)
    base = resnet(torch.nn.BatchNorm2d)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    variants = {}
    for name, norm, compiled in (
        ("torch compiled", torch.nn.BatchNorm2d, True),
        ("bnlab compiled", bnlab.nn.BatchNorm2d, True),
        ("bnlab eager", bnlab.nn.BatchNorm2d, False),
    ):
        model = resnet(norm)
        model.load_state_dict(copy.deepcopy(base.state_dict()))
        model = model.to(memory_format=fmt).train()
        step = make_step(model, compiled)
        start = time.perf_counter()
        step(x, y)  # compiles the forward and backward graphs
        first = time.perf_counter() - start
        variants[name] = {"step": step, "first_s": first, "times": [], "cpu": [], "rounds": []}
    for _ in range(2):  # warm-up
        for v in variants.values():
            v["step"](x, y)
    for _ in range(rounds):
        for v in variants.values():
            v["round"], v["round_cpu"] = [], []
        for _ in range(steps):
            for v in variants.values():
                start, cpu = time.perf_counter(), time.thread_time()
                v["step"](x, y)
                v["round"].append(time.perf_counter() - start)
                v["round_cpu"].append(time.thread_time() - cpu)
        anchor = variants["torch compiled"]
        for v in variants.values():
            v["times"] += v["round"]
            v["cpu"] += v["round_cpu"]
            v["rounds"].append(
                {
                    "ratio": statistics.median(v["round"]) / statistics.median(anchor["round"]),
                    "cpu_ratio": statistics.median(v["round_cpu"]) / statistics.median(anchor["round_cpu"]),
                }
            )
    anchor = statistics.median(variants["torch compiled"]["times"])
    anchor_cpu = statistics.median(variants["torch compiled"]["cpu"])
    return {
        name: {
            "median_ms": 1e3 * statistics.median(v["times"]),
            "ratio": statistics.median(v["times"]) / anchor,
            "cpu_ratio": statistics.median(v["cpu"]) / anchor_cpu,
            "first_step_s": v["first_s"],
            "rounds": v["rounds"],
        }
        for name, v in variants.items()
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of --steps steps each, a ratio per round")
    parser.add_argument("--layouts", default="nchw,channels_last", help="comma-separated: nchw, channels_last")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, 3x32x32, {args.steps} steps")
    results = {}
    for layout in args.layouts.split(","):
        res = run(layout, args.steps, args.batch, args.rounds)
        results[layout] = res
        print(f"\n{layout}")
        head = f"{'variant':<16} {'median ms':>10} {'÷ torch compiled':>17} {'CPU time ÷':>11} {'first step s':>13}"
        print(head + "  rounds")
        for name, r in res.items():
            spread = ", ".join(f"{x['ratio']:.2f}" for x in r["rounds"])
            print(
                f"{name:<16} {r['median_ms']:10.1f} {r['ratio']:17.2f} {r['cpu_ratio']:11.2f} "
                f"{r['first_step_s']:13.1f}  {spread}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            meta = {
                "torch": torch.__version__, "threads": args.threads, "batch": args.batch, "steps": args.steps,
                "rounds": args.rounds,
            }  # fmt: skip
            json.dump({**meta, **machine(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
