"""The ``--nproc`` launcher and signals (issue 20), with real processes: a failing rank fails the run;
Ctrl-C at any moment, to the launcher alone or to its whole process group, gives one message and exit
130; SIGTERM or SIGKILL of the launcher leaves no replica behind; a killed replica stops the others and is
named; Ctrl-C during the last step is a finished run; ``bench`` interrupted prints one message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bnlab import cli, parallel
from bnlab.cli import main
from bnlab.inference import load_checkpoint
from bnlab.training import load_training_state
from conftest import wait_for_file

ARGS = ["train", "--batch-size", "63", "--quiet", "--lang", "en"]
STEPS_PER_EPOCH = 1258 // 63  # 19


def _env(**extra):
    return {**os.environ, "LANG": "C.UTF-8", "BNLAB_DIST_TIMEOUT": "60", **extra}


def _start(out, *extra, epochs=400):
    cmd = [sys.executable, "-m", "bnlab", *ARGS, "--epochs", str(epochs), "--out", str(out), "--nproc", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)  # fmt: skip


def _session(sid: int) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of the live processes of session ``sid`` (zombies are left out)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, session
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((int(stat.parent.name), int(fields[1]), cmdline))
    return found


def _replicas(launcher: int) -> list[int]:
    return sorted(pid for pid, ppid, cmd in _session(launcher) if ppid == launcher and "spawn_main" in cmd)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {seconds} s"
        time.sleep(0.02)


def _no_process_left(proc, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while _session(proc.pid):
        assert time.monotonic() < deadline, f"still alive after {seconds} s: {_session(proc.pid)}"
        time.sleep(0.05)


def _finish(proc, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        _kill_session(proc)


def _kill_session(proc) -> None:
    for pid, _, _ in _session(proc.pid):  # the launcher and whatever it left (replicas are not in its group)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def _unchanged(path: Path, seconds: float) -> bool:
    before = path.stat().st_mtime_ns
    time.sleep(seconds)
    return path.stat().st_mtime_ns == before


# -- the launcher tied to its children ---------------------------------------------------------------------
_ORPHAN = """
import os, subprocess, sys, time
from bnlab import _lifeline
mode = sys.argv[1]
if mode == "child":
    parent = int(sys.argv[2])
    if sys.argv[3] == "watchdog":  # the fallback alone (no prctl)
        _lifeline.watch_parent(parent, interval=0.05)
    else:
        _lifeline.die_with_parent(parent)
    print("ready", flush=True)
    time.sleep(120)
else:
    child = subprocess.Popen([sys.executable, "-c", __doc__, "child", str(os.getpid()), mode])
    print(child.pid, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("mode", ["prctl", "watchdog"])
def test_a_child_dies_with_its_parent_even_when_the_parent_is_killed(mode):
    script = "__doc__ = " + repr(_ORPHAN) + "\n" + _ORPHAN
    parent = subprocess.Popen([sys.executable, "-c", script, mode], stdout=subprocess.PIPE, text=True, env=_env(),
                              start_new_session=True)  # fmt: skip
    try:
        child = int(parent.stdout.readline())
        _wait(lambda: any(pid == child for pid, _, _ in _session(parent.pid)), 30, "child started")
        time.sleep(1.0)  # let it set itself up
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        _no_process_left(parent, 3.0)
    finally:
        _kill_session(parent)


def _rank1_returns(code: int) -> int:
    return code if os.environ["RANK"] == "1" else 0


def _rank1_raises() -> int:
    if os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 failed on purpose")
    return 0


@pytest.mark.slow
def test_a_rank_other_than_0_that_fails_fails_the_run():
    assert parallel.spawn(2, _rank1_returns, 0) == 0
    assert parallel.spawn(2, _rank1_returns, 3) == 3
    run = parallel.launch(2, _rank1_raises)
    assert run.code == 1 and run.how == "failed" and run.rank == 1 and run.statuses == [0, 1]


# -- signals to `train --nproc 2` --------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_to_the_launcher_alone_stops_every_rank_after_the_same_step(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        wait_for_file(out / "last.pt", proc, 240)  # the first epoch's checkpoint: both ranks are training
        os.kill(proc.pid, signal.SIGINT)  # `kill -INT <launcher>`: the replicas are not sent anything
        _, err = proc.communicate(timeout=120)
        _no_process_left(proc, 5.0)
    finally:
        _kill_session(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("Interrupted") == 1, err
    assert "--resume" in err
    step = int(err.split("Interrupted at step ")[1].split("/")[0])
    saved = load_training_state(out / "last.pt")  # resumable: a complete training checkpoint
    assert saved["step"] == step > STEPS_PER_EPOCH - 1 and len(saved["history"]["loss"]) == step


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_replicas_die_with_their_launcher(how, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        wait_for_file(out / "last.pt", proc, 240)
        assert len(_replicas(proc.pid)) == 2
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=30)
        _no_process_left(proc, 3.0)  # no replica keeps training
        assert _unchanged(out / "last.pt", 2.0)  # nor writing
        _, err = proc.communicate(timeout=30)
    finally:
        _kill_session(proc)
    if how == "SIGTERM":
        assert proc.returncode == 143, err
        assert "Stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    load_training_state(out / "last.pt")


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_a_killed_replica_stops_the_others_and_is_named(rank, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        wait_for_file(out / "last.pt", proc, 240)
        os.kill(_replicas(proc.pid)[rank], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        _no_process_left(proc, 3.0)
    finally:
        _kill_session(proc)
    assert proc.returncode == 1, err
    assert f"Rank {rank} of 2 was killed by SIGKILL" in err and "--resume" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert _unchanged(out / "last.pt", 1.0)


def _at_start(proc, out):
    time.sleep(0.6)  # the launcher is still importing (torch takes seconds)


def _during_imports(proc, out):
    _wait(lambda: len(_replicas(proc.pid)) == 2, 240, "two replicas")  # started, importing torch
    time.sleep(1.0)


def _mid_training(proc, out):
    wait_for_file(out / "last.pt", proc, 240)


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment, to",
    [(_at_start, "group"), (_during_imports, "group"), (_during_imports, "launcher"), (_mid_training, "launcher")],
    ids=["start-group", "imports-group", "imports-launcher", "training-launcher"],
)
def test_ctrl_c_at_any_moment_gives_one_message_and_exit_130(moment, to, tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--lang", "es")  # the messages follow --lang
    try:
        moment(proc, out)
        if to == "group":  # Ctrl-C in a terminal: the whole foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, err = _finish(proc)
    finally:
        _kill_session(proc)
    # at start-up, -2 (a shell shows 130) is accepted as in test_cli_hardening's start-up test
    assert proc.returncode == 130 or (moment is _at_start and proc.returncode == -signal.SIGINT), err
    assert "Traceback" not in err and "terminate called" not in err and "Error" not in err, err
    assert err.count("Interrumpido") == 1 and "Interrupted" not in err, err


@pytest.mark.slow
def test_resume_of_a_finished_run_is_one_message_and_exit_2(tmp_path):
    out = tmp_path / "run"
    assert main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0
    done = subprocess.run([sys.executable, "-m", "bnlab", *ARGS, "--epochs", "1", "--out", str(out), "--nproc", "2",
                           "--resume"], capture_output=True, text=True, env=_env(), timeout=300,
                          start_new_session=True)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Connection" not in done.stderr, done.stderr
    assert done.stderr.count("has already done 19 of the 19 steps") == 1, done.stderr


def test_resume_from_a_damaged_checkpoint_is_refused_before_any_replica_starts(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    assert main([*ARGS, "--epochs", "1", "--out", str(out), "--nproc", "2", "--resume"]) == 2
    err = capsys.readouterr().err  # said by this process (a replica's words would not be captured here)
    assert err.count("is not a training checkpoint written by 'bnlab train'") == 1, err


# -- Ctrl-C during the last step -------------------------------------------------------------------------
def test_ctrl_c_during_the_last_step_is_a_finished_run(tmp_path, capsys, monkeypatch):
    import bnlab.training.loop as training  # the module whose fit() calls save_checkpoint

    real_save = training.save_checkpoint

    def save_then_ctrl_c(path, state):  # the last step's checkpoint, then Ctrl-C before the step ends
        saved = real_save(path, state)
        if state["step"] == STEPS_PER_EPOCH:
            os.kill(os.getpid(), signal.SIGINT)
        return saved

    monkeypatch.setattr(training, "save_checkpoint", save_then_ctrl_c)
    out = tmp_path / "run"
    assert main([*ARGS, "--epochs", "1", "--out", str(out), "--lang", "es"]) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "el entrenamiento ya había terminado" in err and "--resume" not in err, err
    assert (out / "history.json").is_file()
    assert load_checkpoint(out / "last.pt")["step"] == STEPS_PER_EPOCH
    # nothing to resume, as the message says
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    assert main([*ARGS, "--epochs", "1", "--out", str(out), "--resume"]) == cli.EXIT_USAGE
    assert "nothing to train" in capsys.readouterr().err


# -- bench ------------------------------------------------------------------------------------------------
_FAKE_BENCH = textwrap.dedent("""
    import time
    print("benchmark running", flush=True)
    time.sleep(120)
""")


def _bench(cwd):
    cmd = [sys.executable, "-m", "bnlab", "bench", "--lang", "en"]
    return subprocess.Popen(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            start_new_session=True)  # fmt: skip


@pytest.mark.parametrize("to", ["group", "bnlab"])
def test_bench_interrupted_prints_one_message_and_leaves_no_process(to, tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "cpu.py").write_text(_FAKE_BENCH)  # found in the working directory first
    proc = _bench(tmp_path)
    try:
        assert proc.stdout.readline() == "benchmark running\n"
        if to == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        _no_process_left(proc, 3.0)
    finally:
        _kill_session(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.count("Interrupted.") == 1, err


def test_bench_dies_with_bnlab(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "cpu.py").write_text(_FAKE_BENCH)
    proc = _bench(tmp_path)
    try:
        assert proc.stdout.readline() == "benchmark running\n"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _no_process_left(proc, 3.0)
    finally:
        _kill_session(proc)


@pytest.mark.slow
def test_replicas_leave_the_launchers_process_group(tmp_path):
    # a terminal's Ctrl-C goes to the foreground process group: the replicas are out of it, so only the
    # launcher gets it and forwards it once (a replica left in it would get two interrupts)
    proc = _start(tmp_path / "run")
    try:
        wait_for_file(tmp_path / "run" / "last.pt", proc, 240)  # the replicas are training by now
        replicas = _replicas(proc.pid)
        assert len(replicas) == 2, _session(proc.pid)
        assert os.getpgid(proc.pid) == proc.pid
        for pid in replicas:
            assert os.getpgid(pid) != os.getpgid(proc.pid), f"replica {pid} is in the launcher's process group"
    finally:
        proc.send_signal(signal.SIGTERM)
        _finish(proc)
