"""The write side of the activation cache (:mod:`repro.cache`, whose module docstring is the protocol):
:func:`extract` under an exclusive lock, whole-example shards written and checksummed one by one, the progress
of an interrupted extraction and its resumption, and the text windows sorted by length."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from repro.backbones.token_filter import TokenFilter, exclusion_stats
from repro.cache_protocol import (
    METADATA,
    PROGRESS,
    BackboneLike,
    CacheError,
    DatasetLike,
    exclusive,
    extraction_spec,
    sha256_file,
    spec_hash,
    to_storage,
)
from repro.provenance import provenance


def _window_batches(backbone, examples, lo: int, hi: int, batch_size: int, by_length: bool) -> list[np.ndarray]:
    """Dataset offsets of the batches covering examples [lo, hi): in order, or sorted by token count."""
    offsets = np.arange(lo, hi)
    if by_length:
        lengths = np.asarray(backbone.example_lengths(_take(examples, offsets)))
        offsets = offsets[np.argsort(lengths, kind="stable")]
    return [offsets[i : i + batch_size] for i in range(0, len(offsets), batch_size)]


def _take(examples, offsets: np.ndarray):
    """examples[offsets] for a list or an array (a contiguous range as a slice, as before sorting existed)."""
    if len(offsets) and offsets[-1] - offsets[0] + 1 == len(offsets) and (np.diff(offsets) == 1).all():
        return examples[int(offsets[0]) : int(offsets[-1]) + 1]
    if isinstance(examples, np.ndarray):
        return examples[offsets]
    return [examples[int(i)] for i in offsets]


# ----- writing ---------------------------------------------------------------------------------------
class _ShardWriter:
    """Accumulates token rows and writes whole-example shards (file, then rename) with checksums."""

    def __init__(self, folder: Path, dtype: str):
        self.folder, self.dtype = folder, dtype
        self.acts: list[np.ndarray] = []
        self.index: list[np.ndarray] = []
        self.n_tokens = 0

    def add(self, acts: Tensor, index: np.ndarray) -> None:
        self.acts.append(to_storage(acts, self.dtype))
        self.index.append(index.astype(np.int64))
        self.n_tokens += len(index)

    def flush(self, number: int) -> dict:
        """Write the accumulated rows as shard ``number`` (chunk by chunk, no concatenated copy), fsync,
        rename into place; return its record with the sha256 of each file."""
        record = {"acts": f"acts_{number:05d}.bin", "index": f"index_{number:05d}.bin", "n_tokens": self.n_tokens}
        for key, chunks in (("acts", self.acts), ("index", self.index)):
            digest = hashlib.sha256()
            tmp = self.folder / f".{record[key]}.tmp"
            with open(tmp, "wb") as f:
                for chunk in chunks:
                    data = memoryview(np.ascontiguousarray(chunk.astype(chunk.dtype.newbyteorder("<"), copy=False)))
                    f.write(data)
                    digest.update(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.folder / record[key])
            record[f"{key}_sha256"] = digest.hexdigest()
        self.acts, self.index, self.n_tokens = [], [], 0
        return record


def extract(
    backbone: BackboneLike,
    dataset: DatasetLike,
    hook: str,
    root: str | os.PathLike,
    *,
    dtype: str = "float32",
    batch_size: int = 32,
    shard_tokens: int = 1 << 18,
    progress: bool = True,
) -> Path:
    """Extract ``hook`` activations of every example of ``dataset`` into the cache folder for this spec
    under ``root`` (returned). An existing complete cache is reused; an interrupted one resumes."""
    modalities = (getattr(backbone, "modality", None), getattr(dataset, "modality", None))
    if None not in modalities and modalities[0] != modalities[1]:
        raise ValueError(
            f"backbone {backbone.name} takes {modalities[0]} inputs but the dataset holds {modalities[1]} examples"
        )
    spec = extraction_spec(backbone, dataset, hook, dtype=dtype, batch_size=batch_size, shard_tokens=shard_tokens)
    digest = spec_hash(spec)
    root = Path(root)
    final = root / digest
    if (final / METADATA).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with exclusive(root / f".{digest}.lock"):  # concurrent extractions of one spec: one works, the others wait
        if (final / METADATA).is_file():
            return final
        return _extract_unlocked(backbone, dataset, hook, spec, digest, root, dtype, progress)


def _extract_unlocked(
    backbone: BackboneLike,
    dataset: DatasetLike,
    hook: str,
    spec: dict,
    digest: str,
    root: Path,
    dtype: str,
    progress: bool,
) -> Path:
    final = root / digest
    shard_tokens = spec["shard_tokens"]
    batch_size = spec["batch_size"]
    partial = root / f".{digest}.partial"
    (partial / "shards").mkdir(parents=True, exist_ok=True)
    state = _load_progress(partial, spec)
    writer = _ShardWriter(partial / "shards", dtype)
    token_filter = getattr(backbone, "token_filter", None) or TokenFilter()
    d_model = backbone.d_model(hook)
    n = len(dataset)
    began, tokens_done = time.perf_counter(), 0
    bar = tqdm(
        total=n, initial=state["examples_done"], disable=not progress, unit="ex", desc=f"extract {backbone.name}:{hook}"
    )
    window = spec.get("length_sorted_window") or batch_size
    try:
        start = state["examples_done"]
        for wlo in range(start, n, window):
            whi = min(n, wlo + window)
            pieces = []
            for batch in _window_batches(backbone, dataset.examples, wlo, whi, batch_size, window > batch_size):
                inputs = backbone.preprocess(_take(dataset.examples, batch))
                if token_filter.active:
                    acts, counted = backbone.activations(inputs, hook, filtered=False)
                    mask = token_filter.apply(acts, counted)
                else:  # any object with activations(inputs, hook) will do
                    acts, counted = backbone.activations(inputs, hook)
                    mask = counted
                for key, value in exclusion_stats(acts, counted, mask).items():
                    state["tokens"][key] = state["tokens"].get(key, 0) + value
                if acts.shape[-1] != d_model:
                    raise CacheError(f"{backbone.name}:{hook} returned width {acts.shape[-1]}, expected {d_model}")
                rows, positions = torch.nonzero(mask, as_tuple=True)
                where = batch[rows.numpy()]
                pieces.append(
                    (
                        where,
                        acts[rows, positions],
                        np.stack([dataset.ids[where], positions.numpy(), dataset.labels[where]], axis=1),
                    )
                )
                tokens_done += len(where)
                bar.update(len(batch))
                bar.set_postfix(tok_per_s=f"{tokens_done / max(time.perf_counter() - began, 1e-9):.0f}")
            if len(pieces) == 1:
                writer.add(pieces[0][1], pieces[0][2])
            elif pieces:  # back to dataset order: by example, each example's tokens already in position order
                order = np.argsort(np.concatenate([p[0] for p in pieces]), kind="stable")
                writer.add(
                    torch.cat([p[1] for p in pieces])[torch.from_numpy(order)],
                    np.concatenate([p[2] for p in pieces])[order],
                )
            if writer.n_tokens >= shard_tokens or whi == n:
                record = writer.flush(len(state["shards"]))
                state["shards"].append(record)
                state["examples_done"] = whi
                _save_progress(partial, state)
    finally:
        bar.close()
    if n == 0 and not state["shards"]:  # the loop flushes at the last batch; an empty dataset gets one empty shard
        state["shards"].append(writer.flush(0))
    t = state["tokens"]
    selection = {
        "counted_tokens": t.get("counted_tokens", 0),
        "dropped_tokens": t.get("dropped_tokens", 0),
        "dropped_share": t["dropped_tokens"] / t["counted_tokens"] if t.get("counted_tokens") else 0.0,
        "dropped_energy_share": t["dropped_energy"] / t["counted_energy"] if t.get("counted_energy") else 0.0,
        "rule": spec.get("token_filter"),
    }
    metadata = {
        "spec": spec,
        "spec_hash": digest,
        "d_model": d_model,
        "dtype": dtype,
        "n_tokens": sum(s["n_tokens"] for s in state["shards"]),
        "n_examples": n,
        "token_selection": selection,
        "shards": state["shards"],
        "provenance": provenance(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (partial / METADATA).write_text(json.dumps(metadata, indent=1))
    (partial / PROGRESS).unlink(missing_ok=True)
    if final.exists():  # another process finished the same spec first
        shutil.rmtree(partial)
    else:
        os.replace(partial, final)
    return final


def _load_progress(partial: Path, spec: dict) -> dict:
    """Progress of an interrupted extraction (its finished shards are checked), or a fresh state."""
    path = partial / PROGRESS
    if path.is_file():
        state = json.loads(path.read_text())
        if state.get("spec") == spec and all(_shard_intact(partial / "shards", s) for s in state["shards"]):
            state.setdefault("tokens", {})
            return state
    shutil.rmtree(partial / "shards", ignore_errors=True)
    (partial / "shards").mkdir(parents=True)
    return {"spec": spec, "examples_done": 0, "shards": [], "tokens": {}}


def _save_progress(partial: Path, state: dict) -> None:
    tmp = partial / f".{PROGRESS}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, partial / PROGRESS)


def _shard_intact(folder: Path, record: dict) -> bool:
    return all(
        (folder / record[k]).is_file() and sha256_file(folder / record[k]) == record[f"{k}_sha256"]
        for k in ("acts", "index")
    )
