"""``bnlab bench``: run the CPU benchmark (benchmarks/cpu.py of a source checkout), passing options on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..i18n import t
from .common import add_lang, both, lines
from .signals import start_child


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help=both("cli.help.bench.help"),
        description=lines("cli.help.bench.description"),
    )
    add_lang(p)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help=both("cli.help.bench.args"))
    return p


def _find_benchmark() -> Path | None:
    candidates = [Path.cwd() / "benchmarks" / "cpu.py", Path(__file__).resolve().parents[3] / "benchmarks" / "cpu.py"]
    return next((p for p in candidates if p.is_file()), None)


def run(args) -> int:
    lang = args.lang
    path = _find_benchmark()
    if path is None:
        print(t("cli.bench_missing", lang), file=sys.stderr)
        return 1
    print(t("cli.bench_running", lang, path=path), file=sys.stderr)
    passthrough = args.args[1:] if args.args[:1] == ["--"] else args.args
    child = start_child([sys.executable, str(path), *passthrough, *args.extra])
    try:
        return child.wait()
    finally:
        if child.poll() is None:  # Ctrl-C (KeyboardInterrupt) or another error here
            child.kill()
            child.wait()
