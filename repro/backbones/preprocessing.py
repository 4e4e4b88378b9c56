"""Preprocessing shared by the backbone families: images to normalised ``(N, 3, S, S)`` pixel tensors
(:func:`preprocess_images`, what :meth:`repro.backbones.base.ImageBackbone.preprocess` runs), and whether a
tokenizer puts its BOS token first (:func:`tokenizer_has_bos`, for ``TextBackbone.prepend_bos``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _as_channels_last(img: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1/3/4 → float32 (H, W, 3)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {img.shape}")
    img = img[..., :3].astype(np.float32, copy=False)
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def _resize_crop(x: Tensor, size: int, interpolation: str) -> Tensor:
    """(N, 3, H, W) float in [0, 255] → (N, 3, size, size): shorter side to ``size``, centre crop."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(
            x, size=(nh, nw), mode=interpolation, align_corners=False, antialias=True
        ).clamp_(0.0, 255.0)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top : top + size, left : left + size]


def preprocess_images(
    examples: Any, size: int, interpolation: str, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """See :meth:`ImageBackbone.preprocess`."""
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
    if isinstance(examples, Tensor):
        examples = examples.detach().cpu().numpy()
    if hasattr(examples, "convert") and hasattr(examples, "size"):  # a single PIL image
        examples = [examples]
    if isinstance(examples, np.ndarray):
        if examples.ndim == 3:
            examples = examples[..., None]
        if examples.ndim != 4 or examples.shape[-1] not in (1, 3, 4):
            raise ValueError("an image array must be (N, H, W) or (N, H, W, 3); got shape " + str(examples.shape))
        batch = torch.from_numpy(np.ascontiguousarray(examples[..., :3], dtype=np.float32)).permute(0, 3, 1, 2)
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        batch = _resize_crop(batch, size, interpolation)
    else:
        images = []
        for img in examples:
            if hasattr(img, "convert"):  # PIL
                img = np.asarray(img.convert("RGB"))
            arr = torch.from_numpy(np.ascontiguousarray(_as_channels_last(img))).permute(2, 0, 1)[None]
            images.append(_resize_crop(arr, size, interpolation))
        if not images:
            raise ValueError("no images given")
        batch = torch.cat(images)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((batch / 255.0 - mean_t) / std_t).contiguous()


def tokenizer_has_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` itself puts its BOS token first."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
