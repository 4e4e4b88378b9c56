"""One pass of an SAE over an activation cache, collecting what the downstream evaluations read.

The cache stores every token of an example contiguously (:mod:`repro.cache`), with the example's id and
label per token. :func:`encode_cache` streams it in chunks of whole examples, encodes every token with
the SAE (``acts = sae(x)[1]``, the code the SAE decodes; for the official sparsemax SAE the raw scores
on the support, which can be ≤ 0) and accumulates, with E examples, C classes and F latents:

- ``reconstruction``: :class:`repro.metrics.ReconstructionMetrics` of (x, x̂, acts) on these tokens;
- ``pooled`` (E, F): per example, the mean of the latent codes over its tokens (encode each token, then
  pool: the SAEBench order), and ``pooled_raw`` (E, d): the mean of the raw activations;
- ``class_counts`` (C, F): Σ over the class's tokens of 1[acts_ti > threshold] (the official top-n
  selection statistic, threshold 0.2 by default, on raw scores); ``class_nonzero`` (C, F): Σ over the
  class's tokens of 1[acts_ti ≠ 0] and ``class_sums`` (C, F): Σ over them of acts_ti (the scale-free
  selection statistics of :mod:`repro.evals.topn`);
- ``top_values``/``top_ids``/``top_positions``/``top_labels`` (F, K): per latent its K top examples by
  the example's maximum activation over tokens (ties: the lower example id), with the position of that
  maximum (ties: the earliest position); slots beyond the number of examples on which the latent is
  ever > 0 hold -inf (and -1 in the companion arrays);
- ``fire_count``/``act_sum`` (F,): Σ_t 1[acts_ti ≠ 0] and Σ_t acts_ti; ``example_fire_count`` (F,):
  number of examples with at least one token where the latent is ≠ 0;
- ``example_l0`` (E,): per example, the mean over its tokens of the per-token L0 #{i : acts_ti ≠ 0};
  ``example_sse`` / ``example_energy`` (E,): per example Σ_t ||x_t − x̂_t||² and Σ_t ||x_t||² (what a
  bootstrap over examples of the NMSE resamples); ``token_l0`` (N,): #{i : acts_ti ≠ 0} per token, in cache
  order (what :mod:`repro.evals.calibration` relates to each token's complexity).

Example rows are ordered by example id (``ids``), with their ``labels``. Every sum is in float64
(counts exact); the results do not depend on the chunk size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from repro.metrics import ReconstructionMetrics


@dataclass
class EncodedSplit:
    """What :func:`encode_cache` collects (see the module docstring)."""

    ids: np.ndarray
    labels: np.ndarray
    n_tokens: int
    reconstruction: dict
    class_counts: np.ndarray
    class_nonzero: np.ndarray
    class_sums: np.ndarray
    top_values: np.ndarray
    top_ids: np.ndarray
    top_positions: np.ndarray
    top_labels: np.ndarray
    fire_count: np.ndarray
    act_sum: np.ndarray
    example_fire_count: np.ndarray
    example_l0: np.ndarray
    example_sse: np.ndarray
    example_energy: np.ndarray
    token_l0: np.ndarray
    pooled: Tensor | None
    pooled_raw: Tensor | None
    threshold: float

    @property
    def n_examples(self) -> int:
        return len(self.ids)


def example_chunks(index: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """Token ranges [lo, hi) of whole examples, each at most ``max_tokens`` long unless one example is
    longer. ``index`` is the cache index (example id, position, label) in storage order; an example's
    tokens must be contiguous (ValueError otherwise)."""
    ids = index[:, 0]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)
    if len(np.unique(ids[starts])) != len(starts):
        raise ValueError("the cache's tokens of one example are not contiguous")
    bounds = np.r_[starts, len(ids)]
    chunks, lo = [], 0
    for i in range(1, len(bounds)):
        if bounds[i] - lo > max_tokens and bounds[i - 1] > lo:
            chunks.append((lo, int(bounds[i - 1])))
            lo = int(bounds[i - 1])
    if lo < len(ids):
        chunks.append((lo, len(ids)))
    return chunks


def _merge_top(top: tuple[Tensor, ...], cand: tuple[Tensor, ...], k: int) -> tuple[Tensor, ...]:
    """Keep the k largest values per column of [top; cand] with their companions (ids, positions,
    labels); ties go to the lower example id, so the result does not depend on the chunking."""
    merged = [torch.cat([a, b]) for a, b in zip(top, cand, strict=True)]
    by_id = torch.sort(merged[1], dim=0, stable=True).indices
    merged = [m.gather(0, by_id) for m in merged]
    order = torch.sort(merged[0], dim=0, descending=True, stable=True).indices[:k]
    return tuple(m.gather(0, order) for m in merged)


@torch.no_grad()
def encode_cache(
    sae,
    cache,
    *,
    threshold: float = 0.2,
    top_k: int = 50,
    pooled: bool = True,
    max_chunk_tokens: int = 8192,
    n_classes: int | None = None,
    device: str | None = None,
) -> EncodedSplit:
    """Stream ``cache`` (an :class:`repro.cache.ActivationCache`) through ``sae`` once (module docstring)."""
    was_training = sae.training
    sae.eval()
    device = torch.device(device) if device else next(sae.parameters()).device
    index = cache.index()
    ids_all, labels_all = index[:, 0], index[:, 2]
    ids, first = np.unique(ids_all, return_index=True)
    labels = labels_all[first]
    row_of = {int(i): r for r, i in enumerate(ids)}
    n_classes = int(n_classes if n_classes is not None else (labels.max() + 1 if len(labels) else 0))
    F = sae.cfg.d_sae
    metrics = ReconstructionMetrics(F)
    counts = torch.zeros(n_classes, F, dtype=torch.float64, device=device)
    class_nonzero = torch.zeros_like(counts)
    class_sums = torch.zeros_like(counts)
    fire = torch.zeros(F, dtype=torch.float64, device=device)
    act_sum = torch.zeros(F, dtype=torch.float64, device=device)
    ex_fire = torch.zeros(F, dtype=torch.float64, device=device)
    example_l0 = np.zeros(len(ids))
    example_sse = np.zeros(len(ids))
    example_energy = np.zeros(len(ids))
    token_l0 = np.zeros(len(index), dtype=np.int32)
    pooled_codes = torch.zeros(len(ids), F) if pooled else None
    pooled_raw = torch.zeros(len(ids), cache.d_model) if pooled else None
    empty = torch.zeros(0, F, device=device)
    top = (torch.full((0, F), -torch.inf, device=device),) + (empty.long(),) * 3
    try:
        for lo, hi in example_chunks(index, max_chunk_tokens):
            x = cache.tokens(lo, hi).to(device)
            x_hat, acts = sae(x)
            acts = acts.float()
            metrics.update(x, x_hat, acts)
            chunk_ids = ids_all[lo:hi]
            local_ids, first_tok, inv_np = np.unique(chunk_ids, return_index=True, return_inverse=True)
            inv = torch.from_numpy(inv_np).to(device)
            n_ex = len(local_ids)
            tok_labels = torch.from_numpy(labels_all[lo:hi]).to(device)
            counts.index_add_(0, tok_labels, (acts > threshold).double())
            nonzero = acts != 0
            token_l0[lo:hi] = nonzero.sum(1).cpu().numpy()
            class_nonzero.index_add_(0, tok_labels, nonzero.double())
            class_sums.index_add_(0, tok_labels, acts.double())
            fire += nonzero.sum(0, dtype=torch.float64)
            act_sum += acts.sum(0, dtype=torch.float64)
            ntok = torch.bincount(inv, minlength=n_ex).clamp_min(1)
            any_fire = torch.zeros(n_ex, F, device=device).index_add_(0, inv, nonzero.float()) > 0
            ex_fire += any_fire.sum(0, dtype=torch.float64)
            rows = torch.tensor([row_of[int(i)] for i in local_ids])
            l0_sum = torch.zeros(n_ex, dtype=torch.float64, device=device).index_add_(0, inv, nonzero.sum(1).double())
            example_l0[rows.numpy()] = (l0_sum / ntok).cpu().numpy()
            zero = torch.zeros(n_ex, dtype=torch.float64, device=device)
            sq_err = (x.double() - x_hat.double()).pow(2).sum(1)
            example_sse[rows.numpy()] = zero.index_add(0, inv, sq_err).cpu().numpy()
            example_energy[rows.numpy()] = zero.index_add(0, inv, x.double().pow(2).sum(1)).cpu().numpy()
            if pooled:
                sums = torch.zeros(n_ex, F, dtype=torch.float64, device=device).index_add_(0, inv, acts.double())
                pooled_codes[rows] = (sums / ntok[:, None]).float().cpu()
                raw = torch.zeros(n_ex, x.shape[-1], dtype=torch.float64, device=device).index_add_(0, inv, x.double())
                pooled_raw[rows] = (raw / ntok[:, None]).float().cpu()
            # per example and latent: the maximum activation and the first position reaching it
            idx = inv[:, None].expand(-1, F)
            ex_max = torch.full((n_ex, F), -torch.inf, device=device).scatter_reduce(0, idx, acts, "amax")
            positions = torch.from_numpy(index[lo:hi, 1]).to(device)
            at_max = acts == ex_max.gather(0, idx)
            pos = torch.where(at_max, positions[:, None], torch.iinfo(torch.int64).max)
            ex_pos = torch.full((n_ex, F), torch.iinfo(torch.int64).max, device=device).scatter_reduce(
                0, idx, pos, "amin"
            )
            ex_max = torch.where(ex_max > 0, ex_max, -torch.inf)  # an example counts only where the latent is > 0
            cand = (
                ex_max,
                torch.from_numpy(local_ids).to(device)[:, None].expand(-1, F),
                ex_pos,
                torch.from_numpy(labels_all[lo:hi][first_tok]).to(device)[:, None].expand(-1, F),
            )
            top = _merge_top(top, cand, top_k)
    finally:
        sae.train(was_training)
    pad = top_k - top[0].shape[0]
    if pad > 0:
        top = (
            torch.cat([top[0], torch.full((pad, F), -torch.inf, device=device)]),
            *(torch.cat([t, torch.full((pad, F), -1, dtype=torch.long, device=device)]) for t in top[1:]),
        )
    top_np = [t.T.cpu().numpy() for t in top]
    top_np[0] = top_np[0].astype(np.float32)
    invalid = ~np.isfinite(top_np[0])
    for t in top_np[1:]:
        t[invalid] = -1
    return EncodedSplit(
        ids=ids,
        labels=labels,
        n_tokens=len(index),
        reconstruction=metrics.compute(),
        class_counts=counts.cpu().numpy(),
        class_nonzero=class_nonzero.cpu().numpy(),
        class_sums=class_sums.cpu().numpy(),
        top_values=top_np[0],
        top_ids=top_np[1],
        top_positions=top_np[2],
        top_labels=top_np[3],
        fire_count=fire.cpu().numpy(),
        act_sum=act_sum.cpu().numpy(),
        example_fire_count=ex_fire.cpu().numpy(),
        example_l0=example_l0,
        example_sse=example_sse,
        example_energy=example_energy,
        token_l0=token_l0,
        pooled=pooled_codes,
        pooled_raw=pooled_raw,
        threshold=float(threshold),
    )
