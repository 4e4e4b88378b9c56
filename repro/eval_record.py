"""The evaluation record, ``<run>/eval/<eval>.json``: what ``repro evaluate`` hands the report stages (aggregation,
figure data), with one writer and one reader, so that those stages read evaluation records only (never a run's
``train.json``, its training log, a dataset or a backbone).

Keys (version :data:`VERSION`, recorded as ``record_version``): ``eval`` (its name in
:mod:`repro.evals.registry`); ``run`` (the run folder); ``kind``, ``sae_config``, ``train_config`` and ``seed``
(the run's SAE and training, from its run record); ``labels`` (the run's aggregation labels: config, run id,
setting); ``training`` (the run record's convergence record: ``tokens_seen``, ``converged``,
``final_validation``, ...; {} for an imported SAE) and ``train_tokens`` (distinct training tokens of its cache);
``data`` (backbone, hook, training cache and, per split read, the dataset and its cache); ``settings`` (the
evaluation settings); ``results`` (what the evaluation computed, including what the figures show: example
payloads, token strings, the thinned training curve); ``seconds``; ``provenance``.

A record without ``record_version`` was written before version 2 and lacks ``labels``, ``training`` and
``train_tokens``: :func:`read` fills them from the run's record when the run folder is still there (else labels
{} and training None: no training rows), so that old evaluations still aggregate as before; their ``results``
lack the figures' payloads, so the figure data needs them evaluated again.
"""

from __future__ import annotations

import json
from pathlib import Path

from repro import run_record
from repro.files import atomic_write, read_json_object

VERSION = 2
RUN_FIELDS = ("labels", "training", "train_tokens")


def run_fields(summary: dict) -> dict:
    """The fields an evaluation record carries of its run, from the run record ``summary``."""
    data = summary.get("data") or {}
    return {
        "labels": data.get("labels", {}),
        "training": summary.get("training") or {},
        "train_tokens": data.get("train_tokens"),
    }


def write(path: str | Path, record: dict) -> Path:
    """Write ``record`` (with ``record_version``; NaN written as null) as JSON at ``path`` atomically."""
    from repro.provenance import to_plain

    path = Path(path)
    text = json.dumps(to_plain({"record_version": VERSION, **record}, nan_as_none=True), indent=1, allow_nan=False)
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


def read(path: str | Path) -> dict:
    """The evaluation record at ``path`` (ValueError when unreadable or of a newer version); a version-1 record
    gets its run's fields from the run record (module docstring)."""
    record = read_json_object(path)
    version = record.get("record_version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{path}: record_version {version!r} is newer than this version of repro reads ({VERSION})")
    if version == 1:
        if run_record.exists(record["run"]):
            record |= run_fields(run_record.read(record["run"]))
        else:  # the run is gone: its labels are unknown and it has no training rows
            record |= {"labels": {}, "training": None, "train_tokens": None}
    return record


__all__ = ["RUN_FIELDS", "VERSION", "read", "run_fields", "write"]
