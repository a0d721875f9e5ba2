"""``bnlab experiment small-batch``: why the size of set B matters (Ioffe & Szegedy 2015, §3.2; Wu & He 2018).

The same CNN (:class:`bnlab.models.SmallCNN`) on the 10,000 real 28×28 MNIST digits shipped with bnlab
(:data:`bnlab.data.MNIST10K`), trained with each member of :data:`NORMS` for several mini-batch sizes m,
with the same number of training samples seen by every run, and several seeds:

- ``none``: no normalization;
- ``activation``: BN per activation (each set B holds the m values of one activation: one per example);
- ``channel``: BN per channel (each set B holds m·p·q values: every location of one feature map in every
  example; in the dense layer of the head, m values);
- ``channel-conv``: an ablation — BN per channel in the conv layers only, none after the dense layer
  (whose set B holds only m values), to test whether that layer is what fails at m = 2;
- ``channel-ln``: the other ablation — BN per channel in the conv layers, layer norm after the dense layer:
  the head stays normalized, but its set B is the 64 values of one example instead of m examples;
- ``renorm``: Batch Renorm per channel (Ioffe 2017): BN's set B, with μ_B and σ_B corrected toward the
  running statistics; warm-up and relaxation scaled to the run (:func:`bnlab.models.renorm_schedule`);
- ``group``, ``layer``, ``instance``: sets B inside one example (Wu & He 2018), so m does not enter them.

What is held fixed, and why:

- **samples seen**: every run sees ``samples`` training images (``samples // m`` steps), so a small m is
  not a shorter training;
- **the optimizer's rule across m**: Adam with the square-root scaling rule of Malladi et al. (2022, "On
  the SDEs and scaling rules for adaptive gradient algorithms"), :func:`adam_rule`: with κ = m/32,
  lr = ``lr32``·√κ, 1 − β₁ = 0.1·κ, 1 − β₂ = 0.001·κ and ε = 1e-8/√κ (Adam's defaults at m = 32). The
  rule makes the runs follow the same stochastic differential equation whatever m, so that in samples seen
  the averaging horizons of β₁ and β₂ and the noise of the updates are the same for every m and every
  member; what is left to differ along a row is set B. (SGD with momentum 0.9 and the linear rule
  lr ∝ m, the earlier protocol, keeps the momentum's horizon at 10 *steps*: at m = 64 with a few dozen
  steps that is a large part of the run, and no member was flat across m.)
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
from ..i18n import languages, numbers, t
from ..io import make_dirs, save_figure, write_json
from ..models import SmallCNN, bn_layers
from ..training import evaluate, seed_everything
from ..vocabulary import parse_norm

__all__ = [
    "run_small_batch",
    "summarize",
    "findings",
    "build",
    "adam_rule",
    "BATCH_SIZES",
    "NORMS",
    "BN_LIKE",
    "PER_SAMPLE",
]

BATCH_SIZES = (2, 4, 8, 16, 32, 64)
#: The members of the study, in the order of its table.
NORMS = ("none", "activation", "channel", "channel-conv", "channel-ln", "renorm", "group", "layer", "instance")
#: Members with running statistics: evaluated with Alg. 2's recalibrated statistics (and with the EMA).
BN_LIKE = ("activation", "channel", "channel-conv", "channel-ln", "renorm")
#: Members whose set B stays inside one example: the same computation in training and in eval mode.
PER_SAMPLE = ("group", "layer", "instance")
#: The square-root rule's β₁ = 1 − 0.1·m/32 must stay above 0 (:func:`adam_rule`).
MAX_BATCH = 320
_EXTRA_COLORS = {"channel-conv": "#17becf", "channel-ln": "#bcbd22", "renorm": "#d62728"}  # the others: plots.COLORS


def build(member: str, data, steps: int) -> torch.nn.Module:
    """The CNN for one member of :data:`NORMS`, for a run of ``steps`` training steps."""
    c, h, w = data.image_shape
    n = parse_norm(member)  # the member's name is its run label: channel-ln is (batch, channel), layer norm in the head
    return SmallCNN(c, (h, w), data.num_classes, n.norm, dense_norm=n.dense_norm, per=n.per,
                    renorm_steps=steps if n.norm == "renorm" else None)  # fmt: skip


def adam_rule(m: int, lr32: float) -> dict:
    """Adam's hyper-parameters for mini-batches of m by the square-root scaling rule (Malladi et al. 2022):
    κ = m/32, lr = ``lr32``·√κ, betas = (1 − 0.1·κ, 1 − 0.001·κ), eps = 1e-8/√κ — Adam's defaults at m = 32.

    >>> r = adam_rule(8, 0.002)
    >>> round(r["lr"], 6), r["betas"]
    (0.001, (0.975, 0.99975))
    """
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m < MAX_BATCH:
        raise ValueError(f"the square-root rule needs 1 <= m < {MAX_BATCH} (β₁ = 1 − 0.1·m/32 > 0), got m={m!r}")
    k = m / 32
    return {"lr": lr32 * math.sqrt(k), "betas": (1 - 0.1 * k, 1 - 0.001 * k), "eps": 1e-8 / math.sqrt(k)}


def _train(model: torch.nn.Module, data, m: int, steps: int, seed: int, lr32: float) -> dict:
    """``steps`` Adam steps on mini-batches of m (an order of the training images drawn from ``seed``, a new
    one each epoch); the loss of every step. Stops at a non-finite loss (``diverged``), before stepping."""
    opt = torch.optim.Adam(model.parameters(), **adam_rule(m, lr32))
    x, y = data.x_train, data.y_train
    per_epoch = len(x) // m
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        k = step % per_epoch
        if k == 0:
            order = torch.randperm(len(x), generator=gen)
        idx = order[k * m : (k + 1) * m]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"losses": losses, "seconds": time.perf_counter() - t0}


_DATA: dict = {}  # per process: the data set, read once by each worker


def _one_run(m: int, norm: str, seed: int, cfg: dict) -> dict:
    """Train and score one (m, member, seed); in the calling process or in a worker."""
    with torch_threads(cfg["threads"]):
        key = str(cfg["data_path"])
        if key not in _DATA:
            _DATA.clear()
            _DATA[key] = load_mnist(cfg["data_path"]) if cfg["data_path"] is not None else load_mnist()
        data = _DATA[key]
        seed_everything(seed)
        steps = cfg["samples"] // m
        model = build(norm, data, steps)
        trained = _train(model, data, m, steps, seed, cfg["lr32"])
        t0 = time.perf_counter()
        ema = evaluate(model, data.x_test, data.y_test)
        recal = ema if norm not in BN_LIKE else evaluate(
            _recalibrated(model, data.x_train, m, cfg["recal_samples"]), data.x_test, data.y_test)  # fmt: skip
        val = evaluate(model, data.x_val, data.y_val)
        losses = trained["losses"]
        return {
            "m": m,
            "norm": norm,
            "seed": seed,
            "lr": adam_rule(m, cfg["lr32"])["lr"],
            "steps": len(losses),
            "test_recal": recal,
            "test_ema": ema,
            "val_ema": val,
            "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
            "diverged": not all(math.isfinite(v) for v in losses),
            "train_seconds": trained["seconds"],
            "eval_seconds": time.perf_counter() - t0,
        }


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its (waited-for) children."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage,
                                                    (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))  # fmt: skip


def _recalibrated(model: torch.nn.Module, x: torch.Tensor, m: int, samples: int) -> torch.nn.Module:
    """A copy of ``model`` with Alg. 2 statistics from ``samples`` training images in mini-batches of m."""
    from ..inference import recalibrate

    n = (min(samples, len(x)) // m) * m
    out = copy.deepcopy(model)
    recalibrate(out, [x[i : i + m] for i in range(0, n, m)], progress=False)
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


def summarize(runs: list[dict], key: str = "test_recal") -> dict:
    """``{norm: {m: {"mean", "min", "max", "accuracies"}}}`` of test accuracy over the seeds: with recalibrated
    statistics (``key="test_recal"``, the study's measure) or with the running statistics (``"test_ema"``)."""
    out: dict = {}
    for r in runs:
        out.setdefault(r["norm"], {}).setdefault(str(r["m"]), []).append(r[key]["accuracy"])
    return {
        norm: {
            m: {"mean": float(np.mean(a)), "min": float(min(a)), "max": float(max(a)), "accuracies": a}
            for m, a in by_m.items()
        }
        for norm, by_m in out.items()
    }


def _order(a: dict, b: dict) -> str:
    """How seed ranges compare: ``"above"`` (every seed of a above every seed of b), ``"below"``, ``"overlap"``."""
    if a["min"] > b["max"]:
        return "above"
    if a["max"] < b["min"]:
        return "below"
    return "overlap"


def findings(summary: dict, batch_sizes: Sequence[int], summary_ema: dict | None = None) -> dict:
    """What the report and the docs state about a run, each by an explicit rule on ``summary``:

    - ``best``: the member with the highest mean at the smallest m (``best_mean``, ``best_min``, ``best_max``);
    - ``holds_from``: for BN per channel, the smallest m from which every larger m has a mean within 2 points
      of its best mean (``holds_lo``/``holds_hi``: the lowest and highest of those means);
    - ``group``: group norm's average over m of its means, and the largest distance of a mean from it
      (``group_dev``; "within ±1 point" when ≤ 0.01);
    - ``ablation``: at the smallest m, how the seed ranges of the two ablations compare with BN per channel
      (``"above"``, ``"below"`` or ``"overlap"``, see :func:`_order`);
    - ``renorm``: at the smallest m, how Batch Renorm's range compares with BN per channel's;
    - ``renorm_gap_m``: the m where Batch Renorm's mean with its running statistics (EMA) is farthest above
      its mean with recalibrated statistics (``renorm_gap``: that difference; needs ``summary_ema``).

    Members missing from ``summary`` give ``None`` for the facts that need them.
    """
    ms = [str(m) for m in batch_sizes]
    lo = str(min(int(m) for m in ms))
    out: dict = {"m_min": int(lo)}
    at = {n: by_m[lo] for n, by_m in summary.items() if lo in by_m}
    best = max(at, key=lambda n: at[n]["mean"])
    out.update(best=best, best_mean=at[best]["mean"], best_min=at[best]["min"], best_max=at[best]["max"])
    out["holds_from"] = out["holds_lo"] = out["holds_hi"] = None
    if "channel" in summary:
        ch = summary["channel"]
        top = max(ch[m]["mean"] for m in ms)
        order = sorted(ms, key=int)
        for i, m in enumerate(order):
            tail = [ch[k]["mean"] for k in order[i:]]
            if min(tail) >= top - 0.02:
                out.update(holds_from=int(m), holds_lo=min(tail), holds_hi=max(tail))
                break
    out["group_avg"] = out["group_dev"] = None
    if "group" in summary:
        means = [summary["group"][m]["mean"] for m in ms]
        avg = float(np.mean(means))
        out.update(group_avg=avg, group_dev=max(abs(v - avg) for v in means))
    for key in ("channel-conv", "channel-ln", "renorm"):
        out[key] = _order(at[key], at["channel"]) if key in at and "channel" in at else None
    out["renorm_gap_m"] = out["renorm_gap"] = None
    if summary_ema and "renorm" in summary and "renorm" in summary_ema:
        gaps = {m: summary_ema["renorm"][m]["mean"] - summary["renorm"][m]["mean"] for m in ms}
        m = max(gaps, key=lambda k: gaps[k])
        out.update(renorm_gap_m=int(m), renorm_gap=gaps[m])
    return out


def run_small_batch(
    out_dir: str | Path = "bnlab-small-batch",
    *,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    seeds: Sequence[int] = (0, 1, 2),
    samples: int = 2560,
    lr32: float = 0.002,
    recal_samples: int = 256,
    norms: Sequence[str] = NORMS,
    data_path: str | Path | None = None,
    lang: str = "en",
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    command: str = "bnlab experiment small-batch",
    threads: int | None = DEFAULT_THREADS,
    workers: int = 2,
) -> dict:
    """Train every (norm, m, seed); write ``results.json`` and ``small-batch.png`` into ``out_dir``.

    Returns the results (also in ``results.json``): ``config``, ``set_sizes`` (values per set B for each
    m and BN layer), ``runs`` (one dict per run) and ``summary`` (see :func:`summarize`). ``workers`` runs go
    at once, each in its own process on one torch thread (default 2, one per core of a 2-core machine); with
    ``workers=1`` every run is in this process, on ``threads`` torch threads (``None``: torch's setting). A
    run's numbers do not depend on ``workers``. ``progress``: log a line per finished run.
    """
    if lang not in languages():
        raise ValueError(f"unknown lang {lang!r}; use one of {', '.join(languages())}")
    batch_sizes = tuple(int(m) for m in batch_sizes)
    if not batch_sizes or any(m < 2 for m in batch_sizes):
        raise ValueError(f"batch sizes must be at least 2 (BN needs 2 values per set B), got {batch_sizes}")
    if max(batch_sizes) >= MAX_BATCH:
        raise ValueError(f"batch sizes must be below {MAX_BATCH}: the square-root rule sets Adam's β₁ = "
                         f"1 − 0.1·m/32, which is 0 at m = {MAX_BATCH}; got {max(batch_sizes)}")  # fmt: skip
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    bad = [n for n in norms if n not in NORMS]
    if bad or not norms:
        raise ValueError(f"unknown norms {bad}; use some of {', '.join(NORMS)}")
    if samples < max(batch_sizes):
        raise ValueError(f"samples={samples} is fewer than one mini-batch of m = {max(batch_sizes)}")
    if not (isinstance(lr32, (int, float)) and math.isfinite(lr32) and lr32 > 0):
        raise ValueError(f"lr32 must be a positive number, got {lr32!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    log = log or (lambda s: None)
    msg = t("report.study", lang)
    out = Path(out_dir)
    make_dirs(out)
    t_start, cpu_start = time.perf_counter(), _cpu_seconds()
    with torch_threads(threads):
        data = load_mnist(data_path) if data_path is not None else load_mnist()
        if samples > len(data.x_train):
            raise ValueError(f"samples={samples} is more than the {len(data.x_train)} training images")
        log(msg["data"].format(name=data.name, train=len(data.x_train), test=len(data.x_test), samples=samples))
        cfg = {"data_path": data_path, "samples": samples, "lr32": float(lr32), "recal_samples": recal_samples,
               "threads": threads if workers == 1 else 1}  # fmt: skip
        # the longest runs (small m) first, so that the two workers finish together
        combos = sorted(itertools.product(batch_sizes, norms, seeds), key=lambda c: c[0])
        done: dict[tuple, dict] = {}

        def record(run: dict) -> None:
            done[(run["m"], run["norm"], run["seed"])] = run
            if progress:
                log(
                    msg["run"].format(
                        i=len(done),
                        n=len(combos),
                        m=run["m"],
                        run=t(f"report.norm.{run['norm']}", lang),
                        seed=run["seed"],
                        acc=numbers.percent(run["test_recal"]["accuracy"], lang),
                        ema=numbers.percent(run["test_ema"]["accuracy"], lang),
                        time=numbers.seconds(run["train_seconds"], lang),
                    )  # fmt: skip
                )

        if workers == 1:
            for c in combos:
                record(_one_run(*c, cfg))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(min(workers, len(combos)), mp_context=multiprocessing.get_context("spawn")) as ex:
                for fut in as_completed([ex.submit(_one_run, *c, cfg) for c in combos]):
                    record(fut.result())
        runs = [done[c] for c in itertools.product(batch_sizes, norms, seeds)]
        results = {
            "command": command,
            "date": _dt.date.today().isoformat(),
            "config": {
                "batch_sizes": list(batch_sizes),
                "seeds": list(seeds),
                "norms": list(norms),
                "samples": samples,
                "optimizer": "Adam, square-root scaling rule (Malladi et al. 2022)",
                "lr32": lr32,
                "lr": "lr32·√(m/32); betas (1 − 0.1·m/32, 1 − 0.001·m/32); eps 1e-8·√(32/m)",
                "recal_samples": recal_samples,
                "threads": cfg["threads"] or torch.get_num_threads(),
                "workers": workers,
                "data": {
                    "name": data.name,
                    "train": len(data.x_train),
                    "test": len(data.x_test),
                    "image_shape": list(data.image_shape),
                },  # fmt: skip
            },
            "set_sizes": {str(m): _set_sizes(m, data) for m in batch_sizes},
            "runs": runs,
            "summary": summarize(runs),
            "summary_ema": summarize(runs, "test_ema"),
        }
        fig = out / "small-batch.png"
        figure(results, lang, fig)
        results["seconds"] = time.perf_counter() - t_start
        results["cpu_seconds"] = _cpu_seconds() - cpu_start
        results["train_seconds"] = sum(r["train_seconds"] for r in runs)
        path = out / "results.json"
        write_json(path, results, indent=1)
    log(msg["cpu"].format(wall=f"{results['seconds']:.0f} s", cpu=f"{results['cpu_seconds']:.0f} s"))
    log(msg["done"].format(fig=fig, json=path))
    return results


def figure(results: dict, lang: str, path: str | Path, dpi: int = 100) -> Path:
    """Test accuracy (recalibrated) vs m on a log axis: one line per member (mean over seeds), a dot per seed;
    left the members whose set B spans the mini-batch, right those whose set B stays in one example (with no
    BN and BN per channel repeated there as landmarks)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plots import COLORS

    colors = {**COLORS, **_EXTRA_COLORS}
    msg = t("report.study", lang)
    cfg = results["config"]
    summary = results["summary"]
    norms = [n for n in cfg["norms"] if n in summary]
    panels = [
        (msg["panel_batch"], [n for n in norms if n not in PER_SAMPLE]),
        (msg["panel_sample"], [n for n in norms if n in PER_SAMPLE or n in ("none", "channel")]),
    ]
    panels = [p for p in panels if any(n in PER_SAMPLE for n in norms) or p is panels[0]]
    fig = Figure(figsize=(11 if len(panels) == 2 else 9, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    ms = cfg["batch_sizes"]
    seen: set[str] = set()
    for ax, (title, members) in zip(axes, panels, strict=True):
        for norm in members:
            s = summary[norm]
            mean = [100 * s[str(m)]["mean"] for m in ms]
            ax.plot(ms, mean, color=colors[norm], lw=2, marker="o",
                    label=None if norm in seen else t(f"report.norm.{norm}", lang))  # fmt: skip
            seen.add(norm)
            for m in ms:
                accs = [100 * a for a in s[str(m)]["accuracies"]]
                ax.scatter([m] * len(accs), accs, color=colors[norm], s=12, alpha=0.45, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.minorticks_off()
        ax.set_xlabel(msg["xlabel"])
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(msg["ylabel"])
    axes[0].scatter([], [], color="#555555", s=12, alpha=0.45, lw=0, label=msg["legend_seed"])
    lo = min(min(v["min"] for v in summary[n].values()) for n in norms)
    axes[0].set_ylim(max(0.0, math.floor(100 * lo / 5) * 5 - 2), 100.5)
    fig.legend(loc="outside lower center", ncol=3, fontsize=9, frameon=False)  # below the axes, never on the data
    lr32 = numbers.general(cfg["lr32"], lang)
    fig.suptitle(msg["title"].format(samples=cfg["samples"], n=len(cfg["seeds"]), lr32=lr32), fontsize=11)
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
        # a copy: whoever edits what it gets (a report, a test) must not change the shipped reference
        return copy.deepcopy({**source, "date": saved["date"], "config": saved["config"], "summary": saved["summary"],
                              "summary_ema": saved.get("summary_ema"), "set_sizes": saved["set_sizes"]})  # fmt: skip
    except (KeyError, TypeError):
        return None
