"""``bnlab experiment``: reproduce an experiment of the paper (paper-fig1) or the small-batch study."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    Parser,
    UsageError,
    add_lang,
    add_threads,
    positive_float,
    positive_int,
    remove_if_empty,
    seeds,
    set_threads,
    unwritable,
    writable_dir,
)
from .messages import MSG


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "experiment",
        help="reproduce an experiment of the paper / reproduce un experimento del artículo",
        description="Reproduce an experiment of Ioffe & Szegedy (2015).\n"
        "Reproduce un experimento de Ioffe y Szegedy (2015).",
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
        help="Fig. 1: 3×100 sigmoid MLP with and without BN on MNIST / Fig. 1: MLP sigmoide 3×100 con y sin BN "
        "en MNIST",
        description="The paper's Fig. 1: a 784-100-100-100-10 sigmoid network, with and without BN, batches of 60.\n"
        "La Fig. 1 del artículo: una red sigmoide 784-100-100-100-10, con y sin BN, lotes de 60.",
    )
    q.add_argument("--data", metavar="PATH", type=Path, default=None,
                   help="MNIST: a directory of IDX files or an .npz (default: the 10,000-image subset shipped with "
                   "bnlab) / MNIST: un directorio IDX o un .npz (por defecto: el subconjunto de 10 000 imágenes que "
                   "viene con bnlab)")  # fmt: skip
    q.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-paper-fig1"),
                   help="output folder (default: bnlab-paper-fig1) / carpeta de salida")  # fmt: skip
    q.add_argument("--steps", type=positive_int, default=10_000,
                   help="training steps (default: 10000; the paper: 50000) / pasos de entrenamiento (el artículo: "
                   "50000)")  # fmt: skip
    q.add_argument("--lr", type=positive_float, default=0.1,
                   help="SGD learning rate (default: 0.1; not given in the paper) / tasa de aprendizaje de SGD "
                   "(no la da el artículo)")  # fmt: skip
    q.add_argument("--seed", type=int, default=0, help="random seed (default: 0) / semilla aleatoria")
    add_threads(q)
    q.add_argument("--quiet", action="store_true", help="no progress bars / sin barras de progreso")
    add_lang(q)


def _run_paper_fig1(args) -> int:
    lang = args.lang
    if args.data is not None and not args.data.exists():
        raise UsageError(MSG[lang]["no_path"].format(flag="--data", path=args.data))
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
        raise UsageError(MSG[lang]["bad_data"].format(flag="--data", path=data, err=err)) from None
    return 0


# -- small-batch (issue 11) -------------------------------------------------------------------------------
def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(" ", "").split(",") if s != "")
    except ValueError:
        sizes = ()
    if not sizes or any(m < 2 for m in sizes):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give mini-batch sizes of at least 2 separated by commas, e.g. 2,4,8 / da tamaños de "
            f"minilote de al menos 2 separados por comas, p. ej. 2,4,8"
        )
    return sizes


def _add_small_batch(exp) -> None:
    q = exp.add_parser(
        "small-batch",
        help="accuracy vs mini-batch size m: no BN, BN per activation, BN per channel on MNIST 28×28 / "
        "exactitud según el tamaño m del minilote: sin BN, BN por activación, BN por canal con MNIST 28×28",
        description="Train the same CNN on the 10,000 MNIST digits shipped with bnlab, without BN, with BN per\n"
        "activation (set B = m values) and per channel (set B = m·p·q values), for several mini-batch sizes m\n"
        "with the same number of samples seen; report test accuracy with recalibrated (Alg. 2) statistics.\n"
        "A few minutes on 2 CPU cores. See docs/small-batch.md.\n"
        "Entrena la misma CNN con los 10 000 dígitos MNIST que trae bnlab, sin BN, con BN por activación\n"
        "(conjunto B = m valores) y por canal (conjunto B = m·p·q valores), para varios tamaños m de minilote\n"
        "con el mismo número de ejemplos vistos; da la exactitud de prueba con estadísticas recalibradas\n"
        "(Alg. 2). Unos minutos en 2 núcleos de CPU. Ver docs/small-batch.md.",
    )
    q.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-small-batch"),
                   help="output folder (default: bnlab-small-batch) / carpeta de salida")  # fmt: skip
    q.add_argument("--batch-sizes", type=_batch_sizes, default=(2, 4, 8, 16, 32, 64), metavar="M1,M2,...",
                   help="mini-batch sizes (default: 2,4,8,16,32,64) / tamaños de minilote")  # fmt: skip
    q.add_argument("--seeds", type=seeds, default=(0, 1, 2), metavar="S1,S2,...",
                   help="seeds (default: 0,1,2) / semillas")  # fmt: skip
    q.add_argument("--samples", type=positive_int, default=2560,
                   help="training samples seen by every run (default: 2560) / ejemplos de entrenamiento que ve "
                   "cada ejecución")  # fmt: skip
    q.add_argument("--lr", type=positive_float, default=0.002,
                   help="Adam learning rate at m = 32, scaled as lr·√(m/32) with the square-root rule (default: "
                   "0.002) / tasa de aprendizaje de Adam para m = 32, escalada como lr·√(m/32) con la regla de la "
                   "raíz cuadrada")  # fmt: skip
    q.add_argument("--workers", type=positive_int, default=2,
                   help="runs at once, one process each (default: 2) / ejecuciones simultáneas, un proceso cada "
                   "una")  # fmt: skip
    q.add_argument("--data", metavar="PATH", type=Path, default=None,
                   help="MNIST directory or .npz (default: the 10,000 digits shipped with bnlab) / directorio MNIST "
                   "o .npz (por defecto: los 10 000 dígitos que trae bnlab)")  # fmt: skip
    add_threads(q)
    q.add_argument("--quiet", action="store_true", help="no progress bars / sin barras de progreso")
    add_lang(q)


def _run_small_batch(args) -> int:
    from ..io import WriteError
    from ..report.small_batch import run_small_batch

    lang = args.lang

    if args.data is not None and not args.data.exists():
        raise UsageError(MSG[lang]["no_path"].format(flag="--data", path=args.data))
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
