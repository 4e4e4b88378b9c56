"""Offline Hugging Face loading, and the generic ``hf:<model id or local dir>`` backbone.

Nothing is ever downloaded: a hub id is resolved to its snapshot folder in the local cache
(``huggingface_hub.snapshot_download(..., local_files_only=True)``) and the model is loaded from that
folder with ``local_files_only=True``. A missing cache raises :class:`BackboneUnavailable` at once,
naming the model id and how to pre-cache it. The cache is ``cache_dir`` if given, else
``$HF_HUB_CACHE``, else ``$HF_HOME/hub`` (read at call time), else huggingface_hub's default.

Generic backbone (``hf:<id or dir>``, ``AutoModel``): hook points ``hidden_states.{i}``, i = 0..L, with
exactly the meaning of ``model(..., output_hidden_states=True).hidden_states[i]``; the output of
:meth:`forward_from` is ``last_hidden_state``. Text models use ``AutoTokenizer`` (token mask without
special tokens and padding), image models (``main_input_name == "pixel_values"``) the model's
``AutoImageProcessor`` (all tokens count). Activations stop at the layer when the layer stack can be
found (a ``ModuleList`` of ``num_hidden_layers`` modules whose outputs are checked once against
``hidden_states``), else the full forward is run. ``features_from`` / ``features``: the
``last_hidden_state`` mean-pooled over the token mask (text) or over all tokens (images), ``(B, d)``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from repro.backbones.base import (
    BackboneUnavailable,
    TextBackbone,
    call_of,
    frozen,
    library_versions,
    masked_mean,
    output_of,
    replaced_input,
    replaced_output,
    shared,
)
from repro.backbones.preprocessing import _as_channels_last

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """The hub cache folder to use (see the module docstring)."""
    if cache_dir is not None:
        return str(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def unavailable_message(model_id: str, cache: str, error: BaseException | None = None) -> str:
    return (
        f"{model_id!r} is not available offline: it is not in the local Hugging Face cache {cache}. "
        f"Pre-cache it on a machine with network: `HF_HOME=<dir> huggingface-cli download {model_id}` "
        f"(or `hf download {model_id}`), copy <dir> here and run with HF_HOME=<dir> HF_HUB_OFFLINE=1 "
        f"(or pass the model folder itself, e.g. hf:/path/to/folder). Nothing is downloaded at run time."
        + (f" [{type(error).__name__}: {error}]" if error is not None else "")
    )


def resolve_local(model_id: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder for ``model_id``: the folder itself, or its snapshot in the hub cache."""
    if Path(model_id).is_dir():
        return Path(model_id)
    cache = hub_cache_dir(cache_dir)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model_id), cache_dir=cache, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, OSError, …
        raise BackboneUnavailable(unavailable_message(str(model_id), cache, e)) from e


def load_hf(cls: Any, model_id: str | os.PathLike, cache_dir: str | os.PathLike | None = None, **kwargs) -> Any:
    """``cls.from_pretrained`` on the local copy of ``model_id`` (``local_files_only=True``)."""
    folder = resolve_local(model_id, cache_dir)
    try:
        return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except OSError as e:
        raise BackboneUnavailable(unavailable_message(str(model_id), str(folder), e)) from e


def hf_weight_files(model_id: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """The weight files of the local copy (safetensors preferred); empty if none is found."""
    folder = resolve_local(model_id, cache_dir)
    for pattern in WEIGHT_PATTERNS:
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def hf_source(model_id: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> dict:
    if Path(model_id).is_dir():
        return {"local_dir": str(Path(model_id).resolve())}
    folder = resolve_local(model_id, cache_dir)
    return {"hub_id": str(model_id), "revision": folder.name}


def find_layer_stack(model: nn.Module, n_layers: int | None) -> nn.ModuleList | None:
    """The first ``ModuleList`` of ``n_layers`` modules of one class (the transformer layers)."""
    if not n_layers:
        return None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers and len({type(m) for m in module}) == 1:
            return module
    return None


class HFAutoBackbone(TextBackbone):
    """Generic ``AutoModel`` backbone (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
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
        self.modality = "image" if getattr(model, "main_input_name", "input_ids") == "pixel_values" else "text"
        self.tokenizer = processor
        if self.modality == "text":
            processor.padding_side = "right"
            if processor.pad_token is None:
                processor.pad_token = processor.eos_token
        self.max_length = int(max_length)
        config = model.config.get_text_config() if self.modality == "text" else model.config
        n_layers = getattr(config, "num_hidden_layers", None)
        self._layers = find_layer_stack(model, n_layers)
        self._n_layers = n_layers if self._layers is not None else None
        self._verified: dict[int, bool] = {}
        if n_layers is None:
            raise TypeError(f"{type(model).__name__}: config has no num_hidden_layers")
        self.hook_points = tuple(f"hidden_states.{i}" for i in range(n_layers + 1))
        self.default_hook = self.check_hook(default_hook or f"hidden_states.{(2 * n_layers) // 3 + 1}")
        self._source = source or {}
        self._weight_files = weight_files
        self._width: int | None = getattr(config, "hidden_size", None)

    def d_model(self, hook: str) -> int:
        self.check_hook(hook)
        if self._width is None:
            raise NotImplementedError(f"{self.name}: config has no hidden_size")
        return int(self._width)

    def spec(self) -> dict:
        pre = (
            self.preprocessing_spec()
            if self.modality == "text"
            else {"image_processor": type(self.tokenizer).__name__, "settings": _jsonable(self.tokenizer.to_dict())}
        )
        return {
            "name": self.name,
            "family": "hf-auto",
            "architecture": type(self.model).__name__,
            "source": self._source,
            "weights_digest": self.weights_digest(),
            "preprocessing": pre,
            "libraries": library_versions("transformers"),
        }

    def preprocess(self, examples: Any) -> dict[str, Tensor]:
        if self.modality == "text":
            return super().preprocess(examples)
        if isinstance(examples, np.ndarray) and examples.ndim == 3:
            examples = list(examples)
        images = [
            np.asarray(img.convert("RGB"))
            if hasattr(img, "convert")
            else _as_channels_last(img).clip(0, 255).astype(np.uint8)
            for img in examples
        ]
        return {"pixel_values": self.tokenizer(images=images, return_tensors="pt")["pixel_values"]}

    def _model_inputs(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.modality == "image":
            return {"pixel_values": inputs["pixel_values"].to(self.device, self._dtype())}
        return super()._model_inputs(inputs)

    def _layer_path(self, index: int, kwargs: dict[str, Tensor]) -> Tensor:
        run = lambda: self.model(**kwargs)
        if index == 0:
            args, kw = call_of(self._layers[0], run)
            return args[0] if args else kw["hidden_states"]
        return output_of(self._layers[index - 1], run)

    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        index = int(hook.split(".")[1])
        kwargs = self._model_inputs(inputs)
        if self._layers is not None and index < self._n_layers and self._verified.get(index, True):
            acts = self._layer_path(index, kwargs)
            if index not in self._verified:  # check once against transformers' own hidden_states
                ref = self.model(**kwargs, output_hidden_states=True).hidden_states[index]
                self._verified[index] = ref.shape == acts.shape and bool(torch.allclose(ref, acts, atol=1e-5))
                if not self._verified[index]:
                    warnings.warn(
                        f"{self.name}: layer outputs differ from hidden_states[{index}]; "
                        "using the full forward for this hook",
                        stacklevel=3,
                    )
                    acts = ref
        else:
            acts = self.model(**kwargs, output_hidden_states=True).hidden_states[index]
        return acts, self._token_mask(inputs, acts)

    def _token_mask(self, inputs: dict[str, Tensor], acts: Tensor) -> Tensor:
        if self.modality == "image":
            return torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)
        return self._mask(inputs)

    def _forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        index = int(hook.split(".")[1])
        kwargs = self._model_inputs(inputs)
        if index == len(self.hook_points) - 1:
            return acts  # hidden_states[L] is last_hidden_state
        if self._layers is None or not self._verified.get(index, True):
            raise NotImplementedError(f"{self.name}: forward_from needs an identifiable layer stack")
        if index == 0:
            with replaced_input(self._layers[0], acts):
                return self.model(**kwargs).last_hidden_state
        with replaced_output(self._layers[index - 1], acts):
            return self.model(**kwargs).last_hidden_state

    def _features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        hidden = self._forward_from(hook, acts, inputs)
        return masked_mean(hidden, self._token_mask(inputs, hidden))

    def _forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model(**self._model_inputs(inputs)).last_hidden_state

    def _features(self, inputs: dict[str, Tensor]) -> Tensor:
        hidden = self._forward(inputs)
        return masked_mean(hidden, self._token_mask(inputs, hidden))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def load_hf_auto(
    model_id: str,
    device: str | torch.device = "cpu",
    max_length: int = 128,
    default_hook: str | None = None,
    cache_dir: str | None = None,
) -> HFAutoBackbone:
    """``hf:<model id or local dir>``: AutoModel (+ AutoTokenizer or AutoImageProcessor), offline."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    device = torch.device(device)

    def build():
        model = load_hf(AutoModel, model_id, cache_dir=cache_dir, dtype=torch.float32)
        is_image = getattr(model, "main_input_name", "input_ids") == "pixel_values"
        processor = load_hf(AutoImageProcessor if is_image else AutoTokenizer, model_id, cache_dir=cache_dir)
        return frozen(model, str(device)), processor

    model, processor = shared(("hf", str(model_id), cache_dir, str(device)), build)
    return HFAutoBackbone(
        model,
        processor,
        name=f"hf:{model_id}",
        max_length=max_length,
        default_hook=default_hook,
        source=hf_source(model_id, cache_dir),
        weight_files=hf_weight_files(model_id, cache_dir),
        device=device,
    )
