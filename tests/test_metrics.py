"""Known-answer tests for repro.metrics (shared/reference/metrics.md §12, items 1-13 and 15)."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch

from repro.metrics import ReconstructionMetrics, bootstrap_balanced_accuracy_ci, bootstrap_ratio_ci

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run(x, x_hat, acts, d_sae=None, batch_sizes=None, order=None, **kw):
    """Feed (x, x_hat, acts) token-wise batches into a fresh accumulator and compute."""
    d_sae = acts.shape[-1] if d_sae is None else d_sae
    m = ReconstructionMetrics(d_sae, **kw)
    n = x.shape[0]
    if batch_sizes is None:
        m.update(x, x_hat, acts)
        return m.compute()
    bounds = [*range(0, n, batch_sizes), n]
    chunks = list(itertools.pairwise(bounds))
    if order is not None:
        chunks = [chunks[i] for i in order]
    for lo, hi in chunks:
        m.update(x[lo:hi], x_hat[lo:hi], acts[lo:hi])
    return m.compute()


def _close(a: float, b: float, rel: float = 1e-12, abs_: float = 1e-13) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _data(n=200, d=6, f=32, seed=0, mean_scale=50.0):
    """x with large, per-dimension-distinct means; x_hat = noisy x; sparse signed acts."""
    g = _gen(seed)
    mu = mean_scale * (torch.arange(d, dtype=F64) + 1.0) * torch.tensor([1.0, -1.0]).repeat(d)[:d]
    scale = torch.linspace(0.5, 2.0, d, dtype=F64)
    x = mu + scale * torch.randn(n, d, generator=g, dtype=F64)
    x_hat = x + 0.3 * torch.randn(n, d, generator=g, dtype=F64)
    acts = torch.randn(n, f, generator=g, dtype=F64)
    keep = torch.rand(n, f, generator=g) < torch.rand(n, 1, generator=g) * 0.5
    acts = torch.where(keep, acts, torch.zeros((), dtype=F64))
    return x, x_hat, acts


def _oracle_ev(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Independent EV: 1 - Σ‖r‖² / (N · Σ_d Var_pop(x_d)), all float64."""
    x, x_hat = x.to(F64), x_hat.to(F64)
    sse = ((x - x_hat) ** 2).sum().item()
    var = torch.var(x, dim=0, correction=0).sum().item()
    return 1.0 - sse / (x.shape[0] * var)


# --------------------------------------------------------------------------- EV: items 1-9


def test_perfect_reconstruction():  # item 1
    x, _, acts = _data()
    r = _run(x, x.clone(), acts)
    assert r["ev"] == 1.0 and r["explained_variance"] == 1.0
    assert r["fvu"] == 0.0
    assert r["mse"] == 0.0 and r["mse_per_dim"] == 0.0
    assert r["nmse"] == 0.0 and r["nmse_tok"] == 0.0
    assert r["ev_uncentred"] == 1.0
    assert r["variance_degenerate"] is False


def test_mean_predictor_gives_zero_ev():  # item 2
    x, _, acts = _data(mean_scale=1000.0)
    xbar = x.mean(dim=0, keepdim=True).expand_as(x)
    r = _run(x, xbar, acts, batch_sizes=13)
    assert abs(r["ev"]) < 1e-12
    assert abs(r["fvu"] - 1.0) < 1e-12
    # The uncentred EV is large on data with a big mean (the bug this test guards against).
    assert r["ev_uncentred"] > 0.99


def _exact_f32(t: torch.Tensor) -> torch.Tensor:
    """Round to multiples of 2^-8 so that adding 1e4 (or integer shifts) is exact in float32."""
    return (torch.round(t * 256) / 256).to(torch.float32)


@pytest.mark.parametrize("shift", ["scalar", "vector"])
def test_shift_invariance_float32(shift):  # item 3
    g = _gen(3)
    n, d, f = 500, 8, 16
    x = _exact_f32(torch.randn(n, d, generator=g, dtype=F64))
    x_hat = _exact_f32(x.to(F64) + 0.5 * torch.randn(n, d, generator=g, dtype=F64))
    acts = torch.relu(torch.randn(n, f, generator=g))
    if shift == "scalar":
        b = torch.full((d,), 1e4, dtype=torch.float32)
    else:
        b = (1e4 + 1000.0 * torch.arange(d, dtype=F64) - 3000.0).to(torch.float32)
    xs, xhs = x + b, x_hat + b
    assert xs.dtype == torch.float32
    # The test's own premise: the float32 shift is exact, so only the metric code can lose digits.
    assert torch.equal(xs.to(F64) - b.to(F64), x.to(F64))
    assert torch.equal(xhs.to(F64) - b.to(F64), x_hat.to(F64))
    base = _run(x, x_hat, acts, batch_sizes=64)
    shifted = _run(xs, xhs, acts, batch_sizes=64)
    assert _close(shifted["ev"], base["ev"], rel=1e-9)
    assert _close(shifted["mse"], base["mse"], rel=1e-9)
    assert _close(base["ev"], _oracle_ev(x, x_hat), rel=1e-12)
    assert _close(shifted["ev"], _oracle_ev(x, x_hat), rel=1e-9)
    assert 0.5 < base["ev"] < 0.9  # a non-trivial value, so invariance is meaningful


@pytest.mark.parametrize("a", [2.5, 1e-3, 1e3])
def test_scale_invariance(a):  # item 4
    x, x_hat, acts = _data()
    base = _run(x, x_hat, acts)
    scaled = _run(a * x, a * x_hat, acts)
    assert _close(scaled["ev"], base["ev"], rel=1e-12)
    assert _close(scaled["mse"], base["mse"] * a * a, rel=1e-12)
    assert _close(scaled["nmse"], base["nmse"], rel=1e-12)


def test_constant_error():  # item 5
    x, _, acts = _data()
    e = torch.tensor([0.5, -1.0, 0.25, 2.0, 0.0, -0.75], dtype=F64)
    r = _run(x, x + e, acts)
    v = torch.var(x, dim=0, correction=0).sum().item()
    expected = 1.0 - (e * e).sum().item() / v
    assert expected < 1.0
    assert _close(r["ev"], expected, rel=1e-12)
    assert _close(r["mse"], (e * e).sum().item(), rel=1e-12)


def test_independent_oracle_distinct_means():  # item 6
    x, x_hat, acts = _data(n=333, d=5, mean_scale=7.0, seed=11)
    r = _run(x, x_hat, acts, batch_sizes=50)
    assert _close(r["ev"], _oracle_ev(x, x_hat), rel=1e-12)
    assert _close(r["total_variance"], torch.var(x, dim=0, correction=0).sum().item(), rel=1e-12)
    # A scalar global mean (definition #7) gives a different number on this data.
    scalar_var = ((x - x.mean()) ** 2).mean().item() * x.shape[1]
    sse = ((x - x_hat) ** 2).sum().item()
    assert not _close(r["ev"], 1.0 - sse / (x.shape[0] * scalar_var), rel=1e-6)
    # The unbiased-variance variant differs too.
    unbiased = torch.var(x, dim=0, correction=1).sum().item()
    assert not _close(r["ev"], 1.0 - sse / (x.shape[0] * unbiased), rel=1e-6)


BATCH_KEYS = [
    "ev",
    "mse",
    "nmse",
    "nmse_tok",
    "l0",
    "cosine",
    "l0_pos",
    "l1",
    "l2_ratio",
    "relative_reconstruction_bias",
    "mse_per_dim",
    "ev_uncentred",
    "dead_fraction",
    "dense_fraction",
    "dense_fraction_1pct",
]


def test_batch_independence():  # item 7
    x, x_hat, acts = _data(n=150, seed=5)
    x[3] = 0.0  # a zero-norm token exercises the exclusion paths
    n = x.shape[0]
    ref = _run(x, x_hat, acts, batch_sizes=n)
    n_chunks7 = (n + 6) // 7
    perm = torch.randperm(n_chunks7, generator=_gen(9)).tolist()
    variants = [
        _run(x, x_hat, acts, batch_sizes=1),
        _run(x, x_hat, acts, batch_sizes=7),
        _run(x, x_hat, acts, batch_sizes=7, order=perm),
        _run(x, x_hat, acts, batch_sizes=1, order=list(reversed(range(n)))),
    ]
    assert ref["n_zero_norm_tokens"] == 1
    for v in variants:
        assert v["n_tokens"] == n
        for k in BATCH_KEYS:
            assert _close(v[k], ref[k], rel=1e-12), (k, v[k], ref[k])
        assert v["l0_quantiles"] == ref["l0_quantiles"]
        assert v["l0_hist"] == ref["l0_hist"]
        assert v["n_zero_norm_tokens"] == ref["n_zero_norm_tokens"]


def test_negative_ev_not_clamped():  # item 8
    x, _, acts = _data()
    r = _run(x, -x, acts)
    assert r["ev"] < 0.0
    assert _close(r["ev"], _oracle_ev(x, -x), rel=1e-12)
    assert r["fvu"] > 1.0


@pytest.mark.parametrize("value", [0.1, 0.0, 1e4])
def test_degenerate_variance(value):  # item 9
    n, d = 37, 4
    x = torch.full((n, d), value, dtype=F64)
    x_hat = torch.randn(n, d, generator=_gen(1), dtype=F64)
    acts = torch.zeros(n, 8)
    m = ReconstructionMetrics(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for lo in range(0, n, 5):
            m.update(x[lo : lo + 5], x_hat[lo : lo + 5], acts[lo : lo + 5])
        r = m.compute()
    assert r["variance_degenerate"] is True
    assert math.isnan(r["ev"]) and math.isnan(r["explained_variance"]) and math.isnan(r["fvu"])
    assert _close(r["mse"], ((x - x_hat) ** 2).sum().item() / n, rel=1e-12)
    if value == 0.0:  # undefined ratios are NaN, and zero-norm tokens are counted
        assert math.isnan(r["nmse"]) and math.isnan(r["nmse_tok"]) and math.isnan(r["l2_ratio"])
        assert r["n_zero_norm_tokens"] == n
        assert r["cosine"] == 0.0


def test_zero_norm_tokens_excluded_and_counted():
    x, x_hat, acts = _data(n=40, seed=23, mean_scale=0.0)
    x[[2, 17, 30]] = 0.0
    r = _run(x, x_hat, acts, batch_sizes=6)
    keep = x.norm(dim=-1) > 0
    xk, hk = x[keep], x_hat[keep]
    assert r["n_zero_norm_tokens"] == 3 and r["n_tokens"] == 40
    assert _close(r["nmse_tok"], (((xk - hk) ** 2).sum(-1) / (xk**2).sum(-1)).mean().item())
    assert _close(r["l2_ratio"], (hk.norm(dim=-1) / xk.norm(dim=-1)).mean().item())
    # cos is defined as 0 on zero-norm tokens, which stay in the denominator N.
    cos_k = torch.nn.functional.cosine_similarity(xk, hk, dim=-1).sum().item()
    assert _close(r["cosine"], cos_k / 40, rel=1e-10)


def test_worked_example():  # §12 worked example
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x_hat = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    r = _run(x, x_hat, torch.zeros(2, 3))
    assert r["n_tokens"] == 2
    assert _close(r["mse"], 7.0)
    assert _close(r["mse_per_dim"], 3.5)
    assert _close(r["nmse"], 14.0 / 30.0)
    assert _close(r["nmse_tok"], 0.36)
    assert _close(r["total_variance"], 2.0)
    assert _close(r["ev"], -2.5)
    assert _close(r["fvu"], 3.5)
    assert _close(r["ev_uncentred"], 1.0 - 14.0 / 30.0)
    # cos: (3/(√5·√2) + 7/(5·√2))/2; l2_ratio: (√2/√5 + √2/5)/2; bias: 4/(3+7)
    assert _close(r["cosine"], (3 / math.sqrt(10) + 7 / (5 * math.sqrt(2))) / 2)
    assert _close(r["l2_ratio"], (math.sqrt(2 / 5) + math.sqrt(2) / 5) / 2)
    assert _close(r["relative_reconstruction_bias"], 0.4)


# --------------------------------------------------------------------------- L0, dead: 10-13


def test_negative_acts_l0_vs_l0_pos():  # item 10
    acts = torch.tensor([[1.0, -2.0, 0.0, 0.5], [-1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    x = torch.randn(3, 2, generator=_gen(0))
    r = _run(x, x, acts)
    assert _close(r["l0"], 5 / 3)
    assert _close(r["l0_pos"], 2 / 3)
    assert _close(r["l1"], 5.5 / 3)
    assert r["l0_hist"] == [1, 0, 1, 1]
    assert r["l0_quantiles"]["min"] == 0.0 and r["l0_quantiles"]["max"] == 3.0
    assert r["l0_quantiles"]["p50"] == 2.0


def test_l0_3d_equals_flattened_and_is_a_count():  # item 11
    g = _gen(4)
    b, t, d, f = 3, 11, 5, 40
    x = torch.randn(b, t, d, generator=g)
    x_hat = x + 0.1 * torch.randn(b, t, d, generator=g)
    acts = torch.relu(torch.randn(b, t, f, generator=g) - 0.5)
    r3 = _run(x, x_hat, acts)
    m = ReconstructionMetrics(f)
    m.update(x.reshape(b * t, d), x_hat.reshape(b * t, d), acts.reshape(b * t, f))
    r2 = m.compute()
    assert r3["n_tokens"] == r2["n_tokens"] == b * t
    for k in ["l0", "l0_pos", "ev", "mse", "nmse_tok", "cosine", "l1"]:
        assert _close(r3[k], r2[k]), k
    assert r3["l0_hist"] == r2["l0_hist"] and r3["l0_quantiles"] == r2["l0_quantiles"]
    expected_l0 = (acts != 0).sum(-1).to(F64).mean().item()
    assert _close(r3["l0"], expected_l0)
    assert 1.0 < r3["l0"] <= f  # a count, not a fraction


def test_l0_quantiles_and_hist_match_oracle():
    g = _gen(12)
    n, f = 501, 64
    acts = torch.randn(n, f, generator=g) * (torch.rand(n, f, generator=g) < 0.2)
    x = torch.randn(n, 3, generator=g)
    r = _run(x, x, acts, batch_sizes=17)
    per_tok = (acts != 0).sum(-1)
    qs = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95, 0.99], dtype=F64)
    expected = torch.quantile(per_tok.to(F64), qs).tolist()
    got = [r["l0_quantiles"][k] for k in ["p5", "p25", "p50", "p75", "p95", "p99"]]
    for a, b in zip(got, expected, strict=True):
        assert _close(a, b), (got, expected)
    assert r["l0_quantiles"]["max"] == per_tok.max().item()
    assert r["l0_quantiles"]["min"] == per_tok.min().item()
    assert r["l0_hist"] == torch.bincount(per_tok).tolist()
    assert r["l0_hist_overflow"] == 0


def test_l0_hist_cap_overflow():
    acts = torch.zeros(6, 10)
    for t, k in enumerate([0, 1, 2, 5, 7, 10]):
        acts[t, :k] = 1.0
    x = torch.randn(6, 2, generator=_gen(0))
    r = _run(x, x, acts, l0_hist_max=4)
    assert r["l0_hist"] == [1, 1, 1, 0, 0, 3]
    assert r["l0_hist_overflow"] == 3
    assert r["l0_quantiles"]["max"] == 10.0  # quantiles use the uncapped histogram
    r_big = _run(x, x, acts, l0_hist_max=20)  # cap above max: same as uncapped
    assert r_big["l0_hist"] == _run(x, x, acts)["l0_hist"]
    assert len(r_big["l0_hist"]) == 11 and r_big["l0_hist_overflow"] == 0


def test_firing_rate_per_token_not_per_image():  # item 12
    n_img, t, f = 4, 197, 3
    acts = torch.zeros(n_img, t, f)
    for i in range(n_img):
        acts[i, (37 * i) % t, 0] = 0.7  # latent 0: exactly one token per image
    acts[:, :, 1] = 1.0  # latent 1: every token
    x = torch.randn(n_img, t, 4, generator=_gen(2))
    m = ReconstructionMetrics(f)
    m.update(x, x, acts)
    rate = m.latent_firing_rate()
    assert rate.dtype == F64 and rate.shape == (f,)
    assert _close(rate[0].item(), 1 / 197)
    assert rate[1].item() == 1.0 and rate[2].item() == 0.0
    r = m.compute()
    assert r["n_tokens"] == n_img * t
    assert _close(r["dense_fraction"], 1 / 3)  # only latent 1 (1/197 < 0.1)
    assert _close(r["dense_fraction_1pct"], 1 / 3)  # 1/197 ≈ 0.005 < 0.01


def test_dead_latents():  # item 13
    n, f = 1000, 4
    acts = torch.zeros(n, f)
    acts[123, 1] = -0.5  # fires once (negative still counts as firing)
    acts[:20, 2] = 1.0  # 2 % of tokens
    acts[:, 3] = 2.0  # every token
    x = torch.randn(n, 3, generator=_gen(6))
    r = _run(x, x, acts, batch_sizes=64)
    assert r["n_tokens"] == n
    assert _close(r["dead_fraction"], 1 / 4)  # only latent 0
    assert _close(r["dense_fraction_1pct"], 2 / 4)  # latents 2, 3
    assert _close(r["dense_fraction"], 1 / 4)  # latent 3
    m = ReconstructionMetrics(f)
    m.update(x, x, acts)
    assert m.latent_firing_rate().tolist() == [0.0, 1 / n, 20 / n, 1.0]


# --------------------------------------------------------------------------- shrinkage: item 15


@pytest.mark.parametrize("gamma", [0.8, 1.0, 1.7])
def test_scaled_reconstruction(gamma):  # item 15
    x, _, acts = _data(seed=8)
    r = _run(x, gamma * x, acts, batch_sizes=9)
    assert _close(r["l2_ratio"], gamma)
    assert _close(r["relative_reconstruction_bias"], gamma)
    assert _close(r["cosine"], 1.0)


def test_cosine_and_l2_ratio_oracle():
    x, x_hat, acts = _data(seed=21, mean_scale=0.0)
    r = _run(x, x_hat, acts, batch_sizes=11)
    cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=-1).mean().item()
    l2 = (x_hat.norm(dim=-1) / x.norm(dim=-1)).mean().item()
    bias = (x_hat.pow(2).sum() / (x * x_hat).sum()).item()
    nmse_tok = (((x - x_hat) ** 2).sum(-1) / (x**2).sum(-1)).mean().item()
    assert _close(r["cosine"], cos, rel=1e-10)
    assert _close(r["l2_ratio"], l2, rel=1e-12)
    assert _close(r["relative_reconstruction_bias"], bias, rel=1e-12)
    assert _close(r["nmse_tok"], nmse_tok, rel=1e-12)
    assert _close(r["l1"], acts.abs().sum(-1).mean().item(), rel=1e-12)


# --------------------------------------------------------------------------- merge and API


def test_merge_equals_single_accumulator():
    x, x_hat, acts = _data(n=180, seed=13)
    single = _run(x, x_hat, acts)
    a, b, empty = (ReconstructionMetrics(acts.shape[1]) for _ in range(3))
    a.update(x[:50], x_hat[:50], acts[:50])
    b.update(x[50:120], x_hat[50:120], acts[50:120])
    b.update(x[120:], x_hat[120:], acts[120:])
    merged = empty.merge(a).merge(b).merge(ReconstructionMetrics(acts.shape[1])).compute()
    assert a.n_tokens == 50  # merge does not consume its argument
    for k, v in single.items():
        if isinstance(v, float):
            assert _close(merged[k], v), (k, merged[k], v)
        else:
            assert merged[k] == v, k
    with pytest.raises(ValueError, match="d_sae"):
        a.merge(ReconstructionMetrics(acts.shape[1] + 1))


def test_low_precision_and_grad_inputs():
    g = _gen(17)
    x = torch.randn(64, 8, generator=g).to(torch.bfloat16)
    w = torch.randn(8, 8, generator=g, requires_grad=True)
    x_hat = (x.float() @ w).to(torch.float16)
    acts = torch.relu(x.float() @ w).requires_grad_()
    assert x_hat.requires_grad
    r = _run(x, x_hat, acts)
    r64 = _run(x.to(F64), x_hat.detach().to(F64), acts.detach().to(F64))
    for k in ["ev", "mse", "nmse", "cosine", "l0", "l1"]:
        assert _close(r[k], r64[k]), k


def test_compute_result_is_json_serialisable_and_complete():
    x, x_hat, acts = _data(n=20)
    r = _run(x, x_hat, acts)
    json.dumps(r)
    required = {
        "n_tokens",
        "mse",
        "mse_per_dim",
        "nmse",
        "nmse_tok",
        "explained_variance",
        "ev",
        "fvu",
        "ev_uncentred",
        "cosine",
        "l0",
        "l0_pos",
        "l0_quantiles",
        "l0_hist",
        "l1",
        "dead_fraction",
        "dense_fraction",
        "dense_fraction_1pct",
        "l2_ratio",
        "relative_reconstruction_bias",
        "variance_degenerate",
    }
    assert required <= set(r)
    assert "firing_rate" not in r
    assert set(r["l0_quantiles"]) == {"p5", "p25", "p50", "p75", "p95", "p99", "max", "min"}
    assert r["ev"] == r["explained_variance"] and _close(r["fvu"], 1 - r["ev"])


def test_errors():
    m = ReconstructionMetrics(4)
    with pytest.raises(ValueError, match="no tokens"):
        m.compute()
    with pytest.raises(ValueError, match="no tokens"):
        m.latent_firing_rate()
    x = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="x_hat"):
        m.update(x, torch.zeros(5, 2), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="acts"):
        m.update(x, x, torch.zeros(5, 5))
    with pytest.raises(ValueError, match="acts"):
        m.update(x, x, torch.zeros(4, 4))
    m.update(x, x, torch.zeros(5, 4))
    with pytest.raises(ValueError, match="x has last dimension"):
        m.update(torch.zeros(5, 2), torch.zeros(5, 2), torch.zeros(5, 4))
    with pytest.raises(ValueError, match="d_sae"):
        ReconstructionMetrics(0)


def test_bootstrap_ratio_ci_known_cases():
    """A ratio whose per-example terms are proportional has no spread; otherwise the interval holds the
    point estimate, narrows with more examples and is reproducible from its seed."""
    flat = bootstrap_ratio_ci(np.full(50, 2.0), np.full(50, 4.0))
    assert flat["value"] == flat["lo"] == flat["hi"] == 0.5
    rng = np.random.default_rng(1)
    small, big = (bootstrap_ratio_ci(rng.uniform(0, 1, n), np.ones(n)) for n in (50, 5000))
    for r in (small, big):
        assert r["lo"] <= r["value"] <= r["hi"]
    assert big["hi"] - big["lo"] < (small["hi"] - small["lo"]) / 4  # ~1/sqrt(100) of the width
    again = bootstrap_ratio_ci(np.arange(1.0, 51.0), np.ones(50))
    assert again == bootstrap_ratio_ci(np.arange(1.0, 51.0), np.ones(50))
    with pytest.raises(ValueError):
        bootstrap_ratio_ci(np.ones(3), np.ones(4))


def test_bootstrap_balanced_accuracy_ci_is_stratified():
    """Class-balanced accuracy in percent: the mean of per-class accuracies, however unequal the class sizes;
    resampling within classes keeps a class that is always right (or always wrong) exactly so, so a setup
    right on one class and wrong on the other has no spread at all."""
    labels = np.array([0] * 90 + [1] * 10)
    hits = labels == 0  # class 0 always right, class 1 always wrong
    r = bootstrap_balanced_accuracy_ci(hits, labels)
    assert r["value"] == r["lo"] == r["hi"] == 50.0  # not 90 % (the unbalanced accuracy)
    rng = np.random.default_rng(0)
    noisy = rng.uniform(size=200) < 0.7
    r = bootstrap_balanced_accuracy_ci(noisy, np.repeat([0, 1], 100))
    assert r["lo"] < r["value"] < r["hi"] and 50 < r["lo"] and r["hi"] < 85
    assert r["unit"].startswith("example")
    with pytest.raises(ValueError):
        bootstrap_balanced_accuracy_ci(np.ones(3), np.zeros(2))
