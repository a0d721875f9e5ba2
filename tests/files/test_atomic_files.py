"""Files bnlab writes (issue 20): atomic, never through a link, clear errors; the CLI's exit 2 on write errors."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import stat
import sys

import pytest
import torch
from matplotlib.figure import Figure

from bnlab import io as bio
from bnlab.cli import main
from bnlab.explain import explain
from bnlab.explain_page import page_html, write_page
from bnlab.inference import load_checkpoint, save_checkpoint
from bnlab.training import write_json

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links, permissions and file-size limits")


def _figure():
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


# every writer of bnlab, by name: (function writing to a path, suffix)
WRITERS = {
    "write_text": (lambda p: bio.write_text(p, "new"), ".txt"),
    "write_bytes": (lambda p: bio.write_bytes(p, b"new"), ".bin"),
    "io.write_json": (lambda p: bio.write_json(p, {"x": float("nan")}), ".json"),
    "training.write_json": (lambda p: write_json(p, {"x": 1}), ".json"),
    "save_figure": (lambda p: bio.save_figure(_figure(), p), ".png"),
    "save_checkpoint": (lambda p: save_checkpoint(p, {"w": torch.ones(2)}), ".pt"),
    "write_page": (lambda p: write_page(p, lang="es"), ".html"),
    "explain.save_figure": (lambda p: explain((2, 3), layout="NC").save_figure(p), ".svg"),
    "explain.save_figure (family)": (lambda p: explain((2, 4), layout="NC", norm="layer").save_figure(p), ".png"),
}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_planted_link_is_replaced_and_its_target_untouched(tmp_path, name, umask_022):
    write, suffix = WRITERS[name]
    victim = tmp_path / "elsewhere" / "precious.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious")
    victim.chmod(0o777)
    out = tmp_path / "out"
    out.mkdir()
    link = out / f"file{suffix}"
    link.symlink_to(victim)
    write(link)
    assert victim.read_bytes() == b"precious"  # the target: untouched, content and mode
    assert stat.S_IMODE(victim.stat().st_mode) == 0o777
    assert not link.is_symlink() and link.is_file() and link.stat().st_size > 0  # the link was replaced
    assert stat.S_IMODE(link.stat().st_mode) == 0o644  # the umask's mode, not the 0777 of the link's target
    assert sorted(p.name for p in out.iterdir()) == [link.name]  # no temporary file left


@pytest.mark.parametrize("name", ["write_text", "save_checkpoint", "save_figure"])
def test_modes_new_files_follow_the_umask_replaced_files_keep_theirs(tmp_path, name):
    write, suffix = WRITERS[name]
    path = tmp_path / f"f{suffix}"
    old = os.umask(0o027)
    try:
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # new: 0o666 minus the umask
        path.chmod(0o604)
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o604  # a replaced regular file keeps its mode
    finally:
        os.umask(old)


def test_a_link_to_a_folder_is_replaced_too(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "link.txt").symlink_to(tmp_path / "d")
    bio.write_text(tmp_path / "link.txt", "x")
    assert (tmp_path / "link.txt").read_text() == "x" and list((tmp_path / "d").iterdir()) == []


@contextlib.contextmanager
def _file_size_limit(nbytes):
    """A real "disk full": writes past ``nbytes`` fail with EFBIG (SIGXFSZ is ignored, as Python sets it)."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


BIG = {
    "write_bytes": lambda p: bio.write_bytes(p, b"x" * 200_000),
    "save_checkpoint": lambda p: save_checkpoint(p, {"w": torch.zeros(50_000)}),  # torch.save: a RuntimeError inside
    "save_figure": lambda p: bio.save_figure(_figure(), p, dpi=600),
    "write_page": lambda p: write_page(p),
}


@pytest.mark.parametrize("name", list(BIG))
def test_a_write_failing_half_way_is_an_oserror_naming_the_file_and_leaves_no_temp_file(tmp_path, name):
    path = tmp_path / "target"
    path.write_bytes(b"old")
    with _file_size_limit(4096), pytest.raises(OSError) as info:
        BIG[name](path)
    err = info.value
    assert isinstance(err, bio.WriteError) and err.errno == errno.EFBIG, repr(err)
    assert err.filename == str(path) and str(path) in str(err)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["target"]


def test_targets_that_cannot_be_replaced_are_refused_before_writing(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="folder"):
        bio.write_text(folder, "x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(bio.WriteError, match="not a regular file"):
        bio.write_text(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the pipe, never replaced
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bio.write_text(tmp_path / "missing" / "a.txt", "x")
    with pytest.raises(bio.WriteError) as info:
        bio.write_text(tmp_path / ("a" * 300), "x")
    assert info.value.errno == errno.ENAMETOOLONG
    assert sorted(os.listdir(tmp_path)) == ["fifo", "folder"]


def test_a_name_near_the_limit_is_written(tmp_path):
    # the temporary file's name must not be what makes it too long
    path = tmp_path / ("b" * 250 + ".png")
    bio.save_figure(_figure(), path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_figures_take_their_format_from_the_suffix(tmp_path):
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")):
        assert (bio.save_figure(_figure(), tmp_path / f"f{suffix}")).read_bytes().startswith(magic)


def test_json_is_strict(tmp_path):
    text = bio.write_json(tmp_path / "a.json", {"a": [1.0, float("inf"), float("nan")]}).read_text()
    assert json.loads(text) == {"a": [1.0, None, None]}


def test_write_errors_are_also_the_builtin_oserror_subclasses(tmp_path):
    err = bio.atomic._write_error(errno.EACCES, "Permission denied", tmp_path / "x")
    assert isinstance(err, PermissionError) and isinstance(err, bio.WriteError)


# -- the explainer page: every argument checked, whatever the norm (issue 20, item 8) --------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"groups": "<!--"}, "groups must be a positive whole number"),
        ({"groups": "<!--", "norm": "layer"}, "groups must be a positive whole number"),
        ({"groups": True, "norm": "instance"}, "groups must be a positive whole number"),
        ({"groups": 3, "norm": "batch"}, "does not divide the 8 channels"),
        ({"groups": 0, "norm": "layer"}, "groups must be a positive whole number"),
        ({"per": "<!--", "norm": "layer"}, "per must be"),
        ({"per": ["channel"], "norm": "group"}, "per must be a string"),
        ({"norm": "none"}, "unknown norm"),
        ({"shape": (4, 3, 3, "8")}, "4 positive whole numbers"),
        ({"shape": (4, 3, 3, 8.9)}, "4 positive whole numbers"),
        ({"shape": "4338"}, "4 positive whole numbers"),
        ({"lang": ["en"]}, "unknown lang"),
    ],
)
def test_the_page_checks_every_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        page_html(**kwargs)


def test_the_page_keeps_a_valid_groups_for_another_norm():
    assert '"groups": "4"' in page_html(norm="layer", groups=4)  # sizes travel as decimal strings (BigInt)


# -- the command: a write that fails is exit 2 with a message, never a traceback (issue 20, items 3-5) ---------
def _run(args, capsys):
    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self") or not os.path.isdir("/sys/kernel"), reason="Linux /proc, /sys")
@pytest.mark.parametrize("out, lang", [("/proc/bnlab-x", "en"), ("/sys/bnlab-newdir", "es")])
def test_train_into_a_folder_that_cannot_be_made(out, lang, capsys):
    code, _, err = _run(["train", "--out", out, "--epochs", "1", "--quiet", "--lang", lang], capsys)
    assert code == 2 and "Traceback" not in err
    assert ("cannot create or write there" if lang == "en" else "no se puede crear ni escribir ahí") in err
    assert not os.path.exists(out)


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "es"])
def test_train_on_a_full_disk(tmp_path, capsys, lang):
    out = tmp_path / "run"
    with _file_size_limit(16 * 1024):  # the checkpoint of the first epoch is ~140 KB
        code, _, err = _run(["train", "--out", str(out), "--epochs", "1", "--quiet", "--lang", lang], capsys)
    assert code == 2, err
    assert ("cannot create or write there" if lang == "en" else "no se puede crear ni escribir ahí") in err
    assert "File too large" in err and str(out / "last.pt") in err and "Traceback" not in err
    assert os.listdir(out) == []  # no temporary file, no checkpoint


@pytest.mark.slow
def test_train_does_not_write_through_planted_links(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    victims = {}
    for name in ("history.json", "curves.png"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious")
        (out / name).symlink_to(victim)
        victims[name] = victim
    code, _, err = _run(["train", "--out", str(out), "--epochs", "1", "--quiet", "--lang", "en"], capsys)
    assert code == 0, err
    for name, victim in victims.items():
        assert victim.read_text() == "precious"
        assert not (out / name).is_symlink()
    assert json.loads((out / "history.json").read_text())["config"]["epochs"] == 1
    assert load_checkpoint(out / "last.pt")["step"] > 0


@pytest.mark.parametrize("lang", ["en", "es"])
@pytest.mark.parametrize("where", ["folder", "long_name", "full", "fifo"])
@pytest.mark.parametrize("flag", ["--html", "--figure"])
def test_explain_writes_that_fail_exit_2_with_one_message(tmp_path, capsys, lang, where, flag):
    suffix = ".html" if flag == "--html" else ".png"
    target = {
        "folder": tmp_path / f"folder{suffix}",
        "long_name": tmp_path / ("a" * 300 + suffix),
        "full": tmp_path / f"page{suffix}",
        "fifo": tmp_path / f"pipe{suffix}",
    }[where]
    if where == "fifo":
        os.mkfifo(target)
    elif where == "folder":
        target.mkdir()
    args = ["explain", "8,4,4,16", flag, str(target), "--lang", lang]
    with _file_size_limit(1024) if where == "full" else contextlib.nullcontext():
        code, out, err = _run(args, capsys)
    assert code == 2, err
    message = [line for line in err.splitlines() if "error" in line]
    assert len(message) == 1 and f"{flag} {target}" in message[0], err
    if where == "folder":
        expected = "is a folder: give a file name" if lang == "en" else "es una carpeta: da un nombre de archivo"
    else:
        expected = "cannot create or write there" if lang == "en" else "no se puede crear ni escribir ahí"
    assert expected in message[0] and "Traceback" not in err
    if where == "full":
        assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_experiment_on_a_full_disk_names_the_output_not_the_data(tmp_path, capsys):
    out = tmp_path / "fig1"
    with _file_size_limit(4096):
        code, _, err = _run(["experiment", "paper-fig1", "--out", str(out), "--steps", "3", "--quiet",
                             "--lang", "en"], capsys)  # fmt: skip
    assert code == 2, err
    assert f"--out {out}: cannot create or write there" in err and "--data" not in err
