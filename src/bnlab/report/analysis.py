"""What the demo report states, computed from its results (``results.json``) as plain data, without HTML.

Every claim the report makes in words is decided here by an explicit rule on the numbers (see each
function); :mod:`bnlab.report.html` only writes the claims down. The tests check these rules against the
runs recomputed with NumPy, and check the page against these claims.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "NORMS",
    "correct",
    "runs_of",
    "setting_claim",
    "setting_claims",
    "variant_gaps",
    "ema_changes",
    "recal_summary",
    "percentile_summary",
    "percentile_notes",
    "small_batch_summary",
    "timing_rows",
]

#: The three normalizations the demo compares, in the order of its tables.
NORMS = ("none", "activation", "channel")

#: A recalibration "changes the result" when the test images right differ by at least this many.
RECAL_CHANGE = 3


def correct(run: dict, n_test: int, key: str | None = None) -> int:
    """Test images right: from ``errors`` (EMA), or from a traineval accuracy (``key`` = batch/ema/recal)."""
    if key is None:
        return n_test - run["errors"]
    return round(run["traineval"][key]["accuracy"] * n_test)


def runs_of(results: dict, setting: str, norm: str) -> list[dict]:
    """The runs of one setting and normalization, in seed order."""
    return [r for r in results["runs"] if r["setting"] == setting and r["norm"] == norm]


def setting_claim(results: dict, key: str) -> dict | None:
    """What the numbers say about BN in one setting, with the numbers that say it.

    ``kind`` is ``not_learned`` (no seed without BN above 20%), ``same`` (the three means over seeds within 3
    test images), ``helps`` (every BN run, both variants, every seed, above every run without BN), ``worse``
    (every BN run below every run without BN) or ``unclear`` (anything else: the seeds overlap).
    """
    n_test = results["data"]["test"]
    by_norm = {n: runs_of(results, key, n) for n in NORMS}
    if not all(by_norm.values()):
        return None
    right = {n: [correct(r, n_test) for r in rs] for n, rs in by_norm.items()}
    mean = {n: float(np.mean(c)) for n, c in right.items()}
    bn = right["activation"] + right["channel"]
    best_bn_mean = max(mean["activation"], mean["channel"])
    claim = {
        "setting": key,
        "mean_correct": mean,
        "correct": right,
        "accuracies": {n: [r["test"]["accuracy"] for r in rs] for n, rs in by_norm.items()},
        "diff": round(best_bn_mean - mean["none"], 1),
        "span": round(max(mean.values()) - min(mean.values()), 1),
        "none_spread": max(right["none"]) - min(right["none"]),
        "worst_bn": min(bn),
        "best_bn": max(bn),
        "best_none": max(right["none"]),
        "worst_none": min(right["none"]),
    }
    if max(r["test"]["accuracy"] for r in by_norm["none"]) < 0.2:
        claim["kind"] = "not_learned"
    elif claim["span"] <= 3:
        claim["kind"] = "same"
    elif min(bn) > max(right["none"]):
        claim["kind"] = "helps"
    elif max(bn) < min(right["none"]):
        claim["kind"] = "worse"
    else:
        claim["kind"] = "unclear"
    return claim


def setting_claims(results: dict, settings: Sequence) -> list[dict]:
    """:func:`setting_claim` for each setting that has runs of all three normalizations, in order."""
    claims = (setting_claim(results, s.key) for s in settings)
    return [c for c in claims if c is not None]


def variant_gaps(results: dict, settings: Sequence) -> dict:
    """The largest gap, over settings, between the means over seeds of the two BN variants, in test images:
    ``ema`` (the EMA statistics) and ``recal`` (recalibrated; 0 unless every BN run of a setting has them)."""
    n_test = results["data"]["test"]
    gap = gap_recal = 0.0
    for setting in settings:
        rs = {n: runs_of(results, setting.key, n) for n in ("activation", "channel")}
        if not rs["activation"] or not rs["channel"]:
            continue
        mean = {n: float(np.mean([correct(r, n_test) for r in v])) for n, v in rs.items()}
        gap = max(gap, round(abs(mean["activation"] - mean["channel"]), 1))
        if all(r["traineval"]["recal"] for v in rs.values() for r in v):
            recal = {n: float(np.mean([correct(r, n_test, "recal") for r in v])) for n, v in rs.items()}
            gap_recal = max(gap_recal, round(abs(recal["activation"] - recal["channel"]), 1))
    return {"ema": gap, "recal": gap_recal}


def ema_changes(results: dict) -> list[dict]:
    """The BN runs whose test result with recalibrated statistics differs from the EMA's by at least
    :data:`RECAL_CHANGE` test images: the run and its two accuracies."""
    n_test = results["data"]["test"]
    out = []
    for r in results["runs"]:
        te = r["traineval"]
        if not te or te["recal"] is None:
            continue
        if abs(correct(r, n_test, "ema") - correct(r, n_test, "recal")) >= RECAL_CHANGE:
            out.append({"run": r, "ema": te["ema"]["accuracy"], "recal": te["recal"]["accuracy"]})
    return out


def recal_summary(results: dict) -> dict:
    """``available``: every BN run has recalibrated statistics; ``bn_runs``: those runs; ``changed``: how
    many changed their test result by :data:`RECAL_CHANGE` images or more."""
    n_test = results["data"]["test"]
    bn_runs = [r for r in results["runs"] if r["traineval"]]
    available = bool(bn_runs) and all(r["traineval"]["recal"] is not None for r in bn_runs)
    changed = (
        sum(abs(correct(r, n_test, "ema") - correct(r, n_test, "recal")) >= RECAL_CHANGE for r in bn_runs)
        if available
        else 0
    )
    return {"available": available, "bn_runs": bn_runs, "changed": changed}


def percentile_summary(h: dict) -> dict:
    """Over the watched unit's history: the median's move over the second half of training, the 15–85
    spread over the first and the last steps (means over 5% of the steps), and the final 85th percentile."""
    p15, p50, p85 = (np.asarray(h[k], dtype=np.float64) for k in ("p15", "p50", "p85"))
    n = len(p50)
    k = max(1, n // 20)
    mid = float(np.mean(p50[n // 2 - k // 2 : n // 2 - k // 2 + k]))
    end = float(np.mean(p50[-k:]))
    return {
        "drift": abs(end - mid),
        "spread_start": float(np.mean(p85[:k] - p15[:k])),
        "spread_end": float(np.mean(p85[-k:] - p15[-k:])),
        "p85_end": float(np.mean(p85[-k:])),
    }


def percentile_notes(run: dict, activation: str) -> dict:
    """:func:`percentile_summary` of one run, with its two verdicts: ``collapsed`` (the 15–85 spread below
    0.05 at the start and at the end: one value for every image) and ``dead`` (a ReLU whose input is below 0
    for at least 85% of a mini-batch at the end)."""
    p = percentile_summary(run["history"])
    p["collapsed"] = p["spread_start"] < 0.05 and p["spread_end"] < 0.05
    p["dead"] = activation == "relu" and p["p85_end"] < 0
    return p


def small_batch_summary(sb: dict) -> dict:
    """The small-batch section's facts: the members shown, the smallest and largest m, each member's cells,
    and the verdicts of :func:`bnlab.report.small_batch.findings`."""
    from .small_batch import findings

    cfg, summary = sb["config"], sb["summary"]
    ms = cfg["batch_sizes"]
    norms = [n for n in cfg["norms"] if n in summary]
    first = next(iter(sb["set_sizes"][str(min(ms))]), None)
    return {
        "ms": ms,
        "m_min": min(ms),
        "m_max": max(ms),
        "norms": norms,
        "lr32": cfg["lr32"],
        "adam": str(cfg.get("optimizer", "")).startswith("Adam"),  # the square-root rule; older runs: SGD, linear
        "n_seeds": len(cfg["seeds"]),
        "samples": cfg["samples"],
        "first_layer_set": first["channel"] if first else None,
        "findings": findings(summary, ms, sb.get("summary_ema")),
    }


def timing_rows(results: dict, settings: Sequence) -> list[dict]:
    """Training time per setting and normalization, summed over seeds: runs, steps, seconds, ms per step."""
    rows = []
    for s in settings:
        for norm in NORMS:
            rs = runs_of(results, s.key, norm)
            if not rs:
                continue
            seconds, steps = sum(r["train_seconds"] for r in rs), sum(r["steps"] for r in rs)
            rows.append({"setting": s.key, "norm": norm, "runs": len(rs), "steps": steps, "seconds": seconds,
                         "ms_per_step": 1000 * seconds / max(steps, 1)})  # fmt: skip
    return rows
