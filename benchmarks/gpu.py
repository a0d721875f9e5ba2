"""GPU timings of bnlab.nn.functional.batch_norm against torch's own, side by side in one run.

Prints median times (CUDA events, via torch.utils.benchmark) and the ratio ours ÷ torch (< 1 = faster).
A benchmark, not a test: it never fails on slowness. Usage: ``python benchmarks/gpu.py [--quick]``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as TF
from torch.utils import benchmark

from bnlab.nn import functional as F

SHAPES = [(32, 64, 56, 56), (32, 256, 28, 28), (64, 512, 14, 14), (128, 64, 28, 28), (256, 32, 8, 8)]


def _time(fn) -> float:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="two shapes only")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to time")
        return
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'case':<34}{'shape':<20}{'torch ms':>10}{'bnlab ms':>10}{'ratio':>8}{'GB/s':>8}")
    cases = [(torch.float32, torch.contiguous_format), (torch.float32, torch.channels_last), (torch.bfloat16, None)]
    for shape in SHAPES[:2] if args.quick else SHAPES:
        for dtype, fmt in cases:
            _case(shape, dtype, fmt or torch.contiguous_format)


def _case(shape, dtype, fmt) -> None:
    c = shape[1]
    x = torch.randn(shape, device="cuda", dtype=dtype).to(memory_format=fmt)
    w, b = torch.ones(c, device="cuda"), torch.zeros(c, device="cuda")
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    tag = f"{str(dtype)[6:]} {'NHWC' if fmt == torch.channels_last else 'NCHW'}"
    t_ref = _time(lambda: TF.batch_norm(x, rm, rv, w, b, True))
    t_our = _time(lambda: F.batch_norm(x, rm, rv, w, b, True))
    gbs = 2 * x.numel() * x.element_size() / t_our / 1e9
    row = f"{'fwd train ' + tag:<34}{str(shape):<20}{t_ref * 1e3:>10.3f}{t_our * 1e3:>10.3f}{t_our / t_ref:>8.2f}"
    print(f"{row}{gbs:>8.0f}")
    xr = x.clone().requires_grad_()
    wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
    dy = torch.randn_like(x)
    y_ref = TF.batch_norm(xr, None, None, wr, br, True)
    y_our = F.batch_norm(xr, None, None, wr, br, True)
    t_ref = _time(lambda: torch.autograd.grad(y_ref, (xr, wr, br), dy, retain_graph=True))
    t_our = _time(lambda: torch.autograd.grad(y_our, (xr, wr, br), dy, retain_graph=True))
    print(f"{'backward ' + tag:<34}{str(shape):<20}{t_ref * 1e3:>10.3f}{t_our * 1e3:>10.3f}{t_our / t_ref:>8.2f}")


if __name__ == "__main__":
    main()
