"""``bnlab train``: train one network, with checkpoints each epoch (``--nproc N``: data-parallel, SyncBN)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..choices import ACTIVATIONS, ARCHS, DATASETS, FAMILY_NORMS, NORMS, OPTIMIZERS
from .common import (
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    UsageError,
    add_allow_legacy,
    add_lang,
    add_threads,
    batch_size,
    check_data,
    load,
    positive_float,
    positive_int,
    read_training_checkpoint,
    set_threads,
    unwritable,
    writable_dir,
)
from .messages import MSG


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train one network, with checkpoints each epoch / entrena una red, con puntos de control por época",
        description="Train one network; a checkpoint is saved in --out at the end of every epoch and on Ctrl-C,\n"
        "and --resume continues exactly where it stopped.\n"
        "Entrena una red; se guarda un punto de control en --out al final de cada época y con Ctrl-C,\n"
        "y --resume continúa exactamente donde se detuvo.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="dataset (default: digits; mnist: the 10,000 digits shipped with bnlab) / conjunto de datos "
                   "(mnist: los 10 000 dígitos que trae bnlab)")  # fmt: skip
    p.add_argument("--data", metavar="PATH", type=Path,
                   help="where cifar10 is, or another MNIST (a directory of IDX files or an .npz; not needed for "
                   "digits and mnist) / dónde está cifar10, u otro MNIST (un directorio IDX o un .npz; no hace falta "
                   "para digits ni mnist)")  # fmt: skip
    p.add_argument("--model", choices=ARCHS, default="cnn",
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
    p.add_argument("--lr", type=positive_float, default=0.05,
                   help="learning rate (default: 0.05) / tasa de aprendizaje")  # fmt: skip
    p.add_argument("--batch-size", type=batch_size, default=32,
                   help="mini-batch size m (default: 32) / tamaño del minilote m")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs (default: 10) / épocas")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0) / semilla aleatoria")
    p.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-train"),
                   help="folder for checkpoint, history and figure (default: bnlab-train) / carpeta para el punto "
                   "de control, el historial y la figura")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.pt / continuar desde DIR/last.pt")  # fmt: skip
    add_allow_legacy(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar / sin barra de progreso")
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N",
                   help="train on N local processes, each with 1/N of every batch, synchronized BN (default: 1; "
                   "also runs under torchrun) / entrenar en N procesos locales, cada uno con 1/N de cada "
                   "minilote, BN sincronizada (también con torchrun)")  # fmt: skip
    add_threads(p)
    add_lang(p)
    return p


def _build(args, data, lang: str = "en"):
    from ..models import PaperMLP, SmallCNN

    c, h, w = data.image_shape
    if args.model == "mlp":
        return PaperMLP(c * h * w, data.num_classes, norm=args.norm, activation=args.activation)
    try:
        return SmallCNN(c, (h, w), data.num_classes, norm=args.norm, activation=args.activation)
    except ValueError as err:  # e.g. images too small for the pooling stages
        raise UsageError(MSG[lang]["too_small"].format(err=err, shape=f"{c}×{h}×{w}")) from None


def _train_title(args, lang: str) -> str:
    rate = {"en": "learning rate", "es": "tasa de aprendizaje"}[lang]
    return f"{args.dataset}, {args.model}, {args.norm}, {args.activation}, {args.optimizer}, {rate} {args.lr:g}"


def run(args) -> int:
    from .. import parallel

    lang = args.lang

    m = MSG[lang]
    check_data(args.dataset, args.data, lang)
    from ..training import (
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
    writable_dir(args.out, "--out", lang)
    if args.nproc > 1 and replica is None:  # every process runs this command as one replica
        if args.resume and ckpt.exists():  # a damaged checkpoint is said at once, before N processes start
            read_training_checkpoint(ckpt, lang)
        return _launch_train(args, ckpt, lang)
    saved = None
    if args.resume and (replica is None or replica.is_main):
        if ckpt.exists():
            saved = read_training_checkpoint(ckpt, lang, args.allow_legacy)
            print(m["resuming"].format(ckpt=ckpt, step=saved["step"]), file=sys.stderr)
        else:
            print(m["no_resume"].format(out=args.out), file=sys.stderr)
    set_threads(args.threads)
    data = load(args.dataset, args.data, args.seed, lang)
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
        raise unwritable("--out", args.out, err, lang) from None
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
        from ..i18n.numbers import decimal as num
        from ..i18n.numbers import percent as pct
        from ..report.plots import curves_figure

        run = {"norm": args.norm, "history": result.history}
        curves_figure([run], _train_title(args, lang), lang, fig)
    except KeyboardInterrupt:
        print(m["interrupted_after_save"].format(ckpt=ckpt), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # history.json or curves.png could not be written
        raise unwritable("--out", args.out, err, lang) from None
    print(m["trained"].format(acc=pct(test["accuracy"], lang), loss=num(test["loss"], lang, 4), n=len(data.x_test)))
    print(m["saved"].format(ckpt=ckpt, hist=hist, fig=fig))
    return 0


def _resume_cmd(args) -> str:
    return " ".join(["bnlab", *[a for a in args.argv if a != "--resume"], "--resume"])


def _launch_train(args, ckpt: Path, lang: str) -> int:
    """``train --nproc N``: run the command in N replicas; say what rank 0 could not (see parallel.launch)."""
    from .. import parallel
    from . import main

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
