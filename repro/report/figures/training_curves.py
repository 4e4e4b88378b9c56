"""The ``training_curves`` figure: loss, MSE and L0 vs training step per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from repro.report.figures.inputs import _floats, _ordered, _runs
from repro.report.figures.style import LINESTYLES, _kind_legend, _log, _no_data, kind_style, save_figure


def figure_training_curves(data: dict, out: str | Path) -> list[Path]:
    """Loss, MSE and L0 vs training step per run (3 panels per backbone); colour by kind, line style by setting,
    log y for loss and MSE.
    """
    runs = _ordered(_runs(data))
    backbones = sorted({str(r.get("backbone", "?")) for _, r in runs}) or [None]
    settings = sorted({str(r.get("setting", "default")) for _, r in runs}, key=lambda s: (s != "default", s))
    ls_of = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(settings)}
    panels = (
        ("loss", "Loss", "training loss (log)", True),
        ("mse", "MSE", "MSE (log)", True),
        ("l0", "L0", "L0 (active latents / token)", False),
    )
    fig = Figure(figsize=(13, 1.1 + 3.0 * len(backbones)), layout="constrained")
    axes = fig.subplots(len(backbones), 3, squeeze=False)
    kinds: set[str] = set()
    for r, bb in enumerate(backbones):
        mine = [(rid, run) for rid, run in runs if str(run.get("backbone", "?")) == bb]
        for c, (key, name, ylabel, log) in enumerate(panels):
            ax = axes[r, c]
            ax.set_title(f"{bb}: {name}" if bb is not None else name, fontsize=10)
            drawn = False
            for _, run in mine:
                step, v = _floats(run.get("step")), _floats(run.get(key))
                m = min(step.size, v.size)
                ok = np.isfinite(step[:m]) & np.isfinite(v[:m]) & ((v[:m] > 0) if log else True)
                if not ok.any():
                    continue
                kind = run.get("kind", "")
                kinds.add(kind)
                st = kind_style(kind)
                ax.plot(
                    step[:m][ok],
                    v[:m][ok],
                    color=st["color"],
                    linewidth=st["linewidth"] * 0.7,
                    linestyle=ls_of[str(run.get("setting", "default"))],
                    zorder=st["zorder"],
                    alpha=0.9,
                )
                drawn = True
            if not drawn:
                _no_data(ax)
                continue
            if log:
                _log(ax)
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, which="both")
    extra = [Line2D([], [], color="0.2", linestyle=ls_of[s], label=f"setting: {s}") for s in settings]
    _kind_legend(fig, kinds, extra=extra if len(settings) > 1 else None, markers=False)
    fig.suptitle("Training curves (colour: SAE kind; line style: setting)", fontsize=11)
    return save_figure(fig, out)
