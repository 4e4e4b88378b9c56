"""The ``firing_vs_activation`` figure: per-latent firing rate vs mean activation, coloured by label entropy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from repro.report.figures.inputs import _floats, _ordered, _runs
from repro.report.figures.style import NAN_COLOR, _expansion_label, _no_data, kind_color, kind_label, save_figure


def figure_firing_vs_activation(data: dict, out: str | Path) -> list[Path]:
    """Per-latent log10 firing rate vs log10 mean activation, coloured by label entropy (grey: none); one panel per
    run (at most 6, sparsemax first).
    """
    runs = _ordered(_runs(data))[:6]
    n = max(len(runs), 1)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(1.2 + 3.9 * ncols, 0.8 + 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    ent_all = np.concatenate([_floats(r.get("entropy")) for _, r in runs] or [np.array([])])
    ent_all = ent_all[np.isfinite(ent_all)]
    norm = Normalize(0.0, float(ent_all.max()) if ent_all.size and ent_all.max() > 0 else 1.0)
    cmap = "viridis"
    for ax in axes[len(runs) :]:
        if runs:
            ax.axis("off")
        else:
            _no_data(ax)
    for ax, (_rid, run) in zip(axes, runs, strict=False):
        kind = run.get("kind", "")
        fr, ma = _floats(run.get("firing_rate")), _floats(run.get("mean_act"))
        ent = _floats(run.get("entropy"))
        m = min(fr.size, ma.size)
        fr, ma = fr[:m], ma[:m]
        ent = np.concatenate([ent[:m], np.full(max(m - ent.size, 0), np.nan)])
        ok = np.isfinite(fr) & np.isfinite(ma) & (fr > 0) & (ma > 0)
        title = f"{kind_label(kind)} — {run.get('backbone', '?')}, {_expansion_label(float(run.get('expansion', 0)))}"
        ax.set_title(title, fontsize=9, color=kind_color(kind), fontweight="bold")
        if not ok.any():
            _no_data(ax)
            continue
        x, y, e = np.log10(fr[ok]), np.log10(ma[ok]), ent[ok]
        nan = ~np.isfinite(e)
        size = 6 if ok.sum() < 5000 else 2
        ax.scatter(x[nan], y[nan], s=size, c=NAN_COLOR, linewidths=0, rasterized=True, label="no entropy")
        ax.scatter(x[~nan], y[~nan], s=size, c=e[~nan], cmap=cmap, norm=norm, linewidths=0, rasterized=True)
        ax.text(
            0.02,
            0.02,
            f"{ok.sum()} latents" + (f" ({nan.sum()} without entropy)" if nan.any() else ""),
            transform=ax.transAxes,
            fontsize=7,
            color="0.35",
        )
        ax.set_xlabel("log10 firing rate (fraction of tokens)")
        ax.set_ylabel("log10 mean activation")
        ax.grid(alpha=0.3)
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="label entropy (nats; grey: none)", shrink=0.8
    )
    fig.suptitle("Latent firing rate vs activation strength (colour: entropy of the labels it fires on)", fontsize=11)
    return save_figure(fig, out)
