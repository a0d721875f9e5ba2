"""Figures of the demo report and of the paper's Fig. 1 experiment (matplotlib, no pyplot state).

Figures are built with :class:`matplotlib.figure.Figure` directly, so they neither need nor change the
user's matplotlib backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..explain import explain
from ..i18n import numbers, t
from ..io import make_dirs, save_figure
from .settings import Setting

COLORS = {"none": "#7f7f7f", "activation": "#e6862a", "channel": "#2a6fdb",
          "layer": "#2ca02c", "instance": "#9467bd", "group": "#8c564b"}  # fmt: skip
NORM_ORDER = ("none", "activation", "channel")


def moving_average(values, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each step (shorter at the start); NaN-free input expected."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def smoothing_window(steps: int) -> int:
    return max(1, min(10, steps // 10))


def _save(fig: Figure, path: Path) -> None:
    save_figure(fig, path, dpi=100)


def _finite(values) -> np.ndarray:
    v = np.asarray([np.nan if x is None else x for x in values], dtype=np.float64)
    return v


def curves_figure(runs: list[dict], title: str, lang: str, path: Path) -> None:
    fig = Figure(figsize=(10, 4.0))
    fig.subplots_adjust(left=0.075, right=0.985, bottom=0.24, top=0.88, wspace=0.22)  # fixed: layout engines are slow
    ax_loss, ax_acc = fig.subplots(1, 2)
    for run in runs:
        h, norm = run["history"], run["norm"]
        loss = _finite(h["loss"])
        w = smoothing_window(len(loss))
        color, label = COLORS[norm], t(f"report.norm.{norm}", lang)
        ax_loss.plot(h["step"], np.clip(loss, None, 10), color=color, alpha=0.18, lw=0.8)
        ax_loss.plot(h["step"], np.clip(moving_average(np.nan_to_num(loss, nan=10.0), w), None, 10), color=color,
                     lw=1.8, label=label)  # fmt: skip
        ax_acc.plot(h["eval_step"], 100 * _finite(h["eval_accuracy"]), color=color, lw=1.8, marker="o", ms=2.5,
                    label=label)  # fmt: skip
    ax_loss.set_xlabel(t("report.fig_step", lang))
    ax_loss.set_ylabel(t("report.fig_loss", lang))
    ax_loss.set_yscale("log")
    ax_acc.set_xlabel(t("report.fig_step", lang))
    ax_acc.set_ylabel(t("report.fig_val_acc", lang) + " (%)")
    ax_acc.set_ylim(0, 101)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    # one legend below both panels: a legend inside an axes can cover a curve (a diverging run fills the panel)
    handles, labels = ax_loss.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(len(labels), 1), fontsize=10, frameon=False)
    fig.suptitle(title)
    _save(fig, path)


def percentiles_panel(ax, h: dict, color: str, lang: str, title: str, window: int = 1) -> None:
    """15/50/85th percentiles vs step; ``window`` > 1 plots each as a moving average over that many steps."""
    steps = h["step"]
    p15, p50, p85 = (moving_average(_finite(h[k]), window) for k in ("p15", "p50", "p85"))
    ax.fill_between(steps, p15, p85, color=color, alpha=0.15, lw=0)
    ax.plot(steps, p85, color=color, lw=1.0, ls="--", label=t("report.fig_p", lang, q=85))
    ax.plot(steps, p50, color=color, lw=1.8, label=t("report.fig_p", lang, q=50))
    ax.plot(steps, p15, color=color, lw=1.0, ls=":", label=t("report.fig_p", lang, q=15))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(t("report.fig_step", lang))
    ax.grid(alpha=0.3)


def percentiles_figure(runs: list[dict], title: str, lang: str, path: Path) -> None:
    fig = Figure(figsize=(12, 3.9))
    fig.subplots_adjust(left=0.065, right=0.99, bottom=0.26, top=0.84, wspace=0.08)
    axes = fig.subplots(1, len(runs), sharey=True)  # one y scale, so the panels compare at a glance
    for ax, run in zip(np.atleast_1d(axes), runs, strict=True):
        percentiles_panel(ax, run["history"], COLORS[run["norm"]], lang, t(f"report.norm.{run['norm']}", lang))
    first = np.atleast_1d(axes)[0]
    first.set_ylabel(t("report.fig_percentiles", lang))
    handles, labels = first.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=10, frameon=False)
    fig.suptitle(title)
    _save(fig, path)


def demo_figures(results: dict, fig_dir: Path, lang: str) -> dict:
    """Write every figure of the demo report; return their paths relative to the report folder."""
    fig_dir = Path(fig_dir)
    out: dict = {"setb": {}, "curves": {}, "percentiles": {}}
    for layer in results["layers"]:
        if layer["layout"] == "NC":
            continue  # no locations: both variants are the same set B, nothing to draw
        name = "setb-" + layer["name"].replace(".", "-") + ".png"
        explain(layer["shape"], layout=layer["layout"], per="channel", lang=lang).save_figure(fig_dir / name)
        out["setb"][layer["name"]] = f"{fig_dir.name}/{name}"
    for s in results["settings"]:
        setting = Setting(**s)
        runs = [r for r in results["runs"] if r["setting"] == setting.key and r["seed"] == results["seeds"][0]]
        runs.sort(key=lambda r: NORM_ORDER.index(r["norm"]))
        name = f"curves-{setting.key}.png"
        curves_figure(runs, setting.title(lang), lang, fig_dir / name)
        out["curves"][setting.key] = f"{fig_dir.name}/{name}"
        name = f"percentiles-{setting.key}.png"
        percentiles_figure(runs, setting.title(lang), lang, fig_dir / name)
        out["percentiles"][setting.key] = f"{fig_dir.name}/{name}"
    return out


def paper_fig1_figure(runs: dict, lang: str, path: Path, title: str) -> None:
    """The paper's Fig. 1: (a) test accuracy vs step, with and without BN; (b, c) input percentiles."""
    fig = Figure(figsize=(13, 3.8))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.85, wspace=0.25)
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    labels = {"none": t("report.norm.none", lang), "activation": "BN"}
    colors = {"none": COLORS["none"], "activation": COLORS["channel"]}
    for norm, h in runs.items():
        ax_a.plot(h["eval_step"], _finite(h["eval_accuracy"]), color=colors[norm], lw=1.8, label=labels[norm])
    ax_a.set_xlabel(t("report.fig_step", lang))
    ax_a.set_ylabel(t("report.fig_test_acc", lang))
    ax_a.legend(loc="lower right")
    ax_a.grid(alpha=0.3)
    lo = min(min(_finite(h["eval_accuracy"][1:] or [1.0])) for h in runs.values())
    ax_a.set_ylim(max(0.0, math.floor(lo * 20) / 20), 1.0)
    ax_a.set_title("(a)", fontsize=10)
    window = max(1, len(next(iter(runs.values()))["step"]) // 100)
    smoothed = t("report.fig_smoothed", lang, n=window) if window > 1 else ""
    for ax, norm, tag in ((ax_b, "none", "(b)"), (ax_c, "activation", "(c)")):
        if norm in runs:
            percentiles_panel(ax, runs[norm], colors[norm], lang, f"{tag} {labels[norm]}{smoothed}", window)
    ax_b.set_ylabel(t("report.fig_percentiles", lang))
    ax_b.legend(loc="best", fontsize=8)
    lims = [ax.get_ylim() for ax in (ax_b, ax_c)]
    ylim = (min(a for a, _ in lims), max(b for _, b in lims))
    ax_b.set_ylim(ylim)  # same scale, as in the paper, so the drift is comparable
    ax_c.set_ylim(ylim)
    fig.suptitle(title)
    _save(fig, path)


def filter_map_figure(image, lang: str, path: Path, dpi: int = 100) -> Path:
    """A 3×3 filter (weights, shared by all locations) beside the feature map it produces (one value per
    location) for one real image ``image`` (H, W): a real convolution (torch), numbers printed in the cells."""
    import torch

    w = t("report.filter", lang)
    img = torch.as_tensor(np.asarray(image, dtype=np.float32))
    h, wd = img.shape
    weights = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # a vertical-edge filter
    fmap = torch.nn.functional.conv2d(img[None, None], weights[None, None], padding=1)[0, 0].numpy()
    fig = Figure(figsize=(13, 4.8))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.1, top=0.8, wspace=0.12)
    ax_img, ax_f, ax_map = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 0.62, 1]})
    show_numbers = h * wd <= 100

    def grid(ax, values, cmap, fmt, vmax=None):
        vmax = vmax if vmax is not None else float(np.abs(values).max()) or 1.0
        vmin = 0.0 if cmap == "Greys" else -vmax
        ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
        if show_numbers or values.size <= 9:
            for (r, c), v in np.ndenumerate(values):
                dark = abs(v) > 0.55 * vmax
                ax.text(c, r, fmt(v), ha="center", va="center", fontsize=9 if values.size > 9 else 15,
                        color="white" if dark else "#111111")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])

    grid(ax_img, img.numpy(), "Greys", lambda v: numbers.decimal(v, lang, 1), 1.0)
    ax_img.set_title(w["image"].format(h=h, w=wd), fontsize=11)
    grid(ax_f, weights.numpy(), "PuOr", lambda v: f"{v:+.0f}" if v else "0")
    ax_f.set_title(w["filter"].format(k=3, kk=9), fontsize=11)
    grid(ax_map, fmap, "RdBu_r", lambda v: numbers.decimal(v, lang, 1))
    ax_map.set_title(w["map"].format(h=h, w=wd, hw=h * wd), fontsize=11)
    fig.suptitle(w["title"], fontsize=13)
    fig.text(0.5, 0.03, w["note"], ha="center", fontsize=11, color="#222222")
    path = Path(path)
    make_dirs(path.parent)
    return save_figure(fig, path, dpi=dpi)
