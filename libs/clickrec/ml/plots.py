"""Charts logged with every training run: the tuning grid and the model against the baseline."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def grid_heatmap(points: list[dict[str, Any]], scores: list[float], metric: str) -> Figure:
    """Selection metric over rank x reg_param (best over the other grid keys per cell)."""
    ranks = sorted({p["rank"] for p in points})
    regs = sorted({p["reg_param"] for p in points})
    cells = [[float("nan")] * len(ranks) for _ in regs]
    for p, s in zip(points, scores, strict=True):
        r, c = regs.index(p["reg_param"]), ranks.index(p["rank"])
        if math.isnan(cells[r][c]) or s > cells[r][c]:
            cells[r][c] = s
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(ranks), 1.4 + 0.8 * len(regs)))
    im = ax.imshow(cells, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_yticks(range(len(regs)), [f"{g:g}" for g in regs])
    ax.set_xlabel("rank")
    ax.set_ylabel("regParam")
    ax.set_title(f"cross-validated {metric} (best over other params)")
    for r in range(len(regs)):
        for c in range(len(ranks)):
            v = cells[r][c]
            if not math.isnan(v):
                ax.text(c, r, f"{v:.3f}", ha="center", va="center", color="white", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def model_vs_baseline(metrics: dict[str, float], baseline: dict[str, float], k: int) -> Figure:
    """Grouped bars: each ranking metric at k and coverage, model vs popularity."""
    names = [n for n in metrics if n in baseline]
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(names), 3.6))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [metrics[n] for n in names], width=0.4, label="ALS")
    ax.bar([x + 0.2 for x in xs], [baseline[n] for n in names], width=0.4, label="popularity")
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set_title(f"test metrics at k={k}: model vs popularity baseline")
    ax.legend()
    fig.tight_layout()
    return fig
