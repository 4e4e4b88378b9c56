"""The :class:`Backbone` interface, its image and text bases, and the helpers shared by the backbone families
(kept in :mod:`repro.backbones.hooks`, :mod:`repro.backbones.preprocessing` and :mod:`repro.backbones.digests`,
and re-exported here, where the families import them from).

A backbone turns raw examples into model inputs (:meth:`Backbone.preprocess`), reads activations at a
named hook point (:meth:`Backbone.activations`, stopping the forward pass there), and runs the rest of
the network from a hook point on given, possibly modified, activations (:meth:`Backbone.forward_from`).
``forward_from(hook, activations(inputs, hook)[0], inputs)`` equals the plain forward pass.
:meth:`Backbone.features_from` / :meth:`Backbone.features` give instead the pooled final features
``(B, D)`` (the input of a linear classification head; see :meth:`Backbone.features` for what they are
per family), computed by the same code as ``forward_from`` up to the head.

Shapes: activations are ``(B, T, d)`` float32 with a bool mask ``(B, T)`` that is True for the tokens
that count (text: real tokens without special tokens and padding; images: every spatial position or
every ViT token). Nothing here sets global state (threads, seeds, environment, logging). The
temporary hooks used to stop or splice a forward pass act only in the thread that set them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from repro.backbones.digests import (
    clear_shared,
    file_digest,
    files_digest,
    frozen,
    library_versions,
    shared,
    state_dict_digest,
    version,
)
from repro.backbones.hooks import (
    call_of,
    map_from_tokens,
    masked_mean,
    output_of,
    replaced_input,
    replaced_output,
    run_layers_from,
    tokens_from_map,
)
from repro.backbones.preprocessing import preprocess_images, tokenizer_has_bos
from repro.backbones.token_filter import TokenFilter

__all__ = [
    "MODEL_INPUT_KEYS",
    "Backbone",
    "BackboneUnavailable",
    "ImageBackbone",
    "TextBackbone",
    "TimmImageBackbone",
    "call_of",
    "clear_shared",
    "file_digest",
    "frozen",
    "library_versions",
    "map_from_tokens",
    "masked_mean",
    "output_of",
    "replaced_input",
    "replaced_output",
    "run_layers_from",
    "shared",
    "tokenizer_has_bos",
    "tokens_from_map",
    "version",
]

# Keys of a text ``inputs`` dict that are passed to a Hugging Face model; the others (``token_mask``)
# are ours.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class BackboneUnavailable(RuntimeError):
    """The weights (or a package) needed by a backbone are not available locally. The message names
    what is missing and how to provide it; nothing is downloaded."""


class Backbone(abc.ABC):
    """A frozen pretrained network with named hook points (see the module docstring)."""

    name: str
    modality: str  # "image" or "text"
    hook_points: tuple[str, ...]
    default_hook: str
    model: nn.Module
    device: torch.device
    #: which counted tokens :meth:`activations` passes on (repro.backbones.token_filter); set by whoever
    #: extracts or evaluates, from the cache's spec
    token_filter: TokenFilter = TokenFilter()

    # ----------------------------------------------------------------------------- to implement
    @abc.abstractmethod
    def d_model(self, hook: str) -> int:
        """Width ``d`` of the activations at ``hook``."""

    @abc.abstractmethod
    def spec(self) -> dict:
        """JSON-serialisable identity (name, source, weights digest, preprocessing) for cache keys."""

    @abc.abstractmethod
    def preprocess(self, examples: Any) -> dict[str, Tensor]:
        """Raw examples (images or texts) to a dict of CPU tensors, the ``inputs`` of the other methods."""

    @abc.abstractmethod
    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        """(acts, mask) at a valid hook, computed under inference mode."""

    @abc.abstractmethod
    def _forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """The rest of the network from a valid hook on ``acts`` (already on the device, model dtype)."""

    @abc.abstractmethod
    def _forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """The plain forward pass (the model's own ``forward``), same output as :meth:`forward_from`."""

    def _features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """Pooled final features ``(B, D)`` from a valid hook on ``acts`` (already on the device, model
        dtype); a family shares the trunk with :meth:`_forward_from` and swaps the head for pooling."""
        raise NotImplementedError(f"backbone {self.name!r} ({type(self).__name__}) has no pooled final features")

    def _features(self, inputs: dict[str, Tensor]) -> Tensor:
        """Pooled final features of the clean forward pass. Families override this with the model's own
        path (as :meth:`_forward` is), so that comparing it with :meth:`_features_from` checks the latter."""
        hook = self.default_hook
        return self._features_from(hook, self._activations(inputs, hook)[0], inputs)

    # ----------------------------------------------------------------------------- public API
    def check_hook(self, hook: str | None) -> str:
        """``hook`` (or :attr:`default_hook` for None) if valid, else ValueError listing the valid ones."""
        if hook is None:
            return self.default_hook
        if hook not in self.hook_points:
            raise ValueError(
                f"unknown hook point {hook!r} for backbone {self.name!r}; valid hook points: "
                + ", ".join(self.hook_points)
            )
        return hook

    def activations(
        self, inputs: dict[str, Tensor], hook: str | None = None, *, filtered: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Activations at ``hook`` (default :attr:`default_hook`): float32 ``(B, T, d)`` and the bool
        token mask ``(B, T)`` of the tokens an SAE sees, both on :attr:`device`: the backbone's counted
        tokens (no special tokens or padding) minus those :attr:`token_filter` drops (``filtered=False``:
        the counted tokens only). Layers after the hook are not computed."""
        hook = self.check_hook(hook)
        with torch.inference_mode():
            acts, mask = self._activations(inputs, hook)
        acts, mask = acts.float(), mask.bool()
        return acts, (self.token_filter.apply(acts, mask) if filtered else mask)

    def forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """The model's output computed from activations ``acts`` ``(B, T, d)`` at ``hook``; ``inputs`` are
        the preprocessed inputs the activations came from (attention masks and the like are read from
        them). Runs under inference mode unless ``acts`` requires grad (then gradients reach ``acts``;
        the weights stay frozen)."""
        return self._run_from(self._forward_from, hook, acts, inputs)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """The plain full forward pass (same output as :meth:`forward_from`)."""
        with torch.inference_mode():
            return self._forward(inputs).float()

    def features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """The pooled final features (see :meth:`features`) computed from activations ``acts``
        ``(B, T, d)`` at ``hook``: float32 ``(B, D)``. Same arguments, checks and inference-mode /
        gradient handling as :meth:`forward_from`, whose code it shares up to the head."""
        return self._pooled(self._run_from(self._features_from, hook, acts, inputs))

    def features_from_cached(self, hook: str, acts: Tensor) -> Tensor | None:
        """:meth:`features_from` on activations ``acts`` ``(B, T, d)`` of whole examples read back from a
        cache, without the inputs they came from; None (the default) when the rest of the network needs
        more of the input than its activations at ``hook`` (attention masks, or a model whose tail
        reruns from pixels)."""
        return None

    def features(self, inputs: dict[str, Tensor]) -> Tensor:
        """Pooled final features of the clean forward pass, float32 ``(B, D)``: what a linear
        classification head on top of the backbone reads; equals
        ``features_from(hook, activations(inputs, hook)[0], inputs)`` for every hook.

        Per family (``D`` is ``features(...).shape[-1]``):

        - EfficientNet (timm), ``effnet-lite0``: the globally average-pooled map after
          ``conv_head``/``bn2``/act, before the classifier (``forward_head(x, pre_logits=True)``); 1280-d for
          Lite0. ``model.get_classifier()(features)`` are the logits.
        - other timm models: ``forward_head(forward_features(x), pre_logits=True)`` (the model's own pooling
          and pre-logits norm, before the classifier; ``embed_dim`` for a ViT).
        - BERT encoders, ``minilm-l6``: final-layer hidden states mean-pooled over the token mask that
          :meth:`activations` returns ([CLS], [SEP] and padding excluded; not the attention mask that
          :meth:`~repro.backbones.bert.BertBackbone.embed` uses), not normalised; 384-d.
        - causal LMs, ``smollm2-135m`` / ``gpt2-small``: final-norm hidden states (the LM head's input)
          mean-pooled over the token mask (BOS and padding excluded); 576-d / 768-d.
        - CLIP, ``clip-vit-b16``: the L2-normalised projected image features (= :meth:`forward`); 512-d.
        - generic ``hf:`` models: ``last_hidden_state`` mean-pooled over the token mask (text) or over all
          tokens (images); ``hidden_size``-d.

        A text whose token mask is empty (e.g. ``""``) gets zero features."""
        with torch.inference_mode():
            return self._pooled(self._features(inputs).float())

    def logits(self, inputs: dict[str, Tensor]) -> Tensor:
        """Alias of :meth:`forward` (logits for classifiers and language models)."""
        return self.forward(inputs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.device}>"

    # ----------------------------------------------------------------------------- helpers
    def weights_digest(self) -> str:
        """sha256 of the weight files (``_weight_files``, see :func:`files_digest`), or of the in-memory
        state for a model built without files; computed once per backbone."""
        if getattr(self, "_digest", None) is None:
            files = getattr(self, "_weight_files", None)
            self._digest = files_digest(files) if files else state_dict_digest(self.model)
        return self._digest

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _run_from(
        self,
        run: Callable[[str, Tensor, dict[str, Tensor]], Tensor],
        hook: str | None,
        acts: Tensor,
        inputs: dict[str, Tensor],
    ) -> Tensor:
        """``run(hook, acts, inputs)`` as float32 after checking ``hook`` and ``acts``, under inference mode
        unless ``acts`` requires grad (shared by :meth:`forward_from` and :meth:`features_from`)."""
        hook = self.check_hook(hook)
        acts = self._check_acts(hook, acts, inputs)
        if acts.requires_grad:
            return run(hook, acts, inputs).float()
        with torch.inference_mode():
            return run(hook, acts, inputs).float()

    def _pooled(self, features: Tensor) -> Tensor:
        if features.ndim != 2:
            raise RuntimeError(f"{self.name}: pooled features must be (B, D); got {tuple(features.shape)}")
        return features

    def _check_acts(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        if acts.ndim != 3 or acts.shape[-1] != self.d_model(hook):
            raise ValueError(f"acts at {hook!r} must have shape (B, T, {self.d_model(hook)}); got {tuple(acts.shape)}")
        return acts.to(device=self.device, dtype=self._dtype())

    def _to_device(self, inputs: dict[str, Tensor], keys: Sequence[str] | None = None) -> dict[str, Tensor]:
        return {k: v.to(self.device) for k, v in inputs.items() if keys is None or k in keys}


# --------------------------------------------------------------------------------------------- images
class ImageBackbone(Backbone):
    """Image preprocessing shared by the vision backbones: shorter side resized to ``image_size``
    (``interpolation``: "bicubic" or "bilinear", antialiased, clamped to [0, 255]), centre crop to a
    square (a square input is only resized), gray replicated to 3 channels, then
    ``(x / 255 - mean) / std`` per channel."""

    modality = "image"
    image_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def preprocessing_spec(self) -> dict:
        return {
            "image_size": self.image_size,
            "resize": f"shorter side, {self.interpolation}, antialias, centre crop",
            "gray": "replicated to 3 channels",
            "scaling": "(x/255 - mean)/std",
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def preprocess(self, examples: Any) -> dict[str, Tensor]:
        """Images as a uint8 (or 0–255 float) array ``(N, H, W)`` (gray) or ``(N, H, W, 3)``, a torch
        tensor of the same layout, or a sequence of PIL images / ``(H, W[, C])`` arrays (sizes may
        differ) → ``{"pixel_values": float32 (N, 3, S, S)}`` with ``S = image_size``."""
        pixels = preprocess_images(examples, self.image_size, self.interpolation, self.mean, self.std)
        return {"pixel_values": pixels}


class TimmImageBackbone(ImageBackbone):
    """An image backbone around a timm model (``forward_features`` / ``forward_head``). Subclasses give
    :meth:`_map_from`, the input of ``forward_head`` computed from activations at a hook; the output
    (logits) and the pooled final features (``pre_logits``) both come from it, so the two cannot drift."""

    def _pixels(self, inputs: dict[str, Tensor]) -> Tensor:
        return inputs["pixel_values"].to(device=self.device, dtype=self._dtype())

    @abc.abstractmethod
    def _map_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """The ``forward_features`` output recomputed from ``acts`` at ``hook``."""

    def _forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return self.model.forward_head(self._map_from(hook, acts, inputs))

    def _features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return self.model.forward_head(self._map_from(hook, acts, inputs), pre_logits=True)

    def _forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model(self._pixels(inputs))

    def _features(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model.forward_head(self.model.forward_features(self._pixels(inputs)), pre_logits=True)


# ----------------------------------------------------------------------------------------------- text
class TextBackbone(Backbone):
    """Tokenisation shared by the text backbones: right padding to the longest text, truncation to
    ``max_length`` tokens (special tokens included), an optional BOS prepended (``prepend_bos``) when
    the tokenizer does not add one. ``token_mask`` = real tokens minus special tokens (CLS/SEP/BOS/…)
    minus padding."""

    modality = "text"
    tokenizer: Any
    max_length: int
    prepend_bos: bool = False

    def preprocessing_spec(self) -> dict:
        return {
            "max_length": self.max_length,
            "truncation": True,
            "padding": "right, to the longest",
            "prepend_bos": self.prepend_bos,
            "tokenizer": type(self.tokenizer).__name__,
            "mask": "special tokens and padding excluded",
        }

    def example_lengths(self, examples: Sequence[str]) -> list[int]:
        """Tokens per text as :meth:`preprocess` makes them (truncated, BOS counted), without padding: what
        extraction sorts by (:data:`repro.cache.LENGTH_SORT_BATCHES`)."""
        enc = self.tokenizer(list(examples), truncation=True, max_length=self.max_length - int(self.prepend_bos))
        return [len(ids) + int(self.prepend_bos) for ids in enc["input_ids"]]

    def preprocess(self, examples: Sequence[str]) -> dict[str, Tensor]:
        """A list of strings → ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model
        uses them) for the model, plus ``token_mask`` (bool), all ``(B, T)`` CPU tensors."""
        if isinstance(examples, str) or not all(isinstance(t, str) for t in examples):
            raise TypeError("text examples must be a list of strings")
        bos = self.prepend_bos
        enc = self.tokenizer(
            list(examples),
            padding=True,
            truncation=True,
            max_length=self.max_length - int(bos),
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        ids, attn, special = enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"]
        if bos:
            n = ids.shape[0]
            ids = torch.cat([torch.full((n, 1), self.tokenizer.bos_token_id, dtype=ids.dtype), ids], 1)
            attn = torch.cat([torch.ones((n, 1), dtype=attn.dtype), attn], 1)
            special = torch.cat([torch.ones((n, 1), dtype=special.dtype), special], 1)
        out = {"input_ids": ids, "attention_mask": attn, "token_mask": attn.bool() & ~special.bool()}
        if "token_type_ids" in enc and not bos:
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    def _model_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return self._to_device(inputs, MODEL_INPUT_KEYS)

    def _mask(self, inputs: dict[str, Tensor]) -> Tensor:
        if "token_mask" in inputs:
            return inputs["token_mask"].to(self.device).bool()
        return inputs["attention_mask"].to(self.device).bool()
