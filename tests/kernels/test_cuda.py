"""The same checks on a CUDA device (run when one is present; this project's CI machine has none)."""

import copy

import pytest
import torch

import bnlab.nn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_torch(memory_format, dtype):
    torch.manual_seed(0)
    theirs = torch.nn.BatchNorm2d(16).cuda()
    ours = bnlab.nn.BatchNorm2d(16).cuda()
    ours.load_state_dict(theirs.state_dict())
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    for _ in range(3):
        x = (torch.randn(8, 16, 12, 12, device="cuda") * 2 + 1).to(dtype).to(memory_format=memory_format)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = theirs(xa), ours(xb)
        assert yb.dtype == dtype and yb.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(yb.float(), ya.float(), atol=tol, rtol=tol)
        dy = torch.randn_like(ya)
        ya.backward(dy)
        yb.backward(dy)
        torch.testing.assert_close(xb.grad.float(), xa.grad.float(), atol=tol, rtol=tol)
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, atol=tol * 10, rtol=tol)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.running_var, theirs.running_var, atol=1e-3, rtol=1e-3)


def test_cuda_per_activation_and_gradgradcheck():
    x = torch.randn(4, 3, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, device="cuda", requires_grad=True)

    def fn(x, w):
        return bnlab.nn.functional.batch_norm(x, None, None, w, None, training=True)

    assert torch.autograd.gradgradcheck(fn, (x, w))
    bn = bnlab.nn.BatchNorm2d(3, per="activation").cuda()
    y = bn(torch.randn(8, 3, 5, 5, device="cuda"))
    assert y.is_cuda and bn.weight.shape == (3, 5, 5) and bn.weight.is_cuda


def test_cuda_nan_guard_without_host_sync():
    bn = bnlab.nn.BatchNorm2d(3).cuda()
    bn(torch.randn(4, 3, 2, 2, device="cuda"))
    before = copy.deepcopy(bn.state_dict())
    x = torch.randn(4, 3, 2, 2, device="cuda")
    x[0, 1] = float("nan")
    torch.cuda.set_sync_debug_mode("error")  # any host synchronization in the forward raises
    try:
        bn(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(bn.running_mean[1], before["running_mean"][1])
    assert torch.isfinite(bn.running_var).all()


def test_cuda_parameters_on_other_device_are_rejected():
    bn = bnlab.nn.BatchNorm2d(3)  # on the CPU
    with pytest.raises(ValueError, match="is on cpu but the input is on cuda"):
        bn(torch.randn(4, 3, 2, 2, device="cuda"))


# ---- the CUDA kernel families (issue 9): torch's fused kernels (cuda) and bnlab's Triton kernels ---------

from bnlab import kernels  # noqa: E402
from bnlab.kernels import composed  # noqa: E402

_FAMILIES = ["cuda", "triton"]


def _family(name):
    if name == "triton":
        module = kernels.triton_family()
        if module is None:
            pytest.skip("triton is not importable")
        return module
    return kernels.cuda


def _bn64(x, w, b, axes, eps=1e-5):
    x = x.double()
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    shape = [1 if i in axes else s for i, s in enumerate(x.shape)]
    if w is not None:
        y = y * w.double().reshape(shape)
    if b is not None:
        y = y + b.double().reshape(shape)
    return y, mean.squeeze(), var.squeeze()


@pytest.mark.parametrize("family", _FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "shape, axes, fmt",
    [
        ((8, 16, 12, 12), (0, 2, 3), torch.contiguous_format),
        ((8, 16, 12, 12), (0, 2, 3), torch.channels_last),
        ((6, 5, 7, 9), (0,), torch.contiguous_format),
        ((64, 33), (0,), torch.contiguous_format),
    ],
    ids=["nchw", "nhwc", "per_activation", "nc"],
)
def test_cuda_families_vs_float64(family, dtype, shape, axes, fmt):
    """Forward, eval and backward (with and without the fused ReLU) of each CUDA family against float64."""
    k = _family(family)
    torch.manual_seed(1)
    x = (torch.randn(shape, device="cuda") * 2 + 1).to(dtype)
    if x.dim() == 4:
        x = x.contiguous(memory_format=fmt)
    fshape = tuple(s for i, s in enumerate(shape) if i not in axes)
    w, b = torch.rand(fshape, device="cuda") + 0.5, torch.randn(fshape, device="cuda")
    tol = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 2e-2}[dtype]
    x64 = x.double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y64, mean64, var64 = _bn64(x64, w64, b64, axes)
    for relu in (False, True):
        y, mean, var = k.forward(x, w, b, 1e-5, axes, relu=relu)
        want = torch.relu(y64) if relu else y64
        assert y.dtype == dtype and y.stride() == x.stride()
        torch.testing.assert_close(mean.double(), mean64.detach().reshape(fshape), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(var.double(), var64.detach().reshape(fshape), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y.double(), want.detach(), rtol=tol, atol=tol)
        dy = torch.randn(shape, device="cuda").to(dtype)
        grads = torch.autograd.grad(want, (x64, w64, b64), dy.double(), retain_graph=True)
        got = k.backward(dy, x, mean, var, w, 1e-5, axes, (True, True, True), y=y if relu else None)
        gtol = 10 * tol
        for g, e in zip(got, grads, strict=True):
            torch.testing.assert_close(g.double(), e, rtol=gtol, atol=gtol * e.abs().max().item())
    y_eval = k.normalize(
        x, mean64.detach().float().reshape(fshape), var64.detach().float().reshape(fshape), w, b, 1e-5, axes
    )
    torch.testing.assert_close(y_eval.double(), y64.detach(), rtol=tol, atol=tol)


@pytest.mark.parametrize("family", _FAMILIES)
def test_cuda_families_large_offset_and_constant(family):
    k = _family(family)
    x = torch.full((8, 3, 6, 6), 1e6, device="cuda")
    y, mean, var = k.forward(x, None, None, 1e-5, (0, 2, 3))
    assert torch.equal(y, torch.zeros_like(y)) and (var.abs() <= 1e-10).all()  # cuda: σ² from invstd
    x = 1e6 + torch.randn(16, 4, 9, 9, device="cuda", dtype=torch.float64)
    y, mean, var = k.forward(x.float(), None, None, 1e-5, (0, 2, 3))
    y64, mean64, var64 = _bn64(x.float(), None, None, (0, 2, 3))
    torch.testing.assert_close(var.double(), var64, rtol=1e-4, atol=0)
    moved = ((mean.double() - mean64).abs() * torch.rsqrt(var64 + 1e-5)).max().item()
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=moved + 1e-4)


@pytest.mark.parametrize("family", _FAMILIES)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_cuda_families_capture_in_a_cuda_graph(family, fmt):
    """No host synchronization: forward + backward are captured in a CUDA graph and replay correctly."""
    k = _family(family)
    x = torch.randn(32, 64, 14, 14, device="cuda").contiguous(memory_format=fmt)
    w, b = torch.rand(64, device="cuda") + 0.5, torch.randn(64, device="cuda")
    dy = torch.randn_like(x)
    axes = (0, 2, 3)
    want = k.forward(x, w, b, 1e-5, axes)
    want_g = k.backward(dy, x, want[1], want[2], w, 1e-5, axes)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up (compilation) outside the capture
            y, mean, var = k.forward(x, w, b, 1e-5, axes)
            k.backward(dy, x, mean, var, w, 1e-5, axes)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(graph):
            y, mean, var = k.forward(x, w, b, 1e-5, axes)
            grads = k.backward(dy, x, mean, var, w, 1e-5, axes)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    x.copy_(x * 2 + 3)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y, want[0], rtol=1e-4, atol=1e-4)  # BN is invariant to x -> 2x + 3
    torch.testing.assert_close(mean, want[1] * 2 + 3, rtol=1e-5, atol=1e-5)
    # x̂ is unchanged, so dγ and dβ are too, and dx = γ·invstd·(...) halves
    torch.testing.assert_close(grads[0], want_g[0] / 2, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(grads[1], want_g[1], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(grads[2], want_g[2], rtol=1e-4, atol=1e-4)


def test_cuda_select_and_fallbacks():
    x = torch.randn(4, 3, 5, 5, device="cuda")
    assert kernels.select(x) in (kernels.triton_family() or kernels.cuda, kernels.cuda)
    assert kernels.cuda.covered(x, (0, 2, 3)) and not kernels.cuda.covered(x, (0,))
    xd = x.double()
    got, want = kernels.cuda.forward(xd, None, None, 1e-5, (0, 2, 3)), composed.forward(xd, None, None, 1e-5, (0, 2, 3))
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e)


def test_cuda_triton_matches_cuda_family_through_the_layer():
    """bnlab.nn.BatchNorm2d with each CUDA family: same outputs, gradients and running statistics."""
    if kernels.triton_family() is None:
        pytest.skip("triton is not importable")
    results = []
    for name in ("cuda", "triton"):
        kernels.use_cuda_family(name)
        try:
            torch.manual_seed(0)
            bn = bnlab.nn.BatchNorm2d(16).cuda()
            x = (torch.randn(8, 16, 10, 10, device="cuda") * 3 + 2).requires_grad_()
            y = bn(x)
            y.backward(torch.ones_like(y) * torch.arange(10, device="cuda"))
            results.append((y.detach(), x.grad, bn.weight.grad, bn.running_mean.clone(), bn.running_var.clone()))
        finally:
            kernels.use_cuda_family("triton")
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
