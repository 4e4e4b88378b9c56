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

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from repro.cache_extract import extract
from repro.cache_protocol import (
    DTYPES,
    LENGTH_SORT_BATCHES,
    METADATA,
    PROTOCOL,
    CacheError,
    canonical_json,
    exclusive,
    extraction_spec,
    from_storage,
    looks_like_cache,
    sha256_file,
    spec_hash,
    verify,
)

__all__ = [
    "DTYPES",
    "LENGTH_SORT_BATCHES",
    "PROTOCOL",
    "ActivationCache",
    "CacheError",
    "canonical_json",
    "exclusive",
    "extract",
    "extraction_spec",
    "sha256_file",
    "spec_hash",
    "verify",
]


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
