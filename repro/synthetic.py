"""Synthetic activations with planted features: x = sum_i c_i f_i + noise (+ mean), with a known
dictionary of unit directions f_i (more features than dimensions: superposition).

- :class:`PlantedFeatures`: the small core used by the tests and the built-in demo (each feature fires
  independently with a fixed probability).
- :class:`SyntheticSpec`: the ground-truth benchmark generator. Every token holds an exact, known
  number of active features drawn from a chosen count law (fixed, uniform, simple/complex mixture,
  heavy-tailed), with chosen magnitude laws, optional feature co-occurrence (groups), optional
  parent/child hierarchy, isotropic or anisotropic noise and a constant offset.
- :func:`write_cache`: writes a :class:`SyntheticSpec` stream as an activation cache (``repro.cache``)
  whose labels are the true per-token feature counts.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class PlantedFeatures:
    """d_in: dimension. n_features: dictionary size. mean_active: expected number of active features per
    token (each feature fires independently with probability mean_active / n_features).
    magnitude: active coefficients ~ U(magnitude[0], magnitude[1]). noise: std of isotropic Gaussian
    noise. offset: norm of a constant mean vector added to every token. seed: seeds the dictionary."""

    d_in: int
    n_features: int
    mean_active: float = 4.0
    magnitude: tuple[float, float] = (0.5, 1.5)
    noise: float = 0.0
    offset: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.mean_active <= self.n_features:
            raise ValueError(f"mean_active={self.mean_active} must be in (0, n_features={self.n_features}]")

    def dictionary(self) -> Tensor:
        """The (n_features, d_in) matrix of unit feature directions."""
        g = torch.Generator().manual_seed(self.seed)
        f = torch.randn(self.n_features, self.d_in, generator=g)
        return f / f.norm(dim=1, keepdim=True)

    def mean(self) -> Tensor:
        """The constant mean vector (norm ``offset``)."""
        g = torch.Generator().manual_seed(self.seed + 1)
        m = torch.randn(self.d_in, generator=g)
        return m * (self.offset / m.norm())

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x (n, d_in), coefficients (n, n_features)) for n tokens."""
        return self._draw(n, generator, self.dictionary(), self.mean())

    def _draw(self, n: int, generator: torch.Generator, dictionary: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
        p = self.mean_active / self.n_features
        active = torch.rand(n, self.n_features, generator=generator) < p
        lo, hi = self.magnitude
        coeff = (lo + (hi - lo) * torch.rand(n, self.n_features, generator=generator)) * active
        x = coeff @ dictionary + mean
        if self.noise:
            x = x + self.noise * torch.randn(n, self.d_in, generator=generator)
        return x, coeff

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[Tensor]:
        """An endless, seeded stream of (batch_size, d_in) batches: the same sequence on every call."""
        g = torch.Generator().manual_seed(seed)
        dictionary, mean = self.dictionary(), self.mean()
        while True:
            yield self._draw(batch_size, g, dictionary, mean)[0]


# ----- the ground-truth benchmark generator ---------------------------------------------------------
GENERATOR_VERSION = 1  # bump whenever the bytes a given spec produces change
BLOCK_TOKENS = 4096  # rows per block of the cache stream (see SyntheticSpec.block)
HOOK = "planted"
_CHUNK_ROWS = 16384  # sample() works through at most this many rows at a time (bounds temporaries)
_TINY = 2.0**-30  # floor of uniform draws before a log (torch.rand can return exactly 0)

_COUNT_KEYS = {
    "fixed": {"k"},
    "uniform": {"low", "high"},
    "mixture": {"simple", "complex", "p_complex"},
    "heavy": {"alpha", "max"},
}
_MAGNITUDE_KEYS = {"uniform": {"low", "high"}, "lognormal": {"mu", "sigma"}, "exponential": {"scale"}}


def _fail(name: str, value: Any, expected: str) -> None:
    raise ValueError(f"invalid SyntheticSpec {name}={value!r}: expected {expected}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _law(name: str, value: Any, table: dict[str, set[str]]) -> dict:
    """A copy of a ``{"kind": ..., ...}`` law with exactly the keys of its kind (else ValueError)."""
    if not isinstance(value, dict) or value.get("kind") not in table:
        _fail(name, value, f"a dict with 'kind' one of {', '.join(table)}")
    keys = table[value["kind"]]
    if set(value) != keys | {"kind"}:
        _fail(name, value, f"kind {value['kind']!r} with exactly the keys {', '.join(sorted(keys))}")
    return dict(value)


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
        if not (_is_int(self.d_in) and self.d_in > 0):
            _fail("d_in", self.d_in, "a positive integer")
        if not (_is_int(self.n_features) and self.n_features > 0):
            _fail("n_features", self.n_features, "a positive integer")
        n = self.n_features
        counts = _law("counts", self.counts, _COUNT_KEYS)
        kind = counts["kind"]
        ints = {"fixed": ("k",), "uniform": ("low", "high"), "mixture": ("simple", "complex"), "heavy": ("max",)}
        for key in ints[kind]:
            if not (_is_int(counts[key]) and 1 <= counts[key] <= n):
                _fail(f"counts.{key}", counts[key], f"an integer in 1..n_features={n}")
        if kind == "uniform" and counts["low"] > counts["high"]:
            _fail("counts.high", counts["high"], f"an integer >= counts.low={counts['low']}")
        if kind == "mixture" and not (_is_num(counts["p_complex"]) and 0 <= counts["p_complex"] <= 1):
            _fail("counts.p_complex", counts["p_complex"], "a probability in [0, 1]")
        if kind == "heavy" and not (_is_num(counts["alpha"]) and counts["alpha"] > 0):
            _fail("counts.alpha", counts["alpha"], "a finite number > 0")
        magnitude = _law("magnitude", self.magnitude, _MAGNITUDE_KEYS)
        mk = magnitude["kind"]
        if mk == "uniform":
            if not (_is_num(magnitude["low"]) and magnitude["low"] > 0):
                _fail("magnitude.low", magnitude["low"], "a finite number > 0 (magnitudes are strictly positive)")
            if not (_is_num(magnitude["high"]) and magnitude["high"] >= magnitude["low"]):
                _fail("magnitude.high", magnitude["high"], f"a finite number >= magnitude.low={magnitude['low']}")
        elif mk == "lognormal":
            if not _is_num(magnitude["mu"]):
                _fail("magnitude.mu", magnitude["mu"], "a finite number")
            if not (_is_num(magnitude["sigma"]) and magnitude["sigma"] >= 0):
                _fail("magnitude.sigma", magnitude["sigma"], "a finite number >= 0")
        elif not (_is_num(magnitude["scale"]) and magnitude["scale"] > 0):
            _fail("magnitude.scale", magnitude["scale"], "a finite number > 0")
        if not (_is_num(self.correlation) and 0 <= self.correlation < 1):
            _fail("correlation", self.correlation, "a number in [0, 1)")
        hierarchy = self.hierarchy
        if hierarchy is not None:
            if (
                not isinstance(hierarchy, dict)
                or not {"parents", "children_per_parent"} <= set(hierarchy)
                or not set(hierarchy) <= {"parents", "children_per_parent", "parent_weight"}
            ):
                _fail("hierarchy", hierarchy, "None or {'parents': P, 'children_per_parent': C[, 'parent_weight': w]}")
            hierarchy = dict(hierarchy)
            for key in ("parents", "children_per_parent"):
                if not (_is_int(hierarchy[key]) and hierarchy[key] >= 1):
                    _fail(f"hierarchy.{key}", hierarchy[key], "a positive integer")
            if hierarchy["parents"] * (1 + hierarchy["children_per_parent"]) > n:
                _fail("hierarchy", self.hierarchy, f"parents * (1 + children_per_parent) <= n_features={n}")
            weight = hierarchy.get("parent_weight", 1.0)
            if not (_is_num(weight) and weight >= 0):
                _fail("hierarchy.parent_weight", weight, "a finite number >= 0")
        for name in ("noise", "noise_decay", "offset"):
            value = getattr(self, name)
            if not (_is_num(value) and value >= 0):
                _fail(name, value, "a finite number >= 0")
        if not _is_int(self.seed):
            _fail("seed", self.seed, "an integer")
        if not (_is_int(self.n_groups) and 1 <= self.n_groups <= n):
            _fail("n_groups", self.n_groups, f"an integer in 1..n_features={n}")
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

        Rows are Gaussian directions drawn as :meth:`PlantedFeatures.dictionary` draws them (so without a
        hierarchy the two agree for the same seed); with a hierarchy the child rows are then replaced by
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


# ----- the synthetic stream as an activation cache ---------------------------------------------------
class _SyntheticTokens:
    """Dataset-like adapter for :func:`repro.cache.extract`: examples are token indices, labels their
    true feature counts, ids = arange."""

    name = "synthetic"

    def __init__(self, spec: SyntheticSpec, n_tokens: int, seed: int):
        self.generator_spec, self.n_tokens, self.seed = spec, n_tokens, seed
        self.examples = np.arange(n_tokens, dtype=np.int64)
        self.ids = np.arange(n_tokens, dtype=np.int64)
        n_blocks = -(-n_tokens // BLOCK_TOKENS)
        counts = [spec.block_counts(b, seed).numpy() for b in range(n_blocks)]
        self.labels = np.concatenate(counts)[:n_tokens] if counts else np.zeros(0, np.int64)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "generator": self.generator_spec.to_dict(),
            "n_tokens": self.n_tokens,
            "seed": self.seed,
            "block_tokens": BLOCK_TOKENS,
            "generator_version": GENERATOR_VERSION,
        }

    def __len__(self) -> int:
        return self.n_tokens


class _SyntheticBackbone:
    """Backbone-like adapter: ``activations`` of token indices are the generated tokens (one position
    each), regenerated block by block so that any batching gives the same rows."""

    name = "synthetic"
    modality = None

    def __init__(self, spec: SyntheticSpec, seed: int):
        self.generator_spec, self.seed = spec, seed
        self._cached: tuple[int, Tensor] | None = None

    def spec(self) -> dict:
        dictionary = self.generator_spec.dictionary().numpy().astype("<f4")
        return {
            "name": self.name,
            "generator": self.generator_spec.to_dict(),
            "generator_version": GENERATOR_VERSION,
            "weights_digest": hashlib.sha256(dictionary.tobytes()).hexdigest(),
            "preprocessing": {"block_tokens": BLOCK_TOKENS},
        }

    def d_model(self, hook: str) -> int:
        if hook != HOOK:
            raise ValueError(f"the synthetic backbone has one hook, {HOOK!r}; got {hook!r}")
        return self.generator_spec.d_in

    def preprocess(self, examples: Any) -> dict[str, Tensor]:
        return {"index": torch.as_tensor(np.asarray(examples), dtype=torch.int64)}

    def _block(self, b: int) -> Tensor:
        if self._cached is None or self._cached[0] != b:
            self._cached = (b, self.generator_spec.block(b, self.seed)[0])
        return self._cached[1]

    def activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        self.d_model(hook)
        index = inputs["index"]
        out = torch.empty(len(index), self.generator_spec.d_in)
        blocks = index // BLOCK_TOKENS
        for b in torch.unique(blocks).tolist():
            rows = blocks == b
            out[rows] = self._block(b)[index[rows] - b * BLOCK_TOKENS]
        return out[:, None, :], torch.ones(len(index), 1, dtype=torch.bool)


def write_cache(
    spec: SyntheticSpec,
    n_tokens: int,
    root: str | os.PathLike,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    dtype: str = "float32",
    progress: bool = False,
) -> Path:
    """Write tokens 0..n_tokens-1 of the seeded block stream of ``spec`` (token t = row t mod 4096 of
    ``spec.block(t // 4096, seed)``) as an activation cache under ``root`` (hook ``"planted"``, one
    position per example, label = the token's true feature count, example id = t); returns its folder.
    The cache is content addressed like any other (same spec, seed and options: same folder)."""
    from repro.cache import extract

    if not (_is_int(n_tokens) and n_tokens >= 1):
        raise ValueError(f"n_tokens={n_tokens!r} must be a positive integer")
    return extract(
        _SyntheticBackbone(spec, seed),
        _SyntheticTokens(spec, n_tokens, seed),
        HOOK,
        root,
        dtype=dtype,
        batch_size=batch_size,
        progress=progress,
    )
