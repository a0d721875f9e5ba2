"""``python -m bnlab``: the same as the ``bnlab`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
