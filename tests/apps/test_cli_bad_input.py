"""The bnlab command under bad input and rough handling (issue 7): exit 2 with a message, never a traceback."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

import bnlab
from bnlab import cli
from bnlab.cli import main
from bnlab.cli.bench import _find_benchmark
from bnlab.cli.train import _train_title
from bnlab.inference import load_checkpoint, save_checkpoint

SRC = os.path.dirname(os.path.dirname(os.path.abspath(bnlab.__file__)))  # the bnlab under test (tests/mutation: a copy)


def _env():
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", "PYTHONPATH": f"{SRC}:{path}"}


def test_parser_choices_are_the_modules_own():
    from bnlab import data, models, training

    assert cli.DATASETS == data.DATASETS and cli.OPTIMIZERS == training.OPTIMIZERS
    assert cli.NORMS == models.NORMS and cli.FAMILY_NORMS == models.FAMILY_NORMS
    assert cli.ACTIVATIONS == models.ACTIVATIONS


@pytest.mark.parametrize(
    "args, expected",
    [(["--help"], "Start with"), (["--version"], "bnlab 0.1.0"), (["explain", "32,28,28,16"], "sets B")],
)
def test_quick_commands_do_not_import_torch(args, expected):
    code = (
        "import sys, time; t = time.perf_counter(); from bnlab.cli import main; rc = main(sys.argv[1:]); "
        "sys.stdout.flush(); print('torch' in sys.modules, rc, round(time.perf_counter() - t, 3), file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=_env(), timeout=60)
    assert expected in proc.stdout
    imported, rc, _seconds = proc.stderr.split()[-3:]
    assert (imported, rc) == ("False", "0"), proc.stderr


def test_version_matches_the_package():
    import bnlab

    proc = subprocess.run([sys.executable, "-m", "bnlab", "--version"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0 and proc.stdout.strip() == f"bnlab {bnlab.__version__}"


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnlab", "explain", "32,28,28,16", "--lang", "en"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    proc.stdout.close()  # the reader goes away before bnlab writes, as `| head` does after its lines
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert proc.returncode == cli.EXIT_BROKEN_PIPE


def test_ctrl_c_during_start_up_is_a_clean_exit(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnlab", "train", "--out", str(tmp_path / "run"), "--lang", "en", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    time.sleep(0.6)  # inside bnlab's imports (torch takes seconds) or early in training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, -signal.SIGINT), err  # see test_an_interrupted_demo_leaves_no_empty_folder
    assert "Traceback" not in err and "Interrupted" in err


# Ctrl-C at a chosen import: a finder first in sys.meta_path sends the process SIGINT when Python looks
# for the module, so the KeyboardInterrupt arrives inside the import machinery, as a real Ctrl-C can
_SIGINT_AT_IMPORT = """
import os, signal, sys

class SigintAt:
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1] and not SigintAt.fired:
            SigintAt.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SigintAt())
from bnlab.cli import main
rc = main(sys.argv[2:])
# the marker: was the module's import finished (it was held back) or cut short (the interrupt raised in it)?
module = sys.modules.get(sys.argv[1])
done = module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)
print(f"fired={SigintAt.fired} imported={done}")
sys.exit(rc)
"""


@pytest.mark.parametrize("module", ["torch", "numpy.dtypes", "sklearn", "bnlab.nn.functional"])
def test_ctrl_c_inside_a_librarys_import_is_a_clean_exit(module, tmp_path):
    # the interrupt is held back until no import is under way: raised inside one it left numpy
    # half-initialized (scikit-learn's import then failed with an ImportError or RecursionError), and inside
    # torch's C++ operator registration it aborted the process (exit -6, seen once in CI)
    argv = ["train", "--out", str(tmp_path / "run"), "--lang", "en", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", _SIGINT_AT_IMPORT, module, *argv], capture_output=True, text=True,
                          env=_env(), timeout=120)  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "terminate" not in proc.stderr, proc.stderr
    # held back, then delivered: the import ran to its end and the interrupt came after it (raised inside
    # the import, the module would be missing from sys.modules, with the same exit 130 and message)
    assert "fired=True imported=True" in proc.stdout, (proc.stdout, proc.stderr)
    if proc.stderr.strip() == "Interrupted.":  # raised once the import finished, before training began
        assert not (tmp_path / "run").exists()
    else:  # it reached the training loop first, which stops after the current step and saves it
        step = int(proc.stderr.split("Interrupted at step ")[1].split("/")[0])
        assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == step


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "0,28,28,16"], "SHAPE must be positive integers"),
        (["explain", "-1,28,28,16"], "SHAPE must be positive integers"),
        (["explain", "2,3", "--layout", "NC", "--figure", "x.xyz"], "unknown image type '.xyz'"),
        (["explain", "2,3", "--layout", "NC", "--figure", ""], "--figure needs a file name"),
        (["explain", "2,3", "--layout", "NC", "--figure", ".png"], "--figure needs a file name"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_is_refused_before_any_output(args, message, capsys):
    assert main([*args, "--lang", "en"]) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""  # explain checks --figure before printing its text


def test_figure_is_written_by_suffix(tmp_path, capsys):
    assert main(["explain", "2,3", "--layout", "NC", "--figure", str(tmp_path / "b.svg"), "--lang", "en"]) == 0
    assert (tmp_path / "b.svg").read_text().lstrip().startswith("<?xml")


def test_bench_passes_options_on(capsys):
    if _find_benchmark() is None:
        pytest.skip("benchmarks/cpu.py is not in this checkout")
    proc = subprocess.run([sys.executable, "-m", "bnlab", "bench", "--quick", "--help"], capture_output=True,
                          text=True, env=_env(), timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "unrecognized" not in proc.stderr


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_demo_out_must_be_a_writable_folder(tmp_path, capsys, where):
    f = tmp_path / "f.txt"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    assert main(["demo", "--out", str(out), "--lang", "es"]) == 2
    err = capsys.readouterr().err
    assert ("no es una carpeta" if where == "file" else "no se puede crear") in err
    assert "Traceback" not in err


def _npz(tmp_path, shape):
    path = tmp_path / f"img{shape[1]}.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 255, size=shape, dtype=np.uint8), labels=np.arange(shape[0]) % 10)
    return path


@pytest.mark.parametrize("shape, message", [((40, 0, 0), "have no pixels"), ((40, 1, 1), "use --model mlp")])
def test_images_without_room_for_the_cnn(tmp_path, capsys, shape, message):
    path = _npz(tmp_path, shape)
    args = ["train", "--dataset", "mnist", "--data", str(path), "--out", str(tmp_path / "r"), "--quiet", "--lang", "en"]
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--quiet", "--lang", "en"]) == 0
    return out


def test_evaluate_accepts_the_run_folder(run_dir, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--lang", "en"]) == 0
    by_folder = capsys.readouterr().out
    assert main(["evaluate", str(run_dir / "last.pt"), "--lang", "en"]) == 0
    assert capsys.readouterr().out == by_folder and "Test accuracy" in by_folder


def test_history_json_is_strict(run_dir):
    text = (run_dir / "history.json").read_text()
    import json

    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert record["history"]["p15"]  # the percentiles are numbers (or null), never NaN


def test_resume_with_fewer_epochs_than_done_says_so(run_dir, capsys):
    args = ["train", "--epochs", "1", "--out", str(run_dir), "--quiet", "--lang", "en", "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has already done 39 of the 39 steps that --epochs 1 asks for" in err and "larger --epochs" in err


@pytest.mark.parametrize("damage", ["truncated", "no_training_state", "list_state"])
def test_resume_or_evaluate_a_damaged_checkpoint(run_dir, tmp_path, capsys, damage):
    out = tmp_path / "copy"
    out.mkdir()
    raw = (run_dir / "last.pt").read_bytes()
    if damage == "truncated":
        (out / "last.pt").write_bytes(raw[: len(raw) // 2])
    elif damage == "no_training_state":
        save_checkpoint(out / "last.pt", {"kind": "bnlab-training", "step": 3})
    else:
        torch.save({"format": "bnlab-checkpoint", "version": 2, "state": [1, 2], "digests": []}, out / "last.pt")
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--quiet", "--lang", "en", "--resume"]) == 2
    assert main(["evaluate", str(out), "--lang", "es"]) == 2
    err = capsys.readouterr().err
    assert "is not a training checkpoint written by 'bnlab train'" in err
    assert "no es un punto de control escrito por 'bnlab train'" in err
    assert "Traceback" not in err and (out / "last.pt").read_bytes() == before


def test_a_legacy_checkpoint_is_evaluated_only_with_allow_legacy(run_dir, tmp_path, capsys):
    from bnlab.inference.checkpoint import _encode

    state = _encode(load_checkpoint(run_dir / "last.pt"))
    torch.save({"format": "bnlab-checkpoint", "version": 1, "state": state}, tmp_path / "old.pt")  # bnlab 0.1
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "old.pt"), "--lang", "es"]) == 2
    err = capsys.readouterr().err
    assert "no es un punto de control escrito por 'bnlab train'" in err and "--allow-legacy" in err
    with pytest.warns(UserWarning, match="legacy version-1 checkpoint"):
        assert main(["evaluate", str(tmp_path / "old.pt"), "--allow-legacy", "--lang", "en"]) == 0
    assert "Test accuracy" in capsys.readouterr().out


def test_a_legacy_checkpoint_is_said_in_the_commands_language(run_dir, tmp_path, capsys):
    """The library warns in English; the command says it once, in its language (evaluate, and train --resume)."""
    from bnlab.inference.checkpoint import _encode

    state = _encode(load_checkpoint(run_dir / "last.pt"))
    out = tmp_path / "old"
    out.mkdir()
    torch.save({"format": "bnlab-checkpoint", "version": 1, "state": state}, out / "last.pt")  # bnlab 0.1
    spanish = "es un punto de control antiguo (versión 1 del formato"
    with pytest.warns(UserWarning) as said:
        assert main(["evaluate", str(out), "--allow-legacy", "--quiet", "--lang", "es"]) == 0
    texts = [str(w.message) for w in said]
    assert [spanish in s for s in texts].count(True) == 1 and not any("legacy version" in s for s in texts), texts
    # train --resume reads it (then stops: the run has done its one epoch), saying it the same way
    with pytest.warns(UserWarning) as said:
        assert main(["train", "--out", str(out), "--resume", "--allow-legacy", "--epochs", "1", "--lang", "es"]) == 2
    texts = [str(w.message) for w in said]
    assert [spanish in s for s in texts].count(True) == 1 and not any("legacy version" in s for s in texts), texts
    assert "ya hizo" in capsys.readouterr().err


@pytest.mark.slow  # starts two replicas
def test_train_nproc_resumes_a_legacy_checkpoint_with_allow_legacy(run_dir, tmp_path, capfd):
    """The launcher's early check of the checkpoint honours --allow-legacy (it refused the file before)."""
    from bnlab.inference.checkpoint import _encode

    out = tmp_path / "old"
    out.mkdir()
    torch.save({"format": "bnlab-checkpoint", "version": 1, "state": _encode(load_checkpoint(run_dir / "last.pt"))},
               out / "last.pt")  # fmt: skip
    argv = ["train", "--out", str(out), "--resume", "--allow-legacy", "--epochs", "1", "--nproc", "2", "--lang", "en"]
    assert main(argv) == 2  # rank 0 read it, and found the one epoch already done
    err = capfd.readouterr().err
    assert "has already done" in err and "is not a training checkpoint" not in err, err


def test_a_hostile_model_spec_is_refused_without_allocating(run_dir, tmp_path, capsys):
    state = load_checkpoint(run_dir / "last.pt")
    state["model_spec"]["widths"] = [4096, 4096]
    state["model_spec"]["image_size"] = [4096, 4096]  # per-activation BN here would ask for terabytes
    state["model_spec"].update(norm="batch", per="activation")
    save_checkpoint(tmp_path / "evil.pt", state)
    assert main(["evaluate", str(tmp_path / "evil.pt"), "--lang", "en"]) == 2
    assert "the weights do not match the model spec" in capsys.readouterr().err


def test_a_diverging_run_stops_with_exit_1_and_keeps_no_nan(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--lr", "1e6", "--out", str(out), "--quiet", "--lang", "es"]) == cli.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "Entrenamiento detenido" in err and "--lr 1e+06" in err and "Traceback" not in err
    assert not (out / "history.json").exists()
    if (out / "last.pt").exists():
        state = load_checkpoint(out / "last.pt")
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_train_figure_title_names_the_learning_rate():
    args = types.SimpleNamespace(dataset="digits", model="cnn", norm="channel", activation="relu",
                                 optimizer="momentum", lr=0.05)  # fmt: skip
    assert _train_title(args, "en").endswith("momentum, learning rate 0.05")
    assert _train_title(args, "es").endswith("momentum, tasa de aprendizaje 0.05")


def test_progress_bars_are_spanish_and_throttled_off_a_terminal(monkeypatch):
    from bnlab.data import load_digits
    from bnlab.models import SmallCNN
    from bnlab.training import TrainConfig, fit, seed_everything

    ds = load_digits(seed=0)
    small = types.SimpleNamespace(x_train=ds.x_train[:320], y_train=ds.y_train[:320], x_val=ds.x_val[:40],
                                  y_val=ds.y_val[:40])  # fmt: skip
    seed_everything(0)
    log = io.StringIO()  # not a terminal, like a log file
    monkeypatch.setattr(sys, "stderr", log)
    fit(SmallCNN(1, (8, 8), 10, widths=(4, 8), hidden=16), small, TrainConfig(epochs=4, batch_size=8),
        progress=True, lang="es", desc="cnn")  # fmt: skip
    text = log.getvalue()
    assert "paso" in text and "it/s" not in text
    assert len(text) < 1000  # 160 steps: a line or two, not one redraw per step


@pytest.mark.parametrize(
    "lang, singular, plural", [("en", "N=1 example,", "1 examples"), ("es", "N=1 ejemplo,", "1 ejemplos")]
)
def test_explain_says_1_example_and_1_value(capsys, lang, singular, plural):
    assert main(["explain", "1,3", "--layout", "NC", "--lang", lang]) == 0
    out = capsys.readouterr().out
    assert singular in out and plural not in out
    assert ("m = 1 value." if lang == "en" else "m = 1 valor.") in out
    assert main(["explain", "11,3", "--layout", "NC", "--lang", lang]) == 0
    assert ("N=11 examples" if lang == "en" else "N=11 ejemplos") in capsys.readouterr().out


@pytest.mark.slow
def test_an_interrupted_demo_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnlab", "demo", "--out", str(out), "--lang", "en", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert out.exists(), "the demo never created its folder"
        time.sleep(0.5)  # training has started
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # 130, or killed by SIGINT (-2; a shell shows both as 130): when the signal lands in the first ~0.3 s
    # of the demo, the interpreter re-sends itself SIGINT at exit (seen with strace) after bnlab has
    # handled it and cleaned up; the cause is not found yet.
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and "Interrupted" in err
    assert not out.exists()


_SIGINT_AT_COMMAND_IMPORT = """
import os, runpy, signal, sys

class SigintAt:
    def find_spec(self, name, path=None, target=None):
        if name == "bnlab.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SigintAt())
sys.argv = ["bnlab", *sys.argv[1:]]
runpy.run_module("bnlab", run_name="__main__")
"""


@pytest.mark.parametrize("lang, word", [("en", "Interrupted."), ("es", "Interrumpido.")])
def test_ctrl_c_while_python_m_bnlab_imports_the_command_is_one_line(lang, word):
    # SIGINT while `python -m bnlab` imports bnlab.cli, before main() can catch anything: no traceback
    proc = subprocess.run([sys.executable, "-c", _SIGINT_AT_COMMAND_IMPORT, "train", "--lang", lang],
                          capture_output=True, text=True, env=_env(), timeout=120)  # fmt: skip
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == word, proc.stderr


def test_a_progress_bar_interrupted_while_it_is_built_closes_quietly():
    # Ctrl-C inside tqdm's __init__ leaves a half-built bar; its __del__ calls close(), which printed
    # "Exception ignored ... AttributeError: '_Bar' object has no attribute 'disable'" after "Interrupted."
    from bnlab.progress import _Bar

    half_built = _Bar.__new__(_Bar)
    half_built.close()  # raises AttributeError when close() assumes the attributes __init__ sets


@pytest.mark.parametrize("existed", [False, True])
def test_ctrl_c_after_the_out_folder_is_made_but_before_training_leaves_no_empty_folder(existed, tmp_path, monkeypatch,
                                                                                       capsys):  # fmt: skip
    # fit makes --out, then sets up the bar and its own SIGINT handling: a Ctrl-C in between (e.g. held back
    # during a lazy import, delivered when it ends) left an empty folder that 'train' had created
    import bnlab.training.loop as loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "progress_bar", interrupted)
    out = tmp_path / "run"
    if existed:
        out.mkdir()
    assert main(["train", "--out", str(out), "--epochs", "1", "--lang", "en", "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == "Interrupted."
    assert out.is_dir() == existed  # a folder the user had stays; the one train made goes when still empty
