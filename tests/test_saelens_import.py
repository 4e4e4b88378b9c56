"""SAELens import (issue 14): SAEs trained by SAELens's own training classes on real MiniLM activations and saved
with its ``save_inference_model`` become runs of ours (``repro import``) whose encode and decode equal SAELens's,
whose reconstruction metrics (``repro evaluate``) equal SAELens's own explained-variance and MSE computations on
the same held-out tokens, and whatever SAELens computes differently from every kind of ours is refused with a
message naming the key."""

from __future__ import annotations

import json

import pytest
import sae_lens  # a test extra (bash scripts/setup.sh --test): missing, these tests fail rather than skip
import torch
from sae_lens.evals import ExplainedVarianceCalculator
from sae_lens.saes.sae import TrainCoefficientConfig, TrainStepInput

from repro.cli import main
from repro.interop.saelens_import import NotImportable, read_saelens, sae_from_saelens

HOOK, MODEL = "blocks.3.hook_normalized_resid_post", "sentence-transformers/all-MiniLM-L6-v2"  # = minilm-l6 layer.3
TRAINING = {
    "standard": (sae_lens.StandardTrainingSAE, sae_lens.StandardTrainingSAEConfig, {"l1_coefficient": 2.0}),
    "topk": (sae_lens.TopKTrainingSAE, sae_lens.TopKTrainingSAEConfig, {"k": 16}),
    "jumprelu": (
        sae_lens.JumpReLUTrainingSAE,
        sae_lens.JumpReLUTrainingSAEConfig,
        {"l0_coefficient": 0.3, "jumprelu_init_threshold": 0.3},
    ),
    "gated": (sae_lens.GatedTrainingSAE, sae_lens.GatedTrainingSAEConfig, {"l1_coefficient": 2.0}),
}
VARIANTS = [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("topk", {}),
    ("topk", {"rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": False}),
    ("jumprelu", {}),
    ("jumprelu", {"apply_b_dec_to_input": False}),
    ("gated", {}),
    ("gated", {"apply_b_dec_to_input": False}),
]


def saelens_trained(arch: str, tokens: torch.Tensor, out, steps: int = 120, **cfg) -> sae_lens.SAE:
    """An SAE trained by SAELens's training class for ``arch`` (its own losses, Adam, lr 1e-3) on ``tokens``,
    written by its ``save_inference_model`` to ``out``; returns SAELens's inference SAE loaded from there."""
    cls, cfg_cls, hp = TRAINING[arch]
    torch.manual_seed(0)
    config = cfg_cls(d_in=tokens.shape[1], d_sae=768, **hp, **cfg)
    config.metadata.model_name, config.metadata.hook_name = MODEL, HOOK
    sae = cls(config)
    coefficients = {
        k: v.value if isinstance(v, TrainCoefficientConfig) else v for k, v in sae.get_coefficients().items()
    }
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        batch = tokens[torch.randint(len(tokens), (512,), generator=g)]
        out_step = sae.training_forward_pass(
            TrainStepInput(
                sae_in=batch,
                coefficients=coefficients,
                dead_neuron_mask=None,
                n_training_steps=step,
                is_logging_step=False,
            )
        )
        opt.zero_grad()
        out_step.loss.backward()
        opt.step()
    sae.save_inference_model(str(out))
    return sae_lens.SAE.load_from_disk(str(out)).eval()


@pytest.fixture(scope="module")
def tokens(minilm_cache):
    """(training, held-out) MiniLM layer.3 tokens from the conftest cache."""
    x = minilm_cache.tokens().float()
    return x[:-4096], x[-4096:]


@pytest.mark.parametrize("arch,cfg", VARIANTS, ids=[f"{a}-{'-'.join(c) or 'plain'}" for a, c in VARIANTS])
def test_an_imported_saelens_sae_encodes_and_decodes_as_saelens_does(arch, cfg, tokens, tmp_path, same_code):
    train, held_out = tokens
    theirs = saelens_trained(arch, train, tmp_path / "sl", **cfg)
    ours = sae_from_saelens(*read_saelens(tmp_path / "sl"))
    with torch.no_grad():
        a, b = ours.encode(held_out), theirs.encode(held_out)
        x_ours, x_theirs = ours.decode(a), theirs.decode(b)
    l0 = (b != 0).sum(1).float().mean()
    assert 1 <= l0 <= 700, l0  # neither empty nor dense, so the comparison means something
    same_code(a, b)
    assert (x_ours - x_theirs).abs().max() <= 1e-5 * x_theirs.abs().max()


def saelens_metrics(sae: sae_lens.SAE, x: torch.Tensor) -> dict[str, float]:
    """SAELens's own computations (sae_lens.evals.get_sparsity_and_variance_metrics, the fixed versions) of
    explained variance (ExplainedVarianceCalculator), MSE (per-token sum of squares, mean over tokens) and L0."""
    calc = ExplainedVarianceCalculator()
    with torch.no_grad():
        acts = sae.encode(x)
        out = sae.decode(acts)
    for i in range(0, len(x), 1000):  # in batches, as its evaluation loop feeds it
        calc.add_batch(sae_output=out[i : i + 1000], hidden_acts=x[i : i + 1000])
    return {
        "ev": calc.compute(),
        "mse": float((x - out).pow(2).sum(-1).mean()),
        "l0": float((acts != 0).sum(-1).float().mean()),
    }


def test_our_metrics_on_an_imported_sae_equal_saelens_own(minilm_cache, tokens, tmp_path, capsys):
    """``repro import`` then ``repro evaluate``: reconstruction metrics on the MiniLM test split equal SAELens's
    on the same tokens (read back from the test cache the evaluation extracted)."""
    from repro.cache import ActivationCache

    theirs = saelens_trained("topk", tokens[0], tmp_path / "sl")
    run = tmp_path / "run"
    assert (
        main(
            [
                "import",
                str(tmp_path / "sl"),
                "--cache",
                str(minilm_cache.path),
                "--out",
                str(run),
                "--label",
                "setting=external",
            ]
        )
        == 0
    )
    record = json.loads((run / "train.json").read_text())
    assert record["kind"] == "topk" and record["sae_config"]["k"] == 16
    assert record["imported"]["hook"] == "layer.3" and record["imported"]["backbone"] == "minilm-l6"
    assert record["data"]["spec"] == minilm_cache.spec  # the cache's hook: evaluated on the same tokens as ours
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(run),
                "--eval",
                "reconstruction",
                "--test-limit",
                "300",
                "--cache-root",
                str(tmp_path / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    ours = json.loads((run / "eval" / "reconstruction.json").read_text())
    test_cache = ActivationCache.open(tmp_path / "cache" / ours["data"]["splits"]["test"]["cache"])
    x = test_cache.tokens().float()
    reference = saelens_metrics(theirs, x)
    got = ours["results"]
    assert got["n_tokens"] == len(x) > 2000
    assert 0.2 < reference["ev"] < 0.99  # a trained, imperfect SAE
    assert got["ev"] == pytest.approx(reference["ev"], rel=1e-5)
    assert got["mse"] == pytest.approx(reference["mse"], rel=1e-5)
    assert got["l0"] == pytest.approx(reference["l0"], rel=1e-9)


def test_a_folder_roundtrips_through_export_and_import(minilm_cache, tmp_path, same_code):
    from repro.interop.saelens import export_sae
    from repro.sae import create

    x = minilm_cache.tokens(0, 4096).float()
    sae = create("gated", x.shape[1], 512, seed=0)
    sae.fit_to_data(x)
    export_sae(sae.eval(), tmp_path / "sl", hook_name="layer.3", model_name="minilm-l6")
    back = sae_from_saelens(*read_saelens(tmp_path / "sl"))
    with torch.no_grad():
        a, b = sae.encode(x), back.encode(x)
        same_code(b, a)
        assert (sae.decode(a) - back.decode(b)).abs().max() <= 1e-5 * sae.decode(a).abs().max()


def test_a_config_written_before_saelens_6_is_read_as_saelens_6_reads_it(tmp_path):
    from safetensors.torch import save_file

    d, f = 8, 32
    torch.manual_seed(0)
    save_file(
        {"W_enc": torch.randn(d, f), "W_dec": torch.randn(f, d), "b_enc": torch.randn(f), "b_dec": torch.randn(d)},
        str(tmp_path / "sae_weights.safetensors"),
    )
    (tmp_path / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": d,
                "d_sae": f,
                "hook_point": "blocks.3.hook_resid_post",
                "model_name": "gpt2",
                "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 4},
                "normalize_activations": False,
                "dtype": "float32",
                "device": "cpu",
                "sae_lens_version": "3.5.0",
            }
        )
    )
    cfg, tensors = read_saelens(tmp_path)
    assert cfg["architecture"] == "topk" and cfg["k"] == 4 and cfg["hook_name"] == "blocks.3.hook_resid_post"
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path))
    ours = sae_from_saelens(cfg, tensors)
    x = torch.randn(64, d)
    with torch.no_grad():
        assert ours.kind == "topk" and torch.allclose(ours(x)[0], theirs(x), rtol=1e-5, atol=1e-5)


def _saved(tmp_path, **overrides):
    """A small SAELens standard SAE saved by SAELens, with ``overrides`` written into its cfg.json."""
    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=384, d_sae=64))
    sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name = MODEL, HOOK
    folder = tmp_path / "sl"
    sae.save_model(str(folder))
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value in overrides.items():
        if key in ("model_name", "hook_name"):
            cfg["metadata"][key] = value
        else:
            cfg[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
        ({"reshape_activations": "hook_z"}, "reshape_activations='hook_z'"),
        ({"architecture": "matching_pursuit"}, "architecture 'matching_pursuit' is not importable"),
        ({"model_name": "pythia-70m"}, "model 'pythia-70m' is none of our backbones"),
        ({"model_name": "gpt2"}, "the cache was extracted from minilm-l6"),
        ({"hook_name": "blocks.9.hook_mlp_out"}, "not a hook of minilm-l6"),
        ({"d_in": 512}, "tensor 'W_enc' has shape"),
    ],
)
def test_what_no_kind_of_ours_computes_is_refused_with_the_key(overrides, message, minilm_cache, tmp_path, capsys):
    folder = _saved(tmp_path, **overrides)
    assert main(["import", str(folder), "--cache", str(minilm_cache.path), "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "train.json").exists()


def test_a_truncated_weights_file_or_a_hook_of_the_wrong_width_is_detected(minilm_cache, tmp_path, capsys):
    folder = _saved(tmp_path)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(NotImportable, match="unreadable"):
        read_saelens(folder)
    (folder / "cfg.json").write_text('{"d_in": 384')  # a truncated config
    with pytest.raises(NotImportable, match=r"cfg\.json: unreadable"):
        read_saelens(folder)
    folder = _saved(tmp_path / "b")  # 384-d, so the embeddings hook fits but a hook that is not ours does not
    assert (
        main(
            [
                "import",
                str(folder),
                "--cache",
                str(minilm_cache.path),
                "--out",
                str(tmp_path / "r"),
                "--hook",
                "embeddings",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "r" / "train.json").read_text())["data"]["spec"]["hook"] == "embeddings"
    assert main(["import", str(folder), "--cache", str(minilm_cache.path), "--out", str(tmp_path / "r")]) == 2
    assert "already holds a run" in capsys.readouterr().err
