"""L0 calibration (repro.evals.calibration) on cases with known answers: tokens inside the principal subspace
have complexity 0, isotropic tokens about 1 − r/d; an L0 that follows complexity has ρ = 1, a reversed one
ρ = −1, a constant one (TopK) NaN; the decile means are ordered."""

from __future__ import annotations

import math

import numpy as np
import torch

from repro.evals.calibration import complexity_scores, l0_calibration


class ArrayCache:
    def __init__(self, x: np.ndarray):
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.n_tokens, self.d_model = self.x.shape

    def tokens(self, lo, hi=None):
        return self.x[lo:hi]


def test_complexity_separates_subspace_tokens_from_isotropic_ones():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 16)))[0]  # 16 shared directions in 64 dims
    inside = 5.0 * rng.normal(size=(3000, 16)) @ basis.T + 2.0  # an offset: complexity is centred
    outside = rng.normal(size=(300, 64)) + 2.0
    c = complexity_scores(ArrayCache(np.r_[inside, outside]), rank=16, max_chunk_tokens=500)
    assert c.shape == (3300,) and c[:3000].max() < 0.02
    assert abs(c[3000:].mean() - (1 - 16 / 64)) < 0.1
    # chunking does not change the answer
    np.testing.assert_allclose(c, complexity_scores(ArrayCache(np.r_[inside, outside]), rank=16), atol=1e-9)


def test_calibration_rho_and_deciles():
    rng = np.random.default_rng(1)
    complexity = rng.uniform(size=1000)
    follows = np.round(50 * complexity).astype(int)
    res = l0_calibration(follows, complexity)
    assert res["spearman_rho"] > 0.99 and res["n_tokens"] == 1000
    means = res["l0_by_complexity_decile"]
    assert len(means) == 10 and all(a <= b for a, b in zip(means, means[1:], strict=False))
    assert l0_calibration(50 - follows, complexity)["spearman_rho"] < -0.99
    assert math.isnan(l0_calibration(np.full(1000, 32), complexity)["spearman_rho"])  # TopK: constant L0
