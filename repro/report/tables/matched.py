"""The ``matched_l0`` table (package docstring): each method's metrics interpolated in log L0 on its sweep at the
sparsemax SAE's L0 (:func:`interpolate_at`, which :mod:`repro.report.external` uses too)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from repro import kinds
from repro.report.tables.cells import _fmt_x, _seed_cell
from repro.report.tables.table import Table


def interpolate_at(l0s: list[float], values: list[float], target: float) -> float:
    """``values`` linearly interpolated in log L0 at ``target`` between the two bracketing points (NaN when
    the target is outside [min L0, max L0] or fewer than two points)."""
    pts = sorted((x, v) for x, v in zip(l0s, values, strict=True) if x > 0 and math.isfinite(x) and math.isfinite(v))
    for (l1, v1), (l2, v2) in zip(pts, pts[1:], strict=False):
        if l1 <= target <= l2:
            if l1 == l2:
                return (v1 + v2) / 2
            w = (math.log(target) - math.log(l1)) / (math.log(l2) - math.log(l1))
            return v1 + w * (v2 - v1)
    return math.nan


MATCHED_METRICS = (
    ("NMSE", "reconstruction", "nmse", "{:.4f}"),
    ("EV", "reconstruction", "ev", "{:.3f}"),
    ("per-token NMSE", "reconstruction", "nmse_tok", "{:.4f}"),
    ("CE Δ (nats)", "lm_loss", "ce_delta", "{:.4f}"),
    ("KL", "lm_loss", "kl_sae", "{:.4f}"),
)


def _sweep_frame(g: pd.DataFrame) -> pd.DataFrame:
    """(kind, setting, seed) × metric: reconstruction and lm_loss metrics of one backbone and size."""
    keep = g[g["eval"].isin(["reconstruction", "lm_loss"])]
    return keep.pivot_table(index=["kind", "setting", "seed"], columns="metric", values="value", aggfunc="mean")


def matched_at(frame: pd.DataFrame, kind: str, target: float, metric: str, seed=None) -> float:
    """``metric`` of ``kind`` interpolated in log L0 at ``target`` over its settings (one seed, or the
    seed-mean of each setting when ``seed`` is None); NaN outside the sweep."""
    pts = frame.loc[kind]
    pts = pts.xs(seed, level="seed") if seed is not None else pts.groupby(level="setting").mean()
    if metric not in pts or "l0" not in pts:
        return math.nan
    return interpolate_at(pts["l0"].tolist(), pts[metric].tolist(), target)


def matched_l0(df: pd.DataFrame) -> Table:
    """Each method's metrics at the sparsemax SAE's L0 (package docstring): per backbone and size, every
    knob kind's sweep interpolated in log L0 at the sparsemax run's held-out L0. With several seeds the
    interpolation is done per seed (target = that seed's sparsemax L0) and the cell is mean ± std over
    seeds whose sweep brackets their target (the seeds column counts them); with one seed the NMSE cell
    carries the bootstrap 95 % interval over held-out examples, interpolated the same way. A sweep whose L0
    range brackets no seed's target says so."""
    t = Table(
        "matched_l0",
        "Metrics at the sparsemax SAE's L0 (each method interpolated on its sweep)",
        ["backbone", "size", "method", "seeds", "sweep L0 (target)"] + [m[0] for m in MATCHED_METRICS],
    )
    df = df[df["setting"] != "external"]  # SAEs imported from elsewhere: the `external` table
    sweeps = df[(df["eval"] == "reconstruction") & ~df["setting"].isin(["default", "guided"])]
    for (backbone, x), _ in sweeps.groupby(["backbone", "expansion"]):
        frame = _sweep_frame(df[(df["backbone"] == backbone) & (df["expansion"] == x)])
        if ("sparsemax_attention", "default") not in frame.index.droplevel("seed"):
            continue
        ref = frame.loc[("sparsemax_attention", "default")]
        seeds = sorted(ref.index)
        targets = {s: float(ref.loc[s, "l0"]) for s in seeds}
        mean_target = float(np.mean(list(targets.values())))
        row = [
            backbone,
            f"{_fmt_x(x)}×d",
            kinds.label("sparsemax_attention"),
            str(len(seeds)),
            f"L0 = {mean_target:.1f}" + (f" ± {np.std(list(targets.values()), ddof=1):.1f}" if len(seeds) > 1 else ""),
        ]
        for _, _, metric, fmt in MATCHED_METRICS:
            vals = [float(ref.loc[s, metric]) for s in seeds if metric in ref]
            row.append(_seed_cell(vals, fmt) + (_ci_text(ref, seeds, fmt) if metric == "nmse" else ""))
        t.rows.append(row)
        others = sorted({k for k, _, _ in frame.index} - {"sparsemax_attention"}, key=lambda k: (kinds.rank(k), k))
        for kind in others:
            pts = frame.loc[kind]
            kind_seeds = sorted(set(pts.index.get_level_values("seed")) & set(seeds))
            l0s = pts["l0"].dropna()
            span = f"{l0s.min():.1f}–{l0s.max():.1f} ({pts.index.get_level_values('setting').nunique()} settings)"
            row = [backbone, f"{_fmt_x(x)}×d", kinds.label(kind), str(len(kind_seeds)), span]
            if pts.index.get_level_values("setting").nunique() < 2:  # no sparsity knob (MLP + sparsemax)
                row[3] = str(pts.index.get_level_values("seed").nunique())
                t.rows.append(
                    row
                    + [f"no sweep: one setting (L0 {l0s.mean():.1f}), nothing to interpolate"]
                    + ["–"] * (len(MATCHED_METRICS) - 1)
                )
                continue
            kind_seeds = [s for s in kind_seeds if math.isfinite(matched_at(frame, kind, targets[s], "l0", s))]
            row[3] = str(len(kind_seeds))
            if not kind_seeds:
                t.rows.append(row + [f"not bracketed (target {mean_target:.1f})"] + ["–"] * (len(MATCHED_METRICS) - 1))
                continue
            for _, _, metric, fmt in MATCHED_METRICS:
                vals = [matched_at(frame, kind, targets[s], metric, s) for s in kind_seeds]
                cell = _seed_cell([v for v in vals if math.isfinite(v)], fmt)
                if metric == "nmse" and len(kind_seeds) == 1:
                    s0 = kind_seeds[0]
                    lo, hi = (matched_at(frame, kind, targets[s0], m, s0) for m in ("nmse_ci_lo", "nmse_ci_hi"))
                    cell += f" [{fmt.format(lo)}, {fmt.format(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
                row.append(cell)
            t.rows.append(row)
    t.notes = [
        "Interpolation is linear in log L0 between the two settings of the method's sweep whose held-out L0 "
        "bracket the sparsemax SAE's; no extrapolation ('not bracketed' when the sweep misses the target).",
        "Cells: mean ± standard deviation over seeds (each seed interpolated at its own sparsemax L0); with "
        "one seed, NMSE [bootstrap 95 % interval over held-out examples].",
        "NMSE = Σ‖x − x̂‖² / Σ‖x‖² (uncentred ratio of sums); EV = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² (negative when "
        "worse than the mean); per-token NMSE = mean over tokens of ‖x − x̂‖²/‖x‖²; CE Δ and KL: next-token "
        "cross-entropy increase and KL(clean ‖ spliced) per token (language only).",
    ]
    return t


def _ci_text(ref: pd.DataFrame, seeds: list, fmt: str) -> str:
    if len(seeds) != 1 or "nmse_ci_lo" not in ref:
        return ""
    lo, hi = float(ref.loc[seeds[0], "nmse_ci_lo"]), float(ref.loc[seeds[0], "nmse_ci_hi"])
    return f" [{fmt.format(lo)}, {fmt.format(hi)}]" if math.isfinite(lo) and math.isfinite(hi) else ""
