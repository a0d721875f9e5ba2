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

The package: one module per dataset (:mod:`~bnlab.data.digits`, :mod:`~bnlab.data.mnist`,
:mod:`~bnlab.data.cifar10`) and :mod:`~bnlab.data.base` (the :class:`Dataset` type and the shared helpers).
"""

from __future__ import annotations

from pathlib import Path

from .. import choices as _choices
from .base import Dataset, split_indices
from .cifar10 import UnsafePickleError, load_cifar10
from .digits import load_digits
from .mnist import MNIST10K, load_mnist, read_idx

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
