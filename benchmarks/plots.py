"""The paper-reproduction figures (PNG), drawn from numbers benchmarks/paper.py has already computed.

Each function takes plain numbers and a path and writes one figure; nothing here trains or reads a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from convergence import plot as convergence_plot  # benchmarks/ is on sys.path when run as a script


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_spectrum(eigenvalues: np.ndarray, d_s: int, d_n: int, title: str, path: Path) -> None:
    """The eigenvalues S of the language covariance, divided by the largest, on a log scale, with the
    semantic rows (the first d_s), the null space hosting the IDs (the next d_n) and the clipped rest marked
    (README "How it works", step 3)."""
    s = np.asarray(eigenvalues, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or s[0] <= 0:
        raise ValueError(f"eigenvalues must be a non-empty descending vector with a positive first value, got {s[:3]}")
    if d_s < 0 or d_n < 0 or d_s + d_n > s.size:
        raise ValueError(f"d_s={d_s} + d_n={d_n} must fit in the {s.size} directions")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(1, s.size + 1)
    # the smallest eigenvalues can be 0 after clipping round-off; a log axis needs them positive
    ax.semilogy(x, np.maximum(s / s[0], 1e-12), color="black", linewidth=1.2)
    total = s.sum()
    spans = [
        (0, d_s, "tab:blue", f"semantic d_s = {d_s} ({s[:d_s].sum() / total:.1%} of variance)"),
        (d_s, d_s + d_n, "tab:orange", f"null space d_n = {d_n}, hosts the IDs ({s[d_s:d_s + d_n].sum() / total:.2%})"),
        (d_s + d_n, s.size, "tab:gray", f"clipped ({s[d_s + d_n:].sum() / total:.2%})"),
    ]
    for lo, hi, colour, label in spans:
        if hi > lo:
            ax.axvspan(lo + 0.5, hi + 0.5, color=colour, alpha=0.15, label=label)
    ax.set_xlabel("direction (eigenvalues in descending order)")
    ax.set_ylabel("eigenvalue / largest eigenvalue")
    ax.set_xlim(0.5, s.size + 0.5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_popularity_buckets(
    ndcg: Mapping[str, Mapping[str, float]], cases: Mapping[str, float], title: str, path: Path,
    metric: str = "NDCG@20",
) -> None:
    """Grouped bars: `ndcg[method][bucket]` (bucket order as in `cases`), one group per item-popularity bucket;
    `cases[bucket]` test cases fall in each (shown under the label). Missing or NaN values draw no bar."""
    buckets = list(cases)
    methods = list(ndcg)
    if not buckets or not methods:
        raise ValueError("nothing to plot: no buckets or no methods")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(buckets) * max(1, len(methods)) / 3), 4.5))
    width = 0.8 / len(methods)
    x = np.arange(len(buckets))
    for j, method in enumerate(methods):
        vals = [ndcg[method].get(b, math.nan) for b in buckets]
        ax.bar(x - 0.4 + width * (j + 0.5), vals, width, label=method)
    ax.set_xticks(x, [f"{b}\n({cases[b]:.0f} cases)" for b in buckets])
    ax.set_xlabel("target item popularity (training interactions)")
    ax.set_ylabel(f"test {metric}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_dn_sweep(
    points: Sequence[tuple[int, float, float]], title: str, path: Path, *, default_d_n: int | None = None,
    metric: str = "NDCG@20",
) -> None:
    """`points` = (d_n, mean, sd) at a fixed hidden size, drawn as a line with error bars; the recipe's own d_n
    (the full model) is circled."""
    if not points:
        raise ValueError("no d_n points to plot")
    pts = sorted(points)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3)
    for d, mean, _ in pts:
        if d == default_d_n:
            ax.plot([d], [mean], "o", markersize=12, fillstyle="none", color="black", label=f"recipe d_n = {d}")
    ax.set_xlabel("d_n (null-space coordinates hosting the IDs)")
    ax.set_ylabel(f"test {metric} (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    if default_d_n is not None:
        ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_convergence(runs: Sequence[Mapping[str, Any]], title: str, path: Path) -> None:
    """Validation NDCG@20 against seconds and epochs, one curve per run (`name`, `history`), as
    benchmarks/convergence.py draws it."""
    convergence_plot([{"preset": "default", **r} for r in runs], title, path)
