"""``bnlab train``: train one network, with checkpoints each epoch (``--nproc N``: data-parallel, SyncBN)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..choices import ACTIVATIONS, ARCHS, BATCH_NORMS, DATASETS, LEGACY_NORMS, NORMS, OPTIMIZERS, PER, RENORM_NORMS
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

# Batch Renorm needs its schedule scaled to the run (bnlab experiment small-batch offers it), not offered here
TRAIN_NORMS = tuple(n for n in NORMS if n not in RENORM_NORMS)


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
    p.add_argument("--norm", choices=TRAIN_NORMS + LEGACY_NORMS, default="batch",
                   help="batch (batch normalization; see --per), or, with sets within one sample instead of the "
                   "mini-batch, layer, instance or group (8 groups), or none (default: batch); channel and activation "
                   "are the old spellings of --norm batch --per channel and --norm batch --per activation "
                   "/ batch (normalización por lotes; ver --per), o, con conjuntos dentro de un ejemplo en lugar del "
                   "minilote, layer, instance o group (8 grupos), o none (por defecto: batch); channel y activation "
                   "son las grafías antiguas de --norm batch --per channel y --norm batch --per activation",
                   )  # fmt: skip
    p.add_argument("--per", choices=PER, default=None,
                   help="for batch: channel (convolutional BN, one statistic per feature map; the default "
                   "for cnn) or activation (one per activation; the default for mlp) / para batch: channel "
                   "(BN convolucional, un estadístico por mapa de características; por defecto en cnn) o activation "
                   "(uno por activación; por defecto en mlp)")  # fmt: skip
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


def _spec(args, data, lang: str = "en"):
    """The :class:`bnlab.spec.ModelSpec` the options name (``--norm channel`` is ``--norm batch --per channel``)."""
    from ..spec import ModelSpec

    c, h, w = data.image_shape
    try:
        if args.model == "mlp":
            return ModelSpec.mlp(c * h * w, data.num_classes, args.norm, activation=args.activation, per=args.per)
        return ModelSpec.cnn(c, (h, w), data.num_classes, args.norm, args.activation, per=args.per)
    except ValueError as err:  # e.g. --norm layer --per activation
        raise UsageError(str(err)) from None


def _build(args, data, lang: str = "en"):
    from ..models import build_model

    spec = _spec(args, data, lang)
    try:
        return build_model(spec)
    except ValueError as err:  # e.g. images too small for the pooling stages
        c, h, w = data.image_shape
        raise UsageError(MSG[lang]["too_small"].format(err=err, shape=f"{c}×{h}×{w}")) from None


def _label(args) -> str:
    """The run's short name (``channel``, ``activation``, ``layer``, …): the figure's and the progress bar's."""
    from ..i18n import t
    from ..vocabulary import LEGACY_SPELLINGS, parse_norm

    per = getattr(args, "per", None)  # absent in a namespace made before --per
    if per is not None and args.norm in LEGACY_SPELLINGS and LEGACY_SPELLINGS[args.norm][1] != per:
        said = LEGACY_SPELLINGS[args.norm][1]
        raise UsageError(t("cli.spec.per_conflicts", args.lang, norm=args.norm, said=said, per=per))
    if per is not None and args.norm not in (*BATCH_NORMS, *LEGACY_NORMS):
        raise UsageError(t("cli.spec.per_not_for_norm", args.lang, norm=args.norm))
    return parse_norm(args.norm, per, default_per="activation" if args.model == "mlp" else "channel").label


def _train_title(args, lang: str) -> str:
    rate = {"en": "learning rate", "es": "tasa de aprendizaje"}[lang]
    return f"{args.dataset}, {args.model}, {_label(args)}, {args.activation}, {args.optimizer}, {rate} {args.lr:g}"


def run(args) -> int:
    from .. import parallel

    lang = args.lang

    m = MSG[lang]
    _label(args)  # --norm and --per agree, before anything is read or written
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
                     desc=f"{args.model}/{_label(args)}", meta=meta, lang=lang, replica=replica,
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

        run = {"norm": _label(args), "history": result.history}
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
