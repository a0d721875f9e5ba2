"""``bnlab evaluate``: evaluate a checkpoint written by ``bnlab train`` in eval mode (Alg. 2 statistics).

``--recalibrate --nproc N``: N processes (gloo, :func:`bnlab.parallel.launch`), each recalibrating over its
own contiguous shard of the training split's mini-batches (shards may be uneven, and a rank may get none);
:func:`bnlab.recalibrate` combines the shards, so every rank holds Alg. 2's statistics over all of them.
"""

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
    positive_int,
    say_replicas_ended,
    set_threads,
    speaks,
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
    p.add_argument("--nproc", type=positive_int, default=1, metavar="N", help=both("cli.help.evaluate.nproc"))
    p.add_argument("--recal-batches", type=positive_int, default=None, metavar="K",
                   help=both("cli.help.evaluate.recal_batches"))  # fmt: skip
    p.add_argument("--save-recalibrated", type=Path, default=None, metavar="FILE",
                   help=both("cli.help.evaluate.save_recalibrated"))  # fmt: skip
    add_threads(p)
    add_quiet(p)
    add_lang(p)
    return p


def run(args) -> int:
    import copy

    from .. import parallel
    from ..i18n.numbers import decimal, percent
    from ..inference import CheckpointError
    from ..training import CHECKPOINT_NAME, evaluate, load_trained

    lang = args.lang

    if not args.recalibrate:
        for flag, value in (("--nproc", args.nproc > 1), ("--recal-batches", args.recal_batches is not None),
                            ("--save-recalibrated", args.save_recalibrated is not None)):  # fmt: skip
            if value:
                raise UsageError(t("cli.recal_needs_recalibrate", lang, flag=flag))
    if args.save_recalibrated is not None and not args.save_recalibrated.parent.is_dir():
        raise UsageError(t("cli.recal_no_folder", lang, path=args.save_recalibrated))
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
    replica = parallel.current()  # None in one process; set in each of --nproc N processes and under torchrun
    if args.nproc > 1 and replica is None:  # every process runs this command as one replica
        return _launch(args)
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
    if speaks():
        print(t("cli.evaluated", lang, split=split, what=what, acc=percent(res["accuracy"], lang),
                loss=decimal(res["loss"], lang, 4), images=images))  # fmt: skip
    if args.recalibrate:
        from ..inference import recalibrate, save_checkpoint

        bs = int(saved["config"]["batch_size"])
        n = (len(data.x_train) // bs) * bs
        batches = [data.x_train[i : i + bs] for i in range(0, n, bs)][: args.recal_batches]
        if replica is not None:  # this rank's contiguous shard; the last ranks may get fewer, or none
            per = -(-len(batches) // replica.world)
            batches = batches[replica.rank * per : (replica.rank + 1) * per]
        try:
            recal = recalibrate(copy.deepcopy(model), batches, progress=not args.quiet, lang=lang)  # bar on stderr
        except ValueError as err:  # e.g. a batch with one value per statistic
            raise UsageError(str(err)) from None
        if replica is not None:  # every rank must hold the same statistics: said, not assumed
            worst = _spread_over_ranks(recal, replica)
            if worst > 1e-6:
                raise UsageError(t("cli.recal_ranks_disagree", lang, nproc=replica.world, diff=f"{worst:.3g}"))
        res = evaluate(recal, x, y)
        if speaks():
            print(t("cli.evaluated", lang, split=split, what=t("cli.stats.recal", lang),
                    acc=percent(res["accuracy"], lang), loss=decimal(res["loss"], lang, 4), images=images))  # fmt: skip
        if args.save_recalibrated is not None and (replica is None or replica.is_main):
            try:
                path = save_checkpoint(args.save_recalibrated, {**saved, "model": recal.state_dict()})
            except OSError as err:
                raise UsageError(t("cli.recal_unwritable", lang, path=args.save_recalibrated, err=err)) from None
            print(t("cli.recal_saved", lang, path=path))
    return 0


def _spread_over_ranks(model, replica) -> float:
    """The largest difference between this rank's BN statistics and any rank's (0 when all agree)."""
    import torch
    import torch.distributed as dist

    mine = torch.cat([v.detach().flatten().double() for k, v in model.state_dict().items() if "running" in k])
    every = [torch.empty_like(mine) for _ in range(replica.world)]
    dist.all_gather(every, mine, group=replica.group)
    return max(float((other - mine).abs().max()) for other in every)


def _launch(args) -> int:
    """``evaluate --recalibrate --nproc N``: run the command in N replicas; say what rank 0 could not."""
    import sys

    from .. import parallel
    from . import main

    run = parallel.launch(args.nproc, main, args.argv)
    if run.how == "interrupted" and not run.told:
        print(t("cli.interrupted_plain", args.lang), file=sys.stderr)
    said = say_replicas_ended(run, args.nproc, args.lang)
    return run.code if said is None else said
