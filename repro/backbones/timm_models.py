"""Generic timm backbones: ``timm:<model name>`` with weights from a local file.

``load("timm:<name>", weights="/path/to/file")`` builds the timm model and loads the file through
timm's own pretrained-file path (``pretrained_cfg_overlay={"file": ...}``: the model's checkpoint
filter applies, the load is strict). Without ``weights`` it fails at once with
:class:`BackboneUnavailable` (timm's own download is never attempted).

- EfficientNet-family models → :class:`~repro.backbones.efficientnet.EfficientNetBackbone`
  (hooks ``blocks.{i}.{j}`` and ``head``).
- Models with a flat ``blocks`` stack (ViT and relatives) → :class:`TimmBackbone` with hooks
  ``blocks.{i}`` (block outputs: all tokens, prefix/CLS tokens included) and ``features``
  (``forward_features``, i.e. after the final norm); ``forward_from`` gives the logits.
- Any other model → :class:`TimmBackbone` with the single hook ``features``.

``features_from`` / ``features`` give the pooled pre-classifier features
``forward_head(forward_features(x), pre_logits=True)`` (the model's own pooling and pre-logits norm).

Preprocessing uses the model's pretrained config (mean/std, interpolation, input size); images are
resized with the shorter side to ``image_size`` and centre-cropped (no crop_pct margin).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from repro.backbones.base import (
    BackboneUnavailable,
    TimmImageBackbone,
    frozen,
    library_versions,
    map_from_tokens,
    output_of,
    replaced_output,
    tokens_from_map,
)
from repro.backbones.efficientnet import EfficientNetBackbone


class TimmBackbone(TimmImageBackbone):
    """A timm model with ``forward_features``/``forward_head``; optional flat ``blocks`` hooks.

    :meth:`activations` stops at the hooked block; :meth:`forward_from` at a block replaces that block's
    output and runs ``forward_features`` then ``forward_head`` (the blocks before it are recomputed)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        image_size: int | None = None,
        source: dict | None = None,
        weights_file: str | Path | None = None,
        default_hook: str | None = None,
        device: str | torch.device = "cpu",
    ):
        self.name = name
        self.device = torch.device(device)
        self.model = frozen(model, self.device)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.image_size = int(image_size or cfg.get("input_size", (3, 224, 224))[-1])
        self.interpolation = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        blocks = getattr(model, "blocks", None)
        flat = isinstance(blocks, (nn.Sequential, nn.ModuleList)) and not any(
            isinstance(b, (nn.Sequential, nn.ModuleList)) for b in blocks
        )
        self._blocks = list(blocks) if flat else []
        self.hook_points = tuple(f"blocks.{i}" for i in range(len(self._blocks))) + ("features",)
        default = f"blocks.{len(self._blocks) - 2}" if len(self._blocks) >= 2 else "features"
        self.default_hook = self.check_hook(default_hook or default)
        self._source = source or {}
        self._weight_files = [weights_file] if weights_file else None
        self._shapes: dict[tuple[int, int], dict[str, tuple[int, ...]]] = {}

    def _raw(self, pixels: Tensor, hook: str) -> Tensor:
        if hook == "features":
            return self.model.forward_features(pixels)
        return output_of(self._blocks[int(hook.split(".")[1])], lambda: self.model.forward_features(pixels))

    def _shape(self, hook: str, height: int, width: int) -> tuple[int, ...]:
        """Shape (without batch) of the raw output at ``hook`` for an input size, probed once."""
        table = self._shapes.setdefault((height, width), {})
        if hook not in table:
            with torch.inference_mode():
                x = torch.zeros(1, 3, height, width, device=self.device, dtype=self._dtype())
                table[hook] = tuple(self._raw(x, hook).shape[1:])
        return table[hook]

    def d_model(self, hook: str) -> int:
        shape = self._shape(self.check_hook(hook), self.image_size, self.image_size)
        return int(shape[0] if len(shape) == 3 else shape[-1])

    def spec(self) -> dict:
        return {
            "name": self.name,
            "family": "timm",
            "architecture": type(self.model).__name__,
            "source": self._source,
            "weights_digest": self.weights_digest(),
            "preprocessing": self.preprocessing_spec(),
            "libraries": library_versions("timm"),
        }

    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        raw = self._raw(self._pixels(inputs), hook)
        if raw.ndim == 4:
            acts = tokens_from_map(raw)
        elif raw.ndim == 3:
            acts = raw
        else:
            raise NotImplementedError(f"{self.name}: output of {hook} has shape {tuple(raw.shape)}")
        return acts, torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)

    def _map_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """``forward_features`` output from ``acts`` at ``hook``: the trunk shared by :meth:`_forward_from`
        and :meth:`_features_from` (a block's output is replaced and ``forward_features`` rerun)."""
        pixels = self._pixels(inputs)
        shape = self._shape(hook, *pixels.shape[-2:])
        raw = map_from_tokens(acts, shape[1], shape[2]) if len(shape) == 3 else acts
        if hook == "features":
            return raw
        with replaced_output(self._blocks[int(hook.split(".")[1])], raw):
            return self.model.forward_features(pixels)


def load_timm(
    model_name: str,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
    image_size: int | None = None,
    default_hook: str | None = None,
):
    """``timm:<model_name>`` with pretrained weights from the local file ``weights``."""
    import timm

    if weights is None:
        raise BackboneUnavailable(
            f"timm:{model_name} needs its weights as a local file: load('timm:{model_name}', weights='/path/to/file') "
            f"(.safetensors/.pth/.bin). Nothing is downloaded; on a machine with network e.g. "
            f"`huggingface-cli download timm/{model_name} model.safetensors --local-dir <dir>`."
        )
    path = Path(weights)
    if not path.is_file():
        raise BackboneUnavailable(f"timm:{model_name}: weight file {path} does not exist")
    device = torch.device(device)
    overlay = {"file": str(path), "source": "", "hf_hub_id": None, "url": None}
    model = frozen(timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay), device)
    source = {"timm_model": model_name, "file": path.name}
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if isinstance(model, timm.models.efficientnet.EfficientNet):
        interp = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
        return EfficientNetBackbone(
            model,
            name=f"timm:{model_name}",
            image_size=int(image_size or cfg.get("input_size", (3, 224, 224))[-1]),
            interpolation=interp,
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            source=source,
            weights_file=path,
            default_hook=default_hook or "head",
            device=device,
        )
    return TimmBackbone(
        model,
        name=f"timm:{model_name}",
        image_size=image_size,
        source=source,
        weights_file=path,
        default_hook=default_hook,
        device=device,
    )
