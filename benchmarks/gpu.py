"""GPU benchmark: bnlab's batch norm against torch eager and ``torch.compile``, side by side in one run.

    python benchmarks/gpu.py              # everything, about 2-3 minutes on an H200
    python benchmarks/gpu.py --quick      # the small shape and one ResNet-50 shape, no compile
    python benchmarks/gpu.py --no-compile

For every case (ResNet-50 feature maps of issue 9 and the launch-bound (32,64,56,56); bf16 and fp32;
NCHW and NHWC) it first checks correctness on random data — the largest error of bnlab's and of torch's
output and input gradient against float64 — then times, with CUDA events (``torch.utils.benchmark``,
median), the training forward (running statistics updated), the forward + backward, and eval:

- ``bnlab`` = ``bnlab.nn.functional.batch_norm`` with the default CUDA family (Triton kernels when
  triton imports), ``cuda`` = the same with ``kernels.use_cuda_family("cuda")`` (torch's fused kernels,
  step 1), ``eager`` = ``torch.nn.functional.batch_norm``, ``compiled`` = ``torch.compile`` of that call
  (forward + backward only; its one-off compile time is not counted);
- GB/s counts 3 passes over x for the forward, 5 for the backward (8 for forward + backward), 2 for
  eval; ``%copy`` is that against the device copy bandwidth measured in the same run (read + write);
- ratios are times ÷ bnlab's (> 1: bnlab faster).

Then (32,64,56,56) forward + backward captured in a CUDA graph (bnlab and eager), and one training step
of a ResNet-18-style model (batch 64, 3×128×128) with torch's layers and with ``bnlab.convert``'s, fp32
and bf16 autocast. A benchmark, not a test: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as TF
from torch.utils import benchmark

import bnlab
from bnlab import kernels
from bnlab.nn import functional as BF

SMALL = (32, 64, 56, 56)
RESNET50 = [(256, 64, 112, 112), (256, 256, 56, 56)]
PASSES = {"fwd": 3, "fwd+bwd": 8, "eval": 2}


def _time(fn, min_run_time=0.15) -> float:
    fn()
    torch.cuda.synchronize()
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy of 1 GiB, counting the read and the write."""
    x = torch.empty(2**28, device="cuda", dtype=torch.float32)
    y = torch.empty_like(x)
    t = _time(lambda: y.copy_(x), 0.3)
    return 2 * x.numel() * 4 / t


def _with_family(name, call):
    """``call`` with bnlab's CUDA family set to ``name`` for its whole duration (backward included)."""

    def run():
        kernels.use_cuda_family(name)
        try:
            return call()
        finally:
            kernels.use_cuda_family("triton")

    return run


def _fwd_bwd(fn, x, w, b, dy):
    xr, wr, br = x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_()

    def step():
        y = fn(xr, None, None, wr, br, training=True)
        return torch.autograd.grad(y, (xr, wr, br), dy)

    return step


def check(fn, x, w, b, dy) -> tuple[float, float]:
    """Largest |error| of the output and of dx against float64 (relative to the largest float64 value)."""
    xr = x.detach().requires_grad_()
    y = fn(xr, None, None, w, b, training=True)
    (dx,) = torch.autograd.grad(y, (xr,), dy)
    x64 = x.detach().double().requires_grad_()
    y64 = TF.batch_norm(x64, None, None, w.double(), b.double(), training=True)
    (dx64,) = torch.autograd.grad(y64, (x64,), dy.double())
    err_y = ((y.double() - y64).abs().max() / y64.abs().max()).item()
    err_dx = ((dx.double() - dx64).abs().max() / dx64.abs().max()).item()
    return err_y, err_dx


def run_case(shape, dtype, fmt, use_compile: bool, copy_bw: float, rows: list) -> None:
    c = shape[1]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(shape, device="cuda", generator=g) * 2 + 0.5).to(dtype).contiguous(memory_format=fmt)
    dy = torch.randn(shape, device="cuda", generator=g).to(dtype).contiguous(memory_format=fmt)
    w, b = torch.rand(c, device="cuda") + 0.5, torch.randn(c, device="cuda")
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    layout = "NHWC" if fmt == torch.channels_last else "NCHW"
    tag = f"{str(dtype)[6:]} {layout} {tuple(shape)}"
    impls = {"bnlab": BF.batch_norm, "cuda": BF.batch_norm, "eager": TF.batch_norm}
    errors = {name: check(fn, x, w, b, dy) for name, fn in impls.items() if name != "cuda"}
    print(
        f"  check {tag}: max rel error vs float64 — bnlab y {errors['bnlab'][0]:.1e} dx {errors['bnlab'][1]:.1e}; "
        f"torch y {errors['eager'][0]:.1e} dx {errors['eager'][1]:.1e}",
        flush=True,
    )
    compiled = {}
    if use_compile:  # forward + backward only: each compile costs seconds, and the peer is fwd+bwd
        torch._dynamo.reset()
        compiled["fwd+bwd"] = _fwd_bwd(torch.compile(TF.batch_norm), x, w, b, dy)
    nbytes = x.numel() * x.element_size()
    for case in ("fwd", "fwd+bwd", "eval"):
        times = {}
        for name, fn in impls.items():
            if case == "fwd":
                call = lambda fn=fn: fn(x, rm, rv, w, b, training=True)  # noqa: E731
            elif case == "fwd+bwd":
                call = _fwd_bwd(fn, x, w, b, dy)
            else:
                call = lambda fn=fn: fn(x, rm, rv, w, b, training=False)  # noqa: E731
            times[name] = _time(_with_family("cuda", call) if name == "cuda" else call)
        if case in compiled:
            t0 = time.perf_counter()
            compiled[case]()
            torch.cuda.synchronize()
            times["compiled"] = _time(compiled[case])
            times["compile_s"] = time.perf_counter() - t0
        gbs = PASSES[case] * nbytes / times["bnlab"] / 1e9
        row = {"case": case, "tag": tag, "gbs": gbs, "copy": gbs * 1e9 / copy_bw, **times}
        rows.append(row)
        print(_format_row(row), flush=True)


HEAD = (
    f"{'case':<9}{'dtype layout shape':<34}{'bnlab ms':>9}{'GB/s':>7}{'%copy':>7}"
    f"{'cuda ms':>9}{'eager ms':>9}{'compiled':>9}{'eager/bn':>9}{'comp/bn':>8}{'cuda/bn':>8}"
)


def _format_row(r) -> str:
    comp = f"{r['compiled'] * 1e3:>9.3f}" if "compiled" in r else f"{'—':>9}"
    comp_ratio = f"{r['compiled'] / r['bnlab']:>8.2f}" if "compiled" in r else f"{'—':>8}"
    return (
        f"{r['case']:<9}{r['tag']:<34}{r['bnlab'] * 1e3:>9.3f}{r['gbs']:>7.0f}{r['copy'] * 100:>6.0f}%"
        f"{r['cuda'] * 1e3:>9.3f}{r['eager'] * 1e3:>9.3f}{comp}{r['eager'] / r['bnlab']:>9.2f}{comp_ratio}"
        f"{r['cuda'] / r['bnlab']:>8.2f}"
    )


def graph_timing(shape=SMALL) -> None:
    """Forward + backward of one BN captured in a CUDA graph: the launch-bound case without Python."""
    c = shape[1]
    x = torch.randn(shape, device="cuda")
    dy = torch.randn_like(x)
    w, b = torch.rand(c, device="cuda") + 0.5, torch.randn(c, device="cuda")
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    out = []
    for name, fn in (("bnlab", BF.batch_norm), ("eager", TF.batch_norm)):
        xr, wr, br = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()

        def step(fn=fn, xr=xr, wr=wr, br=br):
            y = fn(xr, rm, rv, wr, br, training=True)
            return torch.autograd.grad(y, (xr, wr, br), dy)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                step()
        except Exception as exc:  # noqa: BLE001 — report, do not stop the benchmark
            print(f"  {name}: capture failed: {type(exc).__name__}: {exc}")
            continue
        out.append(f"{name} {_time(graph.replay) * 1e3:.4f} ms")
    print(f"CUDA graph, fwd+bwd {shape} fp32: " + ", ".join(out), flush=True)


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def resnet18(classes=100) -> nn.Module:
    """ResNet-18's layout (He et al. 2016): a 7×7 stem, four stages of two basic blocks, 20 BN layers."""
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_Block(cin, cout, stride), _Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def model_step(batch=64, size=128) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 100, (batch,), device="cuda")
    base = resnet18().cuda().to(memory_format=torch.channels_last)
    for precision in ("fp32", "bf16 autocast"):
        times = {}
        for name in ("torch", "bnlab"):
            model = base if name == "torch" else bnlab.convert(resnet18().cuda().to(memory_format=torch.channels_last))
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step(model=model, opt=opt, precision=precision):
                with torch.autocast("cuda", torch.bfloat16, enabled=precision != "fp32"):
                    loss = TF.cross_entropy(model(x), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            times[name] = _time(step, 0.5)
        print(
            f"ResNet-18-style step, batch {batch}, 3x{size}x{size}, channels_last, {precision}: "
            f"torch {times['torch'] * 1e3:.2f} ms, bnlab {times['bnlab'] * 1e3:.2f} ms, "
            f"torch/bnlab {times['torch'] / times['bnlab']:.2f}",
            flush=True,
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="(32,64,56,56) and one ResNet-50 shape, no compile")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile peer")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to time")
        return 0
    start = time.perf_counter()
    family = kernels.select(torch.empty(1, device="cuda")).__name__
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = "not installed"
    bw = copy_bandwidth()
    print(
        f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  triton {tv}  "
        f"bnlab CUDA family: {family}  copy bandwidth {bw / 1e12:.2f} TB/s (read + write)"
    )
    use_compile = args.compile and not args.quick
    shapes = [SMALL] + (RESNET50[:1] if args.quick else RESNET50)
    configs = [
        (torch.bfloat16, torch.contiguous_format),
        (torch.bfloat16, torch.channels_last),
        (torch.float32, torch.contiguous_format),
        (torch.float32, torch.channels_last),
    ]
    rows = []
    print(HEAD)
    for shape in shapes:
        for dtype, fmt in configs:
            try:
                run_case(shape, dtype, fmt, use_compile, bw, rows)
            except Exception as exc:  # noqa: BLE001 — one failing case must not hide the others
                print(f"  {shape} {dtype} {fmt}: failed: {type(exc).__name__}: {exc}", flush=True)
            torch.cuda.empty_cache()
    big = [r for r in rows if r["case"] == "fwd+bwd" and "256," in r["tag"]]
    for peer in ("eager", "compiled"):
        ratios = [r[peer] / r["bnlab"] for r in big if peer in r]
        if ratios:
            gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"fwd+bwd, ResNet-50 shapes: {peer} ÷ bnlab geometric mean {gm:.2f} over {len(ratios)} cases")
    graph_timing()
    model_step()
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
