"""bnlab.nn as a true drop-in: PyTorch's own module tests and tooling (compile, export, fx, functorch).

PyTorch's generic module tests (``torch.testing._internal.common_modules``, as ``test/test_modules.py``
runs them) are rebuilt here with our classes substituted: each of torch's sample inputs for
BatchNorm1d/2d/3d runs through torch's layer and ours, from the same state, in train and eval mode, and
everything a user can observe must agree. Differences on purpose are listed in docs/compatibility.md and
tested as such here.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.testing._internal.common_modules import module_db

import bnlab
import bnlab.nn
from bnlab.nn import functional as F

OURS = {
    nn.BatchNorm1d: bnlab.nn.BatchNorm1d,
    nn.BatchNorm2d: bnlab.nn.BatchNorm2d,
    nn.BatchNorm3d: bnlab.nn.BatchNorm3d,
}
INFOS = [info for info in module_db if info.module_cls in OURS]


def _cases():
    for info in INFOS:
        for dtype in (torch.float32, torch.float64):
            for training in (True, False):
                samples = info.module_inputs_func(info, "cpu", dtype, True, training)
                mode = "train" if training else "eval"
                for i, sample in enumerate(samples):
                    name = f"{info.module_cls.__name__}-{sample.desc or i}-{str(dtype)[6:]}-{mode}"
                    yield pytest.param(info.module_cls, sample, dtype, training, id=name)


def _twins(torch_cls, sample, dtype, training):
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    torch.manual_seed(0)
    theirs = torch_cls(*args, **kwargs).to(dtype)
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
        if theirs.running_mean is not None:
            theirs.running_mean.uniform_(-1, 1)
            theirs.running_var.uniform_(0.5, 2)
    ours = OURS[torch_cls](*args, **kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    theirs.train(training), ours.train(training)
    return theirs, ours


def _close(a, b, dtype):
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("torch_cls, sample, dtype, training", list(_cases()))
def test_torch_module_samples_behave_as_torch(torch_cls, sample, dtype, training):
    theirs, ours = _twins(torch_cls, sample, dtype, training)
    assert isinstance(ours, torch_cls) and isinstance(ours, nn.modules.batchnorm._BatchNorm)
    x = sample.forward_input.args[0].detach()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):  # twice: running statistics and the cumulative-average counter move
        ya, yb = theirs(xa), ours(xb)
        assert yb.shape == ya.shape and yb.dtype == ya.dtype
        _close(yb, ya, dtype)
    dy = torch.randn_like(ya)
    ya.backward(dy)
    yb.backward(dy)
    _close(xb.grad, xa.grad, dtype)
    for (name, pa), (_, pb) in zip(theirs.named_parameters(), ours.named_parameters(), strict=True):
        assert (pa.grad is None) == (pb.grad is None), name
        if pa.grad is not None:
            _close(pb.grad, pa.grad, dtype)
    sa, sb = theirs.state_dict(), ours.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sb[k].dtype == sa[k].dtype, k
        _close(sb[k], sa[k], dtype)


@pytest.mark.parametrize("torch_cls", list(OURS))
def test_pickle_factory_kwargs_and_repr(torch_cls):
    ours = OURS[torch_cls](4, bias=False)
    x = torch.randn(3, 4, *(3,) * (1 if torch_cls is nn.BatchNorm1d else (2 if torch_cls is nn.BatchNorm2d else 3)))
    ours(x)
    back = pickle.loads(pickle.dumps(ours))
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    ours.eval(), back.eval(), loaded.eval()
    torch.testing.assert_close(back(x), ours(x))
    torch.testing.assert_close(loaded(x), ours(x))
    meta = OURS[torch_cls](4, device="meta", dtype=torch.float64)
    theirs = torch_cls(4, device="meta", dtype=torch.float64)
    for (n, a), (_, b) in zip(theirs.state_dict().items(), meta.state_dict().items(), strict=True):
        assert (a.device, a.dtype, a.shape) == (b.device, b.dtype, b.shape), n
    assert "bias=False" in repr(ours)


def test_bias_false_matches_torch():
    theirs, ours = nn.BatchNorm2d(3, bias=False), bnlab.nn.BatchNorm2d(3, bias=False)
    assert ours.bias is None and ours.weight is not None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("per", ["channel", "activation"])
def test_empty_batch_behaves_as_torch(per):
    kw = {"spatial_size": (2, 2)} if per == "activation" else {}
    ours, theirs = bnlab.nn.BatchNorm2d(3, per=per, **kw), nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 2, 2)
    ours(x), theirs(x)
    before = copy.deepcopy(ours.state_dict())
    empty = torch.randn(0, 3, 2, 2, requires_grad=True)
    y, y_t = ours(empty), theirs(torch.randn(0, 3, 2, 2))
    assert y.shape == y_t.shape == (0, 3, 2, 2)
    y.sum().backward()
    assert empty.grad.shape == empty.shape
    assert torch.equal(ours.weight.grad, torch.zeros_like(ours.weight)) and torch.equal(ours.bias.grad, ours.bias * 0)
    for k in ("running_mean", "running_var"):
        assert torch.equal(ours.state_dict()[k], before[k])
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 2  # torch counts the batch
    ours.eval()
    assert ours(torch.randn(0, 3, 2, 2)).shape == (0, 3, 2, 2)


def test_state_dict_without_counter_keeps_the_current_count():
    ours, theirs = bnlab.nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    for m in (ours, theirs):
        m(torch.randn(4, 3, 2, 2)), m(torch.randn(4, 3, 2, 2))
    sd = nn.BatchNorm2d(3).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    ours.load_state_dict(sd), theirs.load_state_dict(sd)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 2


# -- the operator ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("axes", [[0, 2, 3], [0]])
def test_opcheck(axes):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration, AOT dispatch."""
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    fshape = [n for i, n in enumerate(x.shape) if i not in axes]
    w = torch.rand(fshape, dtype=torch.float64, requires_grad=True)
    b = torch.rand(fshape, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.bnlab.batch_norm_train, (x, w, b, axes, 1e-5, False))
    torch.library.opcheck(torch.ops.bnlab.batch_norm_train, (x, None, None, axes, 1e-5, False))
    torch.library.opcheck(torch.ops.bnlab.batch_norm_train, (x, w, b, axes, 1e-5, True))  # fused ReLU
    mean, var = torch.randn(fshape, dtype=torch.float64), torch.rand(fshape, dtype=torch.float64) + 0.5
    dy = torch.randn_like(x)
    torch.library.opcheck(
        torch.ops.bnlab.batch_norm_backward, (dy, x.detach(), mean, var, w.detach(), None, axes, 1e-5, [True] * 3)
    )


def test_operator_equals_the_eager_path():
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    w, b = torch.rand(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    y, mean, var = torch.ops.bnlab.batch_norm_train(x, w, b, [0, 2, 3], 1e-5, False)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, w, b, training=True), rtol=0, atol=1e-13)
    torch.testing.assert_close(mean, x.mean((0, 2, 3)), rtol=0, atol=1e-14)
    torch.testing.assert_close(var, x.var((0, 2, 3), correction=0), rtol=0, atol=1e-14)


# -- functorch -------------------------------------------------------------------------------------------


def _torch_and_ours(per="channel", **kw):
    torch.manual_seed(0)
    theirs = nn.BatchNorm2d(3, dtype=torch.float64, **kw)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5), theirs.bias.uniform_(-1, 1)
    ours = bnlab.nn.BatchNorm2d(3, dtype=torch.float64, **kw)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def test_forward_mode_ad_in_training():
    theirs, ours = _torch_and_ours(track_running_stats=False)  # functorch refuses in-place buffer updates
    x, t = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.randn(5, 3, 4, 4, dtype=torch.float64)
    y_t, dy_t = torch.func.jvp(theirs, (x,), (t,))
    y_o, dy_o = torch.func.jvp(ours, (x,), (t,))
    torch.testing.assert_close(y_o, y_t)
    torch.testing.assert_close(dy_o, dy_t)
    import torch.autograd.forward_ad as fwAD

    tracking = _torch_and_ours()[1]  # plain forward AD: running statistics update as usual
    with fwAD.dual_level():
        out = tracking(fwAD.make_dual(x, t))
        torch.testing.assert_close(fwAD.unpack_dual(out).tangent, dy_t)
    assert int(tracking.num_batches_tracked) == 1
    # and against a numerical directional derivative of the float64 reference
    from bnlab import reference as ref

    g, b = ours.weight.detach().numpy(), ours.bias.detach().numpy()
    h = 1e-6
    plus = ref.forward((x + h * t).numpy(), g, b, axes=(0, 2, 3))[0]
    minus = ref.forward((x - h * t).numpy(), g, b, axes=(0, 2, 3))[0]
    torch.testing.assert_close(dy_o, torch.from_numpy((plus - minus) / (2 * h)), atol=1e-6, rtol=1e-6)


def test_func_grad_with_functional_call():
    theirs, ours = _torch_and_ours(track_running_stats=False)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)

    def loss(module):
        def f(params, x):
            return (torch.func.functional_call(module, params, (x,)) ** 3).sum()

        return f

    params_t = {k: v.detach() for k, v in theirs.named_parameters()}
    params_o = {k: v.detach() for k, v in ours.named_parameters()}
    g_t = torch.func.grad(loss(theirs), argnums=(0, 1))(params_t, x)
    g_o = torch.func.grad(loss(ours), argnums=(0, 1))(params_o, x)
    torch.testing.assert_close(g_o, g_t)


def test_vmap_over_inputs_and_over_models():
    theirs, ours = _torch_and_ours(track_running_stats=False)
    xs = torch.randn(4, 5, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(torch.vmap(ours)(xs), torch.stack([ours(x) for x in xs]))
    torch.testing.assert_close(torch.vmap(ours)(xs), torch.vmap(theirs)(xs))
    # an ensemble: per-model weights, the same input, gradients per model
    weights = torch.rand(4, 3, dtype=torch.float64) + 0.5
    biases = torch.randn(4, 3, dtype=torch.float64)
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)

    def run(module):
        def f(w, b):
            return (torch.func.functional_call(module, {"weight": w, "bias": b}, (x,)) ** 3).sum()

        return torch.vmap(torch.func.grad(f, argnums=(0, 1)))(weights, biases)

    torch.testing.assert_close(run(ours), run(theirs))


# -- fx, export, compile ---------------------------------------------------------------------------------


def _net(bn_cls, **kw):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), bn_cls(4, **kw), nn.ReLU(), nn.Conv2d(4, 2, 1), bn_cls(2, **kw))


def test_fx_symbolic_trace_and_fold():
    model = _net(bnlab.nn.BatchNorm2d)
    x = torch.randn(6, 3, 7, 7)
    for training in (True, False):
        model.train(training)
        ref_model = copy.deepcopy(model)
        gm = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(gm(x), ref_model(x))
        for name, buf in ref_model.named_buffers():  # the traced graph updates the same buffers
            torch.testing.assert_close(dict(model.named_buffers())[name], buf)
    model.eval()
    folded = bnlab.fold(copy.deepcopy(model))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_torch_export(training):
    model = _net(bnlab.nn.BatchNorm2d).train(training)
    x = torch.randn(6, 3, 7, 7)
    eager = copy.deepcopy(model)
    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    # training: one bnlab op per layer; eval: Alg. 2's affine map in stock ops, readable by any exporter
    assert ("bnlab.batch_norm_train.default" in targets) == training, targets
    exported = ep.module()
    torch.testing.assert_close(exported(x), eager(x))
    if training:
        buffers = dict(exported.named_buffers())
        for name, buf in eager.named_buffers():
            torch.testing.assert_close(buffers[name], buf)


def test_torch_onnx_export_of_an_eval_model_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _net(bnlab.nn.BatchNorm2d)
    model(torch.randn(6, 3, 7, 7) * 2 + 1)
    model.eval()
    x = torch.randn(6, 3, 7, 7)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = _net(bnlab.nn.BatchNorm2d, momentum=None).double()  # float64: differences are bugs, not rounding
        eager = copy.deepcopy(model)
        compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break would raise
        for _ in range(2):
            x = torch.randn(6, 3, 7, 7, dtype=torch.float64).to(memory_format=fmt).requires_grad_()
            xe = x.detach().clone().requires_grad_()
            y, ye = compiled(x), eager(xe)
            torch.testing.assert_close(y, ye, atol=1e-10, rtol=1e-10)
            y.square().sum().backward()
            ye.square().sum().backward()
            torch.testing.assert_close(x.grad, xe.grad, atol=1e-10, rtol=1e-10)
        for (n, a), (_, b) in zip(model.named_buffers(), eager.named_buffers(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=n)
        for (n, a), (_, b) in zip(model.named_parameters(), eager.named_parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10, msg=n)
        model.eval(), eager.eval()
        x = torch.randn(6, 3, 7, 7, dtype=torch.float64).to(memory_format=fmt)
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-10, rtol=1e-10)


# -- the ecosystem's ways of finding BN layers -----------------------------------------------------------


def test_isinstance_and_weight_decay_filters():
    model = _net(bnlab.nn.BatchNorm2d)
    bn = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bn) == 2 and all(isinstance(m, nn.BatchNorm2d) for m in bn)
    no_decay = {id(p) for m in bn for p in m.parameters()}
    assert len(no_decay) == 4


def test_torch_convert_sync_batchnorm_keeps_our_state():
    """torch's converter turns our per-channel layers into torch.nn.SyncBatchNorm holding the same tensors
    (torch's SyncBatchNorm then needs a GPU process group to synchronize; bnlab.convert_sync gives ours)."""
    model = _net(bnlab.nn.BatchNorm2d)
    x = torch.randn(6, 3, 7, 7)
    model(x)
    model.eval()
    expected = model(x)
    weights = [m.weight for m in model.modules() if isinstance(m, bnlab.nn.BatchNorm2d)]
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    layers = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(layers) == 2 and [m.weight for m in layers] == weights
    torch.testing.assert_close(synced(x), expected)


def test_per_activation_layer_refused_by_torch_sync_converter():
    model = nn.Sequential(bnlab.nn.BatchNorm2d(3, per="activation", spatial_size=(4, 4)))
    # torch's layer knows one statistic per channel only: refused at conversion
    # (tests/nn/test_torch_tools.py has the rest)
    with pytest.raises(RuntimeError, match="per-activation statistics.*bnlab.convert_sync"):
        nn.SyncBatchNorm.convert_sync_batchnorm(model)


# -- dtypes ----------------------------------------------------------------------------------------------


def test_mixed_dtypes_as_torch_on_cpu():
    ours, theirs = bnlab.nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    x64 = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="mixed dtype"):
        theirs(x64)
    with pytest.raises(TypeError, match="mixed dtype"):
        ours(x64)
    for low in (torch.float16, torch.bfloat16):  # low-precision input, float32 layer: allowed by both
        x = torch.randn(4, 3, 2, 2).to(low)
        assert ours(x).dtype == theirs(x).dtype == low


def test_vmap_in_eval_mode():
    theirs, ours = _torch_and_ours()
    with torch.no_grad():
        theirs.running_mean.uniform_(-1, 1), theirs.running_var.uniform_(0.5, 2)
    ours.load_state_dict(theirs.state_dict())
    theirs.eval(), ours.eval()
    xs = torch.randn(4, 5, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(torch.vmap(ours)(xs), torch.vmap(theirs)(xs))
