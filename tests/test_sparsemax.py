"""Tests for repro.ops.sparsemax: bit-exactness of the top-k threshold, an independent float64 reference
(entmax), properties, gradients and the starting-k heuristic (performance.md §4)."""

from __future__ import annotations

import math

import pytest
import torch

from repro.ops import sparsemax, sparsemax_sort, sparsemax_threshold, sparsemax_threshold_sort
from repro.ops.sparsemax import initial_k, recent_max_support, reset_support_history

F32, F64 = torch.float32, torch.float64
NEG_INF = float("-inf")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape, dtype=F64, seed=0, scale=1.0):
    return (torch.randn(shape, generator=_gen(seed), dtype=F64) * scale).to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch.equal, with NaN == NaN (the all -inf convention)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    na, nb = torch.isnan(a), torch.isnan(b)
    return torch.equal(na, nb) and torch.equal(a[~na], b[~nb])


def _assert_exact(z: torch.Tensor, dim: int = -1, k0=None) -> tuple[torch.Tensor, torch.Tensor]:
    tau_ref, s_ref = sparsemax_threshold_sort(z, dim)
    tau, s = sparsemax_threshold(z, dim, k0=k0)
    assert s.dtype == torch.int64 and s_ref.dtype == torch.int64
    assert tau.dtype == z.dtype
    assert torch.equal(s, s_ref), (s - s_ref).abs().max()
    assert _same(tau, tau_ref), (tau - tau_ref).abs().max()
    expect = list(z.shape)
    expect[dim] = 1
    assert list(tau.shape) == expect and list(s.shape) == expect
    return tau_ref, s_ref


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread avoids OpenMP start-up/contention costs that dominate on a busy box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _fresh_history():
    reset_support_history()
    yield
    reset_support_history()


# --------------------------------------------------------------------------------------------- premise
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("width", [3, 65, 1000, 65536])
def test_topk_prefix_sums_equal_sort_prefix_sums(dtype, width):
    """The premise of bit-identity: top-k values and their cumsum are the prefix of the full sort's."""
    rows = 2 if width > 10000 else 32
    z = _randn((rows, width), dtype, seed=width)
    full = torch.sort(z, dim=1, descending=True).values
    sums = torch.cumsum(full, dim=1)
    for k in sorted({1, 2, min(63, width), min(64, width), min(256, width), width}):
        v = torch.topk(z, k, dim=1, sorted=True).values
        assert torch.equal(v, full[:, :k])
        assert torch.equal(torch.cumsum(v, dim=1), sums[:, :k])


# --------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("scale", [1e-5, 0.5, 1e4])
@pytest.mark.parametrize("width", [1, 2, 3, 64, 65, 1000, 4096])
def test_exact_random(dtype, scale, width):
    rows = 32 if width >= 4096 else 128
    z = _randn((rows, width), dtype, seed=width, scale=scale)
    _assert_exact(z)
    _assert_exact(z, k0=64)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
@pytest.mark.parametrize("width", [1, 3, 65, 1000, 4096])
def test_exact_extreme_scales_fp64(scale, width):
    z = _randn((64, width), F64, seed=width + 1, scale=scale)
    tau, s = _assert_exact(z)
    _assert_exact(z, k0=1)
    assert torch.isfinite(tau).all() and (s >= 1).all()


@pytest.mark.parametrize("dtype", [F32, F64])
def test_exact_width_65536(dtype):
    m = 65536
    z = torch.cat(
        [
            _randn((2, m), dtype, seed=1, scale=0.5),
            _randn((2, m), dtype, seed=2, scale=2 / math.sqrt(m)),  # init-like: support in the hundreds
            _randn((1, m), dtype, seed=3, scale=1e-5),  # support = most of the row: doubling to the full sort
        ]
    )
    _, s = _assert_exact(z, k0=64)
    assert s[2:4].min() > 64 and s[4] > m // 2
    _assert_exact(z)


def _init_like(rows, width, dtype=F32, seed=0):
    return _randn((rows, width), dtype, seed=seed, scale=2 / math.sqrt(width))


def _trained_like(rows, width, dtype=F32, seed=0, n_big=20):
    g = _gen(seed)
    z = torch.randn(rows, width, generator=g, dtype=F64) * (2 / math.sqrt(width))
    idx = torch.rand(rows, width, generator=g).argsort(dim=1)[:, :n_big]
    z.scatter_(1, idx, torch.rand(rows, n_big, generator=g, dtype=F64) * 0.4 + 0.05)
    return z.to(dtype)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_exact_init_like_forces_doubling(dtype):
    for width, rows in [(4096, 256), (24576, 8)]:
        z = _init_like(rows, width, dtype, seed=width)
        _, s = _assert_exact(z, k0=64)
        assert s.max() > 64, "init-like support should exceed k0 = 64 (doubling exercised)"
        assert s.float().mean() < 0.05 * width
        _assert_exact(z)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_exact_trained_like(dtype):
    z = _trained_like(256, 4096, dtype, seed=5)
    _, s = _assert_exact(z, k0=64)
    assert s.max() < 64
    _assert_exact(z)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("denominator", [2.0, 3.0, 7.0, 10.0])
def test_exact_ties(dtype, denominator):
    """Values from a small integer set divided by a constant: long blocks of tied values around tau."""
    for width in (3, 64, 65, 1000, 4096):
        rows = 16 if width >= 4096 else 48
        g = _gen(width)
        for top in (3, 6, 12):
            z = (torch.randint(0, top, (rows, width), generator=g).to(F64) / denominator).to(dtype)
            _assert_exact(z)
            _assert_exact(z, k0=1)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_exact_boundary_ties(dtype):
    """Rows where, in exact arithmetic, 1 + k z_(k) = S_k for a long block of tied ranks across k = 64."""
    width = 4096
    rows = []
    for w in (0.1, 3 / 7, -2 / 3, 1e4 / 3, 1e-5):
        for n_top in (1, 2, 5, 50, 63, 64, 100):
            r = torch.full((width,), w, dtype=F64)
            r[:n_top] = w + 1.0 / n_top
            rows.append(r)
    z = torch.stack(rows).to(dtype)
    for k0 in (None, 1, 64, 128, width):
        _assert_exact(z, k0=k0)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("width", [1, 2, 65, 4096])
def test_exact_all_equal_rows(dtype, width):
    values = [0.0, -0.0, 1e-30, 1e-5, 0.5, 3 / 7, -1.0, 1e4, 1e30]
    z = torch.tensor(values, dtype=F64).unsqueeze(1).expand(-1, width).to(dtype).contiguous()
    tau, s = _assert_exact(z)
    _assert_exact(z, k0=64)
    # Full support at every magnitude (the cancellation-free bound; the literal 1 + k z > S_k is not).
    assert (s == width).all()


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("width", [2, 65, 1000])
def test_exact_neg_inf(dtype, width):
    g = _gen(width)
    z = _randn((200, width), dtype, seed=width)
    z[torch.rand(200, width, generator=g) < 0.3] = NEG_INF
    z[3:, width // 2] = 0.25  # every other row keeps a finite entry
    z[0, 1:] = NEG_INF  # a single finite entry
    z[0, 0] = 0.75
    z[1, :-1] = NEG_INF
    z[1, -1] = -0.5
    z[2, :] = NEG_INF  # undefined: tau = NaN, support 0
    tau, s = _assert_exact(z)
    _assert_exact(z, k0=1)
    assert torch.isnan(tau[2, 0]) and s[2, 0] == 0
    assert torch.isfinite(tau[3:]).all()
    assert s[0, 0] == 1 and tau[0, 0] == z[0, 0] - 1
    assert s[1, 0] == 1 and tau[1, 0] == z[1, -1] - 1
    p = sparsemax(z.clone().requires_grad_(True))
    assert torch.isnan(p[2]).all() and not torch.isnan(p[3:]).any()
    assert (p[3:][torch.isinf(z[3:])] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    z = _randn((100, 300), F32, seed=3).to(dtype)
    tau, s = _assert_exact(z)
    tau32, s32 = sparsemax_threshold_sort(z.float())
    assert tau.dtype == dtype and torch.equal(s, s32) and torch.equal(tau, tau32.to(dtype))
    p = sparsemax(z)
    assert p.dtype == dtype
    assert torch.equal(p, torch.clamp(z.float() - tau32, min=0).to(dtype))
    assert sparsemax_sort(z).dtype == dtype


def test_dim_and_3d():
    z = _randn((5, 300, 7), F32, seed=11)
    for dim in (0, 1, 2, -1, -2):
        tau, s = _assert_exact(z, dim=dim)
        tau_last, s_last = sparsemax_threshold_sort(z.movedim(dim, -1))
        assert torch.equal(tau, tau_last.movedim(-1, dim)) and torch.equal(s, s_last.movedim(-1, dim))
        p = sparsemax(z, dim=dim)
        assert torch.equal(p, sparsemax(z.movedim(dim, -1)).movedim(-1, dim))
        assert torch.allclose(p.sum(dim), torch.ones(()), atol=1e-5)
        assert torch.allclose(p, sparsemax_sort(z, dim=dim), atol=1e-6)


def test_explicit_k0_values():
    for width in (5, 64, 1000):
        z = torch.cat([_init_like(50, width, F32, seed=width), _trained_like(50, width, F32, seed=width)])
        results = [sparsemax_threshold(z, k0=k0) for k0 in (1, 3, 64, width, 10 * width)]
        results.append(sparsemax_threshold_sort(z))
        for tau, s in results[1:]:
            assert torch.equal(tau, results[0][0]) and torch.equal(s, results[0][1])
    with pytest.raises(ValueError):
        sparsemax_threshold(z, k0=0)


def test_one_element_rows():
    z = _randn((10, 1), F64, seed=2, scale=3.0)
    tau, s = _assert_exact(z)
    assert torch.equal(tau, z - 1) and (s == 1).all()
    assert torch.allclose(sparsemax(z), torch.ones_like(z), atol=1e-15, rtol=0)  # z - (z - 1), rounded


def test_invalid_inputs():
    with pytest.raises(TypeError):
        sparsemax_threshold(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError):
        sparsemax(torch.ones(3, 0))
    with pytest.raises(ValueError):
        sparsemax_threshold_sort(torch.tensor(1.0))
    tau, s = sparsemax_threshold(torch.ones(0, 4))
    assert tau.shape == (0, 1) and s.shape == (0, 1)


# --------------------------------------------------------------------------------- independent reference
@pytest.mark.parametrize("width", [2, 10, 300, 4096])
def test_against_entmax_fp64(width):
    """entmax sums in another order, so tau agrees to rounding (1e-12) and the support agrees except for
    elements within 1e-12 of tau (none expected for continuous random inputs)."""
    entmax = pytest.importorskip("entmax")
    for z in (_randn((64, width), F64, seed=width), _init_like(64, width, F64, seed=width)):
        p = sparsemax(z)
        assert (p >= 0).all()
        assert torch.allclose(p.sum(-1), torch.ones((), dtype=F64), atol=1e-12, rtol=0)
        q = entmax.sparsemax(z.double(), dim=-1)
        assert torch.allclose(p, q, atol=1e-12, rtol=0)
        tau, _ = sparsemax_threshold(z)
        differ = (p > 0) != (q > 0)
        assert ((z - tau).abs()[differ] <= 1e-12).all()


def test_translation_invariance():
    z = torch.randint(-4000, 4000, (50, 500), generator=_gen(4)).to(F64) / 1024  # exact under integer shifts
    p = sparsemax(z)
    tau, _ = sparsemax_threshold(z)
    for c in (-7.0, 1.0, 1000.0):
        q = sparsemax(z + c)
        assert torch.allclose(p, q, atol=1e-12, rtol=0)
        near = (z - tau).abs() <= 1e-12
        assert torch.equal((p > 0) | near, (q > 0) | near)


def test_one_hot_for_a_huge_gap():
    z = _randn((20, 100), F64, seed=6)
    z[:, 17] = 50.0
    p = sparsemax(z)
    assert torch.equal(p, torch.nn.functional.one_hot(torch.full((20,), 17), 100).to(F64))
    _, s = sparsemax_threshold(z)
    assert (s == 1).all()


def test_sparsemax_matches_sort_forward():
    for z in (_randn((64, 1000), F32, seed=8), _init_like(64, 3000, F32, seed=8), _trained_like(64, 3000, seed=8)):
        p = sparsemax(z)
        assert torch.allclose(p, sparsemax_sort(z), atol=1e-6, rtol=0)
        assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)


# ------------------------------------------------------------------------------------------- gradients
def _separated(shape, dim, seed):
    """Distinct, well-separated fp64 values whose distance to tau is > 1e-3 (gradcheck needs a margin)."""
    for attempt in range(100):
        g = _gen(seed * 1000 + attempt)
        n = math.prod(shape)
        z = (torch.randperm(n, generator=g).to(F64) * 0.37 / math.sqrt(shape[dim])).reshape(shape)
        z = z + torch.rand(shape, generator=g, dtype=F64) * 1e-2
        tau, _ = sparsemax_threshold_sort(z, dim)
        if ((z - tau).abs() > 1e-3).all():
            return z
    raise AssertionError("no separated input found")


@pytest.mark.parametrize(("shape", "dim"), [((3, 7), -1), ((2, 40), 1), ((6, 4), 0), ((3, 5, 6), 1), ((2, 3, 9), -1)])
def test_gradcheck(shape, dim):
    z = _separated(shape, dim, seed=len(shape) * 10 + dim).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sparsemax(x, dim), (z,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(lambda x: sparsemax_sort(x, dim), (z,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize(("shape", "dim"), [((32, 500), -1), ((4, 300, 5), 1), ((64, 2000), -1)])
def test_gradient_matches_sort_autograd(shape, dim):
    for scale in (0.5, 2 / math.sqrt(shape[dim])):
        z = _randn(shape, F64, seed=shape[dim], scale=scale)
        g = _randn(shape, F64, seed=99)
        a = z.clone().requires_grad_(True)
        b = z.clone().requires_grad_(True)
        pa, pb = sparsemax(a, dim), sparsemax_sort(b, dim)
        assert torch.allclose(pa, pb, atol=1e-13, rtol=0)
        (pa * g).sum().backward()
        (pb * g).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-12, rtol=0)
        assert torch.allclose(a.grad.sum(dim), torch.zeros((), dtype=F64), atol=1e-10)


def test_half_precision_backward():
    z = _randn((8, 50), F32, seed=1).to(torch.bfloat16).requires_grad_(True)
    p = sparsemax(z)
    p.backward(torch.ones_like(p))
    assert z.grad.dtype == torch.bfloat16
    assert (z.grad == 0).all()  # ones project to zero on the simplex tangent space


# ---------------------------------------------------------------------------------------- k0 heuristic
def test_starting_k_follows_recent_support():
    assert recent_max_support() == 0 and initial_k(4096) == 64 and initial_k(10) == 10
    big = _randn((16, 4096), F32, seed=1, scale=1e-3)  # support = most of the row
    tau, s = _assert_exact(big)
    assert recent_max_support() == int(s.max()) > 1000
    assert initial_k(4096) >= s.max()
    assert initial_k(1 << 20) == 1 << (int(s.max()).bit_length())  # next power of two above the support
    small = _trained_like(32, 4096, seed=2)
    _assert_exact(small)  # starts from a large k after the big call: still exact
    assert recent_max_support() < 64 and initial_k(4096) == 64
    _assert_exact(big)  # starts from k = 64 after the small call: doubling, still exact


def test_history_never_changes_results():
    z = torch.cat([_init_like(32, 2048, F32, seed=3), _trained_like(32, 2048, seed=3), _randn((8, 2048), F32, 4)])
    ref = sparsemax_threshold_sort(z)
    p_ref = sparsemax(z)
    for history in (0, 1, 63, 64, 65, 500, 2047, 2048, 10**6):
        reset_support_history(history)
        assert initial_k(2048) >= min(history, 2048)
        tau, s = sparsemax_threshold(z)
        assert torch.equal(tau, ref[0]) and torch.equal(s, ref[1])
        reset_support_history(history)
        assert torch.equal(sparsemax(z), p_ref)
    assert recent_max_support() == int(ref[1].max())


@pytest.mark.parametrize("scale", [2 / 24576**0.5, 0.5, 30.0])
@pytest.mark.parametrize("k0", [None, 1, 64])
def test_support_topk_matches_threshold_and_support(scale, k0):
    from repro.ops.sparsemax import sparsemax_support_topk

    g = torch.Generator().manual_seed(11)
    z = torch.randn(40, 3000, generator=g) * scale
    tau, support, values, indices = sparsemax_support_topk(z, k0=k0)
    ref_tau, ref_support = sparsemax_threshold_sort(z)
    assert torch.equal(tau, ref_tau) and torch.equal(support, ref_support)
    assert values.shape[1] == int(ref_support.max())
    assert torch.equal(values, z.gather(1, indices))
    assert torch.equal((z > tau).sum(1, keepdim=True), support)
    chosen = torch.zeros_like(z, dtype=torch.bool).scatter(1, indices, values > tau)
    assert torch.equal(chosen, z > tau)
