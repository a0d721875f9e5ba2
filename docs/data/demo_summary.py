"""Reduce a ``bnlab demo`` results.json (0.5 MB: every step of 18 runs) to what the book reads (a few KB).

    bnlab demo --out demo
    python docs/data/demo_summary.py demo/results.json docs/data/demo.json \\
        --seconds 168 --cpu-seconds 48.6 --machine "a 2-core VM shared with other work (load average 8-10)"

Kept: the run's settings, data split, BN layers (sets and sizes), each run's test accuracy, mistakes and
parameter counts, train mode vs eval mode (mini-batch statistics / EMA / recalibrated), the timings the
demo measured itself, and the wall-clock and CPU time of the whole command and the machine, as given.
"""

from __future__ import annotations

import argparse
import json


def reduce(results: dict, seconds: float | None, cpu_seconds: float | None, machine: str) -> dict:
    keep = ("command", "date", "seeds", "epochs", "batch_size", "threads", "data", "settings", "timings")
    out = {k: results[k] for k in keep}
    out["layers"] = [{k: v for k, v in layer.items() if k != "text"} for layer in results["layers"]]
    out["runs"] = []
    for r in results["runs"]:
        run = {k: r[k] for k in ("setting", "norm", "seed", "params", "errors", "steps")}
        run["test_accuracy"] = r["test"]["accuracy"]
        if r.get("traineval"):
            run["traineval"] = {mode: r["traineval"][mode]["accuracy"] for mode in ("batch", "ema", "recal")}
        out["runs"].append(run)
    out["wall"] = {"wall_s": seconds, "cpu_s": cpu_seconds, "machine": machine}
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
        json.dump(reduced, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
