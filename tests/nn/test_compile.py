"""torch.compile and torch.export see bnlab's math (issue 15, items 3 and 4).

Under ``torch.compile`` a training call takes the ``compiled`` door (``bnlab.nn._dispatch``): the
statistics and the shifted normalize as ordinary ops and the closed-form backward, which AOTAutograd
traces and Inductor fuses. These tests hold that door to the eager one (float32: 1e-6 relative, float64:
1e-10), check the graphs Inductor receives, dynamic shapes and the number of graphs compiled, and the
training-mode export round trip. Most run Dynamo + AOTAutograd with the ``aot_eager`` backend (the same
graphs Inductor would get, without code generation); the Inductor runs are marked slow.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.testing import CompileCounter
from torch._functorch.aot_autograd import make_boxed_func
from torch._functorch.partitioners import min_cut_rematerialization_partition

import bnlab.nn
from bnlab.nn import functional as F

torch.set_num_threads(1)  # the machine is shared; single-thread runs are also the most reproducible


def _net(norm, c=4, **kw) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), norm(c, **kw), nn.ReLU(), nn.Conv2d(c, c, 1), norm(c, **kw))


class _Recorder:
    """An aot_autograd backend that keeps the forward and backward graphs (ATen ops) it is given;
    ``like_inductor``: split them with Inductor's partitioner (which recomputes cheap ops in the backward
    instead of saving them) rather than aot_autograd's default."""

    def __init__(self, like_inductor: bool = False):
        self.graphs = []

        def keep(gm, _inputs):
            self.graphs.append(gm)
            return make_boxed_func(gm.forward)

        kw = {"partition_fn": min_cut_rematerialization_partition} if like_inductor else {}
        self.backend = aot_autograd(fw_compiler=keep, bw_compiler=keep, **kw)

    def targets(self) -> set[str]:
        return {str(n.target) for g in self.graphs for n in g.graph.nodes if n.op == "call_function"}


# -- compiled equals eager -----------------------------------------------------------------------------------

VARIANTS = {
    "per_channel": dict(),
    "per_activation": dict(per="activation", spatial_size=(5, 5)),
    "fused_relu": dict(activation="relu"),
    "ghost": dict(virtual_batch=2),
}
TOL = {torch.float32: 1e-6, torch.float64: 1e-10}


def _compare(variant, dtype, backend, fmt=torch.contiguous_format, momentum=0.1):
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = bnlab.nn.BatchNorm2d(3, momentum=momentum, dtype=dtype, **VARIANTS[variant])
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5), layer.bias.uniform_(-0.5, 0.5)
    eager = copy.deepcopy(layer)
    exact = copy.deepcopy(layer).double()  # the float64 oracle of the parameters' gradients
    compiled = torch.compile(layer, backend=backend, fullgraph=True)  # fullgraph: a graph break raises
    tol = dict(rtol=TOL[dtype], atol=TOL[dtype])
    terms = {"weight": 0.0, "bias": 0.0}  # bounds of Σ|dy·x̂| and Σ|dy| per feature: what a sum's rounding scales with
    for step in range(3):
        x = (torch.randn(8, 3, 5, 5, dtype=dtype) * 2 + 3).to(memory_format=fmt).requires_grad_()
        xe = x.detach().clone().requires_grad_()
        x64 = x.detach().double().requires_grad_()
        y, ye, y64 = compiled(x), eager(xe), exact(x64)
        torch.testing.assert_close(y, ye, **tol, msg=f"output, step {step}")
        dy = torch.randn_like(y)
        y.backward(dy)
        ye.backward(dy)
        y64.backward(dy.double())
        torch.testing.assert_close(x.grad, xe.grad, **tol, msg=f"dx, step {step}")
        live = (dy.double() * (y64 > 0) if VARIANTS[variant].get("activation") == "relu" else dy.double()).abs()
        dims = (0,) if layer.weight.dim() > 1 else (0, 2, 3)  # the axes each γ/β gradient sums over
        m = x.numel() // layer.weight.numel()  # |x̂| ≤ √m' in any set of m' values
        terms["weight"] = terms["weight"] + live.sum(dims) * m**0.5
        terms["bias"] = terms["bias"] + live.sum(dims)
    for (name, a), (_, b), (_, e) in zip(layer.named_parameters(), eager.named_parameters(), exact.named_parameters(),
                                         strict=True):  # fmt: skip
        if dtype == torch.float64:
            torch.testing.assert_close(a.grad, b.grad, **tol, msg=name)
        else:  # float32 sums of 600 terms in two summation orders (Inductor's, the kernel family's): each within
            # 2^-20 of the sum of |terms| of the float64 gradient (a blocked float32 sum's bound, with room)
            bound = terms[name] * 2.0**-20
            for got in (a.grad, b.grad):
                assert ((got.double() - e.grad).abs() <= bound).all(), (name, got, e.grad, bound)
    for (name, a), (_, b) in zip(layer.named_buffers(), eager.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, **tol, msg=name)
    assert int(layer.num_batches_tracked) == 3
    layer.eval(), eager.eval()
    x = torch.randn(8, 3, 5, 5, dtype=dtype).to(memory_format=fmt)
    torch.testing.assert_close(compiled(x), eager(x), **tol, msg="eval")


@pytest.mark.slow  # Dynamo + AOTAutograd tracing: seconds on the shared machine
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compiled_equals_eager(variant, dtype):
    _compare(variant, dtype, "aot_eager")


@pytest.mark.slow  # Dynamo + AOTAutograd tracing: seconds on the shared machine
def test_compiled_cumulative_average_momentum_none_fullgraph():
    _compare("per_channel", torch.float64, "aot_eager", momentum=None)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("variant", ["per_channel", "fused_relu"])
def test_inductor_equals_eager(variant, fmt):
    _compare(variant, torch.float32, "inductor", fmt)


@pytest.mark.slow  # Dynamo + AOTAutograd tracing: seconds on the shared machine
def test_compiled_door_is_shifted_for_channels_far_from_zero():
    # channels at 1e6: ±0.5 around it (σ = 0.5, γ = 1.1: a·x + b rounds a·x ≈ 2.2e6 to 0.25, an error of ~0.1
    # in y) and constant (σ² = 0, a = γ/√ε: a·x + b rounds 3.5e8 to 32); (x − μ)·a + β is exact for both
    torch._dynamo.reset()
    x = torch.randn(8, 3, 5, 5)
    x[:, 0] = 1e6 + 0.5 * torch.tensor([1.0, -1.0]).repeat(100).reshape(8, 5, 5)
    x[:, 1] = 1e6
    layer = bnlab.nn.BatchNorm2d(3)
    with torch.no_grad():
        layer.weight.fill_(1.1), layer.bias.fill_(0.25)
    eager = copy.deepcopy(layer)
    y = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    xd = x.double()
    mean, var = xd.mean((0, 2, 3), keepdim=True), xd.var((0, 2, 3), keepdim=True, correction=0)
    want = ((xd - mean) / torch.sqrt(var + 1e-5) * 1.1 + 0.25).float()
    torch.testing.assert_close(y, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(y, eager(x), rtol=1e-6, atol=1e-6)


# -- what Inductor receives ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [None, "relu"])
def test_compile_hands_over_ordinary_ops_not_the_opaque_operator(activation):
    torch._dynamo.reset()
    rec = _Recorder()
    model = _net(bnlab.nn.BatchNorm2d, activation=activation)
    out = torch.compile(model, backend=rec.backend, fullgraph=True)(torch.randn(6, 3, 7, 7))
    out.sum().backward()
    targets = rec.targets()
    assert len(rec.graphs) == 2, "one forward and one backward graph"
    assert "aten.sum.dim_IntList" in targets, targets  # the statistics (shifted sums), visible to the compiler
    assert not any(t.startswith("bnlab.batch_norm") for t in targets), targets  # no opaque BN op either way
    # the running statistics' update is in the same graph (functionalized), not left to a graph break
    assert "aten.lerp.Tensor" in targets or "aten.lerp.Scalar" in targets, targets


def _depends_on(node, target: str) -> bool:
    """Whether ``node`` (an FX node) is computed from a call of ``target``."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_function" and str(n.target).startswith(target):
            return True
        todo.extend(n.all_input_nodes)
    return False


@pytest.mark.parametrize("track", [True, False], ids=["running_stats", "no_running_stats"])
def test_checked_invstd_comes_before_every_use_and_is_saved_for_the_backward(track):
    """On the CPU the opaque check of σ²_B (bnlab::checked_invstd) sits between the statistics and everything
    that uses them, so the compiled graph raises before the output or any state is made. Its second output,
    1/√(σ²_B + ε), is what the normalize reads and what the backward gets saved: neither graph computes a
    reciprocal square root of its own (in the graph, Inductor inlined it into the elementwise passes and
    evaluated it at every value, and Inductor's partitioner recomputed it in the backward from σ²_B). The
    statistics are the shifted float64 sums, not var_mean's Welford update."""
    torch._dynamo.reset()
    rec = _Recorder(like_inductor=True)
    layer = bnlab.nn.BatchNorm2d(3, track_running_stats=track, activation="relu")
    torch.compile(layer, backend=rec.backend, fullgraph=True)(
        torch.randn(6, 3, 7, 7, requires_grad=True)
    ).sum().backward()
    forward, backward = (g.graph for g in rec.graphs)
    out = next(n for n in forward.nodes if n.op == "output").args[0]
    outputs = [o for o in out if isinstance(o, torch.fx.Node)]
    mutated = [o for o in outputs if _depends_on(o, "aten.lerp")]  # the new running statistics
    computed = [o for o in outputs if o.op != "placeholder"]  # (x itself may be saved for the backward)
    normalized = [o for o in computed if o.meta.get("val") is not None and tuple(o.meta["val"].shape) == (6, 3, 7, 7)]
    assert normalized and (mutated or not track), outputs
    assert all(_depends_on(o, "bnlab.checked_invstd") for o in mutated + normalized)
    targets = [{str(n.target) for n in g.nodes if n.op == "call_function"} for g in (forward, backward)]
    assert not any("rsqrt" in t for t in targets[0] | targets[1]), targets
    assert "aten.var_mean.correction" not in targets[0] and "aten.sum.dim_IntList" in targets[0], targets[0]


def test_export_still_records_the_operator():
    # torch.export keeps its one op per layer (exporters and the fx tools look for it)
    ep = torch.export.export(_net(bnlab.nn.BatchNorm2d).train(), (torch.randn(6, 3, 7, 7),))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "bnlab.batch_norm_train.default" in targets, targets


@pytest.mark.slow  # Dynamo + AOTAutograd tracing: seconds on the shared machine
def test_compiled_refuses_a_variance_beyond_float32_and_changes_nothing():
    torch._dynamo.reset()
    layer = bnlab.nn.BatchNorm2d(3)
    before = copy.deepcopy(layer.state_dict())
    x = torch.randn(8, 3, 6, 6) * 1e20
    with pytest.raises(ValueError, match="variance overflows torch.float32"):
        torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k]), k


# -- dynamic shapes and the number of graphs -----------------------------------------------------------------

SIZES = (2, 3, 4, 5, 6, 8)


@pytest.mark.slow  # Dynamo + AOTAutograd tracing: seconds on the shared machine
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_dynamic_true_fullgraph_matches_eager_for_every_batch_size(training):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _net(bnlab.nn.BatchNorm2d, activation="relu").double().train(training)
    eager = copy.deepcopy(model)
    cnt = CompileCounter()
    compiled = torch.compile(model, backend=cnt, dynamic=True, fullgraph=True)
    for n in SIZES:
        x = torch.randn(n, 3, 5, 5, dtype=torch.float64)
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-10, atol=1e-10)
    for (name, a), (_, b) in zip(model.named_buffers(), eager.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    assert cnt.frame_count == 1, f"{cnt.frame_count} graphs for {len(SIZES)} batch sizes with dynamic=True"


def _graphs(norm, dynamic, training, sizes=SIZES, **kw) -> int:
    torch._dynamo.reset()
    cnt = CompileCounter()
    model = _net(norm, **kw).train(training)
    compiled = torch.compile(model, backend=cnt, dynamic=dynamic)
    for n in sizes:
        compiled(torch.randn(n, 3, 5, 5))
    return cnt.frame_count


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [None, True], ids=["automatic", "dynamic"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_six_batch_sizes_compile_no_more_graphs_than_torch_bn(training, dynamic):
    ours = _graphs(bnlab.nn.BatchNorm2d, dynamic, training)
    theirs = _graphs(nn.BatchNorm2d, dynamic, training)
    assert ours <= theirs, f"bnlab: {ours} graphs, torch: {theirs}, for batch sizes {SIZES}"


# -- torch.export ------------------------------------------------------------------------------------------


def test_training_export_saves_and_loads_back():
    model = _net(bnlab.nn.BatchNorm2d).train()
    x = torch.randn(6, 3, 7, 7)
    eager = copy.deepcopy(model)
    ep = torch.export.export(model, (x,))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf).module()
    torch.testing.assert_close(loaded(x), eager(x))
    buffers = dict(loaded.named_buffers())
    for name, b in eager.named_buffers():
        torch.testing.assert_close(buffers[name], b, msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_export_with_a_dynamic_batch_size_non_strict(training):
    model = _net(bnlab.nn.BatchNorm2d, activation="relu").train(training)
    eager = copy.deepcopy(model)
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = torch.export.export(model, (torch.randn(6, 3, 7, 7),), dynamic_shapes=({0: batch},))  # strict=False
    exported = ep.module()
    for n in (2, 9, 33):
        x = torch.randn(n, 3, 7, 7)
        torch.testing.assert_close(exported(x), eager(x))
    if training:
        buffers = dict(exported.named_buffers())
        for name, b in eager.named_buffers():
            torch.testing.assert_close(buffers[name], b, msg=name)


def test_functional_reexports_without_import_cycle():
    # functional is the lower layer: it must not import family or renorm (they import it); bnlab.nn
    # re-exports their functions there
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(F))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"family", "renorm", "modules"}, imported
    from bnlab.nn import family, renorm

    assert F.group_norm is family.group_norm and F.batch_renorm is renorm.batch_renorm
    assert {"group_norm", "layer_norm", "instance_norm", "batch_renorm"} <= set(F.__all__)
