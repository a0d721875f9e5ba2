"""What the subcommands share: exit codes, the bilingual parser, argument types, checks, the thread policy.

Standard library only: torch is imported by the commands that need it, when they run.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..choices import DEFAULT_THREADS, LANGS
from .messages import MSG

EXIT_DIVERGED = 1
EXIT_FAILED = 1  # a replica of `train --nproc N` failed or was killed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a process killed by SIGPIPE, e.g. `bnlab explain ... | head`


class UsageError(Exception):
    """A bad argument found after parsing; ``flag`` names the option at fault."""


def default_lang(environ: os._Environ | dict | None = None) -> str:
    """``"es"`` when the locale is Spanish (LC_ALL, then LC_MESSAGES, then LANG), else ``"en"``."""
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var)
        if value:
            return "es" if value.lower().startswith("es") else "en"
    return "en"


def lang_from_argv(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--lang" and i + 1 < len(argv) and argv[i + 1] in LANGS:
            return argv[i + 1]
        if a.startswith("--lang=") and a.split("=", 1)[1] in LANGS:
            return a.split("=", 1)[1]
    return None


def speaks() -> bool:
    """False in a replica other than rank 0 of a data-parallel run (``--nproc``, torchrun): rank 0 speaks."""
    try:
        return not (int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0)
    except ValueError:
        return True


# -- argument types with bilingual messages ---------------------------------------------------------------
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer / no es un entero") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 / debe ser al menos 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number / no es un número") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number / debe ser un número positivo")
    return value


def batch_size(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            "batch normalization needs at least 2 examples per batch / la normalización por lotes necesita "
            "al menos 2 ejemplos por lote"
        )
    return value


def seeds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(s) for s in text.replace(" ", "").split(",") if s != "")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give seeds as integers separated by commas, e.g. 0,1 / da las semillas como enteros "
            f"separados por comas, p. ej. 0,1"
        ) from None
    if not values or any(s < 0 for s in values):
        raise argparse.ArgumentTypeError(f"{text!r}: at least one seed ≥ 0 / al menos una semilla ≥ 0")
    return values


# -- parser -----------------------------------------------------------------------------------------------
_SUGGEST = {"en": "did you mean {name}?", "es": "¿quiso decir {name}?"}
_UNRECOGNIZED = {"en": "unrecognized arguments: %s", "es": "argumentos no reconocidos: %s"}
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def suggestion(word: str, candidates: Sequence[str], lang: str) -> str | None:
    """Suggest "did you mean --epochs?" for a mistyped ``word``, or None when nothing is close (difflib)."""
    names = {c.lstrip("-"): c for c in candidates}  # "--" in both would make any two options look alike
    close = difflib.get_close_matches(word.lstrip("-"), list(names), n=1, cutoff=0.6)
    return _SUGGEST[lang].format(name=names[close[0]]) if close else None


class Formatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        return super().add_usage(usage, actions, groups, prefix="usage / uso: " if prefix is None else prefix)


class Parser(argparse.ArgumentParser):
    """argparse with bilingual section titles and errors that say how to get help (and suggest a near name)."""

    lang = "en"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = "arguments / argumentos"
        self._optionals.title = "options / opciones"
        self.add_argument(
            "-h", "--help", action="help", default=argparse.SUPPRESS,
            help="show this help and exit / muestra esta ayuda y termina",
        )  # fmt: skip

    def error(self, message: str):
        m = MSG[Parser.lang]
        found = _INVALID_CHOICE.search(message)  # a mistyped command or choice (as Python 3.14's suggest_on_error)
        if found and "did you mean" not in message and "maybe you meant" not in message:
            near = suggestion(found.group(1), re.findall(r"'([^']*)'", found.group(2)), Parser.lang)
            message += f"; {near}" if near else ""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {m['error']}: {message}\n{m['try_help'].format(prog=self.prog)}\n")

    def unrecognized(self, extra: Sequence[str], lang: str):
        """Refuse the ``extra`` arguments that parsing left, suggesting the option meant for a mistyped one."""
        message = _UNRECOGNIZED[lang] % " ".join(extra)
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
    p.add_argument(
        "--lang", choices=LANGS, default=None if top else argparse.SUPPRESS,
        help="language of messages and reports (default: from the locale) / idioma de los mensajes e informes "
        "(por defecto: el de la configuración regional)",
    )  # fmt: skip


def add_allow_legacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-legacy", action="store_true",
                   help="also read a checkpoint of bnlab 0.1 (format version 1, without digests: damage in it "
                   "cannot be detected) / leer también un punto de control de bnlab 0.1 (versión 1 del formato, "
                   "sin resúmenes SHA-256: no se detectan daños en él)")  # fmt: skip


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: the one thread policy of every command that trains or evaluates (see :func:`set_threads`)."""
    p.add_argument("--threads", type=positive_int, default=DEFAULT_THREADS, metavar="N",
                   help=f"torch threads (default: {DEFAULT_THREADS}: the small networks bnlab trains run as fast on "
                   "one thread, and more threads on a busy machine make them many times slower; with --nproc, per "
                   f"process) / hilos de torch (por defecto: {DEFAULT_THREADS}: las redes pequeñas que entrena bnlab "
                   "van igual de rápido con un hilo, y más hilos en una máquina ocupada las hacen mucho más lentas; "
                   "con --nproc, por proceso)")  # fmt: skip


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
    m = MSG[lang]
    if dataset == "digits":
        if data is not None:
            raise UsageError(m["digits_no_data"])
        return
    if data is None:
        if dataset == "mnist":  # the 10,000 digits shipped with bnlab
            return
        raise UsageError(m["need_data"].format(dataset=dataset, what=m[f"what_{dataset}"]))
    if not data.exists():
        raise UsageError(m["no_path"].format(flag=flag, path=data))


def load(dataset: str, data: Path | None, seed: int, lang: str):
    from ..data import MNIST10K, load_dataset

    try:
        return load_dataset(dataset, data, seed=seed)
    except (ValueError, OSError) as err:
        path = MNIST10K if data is None and dataset == "mnist" else data
        raise UsageError(MSG[lang]["bad_data"].format(flag="--data", path=path, err=err)) from None


def writable_dir(path: Path, flag: str, lang: str) -> bool:
    """Check that ``path`` is (or can become) a writable folder; return whether it existed before."""
    m = MSG[lang]
    if path.exists() and not path.is_dir():
        raise UsageError(m["out_not_dir"].format(flag=flag, path=path))
    existed = path.exists()
    probe = path if existed else next((p for p in path.parents if p.exists()), Path.cwd())
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        err = "not a folder" if not probe.is_dir() else f"no permission to write in {probe}"
        raise UsageError(m["out_unwritable"].format(flag=flag, path=path, err=err))
    return existed


def remove_if_empty(path: Path) -> None:
    """After an interrupted command: remove the folder it created if nothing was written in it yet."""
    for folder in (path / "figures", path):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


def read_training_checkpoint(path: Path, lang: str, allow_legacy: bool = False) -> dict:
    from ..inference import CheckpointError
    from ..training import load_training_state

    try:
        return load_training_state(path, allow_legacy=allow_legacy)
    except CheckpointError as err:
        raise UsageError(MSG[lang]["not_ckpt"].format(path=path, err=err)) from None
    except OSError as err:  # a folder, no permission, ...
        raise UsageError(MSG[lang]["unreadable"].format(flag="CHECKPOINT", path=path, err=err)) from None


def unwritable(flag: str, path: Path, err: OSError, lang: str) -> UsageError:
    """The message for a file that could not be written (a full disk, no permission, a name too long...)."""
    return UsageError(MSG[lang]["out_unwritable"].format(flag=flag, path=path, err=err))
