"""Planted bugs of the explainer's text (issue 18): each re-creates, in one line, what the critical reader found."""

T = "tests/apps/test_explain.py"
TEXT = "src/bnlab/explain/text.py"

BUGS = [
    dict(name="alg2-factor-m-not-m-prime", path="src/bnlab/i18n/catalogs/en/explain.json",
         old="Var[x] = m'/(m'−1)·E_B[σ²_B], where", new="Var[x] = m/(m−1)·E_B[σ²_B], where",
         tests=[f"{T}::test_alg2_factor_is_written_with_m_prime[shape0-NHWC-channel-en]"]),
    dict(name="index-k-counts-the-maps-twice", path=TEXT,
         old='nact = math.prod(feature_shape(e.shape, reduce_axes(e.layout, per="activation")))',
         new='nact = math.prod(feature_shape(e.shape, reduce_axes(e.layout, per="channel")))',
         tests=[f"{T}::test_the_papers_index_k_is_an_activation_in_s3_and_a_feature_map_in_s3_2[en]"]),
    dict(name="libraries-always-batchnorm2d", path=TEXT, old='cls=f"BatchNorm{len(spatial)}d"',
         new='cls="BatchNorm2d"',
         tests=[f"{T}::test_which_variant_torch_and_keras_implement_and_the_reshape_is_true[es]"]),
    dict(name="per-activation-folds-into-the-conv", path=TEXT,
         old='add(fill("fold_activation", sets=sets) if e.per == "activation" and not fc else fill("fold"))',
         new='add(fill("fold"))',
         tests=[f"{T}::test_per_activation_after_a_conv_is_not_said_to_fold_into_its_weights[en]"]),
    dict(name="running-statistics-unnamed", path=TEXT, old='    add(fill("running"))\n', new="",
         tests=[f"{T}::test_running_statistics_are_named_once_as_the_ema_standing_in_for_the_population[es]"]),
    dict(name="instance-norm-gamma-beta-by-default", path="src/bnlab/explain/family.py",
         old='add(fill("params_instance", cls=cls, params=e.num_params))',
         new='add(fill("params_channel", cls=cls, params=e.num_params))',
         tests=[f"{T}::test_instance_norm_says_torchs_default_is_affine_false[en]"]),
    dict(name="cli-layout-assumed-silently", path="src/bnlab/cli/explain.py", old="    if assumed:\n",
         new="    if False:\n",
         tests=[f"{T}::test_cli_first_line_states_the_assumed_layout_and_how_to_ask_for_nchw[en]"]),
    dict(name="es-number-split-by-the-wrap", path=TEXT, old='line = _GROUP_SPACE.sub("\\u00a0", line)',
         new="line = line", tests=[f"{T}::test_a_grouped_number_is_never_split_over_two_lines[es]"]),
    dict(name="es-dicho-con-palabras", path="src/bnlab/i18n/catalogs/es/explain.json",
         old="Es decir: {sets:mean}, {sets:variance}, {sets} γ y {sets} β, una de cada por mapa",
         new="Dicho con palabras: {sets:mean}, {sets:variance}, {sets} γ y {sets} β, una de cada por mapa",
         tests=[f"{T}::test_no_spanish_calques_in_the_explainer_texts_and_docs"]),
    # a masked set B (issue 17)
    dict(name="masked-count-subtracts-k-once", path="src/bnlab/explain/__init__.py",
         old="return full // shape[axis] * (shape[axis] - k), False", new="return full - k, False",
         tests=[f"{T}::test_masked_set_b_counts_are_those_of_a_real_masked_forward[shape0-NCHW-channel-2-None]"]),
    dict(name="masked-inference-uses-the-full-set", path=TEXT,
         old='add(fill("inference", unit=unit, sets=sets, size=e.set_size))',
         new='add(fill("inference", unit=unit, sets=sets, size=size))',
         tests=[f"{T}::test_masked_text_says_m_prime_counts_the_masked_in_values_and_its_numpy_runs[en]"]),
    dict(name="masked-numpy-without-where", path=TEXT,
         old='where = ", where=mask" if e.mask_last is not None else ""', new='where = ""',
         tests=[f"{T}::test_masked_text_says_m_prime_counts_the_masked_in_values_and_its_numpy_runs[es]"]),
    dict(name="masked-empty-sets-accepted", path="src/bnlab/explain/__init__.py", old="if empty or m_in < 2:",
         new="if m_in < 2:",
         tests=[f"{T}::test_a_mask_that_empties_a_set_b_is_refused_as_the_functional_refuses_it"
                f"[kwargs0-sets B of the last 4 positions of W are empty]"]),
]  # fmt: skip
BUGS += [
    dict(name="family-figure-without-locations-note", path="src/bnlab/explain/figure.py",
         old='return _finish(fig, e, tf, path, dpi, note=note if real_s else tf("fig_no_spatial"))',
         new="return _finish(fig, e, tf, path, dpi)",
         tests=["tests/apps/test_explain_family.py::test_family_figure_says_how_many_locations_are_drawn[en]"]),
]  # fmt: skip
BUGS += [
    dict(name="nouns-two-forms-only", path="src/bnlab/i18n/words.py",
         old="form = forms[min(plural_index(number, self.lang), len(forms) - 1)]", new="form = forms[number != 1]",
         tests=[f"{T}::test_a_third_language_adds_its_nouns_in_its_own_catalog"]),
    dict(name="nouns-no-english-fallback", path="src/bnlab/i18n/words.py", old="for source in (lang, DEFAULT_LANG):",
         new="for source in (lang,):", tests=[f"{T}::test_a_third_language_adds_its_nouns_in_its_own_catalog"]),
]  # fmt: skip
