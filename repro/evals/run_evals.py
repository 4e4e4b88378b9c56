"""The built-in evaluations as functions of a run: each takes a :class:`repro.evaluate.RunData` (the run's SAE,
backbone, hook and splits, encoded once) and returns ``(results, splits read)``. The catalogue
(:mod:`repro.evals.registry`) names them; ``repro evaluate`` (:func:`repro.evaluate.evaluate_run`) runs them and
writes one evaluation record each. What each computes is in :mod:`repro.evaluate`'s docstring and the modules
they call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from repro.evals.payloads import describe, token_strings, training_curve
from repro.train_files import LOG_FILE

if TYPE_CHECKING:
    from repro.evaluate import RunData


def evaluate_reconstruction(run: RunData) -> tuple[dict, tuple[str, ...]]:
    """The ``reconstruction`` evaluation (:mod:`repro.evaluate`) on the test split: (results, splits read)."""
    from repro.cache import ActivationCache
    from repro.evals.calibration import complexity_scores, l0_calibration
    from repro.metrics import bootstrap_ratio_ci

    enc = run.encoded("test")
    calibration = l0_calibration(
        enc.token_l0, complexity_scores(ActivationCache.open(run.cache("test"), checksums=False))
    )
    order = np.lexsort((enc.ids, enc.example_l0))  # by mean per-token L0, ties to the lower id
    pick = [{"id": int(enc.ids[i]), "label": int(enc.labels[i]), "l0": float(enc.example_l0[i])} for i in order]
    n = min(5, len(pick) // 2)
    fewest, most = pick[:n], pick[::-1][:n]
    for example, shown in zip(
        fewest + most, describe(run.dataset("test"), [e["id"] for e in fewest + most]), strict=True
    ):
        example |= shown
    examples = {"fewest": fewest, "most": most, "definition": "mean over the example's tokens of #{i : a_ti != 0}"}
    ci = {
        "nmse": bootstrap_ratio_ci(enc.example_sse, enc.example_energy),
        "l0": bootstrap_ratio_ci(enc.example_l0, np.ones(len(enc.example_l0))),
    }
    ci["l0"]["definition"] = "mean over examples of the example's mean per-token L0 (examples weighted equally)"
    curve = training_curve(run.run_dir / LOG_FILE)
    return enc.reconstruction | {
        "example_l0": examples,
        "ci95": ci,
        "l0_calibration": calibration,
        "training_curve": curve,
    }, ("test",)


def concept_examples(run: RunData, n_latents: int = 8, n_examples: int = 5) -> list[dict]:
    """For the purest latents (label purity of their top examples, then the number of examples), their
    top examples with the latent's activation at every token of the example (positions as in the cache), the
    example's class name and content (:func:`repro.evals.payloads.describe`) and, for text, its tokens."""
    import torch

    from repro.cache import ActivationCache
    from repro.evals.interpretability import label_distributions, purity

    enc = run.encoded("test")
    probs, used = label_distributions(
        enc.top_values, enc.top_labels, len(run.dataset("test").class_names), top=run.settings.top_k
    )
    pur = np.nan_to_num(purity(probs), nan=-1.0)
    candidates = np.flatnonzero(used >= min(n_examples, run.settings.top_k))
    chosen = candidates[np.lexsort((candidates, -used[candidates], -pur[candidates]))][:n_latents]
    cache = ActivationCache.open(run.cache("test"), checksums=False)
    index = cache.index()
    out = []
    for latent in chosen:
        examples = []
        for slot in range(min(n_examples, int(used[latent]))):
            ex_id = int(enc.top_ids[latent, slot])
            rows = np.flatnonzero(index[:, 0] == ex_id)
            with torch.no_grad():
                acts = run.sae(cache.tokens(int(rows[0]), int(rows[-1]) + 1).to(run.settings.device))[1][:, latent]
            positions = index[rows, 1].tolist()
            (shown,) = describe(run.dataset("test"), [ex_id])
            tokens = None if shown["text"] is None else token_strings(run.backbone, shown["text"], positions)
            examples.append(
                {
                    "id": ex_id,
                    "label": int(enc.top_labels[latent, slot]),
                    "value": float(enc.top_values[latent, slot]),
                    "positions": positions,
                    "token_acts": acts.float().cpu().tolist(),
                    **shown,
                    "tokens": tokens,
                }
            )
        out.append(
            {"latent": int(latent), "purity": float(pur[latent]), "n_examples": int(used[latent]), "examples": examples}
        )
    return out


def evaluate_interpretability(run: RunData) -> tuple[dict, tuple[str, ...]]:
    """The ``interpretability`` evaluation (:mod:`repro.evaluate`) on the test split: (results, splits read)."""
    from repro.evals.interpretability import firing_stats, interpretability_scores

    enc = run.encoded("test")
    n_classes = len(run.dataset("test").class_names)
    scores = interpretability_scores(
        enc.top_values, enc.top_labels, n_classes, alive=enc.fire_count > 0, top=run.settings.top_k
    )
    firing = firing_stats(enc.fire_count, enc.act_sum, enc.n_tokens, enc.example_fire_count, enc.n_examples)
    return {
        "scores": scores,
        "firing": firing,
        "class_names": run.dataset("test").class_names,
        "concepts": concept_examples(run),
    }, ("test",)


def evaluate_probing(run: RunData) -> tuple[dict, tuple[str, ...]]:
    """The ``probing`` evaluation (:mod:`repro.evaluate`): fit on the training split, scored on the test split."""
    from repro.evals.probing import sparse_probing

    tr, te = run.encoded("train"), run.encoded("test")
    names = run.dataset("test").class_names
    kw = {"ks": run.settings.probe_ks, "seed": run.settings.probe_seed, "class_names": names}
    out = {
        "sae": sparse_probing(tr.pooled, tr.labels, te.pooled, te.labels, **kw),
        "raw": sparse_probing(tr.pooled_raw, tr.labels, te.pooled_raw, te.labels, all_features=True, **kw),
    }
    out["summary"] = {f"sae_top_{k}": out["sae"]["mean"][f"k={k}"] for k in run.settings.probe_ks}
    out["summary"] |= {f"raw_top_{k}": out["raw"]["mean"][f"k={k}"] for k in run.settings.probe_ks}
    out["summary"]["raw_all"] = out["raw"]["mean"]["all"]
    return out, ("train", "test")


def evaluate_topn(run: RunData) -> tuple[dict, tuple[str, ...]]:
    """The ``topn`` evaluation (:mod:`repro.evaluate`), both protocols: (results, splits read)."""
    from repro.backbones import ClipBackbone
    from repro.evals.heads import CosineHead, LinearHead, ZeroShotHead, resolve_head
    from repro.evals.topn import selection_statistic, topn_classification

    backbone = run.backbone
    sel = run.settings.selection
    selections = {
        p: selection_statistic(e.class_nonzero, e.class_sums, e.class_counts, sel)
        for p, e in (("official", run.encoded("test")), ("heldout", run.encoded("train")))
    }
    kind = resolve_head(run.settings.head, run.cache_spec["backbone"]["name"])
    if kind == "zero-shot":
        if not isinstance(backbone, ClipBackbone):
            raise ValueError(f"head 'zero-shot' needs a CLIP backbone; this run's backbone is {backbone.name}")
        renorm = run.settings.zero_shot_renormalise
        weights = backbone.zero_shot_weights(run.dataset("test").class_names, renormalise=renorm)
        head = ZeroShotHead(
            weights, f"80 OpenAI ImageNet templates, template mean {'re-' if renorm else 'not '}normalised"
        )
    else:
        head = (CosineHead if kind == "cosine" else LinearHead)().fit(
            run.pooled_head_features(), run.dataset("train").labels
        )
    res = topn_classification(
        backbone,
        run.sae,
        run.hook,
        run.dataset("test"),
        head,
        selections,
        ns=run.settings.ns,
        batch_size=run.settings.batch_size,
        progress=run.settings.progress,
        acts_cache=run.cache("test"),
    )
    res["head"] = head.spec()
    res["selection"] = sel
    res["threshold"] = run.settings.threshold if sel == "threshold" else None
    res["encoder"] = (
        "selection statistics from the SAE as trained (frequency mask frozen); classification from "
        "its code without the frequency mask (official forward_clamp), except setting 'sae'"
    )
    return res, ("train", "test")


def evaluate_lm_loss(run: RunData) -> tuple[dict, tuple[str, ...]]:
    """The ``lm_loss`` evaluation (:mod:`repro.evaluate`) on test-split texts of a causal LM: (results, splits read)."""
    from repro.backbones import CausalLMBackbone
    from repro.evals.lm_loss import lm_loss

    if not isinstance(run.backbone, CausalLMBackbone):
        raise ValueError(f"lm_loss needs a causal language model; this run's backbone is {run.backbone.name}")
    texts = list(run.dataset("test").examples[: run.settings.lm_texts])
    return lm_loss(run.backbone, run.sae, texts, run.hook, batch_size=min(8, run.settings.batch_size)), ("test",)
