"""First contact with the bnlab command, as a new user meets it (issue 16, items 1 and 7).

The CLI as a package answers its quick commands without torch in little CPU time; every command that
trains or evaluates runs on ``--threads`` (default 1); the shipped MNIST needs no ``--data``; progress bars
end at their total; every written file is announced one way; Spanish numbers use a decimal comma; a
mistyped option or choice gets a suggestion; test_triton's skip reasons say what really happens.
"""

from __future__ import annotations

import io
import os
import re
import resource
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import bnlab
from bnlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
SRC = str(Path(bnlab.__file__).resolve().parents[1])  # the bnlab under test (a copy, for tests/mutation)


def _env():
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "LANG": "C.UTF-8", "LC_ALL": "", "LC_MESSAGES": "", "PYTHONPATH": f"{SRC}:{path}"}


# -- quick commands: little CPU -----------------------------------------------------------------------------
def _cpu_seconds(args: list[str]) -> float:
    """User + system CPU time of ``python -m bnlab ARGS`` in a child process (resource.getrusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "bnlab", *args], capture_output=True, text=True, env=_env(),
                          timeout=120)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("args", [["--help"], ["explain", "32,28,28,16", "--lang", "es"], ["train", "--help"]])
def test_quick_commands_take_little_cpu(args):
    _cpu_seconds(args)  # the first run may compile the bytecode
    seconds = min(_cpu_seconds(args) for _ in range(2))  # CPU time: a loaded machine slows it little
    assert seconds < 0.3, f"bnlab {' '.join(args)} used {seconds:.3f} s of CPU (torch imported?)"


# -- threads ------------------------------------------------------------------------------------------------
@pytest.fixture
def threads_seen():
    """The torch thread counts in effect at every module forward while a command runs (a global forward hook)."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # neither the default (1) nor the value the tests ask for (2)
    seen: set[int] = set()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.add(torch.get_num_threads()))
    try:
        yield seen
    finally:
        handle.remove()
        torch.set_num_threads(before)


def _threads_of(seen: set[int], argv: list[str], threads: int | None) -> set[int]:
    seen.clear()
    assert main([*argv, "--quiet", "--lang", "en", *([] if threads is None else ["--threads", str(threads)])]) == 0
    assert torch.get_num_threads() == 3  # main gives torch its setting back
    return set(seen)


def test_train_and_evaluate_run_on_their_threads(tmp_path, threads_seen, capsys):
    train = ["train", "--epochs", "1", "--batch-size", "256"]
    assert _threads_of(threads_seen, [*train, "--out", str(tmp_path / "a")], 2) == {2}
    assert _threads_of(threads_seen, [*train, "--out", str(tmp_path / "b")], None) == {1}
    assert _threads_of(threads_seen, ["evaluate", str(tmp_path / "a"), "--recalibrate"], 2) == {2}
    assert _threads_of(threads_seen, ["evaluate", str(tmp_path / "a")], None) == {1}


def test_paper_fig1_runs_on_its_threads(tmp_path, threads_seen, capsys):
    fig1 = ["experiment", "paper-fig1", "--steps", "3", "--out", str(tmp_path / "f")]
    assert _threads_of(threads_seen, fig1, 2) == {2}
    assert _threads_of(threads_seen, fig1, None) == {1}


@pytest.mark.slow
def test_demo_and_small_batch_run_on_their_threads(tmp_path, threads_seen, capsys):
    demo = ["demo", "--epochs", "1", "--seeds", "0", "--out", str(tmp_path / "d")]
    assert _threads_of(threads_seen, demo, 2) == {2}
    small = ["experiment", "small-batch", "--batch-sizes", "64", "--samples", "64", "--seeds", "0"]
    assert _threads_of(threads_seen, [*small, "--out", str(tmp_path / "s")], 2) == {2}
    assert _threads_of(threads_seen, [*small, "--out", str(tmp_path / "t")], None) == {1}


@pytest.mark.parametrize(
    "command", [["demo"], ["train"], ["evaluate"], ["experiment", "paper-fig1"], ["experiment", "small-batch"]]
)
def test_every_training_command_states_its_thread_default(command, capsys):
    assert main([*command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--threads N torch threads (default: 1:" in text and "hilos de torch (por defecto: 1:" in text


# -- the shipped MNIST --------------------------------------------------------------------------------------
def test_train_and_evaluate_mnist_without_data(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["--model", "mlp", "--batch-size", "1000", "--epochs", "1", "--quiet", "--lang", "en"]
    assert main(["train", "--dataset", "mnist", "--out", str(out), *args]) == 0
    # the 10,000 shipped digits: 2,000 for testing (the count written by bnlab.i18n.numbers, as every number)
    assert "on 2,000 test images" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--split", "val", "--quiet", "--lang", "en"]) == 0
    assert "on 1,000 validation images" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    assert "required" not in capsys.readouterr().out


# -- progress bars ------------------------------------------------------------------------------------------
def test_progress_bars_end_at_their_total(monkeypatch):
    from bnlab.data import load_digits
    from bnlab.inference import recalibrate
    from bnlab.models import SmallCNN
    from bnlab.training import TrainConfig, fit, seed_everything

    ds = load_digits(seed=0)
    small = types.SimpleNamespace(x_train=ds.x_train[:312], y_train=ds.y_train[:312], x_val=ds.x_val[:20],
                                  y_val=ds.y_val[:20])  # fmt: skip
    seed_everything(0)
    log = io.StringIO()  # not a terminal: redrawn at most every 30 s, so only the first and the last state show
    monkeypatch.setattr(sys, "stderr", log)
    result = fit(SmallCNN(1, (8, 8), 10, widths=(4, 8), hidden=16), small, TrainConfig(epochs=1, batch_size=24),
                 progress=True, lang="en", desc="cnn")  # fmt: skip
    recalibrate(result.model, [ds.x_train[i : i + 8] for i in range(0, 40, 8)], progress=True, lang="en")
    counts = re.findall(r"(\d+)/(\d+) \[", log.getvalue())
    assert [c for c in counts if c[1] == "13"][-1] == ("13", "13"), counts  # not 12/13 (its last eval), then cleared
    assert counts[-1] == ("5", "5"), counts


# -- messages -----------------------------------------------------------------------------------------------
def _paths_removed(text: str, tmp_path: Path) -> str:
    return text.replace(str(tmp_path), "TMP")


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_written_file_is_announced_one_way(tmp_path, capsys, lang):
    written = {"en": r"written to TMP/\S+$", "es": r"escrit[oa]s? en TMP/\S+$"}[lang]
    common = ["--quiet", "--lang", lang]
    assert main(["explain", "4,3", "--layout", "NC", "--figure", str(tmp_path / "b.png"), "--lang", lang]) == 0
    assert main(["explain", "--html", str(tmp_path / "p.html"), "--lang", lang]) == 0
    assert main(["experiment", "paper-fig1", "--steps", "3", "--out", str(tmp_path / "f"), *common]) == 0
    assert main(["train", "--epochs", "1", "--batch-size", "256", "--out", str(tmp_path / "t"), *common]) == 0
    lines = [line for line in _paths_removed(capsys.readouterr().out, tmp_path).splitlines() if "TMP/" in line]
    assert len(lines) == 7, lines  # figure, page, figure + numbers, checkpoint + history + figure
    assert all(re.search(written, line.split(" (")[0]) for line in lines), lines


def test_spanish_numbers_use_a_decimal_comma(tmp_path, capsys):
    common = ["--quiet", "--lang", "es"]
    assert main(["experiment", "paper-fig1", "--steps", "3", "--out", str(tmp_path / "f"), *common]) == 0
    assert main(["train", "--epochs", "1", "--batch-size", "256", "--out", str(tmp_path / "t"), *common]) == 0
    assert main(["evaluate", str(tmp_path / "t"), "--recalibrate", *common]) == 0
    assert main(["explain", "32,28,28,16", "--norm", "group", "--groups", "4", "--lang", "es"]) == 0
    out = _paths_removed(capsys.readouterr().out, tmp_path)
    assert re.findall(r"\d,\d+ s\b", out) and re.findall(r"\d,\d %", out)  # "2,0 s", "21,2 %"
    assert not re.findall(r"\d\.\d", out.replace("§3.2", "")), out  # (a section of the paper is not a number)


@pytest.mark.parametrize(
    "args, hint",
    [
        (["train", "--epcohs", "3"], "--epochs"),
        (["experiment", "paper-fig1", "--setps", "3"], "--steps"),
        (["evaluate", "x", "--recalbirate"], "--recalibrate"),
        (["train", "--dataset", "minst"], "mnist"),
        (["trian"], "train"),
    ],
)
@pytest.mark.parametrize("lang", ["en", "es"])
def test_a_mistyped_name_gets_a_suggestion(args, hint, lang, capsys):
    assert main([*args, "--lang", lang]) == 2
    err = capsys.readouterr().err
    assert {"en": f"did you mean {hint}?", "es": f"¿quiso decir {hint}?"}[lang] in err
    assert "--help" in err


def test_a_name_far_from_every_option_gets_no_suggestion(capsys):
    assert main(["train", "--bogus", "--lang", "en"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "did you mean" not in err


# -- test_triton without triton -----------------------------------------------------------------------------
@pytest.mark.slow  # pytest in a subprocess collects the file: ~10 s on a loaded machine
def test_triton_skip_reasons_say_what_happens_without_triton():
    code = ("import sys; sys.modules['triton'] = None; import pytest; "
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', "
            "'tests/kernels/test_triton.py']))")  # fmt: skip
    env = {k: v for k, v in _env().items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("triton is not installed" in line for line in reasons), reasons
    assert "test_in_a_subprocess" not in proc.stdout  # it is skipped itself: it runs nothing
