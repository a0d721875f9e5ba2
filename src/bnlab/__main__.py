"""``python -m bnlab``: the same as the ``bnlab`` command."""

import os
import sys


def _spanish(argv: list[str]) -> bool:
    """Whether the command asked for Spanish (``--lang es``, else a Spanish locale), as the CLI decides."""
    if "--lang" in argv[:-1]:
        return argv[argv.index("--lang") + 1] == "es"
    return os.environ.get("LANG", "").startswith("es")


try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command itself is still being imported: one line, no traceback
    print("Interrumpido." if _spanish(sys.argv) else "Interrupted.", file=sys.stderr)
    raise SystemExit(130) from None

if __name__ == "__main__":
    code = main()
    parallel = sys.modules.get("bnlab.parallel")
    if parallel is not None and parallel._current is not None:  # a replica under torchrun: see exit_process
        parallel.exit_process(code)
    raise SystemExit(code)
