"""CIFAR-10: the python batches, read by an unpickler that only rebuilds NumPy arrays."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import DEFAULT_VAL, Dataset, build_dataset, check_labels

__all__ = ["load_cifar10", "UnsafePickleError"]


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
    labels = check_labels(str(path), labels, data.shape[0], 10)
    # each row: 1024 red, then 1024 green, then 1024 blue values, each plane row-major: that is C, H, W
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(
    path: str | Path,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL,
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
    return build_dataset("cifar10", images, labels, 255.0, 10, seed, val_fraction, test_fraction, test)
