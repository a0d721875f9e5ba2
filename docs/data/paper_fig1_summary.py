"""Reduce a ``bnlab experiment paper-fig1`` results.json (2 MB: every step) to what the book reads (a few KB).

    bnlab experiment paper-fig1 --out fig1 --lr 0.1
    python docs/data/paper_fig1_summary.py fig1/results.json docs/data/paper-fig1-lr0.1.json \
        --seconds 171 --cpu-seconds 64 --machine "a 2-core VM shared with other work (load average 5-9)"

Kept: the run's data, config and summary as written; every evaluation (step, test accuracy); the watched
sigmoid input's 15th/50th/85th percentiles and the training loss as means over blocks of 50 steps (windows
of whole blocks are then exact means of the per-step values); the wall-clock and CPU time of the whole
command and the machine it ran on, as given.
"""

from __future__ import annotations

import argparse
import json

BLOCK = 50


def block_means(values: list[float], block: int = BLOCK) -> list[float]:
    return [sum(values[i : i + block]) / len(values[i : i + block]) for i in range(0, len(values), block)]


def reduce(results: dict, seconds: float | None, cpu_seconds: float | None = None, machine: str = "") -> dict:
    out = {k: results[k] for k in ("data", "config", "summary")}
    out["block"] = BLOCK
    out["eval"] = {n: {"step": h["eval_step"], "accuracy": h["eval_accuracy"]} for n, h in results["history"].items()}
    out["percentiles"] = {
        n: [list(r) for r in zip(*(block_means(h[k]) for k in ("p15", "p50", "p85")), strict=True)]
        for n, h in results["history"].items()
    }
    out["loss"] = {n: block_means(h["loss"]) for n, h in results["history"].items()}
    out["command"] = {"wall_s": seconds, "cpu_s": cpu_seconds, "machine": machine}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, help="wall-clock time of the whole command")
    p.add_argument("--cpu-seconds", type=float, help="CPU time (user + sys) of the whole command")
    p.add_argument("--machine", default="", help="where it ran, in a few words")
    args = p.parse_args(argv)
    with open(args.results, encoding="utf-8") as f:
        reduced = reduce(json.load(f), args.seconds, args.cpu_seconds, args.machine)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(reduced, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
