"""MNIST: IDX files (raw or gzipped) or an ``.npz``; a 10,000-image subset ships with bnlab (:data:`MNIST10K`)."""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import DEFAULT_VAL, Dataset, build_dataset, check_labels

__all__ = ["load_mnist", "read_idx", "MNIST10K"]

#: 10,000 real MNIST digits shipped inside the package (MIT; attribution in ``bnlab/datasets/README.md``).
#: ``load_mnist()`` and ``load_dataset("mnist")`` read it when no path is given.
MNIST10K = Path(__file__).resolve().parent.parent / "datasets" / "mnist10k.npz"

# IDX type code (third byte of the magic number) -> big-endian dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_LABELS, _IDX_IMAGES = 2049, 2051  # unsigned bytes, 1 dimension / unsigned bytes, 3 dimensions
_MAGIC_MEANING = {
    _IDX_LABELS: "an IDX label file: unsigned bytes, 1 dimension",
    _IDX_IMAGES: "an IDX image file: unsigned bytes, 3 dimensions",
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path}: cannot decompress the gzip data ({err}); the file is probably truncated or "
                f"corrupt, download it again"
            ) from None
    return raw


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not, checking its header against its size.

    ``expected_magic``: 2051 for MNIST images, 2049 for labels; anything else is refused by name.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an IDX file (a 4-byte magic number first)")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        found = _MAGIC_MEANING.get(magic, "not a magic number of MNIST's IDX files")
        raise ValueError(
            f"{path}: magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"({_MAGIC_MEANING.get(expected_magic, 'IDX')}); found {found}. Is this the right file?"
        )
    type_code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path}: not an IDX file (magic number 0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, its {ndim}-dimension header alone needs {header}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[type_code])
    count = math.prod(dims)
    expected, found = count * dtype.itemsize, len(raw) - header
    if found != expected:
        what = "is truncated" if found < expected else f"has {found - expected:,} bytes too many"
        raise ValueError(
            f"{path} {what}: its header describes {'×'.join(map(str, dims))} values of {dtype.itemsize} "
            f"byte(s) = {expected:,} bytes of data, found {found:,}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find(directory: Path, split: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    for stem in (f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def _read_mnist_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, _IDX_IMAGES)
    labels = read_idx(labels_path, _IDX_LABELS)
    if images.shape[0] == 0:
        raise ValueError(f"{images_path}: holds no images")
    labels = check_labels(f"{images_path} / {labels_path}", labels, images.shape[0], 10)
    return images, labels


def _read_mnist_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: expected arrays 'images' (N, 28, 28) uint8 and 'labels' (N,), "
            f"missing {missing}, found {sorted(arrays)}"
        )
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise ValueError(
            f"{path}: 'images' must be uint8 of shape (N, H, W) such as (N, 28, 28) with N > 0, "
            f"got {images.dtype} of shape {images.shape}"
        )
    return images, check_labels(str(path), labels, images.shape[0], 10)


def load_mnist(
    path: str | Path | Sequence[str | Path] = MNIST10K,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL,
    test_fraction: float | None = None,
) -> Dataset:
    """MNIST (or any 10-class set in its format) from IDX files or an ``.npz``.

    ``path`` is one of:

    * a directory holding ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (optionally
      ``.gz``; the ``train-images.idx3-ubyte`` spelling works too) and, if present, the ``t10k-*`` pair,
      which then becomes the test split;
    * an ``.npz`` file with arrays ``images`` (N, 28, 28) uint8 and ``labels`` (N,);
    * explicit IDX paths: ``(images, labels)`` or ``(train_images, train_labels, test_images, test_labels)``.

    Without an official test set, ``test_fraction`` (default 0.2) of the data is held out as the test split.
    The default ``path`` is the 10,000-image subset shipped with bnlab (:data:`MNIST10K`).
    """
    test = None
    if isinstance(path, (str, Path)):
        path = Path(path)
        if path.is_dir():
            found = {(s, k): _find(path, s, k) for s in ("train", "t10k") for k in ("images", "labels")}
            if found["train", "images"] is None or found["train", "labels"] is None:
                present = sorted(p.name for p in path.iterdir())[:10]
                raise FileNotFoundError(
                    f"{path}: expected MNIST IDX files train-images-idx3-ubyte[.gz] and "
                    f"train-labels-idx1-ubyte[.gz] (plus t10k-* for the test set), found {present or 'nothing'}"
                )
            images, labels = _read_mnist_pair(found["train", "images"], found["train", "labels"])
            if (found["t10k", "images"] is None) != (found["t10k", "labels"] is None):
                which = "t10k-images" if found["t10k", "images"] is None else "t10k-labels"
                raise FileNotFoundError(f"{path}: the test set is incomplete, {which}-idx?-ubyte[.gz] is missing")
            if found["t10k", "images"] is not None:
                test = _read_mnist_pair(found["t10k", "images"], found["t10k", "labels"])
        elif path.suffix == ".npz":
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
            images, labels = _read_mnist_npz(path)
        elif not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory (expected an MNIST directory or .npz)")
        else:
            raise ValueError(
                f"{path}: give a directory of IDX files, an .npz file, or an (images, labels) pair of IDX paths"
            )
    else:
        paths = [Path(p) for p in path]
        if len(paths) not in (2, 4):
            raise ValueError(
                f"expected 2 IDX paths (images, labels) or 4 (train images, train labels, test images, "
                f"test labels), got {len(paths)}"
            )
        images, labels = _read_mnist_pair(paths[0], paths[1])
        if len(paths) == 4:
            test = _read_mnist_pair(paths[2], paths[3])
    if test is not None and test[0].shape[1:] != images.shape[1:]:
        raise ValueError(f"MNIST test images are {test[0].shape[1:]} but training images are {images.shape[1:]}")
    images = images[:, None]  # (N, 1, H, W)
    if test is not None:
        test = (test[0][:, None], test[1])
    return build_dataset("mnist", images, labels, 255.0, 10, seed, val_fraction, test_fraction, test)
