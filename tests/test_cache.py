"""The activation cache: round trip, content addressing, corruption and spec-mismatch detection,
resumable extraction, and the seeded shuffled reader. Uses a small deterministic stand-in backbone so
that every expected value is known exactly."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from repro.cache import ActivationCache, CacheError, extract, spec_hash, verify

D = 8


class FakeBackbone:
    """acts[b, t] = x[b, t] * W[t % 3] (d = 8); the mask keeps the nonzero positions (padding = 0)."""

    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after
        self.weights = torch.arange(3 * D, dtype=torch.float32).reshape(3, D) / 10

    def spec(self) -> dict:
        return {"name": self.name, "weights_digest": "0" * 64, "preprocessing": {"max_length": 5}}

    def d_model(self, hook: str) -> int:
        return D

    def preprocess(self, examples) -> dict:
        return {"x": torch.as_tensor(np.asarray(examples), dtype=torch.float32)}

    def activations(self, inputs: dict, hook: str, filtered: bool = True):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        x = inputs["x"]
        scale = {"h1": 1.0, "h2": -2.0}[hook]
        acts = x[..., None] * self.weights[torch.arange(x.shape[1]) % 3] * scale
        return acts, x != 0


@dataclass
class FakeData:
    examples: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    seed: int = 0
    name: str = "fake-data"

    def spec(self) -> dict:
        return {"name": self.name, "n": len(self.labels), "seed": self.seed}

    def __len__(self) -> int:
        return len(self.labels)


def fake_data(n: int = 50, seed: int = 0) -> FakeData:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 100, size=(n, 5)).astype(np.float32)
    lengths = rng.integers(1, 6, size=n)
    x[np.arange(5)[None, :] >= lengths[:, None]] = 0  # right padding
    return FakeData(x, rng.integers(0, 4, size=n), np.arange(n) + 1000, seed)


def expected_rows(data: FakeData, hook: str = "h1"):
    bb = FakeBackbone()
    acts, mask = bb.activations(bb.preprocess(data.examples), hook)
    rows, pos = torch.nonzero(mask, as_tuple=True)
    index = np.stack([data.ids[rows.numpy()], pos.numpy(), data.labels[rows.numpy()]], axis=1)
    return acts[rows, pos], index


def make(tmp_path, data=None, **kw):
    data = data if data is not None else fake_data()
    kw = {"batch_size": 7, "shard_tokens": 20, "progress": False, **kw}
    return extract(FakeBackbone(), data, "h1", tmp_path / "cache", **kw), data


def test_round_trip(tmp_path):
    path, data = make(tmp_path)
    cache = ActivationCache.open(path)
    acts, index = expected_rows(data)
    assert cache.n_tokens == len(index) and cache.d_model == D
    assert torch.equal(cache.tokens(), acts)
    assert np.array_equal(cache.index(), index)
    assert torch.equal(cache.tokens(5, 17), acts[5:17])
    assert len(cache.metadata["shards"]) > 2  # several shards, each holding whole examples
    meta = json.loads((path / "metadata.json").read_text())
    assert path.name == meta["spec_hash"] == spec_hash(meta["spec"]) and len(path.name) == 64
    assert meta["n_examples"] == 50 and meta["provenance"]["packages"]["torch"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_storage(tmp_path, dtype):
    path, data = make(tmp_path, dtype=dtype)
    cache = ActivationCache.open(path)
    acts, _ = expected_rows(data)
    got = cache.tokens()
    assert got.dtype == torch.float32
    assert torch.equal(got, acts.to(getattr(torch, dtype)).float())
    assert (path / "shards" / cache.metadata["shards"][0]["acts"]).stat().st_size == cache.metadata["shards"][0][
        "n_tokens"
    ] * D * 2


def test_content_addressing(tmp_path):
    data = fake_data()
    bb = FakeBackbone()
    a = extract(bb, data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    calls = bb.calls
    assert extract(bb, data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False) == a
    assert bb.calls == calls  # reused, not recomputed
    b = extract(bb, data, "h2", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    c = extract(bb, data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False, dtype="float16")
    d = extract(bb, fake_data(seed=1), "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    assert len({a, b, c, d}) == 4
    with pytest.raises(ValueError, match="dtype"):
        extract(bb, data, "h1", tmp_path, dtype="int8")


def test_verify_detects_truncation_corruption_and_spec_mismatch(tmp_path):
    path, _ = make(tmp_path)
    assert verify(path) == []
    shard = sorted((path / "shards").glob("acts_*.bin"))[1]
    clean = shard.read_bytes()
    shard.write_bytes(clean[:-5])
    assert any("truncated" in p for p in verify(path))
    flipped = bytearray(clean)
    flipped[3] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    assert any("checksum" in p for p in verify(path))
    assert verify(path, checksums=False) == []  # same size: only the checksum sees it
    with pytest.raises(CacheError, match="checksum mismatch") as err:
        ActivationCache.open(path)
    assert "repro extract" in str(err.value)
    shard.write_bytes(clean)
    meta_file = path / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["spec"]["hook"] = "h2"  # the folder no longer holds what its name says
    meta_file.write_text(json.dumps(meta))
    assert any("spec hash mismatch" in p for p in verify(path))
    (path / "metadata.json").unlink()
    assert "no metadata.json" in verify(path)[0]


def test_missing_shard_and_renamed_folder(tmp_path):
    path, _ = make(tmp_path)
    moved = path.with_name("f" * 64)
    shutil.copytree(path, moved)
    assert any("spec hash mismatch" in p for p in verify(moved))
    next((path / "shards").glob("index_*.bin")).unlink()
    assert any("missing shard" in p for p in verify(path))


def test_interrupted_extraction_resumes_to_identical_bytes(tmp_path):
    data = fake_data(80)
    reference = extract(FakeBackbone(), data, "h1", tmp_path / "ref", batch_size=7, shard_tokens=20, progress=False)
    killed = FakeBackbone(fail_after=6)
    with pytest.raises(KeyboardInterrupt):
        extract(killed, data, "h1", tmp_path / "run", batch_size=7, shard_tokens=20, progress=False)
    partial = tmp_path / "run" / f".{reference.name}.partial"
    assert partial.is_dir() and not (tmp_path / "run" / reference.name).exists()
    done = json.loads((partial / "progress.json").read_text())["examples_done"]
    assert 0 < done < 80
    resumed = FakeBackbone()
    path = extract(resumed, data, "h1", tmp_path / "run", batch_size=7, shard_tokens=20, progress=False)
    assert resumed.calls == -(-(80 - done) // 7)  # only the batches after the last finished shard
    assert not partial.exists()
    for f in sorted((reference / "shards").iterdir()):
        assert (path / "shards" / f.name).read_bytes() == f.read_bytes()
    assert (
        json.loads((path / "metadata.json").read_text())["shards"]
        == json.loads((reference / "metadata.json").read_text())["shards"]
    )


def test_resume_with_a_damaged_shard_starts_over(tmp_path):
    data = fake_data(80)
    with pytest.raises(KeyboardInterrupt):
        extract(FakeBackbone(fail_after=6), data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    partial = next(tmp_path.glob(".*.partial"))
    first = sorted((partial / "shards").glob("acts_*.bin"))[0]
    first.write_bytes(first.read_bytes()[:-1])
    path = extract(FakeBackbone(), data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    assert verify(path) == []
    assert torch.equal(ActivationCache.open(path).tokens(), expected_rows(data)[0])


def test_shuffled_reader_is_seeded_and_covers_every_token_once_per_epoch(tmp_path):
    path, data = make(tmp_path, data=fake_data(200))
    cache = ActivationCache.open(path)
    n = cache.n_tokens
    a = list(cache.batches(16, seed=3, block_tokens=8, buffer_blocks=3, epochs=1))
    b = list(cache.batches(16, seed=3, block_tokens=8, buffer_blocks=3, epochs=1))
    c = list(cache.batches(16, seed=4, block_tokens=8, buffer_blocks=3, epochs=1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=False))
    epoch = torch.cat(a)
    assert len(epoch) == n // 16 * 16  # the last partial batch is dropped
    stored = Counter(tuple(r) for r in cache.tokens().tolist())
    seen = Counter(tuple(r) for r in epoch.tolist())
    assert all(stored[row] >= count for row, count in seen.items())  # no token twice in an epoch
    plain = torch.cat(list(cache.batches(16, shuffle=False, epochs=1)))
    assert torch.equal(plain, cache.tokens()[: len(plain)])
    stream = cache.batches(16, seed=3, block_tokens=8, buffer_blocks=3)
    two_epochs = [next(stream) for _ in range(2 * len(a))]
    assert not torch.equal(torch.cat(two_epochs[: len(a)]), torch.cat(two_epochs[len(a) :]))  # reshuffled
    with pytest.raises(CacheError, match="fewer than one batch"):
        next(cache.batches(10**6))


def test_trainer_reads_the_cache_and_resumes(tmp_path):
    from repro.sae import create
    from repro.train import TrainConfig, train

    path, _ = make(tmp_path, data=fake_data(200))
    cache = ActivationCache.open(path)
    cfg = TrainConfig(steps=8, lr=1e-3, warmup_steps=2, checkpoint_every=4, progress=False)
    full = create("topk", D, 32, k=4)
    train(full, cache.batches(16, seed=1), cfg, tmp_path / "a")

    class Stop(Exception):
        pass

    def stop(step, parts):
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        train(create("topk", D, 32, k=4), cache.batches(16, seed=1), cfg, tmp_path / "b", on_step=stop)
    resumed = create("topk", D, 32, k=4)
    train(resumed, cache.batches(16, seed=1), cfg, tmp_path / "b", resume=True)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_concurrent_extractions_of_one_spec_do_the_work_once(tmp_path):
    import threading
    import time

    data = fake_data()

    class Slow(FakeBackbone):
        def activations(self, inputs, hook, filtered=True):
            time.sleep(0.01)
            return super().activations(inputs, hook, filtered)

    backbones, paths = [Slow(), Slow()], []

    def work(bb):
        paths.append(extract(bb, data, "h1", tmp_path / "cache", batch_size=7, shard_tokens=20, progress=False))

    threads = [threading.Thread(target=work, args=(bb,)) for bb in backbones]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(paths) == 2 and paths[0] == paths[1] and verify(paths[0]) == []
    assert sorted(bb.calls for bb in backbones) == [0, -(-len(data) // 7)]  # one did it all, the other waited


def test_only_a_cache_folder_gets_the_delete_and_extract_again_hint(tmp_path):
    with pytest.raises(CacheError) as err:
        ActivationCache.open(tmp_path)  # e.g. /tmp by mistake
    assert "not an activation cache" in str(err.value) and "Delete" not in str(err.value)
    path, _ = make(tmp_path)
    (path / "metadata.json").write_text("{")
    with pytest.raises(CacheError, match="Delete the folder"):
        ActivationCache.open(path)


def test_token_filter_drops_norm_outliers_and_records_them(tmp_path):
    """A 50x token in each batch is dropped (ratio 3 to the batch median); the filter enters the spec (so the
    hash) and the metadata counts what it dropped; without it the spec is unchanged."""
    from repro.backbones.token_filter import TokenFilter

    data = fake_data(40)
    data.examples[::7, 0] *= 50  # one outlier token in every batch of 7
    plain = extract(FakeBackbone(), data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    bb = FakeBackbone()
    bb.token_filter = TokenFilter(max_norm_ratio=3.0)
    filtered = extract(bb, data, "h1", tmp_path, batch_size=7, shard_tokens=20, progress=False)
    assert filtered != plain
    meta = ActivationCache.open(filtered).metadata
    assert meta["spec"]["token_filter"] == {"rule": "norm_ratio_to_batch_median", "max_norm_ratio": 3.0}
    assert "token_filter" not in ActivationCache.open(plain).metadata["spec"]
    expected_drop, expected_energy, total_energy = 0, 0.0, 0.0  # the rule, batch by batch, written out
    for lo in range(0, 40, 7):
        acts, mask = FakeBackbone().activations(FakeBackbone().preprocess(data.examples[lo : lo + 7]), "h1")
        norms = acts.norm(dim=-1)[mask].double()
        out = norms > 3.0 * norms.median()
        expected_drop += int(out.sum())
        expected_energy += float(norms[out].pow(2).sum())
        total_energy += float(norms.pow(2).sum())
    sel = meta["token_selection"]
    assert expected_drop >= 6 and sel["dropped_tokens"] == expected_drop
    assert sel["counted_tokens"] == ActivationCache.open(plain).n_tokens == meta["n_tokens"] + expected_drop
    assert sel["dropped_energy_share"] == pytest.approx(expected_energy / total_energy, rel=1e-6)


def test_validation_slice_holds_whole_examples_and_batches_stay_before_it(tmp_path):
    path, _ = make(tmp_path, data=fake_data(200))
    cache = ActivationCache.open(path)
    start = cache.validation_start(60)
    ids = cache.index()[:, 0]
    assert ids[start] != ids[start - 1] and abs((cache.n_tokens - start) - 60) <= 5
    seen = Counter(tuple(r) for r in torch.cat(list(cache.batches(16, seed=0, stop=start, epochs=1))).tolist())
    training = Counter(tuple(r) for r in cache.tokens(0, start).tolist())
    assert sum(seen.values()) == start // 16 * 16 and all(training[row] >= c for row, c in seen.items())


class FakeTextBackbone(FakeBackbone):
    """A text-like backbone: extraction sorts windows of examples by their length (``example_lengths``)."""

    def __init__(self):
        super().__init__()
        self.batch_lengths = []

    def example_lengths(self, examples):
        return (np.asarray(examples) != 0).sum(1).tolist()

    def activations(self, inputs: dict, hook: str, filtered: bool = True):
        self.batch_lengths.append(sorted((inputs["x"] != 0).sum(1).tolist()))
        return super().activations(inputs, hook, filtered)


def test_text_extraction_batches_by_length_and_writes_in_dataset_order(tmp_path):
    data = fake_data(50)
    bb = FakeTextBackbone()
    cache = ActivationCache.open(extract(bb, data, "h1", tmp_path, batch_size=4))
    assert cache.spec["length_sorted_window"] == 4 * 16
    acts, index = expected_rows(data)
    np.testing.assert_array_equal(cache.index(), index)  # dataset order, positions in order
    torch.testing.assert_close(cache.tokens(0, cache.n_tokens), acts, rtol=0, atol=0)
    # sorted: every batch but one boundary holds examples of one or two adjacent lengths
    spans = [b[-1] - b[0] for b in bb.batch_lengths]
    assert max(spans) <= 1 and len(bb.batch_lengths) == 13
    # the unsorted path (no example_lengths) writes the same bytes under another spec hash
    plain = ActivationCache.open(extract(FakeBackbone(), data, "h1", tmp_path / "plain", batch_size=4))
    np.testing.assert_array_equal(plain.index(), cache.index())
    assert "length_sorted_window" not in plain.spec
