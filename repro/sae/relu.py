"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, April 2024 update)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from repro.sae.base import register, require_nonnegative
from repro.sae.linear import LinearConfig, LinearSAE
from repro.sae.sparse import take


@dataclass(frozen=True)
class ReLUConfig(LinearConfig):
    """l1_coefficient: lambda of the penalty lambda * sum_i a_i * ||W_dec row i||, on normalised inputs
    (with ``input_norm="scalar"``, E||x_n||^2 = d; Anthropic's April 2024 update uses lambda ~ 5 there)."""

    l1_coefficient: float = 5.0

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l1_coefficient", self.l1_coefficient)


@register
class ReLUSAE(LinearSAE):
    """acts = ReLU((x_n - b_dec) W_enc + b_enc); x_hat_n = acts W_dec + b_dec (x_n: normalised input).

    loss = mean_t ||x_n - x_hat_n||^2 + l1_coefficient * mean_t sum_i a_ti ||W_dec,i||.
    Decoder norms are free (the penalty weights each activation by its decoder norm).

    Sparse training path (chosen per step when few latents are active, ``cfg.decode``): the dense
    pre-activations without gradient, the active entries re-attached with a sparse backward and decoded
    with embedding_bag; exactly the dense computation, without its (tokens x d_sae) gradients.
    """

    kind = "relu"
    config_cls = ReLUConfig

    def encode_normalised(self, x_n: Tensor) -> Tensor:
        return torch.relu(self.pre_activation(x_n))

    def normalised_loss(self, x_n: Tensor, ctx: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        sparse = self.sparse_pre_activations(x_n, lambda pre: pre > 0)
        if sparse is not None:
            code, pre_sel, _ = sparse
            vals = torch.relu(pre_sel)
            x_hat = self.sparse_decode(vals, code)
            l1 = (vals * take(self.decoder_norms(), code.cols)).sum() / len(x_n)
            l0 = code.counts
            if self.training:
                self.track_fired_latents(code.cols, len(x_n))
        else:
            acts = self.encode_normalised(x_n)
            x_hat = self.decode_normalised(acts)
            l1 = (acts * self.decoder_norms()).sum(dim=-1).mean()
            l0 = (acts != 0).sum(dim=-1)
            if self.training:
                self.track_firing(acts)
        recon, raw_mse = self.reconstruction_terms(x_n, x_hat, ctx)
        penalty = self.cfg.l1_coefficient * l1
        loss = recon + penalty
        return loss, self.log_parts(loss, raw_mse, l0, recon=recon, l1=l1, sparsity_loss=penalty)
