"""Offline interpretability scores on top-example tables whose answers are known by hand: pure, split and
uniform latents, weighted vs unweighted distributions, missing slots, ``top`` truncation, exclusion of
latents with too few examples, the official top-10 entropy, firing statistics and strict JSON output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from repro.evals.interpretability import (
    firing_stats,
    interpretability_scores,
    label_distributions,
    label_entropy,
    purity,
)


def table(rows: list[tuple[list[float], list[int]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, labels) (len(rows), k): each row padded with -inf values and label -1."""
    v, y = np.full((len(rows), k), -np.inf), np.full((len(rows), k), -1, dtype=np.int64)
    for i, (vals, labs) in enumerate(rows):
        v[i, : len(vals)], y[i, : len(labs)] = vals, labs
    return v, y


def desc(n: int, start: float = 10.0) -> list[float]:
    return list(np.linspace(start, 1.0, n))


def test_pure_split_and_uniform_latents():
    pure = (desc(50), [3] * 50)
    split = (desc(50), [0, 1] * 25)
    uniform = (desc(50), [c for c in range(5) for _ in range(10)])
    v, y = table([pure, split, uniform], 60)
    for weighted in (False, True):
        p, n = label_distributions(v, y, 5, top=50, weighted=weighted)
        assert n.tolist() == [50, 50, 50] and n.dtype == np.int64 and p.dtype == np.float64
        assert p[0].tolist() == [0, 0, 0, 1, 0]
        assert purity(p)[0] == 1.0 and label_entropy(p)[0] == 0.0
    p, _ = label_distributions(v, y, 5)
    np.testing.assert_allclose(purity(p), [1.0, 0.5, 0.2])
    np.testing.assert_allclose(label_entropy(p), [0.0, math.log(2), math.log(5)], atol=1e-12)

    r = interpretability_scores(v, y, 5)
    assert r["n_latents"] == r["n_alive"] == r["n_scored"] == 3 and r["n_too_few"] == 0 and r["top"] == 50
    assert r["per_latent"]["purity"] == pytest.approx([1.0, 0.5, 0.2])
    assert r["per_latent"]["entropy"] == pytest.approx([0.0, math.log(2), math.log(5)], abs=1e-12)
    assert r["purity"]["mean"] == pytest.approx(1.7 / 3) and r["purity"]["median"] == pytest.approx(0.5)
    assert r["entropy"]["median"] == pytest.approx(math.log(2))
    # histograms: 20 bins on [0, 1] and on [0, ln 5]; ln 5 itself lands in the last bin
    assert r["purity"]["edges"][0] == 0.0 and r["purity"]["edges"][-1] == 1.0 and len(r["purity"]["hist"]) == 20
    assert r["entropy"]["edges"][-1] == pytest.approx(math.log(5))
    assert r["purity"]["hist"][4] == r["purity"]["hist"][10] == r["purity"]["hist"][19] == 1
    assert r["entropy"]["hist"][0] == r["entropy"]["hist"][19] == 1 and sum(r["entropy"]["hist"]) == 3
    # pooled labels: 0: 25 + 10, 1: 25 + 10, 2: 10, 3: 50 + 10, 4: 10 out of 150
    q = np.array([35, 35, 10, 60, 10]) / 150
    assert r["baseline"]["purity"] == pytest.approx(0.4)
    assert r["baseline"]["entropy"] == pytest.approx(float(-(q * np.log(q)).sum()))


def test_weighted_differs_from_unweighted():
    v, y = table([([3.0, 1.0], [0, 1]), ([2.0, 1.0, 1.0], [2, 0, 0])], 4)
    pu, _ = label_distributions(v, y, 3)
    pw, _ = label_distributions(v, y, 3, weighted=True)
    np.testing.assert_allclose(pu, [[0.5, 0.5, 0.0], [2 / 3, 0.0, 1 / 3]])
    np.testing.assert_allclose(pw, [[0.75, 0.25, 0.0], [0.5, 0.0, 0.5]])
    h = label_entropy(pw)[0]
    assert h == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    # torch input gives the same
    pt, _ = label_distributions(torch.tensor(v, dtype=torch.float32), torch.tensor(y), 3, weighted=True)
    np.testing.assert_allclose(pt, pw)


def test_missing_slots_and_too_few_examples():
    v = np.array(
        [
            [5.0, np.nan, 4.0, 0.0, 3.0, -np.inf],
            [2.0, 1.0, -np.inf, -np.inf, -np.inf, -np.inf],
            [-np.inf, np.nan, np.nan, -np.inf, np.nan, -np.inf],
        ]
    )
    y = np.array(
        [
            [1, 9, 1, 7, 2, -5],  # invalid slots carry out-of-range labels that must be ignored
            [0, 0, 99, 99, 99, 99],
            [99] * 6,
        ]
    )
    p, n = label_distributions(v, y, 3, top=5)
    assert n.tolist() == [3, 2, 0]
    np.testing.assert_allclose(p[0], [0, 2 / 3, 1 / 3])
    assert np.isnan(p[2]).all() and np.isnan(purity(p)[2]) and np.isnan(label_entropy(p)[2])

    r = interpretability_scores(v, y, 3, top=5, official_top=3, min_examples=3)
    assert r["n_alive"] == 2 and r["n_scored"] == 1 and r["n_too_few"] == 1  # latent 1 has 2 < 3 examples
    assert r["per_latent"]["n_examples"] == [3, 2, 0] and r["per_latent"]["scored"] == [True, False, False]
    assert r["per_latent"]["purity"][1] == 1.0 and r["per_latent"]["purity"][2] is None
    assert r["purity"]["mean"] == pytest.approx(2 / 3) and sum(r["purity"]["hist"]) == 1
    # official: weighted over the first 3 valid (values 5, 4, 3; labels 1, 1, 2); NaN below 3 valid
    q = np.array([9, 3]) / 12
    assert r["per_latent"]["entropy_official"][0] == pytest.approx(float(-(q * np.log(q)).sum()))
    assert r["per_latent"]["entropy_official"][1:] == [None, None]
    assert r["entropy_official"]["n_scored"] == 1 and r["entropy_official"]["n_too_few"] == 1
    # default min_examples = top = 5: nobody is scored; aggregates are None, not NaN
    r = interpretability_scores(v, y, 3, top=5, official_top=3)
    assert r["n_scored"] == 0 and r["n_too_few"] == 2 and r["purity"]["mean"] is None
    assert r["baseline"] == {"purity": None, "entropy": None}
    json.dumps(r, allow_nan=False)
    # an explicit alive mask: the latent without examples counts as alive but too few
    r = interpretability_scores(v, y, 3, top=5, official_top=3, min_examples=1, alive=np.array([True, True, True]))
    assert r["n_alive"] == 3 and r["n_scored"] == 2 and r["n_too_few"] == 1


def test_top_truncation():
    # 50 examples of label 0, then 30 of label 1: top=50 sees only label 0, top=80 sees both
    v, y = table([(desc(80), [0] * 50 + [1] * 30)], 100)
    p, n = label_distributions(v, y, 2, top=50)
    assert n[0] == 50 and p[0].tolist() == [1.0, 0.0]
    p, n = label_distributions(v, y, 2, top=80)
    np.testing.assert_allclose(p[0], [50 / 80, 30 / 80])
    # truncation counts valid slots only: a NaN hole does not use up one of the `top` places
    v2, y2 = np.array([[4.0, np.nan, 3.0, 2.0]]), np.array([[0, 1, 0, 1]])
    p, n = label_distributions(v2, y2, 2, top=2)
    assert n[0] == 2 and p[0].tolist() == [1.0, 0.0]
    # the official score uses the first 10 only, weighted
    r = interpretability_scores(v, y, 2, top=80)
    assert r["per_latent"]["entropy_official"] == [0.0] and r["per_latent"]["purity"] == [pytest.approx(50 / 80)]


def test_label_out_of_range_raises():
    with pytest.raises(ValueError):
        label_distributions(np.array([[1.0, 0.5]]), np.array([[0, 2]]), 2)
    with pytest.raises(ValueError):
        label_distributions(np.ones((2, 3)), np.zeros((2, 4), dtype=int), 2)


def test_firing_stats():
    s = firing_stats(
        np.array([0, 4, 10]),
        np.array([0.0, 2.0, 30.0]),
        n_tokens=20,
        example_fire_count=torch.tensor([0, 1, 2]),
        n_examples=4,
    )
    assert s["n_dead"] == 1 and s["n_tokens"] == 20 and s["n_latents"] == 3 and s["n_examples"] == 4
    assert s["firing_rate"] == pytest.approx([0.0, 0.2, 0.5])
    assert s["mean_act"] == [None, 0.5, 3.0]
    assert s["example_firing_rate"] == pytest.approx([0.0, 0.25, 0.5])
    assert json.loads(json.dumps(s, allow_nan=False))["mean_act"][0] is None
    assert "example_firing_rate" not in firing_stats([1], [1.0], 1)
    with pytest.raises(ValueError):
        firing_stats([1], [1.0], 1, example_fire_count=[1])


def test_random_result_is_strict_json():
    g = np.random.default_rng(0)
    v = -np.sort(-g.exponential(size=(40, 60)), axis=1)
    v[g.random((40, 60)) < 0.3] = np.nan
    v[:5] = -np.inf  # five dead latents
    y = g.integers(0, 7, size=(40, 60))
    r = interpretability_scores(v, y, 7, min_examples=10)
    json.dumps(r, allow_nan=False)
    assert r["n_alive"] == 35 and r["n_scored"] + r["n_too_few"] == 35
    assert all(len(x) == 40 for x in r["per_latent"].values())
    pur = [x for x, s in zip(r["per_latent"]["purity"], r["per_latent"]["scored"], strict=True) if s]
    assert r["purity"]["mean"] == pytest.approx(float(np.mean(pur))) and sum(r["purity"]["hist"]) == len(pur)
    assert 1 / 7 <= min(pur) and max(pur) <= 1
    assert 0 <= r["baseline"]["entropy"] <= math.log(7)
