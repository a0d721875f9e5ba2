"""``bnlab evaluate``: evaluate a checkpoint written by ``bnlab train`` in eval mode (Alg. 2 statistics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import DATASETS, SPLITS
from ..i18n import t
from .common import (
    UsageError,
    add_allow_legacy,
    add_lang,
    add_quiet,
    add_threads,
    both,
    check_data,
    checkpoint_warnings,
    lines,
    load,
    set_threads,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help=both("cli.help.evaluate.help"),
        description=lines("cli.help.evaluate.description"),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help=both("cli.help.evaluate.checkpoint"))
    p.add_argument("--dataset", choices=DATASETS, help=both("cli.help.evaluate.dataset"))
    p.add_argument("--data", metavar="PATH", type=Path, help=both("cli.help.evaluate.data"))
    p.add_argument("--split", choices=SPLITS, default="test", help=both("cli.help.evaluate.split"))
    add_allow_legacy(p)
    p.add_argument("--recalibrate", action="store_true", help=both("cli.help.evaluate.recalibrate"))
    add_threads(p)
    add_quiet(p)
    add_lang(p)
    return p


def run(args) -> int:
    import copy

    from ..i18n.numbers import decimal, percent
    from ..inference import CheckpointError
    from ..training import CHECKPOINT_NAME, evaluate, load_trained

    lang = args.lang
    if not args.checkpoint.exists():
        raise UsageError(t("cli.no_path", lang, flag="CHECKPOINT", path=args.checkpoint))
    if args.checkpoint.is_dir():  # the folder `bnlab train --out` made
        if not (args.checkpoint / CHECKPOINT_NAME).is_file():
            raise UsageError(t("cli.no_ckpt_in_dir", lang, path=args.checkpoint, name=CHECKPOINT_NAME))
        args.checkpoint = args.checkpoint / CHECKPOINT_NAME
    set_threads(args.threads)
    try:
        with checkpoint_warnings(lang):
            model, saved = load_trained(args.checkpoint, allow_legacy=args.allow_legacy)
    except CheckpointError as err:
        raise UsageError(t("cli.not_ckpt", lang, path=args.checkpoint, err=err)) from None
    except OSError as err:  # no permission, ...
        raise UsageError(t("cli.unreadable", lang, flag="CHECKPOINT", path=args.checkpoint, err=err)) from None
    from ..models import bn_layers

    has_bn = bool(bn_layers(model))
    norm = saved["model_spec"]["norm"]  # checked by load_trained
    if args.recalibrate and not has_bn:  # before any work or output
        raise UsageError(t("cli.no_recal", lang, path=args.checkpoint, norm=norm))
    meta = saved.get("meta") or {}
    dataset = args.dataset or meta.get("dataset", "digits")
    data_path = args.data if args.data is not None else (Path(meta["data"]) if meta.get("data") else None)
    if args.dataset == "digits" and args.data is None:
        data_path = None
    check_data(dataset, data_path, lang)
    data = load(dataset, data_path, int(meta.get("seed", 0)), lang)
    x, y = getattr(data, f"x_{args.split}"), getattr(data, f"y_{args.split}")
    split = t(f"cli.splits.{args.split}", lang)
    images = t(f"cli.images.{args.split}", lang, n=len(x))
    res = evaluate(model, x, y)
    what = t("cli.stats.ema" if has_bn else "cli.stats.none" if norm == "none" else "cli.stats.per_sample", lang)
    print(t("cli.evaluated", lang, split=split, what=what, acc=percent(res["accuracy"], lang),
            loss=decimal(res["loss"], lang, 4), images=images))  # fmt: skip
    if args.recalibrate:
        from ..inference import recalibrate

        bs = int(saved["config"]["batch_size"])
        n = (len(data.x_train) // bs) * bs
        batches = [data.x_train[i : i + bs] for i in range(0, n, bs)]
        recal = recalibrate(copy.deepcopy(model), batches, progress=not args.quiet, lang=lang)  # bar on stderr
        res = evaluate(recal, x, y)
        print(t("cli.evaluated", lang, split=split, what=t("cli.stats.recal", lang), acc=percent(res["accuracy"], lang),
                loss=decimal(res["loss"], lang, 4), images=images))  # fmt: skip
    return 0
