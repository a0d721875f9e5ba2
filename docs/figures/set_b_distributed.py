"""Draws docs/figures/set_b_distributed.{en,es}.png: the set B of one feature map spanning 4 processes.

    PYTHONPATH=src python3 docs/figures/set_b_distributed.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

SHARDS = (5, 3, 1, 0)
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#8172B3")
TEXT = {
    "en": {
        "title": "Synchronized BN: the set B of feature map c spans every process",
        "rank": "rank {r}: {n} samples",
        "empty": "rank 3: 0 samples\n(empty shard)",
        "summary": "count = {n}·p·q\nmean, M2",
        "merge": "Chan's merge (one all-gather)\nμ_B, σ²_B of all m' = {m}·p·q values\nthe same on every rank",
        "note": "each small square: one sample's p×q map of channel c; outlined: the one set B",
    },
    "es": {
        "title": "BN sincronizada: el conjunto B del mapa c abarca todos los procesos",
        "rank": "rango {r}: {n} muestras",
        "empty": "rango 3: 0 muestras\n(fragmento vacío)",
        "summary": "cuenta = {n}·p·q\nmedia, M2",
        "merge": "fusión de Chan (un all-gather)\nμ_B, σ²_B de los m' = {m}·p·q valores\niguales en todos los rangos",
        "note": "cada cuadrito: el mapa p×q de una muestra en el canal c; recuadrado: el único conjunto B",
    },
}


def draw(lang: str, path: Path) -> None:
    t = TEXT[lang]
    fig, ax = plt.subplots(figsize=(12, 5.2))
    ax.set_ylim(0, 10.5)
    ax.axis("off")
    ax.set_title(t["title"], fontsize=13)
    x, q = 0.6, 4  # q×q cells per sample map
    cell = 0.26
    centers = []
    for r, n in enumerate(SHARDS):
        start = x
        for _ in range(n):
            for i in range(q):
                for j in range(q):
                    ax.add_patch(Rectangle((x + j * cell, 6.2 + i * cell), cell, cell, fc=COLORS[r], ec="white", lw=0.6))
            x += q * cell + 0.25
        width = max(x - start - 0.25, 2.9)
        label = t["rank"].format(r=r, n=n) if n else t["empty"]
        ax.text(start + width / 2, 5.6, label, ha="center", va="top", fontsize=9, color=COLORS[r])
        ax.add_patch(Rectangle((start - 0.1, 5.7), width + 0.2, 1.6 + q * cell - 0.5, fill=False, ec=COLORS[r], lw=1.2,
                               ls="--"))  # fmt: skip
        ax.text(start + width / 2, 3.9, t["summary"].format(n=n), ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round", "fc": "white", "ec": COLORS[r]})  # fmt: skip
        centers.append(start + width / 2)
        x = max(x, start + width) + 0.6
    total = sum(SHARDS)
    ax.add_patch(Rectangle((0.3, 6.0), x - 0.7, q * cell + 0.45, fill=False, ec="black", lw=2.2))
    ax.text(x - 0.2, 6.2 + q * cell / 2, "B", fontsize=16, fontweight="bold", va="center")
    ax.set_xlim(0, x + 0.6)
    mx = sum(centers) / len(centers)
    for c in centers:
        ax.add_patch(FancyArrowPatch((c, 3.3), (mx, 1.9), arrowstyle="->", mutation_scale=12, color="gray"))
    ax.text(mx, 1.2, t["merge"].format(m=total), ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round", "fc": "#f4f4f4", "ec": "black"})  # fmt: skip
    ax.text(0.4, 9.9, t["note"], fontsize=8.5, color="dimgray")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for lang in TEXT:
        draw(lang, here / f"set_b_distributed.{lang}.png")
