"""A :class:`repro.synthetic.SyntheticSpec` stream as an activation cache (:func:`write_cache`): dataset- and
backbone-like adapters for :func:`repro.cache.extract`, so the cache is written, addressed and verified as any
other."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repro.synthetic_spec import BLOCK_TOKENS, GENERATOR_VERSION, SyntheticSpec
from repro.synthetic_validation import _is_int

HOOK = "planted"


class _SyntheticTokens:
    """Dataset-like adapter for :func:`repro.cache.extract`: examples are token indices, labels their
    true feature counts, ids = arange."""

    name = "synthetic"

    def __init__(self, spec: SyntheticSpec, n_tokens: int, seed: int):
        self.generator_spec, self.n_tokens, self.seed = spec, n_tokens, seed
        self.examples = np.arange(n_tokens, dtype=np.int64)
        self.ids = np.arange(n_tokens, dtype=np.int64)
        n_blocks = -(-n_tokens // BLOCK_TOKENS)
        counts = [spec.block_counts(b, seed).numpy() for b in range(n_blocks)]
        self.labels = np.concatenate(counts)[:n_tokens] if counts else np.zeros(0, np.int64)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "generator": self.generator_spec.to_dict(),
            "n_tokens": self.n_tokens,
            "seed": self.seed,
            "block_tokens": BLOCK_TOKENS,
            "generator_version": GENERATOR_VERSION,
        }

    def __len__(self) -> int:
        return self.n_tokens


class _SyntheticBackbone:
    """Backbone-like adapter: ``activations`` of token indices are the generated tokens (one position
    each), regenerated block by block so that any batching gives the same rows."""

    name = "synthetic"
    modality = None

    def __init__(self, spec: SyntheticSpec, seed: int):
        self.generator_spec, self.seed = spec, seed
        self._cached: tuple[int, Tensor] | None = None

    def spec(self) -> dict:
        dictionary = self.generator_spec.dictionary().numpy().astype("<f4")
        return {
            "name": self.name,
            "generator": self.generator_spec.to_dict(),
            "generator_version": GENERATOR_VERSION,
            "weights_digest": hashlib.sha256(dictionary.tobytes()).hexdigest(),
            "preprocessing": {"block_tokens": BLOCK_TOKENS},
        }

    def d_model(self, hook: str) -> int:
        if hook != HOOK:
            raise ValueError(f"the synthetic backbone has one hook, {HOOK!r}; got {hook!r}")
        return self.generator_spec.d_in

    def preprocess(self, examples: Any) -> dict[str, Tensor]:
        return {"index": torch.as_tensor(np.asarray(examples), dtype=torch.int64)}

    def _block(self, b: int) -> Tensor:
        if self._cached is None or self._cached[0] != b:
            self._cached = (b, self.generator_spec.block(b, self.seed)[0])
        return self._cached[1]

    def activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        self.d_model(hook)
        index = inputs["index"]
        out = torch.empty(len(index), self.generator_spec.d_in)
        blocks = index // BLOCK_TOKENS
        for b in torch.unique(blocks).tolist():
            rows = blocks == b
            out[rows] = self._block(b)[index[rows] - b * BLOCK_TOKENS]
        return out[:, None, :], torch.ones(len(index), 1, dtype=torch.bool)


def write_cache(
    spec: SyntheticSpec,
    n_tokens: int,
    root: str | os.PathLike,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    dtype: str = "float32",
    progress: bool = False,
) -> Path:
    """Write tokens 0..n_tokens-1 of the seeded block stream of ``spec`` (token t = row t mod 4096 of
    ``spec.block(t // 4096, seed)``) as an activation cache under ``root`` (hook ``"planted"``, one
    position per example, label = the token's true feature count, example id = t); returns its folder.
    The cache is content addressed like any other (same spec, seed and options: same folder)."""
    from repro.cache import extract

    if not (_is_int(n_tokens) and n_tokens >= 1):
        raise ValueError(f"n_tokens={n_tokens!r} must be a positive integer")
    return extract(
        _SyntheticBackbone(spec, seed),
        _SyntheticTokens(spec, n_tokens, seed),
        HOOK,
        root,
        dtype=dtype,
        batch_size=batch_size,
        progress=progress,
    )
