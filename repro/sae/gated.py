"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.sae.base import SAEConfig, register, require_nonnegative
from repro.sae.linear import LinearSAE, mse_per_token


@dataclass(frozen=True)
class GatedConfig(SAEConfig):
    """l1_coefficient: lambda of the L1 penalty on ReLU(pi_gate)."""

    l1_coefficient: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l1_coefficient", self.l1_coefficient)


@register
class GatedSAE(LinearSAE):
    """pi_gate = (x - b_dec) W_gate + b_gate; f_gate = 1[pi_gate > 0];
    pi_mag = (x - b_dec)(W_gate * exp(r_mag)) + b_mag; acts = f_gate * ReLU(pi_mag);
    x_hat = acts W_dec + b_dec; unit-norm decoder rows. ``W_enc`` plays the role of W_gate.

    loss = mean_t ||x - x_hat||^2 + l1_coefficient * mean_t ||ReLU(pi_gate)||_1
           + mean_t ||x - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2   (sg = stop-gradient; the
    auxiliary term trains the gate to reconstruct).
    """

    kind = "gated"
    config_cls = GatedConfig
    init_decoder_norm = 1.0
    unit_norm_decoder = True

    def __init__(self, cfg: GatedConfig):
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def gate_and_magnitude(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pi_gate, pi_mag) for inputs x."""
        h = x @ self.W_enc - self.b_dec @ self.W_enc  # = (x - b_dec) W_enc, with no (tokens x d_in) input gradient
        return h + self.b_enc, h * self.r_mag.exp() + self.b_mag

    def encode(self, x: Tensor) -> Tensor:
        pi_gate, pi_mag = self.gate_and_magnitude(self.check_input(x))
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        acts = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
        x_hat = self.decode(acts)
        mse = mse_per_token(x, x_hat)
        gate_acts = torch.relu(pi_gate)
        l1 = gate_acts.sum(dim=-1).mean()
        aux = mse_per_token(x, gate_acts @ self.W_dec.detach() + self.b_dec.detach())
        loss = mse + self.cfg.l1_coefficient * l1 + aux
        if self.training:
            self.track_firing(acts)
        return loss, self.log_parts(loss, mse, (acts != 0).sum(dim=-1), l1=l1, aux_mse=aux)
