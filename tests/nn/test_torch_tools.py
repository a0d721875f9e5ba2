"""PyTorch's own tools on bnlab's layers get eager's semantics, or refuse with the fix (issue 15, item 4).

torch.fx.symbolic_trace (the layers are leaves, as torch's are), torch's fusers and convert_sync_batchnorm
(which rebuild a layer from torch's attributes and would drop what bnlab adds), torch.ao.quantization's
fuse_modules and torch.jit.script. Every comparison is against eager bnlab, torch.nn or float64 NumPy.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.quantization import fuse_modules, fuse_modules_qat

import bnlab
import bnlab.nn as bnn
from bnlab.distributed import SyncBatchNorm


def _net(momentum=0.1, **kw):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), bnn.BatchNorm2d(4, momentum=momentum, **kw), nn.ReLU(),
        nn.Conv2d(4, 2, 1), bnn.BatchNorm2d(2, momentum=momentum, **kw),
    )  # fmt: skip


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 7, 7, generator=g) * (1 + i) + 2 * i for i in range(n)]


# -- torch.fx.symbolic_trace ---------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_fx_traced_model_keeps_the_books_as_eager(momentum):
    model, eager = _net(momentum).train(), _net(momentum).train()
    before = copy.deepcopy(model.state_dict())
    gm = torch.fx.symbolic_trace(model)
    for k, v in model.state_dict().items():  # tracing runs nothing: the original layers are untouched
        assert torch.equal(v, before[k]), k
    modules = [gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    # one call_module node per layer, as torch's BN layers appear
    assert sum(isinstance(m, bnn.BatchNorm2d) for m in modules) == 2, gm.code
    xs = _batches()
    for x in xs:
        torch.testing.assert_close(gm(x), eager(x))
    assert list(gm.state_dict()) == list(eager.state_dict())  # num_batches_tracked included
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(gm.state_dict()[k], v, msg=k)
    assert int(gm.state_dict()["1.num_batches_tracked"]) == 3
    if momentum is None:  # the cumulative average: the running mean is the mean of the 3 batch means (float64)
        z = [np.asarray(model[0](x).detach(), np.float64) for x in xs]
        expected = np.mean([a.mean(axis=(0, 2, 3)) for a in z], axis=0)
        np.testing.assert_allclose(gm.state_dict()["1.running_mean"].numpy(), expected, rtol=1e-5, atol=1e-6)
    gm.eval(), eager.eval()  # the mode is the layers' at run time, not fixed at trace time
    x = torch.randn(6, 3, 7, 7)
    torch.testing.assert_close(gm(x), eager(x))
    assert int(gm.state_dict()["1.num_batches_tracked"]) == 3


def test_fx_subclasses_and_the_family_are_leaves():
    def layers():
        return nn.Sequential(
            bnn.BatchRenorm2d(3, rmax=1.5, dmax=0.5), SyncBatchNorm(3), bnn.BatchNorm2d(3, per="activation"),
            bnn.InstanceNorm2d(3, track_running_stats=True), bnn.GroupNorm(3, 3), bnn.LayerNorm([3, 4, 4]),
        )  # fmt: skip

    model, eager = layers().train(), layers().train()
    gm = torch.fx.symbolic_trace(model)  # the lazy per-activation layer traces too: it is called at run time
    assert [n.op for n in gm.graph.nodes] == ["placeholder"] + ["call_module"] * 6 + ["output"]
    for i in range(3):
        x = torch.randn(4, 3, 4, 4) + i
        torch.testing.assert_close(gm(x), eager(x))
    for k, v in eager.state_dict().items():
        torch.testing.assert_close(gm.state_dict()[k], v, msg=k)
    gm.eval(), eager.eval()
    x = torch.randn(4, 3, 4, 4)
    torch.testing.assert_close(gm(x), eager(x))


def test_fx_root_layer_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"trace a model that contains it as a submodule \(e.g. torch.nn.Sequential"):
        torch.fx.symbolic_trace(bnn.BatchNorm2d(3))


def test_fx_fuser_leaves_bnlab_bn_unfused_and_the_function_unchanged():
    """torch.fx.experimental.optimization.fuse matches torch's exact classes (a list inside the function, no
    registry): bnlab's layers stay as they are — unfused, never changed (docs/compatibility.md)."""
    from torch.fx.experimental.optimization import fuse

    model = _net(activation="relu")
    for x in _batches():
        model(x)
    model.eval()
    fused = fuse(model)
    assert sum(isinstance(m, bnn.BatchNorm2d) for m in fused.modules()) == 2
    x = torch.randn(6, 3, 7, 7)
    torch.testing.assert_close(fused(x), model(x))


# -- torch's tools that would drop what bnlab adds --------------------------------------------------------

LOSSY = [
    pytest.param({"activation": "relu"}, "fused ReLU", id="relu"),
    pytest.param({"per": "activation", "spatial_size": (5, 5)}, "per-activation statistics", id="per-activation"),
]


def _trained(**kw):
    model = _net(**kw)
    for x in _batches():
        model(x[:, :, :7, :7])
    return model.eval()


@pytest.mark.parametrize("kw, what", LOSSY)
def test_torch_fuse_conv_bn_eval_refuses_what_it_would_drop(kw, what):
    model = _trained(**kw)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match=f"fuse_conv_bn_eval would silently drop its {what}.*bnlab.fold"):
        torch.nn.utils.fusion.fuse_conv_bn_eval(model[0], model[1])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    folded = bnlab.fold(copy.deepcopy(model))  # bnlab's own folding keeps it
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_bnlab_fold_keeps_a_fused_relu_where_it_folds_and_where_it_cannot():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bnn.BatchNorm2d(4, activation="relu"), nn.Tanh(),
                          bnn.BatchNorm2d(4, activation="relu"))  # fmt: skip
    model(torch.randn(6, 3, 7, 7))
    model.eval()
    folded = bnlab.fold(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(2, 3, 7, 7)
    assert (model(x) == 0).any()  # the ReLUs act
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_torch_fuse_linear_bn_eval_refuses_a_fused_relu():
    lin, bn = nn.Linear(3, 4).eval(), bnn.BatchNorm1d(4, activation="relu").eval()
    with pytest.raises(RuntimeError, match="fuse_linear_bn_eval would silently drop its fused ReLU"):
        torch.nn.utils.fusion.fuse_linear_bn_eval(lin, bn)


def test_torch_fusers_still_fuse_plain_layers():
    model = _trained(virtual_batch=2)  # ghost BN is a training matter: eval fusion keeps the function
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(model[0], model[1])
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(fused(x), model[1](model[0](x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "layer, what",
    [
        (lambda: bnn.BatchNorm2d(4, activation="relu"), "its fused ReLU"),
        (lambda: bnn.BatchNorm2d(4, virtual_batch=2), "ghost BN"),
        (lambda: bnn.BatchNorm2d(4, per="activation", spatial_size=(5, 5)), "its per-activation statistics"),
        (lambda: bnlab.freeze(bnn.BatchNorm2d(4)), "its frozen state"),
        (lambda: bnn.BatchRenorm2d(4), "Batch Renorm's correction"),
    ],
    ids=["relu", "ghost", "per-activation", "frozen", "renorm"],
)
def test_torch_convert_sync_batchnorm_refuses_what_it_would_drop(layer, what):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), layer())
    with pytest.raises(RuntimeError, match=f"convert_sync_batchnorm would silently drop {what}"):
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(model[1]) is not nn.SyncBatchNorm


def test_bnlab_convert_sync_keeps_the_fused_relu():
    model = _trained(activation="relu")
    expected = model(torch.ones(2, 3, 7, 7))
    synced = bnlab.convert_sync(copy.deepcopy(model))
    assert all(m.activation == "relu" for m in synced.modules() if isinstance(m, SyncBatchNorm))
    torch.testing.assert_close(synced(torch.ones(2, 3, 7, 7)), expected)


# -- torch.ao.quantization.fuse_modules, torch.jit.script ------------------------------------------------


@pytest.mark.parametrize(
    "kw, names, fused_type",
    [({}, ["0", "1"], nn.Conv2d), ({}, ["0", "1", "2"], torch.ao.nn.intrinsic.ConvReLU2d),
     ({"activation": "relu"}, ["0", "1"], torch.ao.nn.intrinsic.ConvReLU2d)],  # fmt: skip
    ids=["conv-bn", "conv-bn-relu", "conv-bn(relu)"],
)
def test_fuse_modules_recognises_bnlab_bn(kw, names, fused_type):
    model = _trained(**kw)
    fused = fuse_modules(copy.deepcopy(model), [names])
    assert type(fused[0]) is fused_type and isinstance(fused[1], nn.Identity)
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


def test_fuse_modules_linear_bn1d_and_qat_refusal():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), bnn.BatchNorm1d(4), nn.ReLU())
    model(torch.randn(16, 5) * 2 + 1)
    model.eval()
    fused = fuse_modules(copy.deepcopy(model), [["0", "1", "2"]])
    assert type(fused[0]) is torch.ao.nn.intrinsic.LinearReLU
    x = torch.randn(3, 5)
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match=r"quantization-aware training.*bnlab.convert\(model, to='torch'\)"):
        fuse_modules_qat(copy.deepcopy(model).train(), [["0", "1", "2"]])
    per_activation = nn.Sequential(nn.Conv2d(3, 4, 3), bnn.BatchNorm2d(4, per="activation", spatial_size=(5, 5)))
    with pytest.raises(ValueError, match="bnlab.fold"):
        fuse_modules(per_activation.eval(), [["0", "1"]])


@pytest.mark.parametrize("layer", [bnn.BatchNorm2d(3), bnn.GroupNorm(1, 3), bnn.InstanceNorm2d(3), bnn.LayerNorm(3)])
def test_jit_script_says_unsupported_and_what_to_use(layer):
    with pytest.raises(RuntimeError, match=r"torch.jit.script does not support bnlab.*torch.compile.*torch.export"):
        torch.jit.script(nn.Sequential(nn.Identity(), layer))


# -- what a user sees as torch's ---------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"affine": False}, {"momentum": None, "eps": 1e-3},
                                {"track_running_stats": False}])  # fmt: skip
def test_repr_is_torchs(kw):
    assert repr(bnn.BatchNorm2d(5, **kw)) == repr(nn.BatchNorm2d(5, **kw))
    assert repr(bnn.BatchNorm1d(5, **kw)) == repr(nn.BatchNorm1d(5, **kw))
