"""Checkpoints that are written atomically and cannot run code when loaded.

A checkpoint is a ``torch.save`` zip file holding ``{"format": "bnlab-checkpoint", "version": 3,
"state": ..., "digests": [...], "structure": ...}``: ``digests`` has one SHA-256 per tensor of ``state``
(its dtype, shape and bytes, in the order the state is walked) and ``structure`` one SHA-256 of
everything else (keys, container types, numbers, strings, and the dtype and shape of every NumPy array),
all checked on load. The zip container's CRCs do not cover everything a loader reads (a flipped byte in
the central directory can make torch read a tensor's bytes from elsewhere, or not at all); the digests
check what is rebuilt, so a load either returns exactly what was saved or raises :class:`CheckpointError`.

Older files: version 2 (tensor digests only; the shapes of NumPy arrays were not covered) is read as it
is. Version 1 (bnlab 0.1, no digests at all: a damaged file would load as wrong numbers without an error)
is refused unless the caller asks for it with ``allow_legacy=True``, and then read with a warning; saving
it again upgrades it. Nesting deeper than 100 containers is refused.

Writing goes through :mod:`bnlab.io` (a temporary file in the target's folder, fsync'ed, then renamed
over the target): a writer killed at any moment leaves either the previous checkpoint or the new one,
never a mix, and a symbolic link in the target's place is replaced, never written through. A killed
writer may leave its ``.<name>.*.tmp`` file behind; it is never read. A write that fails (a full disk)
raises :class:`bnlab.io.WriteError`, an OSError naming the checkpoint, and leaves no temporary file.

Loading uses ``torch.load(weights_only=True)``: only tensors, numbers, strings, ``None`` and containers
are rebuilt, so a file crafted to run code is refused. NumPy arrays and scalars (e.g. the state of
``np.random``) are not allowed by that loader, so :func:`save_checkpoint` stores them as uint8 tensors
with their dtype and shape and :func:`load_checkpoint` turns them back into the same arrays:

>>> import os, random, tempfile, numpy as np, torch
>>> path = os.path.join(tempfile.mkdtemp(), "last.pt")
>>> state = {"epoch": 3, "history": [0.9, 0.5], "rng": {"torch": torch.get_rng_state(),
...          "numpy": np.random.get_state(), "python": random.getstate()}}
>>> _ = save_checkpoint(path, state)
>>> back = load_checkpoint(path)
>>> back["epoch"], back["history"], back["rng"]["numpy"][1].dtype
(3, [0.9, 0.5], dtype('uint32'))
>>> np.random.set_state(back["rng"]["numpy"]); random.setstate(back["rng"]["python"])
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_file

__all__ = ["CheckpointError", "LegacyCheckpointWarning", "save_checkpoint", "load_checkpoint"]

FORMAT = "bnlab-checkpoint"
VERSION = 3
_READABLE_VERSIONS = (2, 3)
_LEGACY_VERSIONS = (1,)  # no digests: read only with allow_legacy=True
MAX_DEPTH = 100  # containers inside containers; deeper states are refused on save and on load
_NDARRAY = "__bnlab_ndarray__"  # marker key of an encoded NumPy array or scalar


class LegacyCheckpointWarning(UserWarning):
    """A legacy checkpoint (no digests) was read with ``allow_legacy=True``; ``path``, ``version`` and the
    ``current`` format version say which (the ``bnlab`` command shows it in the user's language)."""

    def __init__(self, message: str, path: Path, version: int, current: int) -> None:
        super().__init__(message)
        self.path, self.version, self.current = path, version, current


class CheckpointError(ValueError):
    """A file that is not a readable bnlab checkpoint: foreign, truncated, corrupt or unsafe."""


# Leaf types torch.load(weights_only=True) rebuilds without running code.
_PLAIN = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size)


def _where(path: tuple) -> str:
    return "state" + "".join(f"[{p!r}]" for p in path)


def _encode(obj: Any, path: tuple = ()) -> Any:
    """Copy of ``obj`` with NumPy values encoded; raise TypeError for anything weights_only can't load."""
    if len(path) > MAX_DEPTH:
        raise ValueError(f"{_where(path[:3])}... nests containers more than {MAX_DEPTH} deep; flatten it")
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{_where(path)} is a {type(obj).__name__} (a tensor subclass); save a plain tensor")
        return obj
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise TypeError(f"{_where(path)} is a NumPy array of Python objects, which cannot be loaded safely")
        data = torch.from_numpy(np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8).copy())
        return {
            _NDARRAY: 1,
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "data": data,
            "scalar": isinstance(obj, np.generic),
        }
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            raise ValueError(f"{_where(path)} uses the reserved key {_NDARRAY!r}")
        items = [(k, _encode(v, (*path, k))) for k, v in obj.items()]
        for k, _ in items:
            if not isinstance(k, (str, int, float, bool, type(None), tuple)):
                raise TypeError(f"{_where(path)} has a key of type {type(k).__name__}; use str or int keys")
        return collections.OrderedDict(items) if isinstance(obj, collections.OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)):
        out = [_encode(v, (*path, i)) for i, v in enumerate(obj)]
        if isinstance(obj, tuple) and type(obj) is not tuple:  # a NamedTuple would need its class to load
            raise TypeError(f"{_where(path)} is a {type(obj).__name__}; store it as a plain tuple or dict")
        return tuple(out) if isinstance(obj, tuple) else out
    raise TypeError(
        f"{_where(path)} is a {type(obj).__module__}.{type(obj).__qualname__}, which load_checkpoint could "
        f"not read back (it loads with weights_only=True: tensors, numbers, strings, None, lists, tuples, "
        f"dicts and NumPy arrays only)"
    )


def _tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (row-major, whatever its strides or device)."""
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.device.type != "meta":
        t = t.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        flat = t.cpu().contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def _feed_structure(h, obj: Any) -> None:
    """Feed ``h`` everything of ``obj`` but the tensors' contents (which have their own digests)."""
    if isinstance(obj, torch.Tensor):
        h.update(b"P;" if isinstance(obj, torch.nn.Parameter) else b"T;")
    elif isinstance(obj, dict):
        h.update(f"{'O' if isinstance(obj, collections.OrderedDict) else 'D'}{len(obj)};".encode())
        for k, v in obj.items():
            _feed_structure(h, k)
            _feed_structure(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'U' if isinstance(obj, tuple) else 'L'}{len(obj)};".encode())
        for v in obj:
            _feed_structure(h, v)
    else:  # a leaf of _PLAIN: its type and its exact repr (floats round-trip through repr)
        token = (str(obj) if isinstance(obj, torch.device) else repr(obj)).encode("utf-8", "surrogatepass")
        h.update(f"{type(obj).__name__}:{len(token)}:".encode() + token)


def _structure_digest(state: Any) -> str:
    """SHA-256 of ``state``'s keys, container types, plain values and NumPy records' dtype and shape."""
    h = hashlib.sha256(b"bnlab-structure-1;")
    _feed_structure(h, state)
    return h.hexdigest()


def _walk_tensors(obj: Any, path: tuple = ()):
    """Yield ``(path, tensor)`` for every tensor in ``obj``, depth first, in container order."""
    if len(path) > MAX_DEPTH:
        raise CheckpointError(f"{_where(path[:3])}... nests containers more than {MAX_DEPTH} deep")
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_tensors(v, (*path, k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_tensors(v, (*path, i))


def _decode_array(obj: dict, path: tuple) -> Any:
    try:
        dtype = np.dtype(obj["dtype"]) if isinstance(obj["dtype"], str) else None
        data, shape, scalar = obj["data"], obj["shape"], obj["scalar"]
        if (
            dtype is None
            or dtype.hasobject
            or not isinstance(data, torch.Tensor)
            or data.dtype != torch.uint8
            or not isinstance(shape, list)
            or not all(type(n) is int and n >= 0 for n in shape)
            or not isinstance(scalar, bool)
        ):
            raise TypeError("malformed fields")
        raw = data.cpu().numpy().tobytes()
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{_where(path)} is a damaged NumPy array record ({e})") from None
    return arr[()] if scalar else arr


def _decode(obj: Any, path: tuple = ()) -> Any:
    if len(path) > MAX_DEPTH:
        raise CheckpointError(f"{_where(path[:3])}... nests containers more than {MAX_DEPTH} deep")
    if isinstance(obj, dict):
        if _NDARRAY in obj:
            return _decode_array(obj, path)
        items = [(k, _decode(v, (*path, k))) for k, v in obj.items()]
        return collections.OrderedDict(items) if isinstance(obj, collections.OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [_decode(v, (*path, i)) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_decode(v, (*path, i)) for i, v in enumerate(obj))
    return obj


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (a dict) to ``path`` atomically; return the path.

    ``state`` may hold tensors, Python numbers, strings, ``None``, bytes, lists, tuples, dicts (e.g.
    ``model.state_dict()``, ``optimizer.state_dict()``), torch dtypes/devices and NumPy arrays or scalars.
    Anything else raises TypeError naming where it is, *before* the file is touched, since it could not
    be loaded back safely. The parent directory must exist. A symbolic link at ``path`` is replaced, not
    written through; a new file gets the umask's permissions, a replaced regular file keeps its own.
    A failed write raises :class:`bnlab.io.WriteError` (an OSError naming ``path``) and leaves ``path`` as
    it was.
    """
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint expects a dict, got {type(state).__name__}")
    encoded = _encode(state)
    digests = [_tensor_digest(t) for _, t in _walk_tensors(encoded)]
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state": encoded,
        "digests": digests,
        "structure": _structure_digest(encoded),
    }
    target = Path(path)
    with atomic_file(target) as f:
        torch.save(payload, f)
    return target


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, allow_legacy: bool = False) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; return the state dict it holds.

    Raises :class:`CheckpointError` when the file is truncated or corrupt, is not a bnlab checkpoint, or
    holds objects that would run code when unpickled (those are never executed). A version-1 file (bnlab
    0.1, without digests, so damage in it cannot be detected) is refused unless ``allow_legacy=True``; it
    is then read with a warning.
    """
    if not isinstance(allow_legacy, bool):
        raise TypeError(f"allow_legacy must be True or False, got {allow_legacy!r}")
    path = Path(path)
    size = path.stat().st_size  # FileNotFoundError as usual
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the checkpoint is truncated")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(f"{path} is not a bnlab checkpoint (not a PyTorch zip file)")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            bad = z.testzip()  # checks every record's CRC
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, OSError, UnicodeDecodeError (names), ...
        raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes): {e}") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: record {bad!r} fails its CRC check")
    if not any(n.endswith("/data.pkl") for n in names):
        raise CheckpointError(f"{path} is not a bnlab checkpoint (a zip file, but not one written by torch)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's message is mostly advice on weights_only=False; keep the line that names the culprit
        named = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln]
        detail = (named or lines or [type(e).__name__])[0]
        raise CheckpointError(
            f"refusing to load {path}: it holds objects that would run code when unpickled ({detail}); "
            f"bnlab checkpoints hold only tensors, numbers, strings and containers"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{path} is corrupt: it asks for more memory than there is") from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes the unpickler raise
        # RuntimeError, UnicodeDecodeError, NotImplementedError, KeyError, RecursionError, ...
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: {e})") from None
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT and "state" in payload):
        raise CheckpointError(f"{path} is not a bnlab checkpoint (a torch file without the bnlab header)")
    version = payload.get("version")
    if type(version) is not int or version not in _READABLE_VERSIONS + _LEGACY_VERSIONS:
        raise CheckpointError(
            f"{path} is a bnlab checkpoint of format version {version!r}; this bnlab reads versions "
            f"{', '.join(map(str, _READABLE_VERSIONS))} (and {', '.join(map(str, _LEGACY_VERSIONS))} with "
            f"allow_legacy=True)"
        )
    if version in _LEGACY_VERSIONS:
        if not allow_legacy:
            raise CheckpointError(
                f"{path} is a bnlab checkpoint of the legacy format version {version} (bnlab 0.1): it has no "
                f"digests, so a damaged file would load as wrong numbers without an error. If you trust it, "
                f"load it with allow_legacy=True (bnlab train/evaluate: --allow-legacy) and save it again"
            )
        message = (
            f"{path} is a legacy version-{version} checkpoint without digests: damage in it cannot be detected; "
            f"save it again to upgrade it to version {VERSION}"
        )
        warnings.warn(LegacyCheckpointWarning(message, path, version, VERSION), stacklevel=2)
    state = payload["state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is corrupt: its state is a {type(state).__name__}, not a dict")
    if version >= 2:
        _check_digests(path, state, payload.get("digests"))
    if version >= 3 and payload.get("structure") != _structure_digest(state):
        raise CheckpointError(
            f"{path} is corrupt: its keys, numbers, strings or array shapes do not match their SHA-256 digest "
            f"(the file was damaged after it was written)"
        )
    return _decode(state)


def _check_digests(path: Path, state: dict, digests: Any) -> None:
    tensors = list(_walk_tensors(state))
    if not (isinstance(digests, list) and all(isinstance(d, str) for d in digests)):
        raise CheckpointError(f"{path} is corrupt: its list of tensor digests is missing or damaged")
    if len(digests) != len(tensors):
        raise CheckpointError(f"{path} is corrupt: it holds {len(tensors)} tensors but {len(digests)} digests")
    for (where, t), digest in zip(tensors, digests, strict=True):
        if _tensor_digest(t) != digest:
            raise CheckpointError(
                f"{path} is corrupt: the dtype, shape or bytes of {_where(where)} do not match their SHA-256 digest "
                f"(the file was damaged after it was written)"
            )
