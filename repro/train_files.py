"""The run folder's files besides the checkpoint (the layout is in the module docstring of
:mod:`repro.train`): ``log.csv`` cut back to a checkpoint's step on resume (:func:`_truncate_log`), the
final SAE folder and ``train.json`` written once the run completes (:func:`_publish_final`), and the
temporaries a killed run may leave (:func:`_remove_stale_temporaries`)."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from repro import run_record
from repro.files import atomic_write
from repro.provenance import provenance
from repro.sae.base import SAE
from repro.train_config import TrainConfig

CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = "sae"
LOG_FILE = "log.csv"
SUMMARY_FILE = run_record.FILE  # the run record (repro/run_record.py)


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete temporary files and folders that a killed run may have left while writing."""
    for pattern in (f".{CHECKPOINT_DIR}.tmp*", f".{FINAL_DIR}.tmp*", f".{LOG_FILE}.*.tmp", f".{SUMMARY_FILE}.*.tmp"):
        for path in run_dir.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _last_logged_parts(path: Path) -> dict[str, float]:
    """The loss parts of the last row of ``log.csv`` (for a resumed run that had already finished)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if k not in ("step", "lr")} if rows else {}


def _truncate_log(path: Path, step: int) -> None:
    """Keep the header and the rows of steps <= ``step`` (rows after the checkpoint are redone)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    # A row cut short by a kill (fewer fields than the header) may hold a truncated step number: drop it.
    kept = rows[:1] + [r for r in rows[1:] if len(r) == len(rows[0]) and int(r[0]) <= step]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)

    atomic_write(path, write)


def _publish_final(
    run_dir: Path,
    sae: SAE,
    cfg: TrainConfig,
    parts: dict[str, float],
    seconds: float,
    data: dict | None = None,
    resumed_from: int = 0,
    record: dict | None = None,
) -> Path:
    """Write the final SAE folder and ``train.json`` (atomically, after everything else succeeded);
    ``resumed_from`` is the checkpoint step this session started from (0: a fresh run); ``record`` the
    training record (:func:`training_record`)."""
    final = run_dir / FINAL_DIR
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=f".{FINAL_DIR}.tmp"))
    try:
        sae.save(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        "kind": sae.kind,
        "sae_config": dataclasses.asdict(sae.cfg),
        "train_config": dataclasses.asdict(cfg),
        "last_step": parts,
        "seconds_this_session": seconds,
        "resumed_from_step": resumed_from,
        "training": record or {},
        "data": data,
        "provenance": provenance(),
    }
    run_record.write(run_dir, summary)
    return final
