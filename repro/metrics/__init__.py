"""Streaming, float64, batch-split-invariant reconstruction and sparsity metrics for SAEs.

The accumulator is :class:`ReconstructionMetrics` (:mod:`repro.metrics.reconstruction`); the percentile
bootstrap intervals over examples are in :mod:`repro.metrics.bootstrap`. This docstring defines the metrics.

Definitions follow ``shared/reference/metrics.md`` (sections 0-5 and 7). Notation: the evaluation
set has N tokens t = 1..N (every leading dimension of the inputs is flattened into tokens),
x_t ∈ R^d is the input activation, x̂_t its reconstruction, r_t = x_t - x̂_t the residual and
f_t ∈ R^F the latent code (F = ``d_sae``). ‖·‖ is the Euclidean norm over the last dimension.
Every accumulation happens in float64 (inputs of any floating dtype are cast first), under
``torch.no_grad()``, and only sums / counts / histograms / pairwise-merged moments are stored, so
every key below is independent of how the data is split into batches and of the batch order (up
to float64 rounding, ~1e-12 relative or better; integer quantities are exact).

Accumulated state: N; the per-dimension mean m ∈ R^d and centred sum of squares M2 ∈ R^d, merged
with the pairwise (Chan et al.) update; Q_x = Σ_t ‖x_t‖², Q_r = Σ_t ‖r_t‖², Q_x̂ = Σ_t ‖x̂_t‖²,
P = Σ_t ⟨x_t, x̂_t⟩; per-token-ratio sums; the per-latent firing counts c_i = Σ_t 1[f_ti ≠ 0];
the integer histogram h[k] = #{t : L0_t = k} of the per-token L0_t = #{i : f_ti ≠ 0}.

Keys of :meth:`ReconstructionMetrics.compute` (plain Python ``int``/``float``/``bool``/``list``/
``dict``, JSON-serialisable; NaN where a quantity is undefined):

- ``n_tokens``: N (int).
- ``d_in``, ``d_sae``: d and F (int).
- ``mse``: Q_r / N  (sum over dimensions, mean over tokens).
- ``mse_per_dim``: Q_r / (N·d).
- ``nmse``: Q_r / Q_x  (ratio of sums, uncentred; NaN if Q_x = 0).
- ``nmse_tok``: mean over tokens with ‖x_t‖ > 0 of ‖r_t‖²/‖x_t‖² (tokens with ‖x_t‖² = 0 are
  excluded and counted in ``n_zero_norm_tokens``; NaN if no token qualifies).
- ``n_zero_norm_tokens``: #{t : ‖x_t‖² = 0} (int).
- ``total_variance``: V = Σ_d M2_d / N = Q_x/N - ‖S/N‖² with S = Σ_t x_t (population variance
  summed over dimensions; computed from the pairwise-merged M2, not from the raw difference).
- ``explained_variance`` and its alias ``ev``: 1 - (Q_r/N) / V  (centred; may be negative, never
  clamped).
- ``fvu``: 1 - ev = (Q_r/N) / V.
- ``variance_degenerate``: True iff V = 0 or V ≤ 1e-12 · (Q_x/N); then ``explained_variance``,
  ``ev`` and ``fvu`` are NaN (no exception, no warning).
- ``ev_uncentred``: 1 - nmse = 1 - Q_r/Q_x.
- ``cosine`` and its alias ``cos_sim``: (1/N) Σ_t cos(x_t, x̂_t) with
  cos = ⟨x_t, x̂_t⟩/(‖x_t‖‖x̂_t‖), defined as 0 when ‖x_t‖·‖x̂_t‖ = 0 (such tokens stay in N).
- ``l2_ratio``: mean over tokens with ‖x_t‖ > 0 of ‖x̂_t‖/‖x_t‖ (zero-norm tokens excluded; NaN
  if none).
- ``relative_reconstruction_bias`` and its alias ``rel_recon_bias``: Q_x̂ / P
  = Σ_t ‖x̂_t‖² / Σ_t ⟨x_t, x̂_t⟩ (NaN if P = 0). 1 = unbiased, < 1 = shrinkage.
- ``l0``: (1/N) Σ_t #{i : f_ti ≠ 0}  (a count in [0, F], not a fraction).
- ``l0_pos``: (1/N) Σ_t #{i : f_ti > 0}.
- ``l0_quantiles``: dict with keys "p5", "p25", "p50", "p75", "p95", "p99", "min", "max" of the
  per-token L0, computed exactly from the histogram h. The q-quantile uses linear interpolation
  between order statistics (the default of ``torch.quantile``/``numpy.quantile``): with the
  sorted per-token L0 values v_0 ≤ … ≤ v_{N-1}, p = q·(N-1),
  value = v_⌊p⌋ + (p - ⌊p⌋)·(v_⌈p⌉ - v_⌊p⌋).
- ``l0_hist``: list of counts, ``l0_hist[k]`` = #{t : L0_t = k}, length max_t L0_t + 1. If
  ``l0_hist_max`` was given and some token has L0_t > ``l0_hist_max``, the list has length
  ``l0_hist_max`` + 2: entries 0..``l0_hist_max`` are exact counts and the last entry is the
  overflow bucket #{t : L0_t > l0_hist_max}. (Quantiles always use the full, uncapped histogram.)
- ``l0_hist_overflow``: #{t : L0_t > l0_hist_max} (int; 0 when uncapped).
- ``l1``: (1/N) Σ_t Σ_i |f_ti|.
- ``dead_fraction`` and its alias ``frac_dead``: (1/F) #{i : c_i = 0} (dead relative to the N
  tokens seen; report ``n_tokens`` with it).
- ``dense_fraction`` and its alias ``frac_dense_10pct``: (1/F) #{i : c_i/N > 0.10}.
- ``dense_fraction_1pct`` and its alias ``frac_dense_1pct``: (1/F) #{i : c_i/N > 0.01}.

The per-latent firing frequency c_i/N (over tokens, not images) is returned by
:meth:`ReconstructionMetrics.latent_firing_rate` rather than in the dict.
"""

from repro.metrics.bootstrap import bootstrap_balanced_accuracy_ci, bootstrap_ratio_ci
from repro.metrics.reconstruction import L0_QUANTILES, VARIANCE_DEGENERATE_RTOL, ReconstructionMetrics

__all__ = [
    "L0_QUANTILES",
    "VARIANCE_DEGENERATE_RTOL",
    "ReconstructionMetrics",
    "bootstrap_balanced_accuracy_ci",
    "bootstrap_ratio_ci",
]
