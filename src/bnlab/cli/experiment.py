"""``bnlab experiment``: reproduce an experiment of the paper (paper-fig1) or the small-batch study."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..i18n import t
from .common import (
    Parser,
    UsageError,
    add_lang,
    add_quiet,
    add_threads,
    both,
    lines,
    positive_float,
    positive_int,
    remove_if_empty,
    seeds,
    set_threads,
    unwritable,
    writable_dir,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "experiment",
        help=both("cli.help.experiment.help"),
        description=lines("cli.help.experiment.description"),
    )
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=Parser)
    exp.required = True
    _add_paper_fig1(exp)
    _add_small_batch(exp)
    return p


def run(args) -> int:
    if args.experiment == "small-batch":
        return _run_small_batch(args)
    return _run_paper_fig1(args)


# -- paper-fig1 -------------------------------------------------------------------------------------------
def _add_paper_fig1(exp) -> None:
    q = exp.add_parser(
        "paper-fig1",
        help=both("cli.help.paper_fig1.help"),
        description=lines("cli.help.paper_fig1.description"),
    )
    q.add_argument("--data", metavar="PATH", type=Path, default=None, help=both("cli.help.paper_fig1.data"))
    q.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-paper-fig1"),
                   help=both("cli.help.paper_fig1.out"))  # fmt: skip
    q.add_argument("--steps", type=positive_int, default=10_000, help=both("cli.help.paper_fig1.steps"))
    q.add_argument("--lr", type=positive_float, default=0.1, help=both("cli.help.paper_fig1.lr"))
    q.add_argument("--seed", type=int, default=0, help=both("cli.help.seed"))
    add_threads(q)
    add_quiet(q, bars=2)
    add_lang(q)


def _run_paper_fig1(args) -> int:
    lang = args.lang
    if args.data is not None and not args.data.exists():
        raise UsageError(t("cli.no_path", lang, flag="--data", path=args.data))
    existed = writable_dir(args.out, "--out", lang)
    from ..data import MNIST10K
    from ..io import WriteError
    from ..report import run_paper_fig1

    data = MNIST10K if args.data is None else args.data
    set_threads(args.threads)
    try:
        run_paper_fig1(data, args.out, steps=args.steps, lr=args.lr, seed=args.seed, lang=lang,
                       progress=not args.quiet, threads=None)  # fmt: skip
    except KeyboardInterrupt:
        if not existed:
            remove_if_empty(args.out)
        raise
    except WriteError as err:  # an output file, not the data
        raise unwritable("--out", args.out, err, lang) from None
    except (ValueError, OSError) as err:
        raise UsageError(t("cli.bad_data", lang, flag="--data", path=data, err=err)) from None
    return 0


# -- small-batch (issue 11) -------------------------------------------------------------------------------
def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(" ", "").split(",") if s != "")
    except ValueError:
        sizes = ()
    if not sizes or any(m < 2 for m in sizes):
        raise argparse.ArgumentTypeError(t("cli.arg.batch_sizes", Parser.lang, text=repr(text)))
    return sizes


def _add_small_batch(exp) -> None:
    q = exp.add_parser(
        "small-batch",
        help=both("cli.help.small_batch.help"),
        description=lines("cli.help.small_batch.description"),
    )
    q.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-small-batch"),
                   help=both("cli.help.small_batch.out"))  # fmt: skip
    q.add_argument("--batch-sizes", type=_batch_sizes, default=(2, 4, 8, 16, 32, 64), metavar="M1,M2,...",
                   help=both("cli.help.small_batch.batch_sizes"))  # fmt: skip
    q.add_argument("--seeds", type=seeds, default=(0, 1, 2), metavar="S1,S2,...",
                   help=both("cli.help.small_batch.seeds"))  # fmt: skip
    q.add_argument("--samples", type=positive_int, default=2560, help=both("cli.help.small_batch.samples"))
    q.add_argument("--lr", type=positive_float, default=0.002, help=both("cli.help.small_batch.lr"))
    q.add_argument("--workers", type=positive_int, default=2, help=both("cli.help.small_batch.workers"))
    q.add_argument("--data", metavar="PATH", type=Path, default=None, help=both("cli.help.small_batch.data"))
    add_threads(q)
    add_quiet(q, bars=2)
    add_lang(q)


def _run_small_batch(args) -> int:
    from ..io import WriteError
    from ..report.small_batch import run_small_batch

    lang = args.lang

    if args.data is not None and not args.data.exists():
        raise UsageError(t("cli.no_path", lang, flag="--data", path=args.data))
    set_threads(args.threads)
    try:
        run_small_batch(args.out, batch_sizes=args.batch_sizes, seeds=args.seeds, samples=args.samples,
                        lr32=args.lr, data_path=args.data, lang=lang, progress=not args.quiet,
                        threads=None, workers=args.workers)  # fmt: skip
    except WriteError as err:  # an output file, not the data
        raise unwritable("--out", args.out, err, lang) from None
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    return 0
