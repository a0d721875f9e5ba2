"""Checkpoints: atomic writes (real killed writer processes), safe loading, clear errors."""

from __future__ import annotations

import collections
import io
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest
import torch

from bnlab.inference import CheckpointError, checkpoint, load_checkpoint, save_checkpoint


def _training_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 3,
        "step": 120,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global state, as training saves it)
            "numpy_generator": np.random.default_rng(5).bit_generator.state,
            "python": random.getstate(),
        },
        "history": {"loss": [2.3, 1.1, 0.7], "accuracy": [0.1, 0.5, 0.8]},
        "config": {"lr": 1e-3, "name": "mlp", "sizes": (4, 3), "note": None},
    }


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def test_round_trip_of_a_training_state(tmp_path):
    state = _training_state()
    path = save_checkpoint(tmp_path / "ckpt.pt", state)
    assert path == tmp_path / "ckpt.pt"
    back = load_checkpoint(path)
    _assert_same(state, back)
    # the restored RNG states reproduce the same draws
    torch.set_rng_state(back["rng"]["torch"])
    np.random.set_state(back["rng"]["numpy"])  # noqa: NPY002
    random.setstate(back["rng"]["python"])
    gen = np.random.default_rng()
    gen.bit_generator.state = back["rng"]["numpy_generator"]
    draws = (torch.rand(3), np.random.rand(3), random.random(), gen.random(3))  # noqa: NPY002
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])  # noqa: NPY002
    random.setstate(state["rng"]["python"])
    gen.bit_generator.state = state["rng"]["numpy_generator"]
    again = (torch.rand(3), np.random.rand(3), random.random(), gen.random(3))  # noqa: NPY002
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2] == again[2] and np.array_equal(draws[3], again[3])
    # the model and optimizer states load into fresh objects
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model.load_state_dict(back["model"])
    torch.optim.Adam(model.parameters()).load_state_dict(back["optimizer"])


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6, dtype=np.uint32).reshape(2, 3),
        np.array([[1.5, -2.0]], dtype=np.float16),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([True, False]),
        np.zeros((0, 4), dtype=np.int8),
        np.arange(4, dtype=">i4"),
        np.float64(0.25),
        np.int64(-7),
        np.bool_(True),
    ],
)
def test_numpy_values_round_trip_exactly(tmp_path, value):
    back = load_checkpoint(save_checkpoint(tmp_path / "a.pt", {"v": value, "l": [value]}))
    for got in (back["v"], back["l"][0]):
        assert type(got) is type(value)
        assert np.asarray(got).dtype == np.asarray(value).dtype
        assert np.array_equal(got, value)


def test_map_location_and_parameters(tmp_path):
    p = torch.nn.Parameter(torch.ones(2))
    back = load_checkpoint(save_checkpoint(tmp_path / "a.pt", {"p": p}), map_location=torch.device("cpu"))
    assert isinstance(back["p"], torch.nn.Parameter) and torch.equal(back["p"], p)


class _Opaque:
    pass


@pytest.mark.parametrize(
    "state, where",
    [
        ({"obj": _Opaque()}, "state['obj']"),
        ({"a": [1, {"b": _Opaque()}]}, "state['a'][1]['b']"),
        ({"arr": np.array([object()])}, "state['arr']"),
        ({"nt": torch.return_types.max((torch.ones(1), torch.zeros(1)))}, "state['nt']"),
        ({"f": lambda: 0}, "state['f']"),
    ],
)
def test_unloadable_values_are_refused_before_touching_the_file(tmp_path, state, where):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=where.replace("[", r"\[").replace("]", r"\]")):
        save_checkpoint(path, state)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="expects a dict"):
        save_checkpoint(tmp_path / "a.pt", [1, 2])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "a.pt", {})
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="reserved key"):
        save_checkpoint(tmp_path / "a.pt", {"__bnlab_ndarray__": 1})


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    # a file with the bnlab header whose state would call open() when unpickled
    torch.save({"format": "bnlab-checkpoint", "version": 1, "state": {"x": _RunsCode(str(marker))}}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*would run code.*GLOBAL"):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_files_give_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(1000.0), "epoch": 2})
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    for n in (0, 3, 40, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="truncated|not a bnlab checkpoint"):
            load_checkpoint(cut)
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_corrupted_bytes_are_detected(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.zeros(4096)})
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
    data[info.header_offset + 200] ^= 0xFF  # flip a byte inside the tensor's record
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_foreign_files_are_not_bnlab_checkpoints(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "not torch")
    for path in (text, plain, other_zip):
        with pytest.raises(CheckpointError, match="not a bnlab checkpoint"):
            load_checkpoint(path)
    future = tmp_path / "future.pt"
    torch.save({"format": "bnlab-checkpoint", "version": 99, "state": {}}, future)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(future)


def test_permissions_follow_the_umask_and_the_replaced_file(tmp_path):
    if sys.platform == "win32":
        pytest.skip("POSIX permissions")
    path = tmp_path / "ckpt.pt"
    old = os.umask(0o022)
    try:
        save_checkpoint(path, {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    save_checkpoint(path, {"a": 1})
    assert path.stat().st_mode & 0o777 == 0o600


# --- interrupted writers: real processes -------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import resource, signal, sys, torch
    from bnlab.inference import save_checkpoint
    mode, path = sys.argv[1], sys.argv[2]
    if mode in ("sigxfsz", "efbig"):
        # the kernel stops this process once it writes past 256 KiB: SIGXFSZ kills it (its default
        # action, which Python itself turns off), or, with the signal ignored, the write fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL if mode == "sigxfsz" else signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        save_checkpoint(path, {"epoch": 2, "w": torch.full((1 << 20,), 2.0)})
        print("finished", flush=True)
    else:  # "loop": overwrite the checkpoint forever until killed
        i = 0
        while True:
            i += 1
            save_checkpoint(path, {"epoch": i, "w": torch.full((1 << 21,), float(i))})
            print(i, flush=True)
    """
)


def _writer(mode, path):
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, mode, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_epoch(path, epoch):
    state = load_checkpoint(path)
    assert state["epoch"] == epoch
    assert torch.equal(state["w"], torch.full_like(state["w"], float(epoch)))


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_writer_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.full((10,), 1.0)})
    proc = _writer("sigxfsz", path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGXFSZ, (proc.returncode, out, err)
    assert "finished" not in out
    _check_epoch(path, 1)
    leftovers = [p for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".ckpt.pt.")  # the dead writer's temp file
    assert leftovers[0].stat().st_size > 0


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_write_failing_midway_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.full((10,), 1.0)})
    proc = _writer("efbig", path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "finished" not in out, (out, err)
    # an OSError naming the checkpoint (torch.save itself reports the failed write as a RuntimeError)
    assert "OSError" in err.splitlines()[-1] or "WriteError" in err.splitlines()[-1], err
    assert "File too large" in err.splitlines()[-1] and str(path) in err.splitlines()[-1], err
    _check_epoch(path, 1)
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_sigkill_at_any_moment_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    proc = _writer("loop", path)
    try:
        first = proc.stdout.readline()  # one checkpoint is complete
        assert first.strip() == "1", (first, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(random.Random(0).uniform(0.05, 0.3))
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(path)
    _check_epoch(path, state["epoch"])


def test_the_file_is_an_ordinary_torch_zip(tmp_path):
    # the checkpoint is an ordinary torch zip file: torch can inspect it with weights_only=True too
    path = save_checkpoint(tmp_path / "a.pt", {"x": torch.ones(1)})
    raw = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    assert raw["format"] == "bnlab-checkpoint" and raw["version"] == 3


# -- every single-byte corruption is either harmless or a CheckpointError (never other data) -------------
def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _central_directory_records(data: bytes, path) -> dict[str, int]:
    """Offset of each central-directory record in the zip file, by file name."""
    with zipfile.ZipFile(path) as z:
        offset = z.start_dir
    records = {}
    while data[offset : offset + 4] == b"PK\x01\x02":
        n, m, k = (int.from_bytes(data[offset + i : offset + i + 2], "little") for i in (28, 30, 32))
        records[data[offset + 46 : offset + 46 + n].decode()] = offset
        offset += 46 + n + m + k
    return records


def _outcome(path, original) -> str:
    try:
        back = load_checkpoint(path)
    except CheckpointError:
        return "refused"
    assert _same(original, back), "a corrupted checkpoint loaded as different data without an error"
    return "identical"


def test_every_single_byte_flip_is_harmless_or_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    state = {"w": torch.randn(5, 3), "b": torch.arange(4), "a": np.arange(3.0), "epoch": 7, "h": [0.5, None]}
    save_checkpoint(path, state)
    original = load_checkpoint(path)
    data = path.read_bytes()
    bad = tmp_path / "bad.pt"
    seen = collections.Counter()
    for i in range(len(data)):  # every byte of the file, all bits flipped
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        seen[_outcome(bad, original)] += 1
    # the central directory's external-attributes field (offset 38, 4 bytes) of every tensor record: each bit
    records = _central_directory_records(data, path)
    tensor_records = [name for name in records if "/data/" in name]
    assert len(tensor_records) == 3  # w, b and the array's bytes
    for name in tensor_records:
        for i in range(records[name] + 38, records[name] + 42):
            for bit in range(8):
                flipped = bytearray(data)
                flipped[i] ^= 1 << bit
                bad.write_bytes(bytes(flipped))
                seen[_outcome(bad, original)] += 1
    assert seen["refused"] > len(data) // 3 and seen["identical"] > 0  # both outcomes occur


def test_a_tensor_whose_bytes_change_with_a_valid_container_is_refused(tmp_path):
    # rewrite a tensor record with different bytes *and* a matching CRC: only the digest can notice
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.zeros(16)})
    rewritten = tmp_path / "rewritten.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename.endswith("/data/0"):
                payload = torch.ones(16).numpy().tobytes()
            dst.writestr(info, payload)
    assert zipfile.ZipFile(rewritten).testzip() is None  # the container is intact
    assert torch.load(rewritten, weights_only=True)["state"]["w"].sum() == 16  # torch reads the new bytes
    with pytest.raises(CheckpointError, match=r"state\['w'\] do not match their SHA-256 digest"):
        load_checkpoint(rewritten)


# -- second, independent tests of each safety check ---------------------------------------------------------
class _Exec:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_a_pickle_calling_exec_deep_inside_a_valid_looking_state_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    state = {"model": {"w": torch.ones(2)}, "history": {"loss": [1.0, _Exec(str(marker))]}}
    torch.save({"format": "bnlab-checkpoint", "version": 2, "state": state, "digests": []}, path)
    with pytest.raises(CheckpointError, match="would run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_changed_byte_of_the_pickle_that_still_unpickles_fails_the_crc(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"name": "aaaaaaaa"})
    data = bytearray(path.read_bytes())
    i = bytes(data).index(b"aaaaaaaa")
    data[i] = ord("b")  # still a valid pickle, of {"name": "baaaaaaa"}: only the CRC can tell
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its CRC check"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"format": "bnlab-checkpoint", "version": 2}, "without the bnlab header"),
        ({"format": b"bnlab-checkpoint", "version": 2, "state": {}}, "without the bnlab header"),
        ([1, 2, 3], "without the bnlab header"),
        ({"format": "bnlab-checkpoint", "version": True, "state": {}}, "version True"),
        ({"format": "bnlab-checkpoint", "version": "2", "state": {}}, "version '2'"),
    ],
)
def test_headers_that_almost_match_are_refused(tmp_path, payload, match):
    path = tmp_path / "x.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_version_1_files_are_read_only_when_asked_for_with_a_warning(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "bnlab-checkpoint", "version": 1, "state": {"w": torch.arange(3.0)}}, path)
    with pytest.raises(CheckpointError, match=r"legacy format version 1 .*no digests.*allow_legacy=True"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="legacy version-1 checkpoint without digests"):
        assert torch.equal(load_checkpoint(path, allow_legacy=True)["w"], torch.arange(3.0))
    with pytest.raises(TypeError, match="allow_legacy"):
        load_checkpoint(path, allow_legacy="yes")


def test_a_damaged_version_1_file_is_refused_by_default(tmp_path):
    # version 1 has no digests: a value changed with an intact container loads as garbage without an error,
    # which is why such files are read only on request
    path = tmp_path / "old.pt"
    torch.save({"format": "bnlab-checkpoint", "version": 1, "state": {"w": torch.arange(3.0) + 256}}, path)
    payload = torch.load(path, weights_only=True)
    payload["state"]["w"][1] = -7.0  # "a flipped bit", with the zip's CRCs rewritten to match
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="legacy"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", [0, -1, 4, 99])
@pytest.mark.parametrize("allow_legacy", [False, True])
def test_versions_outside_the_supported_range_are_refused(tmp_path, version, allow_legacy):
    path = tmp_path / "v.pt"
    torch.save({"format": "bnlab-checkpoint", "version": version, "state": {}, "digests": []}, path)
    with pytest.raises(CheckpointError, match=rf"format version {version}; this bnlab reads versions 2, 3"):
        load_checkpoint(path, allow_legacy=allow_legacy)


def test_version_2_files_are_still_read(tmp_path):
    # written by bnlab before format 3: tensor digests, no structure digest
    w = torch.arange(6.0).reshape(2, 3)
    payload = {"format": "bnlab-checkpoint", "version": 2, "state": {"w": w, "epoch": 4}, "digests": []}
    payload["digests"] = [checkpoint._tensor_digest(w)]
    path = tmp_path / "v2.pt"
    torch.save(payload, path)
    back = load_checkpoint(path)
    assert back["epoch"] == 4 and torch.equal(back["w"], w)


def _rewrite(path, change):
    """Load the raw payload, apply ``change`` to it and save it again: a valid container, old digests."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_a_tensor_reshaped_over_the_same_bytes_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(6.0).reshape(2, 3)})
    _rewrite(path, lambda p: p["state"].__setitem__("w", p["state"]["w"].reshape(3, 2)))
    with pytest.raises(CheckpointError, match=r"dtype, shape or bytes of state\['w'\] do not match"):
        load_checkpoint(path)


def test_a_tensor_with_another_dtype_over_the_same_bytes_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(4, dtype=torch.int32)})
    _rewrite(path, lambda p: p["state"].__setitem__("w", p["state"]["w"].view(torch.float32)))
    with pytest.raises(CheckpointError, match=r"state\['w'\]"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "field, value",
    [("shape", [3, 2]), ("shape", [6]), ("dtype", "<i8"), ("scalar", True)],
)
def test_a_numpy_array_whose_shape_or_dtype_changed_is_refused(tmp_path, field, value):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"a": np.arange(6.0).reshape(2, 3)})
    _rewrite(path, lambda p: p["state"]["a"].__setitem__(field, value))
    with pytest.raises(CheckpointError, match="keys, numbers, strings or array shapes do not match"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.__setitem__("epoch", 4),
        lambda s: s.__setitem__("lr", 0.10000000000000002),  # the next float after 0.1
        lambda s: s.__setitem__("name", "mlq"),
        lambda s: s.__setitem__("extra", None),
        lambda s: s["history"].append(0.5),
        lambda s: s.__setitem__("sizes", list(s["sizes"])),  # a tuple became a list
    ],
    ids=["int", "float", "str", "key", "list", "type"],
)
def test_plain_values_changed_with_a_valid_container_are_refused(tmp_path, change):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 3, "lr": 0.1, "name": "mlp", "history": [1.0], "sizes": (4, 3)})
    _rewrite(path, lambda p: change(p["state"]))
    with pytest.raises(CheckpointError, match="do not match their SHA-256 digest"):
        load_checkpoint(path)


def test_a_version_3_file_without_its_structure_digest_is_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 3})
    _rewrite(path, lambda p: p.pop("structure"))
    with pytest.raises(CheckpointError, match="do not match their SHA-256 digest"):
        load_checkpoint(path)


def test_too_deep_a_state_is_refused_before_touching_the_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"ok": 1})
    before = path.read_bytes()
    deep: list = []
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ValueError, match="more than 100 deep"):
        save_checkpoint(path, {"deep": deep})
    assert path.read_bytes() == before


# -- training checkpoints written before the one vocabulary (norm="channel", no per) ------------------------
OLD_CNN_FIELDS = {"arch", "in_channels", "image_size", "num_classes", "norm", "activation", "widths", "hidden"}


@pytest.mark.parametrize("old_norm, arch", [("channel", "cnn"), ("activation", "cnn"), ("activation", "mlp")])
def test_a_checkpoint_in_the_old_vocabulary_loads_gives_identical_outputs_and_resumes(tmp_path, old_norm, arch):
    import types

    from bnlab.models import PaperMLP, SmallCNN
    from bnlab.training import TrainConfig, fit, load_trained, seed_everything

    g = torch.Generator().manual_seed(0)
    data = types.SimpleNamespace(x_train=torch.rand(64, 1, 8, 8, generator=g), y_train=torch.arange(64) % 10,
                                 x_val=torch.rand(16, 1, 8, 8, generator=g), y_val=torch.arange(16) % 10)  # fmt: skip

    def model():
        seed_everything(0)
        if arch == "mlp":
            return PaperMLP(64, 10, old_norm, hidden=(8,))
        return SmallCNN(1, (8, 8), 10, old_norm, widths=(4,), hidden=8)

    out = tmp_path / "run"
    trained = fit(model(), data, TrainConfig(batch_size=16, epochs=1), out_dir=out, progress=False).model
    # the file as bnlab wrote it before: the same container, a spec with the old word and no "per"
    state = load_checkpoint(out / "last.pt")
    old_spec = {k: v for k, v in state["model_spec"].items() if k != "per"}
    old_spec["norm"] = old_norm
    if arch == "cnn":
        assert set(old_spec) == OLD_CNN_FIELDS
    state["model_spec"] = old_spec
    save_checkpoint(out / "last.pt", state)

    loaded, saved = load_trained(out / "last.pt")
    assert saved["model_spec"]["norm"] == "batch" and saved["model_spec"]["per"] == old_norm
    x = torch.rand(7, 1, 8, 8, generator=g)
    trained.eval()
    torch.testing.assert_close(loaded(x), trained(x), rtol=0, atol=0)
    # and a run continues from it: the model built today is the one the file describes
    longer = fit(model(), data, TrainConfig(batch_size=16, epochs=2), out_dir=out, resume=True, progress=False)
    assert longer.history["step"] == list(range(1, 9))
