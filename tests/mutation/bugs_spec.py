"""Planted bugs for one vocabulary (norm × per), ModelSpec and the training/ and data/ packages (issues 15, 16)."""

M = "tests/apps/test_models.py::"
C = "tests/inference/test_checkpoint.py::"
TR = "tests/apps/test_training.py::"
H = "tests/apps/test_training_bad_input.py::"

BUGS = [
    dict(name="old-spellings-not-read", path="src/bnlab/vocabulary.py",
         old="    if base in LEGACY_SPELLINGS:\n", new="    if False:\n",
         # (not test_models.py: its parameters build old-spelling models when collected, so it errors, not fails)
         tests=[C + "test_a_checkpoint_in_the_old_vocabulary_loads_gives_identical_outputs_and_resumes[channel-cnn]"]),
    dict(name="old-spellings-swapped", path="src/bnlab/vocabulary.py",
         old='LEGACY_SPELLINGS = {"channel": ("batch", "channel"), "activation": ("batch", "activation")}',
         new='LEGACY_SPELLINGS = {"channel": ("batch", "activation"), "activation": ("batch", "channel")}',
         tests=[M + "test_every_old_spelling_parses_to_its_pair_and_back[activation]",
                M + "test_old_spelling_builds_the_same_model[activation-new1]"]),
    dict(name="per-allowed-for-per-sample-norms", path="src/bnlab/vocabulary.py",
         old="        if per is not None:\n            raise ValueError(f\"per applies to",
         new="        if False:\n            raise ValueError(f\"per applies to",
         tests=[M + "test_unknown_or_contradicting_words_name_the_choices", M + "test_bad_spec_dicts_name_the_field"]),
    dict(name="spec-dict-drops-per", path="src/bnlab/spec.py",
         old='n = parse_norm(spec["norm"], spec.get("per"),', new='n = parse_norm(spec["norm"], None,',
         tests=[M + "test_model_spec_is_one_dataclass_that_round_trips[model0]"]),
    dict(name="renorm-ignores-per", path="src/bnlab/models.py",
         old='    where = {"per": "activation", "spatial_size": size} if per == "activation" else {}',
         new="    where = {}",
         tests=[M + "test_per_activation_renorm_has_the_feature_shape",
                "tests/apps/test_models.py::test_per_activation_params_have_the_feature_shape"]),
    dict(name="checkpoint-spec-bounds-unchecked", path="src/bnlab/training/schema.py",
         old="ModelSpec.from_dict(spec).check_bounds().to_dict()", new="ModelSpec.from_dict(spec).to_dict()",
         tests=[H + "test_hostile_training_checkpoints_are_refused_before_building"]),
    dict(name="cli-ignores-per", path="src/bnlab/cli/train.py",
         old="activation=args.activation, per=args.per)", new="activation=args.activation, per=None)",
         tests=[TR + "test_cli_old_and_new_spellings_train_the_same_model[old0-new0]"]),
    dict(name="cli-per-conflict-not-refused", path="src/bnlab/cli/train.py",
         old="    if per is not None and args.norm not in (*BATCH_NORMS, *LEGACY_NORMS):",
         new="    if False:",
         tests=[TR + "test_cli_per_that_does_not_apply_is_refused_before_anything_is_written"]),
]  # fmt: skip
