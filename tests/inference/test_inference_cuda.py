"""The inference tools on a CUDA device (skipped without one): same results as on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bnlab.inference import convert, fold, freeze, load_checkpoint, recalibrate, save_checkpoint, unfreeze
from test_inference import KINDS, ResNetish, SmallCNN, bn_modules, max_err, randomize

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def no_tf32():
    """TF32 convolutions/matmuls round to ~1e-3: compare in true float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("kind", KINDS)
def test_recalibrate_on_cuda_matches_cpu(kind):
    torch.manual_seed(0)
    cpu = randomize(SmallCNN(kind, dropout=0.2))
    gpu = copy.deepcopy(cpu).cuda()
    batches = [torch.randn(n, 3, 8, 8) for n in (8, 5, 16)]  # on the CPU: moved to the model's device
    recalibrate(cpu, batches, progress=False)
    recalibrate(gpu, batches, progress=False)
    for a, b in zip(bn_modules(cpu), bn_modules(gpu), strict=True):
        assert b.running_mean.is_cuda
        torch.testing.assert_close(b.running_mean.cpu(), a.running_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.running_var.cpu(), a.running_var, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_fold_on_cuda(kind):
    torch.manual_seed(0)
    model = ResNetish(kind).cuda()
    model(torch.randn(8, 3, 16, 16, device="cuda"))
    randomize(model)
    x = torch.randn(4, 3, 16, 16, device="cuda")
    folded = fold(model)
    assert next(folded.parameters()).is_cuda and not bn_modules(folded)
    with torch.no_grad():
        err = max_err(folded(x), copy.deepcopy(model).eval()(x))
    print(f"[{kind}] cuda fold max abs error {err:.2e}")
    assert err <= 1e-5
    half = copy.deepcopy(model).half()
    with torch.no_grad():
        err16 = max_err(fold(half)(x.half()), half.eval()(x.half()))
    print(f"[{kind}] cuda float16 fold max abs error {err16:.2e}")
    assert err16 <= 5e-2


@pytest.mark.parametrize("kind", KINDS)
def test_freeze_and_convert_on_cuda(kind):
    torch.manual_seed(0)
    model = randomize(SmallCNN(kind)).cuda()
    x = torch.randn(8, 3, 8, 8, device="cuda")
    expected = copy.deepcopy(model).eval()(x)
    freeze(model).train()
    assert max_err(model(x), expected) <= 1e-5
    convert(model, to="torch" if kind == "bnlab" else "bnlab")
    assert all(t.is_cuda for t in model.state_dict().values())
    assert max_err(model(x), expected) <= 1e-5  # still frozen after the swap
    unfreeze(model)
    assert max_err(model(x), expected) > 1e-3


def test_export_onnx_from_a_cuda_model(tmp_path):
    pytest.importorskip("onnxruntime")
    from bnlab.inference import export_onnx

    torch.manual_seed(0)
    model = randomize(ResNetish("bnlab")).cuda()
    report = export_onnx(model, torch.randn(4, 3, 16, 16, device="cuda"), tmp_path / "net.onnx")
    print(f"cuda model → ONNX max abs error {report.max_error:.2e}")
    assert report.max_error <= 1e-5


def test_checkpoint_of_cuda_tensors(tmp_path):
    state = {"w": torch.randn(3, device="cuda"), "model": nn.Linear(2, 2).cuda().state_dict()}
    path = save_checkpoint(tmp_path / "c.pt", state)
    assert not load_checkpoint(path)["w"].is_cuda
    back = load_checkpoint(path, map_location="cuda")
    assert back["w"].is_cuda and torch.equal(back["w"], state["w"])
