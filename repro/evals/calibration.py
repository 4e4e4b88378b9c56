"""L0 calibration: does an SAE spend more latents on tokens that are harder to describe?

The paper's claim C7 is that the sparsemax SAE picks "as many concepts as the input needs". That any SAE's
per-token L0 varies (p95 > p5) says nothing: ReLU's does too. What the claim predicts is a *relation*
between a token's L0 and how complex the token is, stronger than a baseline's at the same mean L0.

Complexity of a token x_t of a split (no labels, no SAE): the share of its centred energy outside the
split's top-r principal subspace,

    c_t = ||(I − P_r)(x_t − μ)||² / ||x_t − μ||²,   μ = mean token, P_r = projector on the top-r
    eigenvectors of the token covariance (r = 16 by default),

so a token that a few shared directions describe has c_t near 0 and a token with much idiosyncratic
structure near 1. Calibration = Spearman's ρ between the per-token L0 and c_t (rank correlation: invariant
to the L0's scale, so an SAE at L0 10 and one at L0 100 compare), with the mean L0 in each complexity
decile. TopK's L0 is constant: ρ is undefined (NaN), as it should be.
"""

from __future__ import annotations

import numpy as np
import torch

RANK = 16


@torch.no_grad()
def complexity_scores(cache, rank: int = RANK, max_chunk_tokens: int = 16_384) -> np.ndarray:
    """(N,) c_t of every token of ``cache`` (an ActivationCache) in cache order (module docstring): two
    streaming passes in float64 (moments, then residuals); tokens with x_t = μ get c_t = 0."""
    n, d = cache.n_tokens, cache.d_model
    total = torch.zeros(d, dtype=torch.float64)
    second = torch.zeros(d, d, dtype=torch.float64)
    for lo in range(0, n, max_chunk_tokens):
        x = cache.tokens(lo, min(n, lo + max_chunk_tokens)).double()
        total += x.sum(0)
        second += x.T @ x
    mu = total / n
    cov = second / n - torch.outer(mu, mu)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    top = vecs[:, -min(rank, d) :]
    out = np.empty(n)
    for lo in range(0, n, max_chunk_tokens):
        xc = cache.tokens(lo, min(n, lo + max_chunk_tokens)).double() - mu
        energy = xc.pow(2).sum(1)
        inside = (xc @ top).pow(2).sum(1)
        out[lo : lo + len(xc)] = torch.where(
            energy > 0, (energy - inside).clamp_min(0) / energy.clamp_min(1e-300), torch.zeros_like(energy)
        ).numpy()
    return out


def l0_calibration(token_l0: np.ndarray, complexity: np.ndarray, bins: int = 10) -> dict:
    """Spearman's ρ between per-token L0 and complexity (NaN when either is constant) and the mean L0 per
    complexity quantile bin (``bins`` equal-count bins, lowest complexity first)."""
    from scipy.stats import spearmanr

    token_l0 = np.asarray(token_l0, dtype=np.float64)
    complexity = np.asarray(complexity, dtype=np.float64)
    if token_l0.shape != complexity.shape or token_l0.ndim != 1:
        raise ValueError("l0_calibration needs two 1-d arrays of the same length")
    constant = np.ptp(token_l0) == 0 or np.ptp(complexity) == 0
    rho = float("nan") if constant else float(spearmanr(token_l0, complexity).statistic)
    order = np.argsort(complexity, kind="stable")
    chunks = np.array_split(order, bins)
    return {
        "spearman_rho": rho,
        "n_tokens": int(len(token_l0)),
        "rank": RANK,
        "l0_by_complexity_decile": [float(token_l0[c].mean()) if len(c) else float("nan") for c in chunks],
        "complexity_by_decile": [float(complexity[c].mean()) if len(c) else float("nan") for c in chunks],
        "definition": "Spearman rho(per-token L0, share of centred energy outside the split's top-16 "
        "principal subspace)",
    }


__all__ = ["RANK", "complexity_scores", "l0_calibration"]
