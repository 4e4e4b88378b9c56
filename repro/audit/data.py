"""The audit's inputs and vocabulary (definitions: :mod:`repro.audit.audit`): the paper reference
(``reference.yaml``), the tidy metrics and their seed means, the verdicts, and the row selection and row
building that the cells (:mod:`repro.audit.cells`) and the claims (:mod:`repro.audit.claims`) share."""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from repro.report import metrics_csv

COLUMNS = metrics_csv.COLUMNS


KEYS = ["config", "backbone", "dataset", "hook", "kind", "expansion", "setting", "eval", "metric"]


GROUP = ["config", "backbone", "dataset", "hook"]


VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not comparable", "no data")


def load_reference(path: str | Path | None = None) -> dict:
    """The paper reference (``reference.yaml`` of this package, or ``path``) as a dict with keys ``paper``,
    ``sources``, ``caveats``, ``tolerances``, ``modalities``, ``setting_aliases``, ``cells``, ``ranges``,
    ``claims``; YAML merge keys are resolved, so every cell carries all its fields."""
    if path is None:
        text = resources.files("repro.audit").joinpath("reference.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    ref = yaml.safe_load(text)
    missing = [k for k in ("sources", "caveats", "tolerances", "cells", "claims") if k not in (ref or {})]
    if missing:
        raise ValueError(f"reference {path or 'reference.yaml'} lacks the keys: {', '.join(missing)}")
    return ref


def validate_metrics(metrics: pd.DataFrame, source: str = "metrics") -> pd.DataFrame:
    """A checked, normalised copy of a tidy metrics frame (:func:`repro.report.metrics_csv.normalise`)."""
    return metrics_csv.normalise(metrics, source)


def read_metrics(csv_path: str | Path) -> pd.DataFrame:
    """The tidy metrics CSV at ``csv_path``, normalised (:func:`repro.report.metrics_csv.read`); a missing, empty
    or unreadable file or missing columns raise ValueError naming the file."""
    return metrics_csv.read(csv_path)


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """Seed means of a validated frame: one row per :data:`KEYS` with ``value`` (mean over seeds of the
    per-seed mean), ``std`` (over seeds, NaN for one), ``n_seeds`` and ``d_sae``; non-finite values dropped."""
    df = metrics[metrics["value"].map(lambda v: math.isfinite(v))]
    cols = KEYS + ["value", "std", "n_seeds", "d_sae"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    per_seed = df.groupby(KEYS + ["seed"], dropna=False, sort=True).agg(
        value=("value", "mean"), d_sae=("d_sae", "first")
    )
    out = per_seed.groupby(KEYS, dropna=False, sort=True).agg(
        value=("value", "mean"), std=("value", "std"), n_seeds=("value", "size"), d_sae=("d_sae", "first")
    )
    out = out.reset_index()
    out["n_seeds"] = out["n_seeds"].astype(int)
    return out[cols]


def _modality(ref: dict, backbone: str, dataset: str) -> str | None:
    mods = ref.get("modalities") or {}
    for key, name in (("backbones", backbone), ("datasets", dataset)):
        for mod, spec in mods.items():
            if name in (spec or {}).get(key, []):
                return mod
    return None


def _where(agg: pd.DataFrame, **eq: Any) -> pd.DataFrame:
    mask = np.ones(len(agg), dtype=bool)
    for k, v in eq.items():
        col = agg[k].to_numpy()
        if k == "expansion":
            mask &= np.abs(col.astype(float) - float(v)) < 1e-6
        elif isinstance(v, (list, tuple, set)):
            mask &= np.isin(col, list(v))
        else:
            mask &= col == v
    return agg.iloc[np.flatnonzero(mask)]


def _where_setting(agg: pd.DataFrame, setting: str, ref: dict, **eq: Any) -> pd.DataFrame:
    """Rows at ``setting``, or at its alias (``setting_aliases``) when the setting itself is absent."""
    rows = _where(agg, setting=setting, **eq)
    alias = (ref.get("setting_aliases") or {}).get(setting)
    return rows if not rows.empty or alias is None else _where(agg, setting=alias, **eq)


def _where_setup(agg: pd.DataFrame, backbone: str, dataset: str) -> pd.DataFrame:
    return agg[(agg["backbone"] == backbone) & (agg["dataset"] == dataset)]


def _best(rows: pd.DataFrame, key: Callable[[pd.Series], tuple]) -> pd.Series | None:
    return None if rows.empty else min((r for _, r in rows.iterrows()), key=key)


def _where_txt(r: pd.Series, configs: int) -> str:
    cfg = f", config {r['config'] or '(none)'}" if configs > 1 else ""
    return f"{r['backbone']}/{r['dataset']} ({r['hook']}{cfg})"


def _row(
    item: str, paper: Any, ours: Any, delta: float | None, verdict: str, reason: str, n_seeds: int, **extra: Any
) -> dict:
    return {
        "item": item,
        "paper": paper,
        "ours": ours,
        "delta": None if delta is None else float(delta),
        "verdict": verdict,
        "reason": reason,
        "n_seeds": int(n_seeds),
    } | extra
