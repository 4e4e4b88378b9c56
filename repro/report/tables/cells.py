"""Cells of the tables: seed means and spreads of the tidy metrics rows (``repro.report.aggregate``), formatted
as "mean ± std" (several seeds) or with the bootstrap interval over examples (one seed); "–" marks a missing run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from repro.report import metrics_csv


def read_metrics(path: str | Path) -> pd.DataFrame:
    """The tidy CSV, parsed and normalised (:func:`repro.report.metrics_csv.read`)."""
    return metrics_csv.read(path)


def _stats(df: pd.DataFrame, **where) -> tuple[float, float, int]:
    """Mean and standard deviation over seeds of the rows matching ``where`` (NaN when none)."""
    sel = df
    for key, value in where.items():
        sel = sel[sel[key] == value]
    values = sel.groupby("seed")["value"].mean().dropna()
    if values.empty:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def _cell(mean: float, std: float, n: int, fmt: str = "{:.3f}", bold: bool = False) -> str:
    if n == 0 or not math.isfinite(mean):
        return "–"
    text = fmt.format(mean) + (f" ± {fmt.format(std)}" if n > 1 else "")
    return f"**{text}**" if bold else text


def _cell_ci(df: pd.DataFrame, fmt: str = "{:.3f}", bold: bool = False, **where) -> str:
    """:func:`_cell` of the rows matching ``where``; with one seed, followed by the bootstrap 95 % interval
    over examples of that run (``<metric>_ci_lo`` / ``_ci_hi`` rows) when it was recorded."""
    mean, std, n = _stats(df, **where)
    text = _cell(mean, std, n, fmt=fmt, bold=bold)
    if n == 1 and "metric" in where:
        lo, hi = (_stats(df, **(where | {"metric": f"{where['metric']}_ci_{b}"}))[0] for b in ("lo", "hi"))
        if math.isfinite(lo) and math.isfinite(hi):
            text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


LANGUAGE = ("smollm2-135m", "gpt2-small", "minilm-l6")


VISION = ("effnet-lite0", "clip-vit-b16")


def _one_backbone(df: pd.DataFrame, backbones: tuple[str, ...], eval_name: str) -> tuple[pd.DataFrame, str]:
    """The rows of the first backbone in ``backbones`` (else any) that has evaluation ``eval_name``."""
    have = df[df["eval"] == eval_name]["backbone"].unique().tolist()
    for b in list(backbones) + sorted(have):
        if b in have:
            return df[df["backbone"] == b], b
    return df.iloc[0:0], "–"


def _fmt_x(x) -> str:
    x = float(x)
    return f"{x:g}"


def _seed_cell(vals: list[float], fmt: str) -> str:
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return "–"
    text = fmt.format(float(np.mean(vals)))
    return text + (f" ± {fmt.format(float(np.std(vals, ddof=1)))}" if len(vals) > 1 else "")
