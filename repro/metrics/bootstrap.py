"""Percentile bootstrap intervals over examples: a class-balanced accuracy (stratified by class) and a ratio
of sums such as the NMSE. Seeded, so that every setting of one run uses the same draws."""

from __future__ import annotations

import numpy as np


def bootstrap_balanced_accuracy_ci(
    hits: np.ndarray, labels: np.ndarray, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Stratified percentile bootstrap of a class-balanced accuracy in percent,
    A = 100 · mean_c (Σ_{e ∈ c} hit_e / n_c) over the classes c present in ``labels``: each of the ``n_boot``
    resamples (seeded) redraws the n_c examples of every class with replacement, so class sizes stay fixed
    and A keeps its definition. Returns value, lo, hi (the ``level`` interval), n_examples, n_boot, level,
    unit. With one seed, every setting of one run uses the same draws (common random numbers)."""
    hit = np.asarray(hits, dtype=np.float64)
    lab = np.asarray(labels)
    if hit.shape != lab.shape or hit.ndim != 1 or len(hit) == 0:
        raise ValueError("bootstrap_balanced_accuracy_ci needs hits and labels as 1-d arrays of one nonzero length")
    classes = np.unique(lab)
    value = 100 * float(np.mean([hit[lab == c].mean() for c in classes]))
    rng = np.random.default_rng(seed)
    acc = np.zeros(n_boot)
    for c in classes:
        h = hit[lab == c]
        acc += h[rng.integers(0, len(h), size=(n_boot, len(h)))].mean(1)
    acc *= 100 / len(classes)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(acc, [alpha, 1 - alpha])
    return {
        "value": value,
        "lo": float(lo),
        "hi": float(hi),
        "n_examples": int(len(hit)),
        "n_boot": int(n_boot),
        "level": float(level),
        "unit": "example, stratified by class",
    }


def bootstrap_ratio_ci(
    numerators: np.ndarray, denominators: np.ndarray, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Percentile bootstrap over examples of a ratio of sums R = Σ_e num_e / Σ_e den_e (the NMSE with
    num = per-example Σ_t ||x − x̂||², den = Σ_t ||x||²): ``n_boot`` resamples of the E examples with
    replacement (seeded), the ``level`` interval of R over them. Returns value, lo, hi, n_examples,
    n_boot, level, unit ("example")."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1 or len(num) == 0:
        raise ValueError("bootstrap_ratio_ci needs two 1-d arrays of the same nonzero length")
    value = float(num.sum() / den.sum())
    rng = np.random.default_rng(seed)
    ratios = np.empty(n_boot)
    for lo in range(0, n_boot, 100):  # 100 resamples at a time: memory stays O(100 E)
        draws = rng.integers(0, len(num), size=(min(100, n_boot - lo), len(num)))
        ratios[lo : lo + len(draws)] = num[draws].sum(1) / den[draws].sum(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return {
        "value": value,
        "lo": float(lo),
        "hi": float(hi),
        "n_examples": int(len(num)),
        "n_boot": int(n_boot),
        "level": float(level),
        "unit": "example",
    }
