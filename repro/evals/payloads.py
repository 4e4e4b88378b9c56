"""What the report shows of an evaluation beyond its numbers, written by the evaluation itself so that the report
stages read evaluation records only: an example's class name and content (its text, or its image as gray
uint8 rows), a text's token strings at given positions, and the run's training curve thinned to a few points.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

#: The most points a thinned training curve keeps (evenly spaced over the steps, first and last included).
MAX_CURVE_POINTS = 100


def content(example, modality: str) -> dict:
    """``{"text", "image"}`` of one example: the text (image None), or the image averaged over its colour
    channels as uint8 rows (text None)."""
    if modality == "text":
        return {"text": str(example), "image": None}
    img = np.asarray(example)
    if img.ndim == 3:
        img = img.mean(-1)
    return {"text": None, "image": img.astype(np.uint8).tolist()}


def describe(data, ids: list[int]) -> list[dict]:
    """Per example id of the LabelledData ``data``: its class name (``class``) and :func:`content`."""
    row = {int(i): r for r, i in enumerate(data.ids)}
    return [
        {"class": data.class_names[data.labels[row[i]]], **content(data.examples[row[i]], data.modality)} for i in ids
    ]


def token_strings(backbone, text: str, positions: list[int]) -> list[str]:
    """The tokens of ``text`` at ``positions`` as the backbone's tokenizer writes them (positions as in the
    activation cache: indices into the backbone's input ids)."""
    ids = backbone.preprocess([text])["input_ids"][0].tolist()
    return backbone.tokenizer.convert_ids_to_tokens([ids[p] for p in positions])


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def training_curve(log_csv: Path, max_points: int = MAX_CURVE_POINTS) -> dict | None:
    """The training log (step, loss, MSE, L0) thinned to at most ``max_points`` evenly spaced rows; None when
    the run has no log (an imported SAE)."""
    if not Path(log_csv).is_file():
        return None
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = np.unique(np.linspace(0, len(rows) - 1, min(max_points, len(rows))).round().astype(int)) if rows else []
    pick = [rows[i] for i in keep]
    return {
        "step": [int(r["step"]) for r in pick],
        **{k: [_finite(float(r[k])) for r in pick] for k in ("loss", "mse", "l0")},
    }


__all__ = ["MAX_CURVE_POINTS", "content", "describe", "token_strings", "training_curve"]
