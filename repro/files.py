"""Atomic file writes: a crash or a killed job never leaves a half-written file under its final name.
Kept free of heavy imports (torch, pandas), so that light commands such as the report rules start fast."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(target: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file in the target's folder, then rename it over the
    target, so that a crash never leaves a half-written file under the final name."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
