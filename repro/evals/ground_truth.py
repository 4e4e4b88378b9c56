"""Metrics against planted ground truth (see :class:`repro.synthetic.SyntheticSpec`): dictionary recovery,
whether the number of active latents tracks the true number of active features, per-feature latent
precision/recall, and the L0 of simple versus complex tokens.

Every function is pure: tensors or arrays in (any float dtype, CPU or not), plain Python / numpy out.
Conventions: ``true`` is the (n_features, d_in) dictionary of unit feature directions, ``coeff`` the
(n_tokens, n_features) true coefficients, ``acts`` the (n_tokens, d_sae) latent activations, a latent
is active when its activation is nonzero and a feature when its coefficient is nonzero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import mannwhitneyu, pearsonr, spearmanr
from torch import Tensor

ATTENTION_KINDS = ("sparsemax_attention", "attention_relu", "sparsemax_attention_paper")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _np(a: Any, dtype=np.float64) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu()
        a = a.double().numpy() if a.is_floating_point() else a.numpy()
    return np.asarray(a, dtype=dtype)


def decoder_directions(sae: torch.nn.Module) -> Tensor:
    """(d_sae, d_in) float64, detached: the direction each latent writes into input space, as the kind's own
    :meth:`repro.sae.SAE.decoder_directions` says: row i of W_dec for the kinds with a decoder matrix (relu, topk,
    batchtopk, jumprelu, gated, mlp_sparsemax); row i of the value matrix V = C W_v for the attention kinds
    (sparsemax_attention, attention_relu, sparsemax_attention_paper), which decode x_hat = (||x|| *) (a C) W_v.

    Directions are not normalised (the per-token ||x|| scaling of the normalised kinds and the decoder
    norms do not change a direction); compare them with cosines (:func:`match_dictionary`)."""
    if not hasattr(sae, "decoder_directions"):
        raise ValueError(f"no decoder directions for {type(sae).__name__}: not an SAE of repro.sae")
    with torch.no_grad():
        return sae.decoder_directions()


def _unit_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit norm; zero-norm or non-finite rows become 0. Returns (rows, usable mask)."""
    finite = np.isfinite(w).all(axis=1)
    w = np.where(finite[:, None], w, 0.0)
    norm = np.linalg.norm(w, axis=1)
    usable = finite & (norm > 0)
    return np.where(usable[:, None], w / np.where(usable, norm, 1.0)[:, None], 0.0), usable


def cosine_matrix(learned: Tensor | np.ndarray, true: Tensor | np.ndarray) -> np.ndarray:
    """(n_true, n_learned) |cos(true_i, learned_j)|; a zero-norm or non-finite row has cosine 0 with all."""
    learned, true = _np(learned), _np(true)
    if learned.ndim != 2 or true.ndim != 2 or learned.shape[1] != true.shape[1]:
        raise ValueError(f"learned {learned.shape} and true {true.shape} must be (n, d) with the same d")
    return np.abs(_unit_rows(true)[0] @ _unit_rows(learned)[0].T)


def match_dictionary(learned: Tensor | np.ndarray, true: Tensor | np.ndarray, threshold: float = 0.9) -> dict:
    """One-to-one matching of true features to learned directions by absolute cosine.

    C_ij = |cos(true_i, learned_j)| (0 for a zero-norm learned row). The Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``, maximising) picks the assignment pi (injective on the
    smaller side) maximising sum_i C_{i, pi(i)}; true features left unmatched (fewer learned than true)
    get pi(i) = -1 and cosine 0. Returns

    - ``mcc`` = (1 / n_true) sum_i C_{i, pi(i)} (the mean matched cosine, "MCC" of the dictionary
      learning literature, signs ignored);
    - ``recovered`` = (1 / n_true) #{i : C_{i, pi(i)} > threshold};
    - ``mean_max_cos`` = (1 / n_true) sum_i max_j C_ij (no one-to-one constraint: several true features
      may use the same latent);
    - ``matched`` (int64 (n_true,): pi(i) or -1), ``cosines`` (float64 (n_true,): C_{i, pi(i)}),
      ``n_true``, ``n_learned``, ``threshold``.

    Cost: an (n_true, n_learned) float64 matrix and an O(n^3)-type assignment."""
    c = cosine_matrix(learned, true)
    n_true, n_learned = c.shape
    matched = np.full(n_true, -1, dtype=np.int64)
    cosines = np.zeros(n_true)
    if n_true and n_learned:
        rows, cols = linear_sum_assignment(c, maximize=True)
        matched[rows] = cols
        cosines[rows] = c[rows, cols]
    mean = (lambda v: float(v.mean())) if n_true else (lambda v: float("nan"))
    return {
        "mcc": mean(cosines),
        "recovered": mean((cosines > threshold).astype(np.float64)),
        "mean_max_cos": mean(c.max(axis=1) if n_learned else np.zeros(n_true)),
        "matched": matched,
        "cosines": cosines,
        "n_true": n_true,
        "n_learned": n_learned,
        "threshold": float(threshold),
    }


def sparsity_tracking(true_counts: Tensor | np.ndarray, l0: Tensor | np.ndarray) -> dict:
    """Does the per-token L0 (number of active latents) follow the true number of active features?

    With c_t the true count and l_t the L0 of token t:

    - ``spearman`` (and ``spearman_p``): rank correlation of (c, l) (``scipy.stats.spearmanr``);
    - ``pearson``: sum (c - c_bar)(l - l_bar) / sqrt(sum (c - c_bar)^2 sum (l - l_bar)^2);
    - ``slope``, ``intercept``: ordinary least squares l ~ intercept + slope * c, slope =
      sum (c - c_bar)(l - l_bar) / sum (c - c_bar)^2, intercept = l_bar - slope * c_bar;
    - ``by_count``: {count: {"n", "mean_l0", "median_l0"}} for every count present;
    - ``constant``: True when c or l is constant (or n < 2): the correlations are then undefined and
      reported as NaN (and ``constant_input`` names which: "true_counts", "l0" or "both"); the OLS line
      is NaN only when c is constant.
    """
    c, l0 = _np(true_counts).ravel(), _np(l0).ravel()
    if c.shape != l0.shape:
        raise ValueError(f"true_counts {c.shape} and l0 {l0.shape} must have the same length")
    n = len(c)
    c_const = n < 2 or bool(np.all(c == c[0]))
    l_const = n < 2 or bool(np.all(l0 == l0[0]))
    nan = float("nan")
    out: dict[str, Any] = {
        "n": n,
        "constant": c_const or l_const,
        "constant_input": ("both" if c_const and l_const else "true_counts" if c_const else "l0" if l_const else None),
        "spearman": nan,
        "spearman_p": nan,
        "pearson": nan,
        "slope": nan,
        "intercept": nan,
    }
    if not out["constant"]:
        rho = spearmanr(c, l0)
        out["spearman"], out["spearman_p"] = float(rho.statistic), float(rho.pvalue)
        out["pearson"] = float(pearsonr(c, l0).statistic)
    if not c_const:
        dc = c - c.mean()
        out["slope"] = float((dc * (l0 - l0.mean())).sum() / (dc * dc).sum())
        out["intercept"] = float(l0.mean() - out["slope"] * c.mean())
    out["by_count"] = {}
    for value in np.unique(c):
        sel = l0[c == value]
        key = int(value) if float(value).is_integer() else float(value)
        out["by_count"][key] = {"n": int(len(sel)), "mean_l0": float(sel.mean()), "median_l0": float(np.median(sel))}
    return out


def latent_precision_recall(
    acts: Tensor | np.ndarray, coeff: Tensor | np.ndarray, matched: Tensor | np.ndarray
) -> dict:
    """Does each feature's matched latent fire exactly when the feature is present?

    For a true feature i matched to latent j = matched[i] >= 0 (e.g. ``match_dictionary(...)["matched"]``),
    over the tokens t, with A_t = [acts_tj != 0] and F_t = [coeff_ti != 0] (coefficients are positive
    for planted data, so F_t = [coeff_ti > 0]):

    precision_i = P(F | A) = sum_t A_t F_t / sum_t A_t,  recall_i = P(A | F) = sum_t A_t F_t / sum_t F_t,
    f1_i = 2 precision_i recall_i / (precision_i + recall_i) (0 when both are 0).

    Undefined values are NaN: every value of an unmatched feature, precision of a latent that never
    fires, recall of a feature that is never present (and f1 where either is NaN). Returns the
    per-feature arrays ``precision``, ``recall``, ``f1`` (float64 (n_features,)), their means over the
    defined values (``mean_precision``, ``mean_recall``, ``mean_f1``; NaN if none), how many were
    defined (``n_precision``, ``n_recall``, ``n_f1``) and ``n_matched``."""
    a, f = _np(acts), _np(coeff)
    m = _np(matched, np.int64).ravel()
    if a.ndim != 2 or f.ndim != 2 or a.shape[0] != f.shape[0]:
        raise ValueError(f"acts {a.shape} and coeff {f.shape} must be (n_tokens, .) with the same n_tokens")
    if len(m) != f.shape[1]:
        raise ValueError(f"matched has {len(m)} entries, coeff has {f.shape[1]} features")
    if np.any(m >= a.shape[1]):
        raise ValueError(f"matched holds latent indices >= d_sae={a.shape[1]}")
    n_features = f.shape[1]
    precision, recall, f1 = (np.full(n_features, np.nan) for _ in range(3))
    feats = np.nonzero(m >= 0)[0]
    if len(feats):
        fire = a[:, m[feats]] != 0
        present = f[:, feats] != 0
        tp = (fire & present).sum(axis=0).astype(np.float64)
        n_fire, n_present = fire.sum(axis=0), present.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(n_fire > 0, tp / n_fire, np.nan)
            r = np.where(n_present > 0, tp / n_present, np.nan)
        both = p + r  # NaN where either is undefined
        f1[feats] = np.divide(2 * p * r, both, out=np.where(np.isnan(both), np.nan, 0.0), where=both > 0)
        precision[feats], recall[feats] = p, r

    def nanmean(v: np.ndarray) -> float:
        ok = ~np.isnan(v)
        return float(v[ok].mean()) if ok.any() else float("nan")

    return {
        "mean_precision": nanmean(precision),
        "mean_recall": nanmean(recall),
        "mean_f1": nanmean(f1),
        "n_precision": int((~np.isnan(precision)).sum()),
        "n_recall": int((~np.isnan(recall)).sum()),
        "n_f1": int((~np.isnan(f1)).sum()),
        "n_matched": int(len(feats)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _summary(v: np.ndarray, edges: np.ndarray) -> dict:
    if len(v) == 0:
        return {
            "n": 0,
            "mean": float("nan"),
            "std": float("nan"),
            "quantiles": {f"p{round(q * 100)}": float("nan") for q in QUANTILES},
            "hist": np.zeros(len(edges) - 1, dtype=np.int64),
        }
    return {
        "n": int(len(v)),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "quantiles": {f"p{round(q * 100)}": float(np.quantile(v, q)) for q in QUANTILES},
        "hist": np.histogram(v, bins=edges)[0].astype(np.int64),
    }


def simple_vs_complex(true_counts: Tensor | np.ndarray, l0: Tensor | np.ndarray, simple: int, complex: int) -> dict:
    """The L0 of the two kinds of token of a mixture (true count ``simple`` or ``complex``).

    For each group ("simple", "complex"): ``n``, ``mean``, ``std``, ``quantiles`` (p5, p25, p50, p75,
    p95) and ``hist``, counts over the common integer bins ``edges`` (bin b holds L0 values in
    [b - 0.5, b + 0.5), b = 0..max L0). Also ``mean_ratio`` = mean_complex / mean_simple,
    ``mean_difference`` = mean_complex - mean_simple, and ``auc`` = P(L0_complex > L0_simple) +
    P(=) / 2 over independent pairs (Mann-Whitney U / (n_simple n_complex); 0.5 = no separation,
    1 = every complex token has more active latents than every simple one). Tokens with other true
    counts are ignored (``n_other``)."""
    c, l0 = _np(true_counts).ravel(), _np(l0).ravel()
    if c.shape != l0.shape:
        raise ValueError(f"true_counts {c.shape} and l0 {l0.shape} must have the same length")
    s_l0, c_l0 = l0[c == simple], l0[c == complex]
    top = int(np.ceil(l0.max())) if len(l0) else 0
    edges = np.arange(top + 2) - 0.5
    out = {
        "simple": _summary(s_l0, edges),
        "complex": _summary(c_l0, edges),
        "edges": edges,
        "n_other": int(len(c) - len(s_l0) - len(c_l0)),
        "simple_count": simple,
        "complex_count": complex,
    }
    ms, mc = out["simple"]["mean"], out["complex"]["mean"]
    out["mean_difference"] = mc - ms
    out["mean_ratio"] = mc / ms if ms else float("nan")
    if len(s_l0) and len(c_l0):
        u = mannwhitneyu(c_l0, s_l0, alternative="two-sided").statistic
        out["auc"] = float(u / (len(s_l0) * len(c_l0)))
    else:
        out["auc"] = float("nan")
    return out
