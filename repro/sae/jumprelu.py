"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"): per-latent thresholds trained with a
straight-through estimator (rectangle kernel) and an L0 penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.sae.base import register, require, require_nonnegative, require_positive
from repro.sae.linear import LinearConfig, LinearSAE
from repro.sae.sparse import take


@dataclass(frozen=True)
class JumpReLUConfig(LinearConfig):
    """l0_coefficient: lambda of the L0 penalty, on normalised inputs (with ``input_norm="scalar"``,
    E||x_n||^2 = d; SAELens's default there is 1). bandwidth, init_threshold: the width epsilon of the
    straight-through estimator's rectangle kernel and every latent's initial threshold, as fractions of the
    RMS norm of the normalised inputs (sqrt(E||x_n||^2), measured on the training sample): the JumpReLU
    paper's 1e-3 for both (on inputs of unit mean squared norm) is SAELens's 0.05 at d = 2,304.
    ste_to_input: also pass the estimator's gradient to the pre-activations (so to the encoder), as
    Anthropic does, instead of to the threshold alone (DeepMind's JumpReLU)."""

    l0_coefficient: float = 1.0
    bandwidth: float = 1e-3
    init_threshold: float = 1e-3
    ste_to_input: bool = False

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l0_coefficient", self.l0_coefficient)
        require_positive("bandwidth", self.bandwidth)
        require_positive("init_threshold", self.init_threshold)
        require(isinstance(self.ste_to_input, bool), "ste_to_input", self.ste_to_input, "true or false")


def rectangle(u: Tensor) -> Tensor:
    """K(u) = 1[-1/2 < u < 1/2]."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """y = z * H(z - theta). Gradients: dy/dz = H(z - theta) (plus, with ``ste_to_input``, the estimator's
    (theta / eps) K((z - theta) / eps)); dy/dtheta = -(theta / eps) K((z - theta) / eps) (the pseudo-derivative
    of the straight-through estimator)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float, ste_to_input: bool = False) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth, ctx.ste_to_input = bandwidth, ste_to_input
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        ste = (theta / eps) * rectangle((z - theta) / eps) * grad
        grad_z = grad * (z > theta).to(z.dtype) + (ste if ctx.ste_to_input else 0)
        return grad_z, _sum_to(-ste, theta.shape), None, None


class StepFunction(torch.autograd.Function):
    """y = H(z - theta). Gradients: dy/dtheta = -(1 / eps) K((z - theta) / eps); dy/dz = 0, or with
    ``ste_to_input`` the negation of dy/dtheta (H depends on z only through z - theta)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float, ste_to_input: bool = False) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth, ctx.ste_to_input = bandwidth, ste_to_input
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        ste = (1.0 / ctx.bandwidth) * rectangle((z - theta) / ctx.bandwidth) * grad
        grad_z = ste if ctx.ste_to_input else torch.zeros_like(z)
        return grad_z, _sum_to(-ste, theta.shape), None, None


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (leading dimensions)."""
    return t.reshape(-1, *shape).sum(dim=0) if t.shape != shape else t


@register
class JumpReLUSAE(LinearSAE):
    """z = (x_n - b_dec) W_enc + b_enc; acts = z * H(z - theta) with a trained threshold theta per latent;
    x_hat_n = acts W_dec + b_dec; unit-norm decoder rows (x_n: the normalised input).

    loss = mean_t ||x_n,t - x_hat_n,t||^2 + l0_coefficient * mean_t sum_i H(z_ti - theta_i), with the
    straight-through pseudo-derivatives of :class:`JumpReLUFunction` and :class:`StepFunction`.

    The threshold parameter is raw (not log) and fp32, as SAELens now keeps it (#718, #728): under Adam a
    log-parametrised threshold moves by a factor e^lr per step at most and barely leaves its initialisation.
    It is stored as a fraction of the inputs' RMS norm (see ``__init__``) and projected to >= 0 after every
    step; epsilon is a fraction of the same norm.

    Sparse training path (``cfg.decode``): only the entries that are active or inside the estimator's
    window (|z - theta| < bandwidth / 2) carry a value or a gradient, so only those are gathered with
    gradient and decoded with embedding_bag; exactly the dense computation.
    """

    kind = "jumprelu"
    config_cls = JumpReLUConfig
    init_decoder_norm = 1.0
    unit_norm_decoder = True

    def __init__(self, cfg: JumpReLUConfig):
        super().__init__(cfg)
        # The RMS norm of the normalised inputs, sqrt(E||x_n||^2), measured by fit_to_data (sqrt(d) until
        # then). theta and epsilon are fractions of it, as in the JumpReLU paper (inputs of unit mean squared
        # norm), and so is the trained parameter: Adam moves a parameter by about lr per step, so a threshold
        # stored in E||x_n||^2 = d units would move sqrt(d) times slower relative to the pre-activations
        # than the paper's and barely leave its initialisation in a run of a few thousand steps.
        self.register_buffer("rms_norm", torch.tensor(float(cfg.d_in) ** 0.5))
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.init_threshold), dtype=torch.float32))

    @property
    def bandwidth(self) -> float:
        """epsilon in normalised units: cfg.bandwidth x the RMS norm of the normalised inputs."""
        return self.cfg.bandwidth * float(self.rms_norm)

    def theta(self) -> Tensor:
        """The thresholds in normalised units: the parameter x the RMS norm."""
        return self.threshold * self.rms_norm

    def fit_to_data(self, sample: Tensor) -> dict[str, float]:
        record = super().fit_to_data(sample)
        self.rms_norm.fill_(record["normalised_mean_sq_norm"] ** 0.5)
        return record | {
            "rms_norm": float(self.rms_norm),
            "bandwidth": self.bandwidth,
            "threshold_init": self.cfg.init_threshold * float(self.rms_norm),
        }

    def thresholds(self) -> Tensor:
        return self.theta().detach()

    @torch.no_grad()
    def constrain_weights(self) -> None:
        """Unit-norm decoder rows, and thresholds projected to >= 0 (below zero the gate would pass negative
        pre-activations; SAELens projects the same way)."""
        super().constrain_weights()
        self.threshold.clamp_(min=0.0)

    def encode_normalised(self, x_n: Tensor) -> Tensor:
        return JumpReLUFunction.apply(self.pre_activation(x_n), self.theta(), self.bandwidth)

    def normalised_loss(self, x_n: Tensor, ctx: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        theta, eps, to_input = self.theta(), self.bandwidth, self.cfg.ste_to_input
        with torch.no_grad():
            lo, hi = theta - eps / 2, theta + eps / 2
        sparse = self.sparse_pre_activations(x_n, lambda pre: pre > lo)  # active (z > theta) or in the window
        if sparse is not None:
            code, z, _ = sparse
            theta_e = take(theta, code.cols)
            acts = JumpReLUFunction.apply(z, theta_e, eps, to_input)
            x_hat = self.sparse_decode(acts, code)
            l0_penalty = StepFunction.apply(z, theta_e, eps, to_input).sum() / len(x_n)
            fired = acts.detach() != 0
            l0 = torch.bincount(code.rows[fired], minlength=len(x_n))
            if self.training:
                self.track_fired_latents(code.cols[fired], len(x_n))
            window = float(((z.detach() > lo[code.cols]) & (z.detach() < hi[code.cols])).sum())
        else:
            z = self.pre_activation(x_n)
            acts = JumpReLUFunction.apply(z, theta, eps, to_input)
            x_hat = self.decode_normalised(acts)
            l0_penalty = StepFunction.apply(z, theta, eps, to_input).sum(dim=-1).mean()
            l0 = (acts != 0).sum(dim=-1)
            if self.training:
                self.track_firing(acts)
            window = float(((z.detach() > lo) & (z.detach() < hi)).sum())
        recon, raw_mse = self.reconstruction_terms(x_n, x_hat, ctx)
        penalty = self.cfg.l0_coefficient * l0_penalty
        loss = recon + penalty
        return loss, self.log_parts(
            loss,
            raw_mse,
            l0,
            recon=recon,
            l0_penalty=l0_penalty,
            sparsity_loss=penalty,
            threshold_mean=theta.detach().mean(),
            window_fraction=torch.tensor(window / (len(x_n) * self.cfg.d_sae)),
        )
