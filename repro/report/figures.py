"""Paper figures from the tidy metrics CSV (:mod:`repro.report.aggregate`) and the figure-data JSON files.

One function per figure, ``figure_<name>(input, out) -> [<out>.pdf, <out>.png]``; both files are written
atomically (a temporary file in the same folder, then :func:`os.replace`). Figures are built on
:class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot, no global state). Every SAE kind has one
colour, marker and label across all figures, from the kind catalogue (:mod:`repro.kinds`); the sparsemax family
is drawn larger and with a thicker line, and the paper's method comes first. A panel without data shows "no data"
instead of failing.

Figures (:data:`FIGURES`, name -> (function, input)):

- ``nmse_vs_size`` (metrics): NMSE, and CE degradation when measured, vs dictionary size per kind and backbone;
- ``pareto`` (metrics): the NMSE–L0 frontier at the sweep's expansion, points joined per kind in order of L0;
- ``l0_distribution`` (``l0_distribution.json``): per-token L0 histograms, sparsemax vs fixed-k, and the inputs
  with the fewest and most active latents;
- ``firing_vs_activation`` (``latents.json``): per-latent firing rate vs mean activation, coloured by entropy;
- ``concepts`` (``concepts.json``): top-activating examples of a few latents per run;
- ``training_curves`` (``training_curves.json``): loss, MSE and L0 vs training step.

:func:`render` dispatches by figure name, reading the CSV or ``<data_dir>/<stem>.json``.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogFormatter, NullLocator

from repro import kinds
from repro.report.catalogue import FIGURE_SOURCES
from repro.report.metrics_csv import read as read_metrics
from repro.workflow import EXTERNAL

UNKNOWN_COLOR = "#555555"
NAN_COLOR = "#c8c8c8"
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))
DPI = 150


# --------------------------------------------------------------------------------------------------- helpers


def is_sparsemax(kind: str) -> bool:
    """Whether ``kind`` is one of the sparsemax SAEs (emphasised in every figure; ``repro.kinds``)."""
    entry = kinds.info(str(kind))
    return bool(entry and entry.emphasised)


def is_fixed_k(kind: str) -> bool:
    """Whether ``kind``'s L0 is set by its ``k`` (``repro.kinds``: the guided kinds)."""
    return str(kind) in kinds.guided_kinds()


def kind_label(kind: str) -> str:
    """The display name of an SAE kind (the kind itself when unknown)."""
    return kinds.label(kind)


def kind_color(kind: str) -> str:
    """The colour of ``kind`` in every figure (``repro.kinds``; grey when it is not declared)."""
    entry = kinds.info(str(kind))
    return entry.color if entry else UNKNOWN_COLOR


def kind_style(kind: str) -> dict:
    """Line/marker keyword arguments for ``kind``: its colour and marker; sparsemax thicker, larger and on top."""
    sm = is_sparsemax(kind)
    entry = kinds.info(str(kind))
    return {
        "color": entry.color if entry else UNKNOWN_COLOR,
        "marker": entry.marker if entry else "o",
        "linewidth": 2.8 if sm else 1.5,
        "markersize": 13 if sm else 6,
        "zorder": 5 if sm else 3,
    }


def _kind_rank(kind: str) -> tuple[bool, int, str]:
    """Figure order: the paper's method first, then the catalogue's order (``repro.kinds``)."""
    return (kind != kinds.PAPER_METHOD, kinds.rank(kind), str(kind))


def _expansion_label(x: float) -> str:
    return f"{x:g}x"


def _no_data(ax: Axes, message: str = "no data") -> None:
    ax.text(
        0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.45", fontsize=11, style="italic"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _stem(out: str | Path) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in (".pdf", ".png") else out


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` to ``<out>.pdf`` and ``<out>.png`` (dpi 150), each atomically; returns both paths."""
    stem = _stem(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, meta in (("pdf", {"CreationDate": None}), ("png", {"Software": None})):
        path = stem.with_name(f"{stem.name}.{ext}")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # same folder: os.replace is atomic
        try:
            fig.savefig(tmp, format=ext, dpi=DPI, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        paths.append(path)
    return paths


def _runs(data: dict | None) -> dict[str, dict]:
    runs = (data or {}).get("runs") or {}
    return {str(k): v for k, v in runs.items() if isinstance(v, dict)}


def _ordered(runs: dict[str, dict]) -> list[tuple[str, dict]]:
    """Runs with sparsemax kinds first, then by kind order and run id."""
    return sorted(
        runs.items(), key=lambda kv: (not is_sparsemax(kv[1].get("kind", "")), _kind_rank(kv[1].get("kind", "")), kv[0])
    )


def _floats(values: Iterable | None) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in (values or [])], dtype=float)


def _select(metrics: pd.DataFrame, eval_: str, metric: str, setting: str | None = None) -> pd.DataFrame:
    needed = {"eval", "metric", "value", "backbone", "kind", "expansion", "setting"}
    if metrics is None or metrics.empty or not needed <= set(metrics.columns):
        return pd.DataFrame(columns=sorted(needed | {"run", "seed"}))
    sel = (metrics["eval"] == eval_) & (metrics["metric"] == metric)
    if setting is not None:
        sel &= metrics["setting"] == setting
    df = metrics.loc[sel].copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["expansion"] = pd.to_numeric(df["expansion"], errors="coerce")
    return df.dropna(subset=["value", "expansion"])


def _over_seeds(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, min, max and count of ``value`` over seeds per ``keys``."""
    if df.empty:
        return pd.DataFrame(columns=[*keys, "mean", "min", "max", "n"])
    return df.groupby(keys, as_index=False)["value"].agg(mean="mean", min="min", max="max", n="count")


def _errors(g: pd.DataFrame) -> np.ndarray | None:
    """Asymmetric error bars: min–max over seeds where more than one seed; with one seed the bootstrap
    interval over examples when ``g`` has ``ci_lo``/``ci_hi`` columns (NaN: no bar); None when no bar at all."""
    one = g["n"] <= 1
    ci_lo = g["ci_lo"] if "ci_lo" in g else pd.Series(np.nan, index=g.index)
    ci_hi = g["ci_hi"] if "ci_hi" in g else pd.Series(np.nan, index=g.index)
    lo = np.where(~one, g["mean"] - g["min"], np.nan_to_num(g["mean"] - ci_lo, nan=0.0))
    hi = np.where(~one, g["max"] - g["mean"], np.nan_to_num(ci_hi - g["mean"], nan=0.0))
    if not (lo > 0).any() and not (hi > 0).any():
        return None
    return np.vstack([np.maximum(lo, 0.0), np.maximum(hi, 0.0)])


def _with_ci(
    points: pd.DataFrame,
    metrics: pd.DataFrame,
    eval_name: str,
    metric: str,
    keys: list[str],
    setting: str | None = None,
) -> pd.DataFrame:
    """``points`` (one row per ``keys``) with the mean over seeds of the run's bootstrap interval bounds of
    ``metric`` (``<metric>_ci_lo``/``_ci_hi`` rows) as ``ci_lo``/``ci_hi`` (NaN where not recorded)."""
    out = points
    for b in ("lo", "hi"):
        ci = _over_seeds(_select(metrics, eval_name, f"{metric}_ci_{b}", setting), keys)[[*keys, "mean"]]
        out = out.merge(ci.rename(columns={"mean": f"ci_{b}"}), on=keys, how="left")
    return out


class _PlainLogFormatter(LogFormatter):
    """The ticks :class:`LogFormatter` labels, written plainly (0.3, 20, 1e-05)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log(ax: Axes, axis: str = "y") -> None:
    """Log scale with plain tick labels (0.3, 20) instead of 3×10⁻¹."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(_PlainLogFormatter())
    target.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))


def _log_if_wide(ax: Axes, values: Iterable[float], axis: str = "y", ratio: float = 8.0) -> None:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size and (v > 0).all() and v.max() / v.min() > ratio:
        _log(ax, axis)


def _kind_legend(
    fig: Figure,
    kinds: Iterable[str],
    extra: list | None = None,
    markers: bool = True,
    notes: dict[str, str] | None = None,
) -> None:
    """One figure legend below the panels: a line (and marker) per SAE kind (with its note), then ``extra``."""
    handles = []
    for k in sorted(set(kinds), key=_kind_rank):
        st = kind_style(k)
        if not markers:
            st["marker"] = None
        note = (notes or {}).get(k)
        handles.append(Line2D([], [], label=kind_label(k) + (f" ({note})" if note else ""), **st))
    handles += extra or []
    if handles:
        longest = max(len(h.get_label()) for h in handles)
        fits = max(1, int(fig.get_figwidth() * 72 / (8.5 * 0.6 * longest + 40)))  # columns that fit the width
        fig.legend(
            handles=handles, loc="outside lower center", ncols=min(len(handles), 6, fits), fontsize=8.5, frameon=False
        )


# --------------------------------------------------------------------------------------------------- figures


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


def _clean_text(text: str, limit: int = 120) -> str:
    text = re.sub(r"\s+", " ", "".join(ch if ch.isprintable() else " " for ch in str(text))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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


# concept grids: manual layout in inches (text rows need a known width to place tokens in a monospace font)
_LEFT, _RIGHT, _TOP, _BOTTOM = 0.75, 0.2, 0.3, 0.2
_MONO_EM = 0.602  # advance of a DejaVu Sans Mono glyph, in em


def _concept_rows(runs: list[tuple[str, dict]], max_latents: int, max_examples: int) -> list[tuple]:
    """(kind of row, payload, height in inches, padding above in inches) for the concepts figure."""
    rows: list[tuple] = []
    for rid, run in runs:
        rows.append(("header", (rid, run), 0.25, 0.25))
        latents = (run.get("latents") or [])[:max_latents]
        if not latents:
            rows.append(("empty", "no latents", 0.6, 0.1))
        for lat in latents:
            exs = (lat.get("examples") or [])[:max_examples]
            is_image = run.get("modality") == "image" or any(ex.get("image") is not None for ex in exs)
            if is_image:
                rows.append(("image", lat, 1.45, 0.42))
            else:
                rows.append(("text", lat, 0.3 + 0.24 * max(len(exs), 1), 0.25))
    return rows


def _image_example(ax: Axes, ex: dict, color: str) -> None:
    img = None if ex.get("image") is None else np.asarray(ex["image"], dtype=float)
    tmap = None if ex.get("token_map") is None else np.asarray(ex["token_map"], dtype=float)
    if img is None and tmap is None:
        _no_data(ax, "no image")
        return
    if img is not None and img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        h, w = img.shape
    else:
        h, w = tmap.shape
        ax.imshow(np.zeros((h, w)), cmap="gray", vmin=0, vmax=1)
    if tmap is not None and tmap.ndim == 2 and tmap.size:
        t = np.nan_to_num(np.clip(tmap, 0, None))
        peak = t.max()
        if peak > 0:
            rgba = np.zeros((*t.shape, 4))
            rgba[..., :3] = to_rgb(color)
            rgba[..., 3] = 0.65 * t / peak
            extent = (-0.5, w - 0.5, h - 0.5, -0.5)
            ax.imshow(rgba, extent=extent, interpolation="nearest")
            gh, gw = t.shape
            ch, cw = h / gh, w / gw
            for i, j in zip(*np.nonzero(t > 0), strict=True):
                ax.add_patch(
                    Rectangle((j * cw - 0.5, i * ch - 0.5), cw, ch, fill=False, edgecolor=color, linewidth=1.0)
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"{_clean_text(ex.get('label', '?'), 22)}\nact {float(ex.get('value', float('nan'))):.3g}",
        fontsize=7,
        parse_math=False,
    )


def _text_examples(ax: Axes, exs: list[dict], width_in: float, color: str, fontsize: float = 7.5) -> None:
    """Token strings, one example per line, active tokens on a background whose opacity is the activation."""
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if not exs:
        _no_data(ax, "no examples")
        return
    n_chars = max(int(width_in * 72 / (_MONO_EM * fontsize)), 20)
    ax.set_xlim(0, n_chars)
    ax.set_ylim(len(exs) - 0.5, -0.5)
    for i, ex in enumerate(exs):
        prefix = f"{float(ex.get('value', float('nan'))):7.3g} │ "
        toks = [re.sub(r"\s", " ", str(t)) or " " for t in (ex.get("tokens") or [])]
        acts = _floats(ex.get("token_acts"))
        acts = np.concatenate([acts[: len(toks)], np.zeros(max(len(toks) - acts.size, 0))])
        acts = np.nan_to_num(acts)
        ax.text(0, i, prefix, fontsize=fontsize, family="monospace", va="center", color="0.35", parse_math=False)
        if not toks:
            ax.text(
                len(prefix),
                i,
                _clean_text(ex.get("label", "(no tokens)"), n_chars - len(prefix)),
                fontsize=fontsize,
                family="monospace",
                va="center",
                parse_math=False,
            )
            continue
        room = n_chars - len(prefix)
        start = _window(toks, int(np.argmax(acts)) if acts.size else 0, room)
        x = len(prefix)
        peak = acts.max() if acts.size and acts.max() > 0 else 1.0
        for tok, act in zip(toks[start:], acts[start:], strict=True):
            if x + len(tok) > n_chars:
                ax.text(n_chars - 1, i, "…", fontsize=fontsize, family="monospace", va="center")
                break
            if act > 0:
                ax.add_patch(
                    Rectangle(
                        (x, i - 0.42), len(tok), 0.84, facecolor=color, alpha=0.15 + 0.75 * act / peak, linewidth=0
                    )
                )
            ax.text(
                x,
                i,
                tok,
                fontsize=fontsize,
                family="monospace",
                va="center",
                parse_math=False,
                fontweight="bold" if act > 0 else "normal",
            )
            x += len(tok)


def _window(tokens: list[str], centre: int, room: int) -> int:
    """First token index such that the tokens around ``centre`` fit in ``room`` characters (context on the left)."""
    start, used = centre, len(tokens[centre]) if tokens else 0
    while start > 0 and used + len(tokens[start - 1]) <= room // 2:
        start -= 1
        used += len(tokens[start])
    return start


def figure_concepts(data: dict, out: str | Path, max_latents: int = 4, max_examples: int = 5) -> list[Path]:
    """Concept grids: for at most 2 runs (sparsemax first) and ``max_latents`` latents each, a row of the latent's
    top-activating examples: images with the active spatial tokens highlighted (overlay and outline, title: label
    and activation), or token strings with active tokens on a background proportional to their activation.
    """
    runs = _ordered(_runs(data))[:2]
    width = max(8.0, _LEFT + _RIGHT + 1.55 * max_examples)
    inner = width - _LEFT - _RIGHT
    rows = _concept_rows(runs, max_latents, max_examples) or [("empty", "no data", 1.0, 0.1)]
    height = _TOP + _BOTTOM + sum(h + pad for _, _, h, pad in rows)
    fig = Figure(figsize=(width, height))
    y = height - _TOP
    current = ("", {})
    for kind_of_row, payload, h, pad in rows:
        y -= pad + h
        rect = [_LEFT / width, y / height, inner / width, h / height]
        if kind_of_row == "header":
            current = payload
            rid, run = payload
            kind = run.get("kind", "")
            fig.text(
                _LEFT / width,
                (y + h / 2) / height,
                f"{kind_label(kind)}  ({rid})",
                fontsize=10,
                fontweight="bold",
                color=kind_color(kind),
                va="center",
                parse_math=False,
            )
            continue
        if kind_of_row == "empty":
            _no_data(fig.add_axes(rect), payload)
            continue
        color = kind_color(current[1].get("kind", ""))
        exs = (payload.get("examples") or [])[:max_examples]
        label = f"latent {payload.get('latent', '?')}"
        if kind_of_row == "text":
            ax = fig.add_axes(rect)
            _text_examples(ax, exs, inner, color)
            ax.set_title(
                "top activation │ tokens around the most active one (background ∝ token activation)",
                fontsize=7,
                loc="left",
                color="0.4",
            )
            ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
            continue
        cell = inner / max_examples
        for j in range(max(len(exs), 1)):
            ax = fig.add_axes([(_LEFT + j * cell + 0.05) / width, y / height, (cell - 0.1) / width, h / height])
            if not exs:
                _no_data(ax, "no examples")
            else:
                _image_example(ax, exs[j], color)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(
        "Top-activating examples per latent (highlight: where the latent is active, opacity ∝ activation)",
        fontsize=11,
        y=1 - 0.15 / height,
        va="top",
    )
    return save_figure(fig, out)


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


_DRAW: dict[str, Callable[..., list[Path]]] = {
    "nmse_vs_size": figure_nmse_vs_size,
    "pareto": figure_pareto,
    "l0_distribution": figure_l0_distribution,
    "firing_vs_activation": figure_firing_vs_activation,
    "concepts": figure_concepts,
    "training_curves": figure_training_curves,
}
# name -> (drawing function, source: "metrics" or a figure-data stem); names and sources: repro.report.catalogue
FIGURES: dict[str, tuple[Callable[..., list[Path]], str]] = {
    name: (_DRAW[name], source) for name, source in FIGURE_SOURCES.items()
}


def render(name: str, metrics_csv: Path | None, data_dir: Path | None, out: Path) -> list[Path]:
    """Draw figure ``name`` (a key of :data:`FIGURES`) from the metrics CSV or ``<data_dir>/<stem>.json`` into
    ``<out>.pdf`` and ``<out>.png``; a missing input file raises FileNotFoundError naming it.
    """
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    fn, source = FIGURES[name]
    if source == "metrics":
        if metrics_csv is None:
            raise ValueError(f"figure {name!r} needs the metrics CSV")
        return fn(read_metrics(metrics_csv), out)
    if data_dir is None:
        raise ValueError(f"figure {name!r} needs the figure-data folder holding {source}.json")
    path = Path(data_dir) / f"{source}.json"
    if not path.is_file():
        raise FileNotFoundError(f"figure data for {name!r} not found: {path}")
    return fn(json.loads(path.read_text()), out)
