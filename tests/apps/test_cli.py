"""The bnlab command: languages, bad arguments, train → evaluate, explain, Ctrl-C through a real SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bnlab.cli import default_lang, main
from bnlab.inference import load_checkpoint
from conftest import wait_for_file


def _run(*args, lang_env: str = "C.UTF-8", timeout: float = 120, **kwargs):
    env = {**os.environ, "LANG": lang_env, "LC_ALL": "", "LC_MESSAGES": ""}
    return subprocess.run(
        [sys.executable, "-m", "bnlab", *args], capture_output=True, text=True, env=env, timeout=timeout, **kwargs
    )


@pytest.mark.parametrize(
    "env, lang",
    [
        ({}, "en"),
        ({"LANG": "es_ES.UTF-8"}, "es"),
        ({"LANG": "es_MX"}, "es"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LC_ALL": "en_GB.UTF-8", "LANG": "es_ES.UTF-8"}, "en"),  # LC_ALL wins
        ({"LC_ALL": "", "LC_MESSAGES": "es_AR.UTF-8", "LANG": "en_US"}, "es"),
        ({"LANG": "C.UTF-8"}, "en"),
    ],
)
def test_default_lang_follows_the_locale(env, lang):
    assert default_lang(env) == lang


def test_help_is_bilingual(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "show this help and exit / muestra esta ayuda y termina" in out
    for command in ("demo", "train", "evaluate", "explain", "experiment", "bench"):
        assert command in out
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "learning rate" in out and "tasa de aprendizaje" in out


def test_module_entry_point_runs():
    r = _run("--help")
    assert r.returncode == 0 and "usage / uso: bnlab" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--norm", "pixel"], "argument --norm: invalid choice: 'pixel'"),
        (["train", "--lr", "0"], "argument --lr: 0 must be a positive number"),
        (["train", "--lr", "fast"], "argument --lr: 'fast' is not a number"),
        (["train", "--batch-size", "1"], "at least 2 examples per batch"),
        (["train", "--epochs", "-3"], "argument --epochs: -3 must be at least 1"),
        (["train", "--dataset", "cifar10"], "--data is required with --dataset cifar10"),  # mnist ships with bnlab
        (["train", "--data", "x.npz"], "--data is not used with --dataset digits"),
        (["explain", "32,a"], "SHAPE must be positive integers"),
        (["explain", "32,28,28", "--layout", "NHWC"], "layout NHWC needs 4"),
        (["experiment", "paper-fig1", "--data", "missing.npz"], "--data missing.npz: no such file"),
        (["experiment", "fig9"], "invalid choice: 'fig9'"),
        (["demo", "--seeds", "a,b"], "give seeds as integers"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(args, message, capsys):
    assert main([*args, "--lang", "en"] if args else []) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "--help" in err  # says where to look


def test_missing_data_path_names_the_flag(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    assert main(["train", "--dataset", "mnist", "--data", str(missing), "--lang", "en"]) == 2
    assert f"--data {missing}: no such file or directory" in capsys.readouterr().err
    assert main(["experiment", "paper-fig1", "--data", str(missing), "--lang", "en"]) == 2
    assert f"--data {missing}" in capsys.readouterr().err


def test_unreadable_data_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    assert main(["train", "--dataset", "mnist", "--data", str(bad), "--lang", "en", "--out", str(tmp_path)]) == 2
    assert f"cannot read --data {bad}" in capsys.readouterr().err


def test_errors_in_spanish_from_the_locale():
    r = _run("train", "--dataset", "cifar10", lang_env="es_ES.UTF-8")  # (mnist ships with bnlab: no --data needed)
    assert r.returncode == 2
    assert "--data es obligatorio con --dataset cifar10" in r.stderr
    assert "Prueba 'bnlab train --help'" in r.stderr
    r = _run("train", "--dataset", "cifar10", "--lang", "en", lang_env="es_ES.UTF-8")
    assert "--data is required" in r.stderr  # --lang overrides the locale


def test_explain_prints_counts_and_draws(tmp_path, capsys):
    fig = tmp_path / "setb.png"
    assert main(["explain", "32,28,28,16", "--per", "activation", "--figure", str(fig), "--lang", "en"]) == 0
    out = capsys.readouterr().out
    assert "12,544" in out and "np.mean(t, axis=(0,))" in out
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["explain", "32x16x8x8", "--layout", "NCHW", "--lang", "es"]) == 0
    out = capsys.readouterr().out
    assert "2048" in out and "2 048" not in out and "conjuntos B" in out  # RAE: four digits stay together


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--out", str(out), "--quiet", "--lang", "en", "--norm", "activation"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Test accuracy (eval mode):" in text
    for name in ("last.pt", "history.json", "curves.png"):
        assert (out / name).is_file()
    assert main(args) == 2  # would overwrite the run
    assert "already exists: add --resume" in capsys.readouterr().err
    assert main([*args[:2], "2", *args[3:], "--resume"]) == 0  # one more epoch
    assert load_checkpoint(out / "last.pt")["step"] == 2 * (1258 // 32)
    capsys.readouterr()
    assert main(["evaluate", str(out / "last.pt"), "--recalibrate", "--lang", "en"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "Test accuracy (eval mode, running statistics)" in text
    assert "recalibrated statistics (Alg. 2)" in text
    assert "recalibrate" in captured.err  # the bar, on stderr
    assert main(["evaluate", str(out / "last.pt"), "--recalibrate", "--quiet", "--lang", "en"]) == 0
    captured = capsys.readouterr()
    assert captured.out == text and captured.err == ""
    assert main(["evaluate", str(tmp_path / "none.pt"), "--lang", "en"]) == 2
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["evaluate", str(tmp_path / "junk.pt"), "--lang", "en"]) == 2
    assert "is not a training checkpoint" in capsys.readouterr().err



@pytest.mark.parametrize(
    "norm, module", [("layer", "LayerNorm"), ("instance", "InstanceNorm2d"), ("group", "GroupNorm")]
)
def test_train_with_a_per_sample_member_of_the_family(norm, module, tmp_path, capsys):
    import torch

    from bnlab.data import load_digits
    from bnlab.training import evaluate, load_trained

    out = tmp_path / norm
    assert main(["train", "--norm", norm, "--epochs", "1", "--out", str(out), "--quiet", "--lang", "es"]) == 0
    capsys.readouterr()
    model, saved = load_trained(out / "last.pt")
    kinds = {type(m).__name__ for m in model.modules()}
    assert module in kinds and not any("BatchNorm" in k for k in kinds), kinds
    assert saved["model_spec"]["norm"] == norm
    # eval mode needs no population statistics: the same images give the same outputs in any batch
    data = load_digits(seed=0)
    x = data.x_test[:64]
    torch.testing.assert_close(model(x)[:5], model(x[:5]), rtol=1e-5, atol=1e-5)
    assert main(["evaluate", str(out), "--lang", "en"]) == 0
    acc = evaluate(model, data.x_test, data.y_test)["accuracy"]
    text = capsys.readouterr().out
    assert f"Test accuracy (eval mode, statistics of each image): {100 * acc:.1f}%" in text
    assert acc > 0.5  # one epoch of the digits
    # no BN layer: nothing for Alg. 2 to recalibrate, said before any output
    assert main(["evaluate", str(out), "--recalibrate", "--lang", "en"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "has no batch-normalization layer" in captured.err
    assert "without --recalibrate" in captured.err

@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "LANG": "C.UTF-8"}
    cmd = [sys.executable, "-m", "bnlab", "train", "--epochs", "400", "--out", str(out), "--quiet", "--lang", "en"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_file(out / "last.pt", proc, 90)  # the first epoch's checkpoint: training is under way
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Interrupted at step" in stderr and "Checkpoint saved to" in stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(out / "last.pt")
    assert 0 < saved["step"] < 400 * (1258 // 32)
    assert len(saved["history"]["loss"]) == saved["step"]
