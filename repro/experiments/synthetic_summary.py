"""The ground-truth benchmark's summary (:mod:`repro.experiments.synthetic`): mean and std over seeds per
method (:data:`SUMMARY_COLUMNS`), the step sweep's plateau, ``summary.csv`` and the markdown table."""

from __future__ import annotations

import csv
import json
import math
import statistics
from typing import Any


def plateau(sweep: list[dict], ev_tol: float = 0.01, mcc_tol: float = 0.01) -> dict[str, dict]:
    """Per method: the change of EV, MCC and L0 between the two longest runs of the step sweep, and
    ``plateaued`` (|ΔEV| ≤ ``ev_tol`` and |ΔMCC| ≤ ``mcc_tol``)."""
    out = {}
    for name in dict.fromkeys(r["method"] for r in sweep):
        mine = sorted((r for r in sweep if r["method"] == name), key=lambda r: r["steps"])
        if len(mine) < 2:
            continue
        a, b = mine[-2], mine[-1]
        d = {k: b[k] - a[k] for k in ("ev", "mcc", "l0")}
        out[name] = {
            "from_steps": a["steps"],
            "to_steps": b["steps"],
            **{f"delta_{k}": v for k, v in d.items()},
            "plateaued": bool(abs(d["ev"]) <= ev_tol and abs(d["mcc"]) <= mcc_tol),
        }
    return out


SUMMARY_COLUMNS = (
    ("ev", ("reconstruction", "ev")),
    ("l0", ("reconstruction", "l0")),
    ("spearman", ("sparsity_tracking", "spearman")),
    ("slope", ("sparsity_tracking", "slope")),
    ("intercept", ("sparsity_tracking", "intercept")),
    ("mcc", ("dictionary", "mcc")),
    ("recovered", ("dictionary", "recovered")),
    ("precision", ("precision_recall", "mean_precision")),
    ("recall", ("precision_recall", "mean_recall")),
    ("l0_simple", ("simple_vs_complex", "simple", "mean")),
    ("l0_complex", ("simple_vs_complex", "complex", "mean")),
)


def _get(record: dict, path: tuple[str, ...]) -> float:
    for key in path:
        if not isinstance(record, dict) or key not in record:
            return math.nan
        record = record[key]
    return float(record) if record is not None else math.nan


def summarise(runs: list[dict], order: list[str]) -> list[dict]:
    """Mean and standard deviation over seeds of every summary column, per method (in ``order``)."""
    rows = []
    for name in order:
        mine = [r for r in runs if r["method"] == name]
        row: dict[str, Any] = {
            "method": name,
            "kind": mine[0]["kind"],
            "hparams": mine[0]["hparams"],
            "seeds": len(mine),
        }
        for col, path in SUMMARY_COLUMNS:
            values = [v for v in (_get(r, path) for r in mine) if not math.isnan(v)]
            row[col] = statistics.fmean(values) if values else math.nan
            row[f"{col}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        searches = [r["penalty_search"] for r in mine if r.get("penalty_search")]
        row["search_matched"] = statistics.fmean(float(s["matched"]) for s in searches) if searches else math.nan
        rows.append(row)
    return rows


def format_table(
    summary: list[dict], mean_count: float, chance: float | None = None, plateaus: dict[str, dict] | None = None
) -> str:
    """Markdown table: mean ± std over seeds, a chance row for MCC, and marks for penalty searches that did
    not match their L0 target and for methods the step sweep found still moving."""
    cols = [c for c, _ in SUMMARY_COLUMNS if any(not math.isnan(r[c]) for r in summary)]
    plateaus = plateaus or {}
    lines = [
        f"Mean true count per sample: {mean_count:.2f}. Mean ± std over seeds. L0 ≈ intercept + slope × "
        "true count (least squares over held-out samples).",
        "",
        "| method | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in summary:
        cells = [f"{r[c]:.3f} ± {r[c + '_std']:.3f}" if not math.isnan(r[c]) else "–" for c in cols]
        marks = []
        if not math.isnan(r.get("search_matched", math.nan)) and r["search_matched"] < 1:
            marks.append(f"L0 search not matched on {1 - r['search_matched']:.0%} of seeds: not an L0-matched baseline")
        if r["method"] in plateaus and not plateaus[r["method"]]["plateaued"]:
            p = plateaus[r["method"]]
            marks.append(
                f"not plateaued ({p['from_steps']} → {p['to_steps']} steps: ΔEV {p['delta_ev']:+.3f}, "
                f"ΔMCC {p['delta_mcc']:+.3f})"
            )
        name = r["method"] + (f" ({'; '.join(marks)})" if marks else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if chance is not None and "mcc" in cols:
        lines.append(
            "| chance: random dictionary of the same width | "
            + " | ".join(f"{chance:.3f}" if c == "mcc" else "–" for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _write_summary_csv(path: str, summary: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        cols = ["method", "kind", "hparams", "seeds"] + [c for col, _ in SUMMARY_COLUMNS for c in (col, col + "_std")]
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for r in summary:
            writer.writerow({k: (json.dumps(r[k]) if k == "hparams" else r[k]) for k in cols})
