"""The audit written out: the markdown report (:func:`format_markdown`), and JSON or CSV (:func:`write_audit`)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from repro.audit.data import VERDICTS, load_reference

TABLE_COLUMNS = ("claim or cell", "paper", "ours", "delta", "verdict", "reason")


def _cell_text(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        text = "–"
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        text = f"{v:+.4g}" if signed else f"{v:.4g}"
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def format_markdown(rows: list[dict], meta: dict | None = None) -> str:
    """The audit as markdown: a header (data, sources, caveats, tolerances, verdicts, counts), then one table
    row per audit row (claim or cell | paper | ours | delta | verdict | reason). ``meta`` keys (all
    optional): ``source`` (the CSV), ``config``, ``reference`` (default :func:`load_reference`)."""
    meta = meta or {}
    ref = meta.get("reference") or load_reference()
    paper = ref.get("paper", {})
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    pn = ref["sources"].get("PN", {})
    lines = [
        f'# Paper audit: "{paper.get("title", "")}" (arXiv {paper.get("arxiv", "")})',
        "",
        f"Data: `{meta.get('source', '(in-memory frame)')}`; config: "
        f"{meta['config'] if meta.get('config') is not None else 'all configs present'}. "
        "Ours = mean over seeds (n_seeds per row).",
        "",
        "## Sources",
        "",
        f"Every paper number is **second-hand**: from the {pn.get('name', '[PN] summary')} [PN] "
        f"({pn.get('url', '')}; markdown: {pn.get('markdown', '')}), **not checked against the paper's PDF**. "
        "A mismatch may be a transcription error of the summary.",
        "",
        "## Caveats",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in ref["caveats"].items()]
    lines += ["", "## Tolerances", ""]
    for name, t in ref["tolerances"].items():
        rel, ab = float(t.get("relative") or 0), float(t.get("absolute") or 0)
        rule = f"|ours − paper| ≤ max({rel:.0%} · |paper|, {ab:g})" if rel else f"|ours − paper| ≤ {ab:g}"
        lines.append(f"- **{name}**: {rule}. {t.get('why', '')}")
    lines += [
        "",
        "## Verdicts",
        "",
        "- *reproduced* / *not reproduced*: a cell on the paper's backbone and dataset within / outside its "
        "tolerance; a relation (claim, Food101 range) that holds / fails on our numbers (delta = worst-case "
        "margin, > 0 when it holds). Claims are evaluated on every backbone present, the offline analogue "
        "included; the reason says whether the group is the paper's setup.",
        "- *inconclusive*: a relation computed on runs that fail a sanity gate: a run not converged, a "
        "degenerate top-n setup (full-SAE accuracy more than 10 points below no-SAE, or no-SAE near chance), "
        "or spreads of the compared values that overlap (mean ± std over seeds; with one seed the bootstrap "
        "interval over examples). The reason names the failed gate; the comparison is still shown.",
        "- *not comparable*: our data lacks the paper's backbone/dataset; ours shows the closest analogue.",
        "- *no data*: the run or metric is missing.",
        "",
        "Counts: " + ", ".join(f"{v} {counts[v]}" for v in VERDICTS) + ".",
        "",
        "## Results",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    for r in rows:
        cells = [
            _cell_text(r["item"]),
            _cell_text(r["paper"]),
            _cell_text(r["ours"]),
            _cell_text(r["delta"], signed=True),
            r["verdict"],
            _cell_text(r["reason"] + (f" (n_seeds {r['n_seeds']})" if r.get("n_seeds") else "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_audit(rows: list[dict], path: str | Path, meta: dict | None = None) -> Path:
    """Write the audit atomically (temporary file in the same folder, then ``os.replace``): ``.json`` →
    {"meta", "rows"}, ``.csv`` → one line per row, anything else → :func:`format_markdown`. Returns the path."""
    path = Path(path)
    if path.suffix == ".json":
        plain = {k: v for k, v in (meta or {}).items() if k != "reference"}
        text = json.dumps({"meta": plain, "rows": rows}, indent=1, ensure_ascii=False, default=str) + "\n"
    elif path.suffix == ".csv":
        flat = [{k: ";".join(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
        text = pd.DataFrame(flat).to_csv(index=False)
    else:
        text = format_markdown(rows, meta)
    _atomic_write_text(path, text)
    return path
