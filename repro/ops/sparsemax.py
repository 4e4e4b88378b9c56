"""Exact sparsemax (Martins & Astudillo, 2016): thresholds, probabilities and gradients.

Sparsemax of a score vector z in R^M is the Euclidean projection onto the probability simplex,

    p = sparsemax(z) = max(z - tau, 0),

with the threshold tau given by the sort-based rule: sort z_(1) >= ... >= z_(M), S_k = sum_{j<=k} z_(j),

    bound_k = 1[1 + k * z_(k) > S_k],   k* = max_k k * bound_k,   tau = (S_{k*} - 1) / k*.

Public functions (all operate along ``dim``; any shape, any dim):

- ``sparsemax_threshold_sort(z, dim)``: the reference: full sort, then the rule above; returns
  ``(tau, support_size)`` with ``dim`` kept as size 1.
- ``sparsemax_threshold(z, dim, k0)``: the same numbers, bit for bit, from a partial ``torch.topk`` with
  doubling (``performance.md`` §4); the fast path.
- ``sparsemax(z, dim)``: probabilities from the fast threshold; custom autograd backward.
- ``sparsemax_sort(z, dim)``: the official, slow formulation built from differentiable ops on the graph
  (sort, cumsum, gather); the benchmark's baseline.

Numerical form of the support test (why it is not evaluated literally)
----------------------------------------------------------------------
``1 + k z_(k) > S_k`` is equivalent to ``G_k < 1`` with

    G_k = S_k - k z_(k) = sum_{i<k} (z_(i) - z_(k)) = sum_{j=2..k} (j - 1) * (z_(j-1) - z_(j)),   G_1 = 0.

Evaluated literally in floating point, ``1 + k z_(k) > S_k`` is *not* monotone in k: it compares two large,
nearly equal rounded numbers. A row of 4096 equal values 1e30 in float64 gives bound true at k = 45 (and not
at k = 1) among the first 64 ranks but true again at k = 1577; 4096 equal values 1e4 in float32 give
k* = 1677 instead of 4096. With such a bound no top-k method can reproduce ``max_k k * bound_k`` without
looking at every rank. Both thresholds here therefore evaluate the same test as ``G_k < 1``: the differences of
sorted values are >= 0, so every term of G is >= 0 and G is a running sum of non-negative numbers; it is
additionally made non-decreasing with ``cummax`` so that no summation-order effect can break this. The bound is
then a prefix by construction (k* = max_k k * bound_k = number of ranks passing), the test has no
cancellation (all-equal rows give G = 0 and the full support at any magnitude), and ``bound_1`` is true for every
row whose maximum is finite, so k* >= 1 and tau is finite even where 1 is below the resolution of z (there
tau rounds to z_(1) and p underflows to 0; e.g. |z| ~ 1e30). In exact arithmetic this is the same rule.
``tau`` is still ``(S_{k*} - 1) / k*`` with S the plain cumulative sum of the sorted values.

Bit-identity of the fast path
-----------------------------
``torch.topk(z, k, sorted=True).values`` are the first k entries of the descending sort (equal values are
interchangeable), and ``torch.cumsum`` on a contiguous CPU row accumulates sequentially, so the prefix sums of
the top-k equal the first k prefix sums of the full sort (checked in ``tests/test_sparsemax.py`` for widths up
to 65,536, fp32 and fp64). Both functions call the same routine (``_threshold_from_sorted``) on a descending
prefix, so the threshold found from a top-k is bit-identical to the reference whenever the support ends inside
it (support size < k); rows whose support size equals k are redone with 2k, down to the full sort. This has been
verified on CPU only; a backend whose cumsum is not prefix-stable would break bit-identity (not correctness).

Conventions
-----------
- float32/float64 are computed in their own dtype; float16/bfloat16 are computed in float32 and tau / p are
  returned in the input dtype (support_size is always int64).
- A row whose entries are all -inf has no sparsemax: tau = NaN, support_size = 0, p = NaN (both thresholds
  agree; the backward of ``sparsemax`` returns 0 for such rows). Rows with some -inf entries are fine (those
  entries get p = 0). +inf and NaN entries are unsupported (results are NaN or unspecified).
- ``repro.ops`` depends on torch alone.
"""

from __future__ import annotations

import torch

__all__ = [
    "sparsemax",
    "sparsemax_sort",
    "sparsemax_threshold",
    "sparsemax_threshold_sort",
    "initial_k",
    "recent_max_support",
    "reset_support_history",
    "sparsemax_support_topk",
]

# Smallest starting k of the top-k pass (performance.md §4: k0 = next power of two >= recent max L0, min 64).
MIN_K0 = 64

# Largest support size found by the most recent call of `sparsemax_threshold` (or `sparsemax`); the default
# starting k of the next call is derived from it. A heuristic only: results never depend on it.
_recent_max_support = 0


def recent_max_support() -> int:
    """Largest support size found by the most recent ``sparsemax_threshold``/``sparsemax`` call (0 if none)."""
    return _recent_max_support


def reset_support_history(value: int = 0) -> None:
    """Set the recorded recent maximum support size (0 forgets the history)."""
    global _recent_max_support
    if value < 0:
        raise ValueError(f"support size must be >= 0, got {value}")
    _recent_max_support = int(value)


def initial_k(width: int) -> int:
    """Starting k of the top-k pass when ``k0`` is None.

    The smallest power of two strictly greater than ``recent_max_support()`` (strictly, so that a row with
    the same support as last time is resolved by the first pass instead of being redone), at least
    ``MIN_K0`` = 64, at most ``width``.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    k = MIN_K0
    while k <= _recent_max_support:
        k *= 2
    return min(k, width)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if not dtype.is_floating_point:
        raise TypeError(f"sparsemax needs a floating-point tensor, got {dtype}")
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def _as_rows(z: torch.Tensor, dim: int) -> tuple[torch.Tensor, int]:
    """Move ``dim`` last and flatten the rest: a contiguous (R, M) tensor in the compute dtype; returns (rows, dim)."""
    if z.dim() == 0:
        raise ValueError("sparsemax needs a tensor with at least one dimension")
    dim = dim % z.dim()
    width = z.shape[dim]
    if width == 0:
        raise ValueError("sparsemax over an empty dimension is undefined")
    rows = z.movedim(dim, -1).reshape(-1, width).to(_compute_dtype(z.dtype)).contiguous()
    return rows, dim


def _from_rows(x: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of ``_as_rows`` for an (R, m) result, m = 1 (keepdim) or the full width."""
    moved = list(like.movedim(dim, -1).shape)
    moved[-1] = x.shape[-1]
    return x.reshape(moved).movedim(-1, dim)


def _prefix_sum(x: torch.Tensor) -> torch.Tensor:
    # The one summation routine of both thresholds: prefix sums along the last dim of a contiguous 2-D tensor.
    # Sequential on CPU, so the first k outputs depend only on the first k inputs (tested).
    return torch.cumsum(x, dim=1)


def _threshold_from_sorted(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tau (R,) and support size (R,) int64 from a descending prefix ``v`` (R, k) of each row's sort.

    Within the prefix: G_j = cummax(cumsum((j - 1) * (v_(j-1) - v_(j)))), bound_j = 1[G_j < 1] (bound_1 = 1 iff
    v_(1) > -inf), r = number of ranks passing (a prefix), tau = (S_r - 1) / r. If r < k the support of the whole
    row is exactly these r ranks; if r == k it may extend beyond the prefix. r = 0 (all -inf) gives tau = NaN.
    """
    n_rows, k = v.shape
    first_ok = v[:, 0] > float("-inf")
    if k > 1:
        ranks = torch.arange(1, k, dtype=v.dtype, device=v.device)
        terms = (v[:, :-1] - v[:, 1:]) * ranks  # >= 0; NaN only from (-inf) - (-inf) or NaN inputs
        terms = torch.where(torch.isnan(terms), torch.full_like(terms, float("inf")), terms)
        gaps = torch.cummax(_prefix_sum(terms), dim=1).values
        tail = (gaps < 1).sum(dim=1)  # ranks 2..k passing; a prefix since gaps is non-decreasing
        support = torch.where(first_ok, tail + 1, torch.zeros_like(tail))
    else:
        support = first_ok.to(torch.int64)
    sums = _prefix_sum(v)
    s_at = sums.gather(1, (support - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    tau = (s_at - 1) / support.to(v.dtype)
    tau = torch.where(support > 0, tau, torch.full_like(tau, float("nan")))
    return tau, support


def _threshold_rows_sort(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _threshold_from_sorted(torch.sort(rows, dim=1, descending=True).values)


def _threshold_rows_topk(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast exact threshold of (R, M) rows: top-k, then doubling k on the rows whose support reached k."""
    n_rows, width = rows.shape
    tau = torch.empty(n_rows, dtype=rows.dtype, device=rows.device)
    support = torch.empty(n_rows, dtype=torch.int64, device=rows.device)
    index = None  # None: `pending` is all rows, in order (avoids copying R x M when nothing is solved yet)
    pending = rows
    while pending.shape[0] > 0:
        if k >= width:
            t, s = _threshold_rows_sort(pending)
            solved = None
        else:
            t, s = _threshold_from_sorted(torch.topk(pending, k, dim=1, largest=True, sorted=True).values)
            solved = s < k
        if solved is None or bool(solved.all()):
            if index is None:
                tau.copy_(t)
                support.copy_(s)
            else:
                tau[index] = t
                support[index] = s
            break
        if bool(solved.any()):
            if index is None:
                index = torch.arange(n_rows, device=rows.device)
            tau[index[solved]] = t[solved]
            support[index[solved]] = s[solved]
            unsolved = ~solved
            index = index[unsolved]
            pending = pending[unsolved]
        k *= 2
    return tau, support


@torch.no_grad()
def sparsemax_threshold_sort(z: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference sparsemax threshold by a full sort (no grad).

    Sort descending z_(1) >= ... >= z_(M), S_k = sum_{j<=k} z_(j); bound_k = 1[1 + k z_(k) > S_k], evaluated
    as G_k < 1 with G_k = sum_{j=2..k} (j - 1)(z_(j-1) - z_(j)) (same inequality, monotone; see the module
    docstring); k* = max_k k * bound_k; tau = (S_{k*} - 1) / k*.

    Returns ``(tau, support_size)``, both shaped like ``z`` with ``dim`` of size 1; tau in z's dtype (computed in
    float32 for float16/bfloat16), support_size int64 (= k* = #{i: z_i > tau} for generic inputs). A row of all
    -inf gives tau = NaN, support_size = 0.
    """
    rows, d = _as_rows(z, dim)
    tau, support = _threshold_rows_sort(rows)
    return _from_rows(tau.to(z.dtype).unsqueeze(1), z, d), _from_rows(support.unsqueeze(1), z, d)


def _threshold_fast_rows(rows: torch.Tensor, k0: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    global _recent_max_support
    width = rows.shape[1]
    if k0 is None:
        k = initial_k(width)
    else:
        if int(k0) < 1:
            raise ValueError(f"k0 must be >= 1, got {k0}")
        k = min(int(k0), width)
    tau, support = _threshold_rows_topk(rows, k)
    if support.numel() > 0:
        _recent_max_support = int(support.max())
    return tau, support


@torch.no_grad()
def sparsemax_threshold(z: torch.Tensor, dim: int = -1, k0: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast exact sparsemax threshold: partial top-k with doubling (no grad).

    v = topk(z, k, dim, sorted=True).values, then on v the reference rule of ``sparsemax_threshold_sort``
    (S_j = cumsum(v)_j, bound_j = 1[1 + j v_j > S_j] as G_j < 1, r = max_j j * bound_j, tau = (S_r - 1) / r).
    The bound is a prefix, so a row with r < k has its whole support in the top-k; rows with r == k are redone
    with 2k (only those rows), recursively, and with a full sort once k >= M. Returns exactly (bit for bit) the
    ``(tau, support_size)`` of ``sparsemax_threshold_sort``: same shapes, dtypes and all-(-inf) convention.

    ``k0``: starting k (clipped to M). None: ``initial_k(M)``, the smallest power of two > the largest support
    found by the previous call (``recent_max_support()``), at least 64, at most M. Each call records its own
    largest support for the next one; the record affects speed only.
    """
    rows, d = _as_rows(z, dim)
    tau, support = _threshold_fast_rows(rows, k0)
    return _from_rows(tau.to(z.dtype).unsqueeze(1), z, d), _from_rows(support.unsqueeze(1), z, d)


@torch.no_grad()
def sparsemax_support_topk(
    rows: torch.Tensor, k0: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (R, M) rows: ``(tau (R, 1), support_size (R, 1), values (R, w), indices (R, w))`` where tau and
    support_size are exactly those of :func:`sparsemax_threshold` and ``values``/``indices`` are each row's w
    largest entries in descending order, w = the largest support size. The top-k pass that finds tau
    also provides the support, so callers that need the support entries do not sort twice."""
    global _recent_max_support
    if rows.dim() != 2 or not rows.dtype.is_floating_point or rows.dtype in (torch.float16, torch.bfloat16):
        raise ValueError("sparsemax_support_topk needs a 2-D float32/float64 tensor")
    width = rows.shape[1]
    k = initial_k(width) if k0 is None else min(max(int(k0), 1), width)
    top = torch.topk(rows, k, dim=1, largest=True, sorted=True)
    tau, support = _threshold_from_sorted(top.values)
    if k < width and bool((support >= k).any()):
        tau, support = _threshold_rows_topk(rows, 2 * k)
        top = torch.topk(rows, int(support.max()), dim=1, largest=True, sorted=True)
    used = int(support.max()) if support.numel() else 0
    _recent_max_support = used
    return tau.unsqueeze(1), support.unsqueeze(1), top.values[:, :used], top.indices[:, :used]


class _Sparsemax(torch.autograd.Function):
    """p = max(z - tau, 0) with the fast exact tau; backward on S = {p > 0}: g_in = g_out - mean_S(g_out)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, dim: int) -> torch.Tensor:
        rows, d = _as_rows(z, dim)
        tau, _ = _threshold_fast_rows(rows, None)
        p = torch.clamp(rows - tau.unsqueeze(1), min=0)
        out = _from_rows(p, z, d).to(z.dtype).contiguous()
        ctx.dim = d
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (p,) = ctx.saved_tensors
        dim = ctx.dim
        mask = p > 0
        g = grad_out.to(_compute_dtype(p.dtype)) * mask
        size = mask.sum(dim=dim, keepdim=True).clamp(min=1)
        mean = g.sum(dim=dim, keepdim=True) / size.to(g.dtype)
        grad_in = (g - mean) * mask
        return grad_in.to(grad_out.dtype), None


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax probabilities p = max(z - tau, 0) along ``dim``, tau from ``sparsemax_threshold`` (exact).

    p >= 0, sum(p) = 1 along ``dim``. Custom autograd backward (the Jacobian of Martins & Astudillo, 2016): with
    S = {i: p_i > 0}, g_in_i = g_out_i - (1/|S|) sum_{j in S} g_out_j for i in S and 0 elsewhere. float64 is
    supported (gradcheck); float16/bfloat16 are computed in float32 and returned in the input dtype. A row of
    all -inf gives p = NaN (and a zero gradient).
    """
    if z.dim() == 0:
        raise ValueError("sparsemax needs a tensor with at least one dimension")
    return _Sparsemax.apply(z, dim % z.dim())


def sparsemax_sort(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax as the official code computes it: sort, cumsum and gather on the autograd graph (slow).

    zs = sort(z, descending); S = cumsum(zs); bound_k = 1[1 + k zs_k > S_k] (evaluated literally, as the official
    code does); k* = max(max_k k * bound_k, 1); tau = (S_{k*} - 1) / k*; p = relu(z - tau). The gradient is
    autograd's through sort, cumsum and gather (d tau / d z_(i) = 1/k* for i <= k*), which equals the custom
    backward of ``sparsemax`` wherever the supports agree. It may differ from ``sparsemax`` when rounding makes
    the literal bound ambiguous (ties at the boundary, |z| near or above 1/eps; see the module docstring).
    float16/bfloat16 are computed in float32 and returned in the input dtype.
    """
    if z.dim() == 0:
        raise ValueError("sparsemax needs a tensor with at least one dimension")
    work = z.to(_compute_dtype(z.dtype)).movedim(dim, -1)
    width = work.shape[-1]
    if width == 0:
        raise ValueError("sparsemax over an empty dimension is undefined")
    zs = torch.sort(work, dim=-1, descending=True).values
    sums = torch.cumsum(zs, dim=-1)
    ranks = torch.arange(1, width + 1, dtype=work.dtype, device=work.device)
    bound = 1 + ranks * zs > sums
    k_star = (bound * ranks).amax(dim=-1, keepdim=True).clamp(min=1)
    tau = (sums.gather(-1, k_star.long() - 1) - 1) / k_star
    p = torch.relu(work - tau)
    return p.movedim(-1, dim).to(z.dtype)
