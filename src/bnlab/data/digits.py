"""scikit-learn's 8×8 digits (bundled with scikit-learn: no file to read)."""

from __future__ import annotations

import numpy as np

from .base import DEFAULT_TEST, DEFAULT_VAL, Dataset, build_dataset

__all__ = ["load_digits"]


def load_digits(seed: int = 0, val_fraction: float = DEFAULT_VAL, test_fraction: float = DEFAULT_TEST) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    return build_dataset("digits", images, labels, 16.0, 10, seed, val_fraction, test_fraction)
