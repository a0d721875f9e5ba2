"""``bnlab evaluate``: evaluate a checkpoint written by ``bnlab train`` in eval mode (Alg. 2 statistics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..choices import DATASETS, SPLITS
from .common import UsageError, add_allow_legacy, add_lang, add_threads, check_data, load, set_threads
from .messages import MSG


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
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
    p.add_argument("--data", metavar="PATH", type=Path,
                   help="where cifar10 or another MNIST is (default: as in training; mnist: the digits shipped with "
                   "bnlab) / dónde está cifar10 u otro MNIST (por defecto: como en el entrenamiento; mnist: los "
                   "dígitos que trae bnlab)")  # fmt: skip
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="which split (default: test) / qué partición")  # fmt: skip
    add_allow_legacy(p)
    p.add_argument("--recalibrate", action="store_true",
                   help="also evaluate with statistics recalibrated on the training split (Alg. 2) / evaluar también "
                   "con estadísticas recalibradas en la partición de entrenamiento")  # fmt: skip
    add_threads(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar / sin barra de progreso")
    add_lang(p)
    return p


def run(args) -> int:
    import copy

    from ..i18n.numbers import decimal as num
    from ..i18n.numbers import percent as pct
    from ..inference import CheckpointError
    from ..training import CHECKPOINT_NAME, evaluate, load_trained

    lang = args.lang

    m = MSG[lang]
    if not args.checkpoint.exists():
        raise UsageError(m["no_path"].format(flag="CHECKPOINT", path=args.checkpoint))
    if args.checkpoint.is_dir():  # the folder `bnlab train --out` made
        if not (args.checkpoint / CHECKPOINT_NAME).is_file():
            raise UsageError(m["no_ckpt_in_dir"].format(path=args.checkpoint, name=CHECKPOINT_NAME))
        args.checkpoint = args.checkpoint / CHECKPOINT_NAME
    set_threads(args.threads)
    try:
        model, saved = load_trained(args.checkpoint, allow_legacy=args.allow_legacy)
    except CheckpointError as err:
        raise UsageError(m["not_ckpt"].format(path=args.checkpoint, err=err)) from None
    except OSError as err:  # no permission, ...
        raise UsageError(m["unreadable"].format(flag="CHECKPOINT", path=args.checkpoint, err=err)) from None
    from ..models import bn_layers

    has_bn = bool(bn_layers(model))
    norm = saved["model_spec"]["norm"]  # checked by load_trained
    if args.recalibrate and not has_bn:  # before any work or output
        raise UsageError(m["no_recal"].format(path=args.checkpoint, norm=norm))
    meta = saved.get("meta") or {}
    dataset = args.dataset or meta.get("dataset", "digits")
    data_path = args.data if args.data is not None else (Path(meta["data"]) if meta.get("data") else None)
    if args.dataset == "digits" and args.data is None:
        data_path = None
    check_data(dataset, data_path, lang)
    data = load(dataset, data_path, int(meta.get("seed", 0)), lang)
    x, y = getattr(data, f"x_{args.split}"), getattr(data, f"y_{args.split}")
    res = evaluate(model, x, y)
    acc, loss = pct(res["accuracy"], lang), num(res["loss"], lang, 4)
    what = m["ema"] if has_bn else m["no_bn_stats"]["none" if norm == "none" else "per_sample"]
    images = m["split_images"][args.split]
    print(m["evaluated"].format(split=m["splits"][args.split], what=what, acc=acc, loss=loss, n=len(x), images=images))
    if args.recalibrate:
        from ..inference import recalibrate

        bs = int(saved["config"]["batch_size"])
        n = (len(data.x_train) // bs) * bs
        batches = [data.x_train[i : i + bs] for i in range(0, n, bs)]
        recal = recalibrate(copy.deepcopy(model), batches, progress=not args.quiet, lang=lang)  # bar on stderr
        res = evaluate(recal, x, y)
        print(m["evaluated"].format(split=m["splits"][args.split], what=m["recal"], acc=pct(res["accuracy"], lang),
                                    loss=num(res["loss"], lang, 4), n=len(x), images=images))  # fmt: skip
    return 0
