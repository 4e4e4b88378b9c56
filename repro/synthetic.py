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

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.synthetic_cache import write_cache
from repro.synthetic_spec import BLOCK_TOKENS, SyntheticSpec

__all__ = ["BLOCK_TOKENS", "PlantedFeatures", "SyntheticSpec", "write_cache"]


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
