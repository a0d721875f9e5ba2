"""A compiled CPU family: C99 + OpenMP kernels built at first use (the contract of :mod:`.contract`;
chain: native → cpu → composed).

What it covers: per-channel BN in torch's convention (reduce axes = every axis but 1) on dense float32 or
float64 CPU tensors — NCHW-like (contiguous, 2 to 5 dims) or channels_last / channels_last_3d — with
parameters and statistics of the input's dtype and no autograd recording the call. Everything else
(fp16/bf16, strided views, other axes) goes on down the chain to :mod:`.cpu` and :mod:`.composed`.

The kernels (``csrc/bn.c``, each naming the definition it implements):

- statistics (:func:`bnlab.moments.batch_stats`): shifted by a sample value of each channel, accumulated in
  float64, in an order that depends on the shape only (the same with 1 or 2 threads); channels_last sums
  whole rows of C at once; :func:`batch_stats_float64` returns them unrounded (synchronized BN's merge);
- normalize (:func:`.composed.normalize`): y = (x − s)·a + b with per-channel a, b, s computed once
  (s = μ where |μ|/σ > :data:`.composed.SHIFT_RATIO`, else 0), one pass, the fused ReLU in it;
- backward (:func:`.composed.backward`, :func:`.composed.grad_coefficients`): Σdy and Σdy·(x − μ) in one
  pass (float64 data: float64 sums; float32 data: float32 SIMD blocks of at most 8 terms per lane combined in
  float64, error ≤ 9·2⁻²⁴·Σ|dy·(x − μ)| whatever the count, bound in ``csrc/bn.c``), then
  dx = c·dy + d·(x − μ) + e in one pass (also with synchronized BN's global sums, given in float64); NCHW rows
  of 2 KB or more whose channel fits half the L2 cache take a block of channels at a time, its sums then its
  dx, so dx reads x and dy from L2 (the same bits: ``csrc/bn.c``, "the NCHW backward, fused").

float32 outputs above 4 MB are written with streaming stores (no read of the output's lines before they are
written; ``csrc/bn.c``, "streaming stores"): row by row where rows start on cache lines, else (NCHW rows of
14×14 or odd sizes) as one flat run per thread of whole lines, a vector that straddles two channels taking
each one's coefficients lane by lane.

The running statistics' update (:func:`update_running`) is one C call with the bits of the stock ops.

The build: ``$CC`` (default ``cc``) ``-O3 -fopenmp -shared -fPIC`` (+ ``-mavx2 -mfma`` where torch reports
AVX2 or better), about 1 s, into a per-user cache directory (``$BNLAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/bnlab`` or ``~/.cache/bnlab``, subdirectory ``native``), one file per source hash,
compiler and flags, written under a temporary name and renamed into place (concurrent first uses are
safe). A library that does not load (a truncated file) is rebuilt once. Where Python's headers are installed a
small CPython extension, the call module (``csrc/call/bncall.c``, cached the same way per Python ABI), makes
the calls: it reads their ints, floats and pointers with the C API (~0.1 µs) where ctypes' argtypes take
1.5–2 µs; without it, or with ``BNLAB_NATIVE_CALL=ctypes``, ctypes calls the same functions
(:func:`call_path`). No compiler, or a build that fails: :func:`available` is False (one debug log line) and
:func:`covers` says no, so the pure families run.
``BNLAB_NATIVE=0`` in the environment disables the family. The kernels use ``torch.get_num_threads()``
OpenMP threads per call (one in a child made by ``fork()``: GNU OpenMP's pool does not survive it).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import torch

from . import contract

__all__ = [
    "NAME", "covers", "batch_stats", "normalize", "forward", "backward", "batch_stats_float64", "update_running",
    "available", "library_path", "static_covers", "call_path", "normalize_at", "shape_of",
]  # fmt: skip

NAME = "native"
SOURCE = Path(__file__).with_name("csrc") / "bn.c"  # includes bn_body.h (every csrc file is hashed)
CALL_SOURCE = SOURCE.parent / "call" / "bncall.c"  # the call module (a CPython extension), built apart
ABI = 2  # BNLAB_NATIVE_ABI in csrc/bn.c
_FLOAT = {torch.float32: "f32", torch.float64: "f64"}
_PLAIN = (torch.Tensor, torch.nn.Parameter)  # not subclasses (fake, functorch, user subclasses): their data_ptr
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict = {}


def _forked_child() -> None:
    """In a child made by ``fork()``: GNU OpenMP's thread pool did not survive the fork (a parallel region with
    2 or more threads would hang for ever), so the kernels of this process run on one thread."""
    _state["forked"] = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked_child)


# values per OpenMP thread at least (torch's own grain size, at::internal::GRAIN_SIZE): below it, waking a
# second thread costs more than it saves (0.8 ms against 20 µs for 128 values on a busy 2-core machine)
_GRAIN = 32768


def _threads(numel: int) -> int:
    """OpenMP threads for one call over ``numel`` values: torch's intra-op thread count, at most one per
    :data:`_GRAIN` values (1 in a forked child, see above). The results do not depend on it."""
    if _state.get("forked"):
        return 1
    return max(1, min(torch.get_num_threads(), numel // _GRAIN))


def _disabled() -> bool:
    return os.environ.get("BNLAB_NATIVE", "1").strip().lower() in ("0", "off", "false", "no")


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring)."""
    root = os.environ.get("BNLAB_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "bnlab")
    return Path(root) / "native"


def _flags() -> list[str]:
    flags = ["-O3", "-std=gnu99", "-fopenmp", "-shared", "-fPIC"]
    # AVX2 + FMA only where the CPU has them (torch's own dispatch says so): the same vector width torch's
    # kernels use, without -march=native's CPU-specific code in a cache directory a cluster may share
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _compiler() -> tuple[str, str] | None:
    """(the compiler command, a key of its identity: resolved path, size, mtime), or None if absent."""
    cc = os.environ.get("CC") or "cc"
    found = shutil.which(cc)
    if found is None:
        return None
    real = os.path.realpath(found)
    st = os.stat(real)
    return found, f"{real}:{st.st_size}:{st.st_mtime_ns}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(path: Path) -> Path:
    """The file holding the SHA-256 of the library ``path`` as it was built."""
    return path.with_suffix(".sha256")


def _intact(path: Path) -> bool:
    """The library exists and is byte for byte what was built: a truncated shared object is not merely
    refused by the dynamic loader, mapping it can kill the process (SIGBUS), so it is checked first."""
    try:
        return _stamp(path).read_text().strip() == _digest(path)
    except OSError:
        return False


def _build(cc: str, flags: list[str], target: Path, source: Path = SOURCE) -> bool:
    """Compile ``source`` into ``target``, then write its stamp; each file is written under a temporary name
    in the same directory and renamed into place, so a concurrent first use never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)[1])
    tmp_stamp = Path(tempfile.mkstemp(prefix=".build-", suffix=".sha256", dir=target.parent)[1])
    try:
        done = subprocess.run([cc, *flags, str(source), "-o", str(tmp)], capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        if done.returncode != 0:
            _log.debug("bnlab native kernels: %s failed (%s): %s", cc, done.returncode, done.stderr.strip()[-300:])
            return False
        tmp_stamp.write_text(_digest(tmp))
        os.replace(tmp, target)
        os.replace(tmp_stamp, _stamp(target))
        return True
    finally:
        for leftover in (tmp, tmp_stamp):
            leftover.unlink(missing_ok=True)


def _load(path: Path):
    # Where torch ships GNU OpenMP (libgomp.so.1: the pip wheels for Linux), the loader finds that soname loaded
    # already, so the kernels run on torch's own thread pool and the variable below is never read (measured:
    # one libgomp mapped, tests/kernels/test_native.py). Where torch uses another runtime (Intel's, LLVM's), the
    # system's libgomp is a second pool; idle threads of a GNU pool spin for a while by default, taking the
    # cores from the other pool's next parallel region, so that pool starts passive (its threads sleep at once;
    # it only runs above _GRAIN values per thread) unless the user chose a policy. libgomp reads the variable
    # when it is loaded; the environment is restored after.
    chosen = "OMP_WAIT_POLICY" in os.environ
    if not chosen:
        os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        lib = ctypes.CDLL(str(path))
    finally:
        if not chosen:
            os.environ.pop("OMP_WAIT_POLICY", None)
    if lib.bnlab_native_abi() != ABI:
        raise OSError(f"{path}: ABI {lib.bnlab_native_abi()} != {ABI}")
    p, i64, i, d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for sfx in _FLOAT.values():
        getattr(lib, f"bn_forward_{sfx}").argtypes = [p, i64, i64, i64, i, p, p, d, i, p, p, p, i]
        getattr(lib, f"bn_normalize_{sfx}").argtypes = [p, i64, i64, i64, i, p, p, p, p, d, p, i]
        getattr(lib, f"bn_backward_{sfx}").argtypes = [p, p, p, i64, i64, i64, i, p, p, p, d, p, d, i, p, p, p, i]
        getattr(lib, f"bn_running_{sfx}").argtypes = [p, p, p, p, i64, d, d]
        getattr(lib, f"bn_stats64_{sfx}").argtypes = [p, i64, i64, i64, i, p, p, i]
        for fn in ("forward", "normalize", "backward", "running", "stats64"):
            getattr(lib, f"bn_{fn}_{sfx}").restype = i
    return lib


def _open():
    """Build (if needed) and load the library; None where that is not possible."""
    if _disabled():
        _log.debug("bnlab native kernels: disabled by BNLAB_NATIVE")
        return None
    try:
        compiler = _compiler()
        if compiler is None:
            _log.debug("bnlab native kernels: no C compiler (%s); the pure families run", os.environ.get("CC", "cc"))
            return None
        flags = _flags()
        # a compiler without OpenMP (Apple clang): the same kernels on one thread
        for attempt in (flags, [f for f in flags if f != "-fopenmp"]):
            lib = _open_with(*compiler, attempt)
            if lib is not None:
                _state["call"] = _open_call(*compiler)
                return lib
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        _log.debug("bnlab native kernels unavailable: %s", exc)
        return None


def _open_with(cc: str, identity: str, flags: list[str]):
    """The library built by ``cc`` with ``flags``, from the cache or built now (a damaged file: rebuilt once)."""
    sources = b"".join(f.read_bytes() for f in sorted(SOURCE.parent.iterdir()) if f.suffix in (".c", ".h"))
    key = hashlib.sha256(sources + f"\0{identity}\0{' '.join(flags)}".encode()).hexdigest()[:20]
    path = cache_dir() / f"bn-{key}.so"
    for _ in range(2):
        if not _intact(path) and not _build(cc, flags, path):
            return None
        try:
            lib = _load(path)
        except OSError as exc:  # a foreign file under our name: rebuilt once
            _log.debug("bnlab native kernels: %s does not load (%s); rebuilding", path, exc)
            path.unlink(missing_ok=True)
            continue
        _state["path"] = path
        return lib
    return None


def _open_call(cc: str, identity: str):
    """The call module (``csrc/call/bncall.c``) for this Python, from the cache or built now; None where
    Python's headers are missing, ``BNLAB_NATIVE_CALL=ctypes`` is set, or the build fails (ctypes calls then)."""
    if os.environ.get("BNLAB_NATIVE_CALL", "").strip().lower() == "ctypes":
        return None
    include = sysconfig.get_paths().get("include") or ""
    if not os.path.exists(os.path.join(include, "Python.h")):
        _log.debug("bnlab native kernels: no Python headers in %r; calls go through ctypes", include)
        return None
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    flags = ["-O2", "-shared", "-fPIC", f"-I{include}"]
    if sys.platform == "darwin":
        flags += ["-undefined", "dynamic_lookup"]
    key = hashlib.sha256(CALL_SOURCE.read_bytes() + f"\0{identity}\0{' '.join(flags)}\0{suffix}".encode())
    path = cache_dir() / f"bncall-{key.hexdigest()[:20]}{suffix}"
    try:
        if not _intact(path) and not _build(cc, flags, path, CALL_SOURCE):
            return None
        loader = importlib.machinery.ExtensionFileLoader("_bnlab_call", str(path))
        spec = importlib.util.spec_from_file_location("_bnlab_call", path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module
    except (ImportError, OSError) as exc:
        _log.debug("bnlab native kernels: the call module does not load (%s); calls go through ctypes", exc)
        return None


def call_path() -> str | None:
    """How the kernels are called: ``"extension"`` (the call module), ``"ctypes"``, or None (no library)."""
    if not available():
        return None
    return "extension" if _state.get("call") is not None else "ctypes"


def _lib():
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _open()
    return _state["lib"]


def available() -> bool:
    """Whether the compiled kernels are built and loaded (building them on first call)."""
    return _lib() is not None


def library_path() -> Path | None:
    """The loaded library's file, or None."""
    return _state.get("path") if available() else None


# ---- covers -----------------------------------------------------------------------------------------------


def _layout(x: torch.Tensor) -> int | None:
    """0: NCHW-like contiguous, 1: channels_last dense, None: not covered."""
    fmt = contract.dense_format(x)
    if fmt is None:
        return None
    return 0 if fmt is torch.contiguous_format else 1


def static_covers(x: torch.Tensor, axes) -> bool:
    """The part of :func:`covers` that depends on x's dtype, shape and strides and the axes only, cached per
    such key (a few microseconds a call on small tensors)."""
    key = (x.dtype, x.shape, x.stride(), axes)
    ok = _covered.get(key)
    if ok is None:
        ok = (x.dtype in _FLOAT and x.dim() >= 2 and x.numel() > 0 and contract.is_channel_axes(x, axes)
              and _layout(x) is not None)  # fmt: skip
        if len(_covered) > 1024:
            _covered.clear()
        _covered[key] = ok
    return ok


_covered: dict = {}


# backward's tensors (the contract's order): dy, mean, var, weight, y, then the given Σdy and Σdy·x̂ (``sums=``)
_SUMS_AT = 5


def covers(x: torch.Tensor, axes: tuple[int, ...], *tensors, op: str) -> bool:
    """Dense float32/float64 CPU input, per-channel axes, the other tensors plain CPU tensors of x's dtype
    (or None; the backward's given sums also float64: the kernel reads them in float64), no autograd
    recording, and the library loaded (:func:`available`)."""
    if type(x) not in _PLAIN or not x.is_cpu or not static_covers(x, tuple(axes)):
        return False
    dtype = x.dtype
    for i, t in enumerate(tensors):
        if t is None:
            continue
        if type(t) not in _PLAIN or not t.is_cpu:
            return False
        if t.dtype != dtype and not (op == "backward" and i >= _SUMS_AT and t.dtype == torch.float64):
            return False
    if op != "batch_stats" and torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                               for t in (x, *tensors)):  # fmt: skip
        return False
    return available()


# ---- implementations --------------------------------------------------------------------------------------


def _fn(op: str, dtype: torch.dtype, via: str | None = None):
    """The library's ``bn_<op>_<f32|f64>`` as a Python callable: through the call module where it loaded, else
    ctypes (``via``: ``"ctypes"`` or ``"extension"`` to ask for one). Cached: a ctypes attribute lookup and an
    f-string per call add up on small tensors."""
    key = (op, dtype, via)
    fn = _fns.get(key)
    if fn is None:
        fn = getattr(_lib(), f"bn_{op}_{_FLOAT[dtype]}")
        call = _state.get("call") if via != "ctypes" else None
        if via == "extension" and call is None:
            raise RuntimeError("the native call module is not loaded (see native.call_path())")
        if call is not None:  # the kernel's address, bound to the call module's function of its signature
            fn = functools.partial(getattr(call, op), ctypes.cast(fn, ctypes.c_void_p).value)
        _fns[key] = fn
    return fn


_fns: dict = {}


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _vec(t: torch.Tensor | None, c: int) -> torch.Tensor | None:
    """A per-channel tensor as C contiguous values (a view where possible)."""
    if t is None or (t.dim() == 1 and t.is_contiguous()):
        return t
    t = t.reshape(c)
    return t if t.is_contiguous() else t.contiguous()


def shape_of(x: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, C, S = the values per sample and channel, layout); S = 1 (an (N, C) input, or H·W = 1) is
    channels_last whatever the strides say: rows of C contiguous values, summed a row at a time."""
    key = (x.shape, x.stride())
    found = _shapes.get(key)
    if found is None:
        n, c = x.shape[0], x.shape[1]
        s = x.numel() // (n * c)
        if len(_shapes) > 1024:
            _shapes.clear()
        found = _shapes[key] = (n, c, s, 1 if s == 1 else _layout(x))
    return found


_shapes: dict = {}


def _run_forward(x, weight, bias, eps, want_y: bool, relu: bool):
    n, c, s, cl = shape_of(x)
    weight, bias = _vec(weight, c), _vec(bias, c)
    mean, var = x.new_empty(c), x.new_empty(c)
    y = torch.empty_like(x) if want_y else None
    fn = _fn("forward", x.dtype)
    ok = fn(x.data_ptr(), n, c, s, cl, _ptr(weight), _ptr(bias), float(eps), int(relu), _ptr(y),
            mean.data_ptr(), var.data_ptr(), _threads(x.numel()))  # fmt: skip
    if ok == -1:
        raise MemoryError("bnlab native kernels: out of memory for the per-channel buffers")
    if ok != 1:  # inf/NaN in x, or a variance beyond float64: the next family's float64 rescue path
        raise contract.Declined
    return y, mean, var


def _batch_stats(x, axes):
    """μ_B and the biased σ²_B (:func:`bnlab.moments.batch_stats`), shifted float64 sums in C."""
    _, mean, var = _run_forward(x, None, None, 0.0, False, False)
    return mean, var


def batch_stats_float64(x: torch.Tensor, axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """μ_B and the biased σ²_B of ``x`` in float64, as the kernels compute them before :func:`batch_stats`
    rounds them to x's dtype; None where this family does not cover ``x`` (or x holds inf/NaN): the caller
    computes them its own way. Synchronized BN merges the shards' statistics in float64
    (:mod:`bnlab.distributed`), where a mean rounded to float32 would need one more float64 pass over x."""
    if not covers(x, axes, op="batch_stats"):
        return None
    n, c, s, cl = shape_of(x)
    mean = torch.empty(c, dtype=torch.float64)
    var = torch.empty(c, dtype=torch.float64)
    ok = _fn("stats64", x.dtype)(x.data_ptr(), n, c, s, cl, mean.data_ptr(), var.data_ptr(), _threads(x.numel()))
    if ok == -1:
        raise MemoryError("bnlab native kernels: out of memory for the per-channel buffers")
    return (mean, var) if ok == 1 else None


def _forward(x, weight, bias, eps, axes, relu=False):
    """Training forward (:func:`.composed.forward`): statistics, then one fused normalize(+ReLU) pass."""
    return _run_forward(x, weight, bias, eps, True, relu)


def _normalize(x, mean, var, weight, bias, eps, axes):
    """y = γ (x − μ)/√(σ² + ε) + β (:func:`.composed.normalize`), one pass."""
    geometry = shape_of(x)
    c = geometry[1]
    return normalize_at(geometry, x, _vec(mean, c), _vec(var, c), _vec(weight, c), _vec(bias, c), eps)


def normalize_at(geometry: tuple[int, int, int, int], x, mean, var, weight, bias, eps):
    """:func:`_normalize` given x's ``geometry`` (its :func:`shape_of`) and per-channel tensors that are contiguous
    vectors of C values already: what a planned call (:mod:`bnlab.nn._planned`) knows from its first call."""
    n, c, s, cl = geometry
    y = torch.empty_like(x)
    ok = _fn("normalize", x.dtype)(x.data_ptr(), n, c, s, cl, mean.data_ptr(), var.data_ptr(), _ptr(weight),
                                   _ptr(bias), float(eps), y.data_ptr(), _threads(x.numel()))  # fmt: skip
    if ok != 1:
        raise MemoryError("bnlab native kernels: out of memory for the per-channel buffers")
    return y


def _backward(dy, x, mean, var, weight, eps, axes, needs=(True, True, True), y=None, sums=None):
    """Closed-form gradients (:func:`.composed.backward`): one reduction pass (float32 blocks combined in float64,
    see the module docstring), one pass for dx."""
    need_x, need_w, need_b = needs
    n, c, s, cl = shape_of(x)
    strides = x.stride()
    if dy.stride() != strides:  # (same shape: the contract) another layout: x's
        dy = dy.contiguous(memory_format=contract.dense_format(x))
    if y is not None and y.stride() != strides:
        y = y.contiguous(memory_format=contract.dense_format(x))
    mean, var, weight = (_vec(t, c) for t in (mean, var, weight))
    dx = torch.empty_like(x) if need_x else None
    dw = x.new_empty(c) if (need_w and weight is not None) else None
    db = x.new_empty(c) if need_b else None
    given, m_given = None, 0.0
    if sums is not None and need_x:
        given = torch.cat([sums[0].reshape(c), sums[1].reshape(c)]).to(torch.float64)
        m_given = float(sums[2])
    reduce = dw is not None or db is not None or (need_x and given is None)
    fn = _fn("backward", x.dtype)
    ok = fn(dy.data_ptr(), x.data_ptr(), _ptr(y), n, c, s, cl, mean.data_ptr(), var.data_ptr(), _ptr(weight),
            float(eps), _ptr(given), m_given, int(reduce), _ptr(dx), _ptr(dw), _ptr(db),
            _threads(x.numel()))  # fmt: skip
    if ok != 1:
        raise MemoryError("bnlab native kernels: out of memory for the per-channel buffers")
    return dx, dw, db


def update_running(running_mean, running_var, mean, var, count: int, momentum: float) -> bool:
    """Alg. 2's running averages in place (:func:`bnlab.nn.functional.update_running_stats`: the unbiased
    ``count/(count − 1)·var``, then ``lerp_`` with weight ``momentum``), in one C call and with the bits of
    the stock ops, where every batch statistic is finite. Returns False — nothing changed — where it does not
    apply (the library missing; buffers that are not plain contiguous CPU float32/float64 tensors of the
    statistics' dtype and size, inference tensors or tensors that require grad; a statistic that is not
    finite): the caller then runs the stock ops. Like ``lerp_`` it bumps the buffers' version counters, so
    autograd still sees the change."""
    tensors = (running_mean, running_var, mean, var)
    dtype, c = mean.dtype, mean.numel()
    for t in tensors:
        if type(t) is not torch.Tensor or t.dtype != dtype or not t.is_cpu or t.numel() != c or not t.is_contiguous():
            return False
    if dtype not in _FLOAT or not available():
        return False
    for t in (running_mean, running_var):  # torch's own errors for these (an in-place write is refused)
        if t.is_inference() or t.requires_grad:
            return False
    fn = _fn("running", dtype)
    ok = fn(running_mean.data_ptr(), running_var.data_ptr(), mean.data_ptr(), var.data_ptr(), c, float(momentum),
            count / (count - 1))  # fmt: skip
    if ok:
        torch.autograd.graph.increment_version((running_mean, running_var))
    return bool(ok)


#: The contract's implementations, run by :func:`.contract.run` once :func:`covers` said yes.
IMPLEMENTATION = {"batch_stats": _batch_stats, "normalize": _normalize, "forward": _forward, "backward": _backward}
batch_stats, normalize, forward, backward = contract.entry_points(NAME, covers, IMPLEMENTATION)
