"""The paper's tables and their analogues, from the tidy ``metrics.csv`` (``repro.report.aggregate``).

Each table is built by one function from the metrics and written as Markdown and LaTeX (booktabs) by
:func:`render_table`. Numbers are means over seeds (± the standard deviation when there are several);
"–" marks a missing run. Tables (:data:`TABLES`):

- ``table_a``: NMSE, L0 and CE degradation by dictionary size for ReLU, JumpReLU, Gated, TopK, BatchTopK and
  sparsemax attention on the backbone of the size sweep (paper Table A: GPT-2; the embedded default: vision);
- ``table_b``: top-n concept classification, on-1/5/10/50 (official protocol, then held-out), for ReLU,
  attention + ReLU, MLP + sparsemax and sparsemax attention on the vision backbone (paper Table B);
- ``topn_methods``: top-n on and off, both protocols, for ReLU, TopK, BatchTopK and sparsemax, per dataset;
- ``guidance``: TopK/BatchTopK at fixed K and at the K derived from the sparsemax run's L0 ("guided"),
  and sparsemax itself: L0, on-1 (both protocols) and NMSE (paper's Food101 tuning-guidance table);
- ``matched_l0``: each method's NMSE and explained variance at the sparsemax SAE's L0, linearly
  interpolated in log L0 between the two runs of its sweep that bracket it (not reported by the paper);
- ``probing``: sparse probing accuracy of the SAE latents (top 1, 2, 5) and of the raw activations;
- ``external`` (built when the config lists external SAEs): imported SAEs beside ours (:mod:`repro.report.external`).

Runs imported from elsewhere (setting ``external``) appear only in the ``external`` table.

Layout: :mod:`~repro.report.tables.table` (the :class:`Table` and its Markdown/LaTeX rendering),
:mod:`~repro.report.tables.cells` (seed means and cell formatting), :mod:`~repro.report.tables.paper` (the tables
on the paper's methods), :mod:`~repro.report.tables.matched` (``matched_l0`` and :func:`interpolate_at`); this
package holds the registry :data:`TABLES` and :func:`render_table`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from repro import kinds
from repro.report.catalogue import EXTERNAL_TABLE, TABLE_NAMES
from repro.report.tables.cells import read_metrics
from repro.report.tables.matched import _sweep_frame, interpolate_at, matched_l0
from repro.report.tables.paper import guidance, probing, size_sweep_backbone, table_a, table_b, topn_methods
from repro.report.tables.table import Table

# the names other modules and the tests import from here (``kinds``: the tests compare its labels with the figures')
__all__ = ["TABLES", "Table", "_sweep_frame", "interpolate_at", "kinds", "render_table", "size_sweep_backbone"]

_BUILD: dict[str, Callable[[pd.DataFrame], Table]] = {
    "table_a": table_a,
    "table_b": table_b,
    "topn_methods": topn_methods,
    "guidance": guidance,
    "matched_l0": matched_l0,
    "probing": probing,
}


def _external(df: pd.DataFrame) -> Table:
    from repro.report.external import external  # it builds on this package

    return external(df)


# in the catalogue's order (repro.report.catalogue, which the Snakefile reads), then the table built only when
# the config lists external SAEs
TABLES: dict[str, Callable[[pd.DataFrame], Table]] = {name: _BUILD[name] for name in TABLE_NAMES}
TABLES[EXTERNAL_TABLE] = _external


def training_notes(df: pd.DataFrame, table: Table) -> list[str]:
    """Notes marking what a reader must know about the runs behind ``table``: the runs of its backbones
    whose training did not converge (train.json's ``converged`` false: held-out NMSE still improving by
    more than 1 % over the last quarter) and the fewest training tokens any of them saw."""
    train = df[df["eval"] == "train"]
    if train.empty:
        return []
    shown = {b for b in df["backbone"].unique() if any(b in c for c in [table.caption, *map(" ".join, table.rows)])}
    train = train[train["backbone"].isin(shown)] if shown else train
    out = []
    conv = train[train["metric"] == "converged"]
    bad = sorted(conv[conv["value"] == 0]["run"].unique())
    if len(bad):
        from repro.train import CONVERGED_RTOL

        out.append(
            f"Not converged (held-out NMSE still falling > {CONVERGED_RTOL:.0%} over the quarter of the run "
            f"before the lr decay begins, or the last quarter without one): {', '.join(bad)}."
        )
    tokens = train[train["metric"] == "tokens_seen"]["value"].dropna()
    if len(tokens):
        out.append(f"Every SAE behind this table saw at least {int(tokens.min()):,} training tokens.")
    return out


def render_table(name: str, metrics_csv: str | Path, out_stem: str | Path) -> list[Path]:
    """Build table ``name`` from ``metrics_csv``; write ``<out_stem>.md`` and ``.tex`` atomically."""
    from repro.files import atomic_write

    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
    df = read_metrics(metrics_csv)
    table = TABLES[name](df)
    table.notes += training_notes(df, table)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".md", table.markdown()), (".tex", table.latex())):
        path = out_stem.with_suffix(suffix)
        atomic_write(path, lambda p, text=text: Path(p).write_text(text))
        paths.append(path)
    return paths
