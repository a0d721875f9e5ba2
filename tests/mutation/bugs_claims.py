"""Planted bugs for the report's claims by rule (issue 18 §1): each rule at its threshold, and the text."""

R = "tests/apps/test_report_render.py::"
D = "tests/apps/test_demo.py::"
A = "src/bnlab/report/analysis.py"
H = "src/bnlab/report/html.py"

BUGS = [
    dict(
        name="claims-collapsed-start-and-end-only",
        path=A,
        old='    p["collapsed"] = p["spread_max"] < COLLAPSED',
        new='    p["collapsed"] = p["spread_start"] < COLLAPSED and p["spread_end"] < COLLAPSED',
        tests=[R + "test_rule_collapsed_needs_every_step"],
    ),
    dict(
        name="claims-collapsed-edge-included",
        path=A,
        old='    p["collapsed"] = p["spread_max"] < COLLAPSED',
        new='    p["collapsed"] = p["spread_max"] <= COLLAPSED',
        tests=[R + "test_rule_collapsed_needs_every_step"],
    ),
    dict(
        name="claims-median-shift-end-window",
        path=A,
        old='"median_shift": float(np.mean(p50[half:]) - np.mean(p50[:half]))',
        new='"median_shift": float(np.mean(p50[-k:]) - np.mean(p50[half - k // 2 : half - k // 2 + k]))',
        tests=[R + "test_rule_median_shift_and_first_steps_are_defined"],
    ),
    dict(
        name="claims-seeds-helped-tie-counts",
        path=A,
        old="min(a, c) > n for a, c, n in zip(",
        new="min(a, c) >= n for a, c, n in zip(",
        tests=[R + "test_rule_seeds_helped_counts_the_seeds"],
    ),
    dict(
        name="claims-helped-list-misses-not-learned",
        path=H,
        old='    helped = [titles[c["setting"]] for c in claims if c["helped"]]',
        new='    helped = [titles[c["setting"]] for c in claims if c["kind"] == "helps"]',
        tests=[R + "test_rule_helped_lists_a_setting_where_no_bn_learned_nothing"],
    ),
    dict(
        name="claims-steadier-ties-count",
        path=A,
        old='if abs(notes[n]["median_shift"]) < base]',
        new='if abs(notes[n]["median_shift"]) <= base]',
        tests=[R + "test_rule_percentile_verdict_compares_bn_with_no_bn"],
    ),
    dict(
        name="claims-higher-rate-any-run",
        path=A,
        old='            if runs and min(r["test"]["accuracy"] for r in runs) > 0.2:',
        new="            if runs:",
        tests=[R + "test_rule_higher_rate_needs_a_lower_rate_run_without_bn"],
    ),
    dict(
        name="claims-higher-rate-always-claimed",
        path=H,
        old="        if low is not None:\n",
        new="        if True:\n",
        tests=[R + "test_rule_higher_rate_needs_a_lower_rate_run_without_bn"],
    ),
    dict(
        name="claims-ranges-touching-not-overlap",
        path=A,
        old='    if a["min"] > b["max"]:\n        return "above"',
        new='    if a["min"] >= b["max"]:\n        return "above"',
        tests=[R + "test_rule_variants_at_the_demo_m"],
    ),
    dict(
        name="claims-none-falls-equal-counts",
        path=A,
        old='    return summary["none"][str(max(ms))]["mean"] < summary["none"][str(min(ms))]["mean"]',
        new='    return summary["none"][str(max(ms))]["mean"] <= summary["none"][str(min(ms))]["mean"]',
        tests=[R + "test_rule_none_falls_with_m"],
    ),
    dict(
        name="claims-val-dip-edge-excluded",
        path=A,
        old="if a - b >= DIP - 1e-9]",
        new="if a - b > DIP]",
        tests=[R + "test_rule_val_dips_and_the_ema_check"],
    ),
    dict(
        name="claims-dips-lag-always-confirmed",
        path=H,
        old="        if abs(ema - recal) >= analysis.RECAL_CHANGE:\n            text = Markup(",
        new="        if True:\n            text = Markup(",
        tests=[R + "test_rule_val_dips_and_the_ema_check"],
    ),
    dict(
        name="claims-record-dense-layer",
        path="src/bnlab/report/demo.py",
        old='RECORD_LAYER, RECORD_UNIT = "features.act2", 0',
        new='RECORD_LAYER, RECORD_UNIT = "head.act3", 0',
        tests=[D + "test_short_demo_report"],
    ),
]
