"""``python -m bnlab``: the same as the ``bnlab`` command."""

import sys


def _interrupted_at_import() -> str:
    """The "Interrupted." of the ``bnlab`` command, in the language it would speak (``--lang``, else the locale).

    Ctrl-C came while the command itself was being imported: the catalogs (standard library only) are read here."""
    from .i18n import from_locale, lang_from_argv, t

    return t("cli.interrupted_plain", lang_from_argv(sys.argv[1:]) or from_locale())


try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command itself is still being imported: one line, no traceback
    print(_interrupted_at_import(), file=sys.stderr)
    raise SystemExit(130) from None

if __name__ == "__main__":
    code = main()
    parallel = sys.modules.get("bnlab.parallel")
    if parallel is not None and parallel._current is not None:  # a replica under torchrun: see exit_process
        parallel.exit_process(code)
    raise SystemExit(code)
