"""TopK (Gao et al. 2024) and BatchTopK (Bussmann et al. 2024) SAEs, with the AuxK dead-latent loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.sae.base import register, require, require_nonnegative, require_unit_interval
from repro.sae.linear import LinearConfig, LinearSAE
from repro.sae.sparse import (
    Ragged,
    embedding_bag_decode,
    gathered_scores,
    ragged_scores,
    sparse_to_dense,
    take,
)


@dataclass(frozen=True)
class TopKConfig(LinearConfig):
    """k: active latents per token (paper: 32). aux_k: latents used by AuxK (default d_in // 2, capped
    at the number of dead latents). auxk_coefficient: weight of AuxK (Gao et al.: 1/32; 0 = off)."""

    k: int = 32
    aux_k: int | None = None
    auxk_coefficient: float = 1 / 32

    def validate(self) -> None:
        super().validate()
        require(
            isinstance(self.k, int) and 0 < self.k <= self.d_sae, "k", self.k, f"an integer in [1, d_sae={self.d_sae}]"
        )
        require(
            self.aux_k is None or (isinstance(self.aux_k, int) and 0 < self.aux_k <= self.d_sae),
            "aux_k",
            self.aux_k,
            f"None or an integer in [1, d_sae={self.d_sae}]",
        )
        require_nonnegative("auxk_coefficient", self.auxk_coefficient)


@dataclass(frozen=True)
class BatchTopKConfig(TopKConfig):
    """threshold_momentum: during training, the inference threshold is an exponential moving average (this
    momentum) of the smallest activation kept in each batch (Bussmann et al.). calibrate: at the end of
    training, replace it by the threshold that gives a mean L0 of exactly k on the trainer's sample of
    training tokens (the (k n)-th largest positive pre-activation of its n tokens), so that held-out L0
    matches k; the moving average is kept in ``threshold_ema`` for the record."""

    threshold_momentum: float = 0.99
    calibrate: bool = True

    def validate(self) -> None:
        super().validate()
        require_unit_interval("threshold_momentum", self.threshold_momentum)
        require(isinstance(self.calibrate, bool), "calibrate", self.calibrate, "true or false")


@register
class TopKSAE(LinearSAE):
    """acts = ReLU(TopK_k((x_n - b_dec) W_enc + b_enc)); x_hat_n = acts W_dec + b_dec; unit-norm decoder rows
    (x_n: the normalised input, see :mod:`repro.sae.linear`).

    loss = mean_t ||x_n,t - x_hat_n,t||^2 + auxk_coefficient * V_x * AuxK, where
    AuxK = mean_t ||e_t - e_hat_t||^2 / V_e, e = x_n - x_hat_n (detached), e_hat the decoding (without b_dec)
    of the top aux_k pre-activations among dead latents (those silent for ``dead_window_tokens``, which the
    trainer scales to the run), and V_x, V_e the batch variances (summed over dimensions) of x_n and e.
    Gao et al. add auxk_coefficient * AuxK (1/32) to a main loss normalised by V_x; multiplying both by V_x
    keeps their relative weight while the main term stays the plain MSE of the other kinds.

    Sparse path (``cfg.decode``): the pre-activations are computed without gradient, the k selected
    ones are re-attached to the graph with a sparse backward (:func:`gathered_scores`) and decoded
    with ``embedding_bag``; no (tokens x d_sae) gradient is ever formed. Same numbers as the dense path.
    """

    kind = "topk"
    config_cls = TopKConfig
    init_decoder_norm = 1.0
    unit_norm_decoder = True

    def encode_normalised(self, x: Tensor) -> Tensor:
        pre = self.pre_activation(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))

    def select(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Training-time selection on a (N, d_in) batch: ``(values, indices, mask, pre)``: the selected,
        ReLU'd pre-activations (with gradient; 0 where ``mask`` is False), their latent indices, which
        padded entries are real (None: all), and the no-grad pre-activations."""
        bias = self.encoder_bias()
        with torch.no_grad():
            raw = x @ self.W_enc
            pre = raw + bias
        idx = pre.topk(self.cfg.k, dim=-1).indices
        return torch.relu(self.attach(x, raw, idx) + take(bias, idx)), idx, None, pre

    def attach(self, x: Tensor, raw: Tensor, idx: Tensor, mask: Tensor | None = None) -> Tensor:
        """Selected ``x @ W_enc`` entries with gradient (0 off the mask): sparse backward on the sparse
        path, plain autograd on the dense path."""
        if self.use_sparse_decode(idx.shape[1]):
            return gathered_scores(x, self.W_enc.t(), idx, raw.gather(1, idx), mask)
        scores = (x @ self.W_enc).gather(1, idx)
        return scores if mask is None else scores * mask

    def reconstruct(self, vals: Tensor, idx: Tensor, mask: Tensor | None = None) -> Tensor:
        """x_hat from a padded sparse code, by the path that ``cfg.decode`` picks for its width."""
        if self.use_sparse_decode(idx.shape[1]):
            return embedding_bag_decode(vals, idx, self.W_dec, mask) + self.b_dec
        return sparse_to_dense(vals, idx, self.cfg.d_sae) @ self.W_dec + self.b_dec

    def normalised_loss(self, x: Tensor, ctx: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        vals, idx, mask, pre = self.select(x)
        x_hat = self.reconstruct(vals, idx, mask)
        active = vals.detach() != 0
        return self.loss_with_auxk(x, x_hat, pre, ctx, idx[active], active.sum(dim=-1))

    def loss_with_auxk(
        self, x: Tensor, x_hat: Tensor, pre: Tensor, ctx: Tensor | None, fired: Tensor, l0: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """MSE + the weighted AuxK term (class docstring) and the log parts, from the reconstruction, the
        no-grad pre-activations, the latents that fired (one entry per firing) and the per-token L0."""
        recon, raw_mse = self.reconstruction_terms(x, x_hat, ctx)
        aux = self.auxk_loss(x, x_hat, pre)
        loss = recon
        if aux.requires_grad:  # some latents are dead (V_x, the batch variance, only then)
            variance = (x - x.mean(dim=0)).pow(2).sum(dim=-1).mean().detach()
            loss = loss + self.cfg.auxk_coefficient * variance * aux
        if self.training:
            self.track_fired_latents(fired, x.shape[0])
        return loss, self.log_parts(loss, raw_mse, l0, recon=recon, auxk=aux)

    def auxk_loss(self, x: Tensor, x_hat: Tensor, pre: Tensor) -> Tensor:
        """AuxK of Gao et al. (see the class docstring); 0 when no latent is dead."""
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0 or self.cfg.auxk_coefficient == 0 or not self.training:
            return x.new_zeros(())
        k_aux = min(self.cfg.aux_k or self.cfg.d_in // 2, n_dead)
        bias = self.encoder_bias()
        with torch.no_grad():
            idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
            raw = (pre - bias).gather(1, idx)
        vals = torch.relu(gathered_scores(x, self.W_enc.t(), idx, raw) + take(bias, idx))
        residual = (x - x_hat).detach()
        e_hat = embedding_bag_decode(vals, idx, self.W_dec)
        variance = (residual - residual.mean(dim=0)).pow(2).sum(dim=-1).mean()
        aux = (e_hat - residual).pow(2).sum(dim=-1).mean() / variance
        return torch.nan_to_num(aux, nan=0.0, posinf=0.0)


@register
class BatchTopKSAE(TopKSAE):
    """Training: keep the k * N largest ReLU'd pre-activations of the whole batch of N tokens (the
    per-token L0 varies, its mean is k). Inference (eval mode): acts = pre * 1[pre > theta] (a JumpReLU with
    one global threshold), theta the moving average of the smallest kept activation per training batch,
    calibrated at the end of training so that the mean L0 on training tokens is k (``cfg.calibrate``).
    Loss, AuxK and decoder constraint as TopK."""

    kind = "batchtopk"
    config_cls = BatchTopKConfig

    def __init__(self, cfg: BatchTopKConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold_ema", torch.zeros((), dtype=torch.float64))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.int64))

    def encode_normalised(self, x: Tensor) -> Tensor:
        pre = self.pre_activation(x)
        if not self.training:
            return pre * (pre > self.threshold.to(pre.dtype))
        flat = pre.reshape(-1, self.cfg.d_sae)
        code = batch_top_entries(flat.detach(), self.cfg.k * flat.shape[0])
        return (flat * code_mask(code, flat.shape)).reshape(pre.shape)

    def select_entries(self, x: Tensor, bias: Tensor) -> tuple[Ragged, Tensor, Tensor]:
        """The selected entries of a (N, d_in) batch as a ragged code (training: the batch's k N largest
        positive pre-activations; eval: those above the threshold), with the no-grad ``x @ W_enc`` and
        pre-activations ``(code, raw, pre)`` (``bias``: :meth:`encoder_bias`); training also updates the
        moving-average threshold."""
        with torch.no_grad():
            raw = x @ self.W_enc
            pre = raw + bias
            if self.training:
                code = batch_top_entries(pre, self.cfg.k * pre.shape[0])
                if code.cols.numel():
                    self.update_threshold(pre[code.rows, code.cols].min())
            else:
                code = Ragged.from_mask(pre > self.threshold.to(pre.dtype))
        return code, raw, pre

    def normalised_loss(self, x: Tensor, ctx: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        bias = self.encoder_bias()
        code, raw, pre = self.select_entries(x, bias)
        if self.use_sparse_decode(-(-code.cols.numel() // max(len(x), 1))):  # ragged: cost ~ the mean L0
            vals = torch.relu(ragged_scores(x, self.W_enc.t(), code, raw[code.rows, code.cols]) + take(bias, code.cols))
            x_hat = self.sparse_decode(vals, code)
        else:
            acts = torch.relu(x @ self.W_enc + bias) * code_mask(code, pre.shape)
            x_hat = acts @ self.W_dec + self.b_dec
            vals = acts[code.rows, code.cols]
        active = vals.detach() != 0
        l0 = torch.bincount(code.rows[active], minlength=len(x))
        return self.loss_with_auxk(x, x_hat, pre, ctx, code.cols[active], l0)

    @torch.no_grad()
    def update_threshold(self, smallest_kept: Tensor) -> None:
        """theta <- m * theta + (1 - m) * smallest_kept (theta = smallest_kept on the first batch)."""
        m = self.cfg.threshold_momentum if int(self.threshold_updates) > 0 else 0.0
        self.threshold_ema.mul_(m).add_((1 - m) * smallest_kept.double())
        self.threshold.copy_(self.threshold_ema)
        self.threshold_updates.add_(1)

    @torch.no_grad()
    def calibrated_threshold(self, sample: Tensor, batch_size: int = 8192) -> float:
        """The threshold theta at which pre * 1[pre > theta] keeps k entries per token on average over the
        (raw) ``sample`` of n tokens: the (k n + 1)-th largest pre-activation, or 0 if fewer than k n are
        positive (then every positive entry is kept)."""
        x = sample.reshape(-1, self.cfg.d_in).to(self.b_dec.device, torch.float32)
        n_keep = self.cfg.k * len(x)
        kept = []  # each chunk's n_keep + 1 largest entries hold the global ones
        for lo in range(0, len(x), batch_size):
            pre = self.pre_activation(self.normalise(x[lo : lo + batch_size])[0]).flatten()
            kept.append(pre.topk(min(n_keep + 1, pre.numel())).values)
        pool = torch.cat(kept)
        if len(pool) <= n_keep:
            return 0.0
        return max(float(pool.topk(n_keep + 1).values[-1]), 0.0)

    def finish_training(self, sample: Tensor) -> dict[str, float]:
        """Calibrate the inference threshold on the sample (``cfg.calibrate``); returns both thresholds."""
        record = {"threshold_ema": float(self.threshold_ema)}
        if self.cfg.calibrate:
            self.threshold.fill_(self.calibrated_threshold(sample))
        record["threshold"] = float(self.threshold)
        return record

    def thresholds(self) -> Tensor | None:
        return self.threshold.reshape(1)


@torch.no_grad()
def batch_top_entries(pre: Tensor, n_keep: int) -> Ragged:
    """The ``n_keep`` largest positive entries of the whole (N, M) matrix, as a ragged code (token-major).

    Exact without sorting all N x M entries: the n_keep-th largest of each row's top 2 n_keep / N entries
    is a lower bound b of the n_keep-th largest entry overall (a subset's k-th largest is never above the
    whole set's), so the entries >= max(b, 0+) hold the answer; the n_keep largest of those are kept."""
    n, m = pre.shape
    width = min(m, max(1, 2 * -(-n_keep // max(n, 1))))
    candidates = pre.topk(width, dim=1).values.flatten()
    bound = float(candidates.topk(n_keep).values[-1]) if candidates.numel() > n_keep else -math.inf
    rows, cols = (pre >= bound).nonzero(as_tuple=True) if bound > 0 else (pre > 0).nonzero(as_tuple=True)
    if rows.numel() > n_keep:
        keep = pre[rows, cols].topk(n_keep).indices.sort().values  # sorted: stays token-major
        rows, cols = rows[keep], cols[keep]
    counts = torch.bincount(rows, minlength=n)
    return Ragged(rows, cols, torch.cumsum(counts, 0) - counts, None)


def code_mask(code: Ragged, shape: tuple[int, int]) -> Tensor:
    """The (N, M) boolean mask of a ragged code's entries."""
    mask = torch.zeros(shape, dtype=torch.bool, device=code.cols.device)
    mask[code.rows, code.cols] = True
    return mask
