"""The tidy metrics CSV (``results/metrics.csv``): the contract between the aggregation and every report (tables,
figures, the audit), with its columns declared once, one writer and one reader.

One row per (run, evaluation, metric); columns :data:`COLUMNS`. ``value`` is written with ``repr`` (every digit of
the float) and left empty for NaN. :func:`read` parses a file and :func:`normalise` (also for frames built in
memory) checks and normalises it: every column present (ValueError naming the missing ones and the source);
names stripped; ``backbone`` and ``dataset`` lower-cased; an empty ``config`` is ""; an empty ``setting`` is
"default"; ``d_sae``, ``expansion``, ``seed`` and ``value`` numeric (unparsable → NaN); ``expansion`` rounded to 4
decimals. Which metrics each evaluation writes is listed in :mod:`repro.report.aggregate`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

COLUMNS = (
    "config",
    "run",
    "backbone",
    "dataset",
    "hook",
    "kind",
    "d_sae",
    "expansion",
    "seed",
    "setting",
    "eval",
    "metric",
    "value",
)
TEXT_COLUMNS = ("config", "run", "backbone", "dataset", "hook", "kind", "setting", "eval", "metric")
NUMERIC_COLUMNS = ("d_sae", "expansion", "seed", "value")


class MetricsFileMissing(FileNotFoundError, ValueError):
    """No metrics file at the path (a FileNotFoundError, and a ValueError for callers reporting bad input)."""


def write(rows: Iterable[dict], path: str | Path) -> int:
    """Write ``rows`` (dicts with every column of :data:`COLUMNS`) to ``path`` atomically; returns the count."""
    from repro.files import atomic_write

    rows = list(rows)

    def write_file(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in rows:
                missing = r["value"] is None or math.isnan(r["value"])
                w.writerow({**r, "value": "" if missing else repr(r["value"])})

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), write_file)
    return len(rows)


def normalise(metrics, source: str = "metrics"):
    """A checked, normalised copy of a tidy metrics frame (module docstring)."""
    import pandas as pd

    missing = [c for c in COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    df = metrics.loc[:, list(COLUMNS)].copy()
    for c in TEXT_COLUMNS:
        df[c] = df[c].astype("string").fillna("").str.strip().astype(object)
    df.loc[df["setting"] == "", "setting"] = "default"
    for c in ("backbone", "dataset"):
        df[c] = df[c].str.lower()
    for c in NUMERIC_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["expansion"] = df["expansion"].round(4)
    return df


def read(path: str | Path):
    """The tidy metrics CSV at ``path`` as a normalised frame; a missing file raises :class:`MetricsFileMissing`,
    an empty or unreadable one or missing columns ValueError, each naming the file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MetricsFileMissing(f"metrics file not found: {path} (run the workflow or `repro aggregate` first)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read metrics file {path}: {e}") from None
    return normalise(df, source=str(path))


__all__ = ["COLUMNS", "MetricsFileMissing", "normalise", "read", "write"]
