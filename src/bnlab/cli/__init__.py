"""The ``bnlab`` command: demo, train, evaluate, explain, experiment, bench (one module each).

Every word comes from the ``cli`` catalogs (:mod:`bnlab.i18n`). Help texts are in English and Spanish side by
side; messages are in one language, chosen by ``--lang`` or, by default, from the locale (``LC_ALL``,
``LC_MESSAGES``, ``LANG``: ``es_ES.UTF-8`` gives Spanish; a language added with one catalog per domain is
chosen the same way, and its help texts follow the English and Spanish ones).

Exit status: 0 on success, 1 when training diverged (NaN/inf loss) or a replica of ``train --nproc`` failed,
2 for bad arguments or unreadable input, 130 when interrupted (143 when the launcher of ``train --nproc`` got
SIGTERM).

Each subcommand module has ``add_parser(subparsers)`` and ``run(args)``; :func:`main` parses and dispatches.
Every command that trains or evaluates takes ``--threads N`` (default 1, applied by
:func:`bnlab.cli.common.set_threads`). ``bnlab --help``, ``bnlab --version`` and ``bnlab explain`` (text) do
not import torch: every module that needs it is imported inside the command that uses it, so the quick
commands answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..choices import ACTIVATIONS, DATASETS, FAMILY_NORMS, NORMS, OPTIMIZERS
from ..i18n import lang_from_argv, t
from . import bench, demo, evaluate, experiment, explain, train
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
    UsageError,
    add_lang,
    both,
    default_lang,
    lines,
    restore_threads,
    speaks,
)
from .signals import SigintWatch, quiet_broken_pipe

__all__ = ["main", "build_parser", "default_lang"]
__all__ += ["EXIT_DIVERGED", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE"]
__all__ += ["DATASETS", "NORMS", "FAMILY_NORMS", "ACTIVATIONS", "OPTIMIZERS", "UsageError"]

#: name -> module with ``add_parser(subparsers)`` and ``run(args)``, in the order of ``bnlab --help``
COMMANDS = {"demo": demo, "train": train, "evaluate": evaluate, "explain": explain, "experiment": experiment,
            "bench": bench}  # fmt: skip
#: the one command that passes options it does not know on (``bnlab bench --quick``)
_PASSES_OPTIONS_ON = ("bench",)


def build_parser() -> Parser:
    from .. import __version__

    parser = Parser(
        prog="bnlab",
        description=lines("cli.help.top.description"),
        epilog=f"{both('cli.help.top.start_with')}:  bnlab demo\n"
        f"{both('cli.help.top.each_command')}:  bnlab COMMAND --help",
    )
    add_lang(parser, top=True)
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}",
                        help=both("cli.help.top.version"))  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bnlab`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    lang = lang_from_argv(argv) or default_lang()
    Parser.lang = lang
    with SigintWatch() as sigint:
        try:
            return _dispatch(argv, lang)
        except KeyboardInterrupt:  # at any moment, start-up included
            if speaks():
                print(t("cli.interrupted_plain", lang), file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return quiet_broken_pipe()
        except Exception:
            if not sigint.seen:
                raise
            # an error that follows Ctrl-C is the interrupt's doing (e.g. a library that was stopped half-way
            # in code of its own that imports lazily): report the interrupt
            if speaks():
                print(t("cli.interrupted_plain", lang), file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            restore_threads()


def _dispatch(argv: list[str], lang: str) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in _PASSES_OPTIONS_ON:
            parser.command_parser(args).unrecognized(extra, args.lang or lang)
    except SystemExit as stop:  # --help, --version, or an argparse error (already printed)
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_USAGE
    args.lang = args.lang or lang
    args.argv = argv
    args.extra = extra
    prog = "bnlab " + args.command
    try:
        code = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except UsageError as err:
        if speaks():
            lang = args.lang
            print(f"{prog}: {t('cli.error', lang)}: {err}\n{t('cli.try_help', lang, prog=prog)}", file=sys.stderr)
        return EXIT_USAGE
