"""The ``nmse_vs_size`` figure: NMSE, and CE degradation when measured, vs dictionary size per kind and backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from repro.report.figures.inputs import _errors, _over_seeds, _select, _with_ci
from repro.report.figures.style import (
    _expansion_label,
    _kind_legend,
    _kind_rank,
    _log_if_wide,
    _no_data,
    kind_label,
    kind_style,
    save_figure,
)


def figure_nmse_vs_size(metrics: pd.DataFrame, out: str | Path) -> list[Path]:
    """NMSE (and CE degradation when measured) vs dictionary size per SAE kind, one column per backbone.

    Default-setting runs only; the mean over seeds with min–max error bars where there are several seeds, else the
    bootstrap 95 % interval over held-out examples (NMSE).
    """
    size_keys = ["backbone", "kind", "expansion"]
    nmse = _with_ci(
        _over_seeds(_select(metrics, "reconstruction", "nmse", "default"), size_keys),
        metrics,
        "reconstruction",
        "nmse",
        size_keys,
        "default",
    )
    ce = _over_seeds(_select(metrics, "lm_loss", "ce_delta", "default"), ["backbone", "kind", "expansion"])
    backbones = sorted(set(nmse["backbone"]) | set(ce["backbone"])) or [None]
    rows = [("nmse", nmse, "NMSE = Σ‖x − x̂‖² / Σ‖x‖² (uncentred)")]
    if not ce.empty:
        rows.append(("ce", ce, "CE degradation (nats / token)"))
    fig = Figure(figsize=(0.6 + 4.0 * len(backbones), 1.0 + 3.0 * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), len(backbones), squeeze=False))
    for r, (name, table, ylabel) in enumerate(rows):
        for c, bb in enumerate(backbones):
            ax = axes[r, c]
            sub = table[table["backbone"] == bb] if bb is not None else table.iloc[:0]
            name_bb = bb if bb is not None else "all backbones"
            ax.set_title(name_bb if r == 0 else f"{name_bb}: CE degradation", fontsize=10)
            if sub.empty:
                _no_data(ax)
                continue
            for kind, g in sorted(sub.groupby("kind"), key=lambda kg: _kind_rank(kg[0])):
                g = g.sort_values("expansion")
                ax.errorbar(
                    g["expansion"], g["mean"], yerr=_errors(g), capsize=3, label=kind_label(kind), **kind_style(kind)
                )
            xs = sorted(sub["expansion"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, labels=[_expansion_label(x) for x in xs])
            ax.xaxis.set_minor_locator(NullLocator())
            if len(xs) == 1:
                ax.set_xlim(xs[0] / 1.5, xs[0] * 1.5)
            if name == "nmse":
                _log_if_wide(ax, sub["mean"])
            else:
                ax.axhline(0, color="0.6", linewidth=0.8, zorder=1)
            ax.set_xlabel("dictionary size (expansion d_sae / d_in)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    _kind_legend(fig, set(nmse["kind"]) | set(ce["kind"]))
    fig.suptitle(
        "Reconstruction vs dictionary size (default hyperparameters; mean over seeds, bars: min–max over "
        "seeds,\nor with one seed the bootstrap 95 % interval over held-out examples)",
        fontsize=11,
    )
    return save_figure(fig, out)
