"""The cache protocol's shared parts (specified in :mod:`repro.cache`'s module docstring): the extraction
spec and its hash, the storage dtypes, the lock, file checksums and the verification of a cache folder, used
by the write side (:mod:`repro.cache_extract`), the reader (:class:`repro.cache.ActivationCache`) and the
pooled head features (:mod:`repro.head_features`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

PROTOCOL = 1
DTYPES = {"float32": (np.float32, 4), "float16": (np.float16, 2), "bfloat16": (np.uint16, 2)}
METADATA = "metadata.json"
PROGRESS = "progress.json"


class CacheError(ValueError):
    """A cache that is missing, incomplete, corrupted or does not match its spec."""


# ----- what extraction needs from a backbone and a dataset (see repro.backbones / repro.data) -----
class BackboneLike(Protocol):
    name: str

    def spec(self) -> dict: ...
    def d_model(self, hook: str) -> int: ...
    def preprocess(self, examples: Any) -> dict[str, Tensor]: ...
    def activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]: ...  # + filtered=False

    # when the backbone carries an active ``token_filter`` (repro.backbones.base.Backbone does)


class DatasetLike(Protocol):
    examples: Sequence
    labels: np.ndarray
    ids: np.ndarray

    def spec(self) -> dict: ...
    def __len__(self) -> int: ...


# ----- spec and hashing ------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the byte-stable form that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def spec_hash(spec: dict) -> str:
    """sha256 hex digest of the canonical JSON of ``spec``."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def extraction_spec(
    backbone: BackboneLike,
    dataset: DatasetLike,
    hook: str,
    *,
    dtype: str = "float32",
    batch_size: int = 32,
    shard_tokens: int = 1 << 18,
) -> dict:
    """Everything that determines the bytes of a cache (see the module docstring)."""
    if dtype not in DTYPES:
        raise ValueError(f"invalid cache dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    if batch_size < 1 or shard_tokens < 1:
        raise ValueError("batch_size and shard_tokens must be positive")
    spec = {
        "protocol": PROTOCOL,
        "backbone": backbone.spec(),
        "hook": hook,
        "dataset": dataset.spec(),
        "token_selection": "backbone-mask",
        "dtype": dtype,
        "batch_size": batch_size,
        "shard_tokens": shard_tokens,
    }
    token_filter = getattr(backbone, "token_filter", None)
    if token_filter is not None and token_filter.active:  # absent otherwise: unfiltered caches keep their hash
        spec["token_filter"] = token_filter.spec()
    if callable(getattr(backbone, "example_lengths", None)):  # text: batches formed from length-sorted windows
        spec["length_sorted_window"] = batch_size * LENGTH_SORT_BATCHES
    return spec


#: Text extraction sorts each window of this many batches by token count before batching (right padding
#: to the longest text then wastes little: 2.3x the tokens per second for SmolLM2 on wordnet glosses) and
#: writes the window back in dataset order; recorded in the spec, so such caches have their own hash.
LENGTH_SORT_BATCHES = 16


def to_storage(acts: Tensor, dtype: str) -> np.ndarray:
    """(tokens, d) activations in the storage dtype (bfloat16 as its uint16 bit pattern)."""
    acts = acts.detach().cpu()
    if dtype == "bfloat16":
        return acts.to(torch.bfloat16).view(torch.uint16).numpy()
    return acts.to(getattr(torch, dtype)).numpy()


def from_storage(array: np.ndarray, dtype: str) -> Tensor:
    """float32 tensor from stored rows (a copy: memory-mapped rows are read-only)."""
    t = torch.from_numpy(np.array(array, copy=True))
    if dtype == "bfloat16":
        t = t.view(torch.bfloat16)
    return t.to(torch.float32)


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) on ``lock_path`` for the duration of the block; released
    by the kernel if the process dies."""
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


# ----- verification ----------------------------------------------------------------------------------
def spec_hash_problems(meta: dict, path: Path) -> list[str]:
    """[] when the metadata's spec hashes to its recorded ``spec_hash`` and to the folder's name, else the problem
    (for every content-addressed folder of the protocol: activation caches, pooled features)."""
    actual = spec_hash(meta.get("spec", {}))
    if actual == meta.get("spec_hash") == path.name:
        return []
    return [
        f"spec hash mismatch: the spec hashes to {actual[:16]}…, metadata says "
        f"{str(meta.get('spec_hash'))[:16]}…, folder is {path.name[:16]}…"
    ]


def folder_metadata(path: Path, missing: str) -> tuple[dict | None, list[str]]:
    """(metadata, problems) of a content-addressed folder of the protocol (activation cache, pooled features):
    metadata None and the problem when ``metadata.json`` is missing (``missing`` says what that means) or
    unreadable; else the metadata and its :func:`spec_hash_problems`."""
    try:
        meta = json.loads((path / METADATA).read_text())
    except FileNotFoundError:
        return None, [f"{path}: no {METADATA} ({missing})"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [f"{path / METADATA}: unreadable ({e})"]
    return meta, spec_hash_problems(meta, path)


def verify(path: str | os.PathLike, *, checksums: bool = True) -> list[str]:
    """Every problem found in the cache folder (empty = intact): missing or unreadable metadata, a spec
    whose hash is not the folder name or the recorded hash, missing shards, shards whose size does not
    match their token count, and (``checksums``) shards whose sha256 differs from the recorded one."""
    path = Path(path)
    meta, problems = folder_metadata(path, "not a cache, or an incomplete extraction")
    if meta is None:
        return problems
    dtype = meta.get("dtype")
    if dtype not in DTYPES:
        return problems + [f"unknown dtype {dtype!r}"]
    width = DTYPES[dtype][1] * int(meta["d_model"])
    total = 0
    for s in meta["shards"]:
        for key, row_bytes in (("acts", width), ("index", 24)):
            f = path / "shards" / s[key]
            if not f.is_file():
                problems.append(f"missing shard file {f.name}")
                continue
            if f.stat().st_size != s["n_tokens"] * row_bytes:
                problems.append(
                    f"{f.name}: {f.stat().st_size} bytes, expected {s['n_tokens'] * row_bytes} (truncated or wrong)"
                )
            elif checksums and sha256_file(f) != s[f"{key}_sha256"]:
                problems.append(f"{f.name}: checksum mismatch (corrupted)")
        total += s["n_tokens"]
    if total != meta["n_tokens"]:
        problems.append(f"shards hold {total} tokens, metadata says {meta['n_tokens']}")
    return problems


def looks_like_cache(path: Path) -> bool:
    """Whether a folder is (or was meant to be) a cache, complete or partial: named by a spec hash (or its
    ``.<hash>.partial`` form), or holding a cache's metadata or shards. Only such a folder may be deleted
    and re-extracted; any other folder (``/tmp``, a run folder) is simply the wrong argument."""
    name = path.name.removeprefix(".").removesuffix(".partial")
    is_hash = len(name) == 64 and all(c in "0123456789abcdef" for c in name)
    return is_hash or (path / METADATA).exists() or (path / PROGRESS).exists() or (path / "shards").is_dir()
