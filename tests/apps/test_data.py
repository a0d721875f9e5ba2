"""bnlab.data: loaders read files the tests write themselves (IDX raw and gzipped, .npz, pickled
CIFAR-10 batches), splits are deterministic and stratified, and bad files fail by name."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from bnlab.data import (
    DATASETS,
    Dataset,
    UnsafePickleError,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
    split_indices,
)

# ------------------------------------------------------------------------------------------ helpers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file written from the format description (uint8 data), independent of bnlab.data."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = (0x08 << 8 | arr.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write(path, payload: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_mnist(n: int, seed: int, size: int = 28):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def write_mnist_dir(directory, n_train=60, n_test=20, gz=False, with_test=True):
    directory.mkdir(exist_ok=True)
    ext = ".gz" if gz else ""
    tr = fake_mnist(n_train, 1)
    write(directory / f"train-images-idx3-ubyte{ext}", idx_bytes(tr[0]), gz)
    write(directory / f"train-labels-idx1-ubyte{ext}", idx_bytes(tr[1]), gz)
    te = fake_mnist(n_test, 2)
    if with_test:
        write(directory / f"t10k-images-idx3-ubyte{ext}", idx_bytes(te[0]), gz)
        write(directory / f"t10k-labels-idx1-ubyte{ext}", idx_bytes(te[1]), gz)
    return tr, te


def sorted_rows(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    return flat[np.lexsort(flat.T[::-1])]


def all_splits(ds: Dataset):
    x = torch.cat([ds.x_train, ds.x_val, ds.x_test]).numpy()
    y = torch.cat([ds.y_train, ds.y_val, ds.y_test]).numpy()
    return x, y


# ------------------------------------------------------------------------------------------- splits


def test_split_indices_partition_and_sizes():
    labels = np.repeat(np.arange(5), [40, 30, 20, 7, 3])
    train, val, test = split_indices(labels, 0.1, 0.25, seed=3)
    assert len(val) == 10 and len(test) == 25 and len(train) == 65
    together = np.concatenate([train, val, test])
    assert np.array_equal(np.sort(together), np.arange(100))  # disjoint and complete
    for part in (train, val, test):
        assert np.all(np.diff(part) > 0)


def test_split_indices_is_stratified():
    labels = np.repeat(np.arange(4), [500, 300, 150, 50])
    train, val, test = split_indices(labels, 0.1, 0.2, seed=7)
    for part, frac in ((val, 0.1), (test, 0.2)):
        counts = np.bincount(labels[part], minlength=4)
        expected = frac * np.array([500, 300, 150, 50])
        assert np.all(np.abs(counts - expected) <= 1.5), (counts, expected)


def test_split_indices_deterministic_from_seed():
    labels = np.arange(200) % 7
    a = split_indices(labels, 0.1, 0.2, seed=0)
    b = split_indices(labels, 0.1, 0.2, seed=0)
    c = split_indices(labels, 0.1, 0.2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("val, test", [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5), (0.6, 0.4)])
def test_split_fractions_checked(val, test):
    with pytest.raises(ValueError, match="fraction"):
        split_indices(np.arange(10) % 2, val, test)


# ------------------------------------------------------------------------------------------- digits


def test_digits_types_ranges_and_completeness():
    from sklearn.datasets import load_digits as sk

    ds = load_digits(seed=0)
    assert ds.name == "digits" and ds.num_classes == 10 and ds.image_shape == (1, 8, 8)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.ndim == 4 and tuple(x.shape[1:]) == (1, 8, 8) and len(x) == len(y) > 0
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1258, 180, 359)
    # the splits together are exactly scikit-learn's data, scaled by 1/16
    bunch = sk()
    x, y = all_splits(ds)
    ref = np.concatenate([bunch.images.reshape(len(bunch.images), -1) / 16.0, bunch.target[:, None]], axis=1)
    got = np.concatenate([x.reshape(len(x), -1), y[:, None]], axis=1)
    np.testing.assert_allclose(sorted_rows(got), sorted_rows(ref), atol=1e-7)


def test_digits_seed_changes_the_split_only():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    assert len(a.y_test) == len(c.y_test)
    ya, yc = all_splits(a)[1], all_splits(c)[1]
    assert np.array_equal(np.sort(ya), np.sort(yc))  # same data, split differently


def test_standardized_uses_training_statistics():
    ds = load_digits(seed=0)
    s = ds.standardized()
    assert float(s.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(s.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    mean, std = ds.x_train.mean(), ds.x_train.std()
    torch.testing.assert_close(s.x_test, (ds.x_test - mean) / std)
    assert torch.equal(s.y_train, ds.y_train)


def test_dataset_checks_its_tensors():
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    kw = dict(x_val=x, y_val=y, x_test=x, y_test=y, num_classes=10, image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="y_train must be int64"):
        Dataset("t", x, y.to(torch.int32), **kw)
    with pytest.raises(ValueError, match="x_train must be float32"):
        Dataset("t", x.double(), y, **kw)


# -------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / ("a.idx" + (".gz" if gz else "")), idx_bytes(arr), gz)
    got = read_idx(path, expected_magic=2051)
    assert got.dtype == np.uint8 and np.array_equal(got, arr)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_directory_with_official_test_set(tmp_path, gz):
    (tr_x, tr_y), (te_x, te_y) = write_mnist_dir(tmp_path / "m", gz=gz)
    ds = load_mnist(tmp_path / "m", seed=0, val_fraction=0.2)
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (48, 12, 20)
    # the test split is the t10k files, in order, scaled by 1/255
    np.testing.assert_allclose(ds.x_test.numpy()[:, 0], te_x / 255.0, rtol=1e-6)
    assert np.array_equal(ds.y_test.numpy(), te_y)
    x = torch.cat([ds.x_train, ds.x_val]).numpy()
    np.testing.assert_allclose(sorted_rows(x * 255.0), sorted_rows(tr_x.astype(np.float64)), atol=1e-3)


def test_mnist_directory_without_test_set_holds_out_a_fraction(tmp_path):
    write_mnist_dir(tmp_path, n_train=100, with_test=False)
    ds = load_mnist(tmp_path, val_fraction=0.1, test_fraction=0.3)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (60, 10, 30)


def test_mnist_official_test_set_and_test_fraction_conflict(tmp_path):
    write_mnist_dir(tmp_path)
    with pytest.raises(ValueError, match="own test set"):
        load_mnist(tmp_path, test_fraction=0.2)


def test_mnist_alternative_file_names(tmp_path):
    x, y = fake_mnist(30, 0)
    write(tmp_path / "train-images.idx3-ubyte", idx_bytes(x))
    write(tmp_path / "train-labels.idx1-ubyte.gz", idx_bytes(y), gz=True)
    assert len(load_mnist(tmp_path).y_train) + len(load_mnist(tmp_path).y_val) == 30 - 6


def test_mnist_explicit_paths(tmp_path):
    x, y = fake_mnist(40, 0)
    xi = write(tmp_path / "imgs.bin", idx_bytes(x))
    yi = write(tmp_path / "labs.bin.gz", idx_bytes(y), gz=True)
    ds = load_mnist((xi, yi), val_fraction=0.25, test_fraction=0.25)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (20, 10, 10)
    ds4 = load_mnist([xi, yi, xi, yi], val_fraction=0.25)
    assert len(ds4.y_test) == 40 and np.array_equal(ds4.y_test.numpy(), y)


def test_mnist_npz(tmp_path):
    x, y = fake_mnist(50, 4)
    np.savez(tmp_path / "m.npz", images=x, labels=y)
    ds = load_mnist(tmp_path / "m.npz", seed=2)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (35, 5, 10)
    xs, ys = all_splits(ds)
    assert sorted(ys.tolist()) == sorted(y.tolist())
    np.testing.assert_allclose(sorted_rows(np.round(xs * 255)), sorted_rows(x.astype(np.float64)))


def test_mnist_wrong_magic_names_both_numbers(tmp_path):
    x, y = fake_mnist(10, 0)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(y))  # a label file under the image name
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(y))
    with pytest.raises(ValueError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "2051" in msg and "2049" in msg


def test_idx_garbage_magic(tmp_path):
    path = write(tmp_path / "x", b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match="expected 2051"):
        read_idx(path, expected_magic=2051)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("cut", [3, 10, 100])
def test_truncated_raw_idx(tmp_path, cut):
    x, _ = fake_mnist(5, 0)
    data = idx_bytes(x)
    path = write(tmp_path / "train-images-idx3-ubyte", data[: len(data) - cut] if cut < 100 else data[:10])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path, expected_magic=2051)
    assert str(path) in str(info.value)


def test_truncated_gzip_idx(tmp_path):
    x, _ = fake_mnist(5, 0)
    blob = gzip.compress(idx_bytes(x))
    path = write(tmp_path / "train-images-idx3-ubyte.gz", blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="gzip") as info:
        read_idx(path, expected_magic=2051)
    assert "train-images-idx3-ubyte.gz" in str(info.value)


def test_idx_with_trailing_bytes(tmp_path):
    x, _ = fake_mnist(3, 0)
    path = write(tmp_path / "f", idx_bytes(x) + b"\x00\x00")
    with pytest.raises(ValueError, match="2 bytes too many"):
        read_idx(path, expected_magic=2051)


def test_mnist_count_mismatch(tmp_path):
    x, y = fake_mnist(10, 0)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(x))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(y[:9]))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        load_mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path):
    x, y = fake_mnist(10, 0)
    y[4] = 12
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(x))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(y))
    with pytest.raises(ValueError, match=r"0\.\.9, found 12"):
        load_mnist(tmp_path)


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_mnist(tmp_path / "nope.npz")
    write_mnist_dir(tmp_path, with_test=False)
    x, _ = fake_mnist(5, 0)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(x))
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "arrays, words",
    [
        (dict(x=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.uint8)), ["'images'", "missing"]),
        (dict(images=np.zeros((3, 28, 28), np.float32), labels=np.zeros(3, np.uint8)), ["uint8", "float32"]),
        (dict(images=np.zeros((3, 784), np.uint8), labels=np.zeros(3, np.uint8)), ["(3, 784)"]),
        (dict(images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(4, np.uint8)), ["3 images but 4 labels"]),
        (dict(images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.float64)), ["integers"]),
    ],
)
def test_mnist_bad_npz(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError) as info:
        load_mnist(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_mnist_truncated_npz(tmp_path):
    x, y = fake_mnist(20, 0)
    np.savez_compressed(tmp_path / "m.npz", images=x, labels=y)
    blob = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "m.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="m.npz"):
        load_mnist(tmp_path / "m.npz")


# ----------------------------------------------------------------------------------------- CIFAR-10


def fake_cifar_batch(n: int, seed: int):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    return data, labels


def write_cifar_dir(directory, n=8, protocol=2, bytes_keys=True, skip=()):
    """Batches shaped like the real ones: {b'batch_label', b'labels', b'data', b'filenames'}."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        if name in skip:
            continue
        data, labels = fake_cifar_batch(n, i)
        keys = ("batch_label", "labels", "data", "filenames")
        if bytes_keys:
            keys = tuple(k.encode() for k in keys)
        batch = dict(zip(keys, (name.encode(), labels, data, [b"img.png"] * n), strict=True))
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        written[name] = (data, labels)
    return written


@pytest.mark.parametrize("protocol, bytes_keys", [(2, True), (4, False), (5, True)])
def test_cifar10_reads_batches(tmp_path, protocol, bytes_keys):
    written = write_cifar_dir(tmp_path / "cifar-10-batches-py", protocol=protocol, bytes_keys=bytes_keys)
    ds = load_cifar10(tmp_path, val_fraction=0.25)  # the parent folder works too
    assert ds.name == "cifar10" and ds.image_shape == (3, 32, 32) and ds.num_classes == 10
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (30, 10, 8)
    data, labels = written["test_batch"]
    assert ds.y_test.tolist() == labels
    # a row is 1024 red, 1024 green, 1024 blue values, each a 32×32 plane stored row by row
    img = ds.x_test[3].numpy()
    assert img[0, 0, 5] == pytest.approx(data[3, 5] / 255)
    assert img[1, 2, 0] == pytest.approx(data[3, 1024 + 64] / 255)
    assert img[2, 31, 31] == pytest.approx(data[3, 3071] / 255)
    train = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)]).astype(np.float64)
    x = torch.cat([ds.x_train, ds.x_val]).numpy().reshape(40, -1)
    np.testing.assert_allclose(sorted_rows(np.round(x * 255)), sorted_rows(train))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    directory = tmp_path / "c"
    write_cifar_dir(directory)
    marker = tmp_path / "pwned"
    data, labels = fake_cifar_batch(8, 0)
    with open(directory / "data_batch_3", "wb") as f:
        pickle.dump({b"data": data, b"labels": labels, b"x": _Evil(marker)}, f, protocol=2)
    with pytest.raises(UnsafePickleError) as info:
        load_cifar10(directory)
    assert "data_batch_3" in str(info.value) and "refusing" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()


def test_cifar10_truncated_batch(tmp_path):
    write_cifar_dir(tmp_path)
    blob = (tmp_path / "data_batch_2").read_bytes()
    (tmp_path / "data_batch_2").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ValueError, match="data_batch_2.*truncated"):
        load_cifar10(tmp_path)


def test_cifar10_missing_batch(tmp_path):
    write_cifar_dir(tmp_path, skip=("data_batch_4", "test_batch"))
    with pytest.raises(FileNotFoundError, match="data_batch_4, test_batch"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_cifar10(tmp_path / "missing")


@pytest.mark.parametrize(
    "batch, words",
    [
        ({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, ["(N, 3072)", "(4, 3000)"]),
        ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, ["uint8", "float32"]),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}, ["4 images but 3 labels"]),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, ["0..9, found 10"]),
        ({b"labels": [0]}, ["missing ['data']"]),
        ([1, 2, 3], ["dict"]),
    ],
)
def test_cifar10_bad_batch_contents(tmp_path, batch, words):
    write_cifar_dir(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(ValueError) as info:
        load_cifar10(tmp_path)
    assert "test_batch" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_cifar10_test_fraction_conflict(tmp_path):
    write_cifar_dir(tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        load_cifar10(tmp_path, test_fraction=0.1)


# --------------------------------------------------------------------------------------- dispatcher


def test_load_dataset_dispatches(tmp_path):
    assert DATASETS == ("digits", "mnist", "cifar10")
    assert torch.equal(load_dataset("digits", seed=3).y_val, load_digits(seed=3).y_val)
    x, y = fake_mnist(30, 0)
    np.savez(tmp_path / "m.npz", images=x, labels=y)
    assert load_dataset("MNIST", tmp_path / "m.npz", test_fraction=0.5).name == "mnist"
    write_cifar_dir(tmp_path / "c")
    assert load_dataset("cifar-10", tmp_path / "c", val_fraction=0.5).name == "cifar10"


@pytest.mark.parametrize(
    "name, path, words",
    [
        ("imagenet", None, ["imagenet", "digits, mnist, cifar10"]),
        ("cifar10", None, ["path="]),
        ("digits", "/tmp", ["path=None"]),
    ],
)
def test_load_dataset_errors(name, path, words):
    with pytest.raises(ValueError) as info:
        load_dataset(name, path)
    for word in words:
        assert word in str(info.value)


def test_the_shipped_mnist_subset_loads_by_default():
    from bnlab.data import MNIST10K, load_dataset, load_mnist

    assert MNIST10K.is_file()
    ds = load_mnist()
    assert ds.num_classes == 10 and ds.image_shape == (1, 28, 28)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 10_000
    same = load_dataset("mnist")
    assert torch.equal(ds.x_train, same.x_train) and torch.equal(ds.y_test, same.y_test)
