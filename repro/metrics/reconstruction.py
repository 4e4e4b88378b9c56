"""The streaming accumulator :class:`ReconstructionMetrics`: float64 sums, counts, histograms and
pairwise-merged moments, so that every metric is independent of batching. The keys of
:meth:`ReconstructionMetrics.compute`, their formulas and the notation are defined in :mod:`repro.metrics`.
"""

from __future__ import annotations

import math

import torch

#: V ≤ VARIANCE_DEGENERATE_RTOL · (Q_x/N) (or V == 0) marks the variance as degenerate.
VARIANCE_DEGENERATE_RTOL = 1e-12

#: Quantile levels reported in ``l0_quantiles`` (besides "min" and "max").
L0_QUANTILES: dict[str, float] = {
    "p5": 0.05,
    "p25": 0.25,
    "p50": 0.50,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}

# Indices into the float64 vector of scalar sums.
_QX, _QR, _QH, _DOT, _NMSE_TOK, _L2R, _COS, _L1 = range(8)
_N_SUMS = 8
# Indices into the int64 vector of scalar counts.
_NZERO, _L0POS = range(2)
_N_COUNTS = 2


def _quantile_from_hist(hist: list[int], n: int, q: float) -> float:
    """Return the q-quantile of the multiset described by ``hist`` (``hist[k]`` copies of k).

    Linear interpolation between order statistics: p = q·(n-1),
    value = v_⌊p⌋ + (p - ⌊p⌋)·(v_⌈p⌉ - v_⌊p⌋), where v_j is the j-th smallest value (0-based),
    i.e. the smallest k with Σ_{k' ≤ k} hist[k'] > j.
    """
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo

    def order_stat(j: int) -> int:
        cum = 0
        for k, c in enumerate(hist):
            cum += c
            if cum > j:
                return k
        raise AssertionError("histogram total is smaller than n")  # pragma: no cover

    v_lo = order_stat(lo)
    v_hi = order_stat(hi) if frac > 0 else v_lo
    return float(v_lo + frac * (v_hi - v_lo))


class ReconstructionMetrics:
    """Streaming float64 accumulator of reconstruction, sparsity and dead/dense-latent metrics.

    Call :meth:`update` once per batch, :meth:`merge` to combine accumulators (e.g. across
    workers), and :meth:`compute` for the result dict (keys and formulas in the docstring of
    :mod:`repro.metrics`). State tensors live on the device of the first batch; :meth:`compute`
    returns plain Python values.
    """

    def __init__(self, d_sae: int, l0_hist_max: int | None = None) -> None:
        """Create an empty accumulator for codes with ``d_sae`` latents (F).

        ``l0_hist_max``: if given (≥ 0), the reported ``l0_hist`` keeps exact counts for
        L0 = 0..l0_hist_max and lumps every L0 > l0_hist_max into one trailing overflow bucket.
        The internal histogram (used for ``l0_quantiles``) is always exact, of length F + 1.
        """
        if isinstance(d_sae, bool) or not isinstance(d_sae, int) or d_sae < 1:
            raise ValueError(f"d_sae must be a positive int, got {d_sae!r}")
        if l0_hist_max is not None and (
            isinstance(l0_hist_max, bool) or not isinstance(l0_hist_max, int) or l0_hist_max < 0
        ):
            raise ValueError(f"l0_hist_max must be None or an int >= 0, got {l0_hist_max!r}")
        self.d_sae = d_sae
        self.l0_hist_max = l0_hist_max
        self.d_in: int | None = None
        self._n = 0
        self._device: torch.device | None = None
        self._mean: torch.Tensor | None = None  # (d_in,) float64, per-dimension mean of x
        self._m2: torch.Tensor | None = None  # (d_in,) float64, Σ_t (x_td - mean_d)²
        self._sums: torch.Tensor | None = None  # (_N_SUMS,) float64
        self._counts: torch.Tensor | None = None  # (_N_COUNTS,) int64
        self._fire: torch.Tensor | None = None  # (d_sae,) int64, c_i
        self._hist: torch.Tensor | None = None  # (d_sae + 1,) int64, h[k]

    # ------------------------------------------------------------------ state helpers
    @property
    def n_tokens(self) -> int:
        """N, the number of tokens accumulated so far."""
        return self._n

    def _init_state(self, d_in: int, device: torch.device) -> None:
        self.d_in = d_in
        self._device = device
        f64, i64 = torch.float64, torch.int64
        self._mean = torch.zeros(d_in, dtype=f64, device=device)
        self._m2 = torch.zeros(d_in, dtype=f64, device=device)
        self._sums = torch.zeros(_N_SUMS, dtype=f64, device=device)
        self._counts = torch.zeros(_N_COUNTS, dtype=i64, device=device)
        self._fire = torch.zeros(self.d_sae, dtype=i64, device=device)
        self._hist = torch.zeros(self.d_sae + 1, dtype=i64, device=device)

    def _merge_moments(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        """Chan et al. pairwise merge of (n, mean, M2) with a batch's (n_b, mean_b, M2_b).

        δ = mean_b - mean_a; n = n_a + n_b; mean = mean_a + δ·n_b/n;
        M2 = M2_a + M2_b + δ²·n_a·n_b/n.
        """
        n_a = self._n
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta * delta * (n_a * n_b / n)
        self._n = n

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, acts: torch.Tensor) -> None:
        """Accumulate one batch.

        ``x`` and ``x_hat`` have shape (..., d_in), ``acts`` has shape (..., d_sae) with the same
        leading dimensions as ``x``; all leading dimensions are flattened into tokens. Any dtype
        is accepted (cast to float64 before every reduction); gradients are never tracked.
        Adds to the sums N += n_b, Q_x += Σ‖x_t‖², Q_r += Σ‖x_t - x̂_t‖², Q_x̂ += Σ‖x̂_t‖²,
        P += Σ⟨x_t, x̂_t⟩, the per-token-ratio sums, c_i += Σ_t 1[f_ti ≠ 0], h[L0_t] += 1, and
        merges the batch's per-dimension (mean, M2) with the pairwise update.
        Raises ValueError (naming the argument) on any shape mismatch.
        """
        x = torch.as_tensor(x)
        x_hat = torch.as_tensor(x_hat)
        acts = torch.as_tensor(acts)
        if x.ndim < 1 or x.shape[-1] < 1:
            raise ValueError(f"x must have shape (..., d_in) with d_in >= 1, got {tuple(x.shape)}")
        if x_hat.shape != x.shape:
            raise ValueError(f"x_hat has shape {tuple(x_hat.shape)}, expected the shape of x {tuple(x.shape)}")
        if acts.ndim < 1 or acts.shape[-1] != self.d_sae:
            raise ValueError(f"acts has shape {tuple(acts.shape)}, expected (..., d_sae={self.d_sae})")
        if acts.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                f"acts has leading shape {tuple(acts.shape[:-1])}, expected the leading shape "
                f"of x {tuple(x.shape[:-1])}"
            )
        d_in = int(x.shape[-1])
        if self.d_in is not None and d_in != self.d_in:
            raise ValueError(f"x has last dimension {d_in}, expected d_in={self.d_in}")
        if self._device is None:
            self._init_state(d_in, x.device)
        dev = self._device
        f64 = torch.float64

        xs = x.detach().reshape(-1, d_in).to(f64)
        n_b = int(xs.shape[0])
        if n_b == 0:
            return
        hs = x_hat.detach().reshape(-1, d_in).to(device=xs.device, dtype=f64)
        a = acts.detach().reshape(-1, self.d_sae)

        # Per-token quantities (float64).
        sq_x = (xs * xs).sum(dim=1)
        sq_h = (hs * hs).sum(dim=1)
        dot = (xs * hs).sum(dim=1)
        r = xs - hs
        sq_r = (r * r).sum(dim=1)
        norm_x = sq_x.sqrt()
        norm_h = sq_h.sqrt()
        nz = sq_x > 0
        one = torch.ones((), dtype=f64, device=xs.device)
        zero = torch.zeros((), dtype=f64, device=xs.device)
        nmse_tok = torch.where(nz, sq_r / torch.where(nz, sq_x, one), zero)
        l2r = torch.where(nz, norm_h / torch.where(nz, norm_x, one), zero)
        denom = norm_x * norm_h
        ok = denom > 0
        cos = torch.where(ok, dot / torch.where(ok, denom, one), zero).clamp(-1.0, 1.0)

        # Sparsity quantities (exact int64 counts; L1 summed per token in float64).
        l0_tok = torch.count_nonzero(a, dim=1)
        hist_b = torch.bincount(l0_tok, minlength=self.d_sae + 1)
        fire_b = torch.count_nonzero(a, dim=0)
        l0pos_b = torch.count_nonzero(a > 0)
        l1_b = torch.linalg.vector_norm(a, ord=1, dim=1, dtype=f64).sum()

        sums_b = torch.stack(
            [
                sq_x.sum(),
                sq_r.sum(),
                sq_h.sum(),
                dot.sum(),
                nmse_tok.sum(),
                l2r.sum(),
                cos.sum(),
                l1_b.to(xs.device),
            ]
        )
        counts_b = torch.stack([(~nz).sum(dtype=torch.int64), l0pos_b.to(xs.device)])
        mean_b = xs.mean(dim=0)
        dev_b = xs - mean_b
        m2_b = (dev_b * dev_b).sum(dim=0)

        self._sums += sums_b.to(dev)
        self._counts += counts_b.to(dev)
        self._fire += fire_b.to(dev)
        self._hist += hist_b.to(dev)
        self._merge_moments(n_b, mean_b.to(dev), m2_b.to(dev))

    @torch.no_grad()
    def merge(self, other: ReconstructionMetrics) -> ReconstructionMetrics:
        """Add the state of ``other`` into ``self`` (in place) and return ``self``.

        Sums, counts and histograms are added; the per-dimension (N, mean, M2) are combined with
        the pairwise update (see :meth:`_merge_moments`). The result equals one accumulator fed
        with both streams. ``other`` is not modified. Raises ValueError if ``d_sae`` or ``d_in``
        differ.
        """
        if not isinstance(other, ReconstructionMetrics):
            raise TypeError(f"can only merge a ReconstructionMetrics, got {type(other).__name__}")
        if other.d_sae != self.d_sae:
            raise ValueError(f"other has d_sae={other.d_sae}, expected d_sae={self.d_sae}")
        if other._n == 0:
            if self.d_in is None and other.d_in is not None:
                self._init_state(other.d_in, other._device)
            elif self.d_in is not None and other.d_in is not None and other.d_in != self.d_in:
                raise ValueError(f"other has d_in={other.d_in}, expected d_in={self.d_in}")
            return self
        if self.d_in is not None and other.d_in != self.d_in:
            raise ValueError(f"other has d_in={other.d_in}, expected d_in={self.d_in}")
        if self._device is None:
            self._init_state(other.d_in, other._device)
        dev = self._device
        self._sums += other._sums.to(dev)
        self._counts += other._counts.to(dev)
        self._fire += other._fire.to(dev)
        self._hist += other._hist.to(dev)
        if self._n == 0:
            self._mean = other._mean.to(dev).clone()
            self._m2 = other._m2.to(dev).clone()
            self._n = other._n
        else:
            self._merge_moments(other._n, other._mean.to(dev), other._m2.to(dev))
        return self

    @torch.no_grad()
    def latent_firing_rate(self) -> torch.Tensor:
        """Per-latent firing frequency over tokens: c_i / N = (1/N) Σ_t 1[f_ti ≠ 0].

        Returns a float64 CPU tensor of shape (d_sae,). Raises ValueError with no tokens.
        """
        if self._n == 0:
            raise ValueError("no tokens have been accumulated; call update() first")
        return self._fire.to("cpu", torch.float64) / self._n

    @torch.no_grad()
    def compute(self) -> dict:
        """Return every metric as plain Python values; see :mod:`repro.metrics` for each formula.

        Main formulas: mse = Q_r/N; nmse = Q_r/Q_x; V = Σ_d M2_d/N; ev = 1 - (Q_r/N)/V (NaN and
        ``variance_degenerate`` = True when V = 0 or V ≤ 1e-12·Q_x/N); l0 = Σ_k k·h[k]/N.
        Does not modify the accumulator. Raises ValueError("no tokens ...") if N = 0.
        """
        n = self._n
        if n == 0:
            raise ValueError("no tokens have been accumulated; call update() first")
        nan = float("nan")
        d_in = int(self.d_in)
        f = self.d_sae
        s = self._sums.cpu().tolist()
        cnt = self._counts.cpu().tolist()
        m2_total = float(self._m2.sum().cpu())
        hist = self._hist.cpu().tolist()
        fire = self._fire.cpu()

        q_x, q_r, q_h, p_dot = s[_QX], s[_QR], s[_QH], s[_DOT]
        n_zero = int(cnt[_NZERO])
        n_nz = n - n_zero

        mse = q_r / n
        nmse = q_r / q_x if q_x > 0 else nan
        var = m2_total / n
        degenerate = bool(var == 0.0 or var <= VARIANCE_DEGENERATE_RTOL * (q_x / n))
        if degenerate or not math.isfinite(var):
            ev = nan
        else:
            ev = 1.0 - mse / var
        fvu = 1.0 - ev  # NaN propagates
        rel_bias = q_h / p_dot if p_dot != 0 else nan
        cosine = s[_COS] / n

        # L0 statistics from the exact histogram.
        l0_sum = sum(k * c for k, c in enumerate(hist))
        max_l0 = max(k for k, c in enumerate(hist) if c > 0)
        min_l0 = min(k for k, c in enumerate(hist) if c > 0)
        quantiles = {key: _quantile_from_hist(hist, n, q) for key, q in L0_QUANTILES.items()}
        quantiles["max"] = float(max_l0)
        quantiles["min"] = float(min_l0)
        full_hist = hist[: max_l0 + 1]
        cap = self.l0_hist_max
        if cap is not None and max_l0 > cap:
            overflow = int(sum(full_hist[cap + 1 :]))
            l0_hist = [*full_hist[: cap + 1], overflow]
        else:
            overflow = 0
            l0_hist = full_hist

        dead = float((fire == 0).sum()) / f
        freq = fire.to(torch.float64) / n
        dense10 = float((freq > 0.10).sum()) / f
        dense1 = float((freq > 0.01).sum()) / f

        return {
            "n_tokens": n,
            "d_in": d_in,
            "d_sae": f,
            "mse": mse,
            "mse_per_dim": mse / d_in,
            "nmse": nmse,
            "nmse_tok": s[_NMSE_TOK] / n_nz if n_nz > 0 else nan,
            "n_zero_norm_tokens": n_zero,
            "total_variance": var,
            "explained_variance": ev,
            "ev": ev,
            "fvu": fvu,
            "variance_degenerate": degenerate,
            "ev_uncentred": 1.0 - nmse,
            "cosine": cosine,
            "cos_sim": cosine,
            "l2_ratio": s[_L2R] / n_nz if n_nz > 0 else nan,
            "relative_reconstruction_bias": rel_bias,
            "rel_recon_bias": rel_bias,
            "l0": l0_sum / n,
            "l0_pos": cnt[_L0POS] / n,
            "l0_quantiles": quantiles,
            "l0_hist": [int(c) for c in l0_hist],
            "l0_hist_overflow": overflow,
            "l1": s[_L1] / n,
            "dead_fraction": dead,
            "frac_dead": dead,
            "dense_fraction": dense10,
            "frac_dense_10pct": dense10,
            "dense_fraction_1pct": dense1,
            "frac_dense_1pct": dense1,
        }
