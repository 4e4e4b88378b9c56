"""Run a backbone with an SAE reconstruction spliced in at a hook point.

``splice_acts`` replaces the hook activations of the counted tokens (the backbone's mask: no special,
BOS or padding tokens) by the SAE's reconstruction, optionally after a per-latent scale (masking or
steering); the other positions keep their clean activations. ``run_spliced`` then finishes the forward
pass with ``backbone.forward_from``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def splice_acts(sae, acts: Tensor, mask: Tensor, latent_scale: Tensor | None = None) -> Tensor:
    """``acts`` (B, T, d) with the positions where ``mask`` (B, T) is True replaced by ``sae``'s
    reconstruction (``sae(x, latent_scale)[0]``); ``sae=None`` means zero ablation of those positions."""
    out = acts.clone()
    if sae is None:
        out[mask] = 0
        return out
    x = acts[mask]
    x_hat, _ = sae(x) if latent_scale is None else sae(x, latent_scale=latent_scale)
    out[mask] = x_hat.to(out.dtype)
    return out


@torch.no_grad()
def run_spliced(backbone, inputs: dict, hook: str, sae, latent_scale: Tensor | None = None) -> Tensor:
    """The backbone's output with ``sae`` spliced in at ``hook`` (``sae=None``: zero ablation)."""
    acts, mask = backbone.activations(inputs, hook)
    return backbone.forward_from(hook, splice_acts(sae, acts, mask, latent_scale), inputs)
