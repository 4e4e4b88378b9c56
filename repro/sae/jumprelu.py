"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"): per-latent thresholds trained with a
straight-through estimator (rectangle kernel) and an L0 penalty."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.sae.base import SAEConfig, register, require_nonnegative, require_positive
from repro.sae.linear import LinearSAE, mse_per_token


@dataclass(frozen=True)
class JumpReLUConfig(SAEConfig):
    """l0_coefficient: lambda of the L0 penalty. bandwidth: width epsilon of the rectangle kernel of the
    straight-through estimator. init_threshold: initial theta for every latent."""

    l0_coefficient: float = 1e-3
    bandwidth: float = 1e-3
    init_threshold: float = 1e-3

    def validate(self) -> None:
        super().validate()
        require_nonnegative("l0_coefficient", self.l0_coefficient)
        require_positive("bandwidth", self.bandwidth)
        require_positive("init_threshold", self.init_threshold)


def rectangle(u: Tensor) -> Tensor:
    """K(u) = 1[-1/2 < u < 1/2]."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """y = z * H(z - theta). Gradients: dy/dz = H(z - theta); dy/dtheta = -(theta / eps) K((z - theta) / eps)
    (the pseudo-derivative of the straight-through estimator)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > theta).to(z.dtype)
        grad_theta = -(theta / eps) * rectangle((z - theta) / eps) * grad
        return grad_z, _sum_to(grad_theta, theta.shape), None


class StepFunction(torch.autograd.Function):
    """y = H(z - theta). Gradients: dy/dz = 0; dy/dtheta = -(1 / eps) K((z - theta) / eps)."""

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * rectangle((z - theta) / eps) * grad
        return torch.zeros_like(z), _sum_to(grad_theta, theta.shape), None


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (leading dimensions)."""
    return t.reshape(-1, *shape).sum(dim=0) if t.shape != shape else t


@register
class JumpReLUSAE(LinearSAE):
    """z = (x - b_dec) W_enc + b_enc; acts = z * H(z - theta), theta = exp(log_threshold) per latent;
    x_hat = acts W_dec + b_dec; unit-norm decoder rows.

    loss = mean_t ||x_t - x_hat_t||^2 + l0_coefficient * mean_t sum_i H(z_ti - theta_i), with the
    straight-through pseudo-derivatives of :class:`JumpReLUFunction` and :class:`StepFunction`.
    """

    kind = "jumprelu"
    config_cls = JumpReLUConfig
    init_decoder_norm = 1.0
    unit_norm_decoder = True

    def __init__(self, cfg: JumpReLUConfig):
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.init_threshold)))

    def threshold(self) -> Tensor:
        """theta = exp(log_threshold)."""
        return self.log_threshold.exp()

    def encode(self, x: Tensor) -> Tensor:
        z = self.pre_activation(self.check_input(x))
        return JumpReLUFunction.apply(z, self.threshold(), self.cfg.bandwidth)

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        x = self.check_input(x).reshape(-1, self.cfg.d_in)
        z = self.pre_activation(x)
        theta = self.threshold()
        acts = JumpReLUFunction.apply(z, theta, self.cfg.bandwidth)
        x_hat = self.decode(acts)
        mse = mse_per_token(x, x_hat)
        l0_penalty = StepFunction.apply(z, theta, self.cfg.bandwidth).sum(dim=-1).mean()
        loss = mse + self.cfg.l0_coefficient * l0_penalty
        if self.training:
            self.track_firing(acts)
        return loss, self.log_parts(loss, mse, (acts != 0).sum(dim=-1), l0_penalty=l0_penalty)
