"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.sae.base import register, require_nonnegative
from repro.sae.linear import LinearConfig, LinearSAE, mse_per_token
from repro.sae.sparse import ragged_decode, take


@dataclass(frozen=True)
class GatedConfig(LinearConfig):
    """l1_coefficient: lambda of the L1 penalty on ReLU(pi_gate), on normalised inputs."""

    l1_coefficient: float = 5.0

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l1_coefficient", self.l1_coefficient)


@register
class GatedSAE(LinearSAE):
    """h = (x_n - b_dec) W_gate; pi_gate = h + b_gate; f_gate = 1[pi_gate > 0];
    pi_mag = h * exp(r_mag) + b_mag; acts = f_gate * ReLU(pi_mag);
    x_hat_n = acts W_dec + b_dec; unit-norm decoder rows. ``W_enc`` plays the role of W_gate, ``b_enc`` of
    b_gate (x_n: the normalised input).

    loss = mean_t ||x_n - x_hat_n||^2 + l1_coefficient * mean_t ||ReLU(pi_gate)||_1
           + mean_t ||x_n - (ReLU(pi_gate) sg(W_dec) + sg(b_dec))||^2   (sg = stop-gradient; the
    auxiliary term trains the gate to reconstruct, which the step function 1[pi_gate > 0] cannot).
    This gate, penalised and trained through its own reconstruction, is what distinguishes it from
    JumpReLU (whose threshold is trained through a straight-through estimator of the L0).

    Sparse training path (``cfg.decode``): only the open gates (pi_gate > 0) carry values and gradients
    of all three terms, so only those are gathered with gradient and decoded with embedding_bag.
    """

    kind = "gated"
    config_cls = GatedConfig
    init_decoder_norm = 1.0
    unit_norm_decoder = True

    def __init__(self, cfg: GatedConfig):
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def gate_and_magnitude(self, x_n: Tensor) -> tuple[Tensor, Tensor]:
        """(pi_gate, pi_mag) for normalised inputs x_n."""
        h = x_n @ self.W_enc - self.b_dec @ self.W_enc  # = (x_n - b_dec) W_enc, no (tokens x d_in) input gradient
        return h + self.b_enc, h * self.r_mag.exp() + self.b_mag

    def encode_normalised(self, x_n: Tensor) -> Tensor:
        pi_gate, pi_mag = self.gate_and_magnitude(x_n)
        return (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)

    def normalised_loss(self, x_n: Tensor, ctx: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        sparse = self.sparse_pre_activations(x_n, lambda pre: pre > 0)  # pre = pi_gate: the open gates
        if sparse is not None:
            code, pi_gate, _ = sparse
            h = pi_gate - take(self.b_enc, code.cols)
            acts = torch.relu(h * take(self.r_mag.exp(), code.cols) + take(self.b_mag, code.cols))
            x_hat = self.sparse_decode(acts, code)
            gate_acts = torch.relu(pi_gate)
            l1 = gate_acts.sum() / len(x_n)
            gate_recon = ragged_decode(gate_acts, code, self.W_dec.detach()) + self.b_dec.detach()
            fired = acts.detach() != 0
            l0 = torch.bincount(code.rows[fired], minlength=len(x_n))
            if self.training:
                self.track_fired_latents(code.cols[fired], len(x_n))
        else:
            pi_gate, pi_mag = self.gate_and_magnitude(x_n)
            acts = (pi_gate > 0).to(pi_mag.dtype) * torch.relu(pi_mag)
            x_hat = self.decode_normalised(acts)
            gate_acts = torch.relu(pi_gate)
            l1 = gate_acts.sum(dim=-1).mean()
            gate_recon = gate_acts @ self.W_dec.detach() + self.b_dec.detach()
            l0 = (acts != 0).sum(dim=-1)
            if self.training:
                self.track_firing(acts)
        recon, raw_mse = self.reconstruction_terms(x_n, x_hat, ctx)
        aux = mse_per_token(x_n, gate_recon)
        penalty = self.cfg.l1_coefficient * l1
        loss = recon + penalty + aux
        return loss, self.log_parts(loss, raw_mse, l0, recon=recon, l1=l1, aux_mse=aux, sparsity_loss=penalty)
