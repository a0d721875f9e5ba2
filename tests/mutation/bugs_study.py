"""Planted bugs for the small-batch study (issue 17 part 4; issue 18's small-batch points)."""

T = "tests/apps/test_small_batch.py::"

BUGS = [
    dict(
        name="study-renorm-row-dropped",
        path="src/bnlab/report/small_batch.py",
        old='NORMS = ("none", "activation", "channel", "channel-conv", "channel-ln", "renorm", "group", "layer", '
        '"instance")',
        new='NORMS = ("none", "activation", "channel", "channel-conv", "channel-ln", "group", "layer", "instance")',
        tests=[T + "test_the_study_has_every_member_of_the_brief"],
    ),
    dict(
        name="study-renorm-not-recalibrated",
        path="src/bnlab/report/small_batch.py",
        old='BN_LIKE = ("activation", "channel", "channel-conv", "channel-ln", "renorm")',
        new='BN_LIKE = ("activation", "channel", "channel-conv", "channel-ln")',
        tests=[T + "test_the_study_has_every_member_of_the_brief"],
    ),
    dict(
        name="ablation-keeps-the-dense-bn",
        path="src/bnlab/models.py",
        old='        dense = norm if dense_norm is True else (dense_norm or "none")',
        new="        dense = norm",
        tests=[
            T + "test_each_member_builds_its_set_b[channel-conv]",
            T + "test_each_member_builds_its_set_b[channel-ln]",
            T + "test_the_ablation_head_does_not_mix_examples",
        ],
    ),
    dict(
        name="ablation-ln-member-builds-bn",
        path="src/bnlab/vocabulary.py",
        old='DENSE_SUFFIXES = {"-conv": False, "-ln": "layer"}',
        new='DENSE_SUFFIXES = {"-conv": False, "-ln": True}',
        tests=[T + "test_each_member_builds_its_set_b[channel-ln]", T + "test_the_ablation_head_does_not_mix_examples"],
    ),
    dict(
        name="renorm-schedule-not-scaled-to-the-run",
        path="src/bnlab/models.py",
        old="    first = steps // 16\n",
        new="    first = 0\n",
        tests=[T + "test_renorm_schedule_is_the_papers_scaled_to_the_run"],
    ),
    dict(
        name="findings-ranges-compared-by-mean",
        path="src/bnlab/report/small_batch.py",
        old='    if a["min"] > b["max"]:',
        new='    if a["mean"] > b["mean"]:',
        tests=[T + "test_findings_follow_their_rules"],
    ),
    dict(
        name="findings-holds-from-ignores-larger-m",
        path="src/bnlab/report/small_batch.py",
        old='            tail = [ch[k]["mean"] for k in order[i:]]',
        new='            tail = [ch[k]["mean"] for k in order[i : i + 1]]',
        tests=[T + "test_findings_follow_their_rules"],
    ),
    dict(
        name="findings-renorm-gap-sign-flipped",
        path="src/bnlab/report/small_batch.py",
        old='gaps = {m: summary_ema["renorm"][m]["mean"] - summary["renorm"][m]["mean"] for m in ms}',
        new='gaps = {m: summary["renorm"][m]["mean"] - summary_ema["renorm"][m]["mean"] for m in ms}',
        tests=[T + "test_findings_follow_their_rules"],
    ),
    dict(
        name="report-shows-only-the-old-three-rows",
        path="src/bnlab/report/analysis.py",
        old='    norms = [n for n in cfg["norms"] if n in summary]',
        new='    norms = [n for n in cfg["norms"] if n in summary][:3]',
        tests=[
            T + "test_the_report_section_states_the_shipped_reference[en]",
            T + "test_the_report_section_states_the_shipped_reference[es]",
        ],
    ),
    dict(
        name="report-lr-not-scaled-with-m",
        path="src/bnlab/report/html.py",
        old='lr_min=general(float(f"{lr32 * math.sqrt(m_min / 32):.4g}"), w.lang)',
        new="lr_min=general(lr32, w.lang)",
        tests=[
            T + "test_the_report_section_states_the_shipped_reference[en]",
            T + "test_the_report_section_states_the_shipped_reference[es]",
        ],
    ),
    dict(
        name="report-group-flatness-rule-inverted",
        path="src/bnlab/report/html.py",
        old='key = "smallbatch_group_flat" if f["group_dev"] <= 0.01',
        new='key = "smallbatch_group_flat" if f["group_dev"] >= 0.01',
        tests=[
            T + "test_the_report_section_states_the_shipped_reference[en]",
            T + "test_the_report_section_states_the_shipped_reference[es]",
        ],
    ),
    dict(
        name="study-cpu-time-of-children-dropped",
        path="src/bnlab/report/small_batch.py",
        old="(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)",
        new="(resource.RUSAGE_CHILDREN,)",
        tests=[T + "test_tiny_run_writes_results_and_figure"],
    ),
]
