"""``bnlab train --nproc 2`` (and under torchrun) on the digits equals the one-process run; killed mid-run,
it resumes exactly; Ctrl-C stops every rank after the same step."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bnlab.cli import main
from bnlab.inference import load_checkpoint
from conftest import wait_for_file

# 63 = 32 + 31: uneven shards on 2 processes; 1258 // 63 = 19 steps per epoch
ARGS = ["train", "--epochs", "2", "--batch-size", "63", "--quiet", "--lang", "en"]
STEPS = 2 * (1258 // 63)


def _cmd(out, *extra):
    return [sys.executable, "-m", "bnlab", *ARGS, "--out", str(out), "--nproc", "2", *extra]


def _env():
    return {**os.environ, "LANG": "C.UTF-8", "BNLAB_DIST_TIMEOUT": "60"}


@pytest.mark.slow
def test_two_processes_and_torchrun_equal_one_process_and_resume_after_a_kill(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    one = load_checkpoint(tmp_path / "one" / "last.pt")

    # two processes, killed (SIGKILL, the launcher and both ranks) once the first epoch's checkpoint exists
    out = tmp_path / "two"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                            start_new_session=True)  # fmt: skip
    try:
        wait_for_file(out / "last.pt", proc, 180)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # our own session: the launcher and its ranks
        proc.communicate(timeout=30)
    killed_at = load_checkpoint(out / "last.pt")["step"]
    assert 0 < killed_at < STEPS

    done = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, env=_env(), timeout=300,
                          start_new_session=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Test accuracy (eval mode)") == 1  # rank 0 alone prints
    assert f"Resuming from {out / 'last.pt'} (step {killed_at})" in done.stderr
    two = load_checkpoint(out / "last.pt")
    assert two["step"] == one["step"] == STEPS
    # same global batches, same loss, same weights and running statistics, up to float32 rounding
    torch.testing.assert_close(two["history"]["loss"], one["history"]["loss"], rtol=1e-4, atol=1e-4)
    assert two["history"]["eval_accuracy"] == pytest.approx(one["history"]["eval_accuracy"], abs=1 / 300)
    _same_weights(two, one)

    # the same run under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment)
    out = tmp_path / "torchrun"
    port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", port, "-m", "bnlab", *ARGS, "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, start_new_session=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Test accuracy (eval mode)") == 1
    _same_weights(load_checkpoint(out / "last.pt"), one)


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_after_the_same_step_and_leaves_no_process(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bnlab", *ARGS, "--out", str(out), "--nproc", "2", "--epochs", "400"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)  # fmt: skip
    try:
        wait_for_file(out / "last.pt", proc, 180)  # the first epoch's checkpoint: both ranks are training
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the launcher and both ranks get it
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "terminate called" not in err, err
    assert err.count("Interrupted at step") == 1 and "--resume" in err  # rank 0 alone speaks
    step = int(err.split("Interrupted at step ")[1].split("/")[0])
    assert load_checkpoint(out / "last.pt")["step"] == step
    deadline = time.monotonic() + 10
    while _alive_in_session(proc.pid):  # no rank outlives the launcher
        assert time.monotonic() < deadline, _alive_in_session(proc.pid)
        time.sleep(0.1)


def _alive_in_session(sid: int) -> list[str]:
    """The processes of session ``sid`` that still run (zombies, already ended, are left to init)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, session
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(stat.parent.name)
    return alive


def _same_weights(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["model"].keys() == b["model"].keys()
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=1e-4, atol=1e-4, msg=key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
