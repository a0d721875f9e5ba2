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
