"""Ground-truth metrics on cases whose answers are known: dictionary matching, L0 tracking of the true
count, per-feature precision/recall, simple-vs-complex L0, decoder directions of every SAE kind, and
an SAE set to the true dictionary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repro.evals.ground_truth import (
    decoder_directions,
    latent_precision_recall,
    match_dictionary,
    simple_vs_complex,
    sparsity_tracking,
)
from repro.sae import KINDS, create
from repro.synthetic import SyntheticSpec


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    w = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return w / w.norm(dim=1, keepdim=True)


# ----- match_dictionary ----------------------------------------------------------------------------------
def test_permuted_signed_copy_is_perfect():
    true = unit(64, 32, 0)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    signs = torch.where(torch.arange(64) % 3 == 0, -1.0, 1.0).double()[:, None]
    learned = 2.5 * true[perm] * signs  # any scale, order and sign
    m = match_dictionary(learned, true)
    assert m["mcc"] == pytest.approx(1.0) and m["recovered"] == 1.0 and m["mean_max_cos"] == pytest.approx(1.0)
    assert np.array_equal(perm[m["matched"]].numpy(), np.arange(64))  # learned row matched[i] is feature i
    assert m["matched"].dtype == np.int64 and m["cosines"].shape == (64,)


def test_extra_learned_latents_do_not_hurt():
    true = unit(32, 64, 0)
    learned = torch.cat([unit(100, 64, 5), true.flip(0)]).numpy()  # numpy input, more latents than features
    m = match_dictionary(learned, true)
    assert m["mcc"] == pytest.approx(1.0) and m["recovered"] == 1.0
    assert np.array_equal(m["matched"], 100 + np.arange(31, -1, -1))


def test_random_directions_score_low():
    m = match_dictionary(unit(128, 256, 1), unit(128, 256, 2))
    assert m["mcc"] < 0.5 and m["recovered"] == 0.0 and m["mean_max_cos"] < 0.5


def test_half_the_features_recovered():
    true = unit(64, 128, 0)
    learned = torch.cat([true[:32], unit(32, 128, 9)])
    m = match_dictionary(learned, true)
    assert m["recovered"] == 0.5
    assert np.array_equal(m["matched"][:32], np.arange(32))
    fewer = match_dictionary(true[:32], true)  # fewer learned than true: the rest count 0
    assert fewer["recovered"] == 0.5 and fewer["mcc"] == pytest.approx(0.5)
    assert (fewer["matched"][32:] == -1).all() and (fewer["cosines"][32:] == 0).all()


def test_zero_and_nonfinite_rows_and_threshold():
    true = unit(4, 8, 0)
    learned = torch.cat([torch.zeros(2, 8, dtype=torch.float64), torch.full((1, 8), math.nan), true[:2]])
    m = match_dictionary(learned, true)
    assert np.isfinite(m["cosines"]).all()
    assert m["recovered"] == 0.5 and m["mcc"] == pytest.approx(0.5)
    # a learned row at cosine 0.8 with its feature: recovered at threshold 0.7, not at 0.9
    e = torch.eye(8, dtype=torch.float64)
    f, tilted = e[1:2], 0.8 * e[1:2] + 0.6 * e[0:1]
    assert match_dictionary(tilted, f)["cosines"][0] == pytest.approx(0.8)
    assert match_dictionary(tilted, f, threshold=0.7)["recovered"] == 1.0
    assert match_dictionary(tilted, f)["recovered"] == 0.0


def test_mean_max_cos_allows_reuse():
    true = unit(4, 16, 0)
    learned = true[:1].repeat(4, 1)  # one feature learned four times
    m = match_dictionary(learned, true)
    assert m["cosines"].max() == pytest.approx(1.0) and m["recovered"] == 0.25
    assert m["mean_max_cos"] >= m["mcc"]


def test_match_dictionary_rejects_width_mismatch():
    with pytest.raises(ValueError, match="same d"):
        match_dictionary(unit(4, 8, 0), unit(4, 9, 0))


# ----- sparsity_tracking ----------------------------------------------------------------------------------
def test_l0_equal_to_true_count():
    counts = torch.randint(1, 9, (500,), generator=torch.Generator().manual_seed(0))
    t = sparsity_tracking(counts, counts)
    assert t["spearman"] == pytest.approx(1.0) and t["pearson"] == pytest.approx(1.0)
    assert t["slope"] == pytest.approx(1.0) and t["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert not t["constant"] and t["constant_input"] is None
    assert set(t["by_count"]) == set(range(1, 9))
    assert t["by_count"][3]["mean_l0"] == 3.0 and t["by_count"][3]["n"] == int((counts == 3).sum())
    affine = sparsity_tracking(counts.numpy(), 2 * counts.numpy() + 5)
    assert affine["slope"] == pytest.approx(2.0) and affine["intercept"] == pytest.approx(5.0)
    reversed_ = sparsity_tracking(counts, 10 - counts)
    assert reversed_["spearman"] == pytest.approx(-1.0)


def test_constant_l0_gives_nan_with_flag():
    counts = np.array([1, 2, 3, 4, 5, 6])
    t = sparsity_tracking(counts, np.full(6, 32))
    assert math.isnan(t["spearman"]) and math.isnan(t["pearson"])
    assert t["constant"] and t["constant_input"] == "l0"
    assert t["slope"] == 0.0 and t["intercept"] == 32.0
    c = sparsity_tracking(np.full(6, 4), counts)
    assert c["constant_input"] == "true_counts" and math.isnan(c["slope"]) and math.isnan(c["spearman"])
    assert c["by_count"] == {4: {"n": 6, "mean_l0": 3.5, "median_l0": 3.5}}


# ----- latent_precision_recall ---------------------------------------------------------------------------
def test_precision_recall_perfect_and_constructed():
    g = torch.Generator().manual_seed(0)
    coeff = (torch.rand(200, 5, generator=g) < 0.3) * torch.rand(200, 5, generator=g).add(0.5)
    acts = torch.zeros(200, 7)
    matched = np.array([6, 0, 3, 2, 4])
    acts[:, matched] = coeff * 3.0
    r = latent_precision_recall(acts, coeff, matched)
    assert r["mean_precision"] == 1.0 and r["mean_recall"] == 1.0 and r["mean_f1"] == 1.0
    assert r["n_precision"] == r["n_recall"] == r["n_f1"] == r["n_matched"] == 5

    # feature 0 present in tokens 0..3, its latent fires in tokens 2..7: precision 2/6, recall 2/4
    # feature 1 unmatched; feature 2's latent never fires; feature 3 is never present, its latent fires once
    coeff = np.zeros((10, 4))
    coeff[0:4, 0] = 1.0
    coeff[0:5, 1] = 1.0
    coeff[5:, 2] = 2.0
    acts = np.zeros((10, 3))
    acts[2:8, 0] = -0.5  # any nonzero value counts as firing
    acts[0, 2] = 1.0
    r = latent_precision_recall(acts, coeff, np.array([0, -1, 1, 2]))
    assert r["precision"][0] == pytest.approx(1 / 3) and r["recall"][0] == pytest.approx(0.5)
    assert r["f1"][0] == pytest.approx(0.4)
    assert np.isnan(r["precision"][1]) and np.isnan(r["recall"][1]) and np.isnan(r["f1"][1])
    assert np.isnan(r["precision"][2]) and r["recall"][2] == 0.0 and np.isnan(r["f1"][2])
    assert r["precision"][3] == 0.0 and np.isnan(r["recall"][3])
    assert r["mean_precision"] == pytest.approx(1 / 6) and r["n_precision"] == 2
    assert r["mean_recall"] == pytest.approx(0.25) and r["n_recall"] == 2
    assert r["mean_f1"] == pytest.approx(0.4) and r["n_f1"] == 1 and r["n_matched"] == 3


def test_precision_recall_validates():
    with pytest.raises(ValueError, match="matched"):
        latent_precision_recall(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="d_sae"):
        latent_precision_recall(np.zeros((3, 2)), np.zeros((3, 2)), np.array([0, 5]))


# ----- simple_vs_complex ----------------------------------------------------------------------------------
def test_simple_vs_complex():
    counts = np.array([2] * 6 + [6] * 4 + [3])
    l0 = np.array([1, 2, 2, 3, 2, 2, 5, 6, 7, 6, 9])
    s = simple_vs_complex(counts, l0, simple=2, complex=6)
    assert s["simple"]["n"] == 6 and s["complex"]["n"] == 4 and s["n_other"] == 1
    assert s["simple"]["mean"] == pytest.approx(2.0) and s["complex"]["mean"] == pytest.approx(6.0)
    assert s["mean_ratio"] == pytest.approx(3.0) and s["mean_difference"] == pytest.approx(4.0)
    assert s["auc"] == 1.0
    assert s["simple"]["quantiles"]["p50"] == 2.0
    assert len(s["edges"]) == 11 and s["simple"]["hist"].tolist() == [0, 1, 4, 1, 0, 0, 0, 0, 0, 0]
    assert s["complex"]["hist"].sum() == 4 and s["complex"]["hist"][6] == 2
    same = simple_vs_complex(counts, np.full(11, 4), simple=2, complex=6)
    assert same["auc"] == 0.5 and same["mean_ratio"] == 1.0
    empty = simple_vs_complex(counts, l0, simple=2, complex=7)
    assert empty["complex"]["n"] == 0 and math.isnan(empty["auc"])


# ----- decoder directions and a perfect SAE ---------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_decoder_directions_of_every_kind(kind):
    sae = create(kind, 12, 40, **({"k": 4} if kind in ("topk", "batchtopk") else {}))
    d = decoder_directions(sae)
    assert d.shape == (40, 12) and d.dtype == torch.float64 and not d.requires_grad
    if hasattr(sae, "concepts"):
        assert torch.allclose(d, (sae.concepts @ sae.W_v).double(), atol=1e-6)
    else:
        assert torch.equal(d, sae.W_dec.detach().double())


def test_decoder_direction_is_what_one_latent_writes():
    """For the official method, decoding a one-hot activation writes ||x|| times its direction."""
    sae = create("sparsemax_attention", 12, 40)
    acts = torch.zeros(1, 40)
    acts[0, 7] = 1.0
    written = sae.decode(acts, torch.ones(1, 1))
    assert torch.allclose(written[0].double(), decoder_directions(sae)[7], atol=1e-5)


def test_sae_set_to_the_true_dictionary_is_perfect():
    """A topk SAE whose decoder rows are the true features (permuted, inside extra latents) and whose
    encoder inverts the dictionary recovers every feature, fires exactly with it, and its L0 equals the
    true count."""
    spec = SyntheticSpec(d_in=32, n_features=16, counts={"kind": "fixed", "k": 3})
    true = spec.dictionary()
    x, coeff = spec.sample(2000, torch.Generator().manual_seed(0))
    sae = create("topk", 32, 48, k=3)
    slots = torch.randperm(48, generator=torch.Generator().manual_seed(1))[:16]
    with torch.no_grad():
        sae.W_dec[slots] = true
        sae.W_enc.zero_()
        sae.W_enc[:, slots] = torch.linalg.pinv(true)
    m = match_dictionary(decoder_directions(sae), true)
    assert m["mcc"] == pytest.approx(1.0) and m["recovered"] == 1.0
    assert np.array_equal(m["matched"], slots.numpy())
    with torch.no_grad():
        x_hat, acts = sae(x)
    assert torch.allclose(x_hat, x, atol=1e-4)
    r = latent_precision_recall(acts, coeff, m["matched"])
    assert r["mean_precision"] == 1.0 and r["mean_recall"] == 1.0 and r["n_f1"] == 16
    t = sparsity_tracking(spec.true_counts(coeff), (acts != 0).sum(-1))
    assert t["constant"] and t["by_count"] == {3: {"n": 2000, "mean_l0": 3.0, "median_l0": 3.0}}
