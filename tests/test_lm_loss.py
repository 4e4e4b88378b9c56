"""LM loss with an SAE spliced in, on SmolLM2-135M: an identity "SAE" recovers all of the loss, a zero
"SAE" none of it, and a trained SAE lands in between."""

from __future__ import annotations

import math

import pytest
import torch

from repro.evals.lm_loss import lm_loss
from repro.splice import splice_acts

TEXTS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "A computer program is a sequence of instructions.",
    "Cats sleep for most of the day.",
]
HOOK = "resid.10"


class Identity(torch.nn.Module):
    def forward(self, x, latent_scale=None):
        return x, x


class Zero(torch.nn.Module):
    def forward(self, x, latent_scale=None):
        return torch.zeros_like(x), x


@pytest.fixture(scope="module")
def smollm():
    pytest.importorskip("gguf")
    from repro.backbones import BackboneUnavailable, load

    try:
        return load("smollm2-135m")
    except BackboneUnavailable as e:
        pytest.skip(str(e))


def test_splice_replaces_only_counted_tokens():
    acts = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[False, True, True], [False, True, False]])
    out = splice_acts(None, acts, mask)
    assert torch.equal(out[~mask], acts[~mask]) and torch.count_nonzero(out[mask]) == 0
    assert torch.equal(splice_acts(Identity(), acts, mask), acts)


def test_identity_and_zero_known_answers(smollm):
    ident = lm_loss(smollm, Identity(), TEXTS, HOOK, batch_size=2)
    assert ident["ce_delta"] == pytest.approx(0, abs=1e-9) and ident["ce_loss_score"] == pytest.approx(1, abs=1e-9)
    assert ident["kl_sae"] == pytest.approx(0, abs=1e-9) and ident["kl_div_score"] == pytest.approx(1, abs=1e-9)
    zero = lm_loss(smollm, Zero(), TEXTS, HOOK, batch_size=3)
    assert zero["ce_loss_score"] == pytest.approx(0, abs=1e-9) and zero["kl_div_score"] == pytest.approx(0, abs=1e-9)
    assert zero["ce_zero"] > zero["ce_clean"] + 1 and ident["n_tokens"] == zero["n_tokens"] > 20
    assert 1 < ident["ce_clean"] < 8  # a real LM on plain English
    assert ident["ce_clean"] == pytest.approx(zero["ce_clean"], rel=1e-6)  # batch size: fp32 rounding only


def test_untrained_sae_lands_between(smollm):
    from repro.sae import create

    sae = create("topk", smollm.d_model(HOOK), 1024, k=16).eval()
    out = lm_loss(smollm, sae, TEXTS, HOOK)
    assert out["ce_delta"] > 0 and not math.isnan(out["ce_loss_score"]) and out["kl_sae"] > 0
