"""The run record, ``<run>/train.json``: what training (``repro train``) or an import (``repro import``) hands every
later stage (evaluation, guidance, export, aggregation, figure data), with one writer and one reader.

Keys (version :data:`VERSION`, recorded as ``record_version``): ``kind`` and ``sae_config`` (the SAE as saved in
``sae/``); ``train_config`` (its ``seed`` is the run's seed; null for an imported SAE); ``training`` (the
convergence record: ``tokens_seen``, ``converged``, ``final_validation``, ...; empty for an imported SAE);
``data`` (``spec`` and ``spec_hash`` of the activation cache the SAE reads, the ``cache`` folder when it exists,
``labels`` from ``--label`` for aggregation, ``train_tokens``, ``batch_size``); ``provenance``; and, for
an imported SAE, ``imported`` (source folder, format, names, weights digest). A record without
``record_version`` was written before it existed and reads as version 1.

The record is written last and atomically, so a run folder with a ``train.json`` is a finished run.
"""

from __future__ import annotations

import json
from pathlib import Path

from repro.files import atomic_write, read_json_object

FILE = "train.json"
VERSION = 1


def write(run_dir: str | Path, record: dict) -> Path:
    """Write ``record`` (with ``record_version``) as ``<run_dir>/train.json`` atomically; returns its path."""
    path = Path(run_dir) / FILE
    text = json.dumps({"record_version": VERSION, **record}, indent=2)
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path


def exists(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run (its record)."""
    return (Path(run_dir) / FILE).is_file()


def read(run_dir: str | Path) -> dict:
    """The record of the finished run ``run_dir``: FileNotFoundError when there is none (an unfinished or
    missing run), ValueError when it is unreadable or of a newer version than this code reads."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a finished run: {FILE} is missing "
            "(train it with `repro train`, or resume it with --resume)"
        )
    record = read_json_object(path)
    version = record.get("record_version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(f"{path}: record_version {version!r} is newer than this version of repro reads ({VERSION})")
    return record


def labels(run_dir: str | Path) -> dict:
    """The aggregation labels of a run (``data.labels``; {} when the run has no record)."""
    return (read(run_dir).get("data") or {}).get("labels", {}) if exists(run_dir) else {}


__all__ = ["FILE", "VERSION", "exists", "labels", "read", "write"]
