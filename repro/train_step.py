"""One optimiser step of :func:`repro.train.train` (:func:`_step`: the lr of the schedule, finiteness checks
of the batch, the loss and the gradients, gradient-norm clipping) and the sample of the first training batches
given to the SAE's data-dependent initialisation (:func:`_training_sample`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch
from torch import Tensor

from repro.sae.base import SAE
from repro.train_config import TrainConfig, lr_factor


class NonFiniteError(FloatingPointError):
    """A NaN or inf in a batch, the loss or a gradient; the message names the step and the tensor."""


def _training_sample(batches: Iterable[Tensor], n_tokens: int, d_in: int) -> tuple[Tensor, int, Iterable[Tensor]]:
    """``(sample, tokens_per_step, batches)``: the first training batches flattened to tokens, up to
    ``n_tokens`` rows, the token count of the first batch, and the batch sequence to train on (the same
    batches, read once: those taken for the sample come first)."""
    it = iter(batches)
    taken, rows, have = [], [], 0
    for batch in it:
        taken.append(batch)
        if not torch.is_floating_point(batch) or not bool(torch.isfinite(batch).all()):
            break  # the step that trains on it reports the bad batch; the sample stops before it
        flat = batch.reshape(-1, batch.shape[-1])
        rows.append(flat[: n_tokens - have].detach().float().cpu())
        have += len(rows[-1])
        if have >= n_tokens:
            break
    if not taken:
        raise ValueError("the training data is empty")
    if not rows:
        bad = taken[0]
        if not torch.is_floating_point(bad):
            raise ValueError(f"step 1: the batch has dtype {bad.dtype}; a floating-point tensor is needed")
        raise NonFiniteError("step 1: the input batch contains NaN or inf")
    if rows[0].shape[-1] != d_in:
        raise ValueError(f"the batches have width {rows[0].shape[-1]}, the SAE expects d_in={d_in}")
    return torch.cat(rows), len(taken[0].reshape(-1, d_in)), itertools.chain(taken, it)


def _step(
    sae: SAE, optimizer: torch.optim.Optimizer, names: dict[str, Tensor], batch: Tensor, step: int, cfg: TrainConfig
) -> dict[str, float]:
    """One optimiser step with finiteness checks and gradient-norm clipping; returns the loss parts (with
    ``grad_norm``, the global norm before clipping)."""
    if not torch.is_floating_point(batch):
        raise ValueError(f"step {step + 1}: the batch has dtype {batch.dtype}; a floating-point tensor is needed")
    if not bool(torch.isfinite(batch).all()):
        raise NonFiniteError(f"step {step + 1}: the input batch contains NaN or inf")
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss, parts = sae.loss(batch)
    bad = [k for k, v in parts.items() if not math.isfinite(v)]
    if not bool(torch.isfinite(loss)) or bad:
        raise NonFiniteError(f"step {step + 1}: the loss is not finite (non-finite parts: {', '.join(bad) or 'loss'})")
    loss.backward()
    sae.constrain_grads()
    # one pass over the gradients gives both the finiteness check and the norm for clipping: a parameter's
    # norm (float64, no overflow) is finite exactly when its gradient holds no NaN or inf
    with_grad = [(name, p) for name, p in names.items() if p.grad is not None]
    norms = [torch.linalg.vector_norm(p.grad, dtype=torch.float64) for _, p in with_grad]
    norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else None
    if norm is not None and not bool(torch.isfinite(norm)):
        bad = next(name for (name, _), n in zip(with_grad, norms, strict=True) if not bool(torch.isfinite(n)))
        raise NonFiniteError(f"step {step + 1}: the gradient of parameter {bad} contains NaN or inf")
    if norm is not None and cfg.grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_([p for _, p in with_grad], cfg.grad_clip, norm.float())
    optimizer.step()
    sae.constrain_weights()
    parts["grad_norm"] = float(norm) if norm is not None else 0.0
    return parts
