"""``python -m bnlab``: the same as the ``bnlab`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    code = main()
    parallel = sys.modules.get("bnlab.parallel")
    if parallel is not None and parallel._current is not None:  # a replica under torchrun: see exit_process
        parallel.exit_process(code)
    raise SystemExit(code)
