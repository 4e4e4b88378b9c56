"""File helpers: atomic writes (a crash or a killed job never leaves a half-written file under its final name)
and a checked JSON-object reader. Kept free of heavy imports (torch, pandas), so that light commands such as the
report rules start fast."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def read_json_object(path: str | os.PathLike, error: type[Exception] = ValueError) -> dict:
    """The JSON object in ``path``; ``error`` naming the file when it is not valid JSON (truncated, not UTF-8)
    or holds something other than an object. The caller checks that the file exists."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: unreadable ({e})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object")
    return value


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


def write_pointer(pointer: str | os.PathLike, key: str, folder: str | os.PathLike) -> None:
    """A pointer file (a workflow's DAG node for a content-addressed folder): ``{key: absolute folder,
    "spec_hash": the folder's name}``, written atomically."""
    folder = Path(folder)
    record = json.dumps({key: str(folder.resolve()), "spec_hash": folder.name})
    Path(pointer).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(pointer), lambda p: Path(p).write_text(record))


def pointed_folder(value: str | os.PathLike, key: str, error: type[Exception] = ValueError) -> Path:
    """A folder, or the folder that the pointer file ``value`` (:func:`write_pointer`, a ``.json`` file) names
    under ``key``; ``error`` when the pointer names none."""
    path = Path(value)
    if path.is_file() and path.suffix == ".json":
        record = read_json_object(path, error)
        if not isinstance(record.get(key), str):
            raise error(f"{path}: not a pointer to a {key} folder (no {key!r} entry)")
        return Path(record[key])
    return path
