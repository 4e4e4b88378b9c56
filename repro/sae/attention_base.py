"""The machinery shared by the sparsemax-attention family (:mod:`repro.sae.attention`): the official draws
of the concept dictionary and the key/value matrices, unit-norm encoding with ``||x||`` rescaling and the
official objective (:class:`NormalisedSAE`), the concept-attention parametrisation (:class:`ConceptAttention`),
and the sparsemax support selection with the frequency mask (:class:`NormalisedSparsemaxSAE`, configured by
:class:`SparsemaxAttentionConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.ops import sparsemax_sort, sparsemax_threshold
from repro.ops.sparsemax import sparsemax_support_topk
from repro.sae.base import SAE, SAEConfig, require, require_nonnegative, require_unit_interval
from repro.sae.linear import mse_per_token
from repro.sae.sparse import embedding_bag_decode, gathered_scores


def official_init(cfg: SAEConfig, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(concepts, W_v, W_k) drawn as the official code does, in its order: concepts ~ U(+-sqrt(6/d_sae))
    (Kaiming-uniform of the transposed view), W_v, W_k ~ U(+-sqrt(6/d_in))."""
    bound_c, bound_w = math.sqrt(6 / cfg.d_sae), math.sqrt(6 / cfg.d_in)
    concepts = (torch.rand(cfg.d_sae, cfg.d_in, generator=g) * 2 - 1) * bound_c
    w_v = (torch.rand(cfg.d_in, cfg.d_in, generator=g) * 2 - 1) * bound_w
    w_k = (torch.rand(cfg.d_in, cfg.d_in, generator=g) * 2 - 1) * bound_w
    return concepts, w_v, w_k


def unit_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x / ||x||, ||x||) per token; a zero token maps to 0 (the official code would give NaN)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm)), norm


@dataclass(frozen=True)
class SparsemaxAttentionConfig(SAEConfig):
    """freq_mask: latents whose cumulative token firing rate (mean over training calls of the share of
    tokens with act > 0) exceeds this get score 0 before the sparsemax (official: 0.1; None = off).
    objective: ``official`` = loss_scale * mean_{tokens,dims} (x_hat - x)^2 / ||x||, or ``mse`` =
    mean_t ||x_hat - x||^2. impl: ``fast`` (exact top-k threshold under no_grad, re-associated products,
    sparse gradients and embedding_bag decoding when the support is small) or ``official`` (the
    official order of operations: C W_k and C W_v formed, sort-based sparsemax on the autograd graph)."""

    freq_mask: float | None = 0.1
    objective: str = "official"
    loss_scale: float = 10.0
    impl: str = "fast"

    def validate(self) -> None:
        super().validate()
        if self.freq_mask is not None:
            require_unit_interval("freq_mask", self.freq_mask)
        require(self.objective in ("official", "mse"), "objective", self.objective, "'official' or 'mse'")
        require_nonnegative("loss_scale", self.loss_scale)
        require(self.impl in ("fast", "official"), "impl", self.impl, "'fast' or 'official'")


class NormalisedSAE(SAE):
    """Kinds that encode x_n = x / ||x|| and reconstruct x_hat = ||x|| * dec(acts), dec(a) = (a D) P with
    decoder rows D (``decode_rows``) and an optional (d, d) matrix P (``decode_post``); trained on the
    official objective (or plain MSE, per ``cfg.objective``)."""

    normalizes_input = True

    def decode_rows(self) -> Tensor:
        raise NotImplementedError

    def decode_post(self) -> Tensor | None:
        return None

    def decode(self, acts: Tensor, ctx: Tensor | None = None) -> Tensor:
        """x_hat = ||x|| * ((acts D) P); ``ctx`` = the input norms ||x|| (..., 1), :meth:`input_context`."""
        if ctx is None:
            raise ValueError(
                f"{self.kind} decodes in unit-norm space: pass ctx=||x|| (shape (..., 1), "
                "sae.input_context(x)), or call forward(x)"
            )
        x_norm = ctx
        out = acts @ self.decode_rows()
        post = self.decode_post()
        return x_norm * (out if post is None else out @ post)

    def objective(self, x: Tensor, x_hat: Tensor, x_norm: Tensor) -> Tensor:
        """``official``: loss_scale * mean_{tokens,dims} (x_hat - x)^2 / ||x||; ``mse``: mean_t ||x_hat - x||^2."""
        if self.cfg.objective == "mse":
            return mse_per_token(x, x_hat)
        safe = torch.where(x_norm > 0, x_norm, torch.ones_like(x_norm))
        return self.cfg.loss_scale * ((x_hat - x).pow(2) / safe).mean()


class ConceptAttention:
    """The official attention parametrisation (a mixin): ``concepts`` C (d_sae, d_in), ``W_k``, ``W_v``
    (d_in, d_in), officially initialised; queries x_n W_k^T score against the rows of C, values are
    decoded as (a C) W_v."""

    def init_attention(self, cfg: SAEConfig) -> None:
        concepts, w_v, w_k = official_init(cfg, self.init_generator())
        self.concepts = nn.Parameter(concepts)
        self.W_k = nn.Parameter(w_k)
        self.W_v = nn.Parameter(w_v)

    def query(self, x_n: Tensor) -> Tensor:
        return x_n @ self.W_k.t()

    def score_rows(self) -> Tensor:
        return self.concepts

    def decode_rows(self) -> Tensor:
        return self.concepts

    def decode_post(self) -> Tensor:
        return self.W_v

    def decoder_directions(self) -> Tensor:
        """Row i of the value matrix V = C W_v: latent i decodes to (||x|| x) its row."""
        return self.concepts.detach().double() @ self.W_v.detach().double()


class NormalisedSparsemaxSAE(NormalisedSAE):
    """Shared machinery of ``sparsemax_attention`` and ``mlp_sparsemax``: scores z = q(x_n) R^T for rows R
    (``query``, ``score_rows``), official frequency mask, support {z > tau(z)} with the exact sparsemax
    threshold (no gradient through tau), acts = z * 1[support], x_hat = ||x|| * dec(acts).
    """

    def __init__(self, cfg: SparsemaxAttentionConfig):
        super().__init__(cfg)
        self.register_buffer("latent_freq", torch.zeros(cfg.d_sae, dtype=torch.float64))
        self.register_buffer("freq_calls", torch.zeros((), dtype=torch.int64))

    def query(self, x_n: Tensor) -> Tensor:
        raise NotImplementedError

    def score_rows(self) -> Tensor:
        raise NotImplementedError

    # shared maths
    def keep_mask(self) -> Tensor | None:
        """Latents not suppressed by the frequency mask (None when nothing is suppressed)."""
        if self.cfg.freq_mask is None:
            return None
        keep = self.latent_freq <= self.cfg.freq_mask
        return None if bool(keep.all()) else keep

    def scores(self, x: Tensor) -> Tensor:
        """Masked scores z (..., d_sae) of inputs x."""
        x_n, _ = unit_rows(self.check_input(x))
        z = self.query(x_n) @ self.score_rows().t()
        keep = self.keep_mask()
        return z if keep is None else z * keep.to(z.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """Official activations: the raw scores on the sparsemax support, z * 1[z > tau(z)]."""
        z = self.scores(x)
        tau, _ = sparsemax_threshold(z.detach())
        return z * (z > tau).to(z.dtype)

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        x_n, x_norm = unit_rows(x)
        if self.cfg.impl == "official":
            acts = self.official_acts(x_n)
            x_hat = self.decode(acts, x_norm)
            vals, support_l0 = acts, (acts != 0).sum(dim=-1)
            fired = (acts.detach() > 0).double().mean(dim=0)
        else:
            x_hat, vals, idx, support = self.fast_forward(x_n, x_norm)
            support_l0 = support.sum(dim=-1)
            fired = torch.zeros(self.cfg.d_sae, dtype=torch.float64)
            positive = vals.detach() > 0
            fired.index_add_(0, idx[positive], torch.ones(int(positive.sum()), dtype=torch.float64))
            fired /= x.shape[0]
        recon = self.objective(x, x_hat, x_norm)
        mse = mse_per_token(x.detach(), x_hat.detach())
        if self.training:
            self.update_freq(fired)
            self.tokens_since_fired.add_(x.shape[0]).masked_fill_(fired > 0, 0)
        l0 = (vals.detach() != 0).sum(dim=-1)
        return recon, self.log_parts(
            recon, mse, l0, l0_pos=(vals.detach() > 0).sum(-1).double().mean(), support_size=support_l0.double().mean()
        )

    def fast_forward(self, x_n: Tensor, x_norm: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x_hat, support values (N, w), their indices (N, w), support mask (N, w)): dense no-grad scores,
        exact top-k threshold, the support scores re-attached with a sparse backward when the support
        is small (embedding_bag decode), a dense masked product otherwise."""
        q = self.query(x_n)
        rows = self.score_rows()
        keep = self.keep_mask()
        with torch.no_grad():
            z = q @ rows.t()
            if keep is not None:
                z *= keep.to(z.dtype)
            tau, support_size, top, idx = sparsemax_support_topk(z)
            width = idx.shape[1]
            support = top > tau
        if self.use_sparse_decode(width):
            live = support if keep is None else support & keep[idx]
            vals = gathered_scores(q, rows, idx, top, live)
            out = embedding_bag_decode(vals, idx, self.decode_rows(), live)
        else:
            z_g = q @ rows.t()
            if keep is not None:
                z_g = z_g * keep.to(z_g.dtype)
            acts = z_g * (z > tau).to(z_g.dtype)
            vals = acts.gather(1, idx)
            out = acts @ self.decode_rows()
        post = self.decode_post()
        x_hat = x_norm * (out if post is None else out @ post)
        return x_hat, vals, idx, support

    def official_acts(self, x_n: Tensor) -> Tensor:
        """The official computation order: K = R-rows as formed products, sort-based sparsemax on the graph,
        acts = z * 1[p > 0]."""
        z = self.official_scores(x_n)
        keep = self.keep_mask()
        if keep is not None:
            z = z * keep.to(z.dtype)
        p = sparsemax_sort(z, dim=-1)
        return z * (p > 0).to(z.dtype)

    def official_scores(self, x_n: Tensor) -> Tensor:
        return self.query(x_n) @ self.score_rows().t()

    @torch.no_grad()
    def update_freq(self, fired: Tensor) -> None:
        """Cumulative mean over training calls: freq <- (freq * (t - 1) + r) / t, r = share of the batch's
        tokens with act > 0 per latent."""
        self.freq_calls.add_(1)
        t = float(self.freq_calls)
        self.latent_freq.mul_((t - 1) / t).add_(fired / t)
