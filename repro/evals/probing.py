"""Sparse probing (the SAEBench recipe, ``shared/reference/metrics.md`` §8): how well the k most
label-discriminative dimensions of a pooled representation linearly predict a class.

Pure functions on arrays (numpy arrays or torch tensors, any device; features are cast to float64 numpy).
The pooled features come from the caller: for SAE latents, encode every token with the SAE first, then
mean-pool the codes over the real (non-BOS/pad/EOS) tokens of each text or image (encode-then-pool, not
pool-then-encode); for the reference rows, mean-pool the raw activations with the same mask. Nothing here
touches a backbone or an SAE.

Notation: X ∈ R^{n×F} pooled features (one row per text/image), y ∈ {labels}^n, a class c.

1. Task (:func:`balanced_task`): one-vs-rest for c. P = {i : y_i = c} (all kept), negatives drawn evenly
   from the other classes present (round-robin over them, without replacement) until |N| = |P| or they run
   out; target = 1[y_i = c]. Built separately on the train split and on the test split.
2. Selection (:func:`select_top_k`), on the balanced TRAIN task only:
   s_j = |mean_{i∈P} X_ij − mean_{i∈N} X_ij|, S_k = the k indices of largest s_j (ties: lower index first).
3. Probe (:func:`probe_accuracy`): sklearn ``LogisticRegression(C=1.0, max_iter=1000, solver="lbfgs")``
   (L2 penalty, the default ``l1_ratio=0``; intercept fitted) on the columns S_k of the train task, with
   NO standardisation (SAEBench trains on the raw pooled values); metric = accuracy on the test task.
4. Aggregate (:func:`sparse_probing`, :func:`mean_over_datasets`): acc_k = (1/C) Σ_c acc_{c,k} over the
   C classes present in both splits, then the unweighted mean over datasets.

k ∈ {1, 2, 5} by default; ``all_features=True`` adds the probe on every column (key ``"all"``; SAEBench's
own all-latent probe is a GPU-trained one, 100 epochs, so "all" here is the sklearn analogue). Results
are plain Python ``int``/``float``/``list``/``dict`` (JSON-serialisable).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import Tensor

C_REG = 1.0
MAX_ITER = 1000


def _features(a: Any, name: str = "X") -> np.ndarray:
    """(n, F) float64 numpy copy-or-view of an array or tensor."""
    if isinstance(a, Tensor):
        a = a.detach().cpu().double().numpy()
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_examples, n_features), got shape {x.shape}")
    return x


def _labels(a: Any, name: str = "labels") -> np.ndarray:
    """1-D numpy labels (any dtype numpy can compare: ints, strings, bools)."""
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    y = np.asarray(a)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    return y


def _py(v: Any) -> Any:
    """numpy scalar -> Python scalar (for JSON keys and values)."""
    return v.item() if isinstance(v, np.generic) else v


def balanced_task(labels: np.ndarray | Tensor, cls: Any, rng: np.random.Generator) -> np.ndarray:
    """Indices (int64) of a balanced one-vs-rest task for class ``cls``; the target is ``labels[idx] == cls``.

    Scheme, with exactly these draws from ``rng`` in this order:

    1. positives P = every index with ``labels == cls`` (all kept, in index order);
    2. the other classes present, sorted, are put in a random order: ``order = rng.permutation(others)``;
    3. for each class in ``order`` (in that order), its indices are shuffled: ``rng.permutation(idx_class)``;
    4. round-robin: cycle over ``order`` taking the next unused index of each class that still has one,
       stopping as soon as #negatives = |P| or every other class is exhausted (so #neg = min(|P|, #others),
       and, when every other class has enough examples, the per-class negative counts differ by at most 1;
       the earlier classes of ``order`` get the extra ones);
    5. the union P ∪ N is shuffled: ``rng.permutation(concat(P, N))``.

    An absent class gives an empty task (the draws of steps 2, 3 and 5 still happen)."""
    y = _labels(labels)
    pos = np.flatnonzero(y == cls)
    others = np.unique(y[y != cls])
    order = rng.permutation(others)
    pools = [rng.permutation(np.flatnonzero(y == o)) for o in order]
    neg: list[int] = []
    depth = 0
    while len(neg) < len(pos):
        live = [p for p in pools if depth < len(p)]
        if not live:
            break
        for p in live:
            if len(neg) == len(pos):
                break
            neg.append(int(p[depth]))
        depth += 1
    return rng.permutation(np.concatenate([pos, np.asarray(neg, dtype=np.int64)]).astype(np.int64))


def select_top_k(X_train: np.ndarray | Tensor, y_train_binary: np.ndarray | Tensor, k: int) -> np.ndarray:
    """Indices (int64, length min(k, F)) of the k columns with the largest s_j = |mean(pos) − mean(neg)|.

    Reads only the training rows given. ``y_train_binary`` is truthy for positives. Ties are broken by
    the lower index (``np.argsort(-s, kind="stable")``); NaN scores rank last. If either side is empty
    every score is 0, so the first k columns are returned."""
    X = _features(X_train, "X_train")
    y = _labels(y_train_binary, "y_train_binary").astype(bool)
    if len(y) != len(X):
        raise ValueError(f"X_train has {len(X)} rows but y_train_binary has {len(y)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if y.all() or not y.any():
        score = np.zeros(X.shape[1])
    else:
        score = np.abs(X[y].mean(axis=0) - X[~y].mean(axis=0))
    return np.argsort(-score, kind="stable")[: min(k, X.shape[1])].astype(np.int64)


def _checked_splits(X_train, y_train, X_test, y_test, names: tuple[str, str, str, str]) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_test, y_test) as arrays, with rows matching labels and equal column counts."""
    Xtr, Xte = _features(X_train, names[0]), _features(X_test, names[2])
    ytr, yte = _labels(y_train, names[1]), _labels(y_test, names[3])
    if len(Xtr) != len(ytr) or len(Xte) != len(yte):
        raise ValueError(f"rows/labels mismatch: train {len(Xtr)}/{len(ytr)}, test {len(Xte)}/{len(yte)}")
    if Xtr.shape[1] != Xte.shape[1]:
        raise ValueError(f"train has {Xtr.shape[1]} columns but test has {Xte.shape[1]}")
    return Xtr, ytr, Xte, yte


def _fit_probe(X_train, y_train, X_test, y_test, features: Any = None) -> tuple[float, bool]:
    """(test accuracy, converged) of the logistic probe; see :func:`probe_accuracy`."""
    Xtr, ytr, Xte, yte = _checked_splits(X_train, y_train, X_test, y_test, ("X_train", "y_train", "X_test", "y_test"))
    if features is not None:
        cols = np.asarray(features, dtype=np.int64).reshape(-1)
        Xtr, Xte = Xtr[:, cols], Xte[:, cols]
    if Xtr.shape[1] == 0:
        raise ValueError("no feature columns to probe")
    if len(Xtr) == 0 or len(Xte) == 0:
        return float("nan"), True
    classes = np.unique(ytr)
    if len(classes) == 1:  # degenerate: a one-class training set predicts that class
        return float(np.mean(yte == classes[0])), True
    clf = LogisticRegression(C=C_REG, max_iter=MAX_ITER, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xtr, ytr)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:  # pass every other warning through
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return float(np.mean(clf.predict(Xte) == yte)), converged


def probe_accuracy(X_train, y_train, X_test, y_test, features: Sequence[int] | np.ndarray | None = None) -> float:
    """Test accuracy of ``LogisticRegression(C=1.0, max_iter=1000, solver="lbfgs")`` (L2) fitted on the
    columns ``features`` (all columns if None) of the training rows.

    No standardisation: the raw pooled values are used, as SAEBench does. Constant columns are harmless.
    A training set with a single class predicts that class (accuracy = fraction of test labels equal to
    it); an empty train or test set gives NaN. sklearn's ``ConvergenceWarning`` is silenced inside this
    call only (:func:`sparse_probing` counts the non-converged fits); other warnings pass through."""
    return _fit_probe(X_train, y_train, X_test, y_test, features)[0]


def _name(cls: Any, class_names: Sequence | Mapping | None) -> Any:
    if class_names is None:
        return _py(cls)
    return _py(class_names[_py(cls)])


def sparse_probing(
    train_X,
    train_labels,
    test_X,
    test_labels,
    ks: Sequence[int] = (1, 2, 5),
    seed: int = 42,
    all_features: bool = False,
    class_names: Sequence | Mapping | None = None,
) -> dict:
    """SAEBench sparse probing on one dataset of pooled features (see the module docstring).

    Classes: those present in both splits, in sorted order. One generator ``np.random.default_rng(seed)``
    is shared by all draws, in this order: for each class, :func:`balanced_task` on ``train_labels``, then
    :func:`balanced_task` on ``test_labels`` (so the test task is an independent, later draw of the same
    stream; neither depends on the feature values). For each k, the columns are chosen by
    :func:`select_top_k` on the train task only, then probed (:func:`probe_accuracy`) on the test task.

    Returns (JSON-serialisable):

    - ``per_class``: {name: {"k=1": acc, ..., ["all": acc]}}, name = ``class_names[label]`` if given,
      else the label itself;
    - ``mean``: {"k=1": mean over classes, ...} (NaN when no class is shared by both splits);
    - ``selected``: {name: {"k=1": [column indices], ...}};
    - ``task_sizes``: {name: {"train": n, "test": n}} (rows of each balanced task);
    - ``n_classes``, ``n_train``, ``n_test`` (rows of the inputs), ``ks``, ``seed``, ``all_features``;
    - ``non_converged``: number of probe fits for which lbfgs raised a ``ConvergenceWarning``."""
    Xtr, ytr, Xte, yte = _checked_splits(
        train_X, train_labels, test_X, test_labels, ("train_X", "train_labels", "test_X", "test_labels")
    )
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {ks}")
    keys = [f"k={k}" for k in ks] + (["all"] if all_features else [])
    rng = np.random.default_rng(seed)
    per_class: dict = {}
    selected: dict = {}
    sizes: dict = {}
    non_converged = 0
    for c in np.intersect1d(np.unique(ytr), np.unique(yte)):
        itr = balanced_task(ytr, c, rng)
        ite = balanced_task(yte, c, rng)
        xa, ya, xb, yb = Xtr[itr], ytr[itr] == c, Xte[ite], yte[ite] == c
        name = _name(c, class_names)
        if name in per_class:
            raise ValueError(f"two classes share the name {name!r}")
        accs: dict[str, float] = {}
        sel: dict[str, list[int]] = {}
        for k in ks:
            cols = select_top_k(xa, ya, k)
            accs[f"k={k}"], ok = _fit_probe(xa, ya, xb, yb, cols)
            sel[f"k={k}"] = [int(j) for j in cols]
            non_converged += not ok
        if all_features:
            accs["all"], ok = _fit_probe(xa, ya, xb, yb)
            non_converged += not ok
        per_class[name], selected[name] = accs, sel
        sizes[name] = {"train": int(len(itr)), "test": int(len(ite))}
    mean = {key: float(np.mean([a[key] for a in per_class.values()])) if per_class else float("nan") for key in keys}
    return {
        "per_class": per_class,
        "mean": mean,
        "n_classes": len(per_class),
        "n_train": int(len(Xtr)),
        "n_test": int(len(Xte)),
        "ks": ks,
        "seed": int(seed),
        "all_features": bool(all_features),
        "selected": selected,
        "task_sizes": sizes,
        "non_converged": int(non_converged),
    }


def mean_over_datasets(results: Sequence[dict]) -> dict:
    """{key: unweighted mean over datasets of ``result["mean"][key]``} for the keys present in every
    result's ``mean`` (in the first result's order); {} for no results."""
    if not results:
        return {}
    common = [k for k in results[0]["mean"] if all(k in r["mean"] for r in results)]
    return {k: float(np.mean([r["mean"][k] for r in results])) for k in common}
