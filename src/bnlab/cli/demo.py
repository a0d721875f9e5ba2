"""``bnlab demo``: train a CNN without BN, with BN per activation and per channel; write an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_lang,
    add_quiet,
    add_threads,
    both,
    lines,
    positive_int,
    remove_if_empty,
    seeds,
    set_threads,
    unwritable,
    writable_dir,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help=both("cli.help.demo.help"),
        description=lines("cli.help.demo.description"),
    )
    p.add_argument("--out", metavar="DIR", default="bnlab-demo", help=both("cli.help.demo.out"))
    add_lang(p)
    p.add_argument("--epochs", type=positive_int, default=8, help=both("cli.help.demo.epochs"))
    p.add_argument("--seeds", type=seeds, default=(0, 1), metavar="S1,S2,...", help=both("cli.help.demo.seeds"))
    add_threads(p)
    add_quiet(p, bars=2)
    return p


def run(args) -> int:
    lang = args.lang
    out = Path(args.out)
    existed = writable_dir(out, "--out", lang)
    from ..report import run_demo

    command = "bnlab demo" + (f" --out {args.out}" if args.out != "bnlab-demo" else "") + f" --lang {lang}"
    set_threads(args.threads)
    try:
        run_demo(out, lang=lang, epochs=args.epochs, seeds=args.seeds, progress=not args.quiet, command=command,
                 threads=None)  # fmt: skip
    except KeyboardInterrupt:
        if not existed:
            remove_if_empty(out)
        raise
    except OSError as err:
        raise unwritable("--out", out, err, lang) from None
    return 0
