"""Which hook-point tokens an SAE sees: the backbone's token mask (no BOS, CLS/SEP or padding), minus, with
a :class:`TokenFilter`, attention-sink outliers.

A causal LM's first real token can be an attention sink whose residual norm is many times the others'
(SmolLM2-135M ``resid.20`` on fortunes: median norm 237, p99 287, one position-1 token at 5,772, 24 x the
median; on the December 2026 test split the top token held 15.8 % of sum ||x||^2). Such a token dominates
uncentred NMSE and the training loss while carrying no concept an SAE could learn. The rule
(``max_norm_ratio``): drop a token whose norm exceeds ``max_norm_ratio`` x the median norm of the counted
tokens of the same forward batch. It is a setting of the extraction (part of the cache's spec), applied by
:meth:`repro.backbones.base.Backbone.activations`, so training caches, evaluation caches and splicing (the
dropped tokens keep their clean activations; CE still counts their predictions) see the same tokens.

Known choices: the official sparsemax code (CLIP) trains on all 197 tokens, no filter; the paper's GPT-2
setup is not described (``paper.md`` section 3.2): unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class TokenFilter:
    """max_norm_ratio: drop tokens whose ||x|| > this x the median ||x|| of the batch's counted tokens
    (None: keep every counted token)."""

    max_norm_ratio: float | None = None

    def __post_init__(self):
        r = self.max_norm_ratio
        if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 1):
            raise ValueError(f"invalid token filter max_norm_ratio={r!r}: expected None or a number > 1")

    @property
    def active(self) -> bool:
        return self.max_norm_ratio is not None

    def spec(self) -> dict | None:
        """The filter's part of a cache spec (None when inactive, so unfiltered caches keep their hash)."""
        if not self.active:
            return None
        return {"rule": "norm_ratio_to_batch_median", "max_norm_ratio": float(self.max_norm_ratio)}

    @classmethod
    def from_spec(cls, spec: dict | None) -> TokenFilter:
        if not spec:
            return cls()
        if spec.get("rule") != "norm_ratio_to_batch_median":
            raise ValueError(f"unknown token filter rule {spec.get('rule')!r}")
        return cls(max_norm_ratio=spec["max_norm_ratio"])

    def apply(self, acts: Tensor, mask: Tensor) -> Tensor:
        """``mask`` (B, T) without the outliers of ``acts`` (B, T, d) (see the module docstring)."""
        if not self.active or not bool(mask.any()):
            return mask
        norms = acts.norm(dim=-1)
        median = norms[mask].median()
        return mask & (norms <= self.max_norm_ratio * median)


def exclusion_stats(acts: Tensor, base: Tensor, kept: Tensor) -> dict[str, float]:
    """Counts for the cache metadata: tokens counted by the backbone, tokens dropped by the filter, and the
    dropped tokens' sum of ||x||^2."""
    sq = acts.double().pow(2).sum(dim=-1)
    dropped = base & ~kept
    return {
        "counted_tokens": int(base.sum()),
        "dropped_tokens": int(dropped.sum()),
        "counted_energy": float(sq[base].sum()),
        "dropped_energy": float(sq[dropped].sum()),
    }
