"""Top-n concept classification on a planted problem with known answers: an identity SAE matches the
no-SAE accuracy, on_1 keeps the class's own latent (100 %), off_1 removes it (chance or below),
n = F equals the full reconstruction, ties go to the lower latent index, and the official protocol
(selection on the classified split) can differ from held-out selection."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from repro.evals.heads import CosineHead, LinearHead, ZeroShotHead, fit_cosine_head, fit_linear_head
from repro.evals.topn import (
    TopNSelectionError,
    agnostic_latents,
    frequency_mask_off,
    random_latents,
    select_latents,
    selection_mask,
    settings_for,
    setup_gate,
    topn_classification,
)
from repro.sae import create

C, T = 3, 4  # classes, tokens per example; d = C + 1 dimensions (the last is noise)


class PlantedBackbone:
    """Example = (label, seed). acts[b, t] = 3·onehot(label) + N(0, 0.3²) on d = C + 1 dims; the
    final features are the token mean, so a linear head reads the class off dimension `label`."""

    modality = "image"
    calls = 0

    def spec(self):
        return {"name": "planted", "weights_digest": "0" * 64}

    def preprocess(self, examples):
        return {"x": torch.as_tensor(np.asarray(examples), dtype=torch.int64)}

    def activations(self, inputs, hook):
        rows = []
        for label, seed in inputs["x"].tolist():
            g = torch.Generator().manual_seed(seed)
            a = 0.3 * torch.randn(T, C + 1, generator=g)
            a[:, label] += 3.0
            rows.append(a)
        acts = torch.stack(rows)
        return acts, torch.ones(acts.shape[:2], dtype=torch.bool)

    def features_from(self, hook, acts, inputs):
        return acts.mean(1)

    def features(self, inputs):
        PlantedBackbone.calls += 1
        return self.features_from("h", self.activations(inputs, "h")[0], inputs)


class IdentitySAE(nn.Module):
    """code = x, x̂ = code (d_sae = d)."""

    normalizes_input = False

    def __init__(self, d):
        super().__init__()
        self.cfg = type("Cfg", (), {"d_sae": d})()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return x

    def decode(self, acts, ctx=None):
        return acts

    def input_context(self, x):
        return None

    def context_scale(self, ctx):
        return None

    def unit_context(self, n, device="cpu"):
        return None

    def forward(self, x, latent_scale=None):
        return x, x


@dataclass
class Data:
    examples: np.ndarray
    labels: np.ndarray
    class_names: list = field(default_factory=lambda: [f"c{i}" for i in range(C)])

    def __len__(self):
        return len(self.labels)

    def spec(self):
        return {"n": len(self.labels), "first": self.examples[:, 1].tolist()}


def data(n, seed):
    labels = np.arange(n) % C
    return Data(np.stack([labels, np.arange(n) + seed], 1), labels.astype(np.int64))


def counts_of(sae, d: Data, threshold=0.2):
    bb = PlantedBackbone()
    acts, mask = bb.activations(bb.preprocess(d.examples), "h")
    code = sae.encode(acts[mask]).detach()
    tok = torch.as_tensor(d.labels)[:, None].expand_as(mask)[mask]
    counts = torch.zeros(C, code.shape[1], dtype=torch.float64).index_add_(0, tok, (code > threshold).double())
    return counts.numpy()


def test_identity_sae_known_answers():
    train, test = data(60, 0), data(30, 1000)
    bb, sae = PlantedBackbone(), IdentitySAE(C + 1)
    head = fit_linear_head(bb, train)
    res = topn_classification(
        bb, sae, "h", test, head, {"official": counts_of(sae, test), "heldout": counts_of(sae, train)}, ns=(1, C + 1)
    )
    m = res["mean_pct"]
    assert m["no_sae"] == 100.0 and m["sae"] == m["no_sae"]
    for p in ("official", "heldout"):
        assert m[f"{p}/on_1"] == 100.0  # the class's own dimension alone still classifies
        assert m[f"{p}/off_1"] <= 50  # without it only noise is left (chance = 33 %)
        assert m[f"{p}/on_{C + 1}"] == m["sae"] and m[f"{p}/off_{C + 1}"] == m["off_all"]
        # the controls: every latent kept is the full reconstruction; one latent that ignores the class
        # identifies one class, the others only by noise, far below the class-aware on_1
        assert m[f"{p}/agnostic_{C + 1}"] == m[f"{p}/random_{C + 1}"] == m["on_all"] == m["sae"]
        assert m[f"{p}/agnostic_1"] < 70 and m[f"{p}/random_1"] < 70
    assert res["selected"]["official"]["1"] == [[0], [1], [2]]
    assert res["gate"]["usable"] and res["gate"]["reasons"] == []
    assert set(res["mean_pct"]) == set(settings_for(["official", "heldout"], (1, C + 1)))
    assert res["n_examples"] == 30 and res["per_class_pct"]["no_sae"] == [100.0] * C
    # bootstrap intervals for every setting; a setting right on every example has the degenerate [100, 100]
    assert set(res["ci95"]) == set(res["mean_pct"])
    assert res["ci95"]["no_sae"]["lo"] == res["ci95"]["no_sae"]["hi"] == 100.0
    for s, ci in res["ci95"].items():
        assert ci["lo"] <= m[s] + 1e-9 and m[s] <= ci["hi"] + 1e-9, s


def test_full_width_equals_full_reconstruction_for_a_real_sae():
    torch.manual_seed(0)
    train, test = data(30, 0), data(15, 500)
    bb, sae = PlantedBackbone(), create("relu", C + 1, 16, seed=0)
    head = fit_linear_head(bb, train)
    stat = counts_of(sae, test) + 1e-3  # every latent selectable, so that n = F is allowed
    res = topn_classification(bb, sae, "h", test, head, {"official": stat}, ns=(2, 16))
    m = res["mean_pct"]
    assert m["official/on_16"] == m["sae"] and m["official/off_16"] == m["off_all"]


def test_selection_is_stable_and_masks_match():
    counts = np.array([[0, 5, 5, 1], [2, 2, 2, 2]])
    np.testing.assert_array_equal(select_latents(counts, 2), [[1, 2], [0, 1]])
    np.testing.assert_array_equal(select_latents(counts, 4, strict=False), [[1, 2, 3, 0], [0, 1, 2, 3]])
    np.testing.assert_array_equal(selection_mask(counts, 1).numpy(), [[0, 1, 0, 0], [1, 0, 0, 0]])


def test_selection_refuses_to_fill_a_class_with_latents_that_never_fired():
    counts = np.array([[0, 5, 5, 1], [2, 0, 0, 0]])
    with pytest.raises(TopNSelectionError, match=r"top-2: 1 of 2 classes .* b: 1"):
        select_latents(counts, 2, class_names=["a", "b"])
    with pytest.raises(TopNSelectionError, match="only 4 latents"):
        select_latents(counts, 5)
    with pytest.raises(TopNSelectionError, match="class-agnostic"):
        agnostic_latents(np.array([[0, 5, 0, 1], [2, 0, 0, 0]]), 4, 2)  # latent 2 never fired


def test_controls_ignore_the_class_and_are_seeded():
    counts = np.array([[0, 5, 5, 1, 0], [2, 0, 0, 9, 0]], dtype=float)
    np.testing.assert_array_equal(agnostic_latents(counts, 2, 2), [[3, 1], [3, 1]])
    r = random_latents(counts, 3, 2, seed=4)
    assert (r[0] == r[1]).all() and set(r[0]) <= {0, 1, 2, 3} and len(set(r[0])) == 3  # latent 4 never fired
    np.testing.assert_array_equal(r, random_latents(counts, 3, 2, seed=4))
    with pytest.raises(TopNSelectionError, match="only 4 latents ever fire"):
        random_latents(counts, 5, 2)


def test_setup_gate():
    ok = setup_gate({"no_sae": 80.0, "sae": 75.0, "on_all": 72.0}, 10)
    assert ok["usable"] and ok["chance_pct"] == 10.0
    near_chance = setup_gate({"no_sae": 15.0, "sae": 15.0}, 10)
    assert not near_chance["usable"] and "chance" in near_chance["reasons"][0]
    lossy = setup_gate({"no_sae": 80.0, "sae": 78.0, "on_all": 60.0}, 10)
    assert not lossy["usable"] and "on_all" in lossy["reasons"][0] and len(lossy["reasons"]) == 1


def test_cosine_head_is_nearest_class_mean_by_direction():
    x = np.array([[1.0, 0.0], [3.0, 0.2], [0.0, 1.0], [0.1, 5.0]])
    head = CosineHead().fit(x, np.array([0, 0, 1, 1]))
    # scale does not matter, direction does
    assert head.predict(torch.tensor([[100.0, 1.0], [0.01, 0.02], [0.0, -0.0]])).tolist()[:2] == [0, 1]
    assert head.spec()["head"] == "cosine"
    bb, train = PlantedBackbone(), data(30, 0)
    feats = bb.features(bb.preprocess(data(9, 77).examples))
    assert (fit_cosine_head(bb, train).predict(feats) == data(9, 77).labels).all()


def test_frequency_mask_is_off_for_classification_and_restored():
    sae = create("sparsemax_attention", 6, 16, seed=0).eval()
    x = torch.randn(32, 6)
    with torch.no_grad():
        sae.latent_freq.fill_(0.0)
        sae.latent_freq[:8] = 0.5  # over the 0.1 cap: masked
        masked = sae.encode(x)
        with frequency_mask_off(sae) as unmasked_sae:
            unmasked = unmasked_sae.encode(x)
            assert sae.cfg.freq_mask is None
        assert sae.cfg.freq_mask == 0.1
    assert (masked[:, :8] == 0).all() and (unmasked[:, :8] != 0).any()
    torch.testing.assert_close(sae.encode(x).detach(), masked.detach())


def test_heads():
    w = torch.eye(3)
    assert ZeroShotHead(w).predict(torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 1.0]])).tolist() == [1, 0]
    head = LinearHead().fit(np.r_[np.zeros((5, 2)), np.ones((5, 2))], np.r_[np.zeros(5), np.ones(5)])
    assert head.predict(torch.tensor([[0.0, 0.0], [1.0, 1.0]])).tolist() == [0, 1]
    assert head.spec()["converged"] is True


def test_sae_mode_is_restored():
    bb, sae = PlantedBackbone(), IdentitySAE(C + 1)
    sae.train()
    head = fit_linear_head(bb, data(12, 0))
    with pytest.raises(ValueError, match="official"):
        topn_classification(bb, sae, "h", data(6, 1), head, {"official": np.zeros((C, 2))}, ns=(1,))
    with pytest.raises(TopNSelectionError):  # checked before any forward pass
        topn_classification(bb, sae, "h", data(6, 1), head, {"official": np.zeros((C, C + 1))}, ns=(1,))
    topn_classification(bb, sae, "h", data(6, 1), head, {"official": np.ones((C, C + 1))}, ns=(1,))
    assert sae.training


def test_head_features_are_cached_per_backbone_and_split(tmp_path):
    from repro.evals.heads import cached_features

    bb, train = PlantedBackbone(), data(20, 0)
    before = PlantedBackbone.calls
    a = cached_features(bb, train, batch_size=8, cache_root=tmp_path)
    assert PlantedBackbone.calls == before + 3
    b = cached_features(bb, train, batch_size=8, cache_root=tmp_path)
    assert PlantedBackbone.calls == before + 3 and torch.equal(a, b)
    cached_features(bb, data(20, 7), batch_size=8, cache_root=tmp_path)  # another split: computed
    assert PlantedBackbone.calls == before + 6
    from repro.cache import spec_hash
    from repro.head_features import features_spec

    damaged = tmp_path / "features" / spec_hash(features_spec(bb, train)) / "features.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8])  # truncated: detected, recomputed
    assert torch.equal(cached_features(bb, train, batch_size=8, cache_root=tmp_path), a)
    assert PlantedBackbone.calls == before + 9


@pytest.mark.parametrize(
    "kind", sorted(__import__("repro.sae", fromlist=["KINDS"]).KINDS) + ["relu:token", "topk:token", "jumprelu:none"]
)
def test_kept_decode_equals_the_dense_decode_of_the_masked_code(kind):
    """Every kind decodes affinely, so the few-latent reconstruction from decoder rows equals decode(a ⊙ keep)."""
    from repro.evals.topn import decoder_rows, kept_decode

    torch.manual_seed(0)
    kind, _, norm = kind.partition(":")
    sae = create(kind, 6, 32, seed=0, **({"input_norm": norm} if norm else {})).eval()
    with torch.no_grad():
        x = torch.randn(40, 6) * 2 + 0.5
        sae.fit_to_data(x)
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from any special initialisation (e.g. a zero bias)
        code = sae.encode(x)
        ctx = sae.input_context(x)
        counts = np.random.default_rng(0).random((3, 32))
        idx = torch.from_numpy(select_latents(counts, 4))
        tok_class = torch.arange(40) % 3
        base = sae.decode(torch.zeros_like(code), ctx)
        rows = decoder_rows(sae, torch.unique(idx))
        fast = kept_decode(code, tok_class, idx, rows, base, sae.context_scale(ctx))
        keep = selection_mask(counts, 4)[tok_class]
        dense = sae.decode(code * keep, ctx)
        full = sae.decode(code, ctx)
        off_dense = sae.decode(code * (1 - keep), ctx)
    torch.testing.assert_close(fast, dense, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full - (fast - base), off_dense, atol=1e-5, rtol=1e-4)


def test_the_cli_and_the_schema_offer_exactly_the_selections_and_heads():
    """The CLI's choices and the config schema's enums are literals (the CLI stays torch-free at start-up):
    they must equal the catalogue of repro.evals.topn and repro.evaluate."""
    from pathlib import Path

    import yaml

    from repro.cli import build_parser
    from repro.evals.topn import SELECTIONS
    from repro.evaluate import HEADS

    evaluate = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["evaluate"]._actions if a.dest == "selection"
    )
    head = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["evaluate"]._actions if a.dest == "head"
    )
    assert tuple(evaluate.choices) == SELECTIONS and tuple(head.choices) == HEADS
    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "schema.yaml").read_text())
    ev = schema["properties"]["evaluation"]["properties"]
    assert tuple(ev["selection"]["enum"]) == SELECTIONS and tuple(ev["head"]["enum"]) == HEADS


def test_head_features_from_the_activation_cache_equal_the_full_forward_pass(tmp_path, monkeypatch):
    """EfficientNet at an inner block: the pooled features of the training split computed from its
    activation cache (only the blocks after the hook run) equal those of the full forward pass; a cache
    that lacks some tokens, or a backbone that cannot, falls back to the full pass."""
    import repro.evals.heads as heads
    from repro.backbones import load as load_backbone
    from repro.cache import extract
    from repro.data import load as load_data

    bb = load_backbone("effnet-lite0", image_size=64)
    train = load_data("digits", split="train", limit=24, seed=0)
    path = extract(bb, train, "blocks.4.2", tmp_path / "cache", progress=False)
    full = heads.pooled_features(bb, train.examples, batch_size=8)
    fast = heads.features_from_activation_cache(bb, train, path, "blocks.4.2", batch_size=5)
    assert fast is not None and fast.shape == full.shape == (24, 1280)
    torch.testing.assert_close(fast, full, atol=1e-4, rtol=1e-4)
    assert (
        heads.features_from_activation_cache(
            bb, load_data("digits", split="train", limit=20, seed=0), path, "blocks.4.2"
        )
        is None
    )  # another dataset's cache
    # cached_features takes the fast path, and writes the same features as the slow one would
    monkeypatch.setattr(heads, "pooled_features", lambda *a, **k: pytest.fail("full forward pass run"))
    got = heads.cached_features(bb, train, 8, tmp_path / "feats", acts_cache=path, hook="blocks.4.2")
    torch.testing.assert_close(got, full, atol=1e-4, rtol=1e-4)
    monkeypatch.setattr(type(bb), "features_from_cached", lambda self, hook, acts: None)
    assert heads.features_from_activation_cache(bb, train, path, "blocks.4.2") is None


def test_classification_from_the_activation_cache_equals_the_full_forward_pass(tmp_path, monkeypatch):
    """topn_classification with the test split's activation cache (only the layers after the hook run) gives
    the same accuracy in every setting as with fresh forward passes; a cache of other data is not used."""
    from repro.backbones import load as load_backbone
    from repro.cache import ActivationCache, extract
    from repro.data import load as load_data

    bb = load_backbone("effnet-lite0", image_size=64)
    test = load_data("digits", split="test", limit=30, seed=0)
    path = extract(bb, test, "blocks.4.2", tmp_path / "cache", progress=False)
    head = fit_cosine_head(bb, test)
    sae = create("topk", bb.d_model("blocks.4.2"), 64, seed=0, k=8).eval()
    tokens = ActivationCache.open(path).tokens(0, None).view(len(test), -1, bb.d_model("blocks.4.2"))
    with torch.no_grad():
        code = (sae(tokens.reshape(-1, tokens.shape[-1]))[1] != 0).float().view(len(test), -1, 64).sum(1)
    stat = np.stack([code[np.asarray(test.labels) == c].sum(0).numpy() for c in range(len(test.class_names))])
    stat = stat + 1e-3  # every class can select n latents
    slow = topn_classification(bb, sae, "blocks.4.2", test, head, {"official": stat}, ns=(1, 5), batch_size=7)
    monkeypatch.setattr(type(bb), "activations", lambda *a, **k: pytest.fail("forward pass to the hook run"))
    fast = topn_classification(
        bb, sae, "blocks.4.2", test, head, {"official": stat}, ns=(1, 5), batch_size=7, acts_cache=path
    )
    assert fast["mean_pct"].keys() == slow["mean_pct"].keys() and len(fast["mean_pct"]) == 13
    # equal here; float rounding of the extraction's batching may flip a near-tie on another machine
    diff = [abs(fast["mean_pct"][s] - slow["mean_pct"][s]) for s in slow["mean_pct"]]
    assert sum(d == 0 for d in diff) >= 11 and max(diff) < 5
    other = load_data("digits", split="test", limit=20, seed=0)
    with pytest.raises(pytest.fail.Exception, match="forward pass to the hook"):
        topn_classification(bb, sae, "blocks.4.2", other, head, {"official": stat}, ns=(1,), acts_cache=path)
