"""The common parametrisation of the classic SAEs (ReLU, TopK, BatchTopK, JumpReLU, Gated): an input
normalisation, an encoder pre-activation (x_n - b_dec) @ W_enc + b_enc and a decoder
x_hat_n = acts @ W_dec + b_dec, mapped back to raw units.

Input normalisation (``input_norm``), applied inside ``encode`` and undone inside ``decode``, so a saved SAE
maps raw activations to raw reconstructions and the penalties act on a scale that does not depend on the
backbone:

- ``scalar``: x_n = c x with one factor c = sqrt(d / E||x||^2) estimated on a sample of the training split,
  so that E||x_n||^2 = d (SAELens's ``normalize_activations="expected_average_only_in"`` and
  dictionary_learning's convention); x_hat = x_hat_n / c. Stored as the buffer ``input_scale``.
- ``token``: each token centred on its own mean over dimensions and divided by its standard deviation,
  x_n = (x - mu_t) / (sigma_t + 1e-5) (the BatchTopK authors' ``input_unit_norm``, unbiased std), and
  x_hat = x_hat_n (sigma_t + 1e-5) + mu_t; decode needs (sigma_t + 1e-5, mu_t), the input context.
- ``none``: raw activations.

Initialisation (Anthropic, April 2024 update; Gao et al. 2024): decoder rows are random unit directions
times ``init_decoder_norm``, W_enc = W_dec^T (the encoder initialised from the decoder), b_enc = 0; b_dec is
set from the data by :meth:`LinearSAE.fit_to_data` (``b_dec_init``: the geometric median of the normalised
sample, as the official sparsemax and PatchSAE code do, or its mean, or zeros).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.sae.base import SAE, SAEConfig, require
from repro.sae.sparse import Ragged, decode_matrix, ragged_decode, ragged_scores, take

INPUT_NORMS = ("scalar", "token", "none")
B_DEC_INITS = ("geometric_median", "mean", "zeros")
TOKEN_EPS = 1e-5


def mse_per_token(x: Tensor, x_hat: Tensor) -> Tensor:
    """mean over tokens of ||x - x_hat||^2 (sum over dimensions)."""
    return (x_hat - x).pow(2).sum(dim=-1).mean()


@dataclass(frozen=True)
class LinearConfig(SAEConfig):
    """input_norm: ``scalar``, ``token`` or ``none`` (module docstring). b_dec_init: ``geometric_median``,
    ``mean`` or ``zeros`` (of the normalised training sample)."""

    input_norm: str = "scalar"
    b_dec_init: str = "geometric_median"

    def validate(self) -> None:
        super().validate()
        require(self.input_norm in INPUT_NORMS, "input_norm", self.input_norm, " or ".join(map(repr, INPUT_NORMS)))
        require(self.b_dec_init in B_DEC_INITS, "b_dec_init", self.b_dec_init, " or ".join(map(repr, B_DEC_INITS)))


@torch.no_grad()
def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-5) -> Tensor:
    """argmin_m sum_i ||x_i - m|| of the rows of ``x`` (n, d), by Weiszfeld's iteration in float64 from the
    mean, stopping when the point moves by less than ``tol`` relative to the data's scale."""
    x = x.double()
    m = x.mean(0)
    scale = float(x.norm(dim=1).mean()) or 1.0
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(1e-12 * scale)
        new = (w[:, None] * x).sum(0) / w.sum()
        moved = float((new - m).norm())
        m = new
        if moved < tol * scale:
            break
    return m


class LinearSAE(SAE):
    """W_enc ``(d_in, d_sae)``, b_enc ``(d_sae,)``, W_dec ``(d_sae, d_in)``, b_dec ``(d_in,)``, the buffer
    ``input_scale`` (the ``scalar`` factor c; 1 otherwise). Subclasses implement :meth:`encode_normalised`
    and :meth:`normalised_loss` on normalised inputs; this class maps to and from raw units."""

    init_decoder_norm: float = 0.1
    unit_norm_decoder: bool = False

    def __init__(self, cfg: LinearConfig):
        super().__init__(cfg)
        g = self.init_generator()
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w_dec *= self.init_decoder_norm / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("input_scale", torch.ones(()))
        # steps to stay on the dense path before checking the selection again (a buffer: saved in
        # checkpoints, so that a resumed run takes the same path at every step and stays bit-identical)
        self.register_buffer("dense_steps_left", torch.zeros((), dtype=torch.int64))

    # ----- normalisation ---------------------------------------------------------------------------
    def normalise(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(x_n, ctx)``: the normalised inputs and the context that :meth:`denormalise` needs (None
        unless ``token``, where it is ``(sigma_t + eps, mu_t)``, shape ``(..., 2)``)."""
        if self.cfg.input_norm == "token":
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            sd = centred.std(dim=-1, keepdim=True) + TOKEN_EPS
            return centred / sd, torch.cat([sd, mu], dim=-1)
        if self.cfg.input_norm == "scalar":
            return x * self.input_scale, None
        return x, None

    def denormalise(self, y: Tensor, ctx: Tensor | None) -> Tensor:
        """Raw units from normalised ones (the inverse of :meth:`normalise`)."""
        if self.cfg.input_norm == "token":
            if ctx is None:
                raise ValueError(
                    f"{self.kind} with input_norm='token' decodes per-token standardised inputs: "
                    "pass ctx=sae.input_context(x), or call forward(x)"
                )
            return y * ctx[..., :1] + ctx[..., 1:]
        if self.cfg.input_norm == "scalar":
            return y / self.input_scale
        return y

    @property
    def needs_context(self) -> bool:
        return self.cfg.input_norm == "token"

    def input_context(self, x: Tensor) -> Tensor | None:
        return self.normalise(x)[1] if self.cfg.input_norm == "token" else None

    def context_scale(self, ctx: Tensor | None) -> Tensor | None:
        return ctx[..., :1] if self.cfg.input_norm == "token" and ctx is not None else None

    def unit_context(self, n: int, device: str | torch.device = "cpu") -> Tensor | None:
        if self.cfg.input_norm != "token":
            return None
        return torch.cat([torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)], dim=1)

    def reconstruction_terms(self, x_n: Tensor, x_hat_n: Tensor, ctx: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(recon, raw_mse)`` from one pass over the squared errors: the training term
        mean_t ||x_n - x_hat_n||^2 (normalised units, with gradient) and the same in raw units (detached)."""
        err = (x_hat_n - x_n).pow(2).sum(dim=-1)
        raw = err.detach()
        if self.cfg.input_norm == "token":
            raw = raw * ctx[..., 0].detach().pow(2)
        elif self.cfg.input_norm == "scalar":
            raw = raw / self.input_scale.pow(2)
        return err.mean(), raw.mean()

    # ----- interface ---------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        return self.encode_normalised(self.normalise(self.check_input(x))[0])

    def encode_normalised(self, x_n: Tensor) -> Tensor:
        """Activations of normalised inputs."""
        raise NotImplementedError

    def decode(self, acts: Tensor, ctx: Tensor | None = None) -> Tensor:
        """denormalise(acts @ W_dec + b_dec) (sparse or dense product, per ``cfg.decode``)."""
        return self.denormalise(self.decode_normalised(acts), ctx)

    def decode_normalised(self, acts: Tensor) -> Tensor:
        """acts @ W_dec + b_dec in normalised units."""
        max_l0 = int((acts != 0).sum(dim=-1).max()) if acts.numel() else 0
        return decode_matrix(acts, self.W_dec, self.use_sparse_decode(max_l0)) + self.b_dec

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        x_n, ctx = self.normalise(x)
        return self.normalised_loss(x_n, ctx)

    def normalised_loss(self, x_n: Tensor, ctx: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        """The training objective on normalised inputs (``ctx`` only converts the logged MSE to raw units)."""
        raise NotImplementedError

    # ----- shared pieces -------------------------------------------------------------------------------
    def encoder_bias(self) -> Tensor:
        """b_enc - b_dec @ W_enc: the bias of the pre-activation x_n @ W_enc + bias."""
        return self.b_enc - self.b_dec @ self.W_enc

    def pre_activation(self, x_n: Tensor) -> Tensor:
        """(x_n - b_dec) @ W_enc + b_enc, computed as x_n @ W_enc + (b_enc - b_dec @ W_enc) so that the
        backward pass needs no gradient with respect to the (T, d_in) input."""
        return x_n @ self.W_enc + self.encoder_bias()

    def sparse_pre_activations(self, x_n: Tensor, select) -> tuple[Ragged, Tensor, Tensor] | None:
        """The sparse training path shared by the ReLU family: the dense pre-activations without gradient
        (the one dense GEMM every token needs), the entries ``select(pre)`` (an (N, d_sae) bool mask) as a
        ragged code, and their pre-activations re-attached to the graph with a backward that touches only
        them. Returns ``(code, pre_selected, pre)``, or None when the selection is too dense for the sparse
        path to pay (``cfg.decode``: ``auto`` decides from the mean entries per token)."""
        if self.cfg.decode == "dense":
            return None
        # auto: once a check found the selection too dense, the next 9 steps stay dense without looking, so
        # that dense training (e.g. from initialisation, where half the latents are active) does not pay an
        # extra no-grad GEMM every step; both paths compute the same numbers
        if self.cfg.decode == "auto" and int(self.dense_steps_left) > 0:
            self.dense_steps_left.sub_(1)
            return None
        bias = self.encoder_bias()
        with torch.no_grad():
            raw = x_n @ self.W_enc
            pre = raw + bias
            chosen = select(pre)
            mean_entries = -(-int(chosen.sum()) // max(len(pre), 1))
            if self.cfg.decode == "auto" and not self.use_sparse_decode(mean_entries):
                self.dense_steps_left.fill_(9)
                return None
            code = Ragged.from_mask(chosen)
        selected = ragged_scores(x_n, self.W_enc.t(), code, raw[code.rows, code.cols]) + take(bias, code.cols)
        return code, selected, pre

    def sparse_decode(self, values: Tensor, code: Ragged) -> Tensor:
        """x_hat_n = sum over a token's entries of value * W_dec row, + b_dec (embedding_bag)."""
        return ragged_decode(values, code, self.W_dec) + self.b_dec

    def decoder_norms(self) -> Tensor:
        """||W_dec row i|| for every latent."""
        return self.W_dec.norm(dim=1)

    @torch.no_grad()
    def fit_to_data(self, sample: Tensor) -> dict[str, float]:
        """``input_scale`` = sqrt(d / mean ||x||^2) (``scalar``), then b_dec from the normalised sample."""
        x = sample.reshape(-1, self.cfg.d_in).to(self.b_dec.device, torch.float32)
        record = {}
        if self.cfg.input_norm == "scalar":
            mean_sq = float(x.double().pow(2).sum(dim=1).mean())
            self.input_scale.fill_(math.sqrt(self.cfg.d_in / mean_sq) if mean_sq > 0 else 1.0)
            record["input_scale"] = float(self.input_scale)
        x_n, _ = self.normalise(x)
        if self.cfg.b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(x_n).to(self.b_dec.dtype))
        elif self.cfg.b_dec_init == "mean":
            self.b_dec.copy_(x_n.double().mean(0).to(self.b_dec.dtype))
        record["b_dec_norm"] = float(self.b_dec.norm())
        record["normalised_mean_sq_norm"] = float(x_n.double().pow(2).sum(dim=1).mean())
        return record

    @torch.no_grad()
    def constrain_grads(self) -> None:
        """For unit-norm decoders: remove the gradient component parallel to each decoder row."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            self.W_dec.grad -= (self.W_dec.grad * w).sum(dim=1, keepdim=True) * w

    @torch.no_grad()
    def constrain_weights(self) -> None:
        """For unit-norm decoders: renormalise every decoder row to norm 1."""
        if self.unit_norm_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)


def normalise_rows_(w: Tensor) -> Tensor:
    """Scale every row of ``w`` to unit norm in place."""
    with torch.no_grad():
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return w
