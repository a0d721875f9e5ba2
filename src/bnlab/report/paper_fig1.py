"""The paper's Fig. 1 experiment (Ioffe & Szegedy 2015, §4.1) on MNIST.

A 784-100-100-100-10 network of sigmoid units, trained with and without BN (before each sigmoid) on
mini-batches of 60 images, plain SGD. The figure has the paper's three panels: (a) test accuracy vs
training step; (b, c) the 15th, 50th and 85th percentiles of the input to one sigmoid of the last hidden
layer, over each mini-batch, without and with BN.

The paper does not state the learning rate or the weight scale; the defaults here (SGD, 0.1; weights
N(0, 1/fan_in)) are ours. Test accuracy is measured in eval mode (Alg. 2 statistics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from .._threads import DEFAULT_THREADS, torch_threads
from ..data import load_dataset
from ..i18n import numbers, t
from ..io import make_dirs, write_json
from ..models import PaperMLP, count_parameters
from ..training import TrainConfig, fit, seed_everything
from . import plots

__all__ = ["run_paper_fig1"]


def _at(history: dict, step: int) -> float | None:
    """Test accuracy measured at ``step`` (the last evaluation at or before it)."""
    best = None
    for s, a in zip(history["eval_step"], history["eval_accuracy"], strict=True):
        if s <= step:
            best = a
    return best


def run_paper_fig1(
    data_path: str | Path,
    out_dir: str | Path = "bnlab-paper-fig1",
    *,
    steps: int = 10_000,
    lr: float = 0.1,
    batch_size: int = 60,
    eval_every: int = 200,
    seed: int = 0,
    unit: int = 0,
    lang: str = "en",
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    threads: int | None = DEFAULT_THREADS,
) -> dict:
    """Train the Fig. 1 network with and without BN; write ``fig1.png`` and ``results.json`` to ``out_dir``.

    ``threads``: torch threads while it runs (default 1: a small MLP, see :mod:`bnlab._threads`); ``None`` leaves
    torch's setting.
    """
    with torch_threads(threads):
        return _run(data_path, out_dir, steps, lr, batch_size, eval_every, seed, unit, lang, progress, log)


def _run(data_path, out_dir, steps, lr, batch_size, eval_every, seed, unit, lang, progress, log) -> dict:
    log = log or (lambda s: None)
    msg = t("report.fig1", lang)
    out = Path(out_dir)
    make_dirs(out)
    data = load_dataset("mnist", Path(data_path), seed=seed)
    name = Path(data_path).name
    log(msg["data"].format(path=name, train=len(data.x_train), val=len(data.x_val), test=len(data.x_test)))
    in_features = int(torch.tensor(data.image_shape).prod())
    steps_per_epoch = len(data.x_train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{name}: {len(data.x_train)} training images are fewer than one batch of {batch_size}")
    epochs = -(-steps // steps_per_epoch)  # enough epochs; max_steps stops the run at `steps`
    histories, summary = {}, {}
    for norm in ("none", "activation"):
        seed_everything(seed)
        model = PaperMLP(in_features, data.num_classes, norm=norm)
        config = TrainConfig(
            optimizer="sgd",
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            eval_every=eval_every,
            eval_split="test",
            max_steps=steps,
            record_layer="layers.act3",
            record_unit=unit,
        )
        t0 = time.perf_counter()
        result = fit(model, data, config, progress=progress, desc=f"fig1/{norm}", lang=lang)
        seconds = time.perf_counter() - t0
        h = result.history
        histories[norm] = {k: v for k, v in h.items() if k != "train_seconds"}
        marks = sorted({s for s in (500, 1000, 2000, 5000, 10_000, 20_000, 50_000) if s < steps} | {steps})
        summary[norm] = {
            "final_test_accuracy": h["eval_accuracy"][-1],
            "test_accuracy_at": {str(s): _at(h, s) for s in marks},
            "best_test_accuracy": max(h["eval_accuracy"]),
            "seconds": seconds,
            "params": count_parameters(model),
            "percentiles_first": [h[k][0] for k in ("p15", "p50", "p85")],
            "percentiles_last": [h[k][-1] for k in ("p15", "p50", "p85")],
        }
        log(msg["run"].format(run=t(f"report.norm.{norm}", lang), acc=numbers.percent(h["eval_accuracy"][-1], lang),
                              steps=steps, time=numbers.seconds(seconds, lang)))  # fmt: skip
    title = msg["title"].format(data=name, steps=numbers.integer(steps, lang), m=batch_size, lr=f"{lr:g}")
    fig_path = out / "fig1.png"
    plots.paper_fig1_figure(histories, lang, fig_path, title)
    results = {
        "data": {"file": name, "train": len(data.x_train), "val": len(data.x_val), "test": len(data.x_test)},
        "config": {
            "steps": steps,
            "lr": lr,
            "batch_size": batch_size,
            "eval_every": eval_every,
            "seed": seed,
            "unit": unit,
            "layer": "layers.act3",
            "optimizer": "sgd",
        },  # fmt: skip
        "summary": summary,
        "history": histories,
    }
    json_path = out / "results.json"
    write_json(json_path, results, separators=(",", ":"))  # strict JSON: NaN and inf become null
    log(msg["done"].format(fig=fig_path, json=json_path))
    return {"figure": fig_path, "results": json_path, "summary": summary}
