"""The planted-feature generators: the demo's PlantedFeatures (pinned) and the ground-truth
SyntheticSpec (exact counts, magnitude laws, hierarchy, co-occurrence, noise, offset, determinism,
validation) and its activation-cache writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from repro.cache import ActivationCache
from repro.synthetic import BLOCK_TOKENS, PlantedFeatures, SyntheticSpec, write_cache

COUNT_LAWS = {
    "fixed": {"kind": "fixed", "k": 4},
    "uniform": {"kind": "uniform", "low": 1, "high": 8},
    "mixture": {"kind": "mixture", "simple": 2, "complex": 6, "p_complex": 0.3},
    "heavy": {"kind": "heavy", "alpha": 2.0, "max": 16},
}


def draw(spec: SyntheticSpec, n: int = 20_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return spec.sample(n, torch.Generator().manual_seed(seed))


# ----- PlantedFeatures: unchanged behaviour ------------------------------------------------------------
def test_planted_features_unchanged():
    """Values produced by PlantedFeatures before SyntheticSpec was added (the demo and tests rely on them)."""
    planted = PlantedFeatures(d_in=32, n_features=64, mean_active=3.0, noise=0.01, seed=0)
    x = next(planted.batches(4, seed=0))
    assert x.shape == (4, 32)
    assert x[0, :4].tolist() == pytest.approx(
        [0.8353062868118286, 0.18863239884376526, -0.05035422742366791, 0.004342301748692989], abs=1e-6
    )
    assert x[3, -3:].tolist() == pytest.approx(
        [-0.20611834526062012, -0.1569920778274536, 0.08723952621221542], abs=1e-6
    )
    assert float(x.sum()) == pytest.approx(2.5409133434295654, abs=1e-5)
    assert planted.dictionary()[0, :3].tolist() == pytest.approx(
        [-0.19779422879219055, -0.20245347917079926, -0.04402313381433487], abs=1e-7
    )
    x, coeff = planted.sample(5, torch.Generator().manual_seed(1))
    assert coeff.nonzero().tolist() == [
        [0, 4],
        [0, 28],
        [0, 33],
        [0, 34],
        [0, 50],
        [1, 14],
        [1, 62],
        [2, 26],
        [3, 54],
        [4, 50],
        [4, 56],
        [4, 59],
    ]
    assert float(x.sum()) == pytest.approx(-10.715075492858887, abs=1e-5)


# ----- SyntheticSpec ---------------------------------------------------------------------------------------
def test_shapes_and_dtypes():
    spec = SyntheticSpec(d_in=24, n_features=80, noise=0.1)
    x, coeff = draw(spec, 100)
    assert x.shape == (100, 24) and coeff.shape == (100, 80)
    assert x.dtype == coeff.dtype == torch.float32
    counts = spec.true_counts(coeff)
    assert counts.dtype == torch.int64 and counts.shape == (100,)
    assert spec.true_counts(coeff.numpy()).dtype == np.int64
    x0, c0 = draw(spec, 0)
    assert x0.shape == (0, 24) and c0.shape == (0, 80)


@pytest.mark.parametrize("law", COUNT_LAWS)
def test_counts_are_exact(law):
    """Every token has exactly the drawn number of nonzero coefficients (counts come first in the stream)."""
    spec = SyntheticSpec(
        d_in=32,
        n_features=128,
        counts=COUNT_LAWS[law],
        correlation=0.5,
        hierarchy={"parents": 8, "children_per_parent": 4},
    )
    x, coeff = spec.block(3, seed=7)
    drawn = spec.block_counts(3, seed=7)
    assert torch.equal(spec.true_counts(coeff), drawn)
    assert int(drawn.max()) <= spec.max_count


def test_count_laws():
    base = {"d_in": 16, "n_features": 64}
    n = 20_000
    c = SyntheticSpec.true_counts(draw(SyntheticSpec(**base, counts=COUNT_LAWS["fixed"]), n)[1])
    assert bool((c == 4).all())
    c = SyntheticSpec.true_counts(draw(SyntheticSpec(**base, counts=COUNT_LAWS["uniform"]), n)[1])
    freq = torch.bincount(c, minlength=9)[1:] / n
    assert int(c.min()) == 1 and int(c.max()) == 8 and torch.allclose(freq, torch.full((8,), 1 / 8), atol=0.015)
    c = SyntheticSpec.true_counts(draw(SyntheticSpec(**base, counts=COUNT_LAWS["mixture"]), n)[1])
    assert set(c.unique().tolist()) == {2, 6}
    assert float((c == 6).double().mean()) == pytest.approx(0.3, abs=0.015)
    c = SyntheticSpec.true_counts(draw(SyntheticSpec(**base, counts=COUNT_LAWS["heavy"]), n)[1])
    assert int(c.min()) >= 1 and int(c.max()) <= 16
    freq = torch.bincount(c, minlength=17)[1:].double() / n
    expected = torch.arange(1, 17, dtype=torch.float64).pow(-2.0)
    assert torch.allclose(freq, expected / expected.sum(), atol=0.01)
    assert bool((freq[:5].diff() < 0).all())  # decreasing where the counts are large enough to tell


@pytest.mark.parametrize(
    "law,mean",
    [
        ({"kind": "uniform", "low": 0.5, "high": 1.5}, 1.0),
        ({"kind": "lognormal", "mu": 0.0, "sigma": 0.5}, math.exp(0.125)),
        ({"kind": "exponential", "scale": 2.0}, 2.0),
    ],
)
def test_magnitudes(law, mean):
    spec = SyntheticSpec(d_in=16, n_features=64, magnitude=law)
    _, coeff = draw(spec, 20_000)
    values = coeff[coeff != 0]
    assert len(values) == 80_000 and bool((values > 0).all())
    assert float(values.double().mean()) == pytest.approx(mean, rel=0.03)
    if law["kind"] == "uniform":
        assert float(values.min()) >= 0.5 and float(values.max()) <= 1.5


def test_hierarchy_children_need_parents():
    spec = SyntheticSpec(
        d_in=64,
        n_features=96,
        counts={"kind": "uniform", "low": 1, "high": 10},
        hierarchy={"parents": 8, "children_per_parent": 3},
    )
    _, coeff = draw(spec, 20_000)
    active = coeff != 0
    parent = spec.parent_of()
    children = torch.nonzero(parent >= 0).squeeze(1)
    assert children.tolist() == list(range(8, 32)) and parent[8:11].tolist() == [0, 0, 0]
    assert not bool((active[:, children] & ~active[:, parent[children]]).any())
    assert bool(active[:, children].any(dim=0).all())  # every child does fire
    d = spec.dictionary()
    cos = (d[children] * d[parent[children]]).sum(-1)
    assert float(cos.mean()) == pytest.approx(1 / math.sqrt(2), abs=0.05)


def test_correlation_zero_is_uniform_and_high_correlation_groups():
    n, k, n_features, n_groups = 20_000, 4, 64, 8
    groups = torch.arange(n_features) % n_groups

    def same_group_share(coeff):
        idx = torch.nonzero(coeff).reshape(n, k, 2)[:, :, 1]
        g = groups[idx]
        pairs = (g[:, :, None] == g[:, None, :]).sum(dim=(1, 2)) - k
        return float(pairs.double().sum() / (n * k * (k - 1)))

    chance = (n_features / n_groups - 1) / (n_features - 1)
    _, coeff = draw(SyntheticSpec(d_in=16, n_features=n_features, n_groups=n_groups), n)
    freq = (coeff != 0).double().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, k / n_features), rtol=0.12)
    assert same_group_share(coeff) == pytest.approx(chance, abs=0.02)
    _, coeff = draw(SyntheticSpec(d_in=16, n_features=n_features, n_groups=n_groups, correlation=0.9), n)
    assert same_group_share(coeff) > 4 * chance
    freq = (coeff != 0).double().mean(0)  # the preferred group is uniform, so marginals stay flat
    assert torch.allclose(freq, torch.full_like(freq, k / n_features), rtol=0.12)


def test_batches_are_deterministic():
    spec = SyntheticSpec(
        d_in=16, n_features=48, counts=COUNT_LAWS["uniform"], correlation=0.3, noise=0.1, noise_decay=1.0
    )
    a, b = spec.batches(32, seed=5), spec.batches(32, seed=5)
    for _ in range(3):
        assert torch.equal(next(a), next(b))
    assert not torch.equal(next(spec.batches(32, seed=5)), next(spec.batches(32, seed=6)))
    assert torch.equal(spec.block(2, seed=1)[0], spec.block(2, seed=1)[0])
    assert not torch.equal(spec.block(2, seed=1)[0], spec.block(3, seed=1)[0])


def test_dictionary():
    spec = SyntheticSpec(d_in=32, n_features=100, seed=3)
    d = spec.dictionary()
    assert d.shape == (100, 32)
    assert torch.allclose(d.norm(dim=1), torch.ones(100), atol=1e-6)
    assert torch.equal(d, spec.dictionary())
    assert torch.equal(d, PlantedFeatures(d_in=32, n_features=100, seed=3).dictionary())
    assert not torch.equal(d, SyntheticSpec(d_in=32, n_features=100, seed=4).dictionary())
    h = SyntheticSpec(d_in=32, n_features=100, seed=3, hierarchy={"parents": 4, "children_per_parent": 2})
    assert torch.allclose(h.dictionary().norm(dim=1), torch.ones(100), atol=1e-6)


def test_offset_and_clean_signal():
    spec = SyntheticSpec(d_in=32, n_features=64, offset=5.0, noise=0.05)
    x, coeff = draw(spec, 20_000)
    assert float(spec.mean().norm()) == pytest.approx(5.0, rel=1e-5)
    residual = x - coeff @ spec.dictionary()
    assert torch.allclose(residual.mean(0), spec.mean(), atol=0.005)
    assert float(x.mean(0).norm()) == pytest.approx(5.0, abs=0.5)
    noiseless, c2 = draw(SyntheticSpec(d_in=32, n_features=64), 10)
    assert torch.allclose(noiseless, c2 @ SyntheticSpec(d_in=32, n_features=64).dictionary(), atol=1e-6)


def test_isotropic_and_anisotropic_noise():
    iso = SyntheticSpec(d_in=32, n_features=64, noise=0.2)
    x, coeff = draw(iso, 20_000)
    var = (x - coeff @ iso.dictionary()).var(0)
    assert torch.allclose(var, torch.full((32,), 0.04), rtol=0.05)
    aniso = SyntheticSpec(d_in=32, n_features=64, noise=0.2, noise_decay=2.0)
    q, std = aniso.noise_basis()
    assert torch.allclose(q.t() @ q, torch.eye(32), atol=1e-5)
    assert std[0] == pytest.approx(0.2) and std[-1] == pytest.approx(0.2 * math.exp(-2.0 * 31 / 32), rel=1e-5)
    x, coeff = draw(aniso, 20_000)
    var = ((x - coeff @ aniso.dictionary()) @ q).var(0)
    assert torch.allclose(var, std.pow(2), rtol=0.06)
    assert bool((var.reshape(4, 8).mean(1).diff() < 0).all())


@pytest.mark.parametrize(
    "override,field",
    [
        ({"d_in": 0}, "d_in"),
        ({"n_features": -3}, "n_features"),
        ({"n_features": 2.5}, "n_features"),
        ({"counts": {"kind": "poisson", "k": 3}}, "counts"),
        ({"counts": {"kind": "fixed"}}, "counts"),
        ({"counts": {"kind": "fixed", "k": 0}}, "counts.k"),
        ({"counts": {"kind": "fixed", "k": 65}}, "counts.k"),
        ({"counts": {"kind": "uniform", "low": 5, "high": 2}}, "counts.high"),
        ({"counts": {"kind": "mixture", "simple": 2, "complex": 6, "p_complex": 1.5}}, "counts.p_complex"),
        ({"counts": {"kind": "heavy", "alpha": 0.0, "max": 8}}, "counts.alpha"),
        ({"counts": {"kind": "heavy", "alpha": 2.0, "max": 100}}, "counts.max"),
        ({"magnitude": {"kind": "uniform", "low": 0.0, "high": 1.0}}, "magnitude.low"),
        ({"magnitude": {"kind": "uniform", "low": 1.0, "high": 0.5}}, "magnitude.high"),
        ({"magnitude": {"kind": "lognormal", "mu": 0.0, "sigma": -1.0}}, "magnitude.sigma"),
        ({"magnitude": {"kind": "exponential", "scale": 0}}, "magnitude.scale"),
        ({"magnitude": {"kind": "gamma", "scale": 1}}, "magnitude"),
        ({"correlation": 1.0}, "correlation"),
        ({"correlation": -0.1}, "correlation"),
        ({"hierarchy": {"parents": 2}}, "hierarchy"),
        ({"hierarchy": {"parents": 0, "children_per_parent": 2}}, "hierarchy.parents"),
        ({"hierarchy": {"parents": 20, "children_per_parent": 3}}, "hierarchy"),
        ({"noise": -1.0}, "noise"),
        ({"noise_decay": float("nan")}, "noise_decay"),
        ({"offset": -2}, "offset"),
        ({"seed": 1.5}, "seed"),
        ({"n_groups": 0}, "n_groups"),
    ],
)
def test_invalid_specs_name_the_field(override, field):
    kwargs = {"d_in": 16, "n_features": 64, **override}
    with pytest.raises(ValueError, match=rf"SyntheticSpec {field}="):
        SyntheticSpec(**kwargs)


def test_config_round_trip():
    spec = SyntheticSpec(
        d_in=16,
        n_features=64,
        counts=COUNT_LAWS["mixture"],
        magnitude={"kind": "lognormal", "mu": 0.1, "sigma": 0.3},
        correlation=0.4,
        hierarchy={"parents": 4, "children_per_parent": 2, "parent_weight": 2.0},
        noise=0.1,
        noise_decay=1.0,
        offset=2.0,
        seed=9,
        n_groups=4,
    )
    record = json.loads(json.dumps(spec.to_dict()))
    again = SyntheticSpec.from_dict(record)
    assert again == spec and hash(again) == hash(spec)
    assert torch.equal(draw(again, 50)[0], draw(spec, 50)[0])
    with pytest.raises(ValueError, match="unknown SyntheticSpec field"):
        SyntheticSpec.from_dict({**record, "temperature": 1})
    counts = dict(COUNT_LAWS["fixed"])
    frozen = SyntheticSpec(d_in=16, n_features=64, counts=counts)
    counts["k"] = 9  # the spec keeps its own copy
    assert frozen.counts["k"] == 4


def test_write_cache_round_trip(tmp_path):
    spec = SyntheticSpec(d_in=16, n_features=48, counts=COUNT_LAWS["uniform"], noise=0.05, correlation=0.5)
    n = 2 * BLOCK_TOKENS + 1000
    path = write_cache(spec, n, tmp_path, batch_size=3000, seed=4)
    cache = ActivationCache.open(path)
    blocks = [spec.block(b, seed=4) for b in range(3)]
    x = torch.cat([b[0] for b in blocks])[:n]
    coeff = torch.cat([b[1] for b in blocks])[:n]
    assert cache.n_tokens == n and cache.d_model == 16
    assert torch.equal(cache.tokens(), x)
    index = cache.index()
    assert np.array_equal(index[:, 0], np.arange(n)) and not index[:, 1].any()
    assert np.array_equal(index[:, 2], spec.true_counts(coeff).numpy())
    assert cache.spec["hook"] == "planted" and cache.spec["dataset"]["generator"] == spec.to_dict()
    assert write_cache(spec, n, tmp_path, batch_size=3000, seed=4) == path  # content addressed: reused
    other = ActivationCache.open(write_cache(spec, n, tmp_path, batch_size=1024, seed=4))
    assert other.path != path and torch.equal(other.tokens(), x)  # batch boundaries do not matter
