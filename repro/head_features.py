"""Pooled head features: the unmodified backbone's final pooled features of every example of a dataset split,
kept in the cache protocol (:mod:`repro.cache`) beside the activation caches, for the top-n evaluation's head.

Identity. A features folder is named by ``spec_hash`` of its spec (:func:`features_spec`): ``what`` ("pooled
final features"), ``backbone`` (the backbone's ``spec()``) and ``dataset`` (the dataset's ``spec()``): what
determines the values, as for an activation cache. Whether they were computed from the split's activation cache
through the layers after the hook or by a full forward pass is recorded (``computed_from``), not hashed: the
two agree to 5.4e-6 (``benchmarks/head_features.py``).

On-disk layout, under a cache root: ``features/<spec_hash>/metadata.json`` (``spec``, ``spec_hash``,
``shape``, ``dtype`` float32, ``sha256`` of the array file, ``computed_from``, provenance) and
``features/<spec_hash>/features.npy`` (NumPy ``.npy``, shape (examples, width), dataset order);
``features/.<spec_hash>.partial/`` while it is written and ``features/.<spec_hash>.lock``. A workflow names a
folder with a pointer file (``repro features --pointer``): {"features": absolute folder, "spec_hash"}.

Writing (:func:`write`) takes the lock, computes into the partial folder, writes ``metadata.json`` last and
renames the folder into place, so a folder named by a hash is complete; a complete one is reused.
Validation (:func:`verify`, run by :func:`read`): the metadata parses, the spec hashes to the recorded hash and
the folder's name, the array file exists and parses with the recorded shape and dtype, and its sha256 equals the
recorded one. A folder that fails is refused with every problem listed (:class:`repro.cache.CacheError`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from repro.cache_protocol import CacheError, exclusive, folder_metadata, sha256_file, spec_hash

WHAT = "pooled final features"
ARRAY = "features.npy"
METADATA = "metadata.json"
FOLDER = "features"


def features_spec(backbone, dataset) -> dict:
    """The identity of the pooled features of ``dataset`` under ``backbone`` (module docstring)."""
    return {"what": WHAT, "backbone": backbone.spec(), "dataset": dataset.spec()}


def is_features_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds pooled features (its metadata names them), rather than an activation cache."""
    try:
        meta = json.loads((Path(path) / METADATA).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("spec"), dict) and meta["spec"].get("what") == WHAT


def verify(path: str | os.PathLike) -> list[str]:
    """Every problem found in the features folder (empty = intact; module docstring)."""
    path = Path(path)
    meta, problems = folder_metadata(path, "not a features folder, or an incomplete one")
    if meta is None:
        return problems
    array = path / ARRAY
    if not array.is_file():
        return problems + [f"missing {ARRAY}"]
    try:
        values = np.load(array, mmap_mode="r")
    except (OSError, ValueError) as e:
        return problems + [f"{ARRAY}: unreadable ({e}; truncated or not an .npy file)"]
    if list(values.shape) != list(meta.get("shape", [])) or str(values.dtype) != meta.get("dtype"):
        problems.append(
            f"{ARRAY}: shape {values.shape} {values.dtype}, metadata says {meta.get('shape')} {meta.get('dtype')}"
        )
    elif sha256_file(array) != meta.get("sha256"):
        problems.append(f"{ARRAY}: checksum mismatch (corrupted)")
    return problems


def read(path: str | os.PathLike, spec: dict | None = None) -> Tensor:
    """The verified features of the folder ``path`` (or of a pointer file naming it) as a float32 tensor;
    with ``spec``, also checked to be those features (:class:`repro.cache.CacheError` otherwise)."""
    path = folder_of(path)
    problems = verify(path)
    if not problems and spec is not None and json.loads((path / METADATA).read_text())["spec"] != _plain(spec):
        problems.append(f"these are not the features asked for: they are not of spec {spec_hash(spec)[:16]}…")
    if problems:
        raise CacheError(
            f"pooled features {path} are not usable:\n  - "
            + "\n  - ".join(problems)
            + "\nDelete the folder and run `repro features` (or the evaluation) again to rebuild it."
        )
    return torch.from_numpy(np.load(path / ARRAY))


def folder_of(path: str | os.PathLike) -> Path:
    """A features folder, or the one a pointer file (``repro features --pointer``) names."""
    from repro.files import pointed_folder

    return pointed_folder(path, "features", CacheError)


def _plain(spec: dict) -> dict:
    """``spec`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(spec))


def write(root: str | os.PathLike, spec: dict, compute: Callable[[], tuple[Tensor, str]]) -> Path:
    """The folder of ``spec``'s features under ``<root>/features``: reused when complete and intact, else
    ``compute()`` → (features (N, D), how they were computed) written as the module docstring says."""
    from repro.provenance import provenance

    digest = spec_hash(spec)
    folder = Path(root) / FOLDER
    final = folder / digest
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / f".{digest}.lock"):
        if (final / METADATA).is_file():
            if not verify(final):
                return final
            shutil.rmtree(final)  # a damaged folder is recomputed
        features, computed_from = compute()
        values = features.detach().cpu().float().numpy()
        partial = folder / f".{digest}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        np.save(partial / ARRAY, values)
        metadata = {
            "spec": _plain(spec),
            "spec_hash": digest,
            "shape": list(values.shape),
            "dtype": str(values.dtype),
            "sha256": sha256_file(partial / ARRAY),
            "computed_from": computed_from,
            "provenance": provenance(),
        }
        (partial / METADATA).write_text(json.dumps(metadata, indent=1))
        os.replace(partial, final)
    return final


__all__ = ["features_spec", "folder_of", "is_features_folder", "read", "verify", "write"]
