"""``bnlab train``: train one network, with checkpoints each epoch (``--nproc N``: data-parallel, SyncBN)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..choices import ACTIVATIONS, ARCHS, BATCH_NORMS, DATASETS, LEGACY_NORMS, NORMS, OPTIMIZERS, PER, RENORM_NORMS
from ..i18n import t
from ..i18n.numbers import integer
from .common import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    UsageError,
    add_allow_legacy,
    add_lang,
    add_quiet,
    add_threads,
    batch_size,
    both,
    check_data,
    checkpoint_warnings,
    lines,
    load,
    positive_float,
    positive_int,
    read_training_checkpoint,
    remove_if_empty,
    say_replicas_ended,
    set_threads,
    unwritable,
    writable_dir,
)

# Batch Renorm needs its schedule scaled to the run (bnlab experiment small-batch offers it), not offered here
TRAIN_NORMS = tuple(n for n in NORMS if n not in RENORM_NORMS)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help=both("cli.help.train.help"),
        description=lines("cli.help.train.description"),
    )
    p.add_argument("--dataset", choices=DATASETS, default="digits", help=both("cli.help.train.dataset"))
    p.add_argument("--data", metavar="PATH", type=Path, help=both("cli.help.train.data"))
    p.add_argument("--model", choices=ARCHS, default="cnn", help=both("cli.help.train.model"))
    p.add_argument("--norm", choices=TRAIN_NORMS + LEGACY_NORMS, default="batch", help=both("cli.help.train.norm"))
    p.add_argument("--per", choices=PER, default=None, help=both("cli.help.train.per"))
    p.add_argument("--activation", choices=ACTIVATIONS, default="relu", help=both("cli.help.train.activation"))
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum", help=both("cli.help.train.optimizer"))
    p.add_argument("--lr", type=positive_float, default=0.05, help=both("cli.help.train.lr"))
    p.add_argument("--batch-size", type=batch_size, default=32, help=both("cli.help.train.batch_size"))
    p.add_argument("--epochs", type=positive_int, default=10, help=both("cli.help.train.epochs"))
    p.add_argument("--seed", type=int, default=0, help=both("cli.help.seed"))
    p.add_argument("--out", metavar="DIR", type=Path, default=Path("bnlab-train"), help=both("cli.help.train.out"))
    p.add_argument("--resume", action="store_true", help=both("cli.help.train.resume"))
    add_allow_legacy(p)
    add_quiet(p)
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=both("cli.help.train.nproc"))
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
        raise UsageError(t("cli.too_small", lang, err=err, shape=f"{c}×{h}×{w}")) from None


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
    # --lr as the command line takes it (0.05 in every language: it is the option's value)
    return t("cli.figure_title", lang, dataset=args.dataset, model=args.model, norm=_label(args),
             activation=args.activation, optimizer=args.optimizer, lr=f"{args.lr:g}")  # fmt: skip


def run(args) -> int:
    from .. import parallel

    lang = args.lang

    _label(args)  # --norm and --per agree, before anything is read or written
    check_data(args.dataset, args.data, lang)
    from ..training import CHECKPOINT_NAME

    ckpt = args.out / CHECKPOINT_NAME
    replica = parallel.current()  # None in one process; set in each of --nproc N processes and under torchrun
    if ckpt.exists() and not args.resume:
        raise UsageError(t("cli.exists", lang, ckpt=ckpt))
    existed = writable_dir(args.out, "--out", lang)
    try:
        return _run(args, lang, ckpt, replica)
    except KeyboardInterrupt:  # before training began (e.g. while the data loads): leave no empty --out behind
        if not existed:
            remove_if_empty(args.out)
        raise


def _run(args, lang: str, ckpt: Path, replica) -> int:
    from ..training import (
        TrainConfig,
        TrainingDiverged,
        TrainingInterrupted,
        evaluate,
        fit,
        seed_everything,
        write_json,
    )

    if args.nproc > 1 and replica is None:  # every process runs this command as one replica
        if args.resume and ckpt.exists():  # a damaged checkpoint is said at once, before N processes start
            read_training_checkpoint(ckpt, lang, args.allow_legacy, say_legacy=False)  # rank 0 says it
        return _launch_train(args, ckpt, lang)
    saved = None
    if args.resume and (replica is None or replica.is_main):
        if ckpt.exists():
            saved = read_training_checkpoint(ckpt, lang, args.allow_legacy)
            print(t("cli.resuming", lang, ckpt=ckpt, step=integer(saved["step"], lang)), file=sys.stderr)
        else:
            print(t("cli.no_resume", lang, out=args.out), file=sys.stderr)
    set_threads(args.threads)
    data = load(args.dataset, args.data, args.seed, lang)
    steps_per_epoch = len(data.x_train) // args.batch_size
    total = steps_per_epoch * args.epochs
    if saved is not None and saved["step"] >= total:
        raise UsageError(t("cli.already_done", lang, ckpt=ckpt, done=integer(saved["step"], lang),
                           total=integer(total, lang), epochs=args.epochs,
                           epochs_done=integer(saved["step"] // max(steps_per_epoch, 1), lang)))  # fmt: skip
    seed_everything(args.seed)
    model = _build(args, data, lang)
    model = replica.wrap(model) if replica is not None else model
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, epochs=args.epochs,
                         seed=args.seed)  # fmt: skip
    meta = {"dataset": args.dataset, "data": str(args.data.resolve()) if args.data else None, "seed": args.seed}
    try:
        with checkpoint_warnings(lang, show=False):  # read above, where a legacy checkpoint was said
            result = fit(model, data, config, out_dir=args.out, resume=args.resume, progress=not args.quiet,
                         desc=f"{args.model}/{_label(args)}", meta=meta, lang=lang, replica=replica,
                         allow_legacy=args.allow_legacy)  # fmt: skip
    except TrainingInterrupted as stop:
        if replica is not None and not replica.is_main:
            return EXIT_INTERRUPTED
        if stop.checkpoint is None:
            print(t("cli.interrupted_nosave", lang), file=sys.stderr)
        else:
            print(t("cli.interrupted", lang, step=integer(stop.step, lang), total=integer(total, lang),
                    ckpt=stop.checkpoint, cmd=_resume_cmd(args)), file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except TrainingDiverged as stop:
        kept = t("cli.diverged_kept", lang, ckpt=stop.checkpoint) if stop.checkpoint else t("cli.diverged_none", lang)
        diverged = t("cli.diverged", lang, loss=stop.loss, step=integer(stop.step, lang), lr=f"{args.lr:g}", kept=kept)
        print(f"bnlab train: {t('cli.error', lang)}: {diverged}", file=sys.stderr)
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
            print(t("cli.interrupted_last_step", lang, ckpt=ckpt, hist=hist), file=sys.stderr)
            return EXIT_INTERRUPTED
        fig = args.out / "curves.png"
        from ..report.plots import curves_figure

        run = {"norm": _label(args), "history": result.history}
        curves_figure([run], _train_title(args, lang), lang, fig)
    except KeyboardInterrupt:
        print(t("cli.interrupted_after_save", lang, ckpt=ckpt), file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # history.json or curves.png could not be written
        raise unwritable("--out", args.out, err, lang) from None
    from ..i18n.numbers import decimal, percent

    print(t("cli.trained", lang, acc=percent(test["accuracy"], lang), loss=decimal(test["loss"], lang, 4),
            images=t("cli.images.test", lang, n=len(data.x_test))))  # fmt: skip
    print(t("cli.saved", lang, ckpt=ckpt, hist=hist, fig=fig))
    return 0


def _resume_cmd(args) -> str:
    return " ".join(["bnlab", *[a for a in args.argv if a != "--resume"], "--resume"])


def _launch_train(args, ckpt: Path, lang: str) -> int:
    """``train --nproc N``: run the command in N replicas; say what rank 0 could not (see parallel.launch)."""
    from .. import parallel
    from . import main

    run = parallel.launch(args.nproc, main, args.argv)
    if ckpt.exists():
        resume = t("cli.resume_hint", lang, ckpt=ckpt, cmd=_resume_cmd(args))
    else:
        resume = t("cli.nothing_saved", lang)
    if run.how == "interrupted":
        if not run.told:  # stopped before rank 0 could say anything (start-up, or killed)
            print(t("cli.interrupted_plain", lang), file=sys.stderr)
        elif run.statuses and run.statuses[0] == 0:  # rank 0 had finished and printed its results
            print(t("cli.interrupted_after_save", lang, ckpt=ckpt), file=sys.stderr)
    else:
        said = say_replicas_ended(run, args.nproc, lang, resume)
        if said is not None:
            return said
    return run.code
