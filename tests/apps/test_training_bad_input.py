"""Hardening (issue 7): divergence, strict JSON, hostile training checkpoints, model-spec bounds."""

from __future__ import annotations

import json
import math
import pickle
import zipfile

import numpy as np
import pytest
import torch

from bnlab.inference import CheckpointError, load_checkpoint, save_checkpoint
from bnlab.models import SmallCNN
from bnlab.training import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainingDiverged,
    check_model_spec,
    finite_json,
    fit,
    load_trained,
    load_training_state,
    seed_everything,
    write_json,
)


def _model(seed=0):
    seed_everything(seed)
    return SmallCNN(1, (8, 8), 10, norm="channel", widths=(8, 16), hidden=32)


# -- item 4: a NaN/inf loss stops training; the last good checkpoint is kept ------------------------------
def test_divergence_stops_and_keeps_the_last_good_checkpoint(small, tmp_path):
    out = tmp_path / "run"
    fit(_model(), small, TrainConfig(optimizer="momentum", lr=0.05, epochs=1), out_dir=out, progress=False)
    good = load_checkpoint(out / CHECKPOINT_NAME)
    before = (out / CHECKPOINT_NAME).read_bytes()
    # resume with 3 more epochs at the same lr, then blow the weights up so the next loss is not finite
    model = _model()
    model.load_state_dict(good["model"])

    def explode(step):
        if step == good["step"] + 2:
            with torch.no_grad():
                model.head.out.weight.fill_(math.inf)

    with pytest.raises(TrainingDiverged, match=r"step 10/28: the loss is nan.*last good checkpoint") as info:
        fit(model, small, TrainConfig(optimizer="momentum", lr=0.05, epochs=4), out_dir=out, resume=True,
            progress=False, on_step=explode)  # fmt: skip
    assert info.value.step == good["step"] + 3 and math.isnan(info.value.loss)
    assert info.value.checkpoint == out / CHECKPOINT_NAME
    assert (out / CHECKPOINT_NAME).read_bytes() == before  # not overwritten


def test_a_huge_learning_rate_stops_before_any_nan_weights_are_saved(small, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        fit(_model(), small, TrainConfig(optimizer="sgd", lr=1e6, epochs=3), out_dir=out, progress=False)
    saved = out / CHECKPOINT_NAME
    if info.value.checkpoint is None:
        assert not saved.exists()
    else:  # whatever was saved is finite
        state = load_checkpoint(saved)
        assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_strict_json_writes_null_for_non_finite_numbers(tmp_path):
    obj = {"a": [1.0, math.nan, math.inf, -math.inf], "b": (np.float64("nan"), 2), "c": {"d": "x"}}
    assert finite_json(obj) == {"a": [1.0, None, None, None], "b": [None, 2], "c": {"d": "x"}}
    path = write_json(tmp_path / "h.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard token {c}"))


# -- item 6: damaged and hostile checkpoints --------------------------------------------------------------
def _raw_checkpoint(path, payload_pickle: bytes):
    """A torch zip whose data.pkl is ``payload_pickle`` (hand-made), written like torch.save's."""
    torch.save({"format": "bnlab-checkpoint"}, path)
    entries = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            entries.append((info, payload_pickle if info.filename.endswith("/data.pkl") else z.read(info)))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info, data in entries:
            z.writestr(info, data)


def test_deep_nesting_is_a_checkpoint_error(tmp_path):
    head = pickle.dumps({"format": "bnlab-checkpoint", "version": 2, "digests": [], "state": {"x": "HOLE"}}, 2)
    hole = b"X\x04\x00\x00\x00HOLE"  # BINUNICODE "HOLE"
    assert head.count(hole) == 1
    depth = 100_000
    deep = b"]" * depth + b"a" * (depth - 1)  # [[[...]]], built by the unpickler without recursion
    path = tmp_path / "deep.pt"
    _raw_checkpoint(path, head.replace(hole, deep, 1))
    with pytest.raises(CheckpointError, match="deep"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "state, message",
    [
        ([1, 2], "state is a list"),
        ({"a": {"__bnlab_ndarray__": 1, "dtype": "<f8", "shape": [3]}}, "damaged NumPy array"),
        ({"a": {"__bnlab_ndarray__": 1, "dtype": 5, "shape": [1], "data": torch.zeros(8, dtype=torch.uint8),
                "scalar": False}}, "damaged NumPy array"),  # fmt: skip
        ({"a": {"__bnlab_ndarray__": 1, "dtype": "|O", "shape": [1], "data": torch.zeros(8, dtype=torch.uint8),
                "scalar": False}}, "damaged NumPy array"),  # fmt: skip
        ({"a": {"__bnlab_ndarray__": 1, "dtype": "<f8", "shape": [5], "data": torch.zeros(8, dtype=torch.uint8),
                "scalar": False}}, "damaged NumPy array"),  # fmt: skip
    ],
)
def test_malformed_states_are_checkpoint_errors(tmp_path, state, message):
    from bnlab.inference.checkpoint import _structure_digest, _tensor_digest, _walk_tensors

    path = tmp_path / "bad.pt"
    # hand-made with valid digests: the decoder's own checks must refuse it
    digests = [_tensor_digest(t) for _, t in _walk_tensors(state)]
    torch.save({"format": "bnlab-checkpoint", "version": 3, "state": state, "digests": digests,
                "structure": _structure_digest(state)}, path)  # fmt: skip
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_digests_missing_or_mismatched_are_refused(tmp_path):
    path = tmp_path / "bad.pt"
    for digests, message in ((None, "digests is missing"), (["0" * 64], "do not match"), ([], "1 tensors but 0")):
        torch.save({"format": "bnlab-checkpoint", "version": 2, "state": {"w": torch.ones(2)}, "digests": digests},
                   path)  # fmt: skip
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def _trained(small, tmp_path):
    out = tmp_path / "run"
    fit(_model(), small, TrainConfig(lr=0.05, epochs=1), out_dir=out, progress=False)
    return out / CHECKPOINT_NAME


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["model_spec"].update(widths=[10**9, 16]), r"widths.*from 1 to 4096"),
        (lambda s: s["model_spec"].update(widths=[8] * 1000), r"widths.*list of 1 to 8"),
        (lambda s: s["model_spec"].update(hidden=True), r"hidden.*integer"),
        (lambda s: s["model_spec"].update(arch="transformer"), r"arch"),
        (lambda s: s["model_spec"].update(extra=1), r"fields"),
        (lambda s: s["model_spec"].update(widths=[8, 4096]), r"weights do not match the model spec"),
        (lambda s: s.update(model_spec=[1, 2]), r"not a dict"),
        (lambda s: s.pop("optimizer"), r"without optimizer"),
        (lambda s: s.update(step="3"), r"step"),
        (lambda s: s.update(model=[]), r"model is a list"),
        (lambda s: s.update(kind="other"), r"not a bnlab training checkpoint"),
    ],
)
def test_hostile_training_checkpoints_are_refused_before_building(small, tmp_path, change, message):
    path = _trained(small, tmp_path)
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=message):
        load_trained(path)
    with pytest.raises(CheckpointError, match=message):
        load_training_state(path)


def test_a_valid_spec_round_trips_and_builds(small, tmp_path):
    path = _trained(small, tmp_path)
    model, saved = load_trained(path)
    assert check_model_spec(saved["model_spec"]) == _model().spec
    x = small.x_test[:5]
    ref = _model()
    ref.load_state_dict(saved["model"])
    ref.eval()
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
