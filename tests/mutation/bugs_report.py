"""Planted bugs for the demo report from templates (issue 16 items 2–3; issue 18 §2, §3, §5 on the report side)."""

R = "tests/apps/test_report_render.py::"
ES = "src/bnlab/i18n/catalogs/es/report.json"
EN = "src/bnlab/i18n/catalogs/en/report.json"

BUGS = [
    dict(name="report-autoescape-off", path="src/bnlab/report/html.py",
         old="        autoescape=True,", new="        autoescape=False,",
         tests=[R + "test_values_are_escaped_and_only_catalog_markup_becomes_tags"]),
    dict(name="report-markup-rule-applied-to-fields", path="src/bnlab/report/html.py",
         old="    return _inline(value).format(**fields)", new="    return _inline(value.format(**fields))",
         tests=[R + "test_values_are_escaped_and_only_catalog_markup_becomes_tags"]),
    dict(name="report-same-rule-edge-excluded", path="src/bnlab/report/analysis.py",
         old='    elif claim["span"] <= SAME:', new='    elif claim["span"] < SAME:',
         tests=[R + "test_claims_follow_their_rules"]),
    dict(name="report-recal-change-threshold", path="src/bnlab/report/analysis.py",
         old="RECAL_CHANGE = 3\n", new="RECAL_CHANGE = 6\n",
         tests=[R + "test_claims_follow_their_rules"]),
    dict(name="report-params-table-bn-column-wrong", path="src/bnlab/report/templates/sections/params.html.j2",
         old="w.int(r.params.bn), w.int(r.params.other)", new="w.int(r.params.total), w.int(r.params.other)",
         tests=[R + "test_key_sections_state_the_results[en]"]),
    dict(name="report-placeholder-command", path=EN,
         old="`bnlab explain {shape} --layout NCHW` explains this layer",
         new="`bnlab explain N,C,H,W --layout NCHW` explains this layer",
         tests=[R + "test_every_explain_command_in_the_report_runs[en]"]),
    dict(name="report-alg2-factor-m-not-m-prime", path=ES,
         old="Var[x] = m'/(m'−1)·E_B[σ²_B]", new="Var[x] = m/(m−1)·E_B[σ²_B]",
         tests=[R + "test_alg2_factor_is_written_with_m_prime[es]"]),
    dict(name="report-spanish-glossary-calque", path=ES,
         old='"sec_words": "Glosario"', new='"sec_words": "Palabras que usa esta página"',
         tests=[R + "test_spanish_words_of_issue_18[es]"]),
    dict(name="report-zoom-link-elsewhere", path="src/bnlab/report/templates/_macros.html.j2",
         old='<a class="zoom" href="{{ src }}">', new='<a class="zoom" href="#">',
         tests=[R + "test_figures_link_their_full_size_png_in_both_languages[en]"]),
    dict(name="report-narrow-figures-shrink", path="src/bnlab/report/assets/report.css",
         old="  figure > a img { max-width: none; }\n", new="",
         tests=[R + "test_figures_link_their_full_size_png_in_both_languages[en]",
                R + "test_narrow_screen_figures_stay_legible_and_names_do_not_wrap[en]"]),
    dict(name="report-narrow-names-wrap", path="src/bnlab/report/assets/report.css",
         old="  td.l, th.l { white-space: nowrap; }\n", new="",
         tests=[R + "test_figures_link_their_full_size_png_in_both_languages[en]",
                R + "test_narrow_screen_figures_stay_legible_and_names_do_not_wrap[en]"]),
]  # fmt: skip
BUGS += [
    dict(name="for-report-shares-the-shipped-reference", path="src/bnlab/report/small_batch.py",
         old="        return copy.deepcopy({**source,", new="        return ({**source,",
         tests=["tests/apps/test_small_batch.py::test_the_report_gets_a_copy_of_the_shipped_reference"]),
]
