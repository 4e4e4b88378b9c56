"""Language-model loss with an SAE spliced in (CE and KL degradation).

For held-out texts, next-token cross-entropy with the clean hook activations (CE_clean), with the SAE
reconstruction at the counted tokens (CE_sae) and with those activations zeroed (CE_zero):

- ``ce_delta`` = CE_sae − CE_clean (the paper's "CE degradation");
- ``ce_loss_score`` = (CE_zero − CE_sae) / (CE_zero − CE_clean) (loss recovered; 1 = perfect);
- ``kl_sae`` = mean over tokens of KL(p_clean ‖ p_sae) = Σ_v p_clean(v) (log p_clean(v) − log p_sae(v));
  ``kl_zero`` likewise; ``kl_div_score`` = (kl_zero − kl_sae) / kl_zero.

A prediction counts when both the predicting position and the predicted token are real tokens (the
backbone's mask: BOS and padding excluded). The SAE replaces the tokens it was trained on (the backbone's
``token_filter`` may leave attention-sink outliers out: they keep their clean activations, and their
predictions still count). Sums are accumulated in float64; the batch size changes
the results only by the fp32 rounding of differently padded forward passes (~1e-8 relative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from repro.splice import splice_acts


@torch.no_grad()
def lm_loss(backbone, sae, texts: Sequence[str], hook: str, batch_size: int = 8) -> dict:
    """CE/KL degradation of ``sae`` at ``hook`` of a causal-LM ``backbone`` over ``texts`` (see module)."""
    sums = {"ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    n = 0
    for lo in range(0, len(texts), batch_size):
        inputs = backbone.preprocess(list(texts[lo : lo + batch_size]))
        acts, real = backbone.activations(inputs, hook, filtered=False)
        mask = backbone.token_filter.apply(acts, real)  # the tokens the SAE replaces
        ids = inputs["input_ids"].to(acts.device)
        counted = (real[:, :-1] & real[:, 1:]).reshape(-1)
        targets = ids[:, 1:].reshape(-1)[counted]
        logp = {}
        for name, model in (("clean", "clean"), ("sae", sae), ("zero", None)):
            spliced = acts if model == "clean" else splice_acts(model, acts, mask)
            logits = backbone.forward_from(hook, spliced, inputs)[:, :-1]
            logp[name] = F.log_softmax(logits.reshape(-1, logits.shape[-1])[counted].double(), dim=-1)
        p_clean = logp["clean"].exp()
        for name in ("clean", "sae", "zero"):
            sums[f"ce_{name}"] += float(-logp[name].gather(1, targets[:, None]).sum())
        for name in ("sae", "zero"):
            sums[f"kl_{name}"] += float((p_clean * (logp["clean"] - logp[name])).sum())
        n += int(counted.sum())
    if n == 0:
        raise ValueError("no counted tokens: the texts are empty after tokenisation")
    out = {k: v / n for k, v in sums.items()}
    gap = out["ce_zero"] - out["ce_clean"]
    out["ce_delta"] = out["ce_sae"] - out["ce_clean"]
    out["ce_loss_score"] = (out["ce_zero"] - out["ce_sae"]) / gap if gap != 0 else math.nan
    out["kl_div_score"] = (out["kl_zero"] - out["kl_sae"]) / out["kl_zero"] if out["kl_zero"] != 0 else math.nan
    out["n_tokens"] = n
    return out
