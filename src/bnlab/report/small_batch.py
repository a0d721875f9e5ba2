"""``bnlab experiment small-batch``: why the size of set B matters (Ioffe & Szegedy 2015, §3.2; Wu & He 2018).

The same CNN (:class:`bnlab.models.SmallCNN`) on the 10,000 real 28×28 MNIST digits shipped with bnlab
(:data:`bnlab.data.MNIST10K`), trained three ways — no BN, BN per activation (each set B holds the m
values of one activation: one per example) and BN per channel (each set B holds m·p·q values: every
location of one feature map in every example) — for several mini-batch sizes m, with the same number of
training samples seen by every run, and several seeds.

What is held fixed, and why:

- **samples seen**: every run sees ``samples`` training images (``samples // m`` steps), so a small m is
  not a shorter training;
- **learning rate**: SGD with momentum 0.9 and the linear scaling rule, lr = ``lr32``·m/32 (Goyal et al.
  2017; Wu & He 2018 train their small batches the same way), so that without BN the runs are comparable
  across m;
- **evaluation**: test accuracy in eval mode with statistics recalibrated by Alg. 2
  (:func:`bnlab.recalibrate`) over ``recal_samples`` training images in mini-batches of the same m, as
  Alg. 2 prescribes; the accuracy with the running (EMA) statistics is recorded too.

With m = 2, per-activation BN normalizes each activation over two values: x̂ is −1 or +1 whatever the
input, so only the sign of the difference between the two examples survives. Per channel, the same m = 2
still pools 2·28·28 = 1568 values per statistic in the first layer. :func:`run_small_batch` measures what
that does to accuracy.
"""

from __future__ import annotations

import copy
import datetime as _dt
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .._threads import DEFAULT_THREADS, torch_threads
from ..data import load_mnist
from ..explain import explain
from ..io import make_dirs, save_figure, write_json
from ..models import SmallCNN, bn_layers
from ..training import TrainConfig, evaluate, fit, seed_everything
from .strings import NORM_NAMES, pct, secs

__all__ = ["run_small_batch", "summarize", "BATCH_SIZES", "NORMS"]

BATCH_SIZES = (2, 4, 8, 16, 32, 64)
NORMS = ("none", "activation", "channel")

_MSG = {
    "en": {
        "data": "Data: {name}, {train} training / {test} test images (28×28); {samples} samples seen per run",
        "run": "[{i}/{n}] m = {m}, {run}, seed {seed}: test accuracy {acc} (recalibrated), {ema} (EMA); {time}",
        "done": "Figure written to {fig}\nNumbers written to {json}",
        "title": "Test accuracy vs mini-batch size m\nMNIST 28×28, {samples} samples seen per run, seeds: {n}",
        "xlabel": "mini-batch size m (log scale)",
        "ylabel": "test accuracy (%), recalibrated statistics",
        "legend_seed": "one seed",
    },
    "es": {
        "data": "Datos: {name}, {train} imágenes de entrenamiento / {test} de prueba (28×28); {samples} ejemplos "
        "vistos por ejecución",
        "run": "[{i}/{n}] m = {m}, {run}, semilla {seed}: exactitud de prueba {acc} (recalibrada), {ema} (EMA); "
        "{time}",
        "done": "Figura escrita en {fig}\nNúmeros escritos en {json}",
        "title": "Exactitud de prueba según el tamaño m del minilote\nMNIST 28×28, {samples} ejemplos vistos por "
        "ejecución, semillas: {n}",
        "xlabel": "tamaño m del minilote (escala logarítmica)",
        "ylabel": "exactitud de prueba (%), estadísticas recalibradas",
        "legend_seed": "una semilla",
    },
}


def _recalibrated(
    model: torch.nn.Module, x: torch.Tensor, m: int, samples: int, progress: bool, lang: str
) -> torch.nn.Module:
    """A copy of ``model`` with Alg. 2 statistics from ``samples`` training images in mini-batches of m."""
    from ..inference import recalibrate

    n = (min(samples, len(x)) // m) * m
    out = copy.deepcopy(model)
    recalibrate(out, [x[i : i + m] for i in range(0, n, m)], progress=progress, lang=lang)
    return out


def _set_sizes(m: int, data) -> list[dict]:
    """For each BN'd conv layer of the CNN: values per set B per activation (m) and per channel (m·p·q)."""
    c, h, w = data.image_shape
    model = SmallCNN(c, (h, w), data.num_classes, norm="channel")
    shapes: dict[str, tuple] = {}
    hooks = [
        mod.register_forward_pre_hook(lambda mod_, args, name=name: shapes.__setitem__(name, tuple(args[0].shape)))
        for name, mod in bn_layers(model)
    ]
    with torch.no_grad():
        model(data.x_train[:m])
    for hk in hooks:
        hk.remove()
    rows = []
    for name, shape in shapes.items():
        layout = "NCHW" if len(shape) == 4 else "NC"
        rows.append(
            {
                "layer": name,
                "shape": list(shape),
                "activation": explain(shape, layout=layout, per="activation").set_size,
                "channel": explain(shape, layout=layout, per="channel").set_size,
            }
        )
    return rows


def summarize(runs: list[dict]) -> dict:
    """``{norm: {m: {"mean", "min", "max", "accuracies"}}}`` of recalibrated test accuracy over the seeds."""
    out: dict = {}
    for r in runs:
        out.setdefault(r["norm"], {}).setdefault(str(r["m"]), []).append(r["test_recal"]["accuracy"])
    return {
        norm: {
            m: {"mean": float(np.mean(a)), "min": float(min(a)), "max": float(max(a)), "accuracies": a}
            for m, a in by_m.items()
        }
        for norm, by_m in out.items()
    }


def run_small_batch(
    out_dir: str | Path = "bnlab-small-batch",
    *,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    seeds: Sequence[int] = (0, 1, 2),
    samples: int = 2048,
    lr32: float = 0.1,
    recal_samples: int = 2048,
    norms: Sequence[str] = NORMS,
    data_path: str | Path | None = None,
    lang: str = "en",
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    command: str = "bnlab experiment small-batch",
    threads: int | None = DEFAULT_THREADS,
) -> dict:
    """Train every (norm, m, seed); write ``results.json`` and ``small-batch.png`` into ``out_dir``.

    Returns the results (also in ``results.json``): ``config``, ``set_sizes`` (values per set B for each
    m and BN layer), ``runs`` (one dict per run) and ``summary`` (see :func:`summarize`). ``threads``: torch
    threads while it runs (default 1: small convolutions, see :mod:`bnlab._threads`); ``None`` leaves torch's setting.
    """
    if lang not in _MSG:
        raise ValueError(f"unknown lang {lang!r}; use 'en' or 'es'")
    batch_sizes = tuple(int(m) for m in batch_sizes)
    if not batch_sizes or any(m < 2 for m in batch_sizes):
        raise ValueError(f"batch sizes must be at least 2 (BN needs 2 values per set B), got {batch_sizes}")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    bad = [n for n in norms if n not in NORMS]
    if bad or not norms:
        raise ValueError(f"unknown norms {bad}; use some of {', '.join(NORMS)}")
    if samples < max(batch_sizes):
        raise ValueError(f"samples={samples} is fewer than one mini-batch of m = {max(batch_sizes)}")
    log = log or (lambda s: None)
    msg = _MSG[lang]
    out = Path(out_dir)
    make_dirs(out)
    t_start = time.perf_counter()
    with torch_threads(threads):  # small convolutions: one thread is as fast, and leaves the other core free
        data = load_mnist(data_path) if data_path is not None else load_mnist()
        if samples > len(data.x_train):
            raise ValueError(f"samples={samples} is more than the {len(data.x_train)} training images")
        log(msg["data"].format(name=data.name, train=len(data.x_train), test=len(data.x_test), samples=samples))
        runs: list[dict] = []
        combos = list(itertools.product(batch_sizes, norms, seeds))
        for m, norm, seed in combos:
            seed_everything(seed)
            model = SmallCNN(data.image_shape[0], data.image_shape[1:], data.num_classes, norm)
            lr = lr32 * m / 32
            config = TrainConfig(optimizer="momentum", lr=lr, batch_size=m, epochs=1, seed=seed,
                                 max_steps=samples // m)  # fmt: skip
            result = fit(model, data, config, progress=progress, desc=f"m={m}/{norm}/seed {seed}", lang=lang)
            t0 = time.perf_counter()
            ema = evaluate(model, data.x_test, data.y_test)
            recal = ema if norm == "none" else evaluate(
                _recalibrated(model, data.x_train, m, recal_samples, progress, lang), data.x_test, data.y_test)
            losses = result.history["loss"]
            run = {
                "m": m,
                "norm": norm,
                "seed": seed,
                "lr": lr,
                "steps": len(losses),
                "test_recal": recal,
                "test_ema": ema,
                "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
                "diverged": not all(math.isfinite(v) for v in losses),
                "train_seconds": result.history["train_seconds"],
                "eval_seconds": time.perf_counter() - t0,
            }
            runs.append(run)
            log(
                msg["run"].format(
                    i=len(runs), n=len(combos), m=m, run=NORM_NAMES[lang][norm], seed=seed,
                    acc=pct(recal["accuracy"], lang), ema=pct(ema["accuracy"], lang),
                    time=secs(run["train_seconds"], lang),
                )  # fmt: skip
            )
        results = {
            "command": command,
            "date": _dt.date.today().isoformat(),
            "config": {
                "batch_sizes": list(batch_sizes),
                "seeds": list(seeds),
                "norms": list(norms),
                "samples": samples,
                "optimizer": "SGD, momentum 0.9",
                "lr32": lr32,
                "recal_samples": recal_samples,
                "threads": 1,
                "data": {"name": data.name, "train": len(data.x_train), "test": len(data.x_test),
                         "image_shape": list(data.image_shape)},  # fmt: skip
            },
            "set_sizes": {str(m): _set_sizes(m, data) for m in batch_sizes},
            "runs": runs,
            "summary": summarize(runs),
        }
        fig = out / "small-batch.png"
        figure(results, lang, fig)
        results["seconds"] = time.perf_counter() - t_start
        path = out / "results.json"
        write_json(path, results, indent=1)
    log(msg["done"].format(fig=fig, json=path))
    return results


def figure(results: dict, lang: str, path: str | Path, dpi: int = 100) -> Path:
    """Test accuracy (recalibrated) vs m on a log axis: one line per norm (mean over seeds), a dot per seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import COLORS

    msg = _MSG[lang]
    cfg = results["config"]
    summary = results["summary"]
    fig = Figure(figsize=(9, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ms = cfg["batch_sizes"]
    for norm in cfg["norms"]:
        s = summary[norm]
        mean = [100 * s[str(m)]["mean"] for m in ms]
        ax.plot(ms, mean, color=COLORS[norm], lw=2, marker="o", label=NORM_NAMES[lang][norm])
        for m in ms:
            accs = [100 * a for a in s[str(m)]["accuracies"]]
            ax.scatter([m] * len(accs), accs, color=COLORS[norm], s=12, alpha=0.45, lw=0)
    ax.scatter([], [], color="#555555", s=12, alpha=0.45, lw=0, label=msg["legend_seed"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.minorticks_off()
    ax.set_xlabel(msg["xlabel"])
    ax.set_ylabel(msg["ylabel"])
    ax.grid(alpha=0.3)
    lo = min(min(v["min"] for v in summary[n].values()) for n in cfg["norms"])
    ax.set_ylim(max(0.0, math.floor(100 * lo / 5) * 5 - 2), 100.5)
    fig.legend(loc="outside lower center", ncol=4, fontsize=10, frameon=False)  # below the axes, never on the data
    fig.suptitle(msg["title"].format(samples=cfg["samples"], n=len(cfg["seeds"])), fontsize=11)
    path = Path(path)
    make_dirs(path.parent)
    return save_figure(fig, path, dpi=dpi)


def for_report(demo_dir: str | Path) -> dict | None:
    """What the demo report shows of this experiment: the user's run in ``demo_dir/small-batch`` (written by
    ``bnlab experiment small-batch --out DIR/small-batch``) if there is one, else the reference run shipped
    with bnlab (:mod:`bnlab.report.small_batch_reference`); ``None`` if neither is readable."""
    path = Path(demo_dir) / "small-batch" / "results.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        source = {"source": "user", "path": str(path.parent.name + "/" + path.name)}
    except (OSError, ValueError):
        try:
            from .small_batch_reference import REFERENCE
        except ImportError:
            return None
        saved, source = REFERENCE, {"source": "reference", "path": ""}
    try:
        return {**source, "date": saved["date"], "config": saved["config"], "summary": saved["summary"],
                "set_sizes": saved["set_sizes"]}  # fmt: skip
    except (KeyError, TypeError):
        return None
