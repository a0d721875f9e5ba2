"""export_onnx: the folded network in a real onnxruntime session, compared with model.eval()."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402
import onnxruntime  # noqa: E402

from bnlab.inference import export_onnx  # noqa: E402
from test_inference import ResNetish, randomize  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _model(kind="torch"):
    torch.manual_seed(0)
    model = ResNetish(kind, per_activation=True)
    model(torch.randn(8, 3, 16, 16))  # train-mode pass: moves the running statistics
    return randomize(model).train()


def test_export_matches_eval_outputs_with_any_batch_size(tmp_path):
    model = _model("bnlab")
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(4, 3, 16, 16)
    report = export_onnx(model, x, tmp_path / "net.onnx")
    print(f"ONNX max abs error {report.max_error:.2e} (fold alone {report.fold_error:.2e})")
    assert report.path == tmp_path / "net.onnx" and report.path.exists()
    assert report.max_error <= 1e-5 and report.fold_error <= 1e-5
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # no BN op in the file: it was folded away
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    # the batch axis is dynamic
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x7 = torch.randn(7, 3, 16, 16)
    got = session.run(None, {session.get_inputs()[0].name: x7.numpy()})[0]
    with torch.no_grad():
        expected = copy.deepcopy(model).eval()(x7).numpy()
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.slow
def test_export_with_the_torchscript_exporter(tmp_path):
    model = _model("torch")
    report = export_onnx(model, torch.randn(2, 3, 16, 16), tmp_path / "net.onnx", dynamo=False)
    print(f"ONNX (TorchScript exporter) max abs error {report.max_error:.2e}")
    assert report.max_error <= 1e-5


def test_export_raises_with_the_max_error(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    randomize(model)
    with pytest.raises(RuntimeError, match=r"differs from model.eval\(\) by up to [0-9.e-]+ \(atol=1e-30"):
        export_onnx(model, torch.randn(2, 3, 6, 6) * 100, tmp_path / "net.onnx", atol=1e-30)


def test_export_of_an_unfoldable_model_names_the_layer(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match=r"cannot fold: layer '1' \(BatchNorm1d\) has no running statistics"):
        export_onnx(model, torch.randn(2, 3), tmp_path / "net.onnx")
    assert not (tmp_path / "net.onnx").exists()
    with pytest.raises(TypeError, match="example_input"):
        export_onnx(nn.Linear(3, 4), [torch.randn(2, 3)], tmp_path / "net.onnx")
