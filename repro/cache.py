"""The activation cache: a content-addressed, memory-mapped, checksummed store of hook-point activations.

The cache protocol, version 1 (:data:`PROTOCOL`)
================================================

Identity and hashing. A cache is named by what determines its bytes, the *extraction spec*
(:func:`extraction_spec`): ``protocol``; ``backbone`` (the backbone's ``spec()``: name, family, package
version, weights digest, preprocessing); ``hook``; ``dataset`` (the dataset's ``spec()``: name, split, seed,
limit, source version, modality); ``token_selection`` ("backbone-mask": the tokens the backbone's attention mask
keeps); ``dtype``; ``batch_size``; ``shard_tokens``; and, only when they apply, ``token_filter`` (an active
outlier-norm filter, :mod:`repro.backbones.token_filter`) and ``length_sorted_window`` (text: batches formed
from windows of that many examples sorted by length). ``spec_hash`` = sha256 (hex) of the canonical JSON of
the spec (:func:`canonical_json`: sorted keys, separators ``,`` and ``:``, ASCII). Two extractions with equal
specs produce the same bytes and share one folder; any change to the spec is a new folder.

On-disk layout, under a cache root (``cache/`` in the workflow):

- ``<spec_hash>/metadata.json``: ``spec``, ``spec_hash``, ``d_model``, ``dtype``, ``n_tokens``, ``n_examples``,
  ``shards`` (one record per shard: ``acts`` and ``index`` file names, their ``acts_sha256`` and
  ``index_sha256``, ``n_tokens``), the token selection's statistics and provenance;
- ``<spec_hash>/shards/acts_NNNNN.bin``: raw little-endian activations, shape (tokens, d_model), C order, in the
  storage dtype (float32, float16, or bfloat16 stored as its 16-bit pattern, :data:`DTYPES`);
- ``<spec_hash>/shards/index_NNNNN.bin``: little-endian int64, shape (tokens, 3): the example's stable id in its
  dataset, the token's position within the example, the example's label;
- ``.<spec_hash>.partial/`` (with ``progress.json``) while an extraction runs, and ``.<spec_hash>.lock``;
- ``pointers/<config>/<role>.<split>.json`` (written by ``repro extract --pointer``, the workflow's DAG nodes):
  {"cache": absolute folder, "spec_hash"}; ``pointers/<config>/<role>.train.features.json`` names the training
  split's pooled head features (``repro features --pointer``);
- ``features/<spec_hash>/``: pooled head features, the protocol's second kind of folder (identity, layout and
  validation in :mod:`repro.head_features`), verified by the same ``repro cache verify``.

Shards hold whole examples, in dataset order; a shard closes at the end of the first batch (or length-sorted
window of batches) that brings it to ``shard_tokens`` tokens or more, and at the end of the dataset.

Writing. Extraction takes an exclusive ``flock`` on ``.<spec_hash>.lock`` (concurrent extractions of one spec:
one works, the others wait and then reuse its result) and writes into ``.<spec_hash>.partial/``: each finished
shard is renamed into place and recorded in ``progress.json`` (with its checksums), so an interrupted
extraction resumes after its last finished shard; when the progress is of another spec or a recorded shard
no longer matches its checksum, it starts over. ``metadata.json`` is written last and the
folder renamed to ``<spec_hash>`` only when complete, so a folder named by a hash is always complete.

Validation (:func:`verify`, run by :meth:`ActivationCache.open`): ``metadata.json`` exists and parses; the spec
hashes to both the recorded ``spec_hash`` and the folder's name; the dtype is known; every shard file exists
and holds exactly ``n_tokens`` rows of its width; the shards' token counts sum to ``n_tokens``; and, unless
``checksums=False`` (sizes and hash only, for a quick look), every shard's sha256 equals the recorded one. A
cache that fails is refused with every problem listed (:class:`CacheError`) and the command that rebuilds it,
never read. Readers memory-map the shards and never load a cache whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from repro.backbones.token_filter import TokenFilter, exclusion_stats
from repro.provenance import provenance

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


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _shard_intact(folder: Path, record: dict) -> bool:
    return all(
        (folder / record[k]).is_file() and sha256_file(folder / record[k]) == record[f"{k}_sha256"]
        for k in ("acts", "index")
    )


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


def verify(path: str | os.PathLike, *, checksums: bool = True) -> list[str]:
    """Every problem found in the cache folder (empty = intact): missing or unreadable metadata, a spec
    whose hash is not the folder name or the recorded hash, missing shards, shards whose size does not
    match their token count, and (``checksums``) shards whose sha256 differs from the recorded one."""
    path = Path(path)
    problems: list[str] = []
    try:
        meta = json.loads((path / METADATA).read_text())
    except FileNotFoundError:
        return [f"{path}: no {METADATA} (not a cache, or an incomplete extraction)"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{path / METADATA}: unreadable ({e})"]
    problems += spec_hash_problems(meta, path)
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


# ----- reading ---------------------------------------------------------------------------------------
@dataclass
class ActivationCache:
    """A verified cache opened read-only; activations are memory-mapped, never loaded whole."""

    path: Path
    metadata: dict

    @classmethod
    def open(cls, path: str | os.PathLike, *, checksums: bool = True) -> ActivationCache:
        """Open and verify (sizes, spec hash, and by default sha256 of every shard); raise CacheError
        listing every problem, with the command that rebuilds the cache."""
        path = Path(path)
        problems = verify(path, checksums=checksums)
        if problems:
            hint = (
                "\nDelete the folder and run `repro extract` again to rebuild it."
                if looks_like_cache(path)
                else "\nIt is not an activation cache: pass a folder printed by `repro extract` "
                "(or its --pointer file)."
            )
            raise CacheError(f"activation cache {path} is not usable:\n  - " + "\n  - ".join(problems) + hint)
        return cls(path, json.loads((path / METADATA).read_text()))

    @property
    def d_model(self) -> int:
        return int(self.metadata["d_model"])

    @property
    def n_tokens(self) -> int:
        return int(self.metadata["n_tokens"])

    @property
    def spec(self) -> dict:
        return self.metadata["spec"]

    def _shard_arrays(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.metadata["shards"][i]
        np_dtype = DTYPES[self.metadata["dtype"]][0]
        n = s["n_tokens"]
        if n == 0:
            return np.zeros((0, self.d_model), np_dtype), np.zeros((0, 3), np.int64)
        acts = np.memmap(
            self.path / "shards" / s["acts"],
            dtype=np.dtype(np_dtype).newbyteorder("<"),
            mode="r",
            shape=(n, self.d_model),
        )
        index = np.memmap(self.path / "shards" / s["index"], dtype="<i8", mode="r", shape=(n, 3))
        return acts, index

    def index(self) -> np.ndarray:
        """(n_tokens, 3) int64: example id, position, label of every token, in storage order."""
        parts = [np.asarray(self._shard_arrays(i)[1]) for i in range(len(self.metadata["shards"]))]
        return np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)

    def _row_slices(self, start: int, stop: int | None) -> Iterator[tuple[int, int, int]]:
        """(shard, lo, hi) for the rows of tokens [start, stop) (storage order), shard by shard."""
        stop = self.n_tokens if stop is None else stop
        offset = 0
        for i, shard in enumerate(self.metadata["shards"]):
            lo, hi = max(start - offset, 0), min(stop - offset, shard["n_tokens"])
            if lo < hi:
                yield i, lo, hi
            offset += shard["n_tokens"]

    def tokens(self, start: int = 0, stop: int | None = None) -> Tensor:
        """float32 activations of tokens [start, stop) in storage order (only those rows are read)."""
        out = [
            from_storage(self._shard_arrays(i)[0][lo:hi], self.metadata["dtype"])
            for i, lo, hi in self._row_slices(start, stop)
        ]
        return torch.cat(out) if out else torch.zeros(0, self.d_model)

    def index_rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(stop - start, 3) int64 index rows (example id, position, label) of tokens [start, stop)."""
        out = [np.asarray(self._shard_arrays(i)[1][lo:hi]) for i, lo, hi in self._row_slices(start, stop)]
        return np.concatenate(out) if out else np.zeros((0, 3), np.int64)

    def validation_start(self, n_tokens: int) -> int:
        """Where a held-out validation slice of about ``n_tokens`` tokens at the end of the cache starts: the
        first token of the example holding token ``n_tokens_total - n_tokens`` (slices hold whole examples,
        so no text or image is split between training and validation)."""
        if n_tokens <= 0:
            return self.n_tokens
        cut = max(1, self.n_tokens - n_tokens)
        ids = self.index_rows(max(0, cut - 4096), cut + 1)[:, 0]
        j = len(ids) - 1  # the row of token ``cut``
        while j > 0 and ids[j - 1] == ids[j]:
            j -= 1
        return max(1, cut - (len(ids) - 1 - j))

    def batches(
        self,
        batch_size: int,
        seed: int = 0,
        *,
        shuffle: bool = True,
        block_tokens: int = 4096,
        buffer_blocks: int = 64,
        epochs: int | None = None,
        stop: int | None = None,
    ) -> Iterator[Tensor]:
        """float32 batches (batch_size, d_model) of tokens [0, stop) (default: all), seeded and deterministic
        (the same sequence on every call), repeating epochs (each reshuffled with seed + epoch) until
        ``epochs`` (None: endless).

        Shuffling without loading everything: the tokens are cut into blocks of ``block_tokens``
        contiguous rows; each epoch visits the blocks in a random order, ``buffer_blocks`` at a time,
        and shuffles the tokens of those blocks together (peak memory ~ buffer_blocks * block_tokens
        rows). Batches never straddle epochs; the last partial batch of an epoch is dropped."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be positive")
        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        if stop < batch_size:
            raise CacheError(f"cache {self.path} holds {stop} training tokens, fewer than one batch ({batch_size})")
        blocks, offset = [], 0
        for i, s in enumerate(self.metadata["shards"]):
            end = min(s["n_tokens"], stop - offset)
            blocks += [(i, lo, min(lo + block_tokens, end)) for lo in range(0, max(end, 0), block_tokens)]
            offset += s["n_tokens"]
        epoch = 0
        while epochs is None or epoch < epochs:
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(len(blocks)) if shuffle else np.arange(len(blocks))
            carry = torch.zeros(0, self.d_model)
            for g in range(0, len(order), buffer_blocks):
                group = [blocks[j] for j in order[g : g + buffer_blocks]]
                rows = torch.cat(
                    [carry]
                    + [from_storage(self._shard_arrays(i)[0][lo:hi], self.metadata["dtype"]) for i, lo, hi in group]
                )
                if shuffle:
                    rows = rows[torch.from_numpy(rng.permutation(len(rows)))]
                n_full = len(rows) // batch_size * batch_size
                yield from rows[:n_full].split(batch_size)
                carry = rows[n_full:]
            epoch += 1
