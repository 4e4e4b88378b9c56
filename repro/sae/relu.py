"""ReLU SAE with the decoder-norm-weighted L1 penalty (Anthropic, April 2024 update)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from repro.sae.base import SAEConfig, register, require_nonnegative
from repro.sae.linear import LinearSAE, mse_per_token


@dataclass(frozen=True)
class ReLUConfig(SAEConfig):
    """l1_coefficient: lambda of the penalty lambda * sum_i a_i * ||W_dec row i|| (the paper's
    ReLU-family sparsity weight is 1e-3)."""

    l1_coefficient: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l1_coefficient", self.l1_coefficient)


@register
class ReLUSAE(LinearSAE):
    """acts = ReLU((x - b_dec) W_enc + b_enc); x_hat = acts W_dec + b_dec.

    loss = mean_t ||x_t - x_hat_t||^2 + l1_coefficient * mean_t sum_i a_ti ||W_dec,i||.
    Decoder norms are free (the penalty weights each activation by its decoder norm).
    """

    kind = "relu"
    config_cls = ReLUConfig

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.pre_activation(self.check_input(x)))

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        acts = self.encode(x)
        x_hat = self.decode(acts)
        mse = mse_per_token(x, x_hat)
        l1 = (acts * self.decoder_norms()).sum(dim=-1).mean()
        loss = mse + self.cfg.l1_coefficient * l1
        if self.training:
            self.track_firing(acts)
        return loss, self.log_parts(loss, mse, (acts != 0).sum(dim=-1), l1=l1)
