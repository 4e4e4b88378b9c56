"""The ``external`` table: SAEs trained elsewhere (the config's ``external`` list, imported with ``repro import``)
beside ours, from the tidy ``metrics.csv``.

One row per imported SAE (setting ``external``): its kind, size, held-out L0, NMSE (with the bootstrap 95 %
interval over test examples), explained variance and dead fraction, the CE degradation and official on-1 when
they were evaluated, and "ours at this L0": for every kind of ours with at least two runs on the same backbone,
dataset and hook at one size, its seed-mean NMSE linearly interpolated in log L0 at the imported SAE's L0
(:func:`repro.report.tables.interpolate_at`, as the matched-L0 table does), so a reader compares at matched
sparsity rather than at whatever L0 each SAE happens to have. Every number is measured by our evaluations on
the same test tokens as our runs (the imported run's cache spec is its role's).
"""

from __future__ import annotations

import math

import pandas as pd

from repro import kinds
from repro.report.tables import Table, _sweep_frame, interpolate_at
from repro.workflow import EXTERNAL

COLUMNS = (
    ("L0", "reconstruction", "l0", "{:.1f}"),
    ("NMSE", "reconstruction", "nmse", "{:.4f}"),
    ("EV", "reconstruction", "ev", "{:.3f}"),
    ("dead", "reconstruction", "dead_fraction", "{:.1%}"),
)
OPTIONAL = (("CE Δ (nats)", "lm_loss", "ce_delta", "{:.4f}"), ("on-1 (official)", "topn", "official/on_1", "{:.1f}"))


def _value(rows: pd.DataFrame, eval_name: str, metric: str) -> float:
    hit = rows[(rows["eval"] == eval_name) & (rows["metric"] == metric)]["value"].dropna()
    return float(hit.mean()) if len(hit) else math.nan


def _fmt(value: float, fmt: str) -> str:
    return fmt.format(value) if math.isfinite(value) else "–"


def ours_at(df: pd.DataFrame, backbone: str, dataset: str, hook: str, l0: float) -> str:
    """Our kinds' NMSE at ``l0`` on the same backbone, dataset and hook, one entry per (kind, size) whose runs
    bracket it (module docstring), best first."""
    ours = df[
        (df["backbone"] == backbone) & (df["dataset"] == dataset) & (df["hook"] == hook) & (df["setting"] != EXTERNAL)
    ]
    found = []
    for x, g in ours.groupby("expansion"):
        frame = _sweep_frame(g)
        if frame.empty or "l0" not in frame or "nmse" not in frame:
            continue
        for kind in frame.index.get_level_values("kind").unique():
            pts = frame.loc[kind].groupby(level="setting").mean()
            if len(pts) >= 2:
                v = interpolate_at(pts["l0"].tolist(), pts["nmse"].tolist(), l0)
                if math.isfinite(v):
                    found.append((v, f"{kinds.label(kind)} ×{x:g} {v:.4f}"))
    return ", ".join(text for _, text in sorted(found)) if found else "outside our sweeps"


def external(df: pd.DataFrame) -> Table:
    """The ``external`` table (module docstring)."""
    ext = df[df["setting"] == EXTERNAL]
    optional = [c for c in OPTIONAL if not ext[(ext["eval"] == c[1]) & (ext["metric"] == c[2])].empty]
    t = Table(
        "external",
        "SAEs trained elsewhere (SAELens format) beside ours, on the same held-out tokens",
        ["SAE", "backbone", "hook", "kind", "d_sae"]
        + [c[0] for c in COLUMNS + tuple(optional)]
        + ["ours at this L0 (NMSE)"],
    )
    for run, rows in sorted(ext.groupby("run")):
        first = rows.iloc[0]
        l0 = _value(rows, "reconstruction", "l0")
        cells = [_fmt(_value(rows, e, m), f) for _, e, m, f in COLUMNS + tuple(optional)]
        lo, hi = _value(rows, "reconstruction", "nmse_ci_lo"), _value(rows, "reconstruction", "nmse_ci_hi")
        if math.isfinite(lo) and math.isfinite(hi):
            cells[1] += f" [{lo:.4f}, {hi:.4f}]"
        versus = ours_at(df, first["backbone"], first["dataset"], first["hook"], l0) if math.isfinite(l0) else "–"
        t.rows.append(
            [
                str(run).rsplit("/", 1)[-1],
                f"{first['backbone']} ({first['dataset']})",
                str(first["hook"]),
                kinds.label(str(first["kind"])),
                f"{int(first['d_sae'])}",
                *cells,
                versus,
            ]
        )
    t.notes = [
        "Imported with `repro import` (config key `external`) and scored by our evaluations on the test split "
        "our runs are scored on; NMSE = Σ‖x − x̂‖² / Σ‖x‖², EV centred, L0 active latents per token.",
        "Ours at this L0: each kind of ours with two or more runs on the same backbone, dataset and hook at one "
        "size (×: d_sae / d_in), its seed-mean NMSE interpolated linearly in log L0 at the imported SAE's L0 "
        "between the two runs that bracket it; 'outside our sweeps' when none brackets it.",
    ]
    if not t.rows:
        t.notes.insert(0, "No external SAEs: list SAELens folders under `external` in the config.")
    return t
