"""Provenance recorded with every result (git commit, package versions, Python and platform), and the
conversion of results to plain JSON values."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "safetensors", "sae-repro")


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the git work tree holding ``path`` (default: this package), with ``-dirty`` when
    tracked files are modified; None outside a work tree or without git."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance() -> dict:
    """A JSON-serialisable record of where and with what a result was computed: git commit, package
    versions, Python, platform, host, and the SLURM job id when computed inside a SLURM job (else None)."""
    return {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def to_plain(obj: Any, *, nan_as_none: bool = False) -> Any:
    """``obj`` with tensors, arrays and numpy scalars turned into plain Python (dict keys as str, tuples
    as lists); with ``nan_as_none``, non-finite floats become None (strict JSON), else they stay floats."""
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {str(k): to_plain(v, nan_as_none=nan_as_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, nan_as_none=nan_as_none) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return to_plain(obj.tolist(), nan_as_none=nan_as_none)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if nan_as_none and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
