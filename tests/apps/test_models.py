"""Models: parameter counts, no bias feeding a BN, rebuild from spec, the pre-activation recorder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import bnlab.nn as bnn
from bnlab.models import PaperMLP, SmallCNN, UnitRecorder, bn_layers, build_model, count_parameters, model_spec


def _linear_layers_before_bn(model):
    """(layer, bn) pairs: each BN with the conv/linear module that precedes it."""
    mods = [m for m in model.modules() if not isinstance(m, (nn.Sequential, SmallCNN, PaperMLP))]
    return [(mods[i - 1], m) for i, m in enumerate(mods) if isinstance(m, bnn._BatchNorm)]


@pytest.mark.parametrize("norm", ["activation", "channel"])
@pytest.mark.parametrize("model_fn", [lambda n: SmallCNN(1, (8, 8), 10, norm=n), lambda n: PaperMLP(norm=n)])
def test_no_bias_feeds_a_bn(model_fn, norm):
    model = model_fn(norm)
    pairs = _linear_layers_before_bn(model)
    assert len(pairs) == 3
    for layer, _ in pairs:
        assert isinstance(layer, (nn.Conv2d, nn.Linear))
        assert layer.bias is None
    assert model_fn(norm).pre_activation_layers()


@pytest.mark.parametrize("model_fn", [lambda: SmallCNN(1, (8, 8), 10, norm="none"), lambda: PaperMLP(norm="none")])
def test_without_bn_layers_keep_their_bias(model_fn):
    model = model_fn()
    assert bn_layers(model) == []
    assert all(m.bias is not None for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_cnn_parameter_counts():
    # conv1 1->16 (9·16), conv2 16->32 (9·16·32), fc 128->64, out 64->10 (+10 bias)
    weights = 9 * 16 + 9 * 16 * 32 + 128 * 64 + 64 * 10 + 10
    none = count_parameters(SmallCNN(1, (8, 8), 10, norm="none"))
    chan = count_parameters(SmallCNN(1, (8, 8), 10, norm="channel"))
    act = count_parameters(SmallCNN(1, (8, 8), 10, norm="activation"))
    assert none == {"total": weights + 16 + 32 + 64, "bn": 0, "other": weights + 16 + 32 + 64}
    assert chan["bn"] == 2 * (16 + 32 + 64) and chan["other"] == weights
    assert act["bn"] == 2 * (16 * 8 * 8 + 32 * 4 * 4 + 64) and act["other"] == weights
    assert chan["total"] == chan["bn"] + chan["other"]


def test_paper_mlp_shape_and_counts():
    model = PaperMLP(norm="activation")
    weights = 784 * 100 + 100 * 100 + 100 * 100 + 100 * 10 + 10
    assert count_parameters(model) == {"total": weights + 600, "bn": 600, "other": weights}
    assert count_parameters(PaperMLP(norm="none"))["total"] == weights + 300
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert model.pre_activation_layers() == ["layers.act1", "layers.act2", "layers.act3"]
    assert all(isinstance(m, nn.Sigmoid) for n, m in model.named_modules() if n.startswith("layers.act"))


def test_per_activation_params_have_the_feature_shape():
    model = SmallCNN(3, (32, 32), 10, norm="activation")
    shapes = [tuple(m.weight.shape) for _, m in bn_layers(model)]
    assert shapes == [(16, 32, 32), (32, 16, 16), (64,)]
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)


@pytest.mark.parametrize("spec_model", [SmallCNN(1, (8, 8), 10, "activation", "sigmoid"), PaperMLP(norm="none")])
def test_build_model_from_spec(spec_model):
    rebuilt = build_model(model_spec(spec_model))
    rebuilt.load_state_dict(spec_model.state_dict())
    x = torch.randn(6, *((1, 8, 8) if isinstance(spec_model, SmallCNN) else (784,)))
    spec_model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), spec_model(x), rtol=0, atol=0)


def test_bad_choices_are_rejected():
    # "batch" is a norm since the one vocabulary (it was refused before); an unknown word names the choices
    with pytest.raises(ValueError, match="unknown norm 'batchy'; expected one of 'batch', 'renorm'"):
        SmallCNN(1, (8, 8), 10, norm="batchy")
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        PaperMLP(activation="tanh")
    with pytest.raises(ValueError, match="too small"):
        SmallCNN(1, (2, 2), 10, widths=(8, 8, 8))
    with pytest.raises(ValueError, match="unknown pre-activation layer"):
        UnitRecorder(PaperMLP(), layer="layers.fc1")


def _capture_input(module):
    store = {}
    handle = module.register_forward_pre_hook(lambda m, args: store.__setitem__("x", args[0].detach().clone()))
    return store, handle


@pytest.mark.parametrize("unit", [3, (5, 1, 2)])
def test_recorder_percentiles_match_numpy_on_a_conv_map(unit):
    torch.manual_seed(0)
    model = SmallCNN(1, (8, 8), 10, norm="channel")
    layer = "features.act2"
    store, handle = _capture_input(dict(model.named_modules())[layer])
    with UnitRecorder(model, layer=layer, unit=unit) as rec:
        model(torch.randn(40, 1, 8, 8))
        got = rec.percentiles()
    handle.remove()
    c, h, w = (unit, 2, 2) if isinstance(unit, int) else unit  # int: channel at the centre of the 4x4 map
    values = store["x"][:, c, h, w].numpy().astype(np.float64)
    assert rec.values.shape == (40,)
    np.testing.assert_allclose(got, np.percentile(values, [15, 50, 85]), rtol=1e-6, atol=1e-6)


def test_recorder_on_the_mlp_default_is_last_hidden_layer_and_skips_eval():
    torch.manual_seed(1)
    model = PaperMLP(norm="none")
    x = torch.randn(60, 784)
    with UnitRecorder(model, unit=7) as rec:
        assert rec.layer == "layers.act3"
        model.eval()
        model(x)
        assert rec.values is None  # eval-mode forwards are not recorded
        model.train()
        model(x)
        expected = model.layers[:6](x)[:, 7].detach().numpy()  # flatten, fc1, act1, fc2, act2, fc3
        np.testing.assert_allclose(rec.percentiles((15, 50, 85)), np.percentile(expected, [15, 50, 85]), rtol=1e-6)
    model(x)  # hook removed: nothing breaks


# -- one vocabulary: norm × per, and the old spellings ------------------------------------------------------
from bnlab.spec import ModelSpec, SpecError  # noqa: E402
from bnlab.vocabulary import Norm, parse_norm  # noqa: E402

# every old spelling (bnlab train --norm, saved specs, the small-batch study's run names) and what it means
OLD_SPELLINGS = {
    "channel": Norm("batch", "channel"),
    "activation": Norm("batch", "activation"),
    "channel-conv": Norm("batch", "channel", False),
    "channel-ln": Norm("batch", "channel", "layer"),
    "renorm": Norm("renorm", "channel"),
    "none": Norm("none"),
    "layer": Norm("layer"),
    "instance": Norm("instance"),
    "group": Norm("group"),
}


@pytest.mark.parametrize("word", sorted(OLD_SPELLINGS))
def test_every_old_spelling_parses_to_its_pair_and_back(word):
    assert parse_norm(word) == OLD_SPELLINGS[word]
    assert parse_norm(word).label == word  # the run's name in results.json stays what it was


@pytest.mark.parametrize("norm", ["batch", "renorm"])
@pytest.mark.parametrize("per", ["channel", "activation"])
def test_new_words_parse_and_label_round_trips(norm, per):
    n = parse_norm(norm, per)
    assert (n.norm, n.per) == (norm, per)
    assert parse_norm(n.label) == n
    assert parse_norm(norm).per == "channel" and parse_norm(norm, default_per="activation").per == "activation"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("pixel",),
            r"unknown norm 'pixel'; expected one of 'batch', 'renorm', 'layer', 'instance', 'group', "
            r"'none' .*old spelling: 'channel', 'activation'",
        ),
        (("batch", "depth"), r"unknown per 'depth'; expected one of 'channel', 'activation'"),
        (("layer", "activation"), r"per applies to 'batch', 'renorm' only"),
        (("none", "channel"), r"per applies to 'batch', 'renorm' only"),
        (("activation", "channel"), r"norm 'activation' means per='activation'"),
        ((3,), r"norm must be a string"),
    ],
)
def test_unknown_or_contradicting_words_name_the_choices(args, message):
    with pytest.raises(ValueError, match=message):
        parse_norm(*args)


@pytest.mark.parametrize("old, new", [("channel", {}), ("activation", {"per": "activation"})])
def test_old_spelling_builds_the_same_model(old, new):
    torch.manual_seed(0)
    a = SmallCNN(1, (8, 8), 10, norm=old, widths=(8,), hidden=16)
    torch.manual_seed(0)
    b = SmallCNN(1, (8, 8), 10, norm="batch", widths=(8,), hidden=16, **new)
    assert a.spec == b.spec and a.spec["norm"] == "batch" and a.spec["per"] == new.get("per", "channel")
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]


def test_the_mlp_defaults_to_per_activation_and_takes_channel_as_a_synonym():
    assert PaperMLP().spec["per"] == "activation" and PaperMLP(norm="channel").spec["per"] == "channel"
    assert "per" not in PaperMLP(norm="none").spec
    with pytest.raises(ValueError, match="renorm"):
        PaperMLP(norm="renorm")


@pytest.mark.parametrize(
    "model",
    [
        SmallCNN(1, (8, 8), 10, "batch", "sigmoid", widths=(4,), hidden=8, per="activation"),
        SmallCNN(1, (8, 8), 10, "renorm", widths=(4,), hidden=8, renorm_steps=40, per="activation"),
        SmallCNN(1, (8, 8), 10, "channel", widths=(4,), hidden=8, dense_norm="layer"),
        PaperMLP(64, 10, "group", hidden=(16,)),
    ],
)
def test_model_spec_is_one_dataclass_that_round_trips(model):
    spec = ModelSpec.from_dict(model.spec)
    assert spec == model.model_spec and spec.to_dict() == model.spec
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(5, *((1, 8, 8) if spec.arch == "cnn" else (64,)))
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


def test_per_activation_renorm_has_the_feature_shape():
    model = SmallCNN(1, (8, 8), 10, "renorm", widths=(4,), hidden=8, per="activation")
    assert [tuple(m.weight.shape) for _, m in bn_layers(model)] == [(4, 8, 8), (8,)]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"norm": "channel-conv"}, "write per and dense_norm"),
        ({"norm": "layer", "per": "channel"}, "per applies to"),
        ({"per": "depth"}, "unknown per"),
        ({"dense_norm": "group"}, "dense_norm must be"),
        ({"renorm_steps": 5}, "renorm_steps is for norm='renorm' only"),
        ({"widths": []}, r"widths.*list of 1 or more"),
    ],
)
def test_bad_spec_dicts_name_the_field(change, message):
    d = {**SmallCNN(1, (8, 8), 10).spec, **change}
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_dict(d)


@pytest.mark.parametrize("name", ["bnlab.vocabulary", "bnlab.spec", "bnlab.models"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), verbose=False)
    assert result.attempted > 0 and result.failed == 0
