"""recalibrate, fold, freeze, convert: real torch models, torch.nn and bnlab.nn BN layers alike."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab
import bnlab.nn as bnn
from bnlab.inference import Affine, convert, fold, freeze, is_frozen, recalibrate, unfreeze

KINDS = ("torch", "bnlab")


def bn(kind, dims, c, **kw):
    lib = nn if kind == "torch" else bnn
    return getattr(lib, f"BatchNorm{dims}d")(c, **kw)


def randomize(model, seed=0):
    """Non-trivial γ, β and running statistics in every BN layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, bnn._BatchNorm)):
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def bn_modules(model):
    return [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, bnn._BatchNorm))]


def max_err(a, b):
    return float((a.detach().double() - b.detach().double()).abs().max())


# --- models -------------------------------------------------------------------------------------------


class Block(nn.Module):
    """Residual block: conv-BN-ReLU, grouped conv with bias → BN, residual add."""

    def __init__(self, c, kind):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = bn(kind, 2, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=2, bias=True)
        self.bn2 = bn(kind, 2, c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ResNetish(nn.Module):
    def __init__(self, kind="torch", per_activation=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), bn(kind, 2, 8), nn.ReLU())
        self.block = Block(8, kind)
        self.down = nn.Conv2d(8, 8, 2, stride=2)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2, bias=False)
        self.up_bn = bn(kind, 2, 6)
        self.post_bn = bn(kind, 2, 6)  # after a ReLU: cannot be folded, becomes an Affine
        # per-activation BN (one statistic per (channel, location)): always an Affine
        self.act_bn = bnn.BatchNorm2d(6, per="activation", spatial_size=(8, 8)) if per_activation else nn.Identity()
        self.fc1 = nn.Linear(6 * 4 * 4, 16, bias=False)
        self.fc_bn = bn(kind, 1, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block(self.stem(x))
        x = F.relu(self.up_bn(self.up(self.down(x))))
        x = self.act_bn(F.max_pool2d(self.post_bn(x), 2))
        x = F.max_pool2d(x, 2).flatten(1)
        return self.fc2(F.relu(self.fc_bn(self.fc1(x))))


class SmallCNN(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, dropout, linear-BN1d: the model recalibrate is checked on."""

    def __init__(self, kind="torch", per="channel", dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        if per == "activation":
            self.bn1 = bnn.BatchNorm2d(4, per="activation", spatial_size=(6, 6))
        else:
            self.bn1 = bn(kind, 2, 4)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.bn2 = bn(kind, 2, 6)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.bn3 = bn(kind, 1, 5)

    def layers(self):
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.fc, self.bn3)]

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.drop(F.relu(self.bn2(self.conv2(x))))
        return self.bn3(self.fc(x.flatten(1)))


@torch.no_grad()
def independent_alg2(model, batches):
    """Alg. 2 from scratch: run each batch through the training network (batch statistics, float64,
    no dropout), collect every BN input, and pool per batch by the documented formula."""
    per_layer = [[] for _ in model.layers()]
    for x in batches:
        h = x.double()
        for i, (layer, norm) in enumerate(model.layers()):
            w, b = layer.weight.double(), layer.bias.double()
            z = F.linear(h.flatten(1), w, b) if i == 2 else F.conv2d(h, w, b)
            zn = z.numpy()
            if getattr(norm, "per", "channel") == "activation":
                axes = (0,)
            else:
                axes = tuple(a for a in range(z.dim()) if a != 1)
            m = math.prod(zn.shape[a] for a in axes)
            mu = zn.mean(axis=axes, keepdims=True)
            var = zn.var(axis=axes, keepdims=True)  # biased: σ²_B
            per_layer[i].append((m, mu.squeeze(axes), var.squeeze(axes)))
            gamma = norm.weight.double().numpy().reshape(mu.shape)
            beta = norm.bias.double().numpy().reshape(mu.shape)
            h = torch.from_numpy(np.maximum((zn - mu) / np.sqrt(var + norm.eps) * gamma + beta, 0))
    out = []
    for stats in per_layer:
        ms = np.array([s[0] for s in stats], dtype=np.float64)
        means = np.stack([s[1] for s in stats])
        variances = np.stack([s[2] for s in stats])
        w = ms.reshape(-1, *([1] * (means.ndim - 1)))
        mean = (w * means).sum(0) / ms.sum()
        var = (w * variances).sum(0) / (ms - 1).sum()
        if len(set(ms.tolist())) == 1:  # equal sizes: literally E_B[μ_B] and m/(m−1)·E_B[σ²_B]
            m = ms[0]
            np.testing.assert_allclose(mean, means.mean(0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(var, m / (m - 1) * variances.mean(0), rtol=1e-12)
        out.append((mean, var))
    return out


# --- recalibrate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sizes", [(8, 8, 8, 8), (3, 16, 5, 9)], ids=["equal", "unequal"])
def test_recalibrate_equals_an_independent_alg2(kind, sizes):
    torch.manual_seed(0)
    model = randomize(SmallCNN(kind, dropout=0.5))
    batches = [torch.randn(n, 3, 8, 8) * 2 + 1 for n in sizes]
    recalibrate(model, batches, progress=False)
    expected = independent_alg2(model, batches)
    for (_, norm), (mean, var) in zip(model.layers(), expected, strict=True):
        np.testing.assert_allclose(norm.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(norm.running_var.numpy(), var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sizes", [(8, 8, 8), (4, 11, 6)], ids=["equal", "unequal"])
def test_recalibrate_per_activation(sizes):
    torch.manual_seed(1)
    model = randomize(SmallCNN("bnlab", per="activation"))
    batches = [torch.randn(n, 3, 8, 8) for n in sizes]
    recalibrate(model, batches, progress=False)
    expected = independent_alg2(model, batches)
    assert model.bn1.running_mean.shape == (4, 6, 6)
    for (_, norm), (mean, var) in zip(model.layers(), expected, strict=True):
        np.testing.assert_allclose(norm.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(norm.running_var.numpy(), var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_recalibrate_leaves_everything_else_as_it_was(kind):
    torch.manual_seed(0)
    model = randomize(SmallCNN(kind, dropout=0.3))
    model.train()
    model.bn2.eval()  # a mixed state must survive too
    for m in bn_modules(model):
        m.num_batches_tracked.fill_(7)
    freeze(nn.ModuleList([model.bn3]))  # one frozen layer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    batches = [(torch.randn(6, 3, 8, 8), torch.zeros(6)) for _ in range(3)]  # (x, y) pairs
    assert recalibrate(model, batches, progress=False) is model
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"bn{i}.running_{s}" for i in (1, 2, 3) for s in ("mean", "var")}
    assert [m.training for m in model.modules()] == modes
    assert is_frozen(model.bn3) and not is_frozen(model.bn1)


def test_recalibrate_sources_max_batches_and_progress(capsys):
    torch.manual_seed(0)
    model = SmallCNN()
    data = torch.randn(40, 3, 8, 8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, torch.zeros(40)), batch_size=10)
    recalibrate(model, loader, max_batches=2, progress=True)
    from_loader = model.bn2.running_var.clone()
    recalibrate(model, (data[i : i + 10] for i in range(0, 20, 10)), progress=False)  # a generator of tensors
    assert torch.equal(model.bn2.running_var, from_loader)
    assert "recalibrate" in capsys.readouterr().err  # tqdm's bar
    with pytest.raises(ValueError, match="max_batches"):
        recalibrate(model, [data], max_batches=0)


@pytest.mark.parametrize("lang, label, unit", [("en", "recalibrate", "batch"), ("es", "recalibrar", "minilote")])
def test_recalibrate_progress_bar_speaks_the_language(capsys, lang, label, unit):
    torch.manual_seed(0)
    model = SmallCNN()
    batches = [torch.randn(10, 3, 8, 8) for _ in range(3)]
    recalibrate(model, batches, progress=True, lang=lang)
    err = capsys.readouterr().err
    assert f"{label}:" in err and "/3 [" in err and unit in err  # e.g. "recalibrar:   0%| | 0/3 [..., ?minilote/s]"
    assert ("batch" not in err and "recalibrate" not in err) if lang == "es" else "minilote" not in err
    recalibrate(model, batches, progress=False, lang=lang)
    assert capsys.readouterr().err == ""


def test_recalibrate_unknown_lang_changes_nothing():
    torch.manual_seed(0)
    model = randomize(SmallCNN()).train()
    state = _state(model)
    with pytest.raises(ValueError, match=r"unknown lang 'fr'; use one of 'en', 'es'"):
        recalibrate(model, [torch.randn(4, 3, 8, 8)], progress=False, lang="fr")
    _same_state(model, state)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def _same_state(model, state):
    sd, modes = state
    now = model.state_dict()
    assert sd.keys() == now.keys()
    assert all(torch.equal(sd[k], now[k]) for k in sd)
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("kind", KINDS)
def test_recalibrate_bad_input_changes_nothing(kind):
    torch.manual_seed(0)
    model = randomize(SmallCNN(kind)).train()
    state = _state(model)
    with pytest.raises(ValueError, match="no batches"):
        recalibrate(model, [], progress=False)
    _same_state(model, state)
    # the second batch has one example: bn3 (after the linear layer) gets 1 value per statistic
    with pytest.raises(ValueError, match=r"'bn3' \(BatchNorm1d\) got 1 value per statistic from batch 1"):
        recalibrate(model, [torch.randn(4, 3, 8, 8), torch.randn(1, 3, 8, 8)], progress=False)
    _same_state(model, state)
    with pytest.raises(ValueError, match="non-finite"):
        recalibrate(model, [torch.full((4, 3, 8, 8), float("nan"))], progress=False)
    _same_state(model, state)
    with pytest.raises(TypeError, match="batch 0 is a dict"):
        recalibrate(model, [{"x": torch.randn(4, 3, 8, 8)}], progress=False)
    _same_state(model, state)
    with pytest.raises(RuntimeError):  # the model's own error (wrong channel count) propagates
        recalibrate(model, [torch.randn(4, 3, 8, 8), torch.randn(4, 5, 8, 8)], progress=False)
    _same_state(model, state)


def test_recalibrate_warns_about_unused_layers_and_bn_free_models():
    model = SmallCNN()
    model.unused = nn.BatchNorm2d(3)
    with pytest.warns(UserWarning, match="'unused'.*received no input"):
        recalibrate(model, [torch.randn(4, 3, 8, 8)], progress=False)
    assert torch.equal(model.unused.running_var, torch.ones(3))
    with pytest.warns(UserWarning, match="no batch-normalization layers"):
        recalibrate(nn.Linear(2, 2), [torch.randn(3, 2)], progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_recalibrate_gives_statistics_to_layers_without_them(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bn(kind, 2, 4, track_running_stats=False), nn.ReLU())
    with pytest.raises(
        ValueError, match=r"cannot fold: layer '1' .* has no running statistics; call bnlab.recalibrate"
    ):
        fold(model)
    batches = [torch.randn(8, 3, 6, 6) for _ in range(3)]
    recalibrate(model, batches, progress=False)
    assert model[1].running_mean.shape == (4,) and model[1].track_running_stats is False
    x = torch.randn(5, 3, 6, 6)
    model.eval()
    eval_out = model(x)
    assert max_err(fold(model)(x), eval_out) < 1e-5
    # eval mode now uses the population statistics, not the batch's
    model.train()
    assert max_err(model(x), eval_out) > 1e-3
    before = model[1].running_mean.clone()
    model(x)  # training never updates them
    assert torch.equal(model[1].running_mean, before)


@pytest.mark.parametrize("kind", KINDS)
def test_recalibrated_statistics_beat_ema_statistics(kind):
    """Train briefly with a large step so the EMA lags the weights; compare eval-mode outputs with the
    train-mode (batch-statistics) outputs on the training batches."""
    torch.manual_seed(0)
    data = torch.randn(256, 3, 8, 8) * 3 + 2
    labels = torch.randint(0, 5, (256,))
    model = SmallCNN(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    batches = [(data[i : i + 32], labels[i : i + 32]) for i in range(0, 256, 32)]
    model.train()
    for _ in range(3):
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    def gap():
        with torch.no_grad():
            errs = []
            for x, _ in batches:
                train_out = copy.deepcopy(model).train()(x)  # batch statistics (on a copy: no EMA step)
                errs.append((model.eval()(x) - train_out).abs().mean())
            return float(torch.stack(errs).mean())

    ema_gap = gap()
    recalibrate(model, [x for x, _ in batches], progress=False)
    recal_gap = gap()
    print(f"[{kind}] mean |eval - train-mode| on training batches: EMA {ema_gap:.4f}, recalibrated {recal_gap:.4f}")
    assert recal_gap < 0.5 * ema_gap


# --- fold ------------------------------------------------------------------------------------------------


def _check_fold(model, x, tol=1e-5):
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    types = [type(m) for m in model.modules()]
    folded = fold(model)
    assert not bn_modules(folded)
    assert not folded.training
    # the input model is untouched
    assert [m.training for m in model.modules()] == modes and [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        reference = copy.deepcopy(model).eval()(x)
        err = max_err(folded(x), reference)
    assert err <= tol, err
    return folded, err


@pytest.mark.parametrize("kind", KINDS)
def test_fold_resnet_style_model(kind):
    torch.manual_seed(0)
    model = ResNetish(kind, per_activation=True)
    model.train()
    model(torch.randn(8, 3, 16, 16))  # materialize nothing lazy, move the running stats a bit
    randomize(model)
    folded, err = _check_fold(model, torch.randn(4, 3, 16, 16))
    print(f"[{kind}] fold max abs error {err:.2e}")
    # folded pairs became Identity, the rest Affine
    assert isinstance(folded.stem[1], nn.Identity)
    assert isinstance(folded.block.bn1, nn.Identity) and isinstance(folded.block.bn2, nn.Identity)
    assert isinstance(folded.up_bn, nn.Identity) and isinstance(folded.fc_bn, nn.Identity)
    assert isinstance(folded.post_bn, Affine) and folded.post_bn.per == "channel"
    assert isinstance(folded.act_bn, Affine) and folded.act_bn.per == "activation"
    assert folded.act_bn.scale.shape == (6, 8, 8)
    assert folded.up.bias is not None and folded.fc1.bias is not None  # biases added where there were none


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_every_conv_kind(dims, transposed, bias, groups):
    torch.manual_seed(dims * 8 + transposed * 4 + bias * 2 + groups)
    conv_cls = getattr(nn, f"Conv{'Transpose' if transposed else ''}{dims}d")
    conv = conv_cls(4, 6, 3, groups=groups, bias=bias)
    model = randomize(nn.Sequential(conv, bn("torch", dims, 6)))
    folded, _ = _check_fold(model, torch.randn(3, 4, *([5] * dims)))
    assert isinstance(folded[1], nn.Identity)


@pytest.mark.parametrize("kind", [*KINDS, "bnlab-activation"])
@pytest.mark.parametrize("bias", [False, True])
def test_fold_linear(kind, bias):
    torch.manual_seed(0)
    # per-activation BN on (N, features) has one statistic per feature: a per-channel map, foldable
    norm = bnn.BatchNorm1d(5, per="activation", spatial_size=()) if kind == "bnlab-activation" else bn(kind, 1, 5)
    model = randomize(nn.Sequential(nn.Linear(7, 5, bias=bias), norm, nn.Linear(5, 2)))
    folded, _ = _check_fold(model, torch.randn(4, 7))
    assert isinstance(folded[1], nn.Identity)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.bfloat16, 0.1)])
def test_fold_other_dtypes(dtype, tol):
    torch.manual_seed(0)
    model = randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))).to(dtype)
    folded, _ = _check_fold(model, torch.randn(2, 3, 6, 6, dtype=dtype), tol=tol)
    assert folded[0].weight.dtype == dtype and folded[0].bias.dtype == dtype


class Shared(nn.Module):
    """Cases that must not be folded into the conv: its output used twice; a BN called twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x):
        z = self.conv(x)
        y = self.bn(z) + z  # z is used twice
        return self.bn2(self.conv2(y)) + self.bn2(y)  # bn2 is called twice


def test_fold_leaves_shared_outputs_and_layers_as_affine_maps():
    torch.manual_seed(0)
    model = randomize(Shared())
    folded, _ = _check_fold(model, torch.randn(2, 3, 6, 6))
    assert isinstance(folded.bn, Affine) and isinstance(folded.bn2, Affine)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.head_bn = nn.BatchNorm1d(2)

    def forward(self, x):
        x = self.features(x).mean((2, 3))
        if x.sum() > 0:
            x = -x
        return self.head_bn(self.head(x))


def test_fold_falls_back_to_sequential_structure_when_tracing_fails():
    torch.manual_seed(0)
    model = randomize(Branchy())
    with pytest.warns(UserWarning, match="could not trace Branchy"):
        folded, _ = _check_fold(model, torch.randn(3, 3, 6, 6))
    assert isinstance(folded.features[1], nn.Identity)
    assert isinstance(folded.features[3], Affine)
    assert isinstance(folded.head_bn, Affine)  # not in a Sequential: not folded, still exact


def test_fold_of_a_model_that_is_a_bn_layer_and_of_frozen_layers():
    torch.manual_seed(0)
    layer = randomize(nn.BatchNorm1d(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folded, _ = _check_fold(layer, torch.randn(4, 3))
    assert isinstance(folded, Affine)
    model = freeze(randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))))
    folded, _ = _check_fold(model, torch.randn(2, 3, 5, 5))
    assert is_frozen(model[1])  # the input keeps its state


def test_fold_errors_name_the_layer():
    lazy = nn.Sequential(nn.Conv2d(3, 4, 3), bnn.BatchNorm2d(4, per="activation"))
    with pytest.raises(ValueError, match=r"cannot fold: layer '1' \(BatchNorm2d\) is lazy"):
        fold(lazy)
    bad = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    bad[1].running_var.fill_(-1.0)
    with pytest.raises(ValueError, match="cannot fold: layer '1'.*negative"):
        fold(bad)
    torch_lazy = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d())
    with pytest.raises(ValueError, match=r"layer '1' \(LazyBatchNorm2d\) is lazy"):
        fold(torch_lazy)


# --- freeze ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("affine", [False, True])
def test_freeze_survives_train_and_gradients_flow(kind, affine):
    torch.manual_seed(0)
    model = randomize(SmallCNN(kind))
    x = torch.randn(8, 3, 8, 8)
    eval_out = copy.deepcopy(model).eval()(x)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    assert freeze(model, affine=affine) is model
    model.train()
    assert all(m.training for m in model.modules())  # train() still reports training
    out = model(x)
    assert max_err(out, eval_out) < 1e-5  # normalized with the running statistics
    out.square().mean().backward()
    now = model.state_dict()
    assert all(torch.equal(v, now[k]) for k, v in stats.items())  # running statistics kept
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.fc.weight.grad is not None
    for m in bn_modules(model):
        assert m.weight.requires_grad is (not affine)
        assert (m.weight.grad is None) is affine
    assert all(m.training for m in model.modules())
    # a deep copy (e.g. an EMA model, or a checkpointed module) stays frozen
    twin = copy.deepcopy(model).train()
    twin(x)
    assert torch.equal(twin.bn1.running_mean, model.bn1.running_mean)

    assert unfreeze(model) is model
    for m in bn_modules(model):
        assert m.weight.requires_grad and not is_frozen(m)
        assert not m._forward_pre_hooks and not m._forward_hooks
    model(x)  # training updates the statistics again
    assert not torch.equal(model.bn1.running_mean, stats["bn1.running_mean"])
    assert int(model.bn1.num_batches_tracked) == int(stats["bn1.num_batches_tracked"]) + 1


def test_unfreeze_restores_requires_grad_flags_and_repeated_freeze_is_harmless():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[1].bias.requires_grad_(False)
    freeze(model, affine=True)
    freeze(model, affine=True)
    assert len(model[1]._forward_pre_hooks) == 1
    unfreeze(model)
    assert model[1].weight.requires_grad and not model[1].bias.requires_grad
    unfreeze(model)  # nothing frozen: no-op
    assert "frozen" not in vars(model[1])


def test_frozen_torch_layer_reports_training_even_if_forward_fails():
    model = freeze(nn.Sequential(nn.BatchNorm2d(3))).train()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 4, 4))
    assert model[0].training


def test_freeze_refuses_layers_without_statistics():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match=r"cannot freeze: layer '1' \(BatchNorm1d\) has no running statistics"):
        freeze(model)
    assert not is_frozen(model[0])  # nothing changed


# --- convert ---------------------------------------------------------------------------------------------


def _torch_zoo():
    return nn.Sequential(
        nn.Conv1d(3, 4, 3),
        nn.BatchNorm1d(4),
        nn.Flatten(1),
        nn.Unflatten(1, (4, 1, 6)),
        nn.BatchNorm2d(4, affine=False),
        nn.Unflatten(2, (1, 1)),
        nn.BatchNorm3d(4, momentum=None, eps=1e-3, track_running_stats=False),
        nn.Flatten(1),
        nn.Linear(24, 5),
        nn.BatchNorm1d(5, momentum=0.3),
    )


def test_convert_round_trip_keeps_state_and_outputs():
    torch.manual_seed(0)
    model = randomize(_torch_zoo()).double()
    model[4].eval()  # mixed modes
    model[8].weight.requires_grad_(False)
    freeze(nn.ModuleList([model[9]]))
    x = torch.randn(6, 3, 8, dtype=torch.float64)
    before = copy.deepcopy(model)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    modes = [m.training for m in model.modules()]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing unknown here: no warning
        convert(model, to="bnlab")
    kinds = [type(m) for m in model.modules()]
    assert kinds.count(bnn.BatchNorm1d) == 2 and bnn.BatchNorm2d in kinds and bnn.BatchNorm3d in kinds
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d) for m in model.modules())
    assert [id(p) for p in model.parameters()] == params  # the very same Parameter objects
    assert [m.training for m in model.modules()] == modes
    assert model[9].frozen and not model[1].frozen
    assert model[3 + 1].running_mean.dtype == torch.float64
    for m_new, m_old in zip(model.modules(), before.modules(), strict=True):
        for name in ("eps", "momentum", "affine", "track_running_stats"):
            if hasattr(m_old, name):
                assert getattr(m_new, name) == getattr(m_old, name)
    for train in (False, True):
        a = copy.deepcopy(before).train(train)
        b = copy.deepcopy(model).train(train)
        assert max_err(a(x), b(x)) < 1e-10
        if train:  # same running-statistics updates
            sa, sb = a.state_dict(), b.state_dict()
            assert all(torch.allclose(sa[k].double(), sb[k].double(), atol=1e-12) for k in sa)

    convert(model, to="torch")
    assert [type(m) for m in model.modules()] == [type(m) for m in before.modules()]
    now = model.state_dict()
    assert list(now) == list(sd) and all(torch.equal(sd[k], now[k]) and sd[k].dtype == now[k].dtype for k in sd)
    assert [m.training for m in model.modules()] == modes
    assert is_frozen(model[9]) and not is_frozen(model[1])
    assert not model[8].weight.requires_grad
    assert max_err(model(x), before(x)) == 0.0


def test_convert_keeps_an_optimizer_working():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    convert(model, to="bnlab")
    w = model[1].weight.detach().clone()
    opt.zero_grad()
    model(torch.randn(5, 3)).square().sum().backward()
    opt.step()
    assert not torch.equal(model[1].weight, w)


def test_convert_warns_about_unknown_normalization_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.SyncBatchNorm(4),
        nn.GroupNorm(2, 4),
        nn.LazyBatchNorm2d(),
        nn.BatchNorm2d(4),
    )
    with pytest.warns(UserWarning, match=r"left 3 normalization layer\(s\).*'1' \(SyncBatchNorm\).*'2' \(GroupNorm\)"):
        convert(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[4], bnn.BatchNorm2d)


def test_convert_refuses_per_activation_to_torch_and_bad_targets():
    model = nn.Sequential(bnn.BatchNorm2d(4), bnn.BatchNorm2d(4, per="activation", spatial_size=(3, 3)))
    with pytest.raises(ValueError, match=r"layer '1' \(BatchNorm2d\) to torch: it is per-activation"):
        convert(model, to="torch")
    assert isinstance(model[0], bnn.BatchNorm2d)  # nothing changed
    with pytest.raises(ValueError, match="to must be"):
        convert(model, to="keras")
    single = convert(nn.BatchNorm1d(3))
    assert isinstance(single, bnn.BatchNorm1d)


def test_top_level_names():
    for name in (
        "recalibrate",
        "fold",
        "freeze",
        "unfreeze",
        "convert",
        "export_onnx",
        "save_checkpoint",
        "load_checkpoint",
    ):
        assert getattr(bnlab, name) is getattr(bnlab.inference, name)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.filterwarnings("error::UserWarning")
def test_docs_examples_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "inference.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)
    out = capsys.readouterr().out
    assert "Affine((8, 8, 8), per='activation')" in out and "True True True" in out


# -- issue 7 item 15 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hook",
    ["conv_forward", "conv_pre", "bn_forward"],
)
def test_fold_keeps_a_hooked_pair_as_conv_plus_affine(hook):
    # a hook on the conv (or the BN) can change what the BN sees; folding would skip it: the docstring
    # promises an Affine instead, with outputs equal to the eval-mode model's
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bnn.BatchNorm2d(4), nn.ReLU()).double()
    randomize(model)
    if hook == "conv_forward":
        model[0].register_forward_hook(lambda m, args, out: 2 * out + 1)
    elif hook == "conv_pre":
        model[0].register_forward_pre_hook(lambda m, args: (args[0] * 3,))
    else:
        model[1].register_forward_hook(lambda m, args, out: out - 0.5)
    folded = fold(model)
    assert isinstance(folded[1], Affine)
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-12, atol=1e-12)


def test_recalibrate_accumulates_in_float64():
    # float64 inputs at an offset of 1e6: the statistics must be those of float64 arithmetic (a float32
    # accumulation rounds the inputs to steps of 1/16 and the sums to 7 digits)
    torch.manual_seed(0)
    model = nn.Sequential(bnn.BatchNorm2d(3)).double()
    batches = [1e6 + torch.randn(8, 3, 5, 5, dtype=torch.float64) for _ in range(6)]
    recalibrate(model, batches, progress=False)
    x = torch.stack(batches).numpy()  # (batch, m, C, H, W)
    axes = (1, 3, 4)
    m = 8 * 5 * 5
    mean = x.mean(axis=axes).mean(axis=0)  # E_B[μ_B]
    var = m / (m - 1) * x.var(axis=axes).mean(axis=0)  # m/(m−1) E_B[σ²_B]
    np.testing.assert_allclose(model[0].running_mean.numpy(), mean, rtol=1e-13)
    np.testing.assert_allclose(model[0].running_var.numpy(), var, rtol=1e-9)
