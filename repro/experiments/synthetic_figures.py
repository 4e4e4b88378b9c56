"""Figures of the ground-truth benchmark (PDF + PNG): true count vs L0 per method, and MCC per method."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

# Built on matplotlib.figure.Figure (an Agg canvas of its own): no pyplot, no backend switched at import.


def method_colours(names: list[str]) -> dict[str, tuple]:
    """One consistent colour per method."""
    cmap = matplotlib.colormaps["tab20" if len(names) > 10 else "tab10"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


LINESTYLES = ("-", "--", ":", "-.")


def _save(fig, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    for ext in ("pdf", "png"):
        fig.savefig(stem.with_suffix(f".{ext}"), dpi=150, bbox_inches="tight")


def plot_l0_vs_count(runs: list[dict], order: list[str], stem: Path) -> None:
    """Mean per-sample L0 against the true number of active features, one line per method (mean over
    seeds, error bars = std over seeds), with the identity line (perfect tracking)."""
    colours = method_colours(order)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    top = 1
    for i, name in enumerate(order):
        by_seed = [r["sparsity_tracking"]["by_count"] for r in runs if r["method"] == name]
        counts = sorted({int(c) for b in by_seed for c in b})
        means, stds = [], []
        for c in counts:
            vals = [b[str(c)]["mean_l0"] for b in by_seed if str(c) in b]
            means.append(statistics.fmean(vals))
            stds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        top = max(top, max(counts, default=1))
        ax.errorbar(
            counts,
            means,
            yerr=stds,
            marker="os^D"[i % 4],
            ms=4,
            capsize=2,
            color=colours[name],
            ls=LINESTYLES[i % len(LINESTYLES)],
            label=name,
        )
    ax.plot([1, top], [1, top], ls="--", color="grey", lw=1.5, label="L0 = true count")
    ax.set_xlabel("true number of active features in the sample")
    ax.set_ylabel("SAE L0 (active latents), mean over samples (log scale)")
    ax.set_yscale("log")
    ax.set_xlim(left=0.5)
    ax.set_title("Does L0 follow the number of planted features?")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    _save(fig, stem)


def plot_mcc(runs: list[dict], order: list[str], stem: Path) -> None:
    """Dictionary recovery per method: MCC (mean matched |cosine|) and the share of features recovered
    above 0.9 cosine; bars = mean over seeds, dots = seeds."""
    colours = method_colours(order)
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2, sharey=False)
    for ax, key, label in (
        (axes[0], "mcc", "MCC (mean matched |cos|)"),
        (axes[1], "recovered", "features recovered (|cos| > 0.9)"),
    ):
        for i, name in enumerate(order):
            vals = [r["dictionary"][key] for r in runs if r["method"] == name]
            ax.bar(i, statistics.fmean(vals), color=colours[name], alpha=0.8)
            ax.scatter([i] * len(vals), vals, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Recovery of the planted dictionary")
    _save(fig, stem)
