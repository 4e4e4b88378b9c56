"""The ``pareto`` figure: the NMSE–L0 frontier at the sweep's expansion, points joined per kind in order of L0, with the
SAEs imported from elsewhere beside them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from repro.report.figures.inputs import _errors, _over_seeds, _select, _with_ci
from repro.report.figures.style import (
    _expansion_label,
    _kind_legend,
    _kind_rank,
    _log,
    _no_data,
    kind_label,
    kind_style,
    save_figure,
)
from repro.workflow import EXTERNAL


def _setting_label(setting: str) -> str:
    """Short annotation for a setting: ``k=24`` stays, ``l1_coefficient=0.0001`` → ``1e-04``."""
    parts = []
    for item in str(setting).split(","):
        key, sep, val = item.partition("=")
        if not sep:
            return str(setting)
        try:
            val = f"{float(val):.3g}"
        except ValueError:
            pass
        parts.append(f"{key}={val}" if len(key) <= 2 else val)
    return ",".join(parts)


def _setting_keys(settings: Iterable[str]) -> list[str]:
    keys = {item.partition("=")[0] for s in settings for item in str(s).split(",") if "=" in item}
    return sorted(keys)


def _imported_points(nmse: pd.DataFrame, l0: pd.DataFrame) -> pd.DataFrame:
    """One row per imported SAE (setting ``external``): backbone, name, kind, expansion, nmse, l0."""
    cols = ["backbone", "run", "kind", "expansion"]
    a, b = nmse[nmse["setting"] == EXTERNAL], l0[l0["setting"] == EXTERNAL]
    pts = a[cols + ["value"]].merge(b[cols + ["value"]], on=cols, suffixes=("_nmse", "_l0"))
    pts = pts.rename(columns={"value_nmse": "nmse", "value_l0": "l0"})
    pts = pts[(pts["nmse"] > 0) & (pts["l0"] > 0)]
    return pts.assign(name=pts["run"].astype(str).str.rsplit("/", n=1).str[-1])


def figure_pareto(metrics: pd.DataFrame, out: str | Path) -> list[Path]:
    """The NMSE–L0 frontier per backbone: every run at the sweep's expansion, joined per kind in order of L0.

    The sweep's expansion is the most common one among non-default settings (all runs' when there are none);
    every run at that expansion is shown, averaged over seeds (min–max bars on both axes; with one seed the bootstrap
    intervals of NMSE and L0), annotated with its
    setting. SAEs imported from elsewhere (setting ``external``) are black hexagons on their backbone's panel, at
    whatever size they have (named, with their kind and expansion), outside the kinds' lines.
    """
    keys = ["backbone", "kind", "setting", "expansion"]
    nmse = _select(metrics, "reconstruction", "nmse")
    l0 = _select(metrics, "reconstruction", "l0")
    imported = _imported_points(nmse, l0)
    nmse, l0 = nmse[nmse["setting"] != EXTERNAL], l0[l0["setting"] != EXTERNAL]
    backbones = sorted(set(nmse["backbone"]) & set(l0["backbone"])) or [None]
    fig = Figure(figsize=(0.6 + 4.8 * len(backbones), 4.8), layout="constrained")
    axes = fig.subplots(1, len(backbones), squeeze=False)[0]
    kinds: set[str] = set()
    swept = {kind: ", ".join(_setting_keys(set(g["setting"]))) for kind, g in nmse.groupby("kind")}
    for ax, bb in zip(axes, backbones, strict=True):
        n_bb, l_bb = nmse[nmse["backbone"] == bb], l0[l0["backbone"] == bb]
        if n_bb.empty or l_bb.empty:
            ax.set_title(f"{bb}" if bb is not None else "NMSE vs L0", fontsize=10)
            _no_data(ax)
            continue
        sweep = n_bb[~n_bb["setting"].isin(["default"])]
        x = (sweep if not sweep.empty else n_bb)["expansion"].value_counts().sort_index().idxmax()
        a = _with_ci(_over_seeds(n_bb[n_bb["expansion"] == x], keys), metrics, "reconstruction", "nmse", keys)
        b = _with_ci(_over_seeds(l_bb[l_bb["expansion"] == x], keys), metrics, "reconstruction", "l0", keys)
        pts = a.merge(b, on=keys, suffixes=("_nmse", "_l0"))
        pts = pts[(pts["mean_nmse"] > 0) & (pts["mean_l0"] > 0)]
        ax.set_title(f"{bb} — expansion {_expansion_label(x)}", fontsize=10)
        if pts.empty:
            _no_data(ax)
            continue
        for kind, g in sorted(pts.groupby("kind"), key=lambda kg: _kind_rank(kg[0])):
            kinds.add(kind)
            g = g.sort_values("mean_l0")
            st = kind_style(kind)
            xerr = _errors(
                g.rename(
                    columns={
                        "mean_l0": "mean",
                        "min_l0": "min",
                        "max_l0": "max",
                        "n_l0": "n",
                        "ci_lo_l0": "ci_lo",
                        "ci_hi_l0": "ci_hi",
                    }
                )
            )
            yerr = _errors(
                g.rename(
                    columns={
                        "mean_nmse": "mean",
                        "min_nmse": "min",
                        "max_nmse": "max",
                        "n_nmse": "n",
                        "ci_lo_nmse": "ci_lo",
                        "ci_hi_nmse": "ci_hi",
                    }
                )
            )
            ax.errorbar(g["mean_l0"], g["mean_nmse"], xerr=xerr, yerr=yerr, capsize=2, **st)
            notes: dict[tuple[float, float], tuple[float, float, list[str]]] = {}  # (near-)coinciding points
            for x_, y_, setting in zip(g["mean_l0"], g["mean_nmse"], g["setting"], strict=True):
                key = (round(math.log10(x_), 2), round(math.log10(y_), 2))
                notes.setdefault(key, (x_, y_, []))[2].append(_setting_label(setting))
            for x_, y_, labels in notes.values():
                ax.annotate(
                    " / ".join(labels),
                    (x_, y_),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=6.5,
                    color=st["color"],
                )
        for _, r in imported[imported["backbone"] == bb].iterrows():
            ax.plot(r["l0"], r["nmse"], marker="h", markersize=10, color="black", linestyle="none", zorder=5)
            ax.annotate(
                f"{r['name']} ({kind_label(r['kind'])}, {_expansion_label(r['expansion'])})",
                (r["l0"], r["nmse"]),
                xytext=(5, -9),
                textcoords="offset points",
                fontsize=6.5,
            )
        _log(ax, "x")
        _log(ax, "y")
        ax.set_xlabel("L0 (active latents per token, log)")
        ax.set_ylabel("NMSE = Σ‖x − x̂‖² / Σ‖x‖² (uncentred, log)")
        ax.grid(alpha=0.3, which="both")
    extra = (
        [
            Line2D(
                [],
                [],
                marker="h",
                markersize=10,
                color="black",
                linestyle="none",
                label="imported SAE (config `external`; its size in brackets)",
            )
        ]
        if not imported.empty
        else None
    )
    _kind_legend(fig, kinds, extra=extra, notes={k: f"swept: {v}" for k, v in swept.items() if v})
    fig.suptitle(
        "Sparsity–reconstruction frontier (lower left is better; mean over seeds, bars: min–max over "
        "seeds,\nor with one seed the bootstrap 95 % interval over held-out examples)",
        fontsize=11,
    )
    return save_figure(fig, out)
