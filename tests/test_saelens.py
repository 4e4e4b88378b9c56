"""SAELens export (issue 14, first step): every exportable kind, written by ``repro export`` and read back by
``sae_lens.SAE.load_from_disk``, encodes and decodes real activations as our SAE does (input scaling folded
into the weights); the sparsemax-attention family and per-token standardisation are refused with a message."""

from __future__ import annotations

import json

import pytest
import sae_lens  # a test extra (bash scripts/setup.sh --test): missing, these tests fail rather than skip
import torch

from repro.interop.saelens import SAELENS_ARCHITECTURE, NotExportable, export_sae
from repro.sae import create


@pytest.fixture(scope="module")
def acts():
    """Real activations: all-MiniLM-L6-v2 after layer 2 on 48 WordNet glosses (384-d)."""
    from repro.backbones import load as load_backbone
    from repro.data import load as load_data

    bb = load_backbone("minilm-l6")
    data = load_data("wordnet-glosses", split="train", limit=48, seed=0)
    a, mask = bb.activations(bb.preprocess(data.examples), "layer.2")
    return a[mask]


def trained_like(kind: str, x: torch.Tensor, **hp):
    """An SAE of ``kind`` fitted to ``x`` (input scale, b_dec) with random, non-trivial weights and thresholds."""
    torch.manual_seed(0)
    sae = create(kind, x.shape[1], 512, seed=0, **hp)
    sae.fit_to_data(x)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name.startswith("b_") or name == "r_mag":
                p.add_(0.05 * torch.randn_like(p))
        if kind == "jumprelu":
            sae.threshold.mul_(torch.exp(0.3 * torch.randn_like(sae.threshold)))
        if kind == "batchtopk":
            pre = sae.pre_activation(sae.normalise(x)[0]).flatten().sort().values
            i = int(0.97 * pre.numel())
            sae.threshold.fill_(float(pre[i] + pre[i + 1]) / 2)  # between two entries: no tie at the boundary
    return sae.eval()


@pytest.mark.parametrize("kind", sorted(SAELENS_ARCHITECTURE))
@pytest.mark.parametrize("norm", ["scalar", "none"])
def test_export_loads_in_saelens_and_computes_the_same_code_and_reconstruction(kind, norm, acts, tmp_path, same_code):
    sae = trained_like(kind, acts, input_norm=norm, **({"k": 16} if kind in ("topk", "batchtopk") else {}))
    out = export_sae(sae, tmp_path / "sl", hook_name="blocks.2.hook_resid_post", model_name="minilm-l6")
    theirs = sae_lens.SAE.load_from_disk(str(out))
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["architecture"] == SAELENS_ARCHITECTURE[kind] == theirs.cfg.architecture()
    assert cfg["metadata"]["hook_name"] == "blocks.2.hook_resid_post" and cfg["normalize_activations"] == "none"
    with torch.no_grad():
        a, b = sae.encode(acts), theirs.encode(acts)
        x_ours, x_theirs = sae.decode(a), theirs.decode(b)
    l0 = (a != 0).sum(1).float().mean()
    assert 1 <= l0 <= 400, l0  # a code that is neither empty nor dense, so the comparison means something
    same_code(a, b)
    assert (x_ours - x_theirs).abs().max() <= 1e-5 * x_ours.abs().max()


def test_unexportable_kinds_are_refused(acts, tmp_path):
    with pytest.raises(NotExportable, match="no SAELens architecture"):
        export_sae(create("sparsemax_attention", acts.shape[1], 64, seed=0), tmp_path / "a", "h", "m")
    with pytest.raises(NotExportable, match="input_norm='token'"):
        export_sae(create("topk", acts.shape[1], 64, seed=0, k=4, input_norm="token"), tmp_path / "b", "h", "m")
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_the_cli_exports_a_trained_run(tmp_path, capsys):
    from repro.backbones import load as load_backbone
    from repro.cache import extract
    from repro.cli import main
    from repro.data import load as load_data

    glosses = load_data("wordnet-glosses", split="train", limit=40, seed=0)
    cache = extract(load_backbone("minilm-l6"), glosses, "layer.3", tmp_path / "cache", progress=False)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--cache",
                str(cache),
                "--kind",
                "jumprelu",
                "--d-sae",
                "128",
                "--steps",
                "5",
                "--batch-size",
                "64",
                "--warmup",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["export", str(run), "--format", "saelens", "--out", str(tmp_path / "sl")]) == 0
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sl"))
    assert theirs.cfg.metadata.hook_name == "layer.3" and theirs.cfg.metadata.model_name == "minilm-l6"
    assert not (tmp_path / "sl" / "sparsity.safetensors").exists()  # not evaluated yet: no firing rates
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(run),
                "--eval",
                "interpretability",
                "--test-limit",
                "60",
                "--cache-root",
                str(tmp_path / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["export", str(run), "--out", str(tmp_path / "sl2")]) == 0
    from safetensors.torch import load_file

    rate = json.loads((run / "eval" / "interpretability.json").read_text())["results"]["firing"]["firing_rate"]
    log_density = load_file(str(tmp_path / "sl2" / "sparsity.safetensors"))["sparsity"]
    assert log_density.shape == (128,) and len(rate) == 128 and max(rate) > 0
    assert torch.allclose(log_density, torch.log10(torch.tensor(rate, dtype=torch.float64) + 1e-10).float())
    capsys.readouterr()
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
