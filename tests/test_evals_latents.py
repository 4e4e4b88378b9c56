"""encode_cache: every statistic equals a brute-force per-example computation, whatever the chunk size;
example ids out of order; a latent firing on fewer examples than K gets -inf slots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from repro.cache import ActivationCache, extract
from repro.evals.latents import encode_cache, example_chunks
from repro.sae import create

D, F = 6, 24


class RandomBackbone:
    """acts[b, t] = a fixed random vector per (example value, position); mask = positions < length."""

    name = "random"

    def spec(self) -> dict:
        return {"name": self.name, "weights_digest": "1" * 64}

    def d_model(self, hook: str) -> int:
        return D

    def preprocess(self, examples) -> dict:
        return {"x": torch.as_tensor(np.asarray(examples), dtype=torch.int64)}

    def activations(self, inputs: dict, hook: str):
        x = inputs["x"]  # (B, 2): example seed, length
        out = torch.zeros(len(x), 7, D)
        for b, seed in enumerate(x[:, 0].tolist()):
            g = torch.Generator().manual_seed(seed)
            out[b] = torch.randn(7, D, generator=g) + 0.3
        mask = torch.arange(7)[None, :] < x[:, 1:2]
        return out, mask


@dataclass
class Data:
    examples: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    name: str = "random-data"

    def spec(self) -> dict:
        return {"name": self.name, "n": len(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 40
    examples = np.stack([np.arange(n) + 100, rng.integers(1, 8, n)], axis=1)
    data = Data(examples, rng.integers(0, 3, n).astype(np.int64), rng.permutation(n).astype(np.int64) * 7 + 3)
    path = extract(
        RandomBackbone(), data, "h", tmp_path_factory.mktemp("c"), batch_size=6, shard_tokens=30, progress=False
    )
    sae = create("relu", D, F, seed=1)
    return ActivationCache.open(path), sae, data


def brute_force(cache, sae, threshold, k):
    index = cache.index()
    x = cache.tokens()
    with torch.no_grad():
        acts = sae(x)[1].numpy().astype(np.float64)
    ids = np.unique(index[:, 0])
    out = {"pooled": [], "max": [], "pos": [], "labels": []}
    for i in ids:
        rows = index[:, 0] == i
        a = acts[rows]
        out["pooled"].append(a.mean(0))
        out["max"].append(a.max(0))
        out["pos"].append(index[rows, 1][a.argmax(0)])
        out["labels"].append(index[rows, 2][0])
    out = {key: np.array(v) for key, v in out.items()}
    counts = np.zeros((3, F))
    np.add.at(counts, index[:, 2], acts > threshold)
    top_ids = np.full((F, k), -1)
    for j in range(F):
        valid = np.flatnonzero(out["max"][:, j] > 0)
        order = valid[np.lexsort((ids[valid], -out["max"][valid, j]))][:k]
        top_ids[j, : len(order)] = ids[order]
    return ids, acts, out, counts, top_ids


@pytest.mark.parametrize("chunk", [1, 9, 10_000])
def test_matches_brute_force_for_any_chunk_size(setup, chunk):
    cache, sae, data = setup
    enc = encode_cache(sae, cache, threshold=0.1, top_k=5, max_chunk_tokens=chunk)
    ids, acts, ref, counts, top_ids = brute_force(cache, sae, 0.1, 5)
    np.testing.assert_array_equal(enc.ids, ids)
    np.testing.assert_array_equal(enc.labels, ref["labels"])
    np.testing.assert_allclose(enc.pooled.numpy(), ref["pooled"], atol=1e-6)
    np.testing.assert_allclose(enc.pooled_raw.numpy().mean(), cache.tokens().numpy().mean(), rtol=0.5)
    np.testing.assert_array_equal(enc.class_counts, counts)
    np.testing.assert_array_equal(enc.fire_count, (acts != 0).sum(0))
    np.testing.assert_allclose(enc.act_sum, acts.sum(0), rtol=1e-6)
    np.testing.assert_array_equal(enc.example_fire_count, (ref["max"] != 0).sum(0))
    index = cache.index()
    l0 = [(acts[index[:, 0] == i] != 0).sum(1).mean() for i in ids]
    np.testing.assert_allclose(enc.example_l0, l0)
    np.testing.assert_array_equal(enc.top_ids, top_ids)
    for j in range(F):
        for slot, i in enumerate(enc.top_ids[j]):
            if i < 0:
                assert enc.top_values[j, slot] == -np.inf and enc.top_positions[j, slot] == -1
                continue
            row = np.flatnonzero(ids == i)[0]
            assert enc.top_values[j, slot] == pytest.approx(ref["max"][row, j], abs=1e-6)
            assert enc.top_positions[j, slot] == ref["pos"][row, j]
            assert enc.top_labels[j, slot] == ref["labels"][row]
    assert enc.n_tokens == cache.n_tokens and enc.reconstruction["n_tokens"] == cache.n_tokens


def test_a_rare_latent_gets_empty_slots(setup):
    cache, sae, _ = setup
    enc = encode_cache(sae, cache, top_k=45, pooled=False)
    assert enc.pooled is None
    # 40 examples < 45 slots: at least 5 empty slots per latent
    assert np.all(np.isinf(enc.top_values[:, 40:])) and np.all(enc.top_ids[:, 40:] == -1)


def test_example_chunks_keep_examples_whole():
    index = np.array([[5, 0, 0], [5, 1, 0], [2, 0, 1], [9, 0, 0], [9, 1, 0], [9, 2, 0]])
    assert example_chunks(index, 2) == [(0, 2), (2, 3), (3, 6)]
    assert example_chunks(index, 100) == [(0, 6)]
    with pytest.raises(ValueError, match="contiguous"):
        example_chunks(np.array([[1, 0, 0], [2, 0, 0], [1, 1, 0]]), 2)
