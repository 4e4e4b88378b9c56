"""The figures' inputs: rows of the tidy metrics frame averaged over seeds, with their error bars, and the runs of
a figure-data JSON file."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from repro.report.figures.style import _kind_rank, is_sparsemax


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
