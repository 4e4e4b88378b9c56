"""Sparse probing (SAEBench recipe) on cases with known answers: a planted label feature is selected and
probed perfectly, noise probes at chance, selection never reads the test split, balanced tasks are
balanced and spread over the other classes, results are deterministic and JSON-serialisable, and
degenerate inputs do not crash."""

from __future__ import annotations

import json
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from repro.evals.probing import (
    balanced_task,
    mean_over_datasets,
    probe_accuracy,
    select_top_k,
    sparse_probing,
)


def planted(n: int, n_classes: int, n_noise: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels uniform over classes; column c (c < n_classes) = 1[label == c], then Gaussian noise columns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    ind = (y[:, None] == np.arange(n_classes)[None, :]).astype(float)
    return np.concatenate([ind, rng.normal(size=(n, n_noise))], axis=1), y


def planted_shuffled(n: int, n_classes: int, n_noise: int, seed: int, cols: np.ndarray):
    """As :func:`planted`, but indicator column of class c placed at ``cols[c]``."""
    X, y = planted(n, n_classes, n_noise, seed)
    perm = np.empty(X.shape[1], dtype=np.int64)
    rest = [j for j in range(X.shape[1]) if j not in set(cols.tolist())]
    perm[cols] = np.arange(n_classes)
    perm[rest] = np.arange(n_classes, X.shape[1])
    return X[:, perm], y


# ----- planted feature: k=1 selects it and is perfect ----------------------------------------------------
def test_planted_feature_selected_and_perfect():
    cols = np.array([7, 2, 11, 0])  # class c's indicator sits at column cols[c]
    Xtr, ytr = planted_shuffled(400, 4, 12, 0, cols)
    Xte, yte = planted_shuffled(200, 4, 12, 1, cols)
    r = sparse_probing(Xtr, ytr, Xte, yte, ks=(1, 2, 5), seed=3, all_features=True)
    assert r["n_classes"] == 4 and r["n_train"] == 400 and r["n_test"] == 200 and r["ks"] == [1, 2, 5]
    for c in range(4):
        assert r["selected"][c]["k=1"] == [int(cols[c])]
        assert r["per_class"][c]["k=1"] == 1.0
        assert int(cols[c]) in r["selected"][c]["k=5"] and len(r["selected"][c]["k=5"]) == 5
    assert r["mean"]["k=1"] == 1.0
    assert set(r["mean"]) == {"k=1", "k=2", "k=5", "all"}


def test_planted_single_class_probe_accuracy_direct():
    X, y = planted(300, 3, 5, 4)
    yb = y == 1
    sel = select_top_k(X[:200], yb[:200], 1)
    assert sel.tolist() == [1]
    assert probe_accuracy(X[:200], yb[:200], X[200:], yb[200:], sel) == 1.0
    # torch tensors are accepted too
    assert (
        probe_accuracy(
            torch.tensor(X[:200]).float(),
            torch.tensor(yb[:200]),
            torch.tensor(X[200:]),
            torch.tensor(yb[200:]),
            torch.tensor([1]),
        )
        == 1.0
    )


# ----- noise: chance --------------------------------------------------------------------------------------
def test_noise_probes_at_chance():
    rng = np.random.default_rng(5)
    Xtr, ytr = rng.normal(size=(1000, 20)), rng.integers(0, 4, 1000)
    Xte, yte = rng.normal(size=(800, 20)), rng.integers(0, 4, 800)
    r = sparse_probing(Xtr, ytr, Xte, yte, all_features=True)
    for accs in r["per_class"].values():
        for a in accs.values():
            assert 0.4 <= a <= 0.6
    for a in r["mean"].values():
        assert abs(a - 0.5) < 0.06


# ----- selection reads the train split only ---------------------------------------------------------------
def test_selection_ignores_test_split():
    Xtr, ytr = planted(300, 3, 10, 6)
    Xte, yte = planted(200, 3, 10, 7)
    rng = np.random.default_rng(8)
    a = sparse_probing(Xtr, ytr, Xte, yte, ks=(1, 2, 5), seed=9)
    b = sparse_probing(Xtr, ytr, Xte * -3 + rng.normal(size=Xte.shape), yte, ks=(1, 2, 5), seed=9)
    assert a["selected"] == b["selected"]
    assert a["task_sizes"] == b["task_sizes"]
    assert a["per_class"] != b["per_class"]  # the perturbation does reach the test accuracies


def test_selected_matches_documented_draw_order():
    Xtr, ytr = planted(250, 3, 6, 10)
    Xte, yte = planted(150, 3, 6, 11)
    r = sparse_probing(Xtr, ytr, Xte, yte, ks=(2,), seed=12)
    rng = np.random.default_rng(12)
    for c in range(3):  # sorted classes; train task then test task, one stream
        itr = balanced_task(ytr, c, rng)
        ite = balanced_task(yte, c, rng)
        assert r["selected"][c]["k=2"] == select_top_k(Xtr[itr], ytr[itr] == c, 2).tolist()
        assert r["task_sizes"][c] == {"train": len(itr), "test": len(ite)}
        acc = probe_accuracy(Xtr[itr], ytr[itr] == c, Xte[ite], yte[ite] == c, r["selected"][c]["k=2"])
        assert r["per_class"][c]["k=2"] == acc


# ----- select_top_k ---------------------------------------------------------------------------------------
def test_select_top_k_scores_and_ties():
    X = np.array(
        [[0.0, 1.0, 1.0, 5.0, -3.0], [0.0, 1.0, 1.0, 5.0, -3.0], [0.0, 0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0, 0.0]]
    )
    y = np.array([1, 1, 0, 0])
    # |mean diff| = [0, 1, 1, 0, 3]: column 4 first, then the tie 1 < 2, then the tie 0 < 3
    assert select_top_k(X, y, 5).tolist() == [4, 1, 2, 0, 3]
    assert select_top_k(X, y, 2).tolist() == [4, 1]
    assert select_top_k(X, y, 99).tolist() == [4, 1, 2, 0, 3]
    assert select_top_k(X, np.ones(4), 2).tolist() == [0, 1]  # one-sided: all scores 0
    with pytest.raises(ValueError):
        select_top_k(X, y, 0)


# ----- balanced_task --------------------------------------------------------------------------------------
def test_balanced_task_balanced_and_spread():
    labels = np.repeat(np.arange(5), [40, 30, 30, 30, 30])
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    idx = balanced_task(labels, 0, np.random.default_rng(1))
    assert idx.dtype == np.int64 and len(np.unique(idx)) == len(idx)  # without replacement
    pos = np.flatnonzero(labels == 0)
    assert set(pos.tolist()) <= set(idx.tolist())  # every positive
    neg = idx[labels[idx] != 0]
    assert len(neg) == len(pos) == 40
    counts = Counter(labels[neg].tolist())
    assert set(counts) == {1, 2, 3, 4} and max(counts.values()) - min(counts.values()) <= 1
    assert not np.array_equal(idx, np.sort(idx))  # shuffled
    # deterministic for a given seed, different for another
    assert np.array_equal(idx, balanced_task(labels, 0, np.random.default_rng(1)))
    assert not np.array_equal(idx, balanced_task(labels, 0, np.random.default_rng(2)))


def test_balanced_task_small_other_classes():
    # 10 positives; other classes with 1, 2 and 20 examples: round-robin exhausts the small ones first
    labels = np.array([0] * 10 + [1] + [2] * 2 + [3] * 20)
    idx = balanced_task(labels, 0, np.random.default_rng(3))
    counts = Counter(labels[idx].tolist())
    assert counts == {0: 10, 1: 1, 2: 2, 3: 7}
    # not enough negatives: all of them are taken
    labels = np.array([0] * 10 + [1] * 2 + [2] * 3)
    idx = balanced_task(labels, 0, np.random.default_rng(4))
    assert sorted(idx.tolist()) == list(range(15))
    # an absent class gives an empty task; string labels work
    assert len(balanced_task(labels, 7, np.random.default_rng(5))) == 0
    s = np.array(["a", "b", "a", "c"])
    assert Counter(s[balanced_task(s, "a", np.random.default_rng(6))].tolist()) == {"a": 2, "b": 1, "c": 1}


# ----- determinism and serialisation ----------------------------------------------------------------------
def test_deterministic_and_json_serialisable():
    Xtr, ytr = planted(300, 3, 8, 13)
    Xte, yte = planted(150, 3, 8, 14)
    Xtr[:, 3:] += 0.8 * (ytr[:, None] == 0)  # make the probe non-trivial
    names = ["alpha", "beta", "gamma"]
    a = sparse_probing(Xtr, ytr, Xte, yte, seed=15, all_features=True, class_names=names)
    b = sparse_probing(
        torch.tensor(Xtr),
        torch.tensor(ytr),
        torch.tensor(Xte),
        torch.tensor(yte),
        seed=15,
        all_features=True,
        class_names=names,
    )
    assert a == b
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert set(a["per_class"]) == set(names) and a["seed"] == 15
    c = sparse_probing(Xtr, ytr, Xte, yte, seed=16, all_features=True, class_names=names)
    assert c["task_sizes"] == a["task_sizes"]  # same sizes, different draws
    assert isinstance(a["non_converged"], int)


def test_mean_over_datasets():
    r1 = {"mean": {"k=1": 0.6, "k=2": 0.8, "all": 0.9}}
    r2 = {"mean": {"k=1": 0.8, "k=2": 1.0}}
    m = mean_over_datasets([r1, r2])
    assert m == pytest.approx({"k=1": 0.7, "k=2": 0.9}) and list(m) == ["k=1", "k=2"]
    assert mean_over_datasets([]) == {}
    Xtr, ytr = planted(200, 2, 4, 17)
    Xte, yte = planted(100, 2, 4, 18)
    r = sparse_probing(Xtr, ytr, Xte, yte, ks=(1,))
    assert mean_over_datasets([r, r]) == {"k=1": 1.0}


# ----- degenerate inputs ----------------------------------------------------------------------------------
def test_degenerate_inputs_do_not_crash():
    rng = np.random.default_rng(19)
    Xtr, ytr = rng.normal(size=(60, 6)), np.array([0] * 30 + [1] * 29 + [2])  # class 2: one train example
    Xte, yte = rng.normal(size=(30, 6)), np.array([0] * 15 + [1] * 14 + [2])
    Xtr[:, 2] = 4.0  # a constant column
    Xte[:, 2] = 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning leaks
        r = sparse_probing(Xtr, ytr, Xte, yte, ks=(1, 2, 5), all_features=True)
    assert r["n_classes"] == 3 and r["task_sizes"][2] == {"train": 2, "test": 2}
    assert all(0.0 <= a <= 1.0 for accs in r["per_class"].values() for a in accs.values())
    json.dumps(r)
    # all-constant features
    r = sparse_probing(np.ones((40, 3)), np.arange(40) % 2, np.ones((20, 3)), np.arange(20) % 2, ks=(1,))
    assert r["mean"]["k=1"] == 0.5
    # a class only in train is skipped; a one-class train set predicts that class
    r = sparse_probing(Xtr, ytr, Xte[:29], yte[:29], ks=(1,))
    assert r["n_classes"] == 2
    assert probe_accuracy(Xtr[:30], ytr[:30], Xte, yte) == pytest.approx(15 / 30)
    # one class only: the balanced task has no negatives
    r = sparse_probing(Xtr[:30], ytr[:30], Xte[:15], yte[:15], ks=(1,))
    assert r["per_class"][0]["k=1"] == 1.0
    # no shared class
    r = sparse_probing(Xtr[:30], ytr[:30], Xte[15:29], yte[15:29], ks=(1,))
    assert r["n_classes"] == 0 and np.isnan(r["mean"]["k=1"])
    with pytest.raises(ValueError):
        sparse_probing(Xtr, ytr, Xte[:, :3], yte)


def test_non_converged_fits_counted_not_leaked(monkeypatch):
    import repro.evals.probing as probing

    monkeypatch.setattr(probing, "MAX_ITER", 1)
    rng = np.random.default_rng(20)
    X, y = rng.normal(size=(300, 10)), rng.integers(0, 3, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked ConvergenceWarning would raise here
        r = sparse_probing(X[:200], y[:200], X[200:], y[200:], ks=(1, 5), all_features=True)
    assert 0 < r["non_converged"] <= 9
