"""The ground-truth benchmark generator (:class:`SyntheticSpec`, see :mod:`repro.synthetic`): planted features
with an exact, known number of active features per token, its seeded fixed parts and the seeded block stream
that the activation cache of :func:`repro.synthetic.write_cache` is cut from."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repro.synthetic_validation import _is_int, checked_fields

GENERATOR_VERSION = 1  # bump whenever the bytes a given spec produces change
BLOCK_TOKENS = 4096  # rows per block of the cache stream (see SyntheticSpec.block)
_CHUNK_ROWS = 16384  # sample() works through at most this many rows at a time (bounds temporaries)
_TINY = 2.0**-30  # floor of uniform draws before a log (torch.rand can return exactly 0)


@dataclass(frozen=True)
class SyntheticSpec:
    """A planted-feature generator where each token's number of active features is known exactly.

    x = sum_{i in S} m_i f_i + mean + eps, for a set S of ``|S| = count`` distinct active features, unit
    dictionary rows f_i, magnitudes m_i > 0, a constant mean vector of norm ``offset`` and noise eps.

    Fields
    ------
    d_in: dimension. n_features: dictionary size (may exceed d_in: superposition).
    counts: the law of ``count = |S|``, the per-token number of active features (always >= 1 and at most
    n_features; with a hierarchy it includes the active children):

    - ``{"kind": "fixed", "k": K}``: count = K;
    - ``{"kind": "uniform", "low": a, "high": b}``: count uniform on the integers a..b (inclusive);
    - ``{"kind": "mixture", "simple": s, "complex": c, "p_complex": p}``: a token is complex with
      probability p (count = c), else simple (count = s);
    - ``{"kind": "heavy", "alpha": a, "max": M}``: P(count = k) proportional to k^-a for k = 1..M (zipf).

    magnitude: the law of every active coefficient (independent, strictly positive):
    ``{"kind": "uniform", "low": l, "high": h}`` (0 < l <= h), ``{"kind": "lognormal", "mu": mu,
    "sigma": s}`` (exp(mu + s z), z ~ N(0, 1)), ``{"kind": "exponential", "scale": s}`` (mean s).

    correlation: rho in [0, 1), feature co-occurrence. Features are split round-robin into ``n_groups``
    groups (group(i) = i mod n_groups); every token draws one preferred group g uniformly, and its
    active set is drawn without replacement with feature weights
    w_i = (1 - rho) + rho * n_features / |G_g| * 1[group(i) = g], i.e. each pick comes (before the
    without-replacement renormalisation) from the preferred group with probability rho and from all
    features uniformly with probability 1 - rho. rho = 0: every feature equally likely, independently
    of the token (no groups are drawn).

    hierarchy: None, or ``{"parents": P, "children_per_parent": C}`` with an optional
    ``"parent_weight"`` (default 1.0). Features 0..P-1 are parents; features P + p*C .. P + p*C + C-1
    are the children of parent p; the rest are free features. A child is active only when its parent
    is (guaranteed for every token), and the count includes the active children. Child directions
    are correlated with their parent: f_child = normalise(parent_weight * f_parent + u) for a random
    unit vector u (cosine about parent_weight / sqrt(1 + parent_weight^2), ~0.71 by default).

    noise: standard deviation of the Gaussian noise. noise_decay: 0 = isotropic noise; > 0 =
    anisotropic: along the columns q_i (i = 0..d_in-1) of a fixed random orthonormal basis the noise
    has std noise * exp(-noise_decay * i / d_in) (see :meth:`noise_basis`).
    offset: norm of the constant mean vector added to every token (see :meth:`mean`).
    seed: seeds the dictionary, the mean vector and the noise basis (not the token stream: that is the
    generator passed to :meth:`sample` or the seed of :meth:`batches`).
    n_groups: the number of co-occurrence groups (used only when correlation > 0).

    Active-set selection (vectorised, no loop over tokens): weighted sampling without replacement by
    exponential-race keys (Efraimidis-Spirakis), key_i = log(U_i) / w_i with U_i ~ U(0, 1); the
    ``count`` features with the largest keys are active. A child's key is its parent's key plus its own,
    key_child = key_parent + log(U) / w_child (and strictly below key_parent), so a child can enter the
    top ``count`` only after its parent has.

    Stream order (a contract that :func:`write_cache` relies on): for every chunk of at most 16384 rows,
    the counts are drawn first, then the groups, the keys, the magnitudes and the noise.
    """

    d_in: int
    n_features: int
    counts: dict = field(default_factory=lambda: {"kind": "fixed", "k": 4})
    magnitude: dict = field(default_factory=lambda: {"kind": "uniform", "low": 0.5, "high": 1.5})
    correlation: float = 0.0
    hierarchy: dict | None = None
    noise: float = 0.0
    noise_decay: float = 0.0
    offset: float = 0.0
    seed: int = 0
    n_groups: int = 8

    # ----- validation ----------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        counts, magnitude, hierarchy = checked_fields(self)
        # private copies: a caller mutating its dicts afterwards cannot change a frozen spec
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "magnitude", magnitude)
        object.__setattr__(self, "hierarchy", hierarchy)

    def __hash__(self) -> int:  # consistent with ==: numbers hash by value (hash(1) == hash(1.0))
        def freeze(v: Any) -> Any:
            return tuple(sorted((k, freeze(w)) for k, w in v.items())) if isinstance(v, dict) else v

        return hash(tuple(freeze(getattr(self, f.name)) for f in dataclasses.fields(self)))

    # ----- configs ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict of every field (deep copy)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticSpec:
        """The spec of a :meth:`to_dict` record; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SyntheticSpec field(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**d)

    # ----- fixed parts (seeded by ``seed``) --------------------------------------------------------------
    @property
    def max_count(self) -> int:
        """The largest count the count law can produce."""
        c = self.counts
        if c["kind"] == "fixed":
            return c["k"]
        if c["kind"] == "uniform":
            return c["high"]
        if c["kind"] == "heavy":
            return c["max"]
        return max(c["simple"] if c["p_complex"] < 1 else 0, c["complex"] if c["p_complex"] > 0 else 0)

    def parent_of(self) -> Tensor:
        """int64 (n_features,): the parent of each feature, -1 for parents and free features."""
        parent = torch.full((self.n_features,), -1, dtype=torch.int64)
        if self.hierarchy is not None:
            p, c = self.hierarchy["parents"], self.hierarchy["children_per_parent"]
            parent[p : p + p * c] = torch.arange(p).repeat_interleave(c)
        return parent

    def groups(self) -> Tensor:
        """int64 (n_features,): the co-occurrence group of each feature, i mod n_groups."""
        return torch.arange(self.n_features) % self.n_groups

    def dictionary(self) -> Tensor:
        """The (n_features, d_in) float32 matrix of unit feature directions, deterministic in ``seed``.

        Rows are Gaussian directions drawn as :meth:`repro.synthetic.PlantedFeatures.dictionary` draws them (so
        without a hierarchy the two agree for the same seed); with a hierarchy the child rows are then replaced by
        normalise(parent_weight * f_parent + u), u a random unit vector drawn next from the same generator."""
        g = torch.Generator().manual_seed(self.seed)
        f = torch.randn(self.n_features, self.d_in, generator=g)
        f = f / f.norm(dim=1, keepdim=True)
        if self.hierarchy is not None:
            parent = self.parent_of()
            children = torch.nonzero(parent >= 0).squeeze(1)
            u = torch.randn(len(children), self.d_in, generator=g)
            u = u / u.norm(dim=1, keepdim=True)
            c = self.hierarchy.get("parent_weight", 1.0) * f[parent[children]] + u
            f[children] = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return f

    def mean(self) -> Tensor:
        """The constant mean vector (norm ``offset``; a seeded random direction, as in PlantedFeatures)."""
        g = torch.Generator().manual_seed(self.seed + 1)
        m = torch.randn(self.d_in, generator=g)
        return m * (self.offset / m.norm())

    def noise_basis(self) -> tuple[Tensor, Tensor]:
        """(Q (d_in, d_in) orthonormal columns, std (d_in,)): the noise is sum_i std_i z_i q_i with
        z_i ~ N(0, 1) and std_i = noise * exp(-noise_decay * i / d_in) (Q = identity when noise_decay = 0)."""
        if self.noise_decay == 0:
            return torch.eye(self.d_in), torch.full((self.d_in,), float(self.noise))
        g = torch.Generator().manual_seed(self.seed + 2)
        q, r = torch.linalg.qr(torch.randn(self.d_in, self.d_in, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # a unique (Haar-distributed) orthonormal basis
        i = torch.arange(self.d_in, dtype=torch.float64)
        return q.float(), (self.noise * torch.exp(-self.noise_decay * i / self.d_in)).float()

    # ----- sampling --------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x (n, d_in) float32, coeff (n, n_features) float32) for n tokens drawn with ``generator``;
        row t of coeff has exactly count_t nonzero (positive) entries."""
        if not (_is_int(n) and n >= 0):
            raise ValueError(f"n={n!r} must be a non-negative integer")
        parts = _fixed_parts(self)
        xs, cs = [], []
        for lo in range(0, n, _CHUNK_ROWS):
            x, c = self._sample_chunk(min(_CHUNK_ROWS, n - lo), generator, parts)
            xs.append(x)
            cs.append(c)
        if not xs:
            return torch.zeros(0, self.d_in), torch.zeros(0, self.n_features)
        return (xs[0], cs[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(cs))

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
        """An endless, seeded stream of (batch_size, d_in) batches: the same sequence on every call."""
        if not (_is_int(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        g = torch.Generator().manual_seed(seed)
        while True:
            yield self.sample(batch_size, g)[0]

    def block(self, index: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """(x, coeff) of block ``index`` of the cache stream: tokens index*4096 .. index*4096+4095, drawn
        with a generator seeded from (seed, index), so any token can be regenerated on its own."""
        return self.sample(BLOCK_TOKENS, _block_generator(seed, index))

    def block_counts(self, index: int, seed: int = 0) -> Tensor:
        """The true counts of :meth:`block` without generating the tokens (the counts come first)."""
        return self._draw_counts(BLOCK_TOKENS, _block_generator(seed, index))

    @staticmethod
    def true_counts(coeff: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """int64 (n,): the number of active (nonzero) features of each token (numpy in, numpy out)."""
        if isinstance(coeff, np.ndarray):
            return (coeff != 0).sum(axis=1).astype(np.int64)
        return (coeff != 0).sum(dim=1).to(torch.int64)

    def _draw_counts(self, n: int, g: torch.Generator) -> Tensor:
        c = self.counts
        kind = c["kind"]
        if kind == "fixed":
            return torch.full((n,), c["k"], dtype=torch.int64)
        if kind == "uniform":
            return torch.randint(c["low"], c["high"] + 1, (n,), generator=g)
        if kind == "mixture":
            is_complex = torch.rand(n, generator=g) < c["p_complex"]
            return torch.where(is_complex, c["complex"], c["simple"]).to(torch.int64)
        k = torch.arange(1, c["max"] + 1, dtype=torch.float64)
        return torch.multinomial(k.pow(-float(c["alpha"])), n, replacement=True, generator=g) + 1

    def _draw_magnitudes(self, shape: tuple[int, int], g: torch.Generator) -> Tensor:
        m = self.magnitude
        if m["kind"] == "uniform":
            return m["low"] + (m["high"] - m["low"]) * torch.rand(shape, generator=g)
        if m["kind"] == "lognormal":
            return torch.exp(m["mu"] + m["sigma"] * torch.randn(shape, generator=g))
        return -m["scale"] * torch.rand(shape, generator=g).clamp_min_(_TINY).log_()

    def _sample_chunk(self, n: int, g: torch.Generator, parts: _Parts) -> tuple[Tensor, Tensor]:
        counts = self._draw_counts(n, g)
        preferred = torch.randint(0, self.n_groups, (n,), generator=g) if self.correlation > 0 else None
        keys = torch.rand(n, self.n_features, generator=g).clamp_min_(_TINY).log_()  # log U < 0
        if preferred is not None:
            keys /= parts.weights[preferred]
        if parts.children is not None:
            parent_keys = keys[:, parts.parents]
            child_keys = parent_keys + keys[:, parts.children]
            keys[:, parts.children] = torch.minimum(child_keys, torch.nextafter(parent_keys, parts.minus_inf))
        k_max = int(counts.max()) if n else 0
        top = keys.topk(k_max, dim=1, sorted=True).indices  # descending keys: a child comes after its parent
        live = torch.arange(k_max) < counts[:, None]
        values = self._draw_magnitudes((n, k_max), g).float() * live
        coeff = torch.zeros(n, self.n_features).scatter_(1, top, values)
        x = coeff @ parts.dictionary + parts.mean
        if self.noise:
            z = torch.randn(n, self.d_in, generator=g)
            x = x + (z * parts.noise_std if parts.noise_q is None else (z * parts.noise_std) @ parts.noise_q.t())
        return x, coeff


@dataclass(frozen=True)
class _Parts:
    """What sampling reuses: dictionary, mean, noise basis, co-occurrence weights, hierarchy indices."""

    dictionary: Tensor
    mean: Tensor
    noise_q: Tensor | None
    noise_std: Tensor
    weights: Tensor | None  # (n_groups, n_features)
    parents: Tensor | None
    children: Tensor | None
    minus_inf: Tensor


@functools.lru_cache(maxsize=8)
def _fixed_parts(spec: SyntheticSpec) -> _Parts:
    q, std = spec.noise_basis()
    weights = None
    if spec.correlation > 0:
        groups = spec.groups()
        sizes = torch.bincount(groups, minlength=spec.n_groups).float()
        in_group = groups[None, :] == torch.arange(spec.n_groups)[:, None]
        rho = float(spec.correlation)
        weights = (1 - rho) + rho * spec.n_features / sizes[:, None] * in_group
    parent = spec.parent_of()
    children = torch.nonzero(parent >= 0).squeeze(1) if spec.hierarchy is not None else None
    return _Parts(
        spec.dictionary(),
        spec.mean(),
        None if spec.noise_decay == 0 else q,
        std,
        weights,
        None if children is None else parent[children],
        children,
        torch.tensor(-math.inf),
    )


def _block_generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(index), 0x5EED]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))
