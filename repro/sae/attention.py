"""Sparsemax-attention SAEs (Wang et al., CVPR 2026) and the two ablations of the paper's Table B.

- ``sparsemax_attention``: the method as the official code runs it (``official_code.md`` section 2).
- ``sparsemax_attention_paper``: the paper's written equations, x_hat = sparsemax(Q K^T / sqrt(d)) V.
- ``mlp_sparsemax``: untied encoder/decoder with the same sparsemax support selection.
- ``attention_relu``: the attention parametrisation with ReLU activations and an L1 penalty.

The machinery the kinds share (unit-norm encoding, the concept-attention parametrisation, the sparsemax
support with the frequency mask) is in :mod:`repro.sae.attention_base`; the kinds register here, in this order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.ops import sparsemax
from repro.ops.sparsemax import sparsemax_support_topk
from repro.sae.attention_base import (
    ConceptAttention,
    NormalisedSAE,
    NormalisedSparsemaxSAE,
    SparsemaxAttentionConfig,
    official_init,
    unit_rows,
)
from repro.sae.base import SAE, SAEConfig, register, require, require_nonnegative
from repro.sae.linear import mse_per_token
from repro.sae.sparse import Ragged, embedding_bag_decode, gathered_scores, ragged_decode, ragged_scores


@register
class SparsemaxAttentionSAE(ConceptAttention, NormalisedSparsemaxSAE):
    """The official sparsemax-attention SAE. Parameters ``concepts`` C (d_sae, d_in), ``W_k``, ``W_v``
    (d_in, d_in). x_n = x / ||x||; z = x_n (C W_k)^T, computed as (x_n W_k^T) C^T; frequency mask;
    support = {sparsemax(z) > 0} = {z > tau}; acts = z * 1[support] (raw scores, not sparsemax weights);
    x_hat = ||x|| * acts (C W_v), computed as ||x|| * (acts C) W_v; loss = 10 mean (x_hat - x)^2 / ||x||.
    No gradient flows through tau or the support. The objective has no sparsity term."""

    kind = "sparsemax_attention"
    config_cls = SparsemaxAttentionConfig

    def __init__(self, cfg: SparsemaxAttentionConfig):
        super().__init__(cfg)
        self.init_attention(cfg)

    def official_scores(self, x_n: Tensor) -> Tensor:
        return x_n @ (self.concepts @ self.W_k).t()

    def official_decode(self, acts: Tensor, x_norm: Tensor) -> Tensor:
        """x_hat with the value rows formed first, as the official code does: ||x|| * acts (C W_v)."""
        return x_norm * (acts @ (self.concepts @ self.W_v))

    def decode(self, acts: Tensor, ctx: Tensor | None = None) -> Tensor:
        if self.cfg.impl == "official" and ctx is not None:
            return self.official_decode(acts, ctx)
        return super().decode(acts, ctx)


@dataclass(frozen=True)
class MLPSparsemaxConfig(SparsemaxAttentionConfig):
    """Same fields as ``sparsemax_attention`` (only the parametrisation differs)."""


@register
class MLPSparsemaxSAE(NormalisedSparsemaxSAE):
    """Ablation "MLP + sparsemax": untied W_enc (d_in, d_sae) and W_dec (d_sae, d_in) replace the
    attention parametrisation; z = x_n W_enc; everything else (normalisation, frequency mask, support,
    activations, ||x|| rescaling, loss) is the official method. Initialised as W_enc = (C W_k)^T,
    W_dec = C W_v from the official draws, so at step 0 it computes the same function as
    ``sparsemax_attention`` with the same seed."""

    kind = "mlp_sparsemax"
    config_cls = MLPSparsemaxConfig

    def __init__(self, cfg: MLPSparsemaxConfig):
        super().__init__(cfg)
        concepts, w_v, w_k = official_init(cfg, self.init_generator())
        self.W_enc = nn.Parameter((concepts @ w_k).t().contiguous())
        self.W_dec = nn.Parameter(concepts @ w_v)

    def query(self, x_n: Tensor) -> Tensor:
        return x_n

    def score_rows(self) -> Tensor:
        return self.W_enc.t()

    def decode_rows(self) -> Tensor:
        return self.W_dec


@dataclass(frozen=True)
class AttentionReLUConfig(SAEConfig):
    """l1_coefficient: lambda of lambda * mean_t sum_i |a_ti|. objective / loss_scale as in
    ``sparsemax_attention``."""

    l1_coefficient: float = 1e-3
    objective: str = "official"
    loss_scale: float = 10.0

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l1_coefficient", self.l1_coefficient)
        require(self.objective in ("official", "mse"), "objective", self.objective, "'official' or 'mse'")
        require_nonnegative("loss_scale", self.loss_scale)


@register
class AttentionReLUSAE(ConceptAttention, NormalisedSAE):
    """Ablation "attention + ReLU": the official parametrisation (x_n, C, W_k, W_v, ||x|| rescaling,
    official objective) with acts = ReLU(z) instead of the sparsemax support, plus
    l1_coefficient * mean_t sum_i a_ti. No frequency mask. Sparse training path as the ReLU SAE's (the
    active scores re-attached with a sparse backward, embedding_bag decoding) when few latents are active."""

    kind = "attention_relu"
    config_cls = AttentionReLUConfig

    def __init__(self, cfg: AttentionReLUConfig):
        super().__init__(cfg)
        self.init_attention(cfg)

    def encode(self, x: Tensor) -> Tensor:
        x_n, _ = unit_rows(self.check_input(x))
        return torch.relu(self.query(x_n) @ self.concepts.t())

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        x_n, x_norm = unit_rows(x)
        q = self.query(x_n)
        with torch.no_grad():
            z = q @ self.concepts.t()
            active = z > 0
            mean_l0 = -(-int(active.sum()) // max(len(x), 1))
        if self.cfg.decode == "sparse" or (self.cfg.decode == "auto" and self.use_sparse_decode(mean_l0)):
            code = Ragged.from_mask(active)
            acts = ragged_scores(q, self.concepts, code, z[code.rows, code.cols])
            x_hat = x_norm * (ragged_decode(acts, code, self.concepts) @ self.W_v)
            l1 = acts.sum() / len(x)
            l0 = code.counts
            if self.training:
                self.track_fired_latents(code.cols, len(x))
        else:
            acts = torch.relu(q @ self.concepts.t())
            x_hat = self.decode(acts, x_norm)
            l1 = acts.sum(dim=-1).mean()
            l0 = (acts != 0).sum(dim=-1)
            if self.training:
                self.track_firing(acts)
        recon = self.objective(x, x_hat, x_norm)
        penalty = self.cfg.l1_coefficient * l1
        loss = recon + penalty
        return loss, self.log_parts(
            loss, mse_per_token(x.detach(), x_hat.detach()), l0, l1=l1, recon=recon, sparsity_loss=penalty
        )


@dataclass(frozen=True)
class SparsemaxAttentionPaperConfig(SAEConfig):
    """No extra fields: the paper's equations leave no knob (see the class docstring for the choices)."""


@register
class SparsemaxAttentionPaperSAE(SAE):
    """The paper's written equations: Q = x W_Q, K = C W_K, V = C W_V,
    x_hat = sparsemax(Q K^T / sqrt(d_in)) V, loss = mean_t ||x - x_hat||^2.

    Choices the paper leaves open, taken here: x is used as given (no normalisation, no bias); the
    decoding weights are the sparsemax probabilities (they sum to 1, so x_hat is a convex combination
    of value rows); gradients flow through sparsemax (Jacobian g - mean_support(g) on the support);
    C, W_K, W_V initialised as the official code, W_Q like W_K; acts = the sparsemax probabilities;
    no frequency mask. Computed as z = ((x W_Q) W_K^T / sqrt(d)) C^T and x_hat = (p C) W_V."""

    kind = "sparsemax_attention_paper"
    config_cls = SparsemaxAttentionPaperConfig

    def __init__(self, cfg: SparsemaxAttentionPaperConfig):
        super().__init__(cfg)
        g = self.init_generator()
        concepts, w_v, w_k = official_init(cfg, g)
        bound = math.sqrt(6 / cfg.d_in)
        self.concepts = nn.Parameter(concepts)
        self.W_q = nn.Parameter((torch.rand(cfg.d_in, cfg.d_in, generator=g) * 2 - 1) * bound)
        self.W_k = nn.Parameter(w_k)
        self.W_v = nn.Parameter(w_v)

    def query(self, x: Tensor) -> Tensor:
        """(x W_Q) W_K^T / sqrt(d_in)."""
        return (x @ self.W_q) @ self.W_k.t() / math.sqrt(self.cfg.d_in)

    def encode(self, x: Tensor) -> Tensor:
        return sparsemax(self.query(self.check_input(x)) @ self.concepts.t(), dim=-1)

    def decode(self, acts: Tensor, ctx: Tensor | None = None) -> Tensor:
        return (acts @ self.concepts) @ self.W_v

    def decoder_directions(self) -> Tensor:
        """Row i of the value matrix V = C W_V."""
        return self.concepts.detach().double() @ self.W_v.detach().double()

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        q = self.query(x)
        with torch.no_grad():
            z = q @ self.concepts.t()
            tau, support_size, top, idx = sparsemax_support_topk(z)
            width = idx.shape[1]
        if self.use_sparse_decode(width):
            with torch.no_grad():
                support = (top > tau).to(top.dtype)
            z_sel = gathered_scores(q, self.concepts, idx, top, support.bool())
            tau_g = (z_sel.sum(dim=-1, keepdim=True) - 1) / support.sum(dim=-1, keepdim=True)
            p = (z_sel - tau_g) * support
            x_hat = embedding_bag_decode(p, idx, self.concepts, support.bool()) @ self.W_v
        else:
            p = sparsemax(q @ self.concepts.t(), dim=-1)
            x_hat = self.decode(p)
        mse = mse_per_token(x, x_hat)
        if self.training:
            if self.use_sparse_decode(width):
                self.track_fired_latents(idx[support.bool()], x.shape[0])
            else:
                self.track_firing(p.detach())
        return mse, self.log_parts(mse, mse, support_size.reshape(-1))
