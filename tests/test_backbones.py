"""Tests of the backbones (repro/backbones): sanity of the three offline backbones (EfficientNet-Lite0
labels china.jpg as a building, MiniLM paraphrase cosines, SmolLM2 says Paris), shapes and token masks
per hook, forward_from(hook, activations) == forward for several hooks, splicing really happens,
activations stop at the hook, spec() identity, errors, the fast BackboneUnavailable path with an empty
Hugging Face cache, and the CLIP / GPT-2 / generic hf: / timm: code paths on tiny random models; pooled
final features (features_from(hook, activations) == features, the classifier on them gives the logits,
padding leaves them unchanged) and CLIP's zero-shot prompt-ensemble weights.
CPU only; every real model is loaded once per module; no test reaches the network (sockets refused)."""

from __future__ import annotations

import json
import re
import socket
import time

import numpy as np
import pytest
import torch

from repro.backbones import (
    BACKBONES,
    OFFLINE_BACKBONES,
    Backbone,
    BackboneUnavailable,
    CausalLMBackbone,
    ClipBackbone,
    EfficientNetBackbone,
    HFAutoBackbone,
    TimmBackbone,
    load,
)
from repro.backbones.base import masked_mean
from repro.backbones.clip_templates import IMAGENET_TEMPLATES

ATOL = 1e-4
HEX64 = re.compile(r"^[0-9a-f]{64}$")
BUILDINGS = {
    442: "bell cote",
    449: "boathouse",
    663: "monastery",
    698: "palace",
    497: "church",
    832: "stupa",
    668: "mosque",
}
TEXTS = ["Hello world", "A much longer sentence, with more tokens in it than the first."]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test that made it."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(scope="module")
def effnet():
    return load("effnet-lite0")


@pytest.fixture(scope="module")
def minilm():
    return load("minilm-l6")


@pytest.fixture(scope="module")
def smollm2():
    return load("smollm2-135m")


def _gray(n=2, size=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size), dtype=np.uint8)


def _calls(module):
    """A list that grows by one each time ``module`` runs, and the hook handle."""
    calls: list = []
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


def check_common(bb: Backbone, inputs, hooks, expected_output_shape):
    """forward_from(hook, activations) == forward; activation shapes; splicing changes the output."""
    full = bb.forward(inputs)
    assert tuple(full.shape) == expected_output_shape and full.dtype == torch.float32
    for hook in hooks:
        acts, mask = bb.activations(inputs, hook)
        assert acts.dtype == torch.float32 and mask.dtype == torch.bool
        assert acts.ndim == 3 and acts.shape[-1] == bb.d_model(hook) and mask.shape == acts.shape[:2]
        out = bb.forward_from(hook, acts, inputs)
        torch.testing.assert_close(out, full, atol=ATOL, rtol=0, msg=f"forward_from({hook}) != forward")
        noise = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0)) * acts.std()
        spliced = bb.forward_from(hook, acts + noise, inputs)
        assert (spliced - full).abs().max() > 1e-3, f"modifying the acts at {hook} did not change the output"


def check_features(bb: Backbone, inputs, hooks, dim):
    """features_from(hook, activations) == features, float32 (B, dim); splicing changes the features."""
    feats = bb.features(inputs)
    assert tuple(feats.shape) == (len(next(iter(inputs.values()))), dim) and feats.dtype == torch.float32
    for hook in hooks:
        acts = bb.activations(inputs, hook)[0]
        torch.testing.assert_close(
            bb.features_from(hook, acts, inputs), feats, atol=ATOL, rtol=0, msg=f"features_from({hook}) != features"
        )
    noise = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0)) * acts.std()
    assert (bb.features_from(hook, acts + noise, inputs) - feats).abs().max() > 1e-3
    return feats


def check_padding_invariance(bb: Backbone, texts):
    """A text's features alone equal its features batched with longer texts (padding is masked out)."""
    batched = bb.features(bb.preprocess(texts))
    alone = bb.features(bb.preprocess(texts[:1]))
    assert bb.preprocess(texts)["input_ids"].shape[1] > bb.preprocess(texts[:1])["input_ids"].shape[1]
    torch.testing.assert_close(batched[:1], alone, atol=ATOL, rtol=0)


def check_spec(bb: Backbone):
    spec = bb.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert spec == bb.spec() and spec["name"] == bb.name
    assert HEX64.match(spec["weights_digest"])
    assert spec["preprocessing"]
    return spec


# ----------------------------------------------------------------------------------- EfficientNet
def test_effnet_labels_china_as_a_building(effnet):
    from sklearn.datasets import load_sample_image

    bb = load("effnet-lite0", image_size=224)
    assert bb.model is effnet.model  # weights shared between option variants
    logits = bb.logits(bb.preprocess(load_sample_image("china.jpg")[None]))
    assert logits.shape == (1, 1000)
    top5 = logits[0].topk(5).indices.tolist()  # measured: palace, bell cote, monastery, lakeside, castle
    assert top5[0] in BUILDINGS, top5
    assert len(set(top5) & set(BUILDINGS)) >= 2, top5


def test_effnet_hooks_shapes_and_preprocessing(effnet):
    assert isinstance(effnet, EfficientNetBackbone) and effnet.modality == "image"
    assert len(effnet.hook_points) == 17 and effnet.hook_points[0] == "blocks.0.0"
    assert effnet.hook_points[-1] == "head" == effnet.default_hook
    gray = _gray()
    inputs = effnet.preprocess(gray)
    px = inputs["pixel_values"]
    assert px.shape == (2, 3, 112, 112) and px.dtype == torch.float32
    assert px.min() >= -1 and px.max() <= 1
    assert torch.equal(px[:, 0], px[:, 1]) and torch.equal(px[:, 1], px[:, 2])  # gray replicated
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    torch.testing.assert_close(effnet.preprocess(rgb)["pixel_values"], px)
    torch.testing.assert_close(effnet.preprocess(list(gray))["pixel_values"], px)
    from PIL import Image

    mixed = effnet.preprocess([Image.fromarray(rgb[0]), np.zeros((30, 50), np.uint8)])["pixel_values"]
    assert mixed.shape == (2, 3, 112, 112) and (mixed[1] == -1).all()
    # at 112 px: 56² after the stem, then /2 per strided stage (SAME padding rounds up)
    for hook, d, t in [
        ("blocks.0.0", 16, 56 * 56),
        ("blocks.1.1", 24, 28 * 28),
        ("blocks.3.0", 80, 7 * 7),
        ("blocks.5.3", 192, 4 * 4),
        ("head", 1280, 4 * 4),
    ]:
        acts, mask = effnet.activations(inputs, hook)
        assert acts.shape == (2, t, d) and effnet.d_model(hook) == d and effnet.n_tokens(hook) == t
        assert mask.all()
    # row-major tokens: token k of the head map is position (k // 4, k % 4)
    with torch.inference_mode():
        fmap = effnet.model.forward_features(px)
    torch.testing.assert_close(effnet.activations(inputs, "head")[0][:, 5], fmap[:, :, 1, 1])


def test_effnet_forward_from_and_stop(effnet):
    inputs = effnet.preprocess(_gray(seed=1))
    check_common(effnet, inputs, ["blocks.0.0", "blocks.2.1", "blocks.5.3", "blocks.6.0", "head"], (2, 1000))
    torch.testing.assert_close(effnet.forward(inputs), effnet.model(inputs["pixel_values"]))
    calls, handle = _calls(effnet.model.blocks[1][0])
    try:
        effnet.activations(inputs, "blocks.0.0")
        assert not calls  # nothing after the hook is computed
        effnet.activations(inputs, "head")
        assert calls
    finally:
        handle.remove()


def test_effnet_features(effnet):
    inputs = effnet.preprocess(_gray(seed=1))
    feats = check_features(effnet, inputs, ["blocks.0.0", "blocks.4.1", "head"], 1280)
    # the pooled features are the classifier's input
    torch.testing.assert_close(effnet.model.get_classifier()(feats), effnet.forward(inputs), atol=ATOL, rtol=0)
    torch.testing.assert_close(feats, effnet.activations(inputs, "head")[0].mean(1), atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------ MiniLM
def test_minilm_paraphrase_cosines(minilm):
    emb = minilm.embed(
        ["A man is playing a guitar.", "Someone is strumming a guitar.", "The central bank raised interest rates."]
    )
    close, far = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert close == pytest.approx(0.719, abs=0.01) and far == pytest.approx(-0.071, abs=0.01)
    assert close > far + 0.5


def test_minilm_mask_shapes_and_hidden_states(minilm):
    assert minilm.hook_points == ("embeddings",) + tuple(f"layer.{i}" for i in range(6))
    inputs = minilm.preprocess(TEXTS)
    ids, mask = inputs["input_ids"], inputs["token_mask"]
    specials = torch.tensor(minilm.tokenizer.all_special_ids)
    assert torch.equal(mask, ~torch.isin(ids, specials))  # [CLS], [SEP], [PAD] out, every other token in
    assert mask[0].sum() == inputs["attention_mask"][0].sum() - 2 and not mask[0, 0]
    assert not mask[0, inputs["attention_mask"][0].sum() :].any()  # padding (right side)
    with torch.inference_mode():
        hs = minilm.model(
            input_ids=ids,
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            output_hidden_states=True,
        ).hidden_states
    for i, hook in enumerate(minilm.hook_points):
        acts, m = minilm.activations(inputs, hook)
        assert acts.shape == (2, ids.shape[1], 384) and minilm.d_model(hook) == 384
        assert torch.equal(m, mask)
        torch.testing.assert_close(acts, hs[i], atol=ATOL, rtol=0)


def test_minilm_forward_from_and_stop(minilm):
    inputs = minilm.preprocess(TEXTS)
    t = inputs["input_ids"].shape[1]
    check_common(minilm, inputs, ["embeddings", "layer.0", "layer.4", "layer.5"], (2, t, 384))
    calls, handle = _calls(minilm.model.encoder.layer[1])
    try:
        minilm.activations(inputs, "layer.0")
        assert not calls
    finally:
        handle.remove()
    pooled = minilm.pooled_embedding(minilm.forward(inputs), inputs["token_mask"])
    assert pooled.shape == (2, 384)


def test_minilm_features(minilm):
    inputs = minilm.preprocess(TEXTS)
    feats = check_features(minilm, inputs, ["layer.2"], 384)
    # mean of the final hidden states over the token mask ([CLS], [SEP], padding out), not normalised
    torch.testing.assert_close(
        feats, minilm.pooled_embedding(minilm.forward(inputs), inputs["token_mask"]), atol=ATOL, rtol=0
    )
    assert (feats.norm(dim=-1) - 1).abs().max() > 1e-2
    check_padding_invariance(minilm, TEXTS)


def test_minilm_truncation_option(minilm):
    short = load("minilm-l6", max_length=8)
    assert short.model is minilm.model and short is load("minilm-l6", max_length=8)
    inputs = short.preprocess(TEXTS)
    assert inputs["input_ids"].shape[1] == 8 and inputs["token_mask"][1].sum() == 6
    assert short.spec()["preprocessing"]["max_length"] == 8
    assert short.spec()["weights_digest"] == minilm.spec()["weights_digest"]


# ----------------------------------------------------------------------------------------- SmolLM2
def test_smollm2_says_paris(smollm2):
    assert smollm2.generate_greedy("The capital of France is", max_new_tokens=3).startswith(" Paris")


def test_smollm2_mask_shapes_and_hidden_states(smollm2):
    assert smollm2.hook_points == tuple(f"resid.{i}" for i in range(30)) and smollm2.default_hook == "resid.20"
    inputs = smollm2.preprocess(TEXTS)
    ids, attn, mask = inputs["input_ids"], inputs["attention_mask"], inputs["token_mask"]
    assert (ids[:, 0] == smollm2.tokenizer.bos_token_id).all()
    expected = attn.bool().clone()
    expected[:, 0] = False  # BOS out, padding out, every real token in
    assert torch.equal(mask, expected) and not attn[0, -1]
    with torch.inference_mode():
        hs = smollm2.model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
    for layer in (0, 20, 28, 29):
        acts, m = smollm2.activations(inputs, f"resid.{layer}")
        assert acts.shape == (2, ids.shape[1], 576) and torch.equal(m, mask)
        # hidden_states[l + 1] for l < 29; transformers' last entry is after the final norm
        ref = hs[layer + 1] if layer < 29 else None
        if ref is not None:
            torch.testing.assert_close(acts, ref, atol=ATOL, rtol=0)
        else:
            torch.testing.assert_close(smollm2._norm(acts), hs[30], atol=ATOL, rtol=0)


def test_smollm2_forward_from_and_stop(smollm2):
    inputs = smollm2.preprocess(TEXTS)
    t = inputs["input_ids"].shape[1]
    check_common(smollm2, inputs, ["resid.0", "resid.20", "resid.29"], (2, t, 49152))
    # causal splice: changing position 3 leaves the logits before it unchanged
    acts, _ = smollm2.activations(inputs, "resid.5")
    acts = acts.clone()
    acts[:, 3] += 10.0
    out, full = smollm2.forward_from("resid.5", acts, inputs), smollm2.forward(inputs)
    torch.testing.assert_close(out[:, :3], full[:, :3], atol=ATOL, rtol=0)
    assert (out[:, 3:] - full[:, 3:]).abs().max() > 1e-2
    calls, handle = _calls(smollm2.model.model.layers[1])
    try:
        smollm2.activations(inputs, "resid.0")
        assert not calls
    finally:
        handle.remove()


def test_smollm2_features(smollm2):
    inputs = smollm2.preprocess(TEXTS)
    feats = check_features(smollm2, inputs, ["resid.20"], 576)
    # the final-norm hidden states (the LM head's input), mean-pooled over the token mask
    final = smollm2._norm(smollm2.activations(inputs, "resid.29")[0])
    torch.testing.assert_close(feats, masked_mean(final, inputs["token_mask"]), atol=ATOL, rtol=0)
    check_padding_invariance(smollm2, TEXTS)


# ------------------------------------------------------------------------------- spec, registry, errors
@pytest.mark.parametrize("name", OFFLINE_BACKBONES)
def test_spec_identity(name, request):
    bb = request.getfixturevalue({"effnet-lite0": "effnet", "minilm-l6": "minilm", "smollm2-135m": "smollm2"}[name])
    assert load(name) is bb  # cached per process
    spec = check_spec(bb)
    assert spec["source"]["package"] and spec["source"]["version"]
    known = {"minilm-l6": ("53aa5117", "28d9db"), "smollm2-135m": ("b179c952", "db53")}
    if name in known:
        assert spec["weights_digest"].startswith(known[name][0]) and spec["weights_digest"].endswith(known[name][1])


def test_unknown_hook_and_name(minilm, effnet):
    with pytest.raises(ValueError, match="layer.5"):
        minilm.activations(minilm.preprocess(["x"]), "layer.6")
    with pytest.raises(ValueError, match="blocks.0.0"):
        effnet.forward_from("nope", torch.zeros(1, 16, 1280), effnet.preprocess(_gray(1)))
    with pytest.raises(ValueError, match="effnet-lite0.*minilm-l6.*smollm2-135m.*clip-vit-b16.*gpt2-small"):
        load("resnet-9000")
    assert set(OFFLINE_BACKBONES) < set(BACKBONES)
    with pytest.raises(ValueError, match="shape"):
        minilm.forward_from("layer.0", torch.zeros(1, 3, 100), minilm.preprocess(["x"]))


@pytest.mark.parametrize("name", ["clip-vit-b16", "gpt2-small", "hf:openai-community/gpt2"])
def test_missing_hub_cache_fails_fast(name, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailable) as info:
        load(name)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    model_id = {"clip-vit-b16": "openai/clip-vit-base-patch16"}.get(name, "openai-community/gpt2")
    assert model_id in message and "huggingface-cli download" in message and "HF_HUB_OFFLINE=1" in message
    assert str(tmp_path / "hf_home") in message  # the cache that was looked at
    assert not no_network
    with pytest.raises(BackboneUnavailable):  # an explicit cache_dir too
        load(name, cache_dir=str(tmp_path / "other"))


def test_features_not_implemented_names_the_backbone():
    class Bare(Backbone):
        name, hook_points, default_hook = "bare-net", ("h",), "h"
        model, device = torch.nn.Linear(2, 2), torch.device("cpu")

        def d_model(self, hook):
            return 2

        def spec(self):
            return {}

        def preprocess(self, examples):
            return {"x": torch.as_tensor(examples, dtype=torch.float32)}

        def _activations(self, inputs, hook):
            return inputs["x"][:, None], torch.ones(len(inputs["x"]), 1, dtype=torch.bool)

        def _forward_from(self, hook, acts, inputs):
            return self.model(acts[:, 0])

        def _forward(self, inputs):
            return self.model(inputs["x"])

    bb = Bare()
    inputs = bb.preprocess([[1.0, 2.0]])
    torch.testing.assert_close(bb.forward_from("h", bb.activations(inputs)[0], inputs), bb.forward(inputs))
    with pytest.raises(NotImplementedError, match="bare-net"):
        bb.features(inputs)
    with pytest.raises(NotImplementedError, match="bare-net"):
        bb.features_from("h", bb.activations(inputs)[0], inputs)


def test_timm_without_local_weights_fails_fast(tmp_path):
    with pytest.raises(BackboneUnavailable, match="weights="):
        load("timm:test_vit")
    with pytest.raises(BackboneUnavailable, match="does not exist"):
        load("timm:test_vit", weights=str(tmp_path / "missing.safetensors"))


# ------------------------------------------------------------------------------ tiny random models
def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<bos>", "<eos>", "<unk>"] + "a photo of cat dog the is hello world much longer".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _tiny_clip() -> ClipBackbone:
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config={
            "vocab_size": 16,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "eos_token_id": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    return ClipBackbone(_seeded(lambda: CLIPModel(cfg)), _tiny_tokenizer(), name="tiny-clip")


def test_tiny_clip_path():
    bb = _tiny_clip()
    assert bb.hook_points == tuple(f"vision.layers.{i}" for i in range(4)) and bb.default_hook == "vision.layers.2"
    images = np.random.default_rng(0).integers(0, 256, size=(2, 48, 40, 3), dtype=np.uint8)
    inputs = bb.preprocess(images)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    with torch.inference_mode():
        hs = bb.model.vision_model(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
    for layer in range(4):
        acts, mask = bb.activations(inputs, f"vision.layers.{layer}")
        assert acts.shape == (2, 17, 32) == (2, bb.n_tokens(), bb.d_model(f"vision.layers.{layer}")) and mask.all()
        torch.testing.assert_close(acts, hs[layer + 1], atol=ATOL, rtol=0)
    check_common(bb, inputs, bb.hook_points, (2, 16))
    calls, handle = _calls(bb.model.vision_model.encoder.layers[1])
    try:
        bb.activations(inputs, "vision.layers.0")
        assert not calls
    finally:
        handle.remove()
    text = bb.text_features(["a photo of a cat", "a photo of a dog"])
    assert text.shape == (2, 16)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    logits = bb.zero_shot_logits(bb.forward(inputs), text)
    with torch.inference_mode():
        ref = bb.model(
            pixel_values=inputs["pixel_values"],
            **bb.tokenizer(["a photo of a cat", "a photo of a dog"], padding=True, return_tensors="pt"),
        )
    torch.testing.assert_close(logits, ref.logits_per_image, atol=ATOL, rtol=0)
    check_spec(bb)


def test_tiny_clip_features_and_zero_shot_weights():
    bb = _tiny_clip()
    inputs = bb.preprocess(np.random.default_rng(0).integers(0, 256, size=(2, 48, 40, 3), dtype=np.uint8))
    feats = check_features(bb, inputs, bb.hook_points, 16)
    torch.testing.assert_close(feats, bb.forward(inputs))  # the normalised projected image features
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2))

    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    names, templates = ["cat", "dog", "the world"], ("a photo of a {}.", "the {} is much longer", "hello {}")
    weights = bb.zero_shot_weights(names, templates)
    assert weights.shape == (3, 16) and weights.dtype == torch.float32
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(3))
    raw = bb.zero_shot_weights(names, templates, renormalise=False, batch_size=2)
    assert (raw.norm(dim=-1) < 1 - 1e-4).all()  # the mean of differing unit vectors
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), weights, atol=ATOL, rtol=0)
    # OpenAI's zeroshot_classifier, class by class (it re-normalises the template mean)
    for k, name in enumerate(names):
        per_template = bb.text_features([t.format(name) for t in templates])
        torch.testing.assert_close(raw[k], per_template.mean(0), atol=ATOL, rtol=0)
        torch.testing.assert_close(weights[k], per_template.mean(0) / per_template.mean(0).norm(), atol=ATOL, rtol=0)
    single = bb.zero_shot_weights(["cat"], templates[:1], renormalise=False)
    torch.testing.assert_close(single, bb.text_features(["a photo of a cat."]), atol=ATOL, rtol=0)
    assert bb.zero_shot_weights(["cat", "dog"]).shape == (2, 16)  # the 80 ImageNet templates
    assert bb.zero_shot_logits(feats, weights).shape == (2, 3)
    with pytest.raises(ValueError):
        bb.zero_shot_weights([], templates)


def test_tiny_gpt2_path():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tiny_tokenizer()
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=3, n_head=4, bos_token_id=1, eos_token_id=2
    )
    bb = CausalLMBackbone(_seeded(lambda: GPT2LMHeadModel(cfg)), tok, name="tiny-gpt2", prepend_bos=True)
    assert bb.hook_points == ("resid.0", "resid.1", "resid.2") and bb.d_model("resid.1") == 32
    inputs = bb.preprocess(["hello world", "the cat is a much longer dog"])
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    assert (ids[:, 0] == 1).all() and attn[0].sum() == 3 and attn[1].sum() == 8
    assert inputs["token_mask"].tolist()[0] == [False, True, True] + [False] * 5
    with torch.inference_mode():
        out = bb.model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    for layer in range(3):
        acts, _ = bb.activations(inputs, f"resid.{layer}")
        ref = out.hidden_states[layer + 1] if layer < 2 else None
        torch.testing.assert_close(
            acts if ref is not None else bb._norm(acts),
            ref if ref is not None else out.hidden_states[3],
            atol=ATOL,
            rtol=0,
        )
    check_common(bb, inputs, bb.hook_points, (2, 8, len(tok)))
    torch.testing.assert_close(bb.forward(inputs), out.logits, atol=ATOL, rtol=0)
    feats = check_features(bb, inputs, bb.hook_points, 32)
    torch.testing.assert_close(feats, masked_mean(out.hidden_states[3], inputs["token_mask"]), atol=ATOL, rtol=0)
    check_padding_invariance(bb, ["hello world", "the cat is a much longer dog"])
    acts = bb.activations(inputs, "resid.0")[0].clone().requires_grad_(True)
    bb.features_from("resid.0", acts, inputs).sum().backward()
    assert acts.grad is not None and acts.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())
    # gradients reach spliced activations (weights stay frozen)
    acts = bb.activations(inputs, "resid.1")[0].clone().requires_grad_(True)
    bb.forward_from("resid.1", acts, inputs).logsumexp(-1).sum().backward()
    assert acts.grad is not None and acts.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())
    calls, handle = _calls(bb.model.transformer.h[1])
    try:
        bb.activations(inputs, "resid.0")
        assert not calls
    finally:
        handle.remove()
    check_spec(bb)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_generic_hf_local_dir(arch, tmp_path):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    tok = _tiny_tokenizer()
    if arch == "bert":
        model = _seeded(
            lambda: BertModel(
                BertConfig(
                    vocab_size=len(tok),
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    intermediate_size=37,
                )
            )
        )
    else:
        model = _seeded(
            lambda: GPT2Model(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4))
        )
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    bb = load(f"hf:{tmp_path}")
    assert isinstance(bb, HFAutoBackbone)
    assert bb.hook_points == ("hidden_states.0", "hidden_states.1", "hidden_states.2")
    inputs = bb.preprocess(["hello world", "the cat is a much longer dog"])
    with torch.inference_mode():
        hs = bb.model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True
        ).hidden_states
    for i, hook in enumerate(bb.hook_points):
        acts, mask = bb.activations(inputs, hook)
        torch.testing.assert_close(acts, hs[i], atol=ATOL, rtol=0)
        assert torch.equal(mask, inputs["attention_mask"].bool())
    full = bb.forward(inputs)
    for hook in bb.hook_points:
        torch.testing.assert_close(
            bb.forward_from(hook, bb.activations(inputs, hook)[0], inputs), full, atol=ATOL, rtol=0
        )
    acts = bb.activations(inputs, "hidden_states.1")[0]
    noise = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))
    assert (bb.forward_from("hidden_states.1", acts + noise, inputs) - full).abs().max() > 1e-3
    feats = check_features(bb, inputs, bb.hook_points, 32)
    torch.testing.assert_close(feats, masked_mean(full, inputs["token_mask"]), atol=ATOL, rtol=0)
    spec = check_spec(bb)
    assert spec["source"] == {"local_dir": str(tmp_path.resolve())}


def test_generic_hf_image_model(tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, image_size=32, patch_size=8
    )
    _seeded(lambda: CLIPVisionModel(cfg)).save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    bb = load(f"hf:{tmp_path}")
    assert bb.modality == "image" and len(bb.hook_points) == 4
    inputs = bb.preprocess(_gray(2, size=40))
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    with torch.inference_mode():
        hs = bb.model(**inputs, output_hidden_states=True).hidden_states
    for i, hook in enumerate(bb.hook_points):
        acts, mask = bb.activations(inputs, hook)
        torch.testing.assert_close(acts, hs[i], atol=ATOL, rtol=0)
        assert acts.shape == (2, 17, 32) and mask.all()
    check_common(bb, inputs, bb.hook_points[:-1], (2, 17, 32))
    feats = check_features(bb, inputs, bb.hook_points, 32)
    torch.testing.assert_close(feats, bb.forward(inputs).mean(1), atol=ATOL, rtol=0)  # every token counts
    check_spec(bb)


@pytest.mark.parametrize("arch", ["test_vit", "test_efficientnet"])
def test_generic_timm_local_weights(arch, tmp_path):
    import timm
    from safetensors.torch import save_file

    reference = _seeded(lambda: timm.create_model(arch, pretrained=False)).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    bb = load(f"timm:{arch}", weights=str(path), image_size=64)
    inputs = bb.preprocess(_gray(1, size=40))
    with torch.inference_mode():
        torch.testing.assert_close(bb.forward(inputs), reference(inputs["pixel_values"]), atol=ATOL, rtol=0)
    if arch == "test_vit":
        assert isinstance(bb, TimmBackbone) and bb.hook_points[-1] == "features" and bb.hook_points[0] == "blocks.0"
        hooks = [bb.hook_points[0], bb.hook_points[-2], "features"]
    else:
        assert isinstance(bb, EfficientNetBackbone) and bb.default_hook == "head"
        hooks = [bb.hook_points[0], "head"]
    check_common(bb, inputs, hooks, (1, 1000))
    feats = check_features(bb, inputs, hooks, reference.num_features)
    with torch.inference_mode():
        ref_feats = reference.forward_head(reference.forward_features(inputs["pixel_values"]), pre_logits=True)
    torch.testing.assert_close(feats, ref_feats, atol=ATOL, rtol=0)
    torch.testing.assert_close(bb.model.get_classifier()(feats), bb.forward(inputs), atol=ATOL, rtol=0)
    assert check_spec(bb)["source"]["file"] == "weights.safetensors"


def test_smollm2_converted_copy_is_bit_identical(smollm2, tmp_path):
    """The fp32 copy kept to skip the GGUF dequantisation loads the same tensors: identical logits."""
    from repro.backbones.base import file_digest
    from repro.backbones.causal_lm import _build_smollm2, _save_converted, smollm2_file

    path = smollm2_file()
    _save_converted(smollm2.model, smollm2.tokenizer, tmp_path / f"smollm2-{file_digest(path)}")
    model, tokenizer = _build_smollm2(path, "cpu", tmp_path)
    inputs = smollm2.preprocess(TEXTS)
    with torch.inference_mode():
        ref = smollm2.model(**{k: inputs[k] for k in ("input_ids", "attention_mask")}).logits
        got = model(**{k: inputs[k] for k in ("input_ids", "attention_mask")}).logits
    assert torch.equal(ref, got)
    assert tokenizer(TEXTS[1])["input_ids"] == smollm2.tokenizer(TEXTS[1])["input_ids"]
