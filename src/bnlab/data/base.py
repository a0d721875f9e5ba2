"""What every loader shares: the :class:`Dataset` type, stratified splits (:func:`split_indices`) and the
helpers that turn checked arrays into one (:func:`build_dataset`, :func:`check_labels`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = ["Dataset", "split_indices", "build_dataset", "check_labels", "DEFAULT_VAL", "DEFAULT_TEST"]

DEFAULT_VAL, DEFAULT_TEST = 0.1, 0.2


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


def build_dataset(
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
        tf = DEFAULT_TEST if test_fraction is None else test_fraction
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


def check_labels(where: str, labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
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
