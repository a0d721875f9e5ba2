"""``bnlab demo``: train the same CNN without BN, with BN per activation and per channel, and report.

Three settings × three normalizations on scikit-learn's digits, about a second per run on one CPU core.
The settings are chosen so that the report shows both sides honestly: a well-tuned baseline where BN
changes little, and two settings the paper names where it matters (a high learning rate, §3.3; sigmoid
units, Fig. 1).

:func:`run_demo` trains, measures and returns the results as plain data (also written to
``results.json``); :mod:`bnlab.report.html` turns them into ``index.html``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from .._threads import DEFAULT_THREADS, torch_threads
from ..data import load_dataset
from ..explain import explain
from ..i18n import languages, numbers, t
from ..io import make_dirs, write_json
from ..models import SmallCNN, bn_layers, count_parameters
from ..training import TrainConfig, evaluate, fit, seed_everything
from . import plots, small_batch
from .settings import SETTINGS, Setting

__all__ = ["Setting", "SETTINGS", "NORM_ORDER", "run_demo"]

NORM_ORDER = ("none", "activation", "channel")
#: The watched pre-activation: channel 0 at the centre of the second conv layer's 4×4 map, where the two BN
#: variants form different sets B (after the dense layer they form the same one, so the panels could not differ).
RECORD_LAYER, RECORD_UNIT = "features.act2", 0


def _batch_stats_eval(model: torch.nn.Module, x, y, batch_size: int) -> dict:
    """Test loss/accuracy in train mode: each batch normalized with its own statistics (on a copy)."""
    m = copy.deepcopy(model).train()
    bounds = list(range(0, len(x), batch_size)) + [len(x)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:  # one image alone has no batch statistics
        del bounds[-2]
    loss, correct = 0.0, 0
    with torch.no_grad():
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            out = m(x[a:b])
            loss += float(torch.nn.functional.cross_entropy(out, y[a:b], reduction="sum"))
            correct += int((out.argmax(1) == y[a:b]).sum())
    return {"loss": loss / len(x), "accuracy": correct / len(x)}


def _recalibrated_eval(model: torch.nn.Module, data, batch_size: int, progress: bool, lang: str) -> dict | None:
    try:
        from ..inference import recalibrate
    except ImportError:
        return None
    m = copy.deepcopy(model)
    n = (len(data.x_train) // batch_size) * batch_size
    batches = [data.x_train[i : i + batch_size] for i in range(0, n, batch_size)]
    recalibrate(m, batches, progress=progress, lang=lang)
    return evaluate(m, data.x_test, data.y_test)


def _layers(batch_size: int, data, lang: str, seed: int) -> list[dict]:
    """Each BN layer of the CNN: its input shape and set B under both variants (from bnlab.explain)."""
    seed_everything(seed)
    model = SmallCNN(*data.image_shape[:1], data.image_shape[1:], data.num_classes, norm="channel")
    shapes = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: shapes.__setitem__(name, tuple(args[0].shape)))
        for name, m in bn_layers(model)
    ]
    with torch.no_grad():
        model(data.x_train[:batch_size])
    for h in hooks:
        h.remove()
    out = []
    for name, shape in shapes.items():
        layout = "NCHW" if len(shape) == 4 else "NC"
        row = {"name": name, "shape": list(shape), "layout": layout}
        for per in ("channel", "activation"):
            e = explain(shape, layout=layout, per=per, lang=lang)
            row[per] = {"sets": e.num_sets, "size": e.set_size, "params": e.num_params}
        row["text"] = explain(shape, layout=layout, per="channel", lang=lang).text
        out.append(row)
    return out


def run_demo(
    out_dir: str | Path = "bnlab-demo",
    lang: str = "en",
    epochs: int = 8,
    batch_size: int = 32,
    seeds: tuple[int, ...] = (0, 1),
    settings: tuple[Setting, ...] = SETTINGS,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    command: str = "bnlab demo",
    threads: int | None = DEFAULT_THREADS,
) -> Path:
    """Train every setting × normalization, then write ``out_dir/index.html``; return its path.

    ``threads``: torch threads while it runs (default 1, see :mod:`bnlab._threads`); ``None`` leaves torch's setting.
    """
    from .html import write_report  # the page layer is only needed at the end

    if lang not in languages():
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(languages())}")
    log = log or (lambda s: None)
    t_start = time.perf_counter()
    out = Path(out_dir)
    make_dirs(out / "figures")
    # Tiny convolutions: a second thread costs more in synchronisation than it saves, and on a shared
    # machine a busy core stalls both.
    with torch_threads(threads):
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        t0 = time.perf_counter()
        data = load_dataset("digits", seed=seeds[0])  # one split for every run: seeds vary the training only
        t_data = time.perf_counter() - t0
        log(
            t(
                "report.msg_data",
                lang,
                name=data.name,
                train=len(data.x_train),
                val=len(data.x_val),
                test=len(data.x_test),
            )
        )
        steps_per_epoch = len(data.x_train) // batch_size
        runs = []
        eval_seconds = 0.0
        n_runs = len(seeds) * len(settings) * len(NORM_ORDER)
        for seed, setting, norm in itertools.product(seeds, settings, NORM_ORDER):
            seed_everything(seed)
            model = SmallCNN(data.image_shape[0], data.image_shape[1:], data.num_classes, norm, setting.activation)
            config = TrainConfig(
                optimizer=setting.optimizer,
                lr=setting.lr,
                batch_size=batch_size,
                epochs=epochs,
                seed=seed,
                eval_every=max(steps_per_epoch // 3, 1),
                record_layer=RECORD_LAYER,
                record_unit=RECORD_UNIT,
            )
            desc = f"{setting.key}/{norm}/seed {seed}"
            result = fit(model, data, config, progress=progress, desc=desc, lang=lang)
            t0 = time.perf_counter()
            test = evaluate(model, data.x_test, data.y_test)
            traineval = None
            if norm != "none":
                recal = _recalibrated_eval(model, data, batch_size, progress, lang)
                traineval = {
                    "batch": _batch_stats_eval(model, data.x_test, data.y_test, batch_size),
                    "ema": test,
                    "recal": recal,
                }
            eval_seconds += time.perf_counter() - t0
            h = result.history
            run = {
                "setting": setting.key,
                "norm": norm,
                "seed": seed,
                "params": count_parameters(model),
                "stats": sum(m.running_mean.numel() + m.running_var.numel() for _, m in bn_layers(model)),
                "test": test,
                "errors": round((1 - test["accuracy"]) * len(data.x_test)),
                "val_accuracy": h["eval_accuracy"][-1],
                "train_loss": h["loss"][-1],
                "train_seconds": h["train_seconds"],
                "steps": len(h["step"]),
                "traineval": traineval,
                "history": {k: v for k, v in h.items() if k != "train_seconds"},
            }
            runs.append(run)
            log(
                t(
                    "report.msg_run",
                    lang,
                    i=len(runs),
                    n=n_runs,
                    setting=setting.title(lang),
                    run=t(f"report.norm.{norm}", lang),
                    seed=seed,
                    acc=numbers.percent(test["accuracy"], lang),
                    time=numbers.seconds(h["train_seconds"], lang),
                )
            )
        results = {
            "lang": lang,
            "command": command,
            "date": _dt.date.today().isoformat(),
            "seeds": list(seeds),
            "epochs": epochs,
            "batch_size": batch_size,
            "threads": 1,
            "data": {
                "name": data.name,
                "train": len(data.x_train),
                "val": len(data.x_val),
                "test": len(data.x_test),
            },
            "settings": [asdict(s) for s in settings],
            "record": {"layer": RECORD_LAYER, "unit": RECORD_UNIT},
            "layers": _layers(batch_size, data, lang, seeds[0]),
            "runs": runs,
        }
        t0 = time.perf_counter()
        results["out_name"] = str(out_dir)  # as the user wrote it, for the commands the report suggests
        small = small_batch.for_report(out)
        if small is not None:
            results["small_batch"] = small
        figures = plots.demo_figures(results, out / "figures", lang)
        # the learner's third question: a real 3x3 filter beside the feature map it makes from one digit
        plots.filter_map_figure(data.x_train[0, 0].numpy(), lang, out / "figures" / "filter-vs-map.png")
        figures["filter"] = "figures/filter-vs-map.png"
        if small is not None:
            small_batch.figure(small, lang, out / "figures" / "small-batch.png")
            figures["small_batch"] = "figures/small-batch.png"
        t_fig = time.perf_counter() - t0
        train_total = sum(r["train_seconds"] for r in runs)
        total = time.perf_counter() - t_start
        results["timings"] = {
            "data": t_data,
            "train": train_total,
            "eval": eval_seconds,
            "figures": t_fig,
            "other": max(total - t_data - train_total - eval_seconds - t_fig, 0.0),
            "total": total,
        }
        results["figures"] = figures
        write_json(out / "results.json", results, separators=(",", ":"))  # strict JSON: NaN and inf become null
        index = write_report(results, out, settings)
    log(t("report.msg_done", lang, path=index.resolve()))
    log(t("report.msg_open", lang, url=index.resolve().as_uri()))
    return index
