"""``bnlab demo``: train a CNN without BN, with BN per activation and per channel; write an HTML report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, add_lang, add_threads, positive_int, remove_if_empty, seeds, set_threads, writable_dir
from .messages import MSG


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="train a CNN without BN, with BN per activation and per channel; write an HTML report / "
        "entrena una CNN sin BN, con BN por activación y por canal; escribe un informe HTML",
        description="Train the same CNN on scikit-learn's digits without BN, with BN per activation and per channel,\n"
        "and write DIR/index.html (about 40 seconds: it runs on one CPU core).\n"
        "Entrena la misma CNN con los dígitos de scikit-learn sin BN, con BN por activación y por canal,\n"
        "y escribe DIR/index.html (unos 40 segundos: usa un núcleo de la CPU).",
    )
    p.add_argument("--out", metavar="DIR", default="bnlab-demo",
                   help="folder for the report (default: bnlab-demo) / carpeta del informe")  # fmt: skip
    add_lang(p)
    p.add_argument("--epochs", type=positive_int, default=8,
                   help="epochs per run (default: 8) / épocas por ejecución")  # fmt: skip
    p.add_argument("--seeds", type=seeds, default=(0, 1), metavar="S1,S2,...",
                   help="seeds; each run is repeated per seed (default: 0,1) / semillas; cada ejecución se repite "
                   "con cada una")  # fmt: skip
    add_threads(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars / sin barras de progreso")
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
        raise UsageError(MSG[lang]["out_unwritable"].format(flag="--out", path=out, err=err)) from None
    return 0
