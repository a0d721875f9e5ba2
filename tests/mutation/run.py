"""Plant known bugs one at a time and check that the tests aimed at each one fail.

A tool, not a CI gate (each bug runs its tests in a fresh process; the whole list takes minutes).
Each ``tests/mutation/bugs_<area>.py`` holds ``BUGS``, a list of dicts::

    dict(name="short-id", path="src/bnlab/x.py", old="text found exactly once", new="the bug",
         tests=["tests/test_x.py::test_y"])

For every bug the runner copies ``src/`` to a temporary folder, replaces ``old`` by ``new`` there, and runs
``python -m pytest`` on ``tests`` with ``PYTHONPATH`` pointing at the copy. A bug is *caught* when pytest
reports a failure; it *survives* when the tests pass. Before planting, ``--clean`` runs every bug's tests on
the unchanged copy (they must pass, or "caught" would mean nothing).

    python tests/mutation/run.py              # every bug; prints one line each and the score
    python tests/mutation/run.py --list       # the catalog only
    python tests/mutation/run.py -k sync      # the bugs whose name or area contains "sync"
    python tests/mutation/run.py --clean      # also run each bug's tests unplanted first
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def catalog() -> list[dict]:
    """Every bug of every ``bugs_*.py`` file, with its area (the file's suffix) added."""
    bugs = []
    for file in sorted(HERE.glob("bugs_*.py")):
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for bug in module.BUGS:
            bugs.append({**bug, "area": file.stem.removeprefix("bugs_")})
    return bugs


def stale(root: Path, bug: dict) -> str | None:
    """Why ``bug`` cannot be planted in the tree at ``root`` (its text must occur exactly once), or None."""
    target = root / bug["path"]
    if not target.is_file():
        return f"{bug['path']} does not exist"
    count = target.read_text(encoding="utf-8").count(bug["old"])
    return None if count == 1 else f"its text occurs {count} times in {bug['path']} (needs exactly 1)"


def plant(copy: Path, bug: dict) -> None:
    """Replace ``old`` by ``new`` in the copy."""
    target = copy / bug["path"]
    target.write_text(target.read_text(encoding="utf-8").replace(bug["old"], bug["new"]), encoding="utf-8")


def run_tests(copy: Path, tests: list[str], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return proc.returncode, lines[-1] if lines else proc.stderr.strip()[-200:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only bugs whose name or area contains this text")
    parser.add_argument("--list", action="store_true", help="print the catalog and stop")
    parser.add_argument("--clean", action="store_true", help="first run each bug's tests on the unplanted tree")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per bug (default 900)")
    args = parser.parse_args(argv)

    bugs = [b for b in catalog() if args.k in b["name"] or args.k in b["area"]]
    if args.list:
        for b in bugs:
            print(f"{b['area']:>10}  {b['name']:<44} {b['path']}  ->  {' '.join(b['tests'])}")
        print(f"{len(bugs)} bugs")
        return 0

    caught, survived, broken = [], [], []
    with tempfile.TemporaryDirectory(prefix="bnlab-mutation-") as tmp:
        for b in bugs:
            why = stale(ROOT, b)
            if why:
                broken.append(b["name"])
                print(f"STALE     {b['name']:<44} {why}", flush=True)
                continue
            copy = Path(tmp) / b["name"]
            shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            start = time.monotonic()
            if args.clean:
                code, last = run_tests(copy, b["tests"], args.timeout)
                if code != 0:
                    broken.append(b["name"])
                    print(f"BROKEN    {b['name']:<44} its tests fail unplanted: {last}", flush=True)
                    shutil.rmtree(copy)
                    continue
            plant(copy, b)
            code, last = run_tests(copy, b["tests"], args.timeout)
            seconds = time.monotonic() - start
            # pytest: 1 = tests failed; 2/3/4/5 = interrupted, internal or usage error, nothing collected;
            # -1: timed out; below -1: the test process died of a signal (a planted bug that crashes it, such as
            # a streaming store to a misaligned address, is noticed).
            if code == 1 or code < 0:
                caught.append(b["name"])
                verdict = "caught"
            elif code == 0:
                survived.append(b["name"])
                verdict = "SURVIVED"
            else:
                broken.append(b["name"])
                verdict = f"ERROR {code}"
            print(f"{verdict:<9} {b['name']:<44} {seconds:6.1f} s  {last}", flush=True)
            shutil.rmtree(copy)
    total = len(caught) + len(survived)
    print(f"score: {len(caught)} of {total} planted bugs caught" + (f"; {len(broken)} could not run" if broken else ""))
    if survived:
        print("survived: " + ", ".join(survived))
    return 0 if not survived and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
