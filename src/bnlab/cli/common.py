"""What the subcommands share: exit codes, the bilingual parser, argument types, checks, the thread policy.

Every word comes from the ``cli`` catalogs (:func:`bnlab.i18n.t`); numbers are written by
:mod:`bnlab.i18n.numbers`. Standard library only: torch is imported by the commands that need it, when they run.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from .. import choices
from ..choices import DEFAULT_THREADS
from ..i18n import from_locale, t

EXIT_DIVERGED = 1
EXIT_FAILED = 1  # a replica of `train --nproc N` failed or was killed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a process killed by SIGPIPE, e.g. `bnlab explain ... | head`

#: The languages ``--help`` shows side by side, so that a reader finds their own whatever the locale says (a
#: language added through the catalogs is shown after them when it is the one chosen).
HELP_LANGUAGES = ("en", "es")


class UsageError(Exception):
    """A bad argument found after parsing; ``flag`` names the option at fault."""


def default_lang(environ: Mapping[str, str] | None = None) -> str:
    """The language of the locale (LC_ALL, then LC_MESSAGES, then LANG) when a catalog has it, else ``"en"``."""
    return from_locale(environ)


def speaks() -> bool:
    """False in a replica other than rank 0 of a data-parallel run (``--nproc``, torchrun): rank 0 speaks."""
    try:
        return not (int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0)
    except ValueError:
        return True


# -- help texts: every language of --help side by side ------------------------------------------------------
def _help_languages() -> tuple[str, ...]:
    return HELP_LANGUAGES if Parser.lang in HELP_LANGUAGES else (*HELP_LANGUAGES, Parser.lang)


def _each(key: str, fields: dict) -> list[str]:
    texts: list[str] = []
    for lang in _help_languages():
        text = t(key, lang, **fields)
        if text not in texts:  # a key the added language lacks falls back to English: say it once
            texts.append(text)
    return texts


def both(key: str, **fields) -> str:
    """A help text as ``--help`` shows it: ``"show this help and exit / muestra esta ayuda y termina"``."""
    return " / ".join(_each(key, fields))


def lines(key: str, **fields) -> str:
    """A help description, one language after the other (each may span lines)."""
    return "\n".join(_each(key, fields))


# -- argument types (their messages in the language of the command) --------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(t("cli.arg.not_integer", Parser.lang, text=repr(text))) from None
    if value < 1:
        raise argparse.ArgumentTypeError(t("cli.arg.at_least_1", Parser.lang, value=value))
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(t("cli.arg.not_number", Parser.lang, text=repr(text))) from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(t("cli.arg.not_positive", Parser.lang, text=text))
    return value


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(t("cli.arg.batch_of_1", Parser.lang))
    return value


def seeds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.replace(" ", "").split(",") if s != "")
    except ValueError:
        raise argparse.ArgumentTypeError(t("cli.arg.seeds", Parser.lang, text=repr(text))) from None
    if not values or any(s < 0 for s in values):
        raise argparse.ArgumentTypeError(t("cli.arg.no_seed", Parser.lang, text=repr(text)))
    return values


# -- parser -----------------------------------------------------------------------------------------------
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def suggestion(word: str, candidates: Sequence[str], lang: str) -> str | None:
    """Suggest "did you mean --epochs?" for a mistyped ``word``, or None when nothing is close (difflib)."""
    names = {c.lstrip("-"): c for c in candidates}  # "--" in both would make any two options look alike
    close = difflib.get_close_matches(word.lstrip("-"), list(names), n=1, cutoff=0.6)
    return t("cli.parser.did_you_mean", lang, name=names[close[0]]) if close else None


class Formatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        if prefix is None:
            prefix = both("cli.parser.usage") + ": "
        return super().add_usage(usage, actions, groups, prefix=prefix)


class Parser(argparse.ArgumentParser):
    """argparse with bilingual section titles and errors that say how to get help (and suggest a near name).

    ``lang`` (set by :func:`bnlab.cli.main` before the parser is built) is the language of its messages."""

    lang = "en"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = both("cli.parser.arguments")
        self._optionals.title = both("cli.parser.options")
        self.add_argument("-h", "--help", action="help", default=argparse.SUPPRESS, help=both("cli.help.help"))

    def error(self, message: str):
        lang = Parser.lang
        found = _INVALID_CHOICE.search(message)  # a mistyped command or choice (as Python 3.14's suggest_on_error)
        if found and "did you mean" not in message and "maybe you meant" not in message:
            near = suggestion(found.group(1), re.findall(r"'([^']*)'", found.group(2)), lang)
            message += f"; {near}" if near else ""
        self.print_usage(sys.stderr)
        error, try_help = t("cli.error", lang), t("cli.try_help", lang, prog=self.prog)
        self.exit(EXIT_USAGE, f"{self.prog}: {error}: {message}\n{try_help}\n")

    def unrecognized(self, extra: Sequence[str], lang: str):
        """Refuse the ``extra`` arguments that parsing left, suggesting the option meant for a mistyped one."""
        message = t("cli.parser.unrecognized", lang, args=" ".join(extra))
        options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for word in extra:
            if word.startswith("--"):
                near = suggestion(word.split("=", 1)[0], options, lang)
                if near:
                    message += f"; {near}"
                    break
        self.error(message)

    def command_parser(self, args: argparse.Namespace) -> Parser:
        """The parser of the (sub)command that ``args`` names, e.g. that of ``experiment paper-fig1``."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(args, action.dest, None))
                if isinstance(chosen, Parser):
                    return chosen.command_parser(args)
        return self


def add_lang(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument("--lang", choices=choices.LANGS, default=None if top else argparse.SUPPRESS,
                   help=both("cli.help.lang"))  # fmt: skip


def add_allow_legacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-legacy", action="store_true", help=both("cli.help.allow_legacy"))


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: the one thread policy of every command that trains or evaluates (see :func:`set_threads`)."""
    p.add_argument(
        "--threads",
        type=positive_int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=both("cli.help.threads", threads=DEFAULT_THREADS),
    )


def add_quiet(p: argparse.ArgumentParser, bars: int = 1) -> None:
    """``--quiet``: no progress bar(s)."""
    p.add_argument("--quiet", action="store_true", help=both("cli.help.quiet" if bars > 1 else "cli.help.quiet_one"))


# -- the thread policy ------------------------------------------------------------------------------------
_saved_threads: list[int] = []


def set_threads(n: int) -> None:
    """Run torch on ``n`` threads (intra-op, and inter-op where torch still allows it) until :func:`restore_threads`.

    Every command that trains or evaluates calls this once, with its ``--threads``, right before its work.
    """
    import torch

    if not _saved_threads:
        _saved_threads.append(torch.get_num_threads())
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # settable once per process, before any inter-op work (a second command in-process)
        pass


def restore_threads() -> None:
    """Give torch back the intra-op thread count it had before :func:`set_threads` (``main`` calls this at exit)."""
    torch = sys.modules.get("torch")
    if _saved_threads and torch is not None:
        torch.set_num_threads(_saved_threads.pop())
    _saved_threads.clear()


# -- checks shared by the commands ------------------------------------------------------------------------
def check_data(dataset: str, data: Path | None, lang: str, flag: str = "--data") -> None:
    if dataset == "digits":
        if data is not None:
            raise UsageError(t("cli.digits_no_data", lang))
        return
    if data is None:
        if dataset == "mnist":  # the 10,000 digits shipped with bnlab
            return
        raise UsageError(t("cli.need_data", lang, dataset=dataset, what=t(f"cli.what.{dataset}", lang)))
    if not data.exists():
        raise UsageError(t("cli.no_path", lang, flag=flag, path=data))


def load(dataset: str, data: Path | None, seed: int, lang: str):
    from ..data import MNIST10K, load_dataset

    try:
        return load_dataset(dataset, data, seed=seed)
    except (ValueError, OSError) as err:
        path = MNIST10K if data is None and dataset == "mnist" else data
        raise UsageError(t("cli.bad_data", lang, flag="--data", path=path, err=err)) from None


def writable_dir(path: Path, flag: str, lang: str) -> bool:
    """Check that ``path`` is (or can become) a writable folder; return whether it existed before."""
    if path.exists() and not path.is_dir():
        raise UsageError(t("cli.out_not_dir", lang, flag=flag, path=path))
    existed = path.exists()
    probe = path if existed else next((p for p in path.parents if p.exists()), Path.cwd())
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        err = t("cli.why_not_a_folder", lang) if not probe.is_dir() else t("cli.why_no_permission", lang, folder=probe)
        raise UsageError(t("cli.out_unwritable", lang, flag=flag, path=path, err=err))
    return existed


def remove_if_empty(path: Path) -> None:
    """After an interrupted command: remove the folder it created if nothing was written in it yet."""
    for folder in (path / "figures", path):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


@contextlib.contextmanager
def checkpoint_warnings(lang: str, show: bool = True):
    """While a checkpoint loads: the library's (English) warning about a legacy checkpoint is given again in the
    command's language; with ``show`` False it is not given at all (the command said it already, or another
    process of the command says it). Other warnings pass as they are."""
    from ..inference import LegacyCheckpointWarning

    if not show:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=LegacyCheckpointWarning)
            yield
        return
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LegacyCheckpointWarning)
            yield
    finally:  # also when the load failed: what was said before the error is still said
        for w in caught:
            if not isinstance(w.message, LegacyCheckpointWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            else:
                m = w.message
                text = t("cli.legacy_checkpoint", lang, path=m.path, version=m.version, current=m.current)
                warnings.warn(text, UserWarning, stacklevel=3)


def read_training_checkpoint(path: Path, lang: str, allow_legacy: bool = False, say_legacy: bool = True) -> dict:
    from ..inference import CheckpointError
    from ..training import load_training_state

    try:
        with checkpoint_warnings(lang, show=say_legacy):
            return load_training_state(path, allow_legacy=allow_legacy)
    except CheckpointError as err:
        raise UsageError(t("cli.not_ckpt", lang, path=path, err=err)) from None
    except OSError as err:  # a folder, no permission, ...
        raise UsageError(t("cli.unreadable", lang, flag="CHECKPOINT", path=path, err=err)) from None


def unwritable(flag: str, path: Path, err: OSError, lang: str) -> UsageError:
    """The message for a file that could not be written (a full disk, no permission, a name too long...)."""
    return UsageError(t("cli.out_unwritable", lang, flag=flag, path=path, err=err))


def say_replicas_ended(run, nproc: int, lang: str, resume: str = "") -> int | None:
    """After ``parallel.launch``: say a run that was terminated or whose replica failed (rank, signal or exit
    status, and ``resume``: what the user can continue from); return its exit status, or None when the
    replicas ended otherwise (the caller says an interrupt in its own words)."""
    import signal

    if run.how == "terminated":
        print(t("cli.terminated", lang, sig=signal.Signals(run.signal).name, resume=resume), file=sys.stderr)
        return run.code
    if run.how == "failed":
        status = run.status
        if status < 0:
            how = t("cli.rank_killed", lang, sig=signal.Signals(-status).name)
        else:
            how = t("cli.rank_exit", lang, status=status)
        print(t("cli.rank_failed", lang, rank=run.rank, nproc=nproc, how=how, resume=resume), file=sys.stderr)
        return EXIT_FAILED
    return None
