"""The ``bnlab`` command: demo, train, evaluate, explain, experiment, bench.

Help texts are in English and Spanish side by side; messages are in one language, chosen by ``--lang``
or, by default, from the locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``: a value starting with ``es`` gives
Spanish). Exit status: 0 on success, 1 when training diverged (NaN/inf loss) or a replica of ``train --nproc``
failed, 2 for bad arguments or unreadable input, 130 when interrupted (143 when the launcher of
``train --nproc`` got SIGTERM).

``bnlab --help``, ``bnlab --version`` and ``bnlab explain`` (text) do not import torch: every module that
needs it is imported inside the command that uses it, so the quick commands answer at once.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser", "default_lang"]

LANGS = ("en", "es")
EXIT_DIVERGED = 1
EXIT_FAILED = 1  # a replica of `train --nproc N` failed or was killed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a process killed by SIGPIPE, e.g. `bnlab explain ... | head`

# Choices shown in --help, kept here so that building the parser imports no torch; tests check they equal
# bnlab.data.DATASETS, bnlab.models.NORMS / FAMILY_NORMS / ACTIVATIONS and bnlab.training.OPTIMIZERS.
DATASETS = ("digits", "mnist", "cifar10")
NORMS = ("none", "activation", "channel")
FAMILY_NORMS = ("layer", "instance", "group")
ACTIVATIONS = ("relu", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "adam")

MSG = {
    "en": {
        "error": "error",
        "try_help": "Try '{prog} --help' for more information.",
        "need_data": "--data is required with --dataset {dataset} ({what})",
        "digits_no_data": "--data is not used with --dataset digits (the digits ship with scikit-learn)",
        "no_path": "{flag} {path}: no such file or directory",
        "what_mnist": "a directory of IDX files or an .npz with 'images' and 'labels'",
        "what_cifar10": "the cifar-10-batches-py directory",
        "bad_data": "cannot read {flag} {path}: {err}",
        "exists": ("{ckpt} already exists: add --resume to continue that run, or choose another --out directory"),
        "no_resume": "--resume: no checkpoint in {out}; starting a new run",
        "resuming": "Resuming from {ckpt} (step {step})",
        "interrupted": "Interrupted at step {step}/{total}. Checkpoint saved to {ckpt}.\nContinue with: {cmd}",
        "interrupted_nosave": "Interrupted; nothing was saved.",
        "interrupted_plain": "Interrupted.",
        "interrupted_after_save": "Interrupted after training finished; the checkpoint {ckpt} is complete.",
        "interrupted_last_step": (
            "Interrupted during the last step: training had finished, so the run is complete (nothing to "
            "resume). Checkpoint: {ckpt}; history: {hist}"
        ),
        "rank_failed": "Rank {rank} of {nproc} {how}; the other ranks were stopped. {resume}",
        "rank_killed": "was killed by {sig}",
        "rank_exit": "failed (exit status {status})",
        "terminated": "Stopped by {sig}: every rank was ended. {resume}",
        "resume_hint": "The last checkpoint is {ckpt}; continue with: {cmd}",
        "nothing_saved": "No checkpoint was written yet.",
        "diverged": (
            "Training stopped: the loss became {loss} at step {step} (NaN or infinite values; the learning rate "
            "--lr {lr:g} is probably too large). {kept}"
        ),
        "diverged_kept": "The last good checkpoint was kept: {ckpt}",
        "diverged_none": "No checkpoint was written.",
        "already_done": (
            "{ckpt} has already done {done} of the {total} steps that --epochs {epochs} asks for: nothing to "
            "train. Give a larger --epochs to continue (it has {epochs_done} epochs)"
        ),
        "no_ckpt_in_dir": "{path} is a folder without {name}: pass a checkpoint written by 'bnlab train'",
        "out_not_dir": "{flag} {path} exists and is not a folder: choose a folder",
        "out_unwritable": "{flag} {path}: cannot create or write there ({err})",
        "figure_empty": "--figure needs a file name, such as setb.png",
        "figure_format": "--figure {path}: unknown image type {suffix!r}; use one of {formats}",
        "too_small": "{err} (images of {shape}); use --model mlp, or larger images",
        "trained": "Test accuracy (eval mode): {acc} — loss {loss} on {n} test images",
        "saved": "Checkpoint: {ckpt}\nHistory: {hist}\nFigure: {fig}",
        "not_ckpt": "{path} is not a training checkpoint written by 'bnlab train': {err}",
        "evaluated": "{split} accuracy (eval mode, {what}): {acc} — loss {loss} on {n} images",
        "splits": {"test": "Test", "val": "Validation", "train": "Training"},
        "ema": "running statistics",
        "no_bn_stats": {"none": "no normalization", "per_sample": "statistics of each image"},
        "recal": "recalibrated statistics (Alg. 2)",
        "no_recal": "--recalibrate: the network in {path} (norm={norm}) has no batch-normalization layer, so it has "
                    "no population statistics to recalibrate (Alg. 2); run the command without --recalibrate",
        "bad_shape": (
            "SHAPE must be positive integers separated by commas or 'x', such as 32,28,28,16 — got {shape!r}"
        ),
        "figure_saved": "Figure written to {path}",
        "unreadable": "cannot read {flag} {path}: {err}",
        "is_folder": "{flag} {path} is a folder: give a file name, such as {example}",
        "bench_missing": (
            "benchmarks/cpu.py is not in this checkout. The CPU benchmark lives in the bnlab source "
            "repository (benchmarks/cpu.py); it is not installed with the package. Clone the repository "
            "and run: python benchmarks/cpu.py"
        ),
        "bench_running": "Running {path}",
    },
    "es": {
        "error": "error",
        "try_help": "Prueba '{prog} --help' para más información.",
        "need_data": "--data es obligatorio con --dataset {dataset} ({what})",
        "digits_no_data": "--data no se usa con --dataset digits (los dígitos vienen con scikit-learn)",
        "no_path": "{flag} {path}: no existe ese archivo o directorio",
        "what_mnist": "un directorio con archivos IDX o un .npz con 'images' y 'labels'",
        "what_cifar10": "el directorio cifar-10-batches-py",
        "bad_data": "no se puede leer {flag} {path}: {err}",
        "exists": ("{ckpt} ya existe: añade --resume para continuar esa ejecución, o elige otro directorio --out"),
        "no_resume": "--resume: no hay punto de control en {out}; se empieza una ejecución nueva",
        "resuming": "Continuando desde {ckpt} (paso {step})",
        "interrupted": (
            "Interrumpido en el paso {step}/{total}. Punto de control guardado en {ckpt}.\nPara continuar: {cmd}"
        ),
        "interrupted_nosave": "Interrumpido; no se guardó nada.",
        "interrupted_plain": "Interrumpido.",
        "interrupted_after_save": (
            "Interrumpido después de terminar el entrenamiento; el punto de control {ckpt} está completo."
        ),
        "interrupted_last_step": (
            "Interrumpido durante el último paso: el entrenamiento ya había terminado, así que la ejecución está "
            "completa (no hay nada que continuar). Punto de control: {ckpt}; historial: {hist}"
        ),
        "rank_failed": "El proceso de rango {rank} de {nproc} {how}; se detuvieron los demás. {resume}",
        "rank_killed": "fue terminado por {sig}",
        "rank_exit": "falló (código de salida {status})",
        "terminated": "Detenido por {sig}: se terminaron todos los procesos. {resume}",
        "resume_hint": "El último punto de control es {ckpt}; para continuar: {cmd}",
        "nothing_saved": "Aún no se había escrito ningún punto de control.",
        "diverged": (
            "Entrenamiento detenido: la pérdida llegó a {loss} en el paso {step} (valores NaN o infinitos; la tasa "
            "de aprendizaje --lr {lr:g} es probablemente demasiado grande). {kept}"
        ),
        "diverged_kept": "Se conservó el último punto de control bueno: {ckpt}",
        "diverged_none": "No se escribió ningún punto de control.",
        "already_done": (
            "{ckpt} ya hizo {done} de los {total} pasos que pide --epochs {epochs}: no queda nada que entrenar. "
            "Da un --epochs mayor para continuar (lleva {epochs_done} épocas)"
        ),
        "no_ckpt_in_dir": "{path} es una carpeta sin {name}: pasa un punto de control escrito por 'bnlab train'",
        "out_not_dir": "{flag} {path} existe y no es una carpeta: elige una carpeta",
        "out_unwritable": "{flag} {path}: no se puede crear ni escribir ahí ({err})",
        "figure_empty": "--figure necesita un nombre de archivo, como setb.png",
        "figure_format": "--figure {path}: tipo de imagen desconocido {suffix!r}; usa uno de {formats}",
        "too_small": "{err} (imágenes de {shape}); usa --model mlp, o imágenes más grandes",
        "trained": "Exactitud de prueba (modo evaluación): {acc} — pérdida {loss} en {n} imágenes de prueba",
        "saved": "Punto de control: {ckpt}\nHistorial: {hist}\nFigura: {fig}",
        "not_ckpt": "{path} no es un punto de control escrito por 'bnlab train': {err}",
        "evaluated": "Exactitud en {split} (modo evaluación, {what}): {acc} — pérdida {loss} en {n} imágenes",
        "splits": {"test": "prueba", "val": "validación", "train": "entrenamiento"},
        "ema": "estadísticas acumuladas",
        "no_bn_stats": {"none": "sin normalización", "per_sample": "estadísticas de cada imagen"},
        "recal": "estadísticas recalibradas (Alg. 2)",
        "no_recal": "--recalibrate: la red de {path} (norm={norm}) no tiene capas de normalización por lotes, así que "
                    "no tiene estadísticas de la población que recalibrar (Alg. 2); ejecute la orden sin --recalibrate",
        "bad_shape": (
            "SHAPE deben ser enteros positivos separados por comas o 'x', como 32,28,28,16 — se recibió {shape!r}"
        ),
        "figure_saved": "Figura escrita en {path}",
        "unreadable": "no se puede leer {flag} {path}: {err}",
        "is_folder": "{flag} {path} es una carpeta: da un nombre de archivo, como {example}",
        "bench_missing": (
            "benchmarks/cpu.py no está en esta copia. El benchmark de CPU está en el repositorio de código de "
            "bnlab (benchmarks/cpu.py); no se instala con el paquete. Clona el repositorio y ejecuta: "
            "python benchmarks/cpu.py"
        ),
        "bench_running": "Ejecutando {path}",
    },
}


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


def _lang_from_argv(argv: Sequence[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--lang" and i + 1 < len(argv) and argv[i + 1] in LANGS:
            return argv[i + 1]
        if a.startswith("--lang=") and a.split("=", 1)[1] in LANGS:
            return a.split("=", 1)[1]
    return None


# -- argument types with bilingual messages ---------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer / no es un entero") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 / debe ser al menos 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number / no es un número") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number / debe ser un número positivo")
    return value


def _batch_size(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            "batch normalization needs at least 2 examples per batch / la normalización por lotes necesita "
            "al menos 2 ejemplos por lote"
        )
    return value


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.replace(" ", "").split(",") if s != "")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give seeds as integers separated by commas, e.g. 0,1 / da las semillas como enteros "
            f"separados por comas, p. ej. 0,1"
        ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: at least one seed ≥ 0 / al menos una semilla ≥ 0")
    return seeds


# -- parser -----------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        return super().add_usage(usage, actions, groups, prefix="usage / uso: " if prefix is None else prefix)


class _Parser(argparse.ArgumentParser):
    """argparse with bilingual section titles and errors that say how to get help."""

    lang = "en"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = "arguments / argumentos"
        self._optionals.title = "options / opciones"
        self.add_argument(
            "-h", "--help", action="help", default=argparse.SUPPRESS,
            help="show this help and exit / muestra esta ayuda y termina",
        )  # fmt: skip

    def error(self, message: str):
        m = MSG[_Parser.lang]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {m['error']}: {message}\n{m['try_help'].format(prog=self.prog)}\n")


def _add_lang(p: argparse.ArgumentParser, top: bool = False) -> None:
    p.add_argument(
        "--lang", choices=LANGS, default=None if top else argparse.SUPPRESS,
        help="language of messages and reports (default: from the locale) / idioma de los mensajes e informes "
        "(por defecto: el de la configuración regional)",
    )  # fmt: skip


def _add_allow_legacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-legacy", action="store_true",
                   help="also read a checkpoint of bnlab 0.1 (format version 1, without digests: damage in it "
                   "cannot be detected) / leer también un punto de control de bnlab 0.1 (versión 1 del formato, "
                   "sin resúmenes SHA-256: no se detectan daños en él)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="bnlab",
        description=(
            "Batch normalization in convolutional networks (Ioffe & Szegedy 2015): what set B is, and what it\n"
            "changes.\n"
            "Normalización por lotes en redes convolucionales (Ioffe y Szegedy 2015): qué es el conjunto B y\n"
            "qué cambia."
        ),
        epilog=(
            "Start with / Empieza con:  bnlab demo\n"
            "Each command has its own help / Cada orden tiene su ayuda:  bnlab COMMAND --help"
        ),
    )
    _add_lang(parser, top=True)
    parser.add_argument("--version", action="version", version=f"bnlab {__version__}",
                        help="show the version and exit / muestra la versión y termina")  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # demo
    p = sub.add_parser(
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
    _add_lang(p)
    p.add_argument("--epochs", type=_positive_int, default=8,
                   help="epochs per run (default: 8) / épocas por ejecución")  # fmt: skip
    p.add_argument("--seeds", type=_seeds, default=(0, 1), metavar="S1,S2,...",
                   help="seeds; each run is repeated per seed (default: 0,1) / semillas; cada ejecución se repite "
                   "con cada una")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars / sin barras de progreso")

    # train
    p = sub.add_parser(
        "train",
        help="train one network, with checkpoints each epoch / entrena una red, con puntos de control por época",
        description="Train one network; a checkpoint is saved in --out at the end of every epoch and on Ctrl-C,\n"
        "and --resume continues exactly where it stopped.\n"
        "Entrena una red; se guarda un punto de control en --out al final de cada época y con Ctrl-C,\n"
        "y --resume continúa exactamente donde se detuvo.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="dataset (default: digits) / conjunto de datos")  # fmt: skip
    p.add_argument("--data", metavar="PATH", type=Path,
                   help="where mnist or cifar10 is (not needed for digits) / dónde están mnist o cifar10 "
                   "(no hace falta para digits)")  # fmt: skip
    p.add_argument("--model", choices=("cnn", "mlp"), default="cnn",
                   help="cnn: small CNN; mlp: the paper's Fig. 1 network 3×100 (default: cnn) / cnn: CNN pequeña; "
                   "mlp: la red de la Fig. 1 del artículo")  # fmt: skip
    p.add_argument("--norm", choices=NORMS + FAMILY_NORMS, default="channel",
                   help="none, activation (per-activation BN) or channel (convolutional BN) (default: channel); "
                   "or, with sets within one sample instead of the mini-batch, layer, instance or group (8 groups) "
                   "/ none, activation (BN por activación) o channel (BN convolucional) (por defecto: channel); o, "
                   "con conjuntos dentro de un ejemplo en lugar del minilote, layer, instance o group (8 grupos)",
                   )  # fmt: skip
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="nonlinearity (default: relu) / no linealidad")  # fmt: skip
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum",
                   help="sgd, momentum (SGD with 0.9) or adam (default: momentum) / optimizador")  # fmt: skip
    p.add_argument("--lr", type=_positive_float, default=0.05,
                   help="learning rate (default: 0.05) / tasa de aprendizaje")  # fmt: skip
    p.add_argument("--batch-size", type=_batch_size, default=32,
                   help="mini-batch size m (default: 32) / tamaño del minilote m")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs (default: 10) / épocas")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0) / semilla aleatoria")
    p.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-train"),
                   help="folder for checkpoint, history and figure (default: bnlab-train) / carpeta para el punto "
                   "de control, el historial y la figura")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.pt / continuar desde DIR/last.pt")  # fmt: skip
    _add_allow_legacy(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar / sin barra de progreso")
    p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="train on N local processes, each with 1/N of every batch, synchronized BN (default: 1; "
                   "also runs under torchrun) / entrenar en N procesos locales, cada uno con 1/N de cada "
                   "minilote, BN sincronizada (también con torchrun)")  # fmt: skip
    _add_lang(p)

    # evaluate
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint in eval mode / evalúa un punto de control en modo evaluación",
        description="Evaluate a checkpoint written by 'bnlab train' in eval mode (Alg. 2 statistics).\n"
        "Evalúa en modo evaluación (estadísticas del Alg. 2) un punto de control escrito por 'bnlab train'.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path,
                   help="a last.pt written by 'bnlab train', or the --out folder that holds it / un last.pt "
                   "escrito por 'bnlab train', o la carpeta --out que lo contiene")  # fmt: skip
    p.add_argument("--dataset", choices=DATASETS,
                   help="dataset (default: the one it was trained on) / conjunto de datos (por defecto: el del "
                   "entrenamiento)")  # fmt: skip
    p.add_argument(
        "--data",
        metavar="PATH",
        type=Path,
        help="where mnist or cifar10 is (default: as in training) / dónde están mnist o cifar10",
    )
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="which split (default: test) / qué partición")  # fmt: skip
    _add_allow_legacy(p)
    p.add_argument("--recalibrate", action="store_true",
                   help="also evaluate with statistics recalibrated on the training split (Alg. 2) / evaluar también "
                   "con estadísticas recalibradas en la partición de entrenamiento")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar / sin barra de progreso")
    _add_lang(p)

    # explain
    p = sub.add_parser(
        "explain",
        help="which values form one set B for a tensor shape / qué valores forman un conjunto B para una forma",
        description="Say which values share one mean and variance (set B) for a tensor of SHAPE, how many sets\n"
        "there are, how many values each pools, and the γ/β counts of both variants.\n"
        "Dice qué valores comparten una media y una varianza (conjunto B) para un tensor de forma SHAPE,\n"
        "cuántos conjuntos hay, cuántos valores reúne cada uno y cuántos γ/β tiene cada variante.",
        epilog="Example / Ejemplo:  bnlab explain 32,28,28,16 --layout NHWC --per channel --figure setb.png",
    )
    # "-1,28,28,16" is a (bad) SHAPE, not an option: let argparse take it as a positional
    p._negative_number_matcher = re.compile(r"^-\d[\d,x× ]*$")
    p.add_argument("shape", metavar="SHAPE", nargs="?",
                   help="tensor shape, e.g. 32,28,28,16 / forma del tensor, p. ej. 32,28,28,16")  # fmt: skip
    p.add_argument(
        "--layout",
        default="NHWC",
        help="axis order: NHWC, NCHW, NC, NCL, NLC, NCDHW, NDHWC (default: NHWC) / orden de los ejes",
    )
    p.add_argument("--per", choices=("channel", "activation"), default="channel",
                   help="channel: convolutional BN; activation: per-activation BN (default: channel) / channel: BN "
                   "convolucional; activation: BN por activación")  # fmt: skip
    p.add_argument("--figure", metavar="PNG", type=Path,
                   help="also draw one set B for both variants into this file / dibuja además un conjunto B de "
                   "ambas variantes en este archivo")  # fmt: skip
    _add_family_options(p)
    p.add_argument("--virtual-batch", metavar="K", type=int, default=None,
                   help="ghost BN: statistics per run of K examples / BN fantasma: estadísticas por tanda de K")
    _add_lang(p)

    # experiment
    p = sub.add_parser(
        "experiment",
        help="reproduce an experiment of the paper / reproduce un experimento del artículo",
        description="Reproduce an experiment of Ioffe & Szegedy (2015).\n"
        "Reproduce un experimento de Ioffe y Szegedy (2015).",
    )
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=_Parser)
    exp.required = True
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
    q.add_argument("--steps", type=_positive_int, default=10_000,
                   help="training steps (default: 10000; the paper: 50000) / pasos de entrenamiento (el artículo: "
                   "50000)")  # fmt: skip
    q.add_argument("--lr", type=_positive_float, default=0.1,
                   help="SGD learning rate (default: 0.1; not given in the paper) / tasa de aprendizaje de SGD "
                   "(no la da el artículo)")  # fmt: skip
    q.add_argument("--seed", type=int, default=0, help="random seed (default: 0) / semilla aleatoria")
    q.add_argument("--quiet", action="store_true", help="no progress bars / sin barras de progreso")
    _add_lang(q)
    _add_small_batch_parser(exp)

    # bench
    p = sub.add_parser(
        "bench",
        help="run the CPU benchmark (benchmarks/cpu.py) / ejecuta el benchmark de CPU (benchmarks/cpu.py)",
        description="Run benchmarks/cpu.py from the source checkout, passing ARGS on (e.g. bnlab bench --quick).\n"
        "Ejecuta benchmarks/cpu.py de la copia del código fuente, pasándole ARGS (p. ej. bnlab bench --quick).",
    )
    _add_lang(p)
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for the benchmark / argumentos para el benchmark")  # fmt: skip
    return parser


# -- commands ---------------------------------------------------------------------------------------------
def _check_data(dataset: str, data: Path | None, lang: str, flag: str = "--data") -> None:
    m = MSG[lang]
    if dataset == "digits":
        if data is not None:
            raise UsageError(m["digits_no_data"])
        return
    if data is None:
        raise UsageError(m["need_data"].format(dataset=dataset, what=m[f"what_{dataset}"]))
    if not data.exists():
        raise UsageError(m["no_path"].format(flag=flag, path=data))


def _load(dataset: str, data: Path | None, seed: int, lang: str):
    from .data import load_dataset

    try:
        return load_dataset(dataset, data, seed=seed)
    except (ValueError, OSError) as err:
        raise UsageError(MSG[lang]["bad_data"].format(flag="--data", path=data, err=err)) from None


def _writable_dir(path: Path, flag: str, lang: str) -> bool:
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


def _remove_if_empty(path: Path) -> None:
    """After an interrupted command: remove the folder it created if nothing was written in it yet."""
    for folder in (path / "figures", path):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


def _cmd_demo(args, lang: str) -> int:
    out = Path(args.out)
    existed = _writable_dir(out, "--out", lang)
    from .report import run_demo

    command = "bnlab demo" + (f" --out {args.out}" if args.out != "bnlab-demo" else "") + f" --lang {lang}"
    try:
        run_demo(out, lang=lang, epochs=args.epochs, seeds=args.seeds, progress=not args.quiet, command=command)
    except KeyboardInterrupt:
        if not existed:
            _remove_if_empty(out)
        raise
    except OSError as err:
        raise UsageError(MSG[lang]["out_unwritable"].format(flag="--out", path=out, err=err)) from None
    return 0


def _build(args, data, lang: str = "en"):
    from .models import PaperMLP, SmallCNN

    c, h, w = data.image_shape
    if args.model == "mlp":
        return PaperMLP(c * h * w, data.num_classes, norm=args.norm, activation=args.activation)
    try:
        return SmallCNN(c, (h, w), data.num_classes, norm=args.norm, activation=args.activation)
    except ValueError as err:  # e.g. images too small for the pooling stages
        raise UsageError(MSG[lang]["too_small"].format(err=err, shape=f"{c}×{h}×{w}")) from None


def _read_training_checkpoint(path: Path, lang: str, allow_legacy: bool = False) -> dict:
    from .inference import CheckpointError
    from .training import load_training_state

    try:
        return load_training_state(path, allow_legacy=allow_legacy)
    except CheckpointError as err:
        raise UsageError(MSG[lang]["not_ckpt"].format(path=path, err=err)) from None
    except OSError as err:  # a folder, no permission, ...
        raise UsageError(MSG[lang]["unreadable"].format(flag="CHECKPOINT", path=path, err=err)) from None


def _unwritable(flag: str, path: Path, err: OSError, lang: str) -> UsageError:
    """The message for a file that could not be written (a full disk, no permission, a name too long...)."""
    return UsageError(MSG[lang]["out_unwritable"].format(flag=flag, path=path, err=err))


def _train_title(args, lang: str) -> str:
    rate = {"en": "learning rate", "es": "tasa de aprendizaje"}[lang]
    return f"{args.dataset}, {args.model}, {args.norm}, {args.activation}, {args.optimizer}, {rate} {args.lr:g}"


def _cmd_train(args, lang: str) -> int:
    from . import parallel

    m = MSG[lang]
    _check_data(args.dataset, args.data, lang)
    from .training import (
        CHECKPOINT_NAME,
        TrainConfig,
        TrainingDiverged,
        TrainingInterrupted,
        evaluate,
        fit,
        seed_everything,
        write_json,
    )

    ckpt = args.out / CHECKPOINT_NAME
    replica = parallel.current()  # None in one process; set in each of --nproc N processes and under torchrun
    if ckpt.exists() and not args.resume:
        raise UsageError(m["exists"].format(ckpt=ckpt))
    _writable_dir(args.out, "--out", lang)
    if args.nproc > 1 and replica is None:  # every process runs this command as one replica
        if args.resume and ckpt.exists():  # a damaged checkpoint is said at once, before N processes start
            _read_training_checkpoint(ckpt, lang)
        return _launch_train(args, ckpt, lang)
    saved = None
    if args.resume and (replica is None or replica.is_main):
        if ckpt.exists():
            saved = _read_training_checkpoint(ckpt, lang, args.allow_legacy)
            print(m["resuming"].format(ckpt=ckpt, step=saved["step"]), file=sys.stderr)
        else:
            print(m["no_resume"].format(out=args.out), file=sys.stderr)
    data = _load(args.dataset, args.data, args.seed, lang)
    steps_per_epoch = len(data.x_train) // args.batch_size
    total = steps_per_epoch * args.epochs
    if saved is not None and saved["step"] >= total:
        raise UsageError(m["already_done"].format(ckpt=ckpt, done=saved["step"], total=total, epochs=args.epochs,
                                                  epochs_done=saved["step"] // max(steps_per_epoch, 1)))  # fmt: skip
    seed_everything(args.seed)
    model = _build(args, data, lang)
    model = replica.wrap(model) if replica is not None else model
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                         seed=args.seed)  # fmt: skip
    meta = {"dataset": args.dataset, "data": str(args.data.resolve()) if args.data else None, "seed": args.seed}
    try:
        result = fit(model, data, config, out_dir=args.out, resume=args.resume, progress=not args.quiet,
                     desc=f"{args.model}/{args.norm}", meta=meta, lang=lang, replica=replica,
                     allow_legacy=args.allow_legacy)  # fmt: skip
    except TrainingInterrupted as stop:
        if replica is not None and not replica.is_main:
            return EXIT_INTERRUPTED
        if stop.checkpoint is None:
            print(m["interrupted_nosave"], file=sys.stderr)
        else:
            cmd = _resume_cmd(args)
            print(m["interrupted"].format(step=stop.step, total=total, ckpt=stop.checkpoint, cmd=cmd), file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as stop:
        kept = m["diverged_kept"].format(ckpt=stop.checkpoint) if stop.checkpoint else m["diverged_none"]
        print(f"bnlab train: {m['error']}: " + m["diverged"].format(loss=stop.loss, step=stop.step, lr=args.lr,
              kept=kept), file=sys.stderr)  # fmt: skip
        return EXIT_DIVERGED
    except ValueError as err:  # e.g. --resume with other settings
        raise UsageError(str(err)) from None
    except OSError as err:  # the checkpoint could not be written: a full disk, no permission, ...
        raise _unwritable("--out", args.out, err, lang) from None
    if replica is not None and not replica.is_main:
        return EXIT_INTERRUPTED if result.interrupted else 0
    try:
        test = evaluate(result.model, data.x_test, data.y_test)
        record = {"config": config.to_dict(), "meta": meta, "test": test, "history": result.history}
        hist = write_json(args.out / "history.json", record)
        if result.interrupted:  # Ctrl-C during the last step: the run is complete; stop before the figure
            print(m["interrupted_last_step"].format(ckpt=ckpt, hist=hist), file=sys.stderr)
            return EXIT_INTERRUPTED
        fig = args.out / "curves.png"
        from .report.plots import curves_figure
        from .report.strings import num, pct

        run = {"norm": args.norm, "history": result.history}
        curves_figure([run], _train_title(args, lang), lang, fig)
    except KeyboardInterrupt:
        print(m["interrupted_after_save"].format(ckpt=ckpt), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # history.json or curves.png could not be written
        raise _unwritable("--out", args.out, err, lang) from None
    print(m["trained"].format(acc=pct(test["accuracy"], lang), loss=num(test["loss"], lang, 4), n=len(data.x_test)))
    print(m["saved"].format(ckpt=ckpt, hist=hist, fig=fig))
    return 0


def _resume_cmd(args) -> str:
    return " ".join(["bnlab", *[a for a in args.argv if a != "--resume"], "--resume"])


def _launch_train(args, ckpt: Path, lang: str) -> int:
    """``train --nproc N``: run the command in N replicas; say what rank 0 could not (see parallel.launch)."""
    from . import parallel

    m = MSG[lang]
    run = parallel.launch(args.nproc, main, args.argv)
    resume = m["resume_hint"].format(ckpt=ckpt, cmd=_resume_cmd(args)) if ckpt.exists() else m["nothing_saved"]
    if run.how == "interrupted":
        if not run.told:  # stopped before rank 0 could say anything (start-up, or killed)
            print(m["interrupted_plain"], file=sys.stderr)
        elif run.statuses and run.statuses[0] == 0:  # rank 0 had finished and printed its results
            print(m["interrupted_after_save"].format(ckpt=ckpt), file=sys.stderr)
    elif run.how == "terminated":
        print(m["terminated"].format(sig=signal.Signals(run.signal).name, resume=resume), file=sys.stderr)
    elif run.how == "failed":
        status = run.status
        how = m["rank_killed"].format(sig=signal.Signals(-status).name) if status < 0 else m["rank_exit"].format(
            status=status)  # fmt: skip
        print(m["rank_failed"].format(rank=run.rank, nproc=args.nproc, how=how, resume=resume), file=sys.stderr)
        return EXIT_FAILED
    return run.code


def _cmd_evaluate(args, lang: str) -> int:
    import copy

    from .inference import CheckpointError
    from .report.strings import num, pct
    from .training import CHECKPOINT_NAME, evaluate, load_trained

    m = MSG[lang]
    if not args.checkpoint.exists():
        raise UsageError(m["no_path"].format(flag="CHECKPOINT", path=args.checkpoint))
    if args.checkpoint.is_dir():  # the folder `bnlab train --out` made
        if not (args.checkpoint / CHECKPOINT_NAME).is_file():
            raise UsageError(m["no_ckpt_in_dir"].format(path=args.checkpoint, name=CHECKPOINT_NAME))
        args.checkpoint = args.checkpoint / CHECKPOINT_NAME
    try:
        model, saved = load_trained(args.checkpoint, allow_legacy=args.allow_legacy)
    except CheckpointError as err:
        raise UsageError(m["not_ckpt"].format(path=args.checkpoint, err=err)) from None
    except OSError as err:  # no permission, ...
        raise UsageError(m["unreadable"].format(flag="CHECKPOINT", path=args.checkpoint, err=err)) from None
    from .models import bn_layers

    has_bn = bool(bn_layers(model))
    norm = saved["model_spec"]["norm"]  # checked by load_trained
    if args.recalibrate and not has_bn:  # before any work or output
        raise UsageError(m["no_recal"].format(path=args.checkpoint, norm=norm))
    meta = saved.get("meta") or {}
    dataset = args.dataset or meta.get("dataset", "digits")
    data_path = args.data if args.data is not None else (Path(meta["data"]) if meta.get("data") else None)
    if args.dataset == "digits" and args.data is None:
        data_path = None
    _check_data(dataset, data_path, lang)
    data = _load(dataset, data_path, int(meta.get("seed", 0)), lang)
    x, y = getattr(data, f"x_{args.split}"), getattr(data, f"y_{args.split}")
    res = evaluate(model, x, y)
    acc, loss = pct(res["accuracy"], lang), num(res["loss"], lang, 4)
    what = m["ema"] if has_bn else m["no_bn_stats"]["none" if norm == "none" else "per_sample"]
    print(m["evaluated"].format(split=m["splits"][args.split], what=what, acc=acc, loss=loss, n=len(x)))
    if args.recalibrate:
        from .inference import recalibrate

        bs = int(saved["config"]["batch_size"])
        n = (len(data.x_train) // bs) * bs
        batches = [data.x_train[i : i + bs] for i in range(0, n, bs)]
        recal = recalibrate(copy.deepcopy(model), batches, progress=not args.quiet, lang=lang)  # bar on stderr
        res = evaluate(recal, x, y)
        print(m["evaluated"].format(split=m["splits"][args.split], what=m["recal"], acc=pct(res["accuracy"], lang),
                                    loss=num(res["loss"], lang, 4), n=len(x)))  # fmt: skip
    return 0


def _parse_shape(text: str, lang: str) -> tuple[int, ...]:
    parts = [p for p in text.replace("x", ",").replace("×", ",").replace(" ", ",").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(n < 1 for n in shape):
        raise UsageError(MSG[lang]["bad_shape"].format(shape=text))
    return shape


_FIGURE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def _check_figure_path(path: Path, lang: str) -> None:
    m = MSG[lang]
    # "" (Path('.')), a folder, or only a suffix such as ".png" (which would write a hidden file)
    if path.name in ("", ".", "..") or path.name.lower().lstrip(".") in _FIGURE_FORMATS:
        raise UsageError(m["figure_empty"])
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in _FIGURE_FORMATS:
        raise UsageError(m["figure_format"].format(path=path, suffix=path.suffix, formats=", ".join(_FIGURE_FORMATS)))
    if not path.parent.exists():
        raise UsageError(m["no_path"].format(flag="--figure", path=path.parent))
    if path.is_dir():
        raise UsageError(m["is_folder"].format(flag="--figure", path=path, example=path / "setb.png"))


def _cmd_explain(args, lang: str) -> int:
    from .explain import explain

    if args.html is not None:
        return _cmd_explain_html(args, lang)
    if args.shape is None:
        raise UsageError(MSG[lang]["bad_shape"].format(shape=""))
    shape = _parse_shape(args.shape, lang)
    if args.figure is not None:  # check before printing anything
        try:
            _check_figure_path(args.figure, lang)
        except OSError as err:  # e.g. a name too long for the file system
            raise _unwritable("--figure", args.figure, err, lang) from None
    try:
        e = explain(shape, layout=args.layout, per=args.per, lang=lang, norm=args.norm, groups=args.groups,
                    virtual_batch=args.virtual_batch)  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(e.text)
    if args.figure is not None:
        try:
            e.save_figure(args.figure)
        except OSError as err:
            raise _unwritable("--figure", args.figure, err, lang) from None
        print(MSG[lang]["figure_saved"].format(path=args.figure))
    return 0


def _cmd_experiment(args, lang: str) -> int:
    if args.experiment == "small-batch":
        return _cmd_small_batch(args, lang)
    if args.data is not None and not args.data.exists():
        raise UsageError(MSG[lang]["no_path"].format(flag="--data", path=args.data))
    existed = _writable_dir(args.out, "--out", lang)
    from .data import MNIST10K
    from .io import WriteError
    from .report import run_paper_fig1

    data = MNIST10K if args.data is None else args.data
    try:
        run_paper_fig1(data, args.out, steps=args.steps, lr=args.lr, seed=args.seed, lang=lang,
                       progress=not args.quiet)  # fmt: skip
    except KeyboardInterrupt:
        if not existed:
            _remove_if_empty(args.out)
        raise
    except WriteError as err:  # an output file, not the data
        raise _unwritable("--out", args.out, err, lang) from None
    except (ValueError, OSError) as err:
        raise UsageError(MSG[lang]["bad_data"].format(flag="--data", path=data, err=err)) from None
    return 0


def _find_benchmark() -> Path | None:
    candidates = [Path.cwd() / "benchmarks" / "cpu.py", Path(__file__).resolve().parents[2] / "benchmarks" / "cpu.py"]
    return next((p for p in candidates if p.is_file()), None)


def _cmd_bench(args, lang: str) -> int:
    path = _find_benchmark()
    if path is None:
        print(MSG[lang]["bench_missing"], file=sys.stderr)
        return 1
    print(MSG[lang]["bench_running"].format(path=path), file=sys.stderr)
    passthrough = args.args[1:] if args.args[:1] == ["--"] else args.args
    from ._lifeline import die_with_parent

    # its own process group: a Ctrl-C in the terminal reaches bnlab alone, which ends the benchmark
    # (one "Interrupted." message, no traceback of the child's); it dies with bnlab even if bnlab is killed
    parent = os.getpid()
    child = subprocess.Popen([sys.executable, str(path), *passthrough, *args.extra], process_group=0,
                             preexec_fn=lambda: die_with_parent(parent))  # fmt: skip
    try:
        return child.wait()
    finally:
        if child.poll() is None:  # Ctrl-C (KeyboardInterrupt) or another error here
            child.kill()
            child.wait()


COMMANDS = {
    "demo": _cmd_demo,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "explain": _cmd_explain,
    "experiment": _cmd_experiment,
    "bench": _cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bnlab`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    lang = _lang_from_argv(argv) or default_lang()
    _Parser.lang = lang
    with _SigintWatch() as sigint:
        try:
            return _main(argv, lang)
        except KeyboardInterrupt:  # at any moment, start-up included
            if _speaks():
                print(MSG[lang]["interrupted_plain"], file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            return _quiet_broken_pipe()
        except Exception:
            if not sigint.seen:
                raise
            # an error that follows Ctrl-C is the interrupt's doing (e.g. a library that was stopped half-way
            # in code of its own that imports lazily): report the interrupt
            if _speaks():
                print(MSG[lang]["interrupted_plain"], file=sys.stderr)
            return EXIT_INTERRUPTED


def _speaks() -> bool:
    """False in a replica other than rank 0 of a data-parallel run (``--nproc``, torchrun): rank 0 speaks."""
    try:
        return not (int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0)
    except ValueError:
        return True


class _SigintWatch:
    """Ctrl-C while ``main`` runs: KeyboardInterrupt, but never in the middle of a module's import.

    A KeyboardInterrupt raised inside an import can leave a library half-initialized (numpy's lazy
    submodules then fail with unrelated errors), or escape from C++ code that called back into Python
    while torch registers its operators (``torch._C._c10d_init``: the process aborts, exit −6). So while an
    import runs the interrupt is held back and re-sent every ``_RETRY_S`` seconds, and it is raised at the
    first moment no import is under way; ``seen`` records that one arrived. Installed only over Python's
    default handler, in the main thread; the previous handler comes back at exit. Training installs its
    own handler (a clean stop after the current step) and restores this one.
    """

    _RETRY_S = 0.05

    def __init__(self) -> None:
        self.seen = False
        self._previous = None
        self._retry = None

    def _handle(self, signum, frame):
        self.seen = True
        if _importing(frame):
            self._send_later(signum)
            return
        raise KeyboardInterrupt

    def _send_later(self, signum) -> None:
        if self._retry is None or not self._retry.is_alive():
            self._retry = threading.Timer(self._RETRY_S, os.kill, (os.getpid(), signum))
            self._retry.daemon = True
            self._retry.start()

    def __enter__(self) -> _SigintWatch:
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _importing(frame) -> bool:
    """True if ``frame`` or a caller of it runs the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _quiet_broken_pipe() -> int:
    """The reader went away (`bnlab explain ... | head`): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _main(argv: list[str], lang: str) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "bench":  # only bench passes unknown options on (bnlab bench --quick)
            parser.error(("unrecognized arguments: %s" if lang == "en" else "argumentos no reconocidos: %s")
                         % " ".join(extra))  # fmt: skip
    except SystemExit as stop:  # --help, --version, or an argparse error (already printed)
        return int(stop.code or 0) if not isinstance(stop.code, str) else EXIT_USAGE
    lang = args.lang or lang
    args.argv = argv
    args.extra = extra
    prog = "bnlab " + args.command
    try:
        code = COMMANDS[args.command](args, lang)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except UsageError as err:
        m = MSG[lang]
        if _speaks():
            print(f"{prog}: {m['error']}: {err}\n{m['try_help'].format(prog=prog)}", file=sys.stderr)
        return EXIT_USAGE


# -- experiment small-batch (issue 11) ------------------------------------------------------------------
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


def _add_small_batch_parser(exp) -> None:
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
    q.add_argument("--seeds", type=_seeds, default=(0, 1, 2), metavar="S1,S2,...",
                   help="seeds (default: 0,1,2) / semillas")  # fmt: skip
    q.add_argument("--samples", type=_positive_int, default=1280,
                   help="training samples seen by every run (default: 1280) / ejemplos de entrenamiento que ve "
                   "cada ejecución")  # fmt: skip
    q.add_argument("--lr", type=_positive_float, default=0.1,
                   help="SGD (momentum 0.9) learning rate at m = 32, scaled as lr·m/32 (default: 0.1) / tasa de "
                   "aprendizaje de SGD (momento 0,9) para m = 32, escalada como lr·m/32")  # fmt: skip
    q.add_argument("--data", metavar="PATH", type=Path, default=None,
                   help="MNIST directory or .npz (default: the 10,000 digits shipped with bnlab) / directorio MNIST "
                   "o .npz (por defecto: los 10 000 dígitos que trae bnlab)")  # fmt: skip
    q.add_argument("--quiet", action="store_true", help="no progress bars / sin barras de progreso")
    _add_lang(q)


def _cmd_small_batch(args, lang: str) -> int:
    from .io import WriteError
    from .report.small_batch import run_small_batch

    if args.data is not None and not args.data.exists():
        raise UsageError(MSG[lang]["no_path"].format(flag="--data", path=args.data))
    try:
        run_small_batch(args.out, batch_sizes=args.batch_sizes, seeds=args.seeds, samples=args.samples,
                        lr32=args.lr, data_path=args.data, lang=lang, progress=not args.quiet)  # fmt: skip
    except WriteError as err:  # an output file, not the data
        raise _unwritable("--out", args.out, err, lang) from None
    except (ValueError, OSError) as err:
        raise UsageError(str(err)) from None
    return 0


# ------------------------------------------------------------------------- explain: the family and the page


def _add_family_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--norm", choices=("batch", "layer", "instance", "group"), default="batch",
                   help="member of the family: batch (default), layer, instance, group / miembro de la familia: "
                   "batch (por defecto), layer (por capa), instance (por instancia), group (por grupos)")  # fmt: skip
    p.add_argument("--groups", metavar="G", type=int, default=None,
                   help="number of channel groups for --norm group (a divisor of C) / número de grupos de canales "
                   "para --norm group (un divisor de C)")  # fmt: skip
    p.add_argument("--html", metavar="PAGE.html", type=Path, default=None,
                   help="write the interactive page (one self-contained HTML file, SHAPE optional) / escribe la "
                   "página interactiva (un solo archivo HTML autónomo; SHAPE es opcional)")  # fmt: skip


_PAGE_MSG = {
    "en": "wrote the interactive page {path} (open it in a browser)",
    "es": "página interactiva escrita en {path} (ábrela en un navegador)",
}


def _cmd_explain_html(args, lang: str) -> int:
    from .explain_page import write_page

    if not args.html.parent.exists():
        raise UsageError(MSG[lang]["no_path"].format(flag="--html", path=args.html.parent))
    try:
        is_folder = args.html.is_dir()
    except OSError as err:  # e.g. a name too long for the file system
        raise _unwritable("--html", args.html, err, lang) from None
    if is_folder:
        raise UsageError(MSG[lang]["is_folder"].format(flag="--html", path=args.html, example=args.html / "setb.html"))
    kwargs = {"layout": args.layout, "norm": args.norm, "per": args.per, "groups": args.groups}
    if args.shape is not None:
        kwargs["shape"] = _parse_shape(args.shape, lang)
    try:
        write_page(args.html, lang=lang, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None
    except OSError as err:  # a folder of that name, a full disk, a name too long, ...
        raise _unwritable("--html", args.html, err, lang) from None
    print(_PAGE_MSG[lang].format(path=args.html))
    return 0
