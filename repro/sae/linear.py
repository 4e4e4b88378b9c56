"""The common parametrisation of the classic SAEs: x_hat = acts @ W_dec + b_dec, with an encoder
pre-activation (x - b_dec) @ W_enc + b_enc. ReLU, TopK, BatchTopK and JumpReLU build on it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from repro.sae.base import SAE, SAEConfig
from repro.sae.sparse import decode_matrix


def mse_per_token(x: Tensor, x_hat: Tensor) -> Tensor:
    """mean over tokens of ||x - x_hat||^2 (sum over dimensions)."""
    return (x_hat - x).pow(2).sum(dim=-1).mean()


class LinearSAE(SAE):
    """W_enc ``(d_in, d_sae)``, b_enc ``(d_sae,)``, W_dec ``(d_sae, d_in)``, b_dec ``(d_in,)``.

    Initialisation (Anthropic, April 2024 update; also Gao et al. 2024): decoder rows are random unit
    directions times ``init_decoder_norm``, W_enc = W_dec^T, biases zero.
    """

    init_decoder_norm: float = 0.1
    unit_norm_decoder: bool = False

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        g = self.init_generator()
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
        w_dec *= self.init_decoder_norm / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def pre_activation(self, x: Tensor) -> Tensor:
        """(x - b_dec) @ W_enc + b_enc, computed as x @ W_enc + (b_enc - b_dec @ W_enc) so that the
        backward pass needs no gradient with respect to the (T, d_in) input."""
        return x @ self.W_enc + (self.b_enc - self.b_dec @ self.W_enc)

    def decode(self, acts: Tensor, x_norm: Tensor | None = None) -> Tensor:
        """acts @ W_dec + b_dec (sparse or dense product, per ``cfg.decode``)."""
        max_l0 = int((acts != 0).sum(dim=-1).max()) if acts.numel() else 0
        return decode_matrix(acts, self.W_dec, self.use_sparse_decode(max_l0)) + self.b_dec

    def decoder_norms(self) -> Tensor:
        """||W_dec row i|| for every latent."""
        return self.W_dec.norm(dim=1)

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
