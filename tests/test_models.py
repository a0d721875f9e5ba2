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
