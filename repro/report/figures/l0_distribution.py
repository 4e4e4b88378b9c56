"""The ``l0_distribution`` figure: per-token L0 histograms, sparsemax vs fixed-k, and the inputs with the fewest and
most active latents."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from repro.report.figures.inputs import _ordered, _runs
from repro.report.figures.style import (
    LINESTYLES,
    _clean_text,
    _expansion_label,
    _no_data,
    is_fixed_k,
    is_sparsemax,
    kind_color,
    kind_label,
    kind_style,
    save_figure,
)


def _fixed_k(run: dict, hist: np.ndarray) -> float | None:
    """The fixed k of a TopK/BatchTopK run: ``run["k"]``, its ``k=…`` setting, else the mode (TopK) or mean L0."""
    if run.get("k") is not None:
        return float(run["k"])
    m = re.search(r"(?:^|,)k=([0-9.]+)", str(run.get("setting", "")))
    if m:
        return float(m.group(1))
    if hist.sum() <= 0:
        return None
    if run.get("kind") == "topk":
        return float(np.argmax(hist))
    return float((np.arange(hist.size) * hist).sum() / hist.sum())


def _examples_panel(sub, run_id: str, run: dict, n_images: int = 4, n_texts: int = 3) -> None:
    """Fewest / most active inputs of one run on ``sub`` (a subfigure): texts or a small image grid."""
    groups = [("Fewest active latents", run.get("fewest") or []), ("Most active latents", run.get("most") or [])]
    images = any(ex.get("image") is not None for _, exs in groups for ex in exs)
    if not images:
        axes = sub.subplots(2, 1)
        for ax, (title, exs) in zip(axes, groups, strict=True):
            ax.set_title(title, fontsize=9, loc="left", fontweight="bold")
            ax.axis("off")
            if not exs:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.45", style="italic")
                continue
            lines = []
            for ex in exs[:n_texts]:
                body = textwrap.fill(_clean_text(ex.get("text") or "(no text)"), width=58, subsequent_indent="    ")
                lines.append(f"L0 = {float(ex.get('l0', float('nan'))):.1f}: {body}")
            ax.text(
                0,
                1,
                "\n".join(lines),
                va="top",
                ha="left",
                fontsize=7,
                family="monospace",
                transform=ax.transAxes,
                parse_math=False,
                linespacing=1.25,
            )
        return
    rows = sub.subfigures(2, 1)
    for row, (title, exs) in zip(rows, groups, strict=True):
        row.suptitle(title, fontsize=9, fontweight="bold")
        exs = [ex for ex in exs if ex.get("image") is not None][:n_images]
        axes = row.subplots(1, max(len(exs), 1), squeeze=False)[0]
        if not exs:
            _no_data(axes[0])
            continue
        for ax, ex in zip(axes, exs, strict=True):
            ax.imshow(np.asarray(ex["image"], dtype=float), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"L0 = {float(ex.get('l0', float('nan'))):.1f}", fontsize=8)
            ax.axis("off")


def figure_l0_distribution(data: dict, out: str | Path) -> list[Path]:
    """Per-token L0 histograms (density) of the sparsemax run(s) vs fixed-k runs per backbone, with the inputs that
    have the fewest and the most active latents (texts, or images in a small grid) beside each histogram.
    """
    runs = _runs(data)
    by_bb: dict[str, list[tuple[str, dict]]] = {}
    for rid, run in _ordered(runs):
        by_bb.setdefault(str(run.get("backbone", "?")), []).append((rid, run))
    backbones = sorted(by_bb) or [None]
    fig = Figure(figsize=(13, 0.6 + 3.6 * len(backbones)), layout="constrained")
    subs = fig.subfigures(len(backbones), 1, squeeze=False)[:, 0]
    for sub, bb in zip(subs, backbones, strict=True):
        left, right = sub.subfigures(1, 2, width_ratios=[1.35, 1])
        ax = left.subplots()
        members = by_bb.get(bb, [])
        shown = [(rid, r) for rid, r in members if is_sparsemax(r.get("kind", "")) or is_fixed_k(r.get("kind", ""))]
        shown = shown or members
        ax.set_title(f"{bb}: per-token L0" if bb is not None else "per-token L0", fontsize=10)
        _l0_histograms(ax, shown)
        source = next(
            ((rid, r) for rid, r in shown if is_sparsemax(r.get("kind", "")) and (r.get("fewest") or r.get("most"))),
            next(((rid, r) for rid, r in shown if r.get("fewest") or r.get("most")), None),
        )
        if source is None:
            _no_data(right.subplots(), "no examples")
        else:
            right.suptitle(f"{kind_label(source[1].get('kind', ''))} ({source[0]})", fontsize=8, color="0.3")
            _examples_panel(right, *source)
    fig.suptitle("How many latents fire per token: adaptive sparsemax vs fixed k", fontsize=11)
    return save_figure(fig, out)


def _l0_histograms(ax: Axes, shown: list[tuple[str, dict]]) -> None:
    hists, missing = [], []
    for rid, run in shown:
        h = np.asarray(run.get("hist") or [], dtype=float)
        if h.size and h.sum() > 0:
            hists.append((rid, run, h / h.sum()))
        else:
            missing.append(run)
    if not hists:
        _no_data(ax)
        return
    # the x range covers 99.5 % of every run's tokens, so that one long tail does not squash the rest
    x_max = max(int(np.searchsorted(np.cumsum(d), 0.995 * d.sum())) for _, _, d in hists)
    var_max = max((d.max() for _, r, d in hists if not is_fixed_k(r.get("kind", ""))), default=None)
    top = 1.35 * var_max if var_max else None
    clipped = top is not None and any(d.max() > 2 * var_max for *_, d in hists)
    styles: dict[str, int] = {}
    for _rid, run, d in hists:
        kind = run.get("kind", "")
        st = kind_style(kind)
        ls = LINESTYLES[styles.setdefault(kind, 0) % len(LINESTYLES)]
        styles[kind] += 1
        label = f"{kind_label(kind)} ({run.get('setting', '?')}, {_expansion_label(float(run.get('expansion', 0)))})"
        edges = np.arange(d.size + 1) - 0.5
        ax.stairs(
            d,
            edges,
            color=st["color"],
            linewidth=st["linewidth"] * 0.8,
            linestyle=ls,
            label=label,
            fill=False,
            zorder=st["zorder"],
        )
        if is_sparsemax(kind):
            ax.stairs(d, edges, color=st["color"], alpha=0.15, fill=True, zorder=1)
        if is_fixed_k(kind):
            k = _fixed_k(run, np.asarray(run.get("hist"), dtype=float))
            if k is not None:
                ax.axvline(k, color=st["color"], linestyle=ls, linewidth=1.0, alpha=0.8)
                k_label = f"k={k:g}" if float(k).is_integer() else f"k≈{k:.1f}"
                ax.annotate(
                    k_label + (f" ({d.max():.0%} of tokens)" if clipped and d.max() > top else ""),
                    (k + 0.5, 0.97),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, 0),
                    textcoords="offset points",
                    rotation=90,
                    va="top",
                    fontsize=7,
                    color=st["color"],
                )
                x_max = max(x_max, int(math.ceil(k)))
    for run in missing:
        ax.plot(
            [],
            [],
            color=kind_color(run.get("kind", "")),
            alpha=0.4,
            label=f"{kind_label(run.get('kind', ''))} ({run.get('setting', '?')}): no data",
        )
    if clipped:
        ax.set_ylim(0, top)
    ax.set_xlim(-0.5, x_max * 1.08 + 1)
    ax.set_xlabel("L0 of a token (active latents)")
    ax.set_ylabel("fraction of tokens (density)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
