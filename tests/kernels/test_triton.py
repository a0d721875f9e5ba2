"""bnlab's Triton kernels on CPU tensors under triton's interpreter, against float64 and ``composed``.

``TRITON_INTERPRET=1`` must be set before triton itself is imported (triton.language's own helpers are
decorated then) and it stays in effect for the whole process. So in an ordinary test run this file
runs itself in a subprocess with the variable set (``test_in_a_subprocess``; its other tests are
skipped here as done there), and the rest of the suite — torch.compile, and on a GPU machine the
compiled ``bnlab.kernels.triton`` — never sees interpreted triton. With ``TRITON_INTERPRET=1`` already
set and no GPU (the subprocess, or ``TRITON_INTERPRET=1 pytest tests/kernels/test_triton.py``) the tests run in
this process, on a private copy of ``bnlab/kernels/triton.py``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bnlab.kernels
from bnlab.kernels import composed

# the float64 Alg. 1 the kernels are checked against, one copy for both test files (tests/ is on sys.path)
from test_kernels import _view, bn64  # noqa: E402,F401

IN_PROCESS = os.environ.get("TRITON_INTERPRET") == "1" and not torch.cuda.is_available()
HAS_TRITON = importlib.util.find_spec("triton") is not None
_NO_TRITON = "triton is not installed, so no test of this file runs (pip install triton to run them)"


def _load_interpreted():
    path = Path(bnlab.kernels.__file__).with_name("triton.py")
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        pytest.importorskip("triton", reason=_NO_TRITON)
        spec = importlib.util.spec_from_file_location("bnlab.kernels._triton_interpreted", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    return module


tk = _load_interpreted() if IN_PROCESS else None


def test_in_a_subprocess():
    """Where this process cannot interpret (see the module docstring): the same file, in a fresh one."""
    if IN_PROCESS:
        pytest.skip("TRITON_INTERPRET=1 is set: the interpreter tests run in this process instead")
    if not HAS_TRITON:
        pytest.skip(_NO_TRITON)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    src = str(Path(bnlab.kernels.__file__).parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


# the reason says what really happens to the test: run in a fresh process, or not at all
needs_interpreter = pytest.mark.skipif(
    not IN_PROCESS,
    reason="run again by test_in_a_subprocess, in a process with TRITON_INTERPRET=1" if HAS_TRITON else _NO_TRITON,
)
EPS = 1e-5
CL, CL3 = torch.channels_last, torch.channels_last_3d


@pytest.fixture(autouse=True)
def _interpreting(monkeypatch):
    if IN_PROCESS:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


# (name, shape, axes, memory format): every layout the kernels cover, odd sizes
LAYOUTS = [
    ("nchw", (3, 5, 7, 9), (0, 2, 3), None),
    ("channels_last", (3, 5, 7, 9), (0, 2, 3), CL),
    ("ncdhw_cl3d", (3, 5, 2, 3, 5), (0, 2, 3, 4), CL3),
    ("ncl", (5, 3, 11), (0, 2), None),
    ("nc", (9, 5), (0,), None),
    ("per_activation", (6, 3, 4, 5), (0,), None),
    ("nhwc_axes", (3, 4, 5, 6), (0, 1, 2), None),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


def _fshape(shape, axes):
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def _input(shape, fmt, dtype, seed=0, offset=1.5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset).to(dtype)
    return x if fmt is None else x.contiguous(memory_format=fmt)


def _params(fshape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(fshape, generator=g) + 0.5, torch.randn(fshape, generator=g)


@needs_interpreter
def test_interpreted_copy_and_public_module_is_untouched():
    assert tk.INTERPRETED

    # on a CPU tensor the public family (compiled unless TRITON_INTERPRET was set) is only chosen for CUDA
    assert bnlab.kernels.select(torch.zeros(2, 3)) is bnlab.kernels.chain("cpu")[0]


@needs_interpreter
@pytest.mark.parametrize("name, shape, axes, fmt", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_layouts_are_covered_with_several_splits_and_tiles(name, shape, axes, fmt):
    x = _input(shape, fmt, torch.float32)
    assert tk.covered(x, axes)
    a, f, b, *_ = tk._plan(x, axes)
    assert a * b * f == x.numel() and f == int(torch.tensor(_fshape(shape, axes)).prod())
    block_r, _, _, splits, tiles, _, rows = tk._launch_shape(x, a, f, b)
    if a * b > 2 * block_r:
        assert splits >= 2 and splits * tiles * block_r >= a * b
    # both tilings are exercised: whole-row tiles (NCHW rows of 63 values) and numbered values
    assert rows == (name in ("nchw",))


@needs_interpreter
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, shape, axes, fmt", LAYOUTS, ids=[c[0] for c in LAYOUTS])
def test_forward_eval_backward_vs_float64_and_composed(name, shape, axes, fmt, dtype):
    x = _input(shape, fmt, dtype)
    w, b = _params(_fshape(shape, axes))
    tol = TOL[dtype]
    y, mean, var = tk.forward(x, w, b, EPS, axes)
    x64 = x.double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y64, mean64, var64 = bn64(x64, w64, b64, axes)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    assert mean.dtype == var.dtype == torch.float32 and mean.shape == w.shape
    torch.testing.assert_close(mean.double(), mean64.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var.double(), var64.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), y64.detach(), rtol=tol, atol=tol)
    # against composed: the same statistics to float32 rounding, outputs within one rounding of x's dtype
    yc, meanc, varc = composed.forward(x, w, b, EPS, axes)
    torch.testing.assert_close(mean, meanc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(var, varc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y.float(), yc.float(), rtol=tol, atol=tol)

    y_eval = tk.normalize(x, mean64.detach().float(), var64.detach().float(), w, b, EPS, axes)
    assert y_eval.dtype == dtype and y_eval.stride() == x.stride()
    torch.testing.assert_close(y_eval.double(), y64.detach(), rtol=tol, atol=tol)

    dy = _input(shape, fmt, dtype, seed=2, offset=0.0, scale=1.0)
    y64.backward(dy.double())
    dx, dw, db = tk.backward(dy, x, mean, var, w, EPS, axes, (True, True, True))
    assert dx.dtype == dtype and dx.stride() == x.stride() and dw.shape == w.shape
    gtol = 3 * tol if dtype == torch.float32 else 10 * tol
    for got, want in ((dx, x64.grad), (dw, w64.grad), (db, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=gtol, atol=gtol * want.abs().max().item())


@needs_interpreter
@pytest.mark.parametrize("name, shape, axes, fmt", LAYOUTS[:3] + LAYOUTS[5:6], ids=["nchw", "cl", "cl3d", "per_act"])
def test_fused_relu_forward_and_backward(name, shape, axes, fmt):
    """relu=True: y = max(BN(x), 0) in the same launch; backward(y=y) masks dy where y ≤ 0 (float64)."""
    x = _input(shape, fmt, torch.float32, seed=3)
    w, b = _params(_fshape(shape, axes), seed=4)
    y, mean, var = tk.forward(x, w, b, EPS, axes, relu=True)
    x64 = x.double().requires_grad_()
    w64, b64 = w.double().requires_grad_(), b.double().requires_grad_()
    y64 = torch.relu(bn64(x64, w64, b64, axes)[0])
    torch.testing.assert_close(y.double(), y64.detach(), rtol=2e-5, atol=2e-5)
    assert (y == 0).any() and (y > 0).any()
    dy = _input(shape, fmt, torch.float32, seed=5, offset=0.0, scale=1.0)
    y64.backward(dy.double())
    got = tk.backward(dy, x, mean, var, w, EPS, axes, (True, True, True), y=y)
    for g, want in zip(got, (x64.grad, w64.grad, b64.grad), strict=True):
        torch.testing.assert_close(g.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    # the same masks in composed (which masks dy first)
    want_c = composed.backward(dy, x, mean, var, w, EPS, axes, (True, True, True), y=y)
    for g, e in zip(got, want_c, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


@needs_interpreter
@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True), (True, True, True)])
def test_backward_needs_and_no_weight(needs):
    x = _input((4, 3, 5, 6), CL, torch.float32)
    w, _ = _params((3,))
    dy = _input((4, 3, 5, 6), None, torch.float32, seed=6, offset=0.0)  # another memory format than x
    mean, var = composed.batch_stats(x, (0, 2, 3))
    for weight in (w, None):
        got = tk.backward(dy, x, mean, var, weight, EPS, (0, 2, 3), needs)
        want = composed.backward(dy, x, mean, var, weight, EPS, (0, 2, 3), needs)
        for g, e in zip(got, want, strict=True):
            assert (g is None) == (e is None)
            if g is not None:
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


@needs_interpreter
def test_large_offset_and_constant_channel():
    """|μ| ≫ σ: statistics by Chan's merge of tile moments, output as accurate as the statistics; a
    constant 1e6 channel normalizes to exactly 0 (issue 7, item 3)."""
    x = torch.full((8, 3, 6, 6), 1e6)
    y, mean, var = tk.forward(x, None, None, EPS, (0, 2, 3))
    assert torch.equal(mean, torch.full((3,), 1e6)) and torch.equal(var, torch.zeros(3))
    assert torch.equal(y, torch.zeros_like(x))
    assert torch.equal(tk.normalize(x, mean, var, None, None, EPS, (0, 2, 3)), torch.zeros_like(x))
    g = torch.Generator().manual_seed(7)
    x = (1e6 + torch.randn(6, 3, 9, 11, generator=g, dtype=torch.float64)).float()
    y, mean, var = tk.forward(x, None, None, EPS, (0, 2, 3))
    y64, mean64, var64 = bn64(x, None, None, (0, 2, 3))
    torch.testing.assert_close(mean.double(), mean64, rtol=1e-7, atol=0)
    torch.testing.assert_close(var.double(), var64, rtol=1e-5, atol=0)
    # better than the float32 statistics: the output uses mean(x − K), not μ rounded to float32
    torch.testing.assert_close(y.double(), y64, rtol=0, atol=1e-5)


@needs_interpreter
def test_merge_over_many_partials(monkeypatch):
    """Many splits merged two at a time by the second kernel (BLOCK_P = 2), and batch_stats alone."""
    monkeypatch.setattr(tk, "_INTERPRETER_PROGRAMS", 16)
    monkeypatch.setattr(tk, "_INTERPRETER_BLOCK_R", 16)
    monkeypatch.setattr(tk, "_BLOCK_P", 2)
    x = _input((5, 2, 7, 9), None, torch.float32, seed=8, offset=-40.0)
    a, f, b, *_ = tk._plan(x, (0, 2, 3))
    assert tk._launch_shape(x, a, f, b)[3] >= 5
    _, mean64, var64 = bn64(x, None, None, (0, 2, 3))
    mean, var = tk.batch_stats(x, (0, 2, 3))
    torch.testing.assert_close(mean.double(), mean64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var.double(), var64, rtol=1e-5, atol=1e-6)


@needs_interpreter
def test_half_statistics_in_eval():
    """bf16 input with bf16 running statistics and parameters: coefficients in float32 (within bf16 rounding)."""
    g = torch.Generator().manual_seed(9)
    x = (50 + 2 * torch.randn(6, 4, 5, 7, generator=g)).bfloat16()
    mean, var = (50 + torch.randn(4, generator=g)).bfloat16(), (4 + torch.rand(4, generator=g)).bfloat16()
    w, b = (1 + torch.rand(4, generator=g)).bfloat16(), torch.randn(4, generator=g).bfloat16()
    y = tk.normalize(x, mean, var, w, b, EPS, (0, 2, 3))
    v = lambda t: t.double().view(1, 4, 1, 1)  # noqa: E731
    y64 = (x.double() - v(mean)) / torch.sqrt(v(var) + EPS) * v(w) + v(b)
    # one bf16 ulp: the interpreter truncates float32 → bf16 (the GPU rounds to nearest, half an ulp);
    # bf16 coefficients erred by up to 0.06 here
    assert ((y.double() - y64).abs() <= 2.0**-7 * y64.abs() + 1e-3).all()


@needs_interpreter
def test_launches_per_direction(monkeypatch):
    """Two launches for the training forward, two for the backward, one in eval; nothing else on x."""
    launched = []
    for name in ("_partial_moments", "_normalize", "_partial_grads", "_grad_input"):
        kernel = getattr(tk, name)

        class Counting:
            def __init__(self, kernel, name):
                self.kernel, self.name = kernel, name

            def __getitem__(self, grid):
                launched.append(self.name)
                return self.kernel[grid]

        monkeypatch.setattr(tk, name, Counting(kernel, name))
    x = _input((3, 5, 7, 9), CL, torch.float32)
    w, b = _params((5,))
    y, mean, var = tk.forward(x, w, b, EPS, (0, 2, 3))
    assert launched == ["_partial_moments", "_normalize"]
    launched.clear()
    tk.backward(y, x, mean, var, w, EPS, (0, 2, 3))
    assert launched == ["_partial_grads", "_grad_input"]
    launched.clear()
    tk.normalize(x, mean, var, w, b, EPS, (0, 2, 3))
    assert launched == ["_normalize"]


@pytest.mark.parametrize(
    "shape, axes, make",
    [
        ((4, 3, 5, 12), (0, 2, 3), lambda x: x[..., ::2]),  # strided view
        ((4, 3, 5, 6), (0, 2, 3), lambda x: x.double()),  # float64
        ((4, 3, 5, 6), (0,), lambda x: x.contiguous(memory_format=CL)),  # per-activation on channels_last
        ((4, 3, 5, 6), (0, 3), lambda x: x),  # other axes
    ],
    ids=["strided", "float64", "per_activation_cl", "other_axes"],
)
@needs_interpreter
def test_uncovered_cases_fall_back_to_the_same_answer(shape, axes, make):
    x = make(_input(shape, None, torch.float32))
    assert not tk.covered(x, axes)
    w, b = _params(_fshape(x.shape, axes))
    if x.dtype == torch.float64:
        w, b = w.double(), b.double()
    got, want = tk.forward(x, w, b, EPS, axes), composed.forward(x, w, b, EPS, axes)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e)
    dy = torch.randn(x.shape, dtype=x.dtype)
    want = composed.backward(dy, x, got[1], got[2], w, EPS, axes)
    for g, e in zip(tk.backward(dy, x, got[1], got[2], w, EPS, axes), want, strict=True):
        torch.testing.assert_close(g, e)


@needs_interpreter
def test_autograd_recording_falls_back():
    x = _input((3, 5, 7, 9), None, torch.float32).requires_grad_()
    w, b = _params((5,))
    assert not tk.covered(x, (0, 2, 3), w, b)
    y, _, _ = tk.forward(x, w, b, EPS, (0, 2, 3))
    assert y.requires_grad
