"""``export_onnx``: the folded inference network as an ONNX file, checked end to end.

Steps: :func:`bnlab.fold`; ``torch.onnx.export`` (the torch.export-based exporter, which needs
``onnxscript``; with ``dynamo=False``, or on torch < 2.5, the TorchScript-based one);
``onnx.checker.check_model``; run the file in onnxruntime on ``example_input`` and compare with the
*original* model's eval-mode output, so the error covers folding and export together. onnx, onnxscript
and onnxruntime are imported only here (``pip install bnlab[onnx]``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..io import atomic_path
from .fold import fold

__all__ = ["ExportReport", "export_onnx"]

# torch < 2.5 has only the TorchScript-based exporter (no ``dynamo`` argument)
_HAS_DYNAMO_KWARG = "dynamo" in inspect.signature(torch.onnx.export).parameters


class ExportReport(NamedTuple):
    path: Path  #: the ONNX file written
    max_error: float  #: max |onnxruntime − model.eval()| over all outputs, at example_input
    fold_error: float  #: max |fold(model) − model.eval()| in PyTorch, at example_input


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    raise TypeError(f"export_onnx: the model returned a {type(out).__name__}; expected tensors")


def _max_error(a: list[torch.Tensor], b: list, what: str) -> float:
    if len(a) != len(b):
        raise RuntimeError(f"export_onnx: {what} gave {len(b)} outputs, the model {len(a)}")
    err = 0.0
    for x, y in zip(a, b, strict=True):
        y = torch.as_tensor(y)
        if tuple(x.shape) != tuple(y.shape):
            raise RuntimeError(
                f"export_onnx: {what} gave an output of shape {tuple(y.shape)}, expected {tuple(x.shape)}"
            )
        if x.numel():
            err = max(err, float((x.detach().double().cpu() - y.double().cpu()).abs().max()))
    return err


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    *,
    atol: float = 1e-5,
    dynamic_batch: bool = True,
    dynamo: bool = True,
    opset_version: int | None = None,
) -> ExportReport:
    """Fold ``model``, export it to ``path``, check the file, and verify it in onnxruntime.

    ``example_input`` is one input batch (on the model's device). With ``dynamic_batch`` the file accepts
    any batch size (axis 0 of the input is symbolic). ``model`` itself is not changed.

    Raises RuntimeError with the max error when onnxruntime's outputs differ from ``model.eval()``'s by
    more than ``atol``; ValueError (from :func:`bnlab.fold`) when the model cannot be folded.

    >>> import os, tempfile, torch
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    >>> report = export_onnx(model, torch.randn(2, 3, 8, 8), os.path.join(tempfile.mkdtemp(), "m.onnx"))
    >>> report.max_error <= 1e-5
    True
    """
    import onnx
    import onnxruntime

    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor (one input batch), got {type(example_input).__name__}")
    path = Path(path)
    folded = fold(model)
    reference = copy.deepcopy(model).eval()  # eval output without touching the caller's model or its mode
    with torch.no_grad():
        expected = _tensors(reference(example_input))
        fold_error = _max_error(expected, _tensors(folded(example_input)), "fold(model)")

    kwargs = {} if opset_version is None else {"opset_version": opset_version}
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed" is irrelevant to a CNN without it
    try:
        # written to a temporary file beside ``path`` and renamed over it (bnlab.io): a link at ``path`` is
        # replaced, never written through, and a failed export leaves ``path`` as it was
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch's exporter
            if dynamo and _HAS_DYNAMO_KWARG:
                torch.onnx.export(
                    folded,
                    (example_input,),
                    str(tmp),
                    input_names=["input"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None,
                    dynamo=True,
                    verbose=False,
                    **kwargs,
                )
            else:
                torch.onnx.export(
                    folded,
                    (example_input,),
                    str(tmp),
                    input_names=["input"],
                    dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None,
                    **({"dynamo": False} if _HAS_DYNAMO_KWARG else {}),
                    **kwargs,
                )
    finally:
        registration.setLevel(level)

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example_input.detach().cpu().numpy()}
    got = session.run(None, feed)
    max_error = _max_error(expected, got, "onnxruntime")
    if not max_error <= atol:
        raise RuntimeError(
            f"export_onnx: the ONNX file {path} differs from model.eval() by up to {max_error:.3g} "
            f"(atol={atol:g}; folding alone accounts for {fold_error:.3g})"
        )
    return ExportReport(path, max_error, fold_error)
