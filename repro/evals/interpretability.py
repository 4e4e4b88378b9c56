"""Offline interpretability scores from the labels of each latent's top-activating examples
(``metrics.md`` §10, ``official_code.md`` §5.1 and §5.4), and per-latent firing statistics.

Inputs come from a caller that streamed a labelled dataset through an SAE and kept, per latent i, its
top-K examples: ``top_values`` (d_sae, K), the example-level activation (e.g. the maximum over the
example's tokens) sorted descending per row, and ``top_labels`` (d_sae, K), the label of each example in
0..C-1. A slot is *valid* when its value is finite and > 0; missing slots (the latent fired on fewer
than K examples) hold -inf or NaN and their labels are ignored. Nothing here runs a model.

For latent i let S_i be its first ``top`` valid slots in row order, n_i = |S_i|, v_s the value and
y_s the label of slot s:

- unweighted label distribution p_i(c) = #{s in S_i : y_s = c} / n_i;
- activation-weighted (the official analysis) p_i(c) = sum_{s in S_i, y_s = c} v_s / sum_{s in S_i} v_s;
- purity_i = max_c p_i(c) in [1/C, 1]; entropy H_i = -sum_c p_i(c) ln p_i(c) in [0, ln C] (nats,
  0 ln 0 = 0). The official ``calculate_entropy`` uses -sum p log(p + 1e-9); the two differ by at
  most about C * 1e-9 nats; we use the exact convention. Rows with n_i = 0 are NaN.

:func:`interpretability_scores` reports, per latent, purity and entropy of the unweighted top-``top``
distribution and the official score: the activation-weighted entropy of the top-``official_top`` (10)
examples, NaN where fewer than ``official_top`` valid examples exist (the official code writes -1
there). Aggregates (mean, median, histogram) run over the *scored* latents: alive and with
n_i >= ``min_examples`` (default ``top``: a latent judged on fewer examples than the others would look
purer by chance). The chance level ("baseline") is the purity and entropy of the pooled label
distribution of the scored latents' top examples: the population value for a latent whose top examples
are label-blind draws from that pool. (A finite sample of n draws is on average slightly purer than its
population, E[H_sample] < H_pool, so with n = 50 a label-blind latent scores a little below the baseline
entropy.) :func:`firing_stats` gives token and example firing rates and the mean activation when firing.

Outputs of :func:`interpretability_scores` and :func:`firing_stats` are JSON-serialisable with
``allow_nan=False``: non-finite numbers become ``None``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor


def _np(a: Any, dtype=np.float64) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu()
        a = a.double().numpy() if a.is_floating_point() else a.numpy()
    return np.asarray(a, dtype=dtype)


def _num(x: float) -> float | None:
    """A float, or None when it is not finite (JSON without NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _list(v: np.ndarray) -> list:
    return [_num(x) for x in v]


def _used_slots(top_values: Any, top_labels: Any, n_classes: int, top: int) -> tuple[np.ndarray, ...]:
    """(values, labels, used mask): used = valid (finite, > 0) and among the first ``top`` valid of its row."""
    v = _np(top_values)
    y = np.asarray(top_labels.detach().cpu().numpy() if isinstance(top_labels, Tensor) else top_labels)
    if v.ndim != 2 or y.shape != v.shape:
        raise ValueError(f"top_values {v.shape} and top_labels {y.shape} must both be (d_sae, K)")
    if n_classes < 1 or top < 1:
        raise ValueError(f"n_classes ({n_classes}) and top ({top}) must be >= 1")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(v) & (v > 0)
    used = valid & (np.cumsum(valid, axis=1) <= top)
    y = np.where(used, y, 0)
    if np.issubdtype(y.dtype, np.floating) and not np.array_equal(y, np.round(y)):
        raise ValueError("top_labels must be integers")
    y = y.astype(np.int64)
    if used.any() and (y[used].min() < 0 or y[used].max() >= n_classes):
        raise ValueError(f"labels of valid slots must lie in [0, {n_classes})")
    return np.where(used, v, 0.0), y, used


def label_distributions(
    top_values: Any, top_labels: Any, n_classes: int, top: int = 50, weighted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-latent label distribution of its first ``top`` valid top examples.

    A slot is valid when its value is finite and > 0 (-inf and NaN mark missing examples; their labels
    are ignored). With S_i the first ``top`` valid slots of row i (row order) and n_i = |S_i|:
    unweighted p_i(c) = #{s in S_i : y_s = c} / n_i; ``weighted`` p_i(c) = sum_{s in S_i, y_s = c} v_s /
    sum_{s in S_i} v_s (the official analysis, ``metrics.md`` §10). Returns (probs (d_sae, C) float64,
    NaN rows where n_i = 0; n_used (d_sae,) int64 = n_i). Labels of valid slots outside [0, C) raise."""
    v, y, used = _used_slots(top_values, top_labels, n_classes, top)
    d_sae = v.shape[0]
    w = v if weighted else used.astype(np.float64)
    mass = np.zeros((d_sae, n_classes))
    np.add.at(mass, (np.repeat(np.arange(d_sae), v.shape[1]), y.ravel()), w.ravel())
    n_used = used.sum(axis=1).astype(np.int64)
    total = mass.sum(axis=1, keepdims=True)
    probs = np.full_like(mass, np.nan)
    ok = n_used > 0
    probs[ok] = mass[ok] / total[ok]
    return probs, n_used


def purity(probs: np.ndarray) -> np.ndarray:
    """purity_i = max_c p_i(c) per row of ``probs`` (n, C); rows containing NaN give NaN."""
    p = _np(probs)
    return p.max(axis=-1)  # np.max propagates NaN


def label_entropy(probs: np.ndarray) -> np.ndarray:
    """H_i = -sum_c p_i(c) ln p_i(c) in nats per row of ``probs`` (n, C), with 0 ln 0 = 0 (exact; the
    official code uses ln(p + 1e-9), which differs by at most ~C * 1e-9). Rows containing NaN give NaN."""
    p = _np(probs)
    pos = p > 0
    terms = np.where(pos, p * np.log(np.where(pos, p, 1.0)), 0.0)
    h = -terms.sum(axis=-1)
    return np.where(np.isnan(p).any(axis=-1), np.nan, np.maximum(h, 0.0))


def _aggregate(v: np.ndarray, hi: float, bins: int) -> dict:
    """mean, median and equal-width histogram of ``v`` on [0, hi] (values clipped into range)."""
    edges = np.linspace(0.0, hi, bins + 1)
    if hi > 0:
        idx = np.clip(np.floor(v / hi * bins), 0, bins - 1).astype(np.int64)
    else:
        idx = np.zeros(len(v), dtype=np.int64)
    hist = np.bincount(idx, minlength=bins)
    return {
        "mean": _num(v.mean()) if len(v) else None,
        "median": _num(np.median(v)) if len(v) else None,
        "hist": [int(c) for c in hist],
        "edges": [float(e) for e in edges],
    }


def interpretability_scores(
    top_values: Any,
    top_labels: Any,
    n_classes: int,
    *,
    alive: np.ndarray | None = None,
    top: int = 50,
    official_top: int = 10,
    min_examples: int | None = None,
    bins: int = 20,
) -> dict:
    """Label purity and entropy of every latent's top examples, and their distribution over latents.

    Per latent i (see the module docstring for p_i, purity and entropy):

    - ``purity``, ``entropy``: of the unweighted distribution of its first ``top`` valid examples
      (NaN when it has none); ``n_examples`` = n_i, the number of valid examples used (<= ``top``);
    - ``entropy_official``: activation-weighted entropy of its first ``official_top`` valid examples,
      NaN when it has fewer than ``official_top`` (the official code returns -1).

    ``alive`` (d_sae,) bool: latents that fired at least once (default: those with >= 1 valid slot).
    Scored latents = alive and n_i >= max(``min_examples``, 1), ``min_examples`` defaulting to ``top``
    (a latent judged on fewer examples looks purer by chance, so it is excluded); alive latents below it
    are counted in ``n_too_few``. Over the scored latents: ``purity`` and ``entropy`` {mean, median, hist,
    edges} with ``bins`` equal-width bins on [0, 1] for purity and [0, ln C] for entropy (bin b =
    [edges[b], edges[b+1]), the last closed); ``baseline`` {purity, entropy} of the pooled label
    distribution q(c) = #{scored top examples with label c} / #{scored top examples} (chance level of a
    label-blind latent). ``entropy_official`` {mean, median, n_scored, n_too_few} runs over alive latents
    with a finite official entropy (the official rule, independent of ``min_examples``).

    Returns a JSON-serialisable dict (NaN -> None): n_latents, n_alive, n_scored, n_too_few, top,
    official_top, min_examples, n_classes, purity, entropy, entropy_official, baseline, and per_latent
    {purity, entropy, entropy_official, n_examples, scored} (lists of length d_sae)."""
    if bins < 1 or official_top < 1:
        raise ValueError(f"bins ({bins}) and official_top ({official_top}) must be >= 1")
    min_examples = top if min_examples is None else int(min_examples)
    probs, n_used = label_distributions(top_values, top_labels, n_classes, top=top)
    d_sae = len(n_used)
    if alive is None:
        alive = n_used > 0
    else:
        alive = np.asarray(alive.detach().cpu().numpy() if isinstance(alive, Tensor) else alive, dtype=bool)
        if alive.shape != (d_sae,):
            raise ValueError(f"alive {alive.shape} must be ({d_sae},)")
    scored = alive & (n_used >= max(min_examples, 1))
    pur, ent = purity(probs), label_entropy(probs)

    p_off, n_off = label_distributions(top_values, top_labels, n_classes, top=official_top, weighted=True)
    ent_off = np.where(n_off >= official_top, label_entropy(p_off), np.nan)
    off_ok = alive & np.isfinite(ent_off)

    pooled = (probs[scored] * n_used[scored, None]).sum(axis=0)
    q = pooled / pooled.sum() if scored.any() else np.full(n_classes, np.nan)

    return {
        "n_latents": int(d_sae),
        "n_alive": int(alive.sum()),
        "n_scored": int(scored.sum()),
        "n_too_few": int((alive & ~scored).sum()),
        "top": int(top),
        "official_top": int(official_top),
        "min_examples": int(min_examples),
        "n_classes": int(n_classes),
        "purity": _aggregate(pur[scored], 1.0, bins),
        "entropy": _aggregate(ent[scored], math.log(n_classes), bins),
        "entropy_official": {
            "mean": _num(ent_off[off_ok].mean()) if off_ok.any() else None,
            "median": _num(np.median(ent_off[off_ok])) if off_ok.any() else None,
            "n_scored": int(off_ok.sum()),
            "n_too_few": int((alive & ~off_ok).sum()),
        },
        "baseline": {"purity": _num(purity(q[None])[0]), "entropy": _num(label_entropy(q[None])[0])},
        "per_latent": {
            "purity": _list(pur),
            "entropy": _list(ent),
            "entropy_official": _list(ent_off),
            "n_examples": [int(n) for n in n_used],
            "scored": [bool(s) for s in scored],
        },
    }


def firing_stats(
    fire_count: Any, act_sum: Any, n_tokens: int, example_fire_count: Any = None, n_examples: int | None = None
) -> dict:
    """Per-latent firing statistics from streamed counts.

    With F_i = ``fire_count`` (tokens on which latent i fired), A_i = ``act_sum`` (sum of its activation
    over those tokens) and N = ``n_tokens``: ``firing_rate`` F_i / N; ``mean_act`` A_i / F_i (the mean
    activation when firing; None when F_i = 0); ``n_dead`` = #{i : F_i = 0}. With ``example_fire_count``
    E_i (examples on which it fired at least once) and ``n_examples`` M: ``example_firing_rate`` E_i / M.
    Returns a JSON-serialisable dict (NaN -> None): n_latents, n_tokens, n_dead, firing_rate, mean_act
    and, when given, n_examples and example_firing_rate."""
    f, a = _np(fire_count).ravel(), _np(act_sum).ravel()
    if f.shape != a.shape:
        raise ValueError(f"fire_count {f.shape} and act_sum {a.shape} must have the same length")
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
    fires = f > 0
    mean_act = np.full(len(f), np.nan)
    mean_act[fires] = a[fires] / f[fires]
    out: dict[str, Any] = {
        "n_latents": int(len(f)),
        "n_tokens": int(n_tokens),
        "n_dead": int((~fires).sum()),
        "firing_rate": _list(f / n_tokens),
        "mean_act": _list(mean_act),
    }
    if example_fire_count is not None:
        e = _np(example_fire_count).ravel()
        if e.shape != f.shape or n_examples is None or n_examples <= 0:
            raise ValueError("example_fire_count needs the same length as fire_count and n_examples > 0")
        out["n_examples"] = int(n_examples)
        out["example_firing_rate"] = _list(e / n_examples)
    return out
