"""CLIP vision towers with the text tower for zero-shot heads; registers ``clip-vit-b16`` (paper scale).

``clip-vit-b16`` is ``openai/clip-vit-base-patch16`` as ``CLIPModel``, from a local Hugging Face cache
only (:class:`BackboneUnavailable` at once when it is not cached). Hook points ``vision.layers.{l}`` =
output of ``vision_model.encoder.layers[l]`` (= vision ``hidden_states[l + 1]``), all 197 tokens at
224 px (CLS first, then 14×14 patches in row-major order); default ``vision.layers.10`` =
``layers[-2]``, as in the paper's official code.

:meth:`ClipBackbone.forward_from` runs the remaining layers, ``post_layernorm`` on the CLS token and
``visual_projection``, and returns L2-normalised image features ``(B, 512)``; zero-shot logits are
:meth:`ClipBackbone.zero_shot_logits` of those and :meth:`ClipBackbone.text_features` of the class
prompts, or of :meth:`ClipBackbone.zero_shot_weights` (OpenAI's prompt ensemble: the 80 ImageNet
templates of :mod:`repro.backbones.clip_templates`, averaged per class). ``features_from`` /
``features`` are those same normalised image features ``(B, 512)`` (CLIP has no other head).
Preprocessing follows CLIP's: shorter side to 224 (bicubic; antialiased torch resize, close to but not
bit-equal to PIL's), centre crop, CLIP mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from repro.backbones.base import (
    ImageBackbone,
    frozen,
    library_versions,
    output_of,
    run_layers_from,
    shared,
)
from repro.backbones.clip_templates import IMAGENET_TEMPLATES
from repro.backbones.hf import hf_source, hf_weight_files, load_hf

CLIP_ID = "openai/clip-vit-base-patch16"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipBackbone(ImageBackbone):
    """A transformers ``CLIPModel``; ``tokenizer`` is only needed for :meth:`text_features`."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        *,
        name: str,
        image_size: int | None = None,
        default_hook: str | None = None,
        source: dict | None = None,
        weight_files: list[Path] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.name = name
        self.device = torch.device(device)
        self.model = frozen(model, self.device)
        self.tokenizer = tokenizer
        self._vision = model.vision_model
        self._layers = self._vision.encoder.layers
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.interpolation = "bicubic"
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        n = len(self._layers)
        self.hook_points = tuple(f"vision.layers.{i}" for i in range(n))
        self.default_hook = self.check_hook(default_hook or f"vision.layers.{n - 2}")
        self._source = source or {}
        self._weight_files = weight_files

    def d_model(self, hook: str) -> int:
        self.check_hook(hook)
        return int(self.model.config.vision_config.hidden_size)

    def n_tokens(self, hook: str | None = None) -> int:
        """Tokens per image (CLS + patches) at the model's own resolution."""
        cfg = self.model.config.vision_config
        return (cfg.image_size // cfg.patch_size) ** 2 + 1

    def spec(self) -> dict:
        return {
            "name": self.name,
            "family": "clip",
            "source": self._source,
            "weights_digest": self.weights_digest(),
            "preprocessing": self.preprocessing_spec(),
            "libraries": library_versions("transformers"),
        }

    def _run(self, inputs: dict[str, Tensor]):
        pixels = inputs["pixel_values"].to(self.device, self._dtype())
        return lambda: self._vision(pixel_values=pixels)

    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        acts = output_of(self._layers[int(hook.rsplit(".", 1)[1])], self._run(inputs))
        return acts, torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)

    def _image_features(self, last_hidden: Tensor) -> Tensor:
        pooled = self._vision.post_layernorm(last_hidden[:, 0, :])
        return nn.functional.normalize(self.model.visual_projection(pooled), dim=-1)

    def _forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        hidden = run_layers_from(self._layers, int(hook.rsplit(".", 1)[1]) + 1, acts, self._run(inputs))
        return self._image_features(hidden)

    def _features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return self._forward_from(hook, acts, inputs)  # the output already is the pooled, projected feature

    def _forward(self, inputs: dict[str, Tensor]) -> Tensor:
        pixels = inputs["pixel_values"].to(self.device, self._dtype())
        return nn.functional.normalize(self.model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)

    def _features(self, inputs: dict[str, Tensor]) -> Tensor:
        return self._forward(inputs)

    def text_features(self, prompts: list[str]) -> Tensor:
        """Projected, L2-normalised text features ``(N, 512)`` of ``prompts`` (the zero-shot head)."""
        if self.tokenizer is None:
            raise RuntimeError(f"{self.name} was built without a tokenizer")
        enc = self.tokenizer(list(prompts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            feats = self.model.get_text_features(**enc).pooler_output
        return nn.functional.normalize(feats.float(), dim=-1)

    def zero_shot_weights(
        self,
        class_names: Sequence[str],
        templates: Sequence[str] = IMAGENET_TEMPLATES,
        renormalise: bool = True,
        batch_size: int = 256,
    ) -> Tensor:
        """Zero-shot classifier weights ``(n_classes, 512)`` by prompt ensembling: per class, the
        :meth:`text_features` (each L2-normalised) of every ``template.format(name)``, averaged over the
        templates, and with ``renormalise`` the mean L2-normalised again. ``renormalise=True`` (default) is
        ``zeroshot_classifier`` of OpenAI's Prompt_Engineering_for_ImageNet notebook, which divides the
        mean by its norm (``class_embedding /= class_embedding.norm()``); ``renormalise=False`` keeps the
        plain mean, whose norm is below 1 when the templates' features differ. Feed the weights to
        :meth:`zero_shot_logits` as ``text_features``. Prompts are encoded ``batch_size`` at a time."""
        if isinstance(class_names, str) or isinstance(templates, str):
            raise TypeError("class_names and templates must be sequences of strings, not a string")
        names, templates = list(class_names), list(templates)
        if not names or not templates:
            raise ValueError("zero_shot_weights needs at least one class name and one template")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        prompts = [template.format(name) for name in names for template in templates]
        feats = torch.cat([self.text_features(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)])
        weights = feats.view(len(names), len(templates), -1).mean(1)
        return nn.functional.normalize(weights, dim=-1) if renormalise else weights

    def zero_shot_logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """CLIP's logits ``exp(logit_scale) · img @ txtᵀ`` ``(B, n_classes)`` from normalised features."""
        scale = self.model.logit_scale.detach().exp().to(image_features.device)
        return scale * image_features @ text_features.to(image_features.device).T


def load_clip_vit_b16(
    device: str | torch.device = "cpu",
    model_id: str = CLIP_ID,
    cache_dir: str | None = None,
    default_hook: str | None = None,
) -> ClipBackbone:
    """``openai/clip-vit-base-patch16`` from the local Hugging Face cache (never downloaded)."""
    from transformers import AutoTokenizer, CLIPModel

    device = torch.device(device)

    def build():
        model = load_hf(CLIPModel, model_id, cache_dir=cache_dir, dtype=torch.float32)
        tokenizer = load_hf(AutoTokenizer, model_id, cache_dir=cache_dir)
        return frozen(model, str(device)), tokenizer

    model, tokenizer = shared(("clip", model_id, cache_dir, str(device)), build)
    return ClipBackbone(
        model,
        tokenizer,
        name="clip-vit-b16",
        default_hook=default_hook,
        source=hf_source(model_id, cache_dir),
        weight_files=hf_weight_files(model_id, cache_dir),
        device=device,
    )
