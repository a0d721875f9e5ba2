"""Datasets as plain tensors: scikit-learn's digits (bundled), MNIST (IDX or .npz; a 10,000-image subset ships
with bnlab, see :data:`MNIST10K`), CIFAR-10 (python batches).

Every loader returns a :class:`Dataset` with train / validation / test splits:

* images ``x_*``: ``torch.float32``, shape (N, C, H, W), pixel values **scaled to [0, 1]** (uint8 / 255;
  digits / 16). Nothing is standardized by default, so that the networks without batch normalization see
  the same inputs as the ones with it; :meth:`Dataset.standardized` gives a copy with per-channel mean 0 and
  standard deviation 1, measured on the training split.
* labels ``y_*``: ``torch.int64``, values in ``range(num_classes)``.

Splits are deterministic functions of ``seed`` and stratified by class (:func:`split_indices`). Where the
source has an official test set (MNIST ``t10k`` files, CIFAR-10 ``test_batch``) it is the test split and
only the validation split is carved out of the training data.

Every file is checked before use (magic numbers, dimensions, counts, label range, dtype) and a wrong or
truncated file raises ``ValueError`` (or ``FileNotFoundError``) naming the file, what was expected and
what was found. CIFAR-10 pickles are read with an unpickler that only reconstructs NumPy arrays.

>>> ds = load_digits(seed=0)
>>> ds
Dataset('digits', train=1258, val=180, test=359, image_shape=(1, 8, 8), num_classes=10)
>>> ds.x_train.dtype, ds.y_train.dtype, float(ds.x_train.min()), float(ds.x_train.max())
(torch.float32, torch.int64, 0.0, 1.0)
"""

from __future__ import annotations

import gzip
import math
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import choices as _choices

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "MNIST10K",
    "load_cifar10",
    "read_idx",
    "split_indices",
    "UnsafePickleError",
]

#: Names accepted by :func:`load_dataset` (defined in :mod:`bnlab.choices`, which the CLI parser reads too).
DATASETS = _choices.DATASETS

_DEFAULT_VAL, _DEFAULT_TEST = 0.1, 0.2

#: 10,000 real MNIST digits shipped inside the package (MIT; attribution in ``bnlab/datasets/README.md``).
#: ``load_mnist()`` and ``load_dataset("mnist")`` read it when no path is given.
MNIST10K = Path(__file__).resolve().parent / "datasets" / "mnist10k.npz"


@dataclass(frozen=True, repr=False)
class Dataset:
    """Train / validation / test splits as tensors (images float32 NCHW in [0, 1], labels int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)

    def __post_init__(self):
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or tuple(x.shape[1:]) != tuple(self.image_shape):
                raise ValueError(
                    f"x_{split} must be float32 of shape (N, *{self.image_shape}), got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"y_{split} must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, image_shape={self.image_shape}, num_classes={self.num_classes})"
        )

    def standardized(self) -> Dataset:
        """A copy with every split shifted and scaled by the training split's per-channel mean and std."""
        mean = self.x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = self.x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        return replace(
            self,
            x_train=(self.x_train - mean) / std,
            x_val=(self.x_val - mean) / std,
            x_test=(self.x_test - mean) / std,
        )


# ------------------------------------------------------------------------------------------- splits


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def split_indices(
    labels: Sequence[int] | np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic, class-stratified (train, val, test) index arrays, each sorted.

    The split sizes are ``round(fraction · N)``. Stratification: the examples are shuffled with ``seed``,
    each is given its relative position within its class, and the splits are taken in that order, so each
    class contributes to every split in proportion to its size (to within one example).
    """
    labels = np.asarray(labels)
    n = len(labels)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    if n - n_val - n_test < 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training examples "
            f"out of {n}; use smaller fractions"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    shuffled = labels[order]
    position = np.empty(n)
    for c in np.unique(shuffled):
        members = np.flatnonzero(shuffled == c)
        position[members] = (np.arange(len(members)) + rng.random()) / len(members)
    interleaved = order[np.argsort(position, kind="stable")]
    test = np.sort(interleaved[:n_test])
    val = np.sort(interleaved[n_test : n_test + n_val])
    train = np.sort(interleaved[n_test + n_val :])
    return train, val, test


def _to_images(x: np.ndarray, scale: float) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / np.float32(scale))


def _to_labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def _build(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    scale: float,
    num_classes: int,
    seed: int,
    val_fraction: float,
    test_fraction: float | None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> Dataset:
    """Split (images, labels) and package them; ``test`` is an official test set, if the source has one."""
    if images.ndim < 2 or any(n < 1 for n in images.shape[1:]):
        raise ValueError(f"{name}: images of shape {tuple(images.shape[1:])} have no pixels; expected e.g. (1, 28, 28)")
    if test is not None:
        if test_fraction is not None:
            raise ValueError(
                f"{name}: this source has its own test set, so test_fraction must be left at None "
                f"(got {test_fraction}); only val_fraction is carved out of the training data"
            )
        train_idx, val_idx, _ = split_indices(labels, val_fraction, 0.0, seed)
        x_test, y_test = test
    else:
        tf = _DEFAULT_TEST if test_fraction is None else test_fraction
        train_idx, val_idx, test_idx = split_indices(labels, val_fraction, tf, seed)
        x_test, y_test = images[test_idx], labels[test_idx]
    return Dataset(
        name=name,
        x_train=_to_images(images[train_idx], scale),
        y_train=_to_labels(labels[train_idx]),
        x_val=_to_images(images[val_idx], scale),
        y_val=_to_labels(labels[val_idx]),
        x_test=_to_images(x_test, scale),
        y_test=_to_labels(y_test),
        num_classes=num_classes,
        image_shape=tuple(int(n) for n in images.shape[1:]),
    )


def _check_labels(where: str, labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: labels must be a 1-D array of integers, got {labels.dtype} of shape {labels.shape}")
    if len(labels) != count:
        raise ValueError(f"{where}: {count} images but {len(labels)} labels; the counts must match")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"{where}: labels must be in 0..{num_classes - 1}, found {int(bad[0])} ({len(bad)} label(s) out of range)"
        )
    return labels.astype(np.int64)


# ------------------------------------------------------------------------------------------- digits


def load_digits(seed: int = 0, val_fraction: float = _DEFAULT_VAL, test_fraction: float = _DEFAULT_TEST) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    return _build("digits", images, labels, 16.0, 10, seed, val_fraction, test_fraction)


# -------------------------------------------------------------------------------------------- MNIST

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
    labels = _check_labels(f"{images_path} / {labels_path}", labels, images.shape[0], 10)
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
    return images, _check_labels(str(path), labels, images.shape[0], 10)


def load_mnist(
    path: str | Path | Sequence[str | Path] = MNIST10K,
    seed: int = 0,
    val_fraction: float = _DEFAULT_VAL,
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
    return _build("mnist", images, labels, 255.0, 10, seed, val_fraction, test_fraction, test)


# ----------------------------------------------------------------------------------------- CIFAR-10


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than NumPy array reconstruction; nothing was run."""


def _latin1_encode(text, encoding="latin1"):
    # Python 3 pickles of protocol < 3 store bytes as _codecs.encode(str, "latin1"); allow only that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _safe_globals() -> dict[tuple[str, str], object]:
    # The functions NumPy itself pickles arrays with, taken from NumPy (no private imports by name).
    reconstruct = np.empty(0).__reduce__()[0]
    frombuffer = np.empty(1).__reduce_ex__(5)[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"] = reconstruct
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[module, "_frombuffer"] = frombuffer
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and NumPy arrays; refuses every other global."""

    def __init__(self, file, source: Path):
        super().__init__(file, encoding="bytes")  # CIFAR-10's batches were pickled by Python 2
        self._source = source
        self._allowed = _safe_globals()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load {module}.{name}; a CIFAR-10 batch holds only dicts, "
                f"lists, bytes and NumPy arrays, so this file is not one (and may be unsafe to unpickle)"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refusing a persistent id in the pickle")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
        raise ValueError(
            f"{path}: cannot unpickle a CIFAR-10 batch ({type(err).__name__}: {err}); the file is probably "
            f"truncated or not a CIFAR-10 python batch"
        ) from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise ValueError(
            f"{path}: a CIFAR-10 batch has keys 'data' and 'labels', missing {missing}, found {sorted(map(str, batch))}"
        )
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072) = 3×32×32 per row, got {got}")
    labels = batch["labels"]
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'labels' must be a list of integers") from None
    labels = _check_labels(str(path), labels, data.shape[0], 10)
    # each row: 1024 red, then 1024 green, then 1024 blue values, each plane row-major: that is C, H, W
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(
    path: str | Path,
    seed: int = 0,
    val_fraction: float = _DEFAULT_VAL,
    test_fraction: float | None = None,
) -> Dataset:
    """CIFAR-10 from the python batches: a directory with ``data_batch_1`` … ``data_batch_5`` and
    ``test_batch`` (``path`` may also be the folder that contains ``cifar-10-batches-py``).

    ``test_batch`` is the test split; ``val_fraction`` of the training batches is held out for validation.
    """
    directory = Path(path)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory (expected the CIFAR-10 python batches folder)")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}: missing CIFAR-10 batch file(s) {', '.join(missing)}; expected data_batch_1 … "
            f"data_batch_5 and test_batch (the 'CIFAR-10 python version' archive, extracted)"
        )
    parts = [_load_cifar_batch(directory / name) for name in names[:5]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    test = _load_cifar_batch(directory / "test_batch")
    return _build("cifar10", images, labels, 255.0, 10, seed, val_fraction, test_fraction, test)


# --------------------------------------------------------------------------------------- dispatcher


def load_dataset(name: str, path: str | Path | None = None, seed: int = 0, **kwargs) -> Dataset:
    """Load ``"digits"`` (bundled, no path), ``"mnist"`` (from ``path``; without one, the shipped 10,000-image
    subset :data:`MNIST10K`) or ``"cifar10"`` (from ``path``).

    Extra keyword arguments (``val_fraction``, ``test_fraction``) go to the loader.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
    if key == "digits":
        if path is not None:
            raise ValueError("the digits dataset ships with scikit-learn; leave path=None")
        return load_digits(seed=seed, **kwargs)
    if path is None and key == "mnist":
        path = MNIST10K
    if path is None:
        raise ValueError(f"{key} is read from disk: pass path=... (the cifar-10-batches-py directory)")
    loader = load_mnist if key == "mnist" else load_cifar10
    return loader(path, seed=seed, **kwargs)
