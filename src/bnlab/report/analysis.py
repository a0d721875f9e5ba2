"""What the demo report states, computed from its results (``results.json``) as plain data, without HTML.

Every claim the report makes in words is decided here by an explicit rule on the numbers (see each
function); :mod:`bnlab.report.html` only writes the claims down, and writes a claim only when its rule
passes; otherwise it writes what the numbers do show. The rules, by the name the tests use:

- ``helps`` / ``same`` / ``worse`` / ``not_learned`` / ``unclear``: :func:`setting_claim` (one setting);
  ``seeds_helped``: in how many seeds both BN runs beat the run without BN of the same seed;
- ``collapsed`` / ``dead`` / ``median_shift`` / ``first steps``: :func:`percentile_notes` (one run's unit);
- ``median_steadier`` / ``band_change``: :func:`percentile_verdict` (BN against no BN, one setting);
- ``higher_rate``: :func:`higher_rate_run` (a lower-rate run without BN exists, so "BN allows a higher rate"
  is tested);
- ``variants_at_m``: :func:`range_order` of the two BN variants in the small-batch table at the demo's m;
- ``none_falls``: :func:`none_falls_with_m` (the small-batch run without BN is lower at the largest m);
- ``val_dips``: :func:`val_dips` (validation accuracy, EMA statistics, falls during training).

The tests check these rules against the runs recomputed with NumPy, on synthetic results at each
threshold, and check the page against these claims.
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
    "percentile_verdict",
    "higher_rate_run",
    "range_order",
    "none_falls_with_m",
    "val_dips",
    "COLLAPSED",
    "SAME",
    "DIP",
]

#: The three normalizations the demo compares, in the order of its tables.
NORMS = ("none", "activation", "channel")

#: A recalibration "changes the result" when the test images right differ by at least this many.
RECAL_CHANGE = 3

#: "About the same": the means over seeds of the three normalizations within this many test images.
SAME = 3

#: "Collapsed": the 15–85 band of the watched unit never wider than this, at any step.
COLLAPSED = 0.1

#: A validation "dip": an evaluation at least this far (accuracy, 0–1) below the one before it.
DIP = 0.10


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

    ``kind`` is ``not_learned`` (no seed without BN above 20%), ``same`` (the three means over seeds within
    :data:`SAME` test images), ``helps`` (every BN run, both variants, every seed, above every run without BN),
    ``worse`` (every BN run below every run without BN) or ``unclear`` (anything else: the seeds overlap).
    ``helped`` is the ``helps`` rule alone (also true for a ``not_learned`` setting where BN learned);
    ``seeds_helped`` of ``n_seeds``: the seeds in which both BN runs beat the run without BN of that seed.
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
        "n_seeds": len(right["none"]),
        "seeds_helped": sum(
            min(a, c) > n for a, c, n in zip(right["activation"], right["channel"], right["none"], strict=False)
        ),
        "helped": min(bn) > max(right["none"]),
    }
    if max(r["test"]["accuracy"] for r in by_norm["none"]) < 0.2:
        claim["kind"] = "not_learned"
    elif claim["span"] <= SAME:
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
    """Over the watched unit's history (one value per training step): ``k``, the number of steps that "the
    first steps" and "the last steps" mean (5% of the steps, at least 1); ``median_shift``, the mean of the
    median over the second half of training minus its mean over the first half ("the median moved"); the
    median's lowest and highest value (``median_lo``/``median_hi``); the width of the 15–85 band, mean over the
    first k steps (``spread_start``) and the last k (``spread_end``), and its narrowest and widest at any step
    (``spread_min``/``spread_max``); the final 85th percentile (mean over the last k steps)."""
    p15, p50, p85 = (np.asarray(h[k], dtype=np.float64) for k in ("p15", "p50", "p85"))
    n = len(p50)
    k = max(1, n // 20)
    half = max(1, n // 2)
    band = p85 - p15
    return {
        "k": k,
        "steps": n,
        "median_shift": float(np.mean(p50[half:]) - np.mean(p50[:half])) if n > 1 else 0.0,
        "median_lo": float(p50.min()),
        "median_hi": float(p50.max()),
        "spread_start": float(np.mean(band[:k])),
        "spread_end": float(np.mean(band[-k:])),
        "spread_min": float(band.min()),
        "spread_max": float(band.max()),
        "p85_end": float(np.mean(p85[-k:])),
    }


def percentile_notes(run: dict, activation: str) -> dict:
    """:func:`percentile_summary` of one run, with its two verdicts: ``collapsed`` (the 15–85 band never wider
    than :data:`COLLAPSED`, at any step: one value for every image) and ``dead`` (a ReLU whose input is below 0
    for at least 85% of a mini-batch over the last k steps)."""
    p = percentile_summary(run["history"])
    p["collapsed"] = p["spread_max"] < COLLAPSED
    p["dead"] = activation == "relu" and p["p85_end"] < 0
    return p


def percentile_verdict(notes: dict[str, dict]) -> dict | None:
    """BN against no BN at the watched unit, in one setting (``notes``: norm → :func:`percentile_notes`).

    ``steadier``: the BN runs whose median moved less than without BN (smaller absolute ``median_shift``);
    ``n_bn``: the BN runs; ``change``: norm → the change of the band's width from the first k steps to the
    last k, relative (0.5 = 50% wider; ``None`` when the band started below :data:`COLLAPSED`). ``None``
    without a run without BN or without a BN run.
    """
    if "none" not in notes:
        return None
    bn = [n for n in notes if n != "none"]
    if not bn:
        return None
    base = abs(notes["none"]["median_shift"])
    change = {
        n: (p["spread_end"] / p["spread_start"] - 1 if p["spread_start"] >= COLLAPSED else None)
        for n, p in notes.items()
    }
    return {"steadier": [n for n in bn if abs(notes[n]["median_shift"]) < base], "n_bn": len(bn),
            "change": change}  # fmt: skip


def higher_rate_run(results: dict, settings: Sequence, key: str) -> dict | None:
    """The ``higher_rate`` rule: a setting at a high rate tests "BN allows a rate too high without it" only if
    the results also hold a run without BN with the same activation and optimizer at a lower rate that
    learned (test accuracy above 20%). That run, or ``None``."""
    by_key = {s.key: s for s in settings}
    high = by_key[key]
    for s in settings:
        if s.activation == high.activation and s.optimizer == high.optimizer and s.lr < high.lr:
            runs = runs_of(results, s.key, "none")
            if runs and min(r["test"]["accuracy"] for r in runs) > 0.2:
                return {"setting": s.key, "lr": s.lr, "runs": runs}
    return None


def range_order(a: dict, b: dict) -> str:
    """How two seed ranges (``min``/``max``) compare: ``above`` (every seed of a above every seed of b),
    ``below`` or ``overlap``."""
    if a["min"] > b["max"]:
        return "above"
    if a["max"] < b["min"]:
        return "below"
    return "overlap"


def none_falls_with_m(summary: dict, ms: Sequence[int]) -> bool:
    """The ``none_falls`` rule: without BN, the mean at the largest m is below the mean at the smallest."""
    if "none" not in summary:
        return False
    return summary["none"][str(max(ms))]["mean"] < summary["none"][str(min(ms))]["mean"]


def val_dips(run: dict) -> list[float]:
    """The ``val_dips`` rule: the validation accuracies (eval mode, EMA statistics) measured during training
    that are at least :data:`DIP` below the evaluation before them, in order."""
    acc = run["history"].get("eval_accuracy", [])
    return [float(b) for a, b in zip(acc, acc[1:], strict=False) if a - b >= DIP - 1e-9]  # DIP exactly counts


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
