"""``repro audit``: our aggregated results against the paper's recovered numbers and claims.

Input: the tidy CSV of ``repro.report.aggregate`` (:data:`COLUMNS`), one row per (run, eval, metric).
Reference: ``reference.yaml`` next to this module (:func:`load_reference`): the paper's recovered numbers,
each second-hand (source [PN], not checked against the PDF) with its caveats, tolerances and claims.

Definitions.

- Seed mean: rows with a finite ``value`` are averaged per (config, backbone, dataset, hook, kind, expansion,
  setting, eval, metric) and seed (runs of the same seed first), then over seeds; ``n_seeds`` = number of
  seeds averaged. Missing or NaN values are dropped, never read as 0.
- Cell (one paper number): our seed mean for the cell's (backbone, dataset, kind, expansion, setting, eval,
  metric). The cell is comparable only when our data has the cell's backbone and dataset; then
  ``delta`` = ours − paper and the verdict is "reproduced" iff |delta| ≤ max(absolute, relative · |paper|)
  (the cell's tolerance, from the YAML), else "not reproduced"; "no data" when that run is missing. Without
  the paper's backbone and dataset the verdict is "not comparable" and ``ours`` shows the closest analogue:
  the same kind and metric, preferring the same modality, backbone, dataset, the nearest expansion (in
  log₂), the paper's hook and more seeds, in this order; the reason names it.
- Range (Food101 TopK/BatchTopK K = 24/32, only the range 0.99–8.64 known): "reproduced" iff every fixed-K
  value of ours lies strictly below our sparsemax_attention value (the relation the range supports);
  whether ours fall inside the range is reported, not judged.
- Claim (a relation): evaluated separately in every (config, backbone, dataset, hook) group of the claim's
  modality that has data for it, whatever the config (a relation applies to the offline analogue too);
  strict inequalities at every expansion present; ``delta`` = the worst-case margin (> 0 iff the relation
  holds); "no data" when nothing can be compared. ``comparable`` is True for groups on the paper's setup.
- Gates (claims): a claim that holds or fails is "inconclusive" when a run it compares did not converge
  (eval ``train``, metric ``converged``), a top-n setup it reads failed its gate (``gate_usable``), or the
  compared values' spreads overlap (mean ± std over seeds; with one seed the ``<metric>_ci_lo/_hi``
  bootstrap interval over examples; no spread known: not gated). The reason names the failed gate.
- :func:`strict_failures`: the rows whose verdict is "not reproduced".

Rows (:func:`run_audit`): {"item", "paper", "ours", "delta", "verdict", "reason", "n_seeds"} plus "id",
"type" ("cell" | "range" | "claim"), "comparable", "group" (claims) and "caveats".

Layout: :mod:`repro.audit.data` (the reference, the input, seed means, verdicts), :mod:`repro.audit.cells` (cells
and the range), :mod:`repro.audit.claims` (claims and gates), :mod:`repro.audit.render` (markdown, JSON, CSV);
this module runs them (:func:`run_audit`, :func:`audit_from_csv`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from repro.audit.cells import _audit_cell, _audit_range
from repro.audit.claims import _audit_claim
from repro.audit.data import aggregate, load_reference, read_metrics, validate_metrics
from repro.audit.render import _atomic_write_text, format_markdown


def run_audit(metrics: pd.DataFrame, config: str | None = None, reference: dict | None = None) -> list[dict]:
    """Audit rows (module docstring) for a tidy metrics frame: every paper cell, the Food101 range, then every
    claim per data group. ``config`` keeps only that config's rows (None: all rows). SAEs imported from
    elsewhere (setting ``external``) are left out: the paper's claims are about methods trained here."""
    ref = reference if reference is not None else load_reference()
    df = validate_metrics(metrics)
    df = df[df["setting"] != "external"]
    if config is not None:
        df = df[df["config"] == config]
    agg = aggregate(df).astype(object)  # one object block: selecting rows of a small frame is ~2x faster
    rows = [_audit_cell(c, agg, ref) for c in ref["cells"]]
    rows += [_audit_range(r, agg, ref) for r in ref.get("ranges") or []]
    rows += [row for claim in ref["claims"] for row in _audit_claim(claim, agg, ref)]
    return rows


def strict_failures(rows: Iterable[dict], paper_setup_only: bool = False) -> list[dict]:
    """The rows that are "not reproduced": comparable cells and ranges, and claims (on any backbone, or only
    on the paper's setup when ``paper_setup_only``). Cells that are not comparable never fail."""
    return [r for r in rows if r["verdict"] == "not reproduced" and (r.get("comparable") or not paper_setup_only)]


def audit_from_csv(csv_path: str | Path, out_md: str | Path, config: str | None = None) -> tuple[list[dict], str]:
    """Read the metrics CSV, audit it (:func:`run_audit`), write the markdown to ``out_md`` atomically and
    return (rows, markdown). ValueError for a missing/unreadable CSV or missing columns."""
    ref = load_reference()
    rows = run_audit(read_metrics(csv_path), config=config, reference=ref)
    meta = {"source": str(csv_path), "config": config, "reference": ref}
    text = format_markdown(rows, meta)
    _atomic_write_text(Path(out_md), text)
    return rows, text
