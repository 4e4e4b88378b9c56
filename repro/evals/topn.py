"""Top-n concept classification: how much class information an SAE's top-n latents per class carry.

Protocol (the paper's "on n" numbers; ``official_code.md`` §5.2–5.3, ``metrics.md`` §9):

1. Selection statistic: per class c and latent i, cnt[c, i] = Σ over the class's examples and tokens of
   1[a_ti > threshold] (threshold 0.2 as in the official code, on the SAE's code a = ``sae(x)[1]``).
   idx_c(n) = the n latents with the largest cnt[c, ·], ties to the lower latent index (the official
   code's argsort leaves ties in unspecified order).
2. Classification: every counted token at the hook is replaced by the SAE reconstruction of a scaled
   code, x̂ = decode(a ⊙ s), and the backbone finishes the forward pass to its final features, which a
   head classifies. For an example of ground-truth class c: ``on_n`` keeps only idx_c(n)
   (s = 1 on idx_c, 0 elsewhere), ``off_n`` removes them (s = 0 on idx_c, 1 elsewhere). Reference
   settings: ``no_sae`` (clean forward), ``sae`` (full reconstruction, = on_all), ``off_all`` (every
   latent removed: decode of the zero code, which is 0 for the normalised SAEs and b_dec for the
   others) and ``zero`` (the hook's counted tokens zeroed).
3. Metric: per-class accuracy (percent of the class's examples predicted as the class), then the mean
   over the classes present (class-balanced accuracy, the official ``metrics_mean.csv``).

Two protocols share step 2 and differ in where step 1 counts: ``official`` counts on the same split that
is classified (as the official code does on ImageNet val), ``heldout`` counts on the training split and
classifies the test split. The gap between them measures how much the official numbers profit from
selecting on the evaluation images.

Heads: :class:`LinearHead` (offline default: multinomial logistic regression on standardised pooled
final features of the unmodified backbone, fitted on the training split) or :class:`ZeroShotHead` (CLIP
at paper scale: cosine logits against class text embeddings).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def select_latents(class_counts: np.ndarray, n: int) -> np.ndarray:
    """(C, n) latent indices: per class the n largest counts, ties to the lower index."""
    counts = np.asarray(class_counts)
    n = min(int(n), counts.shape[1])
    order = np.argsort(-counts, axis=1, kind="stable")
    return order[:, :n]


def selection_mask(class_counts: np.ndarray, n: int) -> Tensor:
    """(C, F) float mask, 1 on each class's top-n latents (:func:`select_latents`)."""
    counts = np.asarray(class_counts)
    mask = np.zeros(counts.shape, np.float32)
    np.put_along_axis(mask, select_latents(counts, n), 1.0, axis=1)
    return torch.from_numpy(mask)


class LinearHead:
    """Multinomial logistic regression (scikit-learn, C = 1, lbfgs, max_iter = 1000) on L2-normalised,
    then standardised features (mean 0, variance 1 per dimension, fitted on the training features).

    The normalisation makes the head judge a feature vector by its direction, as CLIP's zero-shot head
    (cosine similarity) does in the paper's protocol: a reconstruction from a few latents, which carries
    little of the input's energy, is classified by what it points at, not by how small it is."""

    def __init__(self, max_iter: int = 1000, C: float = 1.0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        self.converged = None

    def fit(self, features: Tensor | np.ndarray, labels: np.ndarray) -> LinearHead:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            self.model.fit(_unit_rows(features), np.asarray(labels))
        self.converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return self

    def predict(self, features: Tensor) -> np.ndarray:
        return self.model.predict(_unit_rows(features))

    def spec(self) -> dict:
        return {"head": "linear", "model": "L2 normalisation + StandardScaler + LogisticRegression(C=1, lbfgs, "
                "max_iter=1000)",
                "fitted_on": "pooled final features of the unmodified backbone, training split",
                "converged": self.converged}


def _unit_rows(features) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float64."""
    x = np.asarray(features.cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class ZeroShotHead:
    """Prediction = argmax_c ⟨f, w_c⟩ over class text embeddings w (C, D) (CLIP zero-shot; the logit
    scale does not change the argmax)."""

    def __init__(self, weights: Tensor, description: str = "zero-shot"):
        self.weights = weights.float()
        self.description = description

    def predict(self, features: Tensor) -> np.ndarray:
        return (features.float() @ self.weights.to(features.device).T).argmax(-1).cpu().numpy()

    def spec(self) -> dict:
        return {"head": "zero-shot", "description": self.description, "n_classes": int(self.weights.shape[0])}


@torch.no_grad()
def pooled_features(backbone, examples: Sequence, batch_size: int = 32) -> Tensor:
    """(N, D) pooled final features of the unmodified backbone (``backbone.features``)."""
    out = [backbone.features(backbone.preprocess(examples[lo:lo + batch_size])).cpu()
           for lo in range(0, len(examples), batch_size)]
    return torch.cat(out)


def cached_features(backbone, data, batch_size: int = 32, cache_root: str | Path | None = None) -> Tensor:
    """:func:`pooled_features` of ``data``, kept in ``<cache_root>/features/<sha256>.npy`` when ``cache_root``
    is given (the hash covers the backbone's and the dataset's identity, as activation caches do), so that
    every run on one backbone and split shares one forward pass. Written atomically under a lock."""
    if cache_root is None:
        return pooled_features(backbone, data.examples, batch_size)
    from repro.cache import exclusive, spec_hash
    from repro.files import atomic_write

    key = spec_hash({"what": "pooled final features", "backbone": backbone.spec(), "dataset": data.spec()})
    folder = Path(cache_root) / "features"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.npy"
    with exclusive(folder / f".{key}.lock"):
        if path.is_file():
            try:
                feats = np.load(path)
                if feats.shape[0] == len(data):
                    return torch.from_numpy(feats)
            except (OSError, ValueError):  # a damaged file is recomputed
                pass
        feats = pooled_features(backbone, data.examples, batch_size)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, feats.numpy())

        atomic_write(path, write)
        return feats


def fit_linear_head(backbone, data, batch_size: int = 32, cache_root: str | Path | None = None) -> LinearHead:
    """A :class:`LinearHead` fitted on ``data`` (a LabelledData, normally the training split); the
    features are cached under ``cache_root`` (see :func:`cached_features`)."""
    return LinearHead().fit(cached_features(backbone, data, batch_size, cache_root), data.labels)


def decoder_rows(sae, latents: Tensor) -> dict[int, Tensor]:
    """Row r_i = decode(e_i, u) − decode(0, u) of every latent i in ``latents``, u the unit context (no
    per-token scale or shift: ``sae.unit_context``). Every kind decodes affinely,
    decode(a, ctx) = decode(0, ctx) + s·Σ_i a_i r_i with s = ``sae.context_scale(ctx)`` (‖x‖ for the kinds
    that rescale by the input norm, the token's standard deviation for per-token standardisation, else 1),
    so a reconstruction from a few latents costs a few rows instead of a full decode."""
    device = next(sae.parameters()).device
    eye = torch.zeros(len(latents), sae.cfg.d_sae, device=device)
    eye[torch.arange(len(latents)), latents.to(device)] = 1.0
    unit = sae.unit_context(len(latents), device)
    r = sae.decode(eye, unit) - sae.decode(torch.zeros_like(eye[:1]), None if unit is None else unit[:1])
    return {int(i): r[j] for j, i in enumerate(latents.tolist())}


def kept_decode(code: Tensor, tok_class: Tensor, idx: Tensor, rows: dict[int, Tensor], base: Tensor,
                scale: Tensor | None) -> Tensor:
    """decode(code ⊙ keep) where each token keeps only its class's latents ``idx[class]`` (C, n):
    base + s·Σ_{i ∈ idx[c]} a_i r_i (``scale`` s per token, None = 1), class by class from the decoder rows."""
    out = torch.zeros_like(base)
    for c in torch.unique(tok_class).tolist():
        tok = tok_class == c
        lat = idx[c].tolist()
        out[tok] = code[tok][:, lat] @ torch.stack([rows[i] for i in lat])
    if scale is not None:
        out = out * scale
    return base + out


def settings_for(protocols: Sequence[str], ns: Sequence[int]) -> list[str]:
    """Setting names in report order: no_sae, sae, off_all, zero, then per protocol on_n/off_n."""
    names = ["no_sae", "sae", "off_all", "zero"]
    for p in protocols:
        names += [f"{p}/{side}_{n}" for n in ns for side in ("on", "off")]
    return names


@torch.no_grad()
def topn_classification(backbone, sae, hook: str, data, head, selections: dict[str, np.ndarray],
                        ns: Sequence[int] = (1, 5, 10, 50), batch_size: int = 32, progress: bool = False) -> dict:
    """Class-balanced accuracy (percent) of ``head`` on ``data`` under every setting (module docstring).

    ``selections`` maps a protocol name to its (C, F) class counts (step 1). Returns ``mean_pct``
    {setting: accuracy}, ``per_class_pct`` {setting: [accuracy per class, None for absent classes]},
    ``class_names``, ``n_examples``, ``selected`` {protocol: {n: (C, n) indices as lists}}."""
    from tqdm import tqdm

    n_classes = len(data.class_names)
    for p, c in selections.items():
        if np.shape(c) != (n_classes, sae.cfg.d_sae):
            raise ValueError(f"class counts of protocol {p!r} have shape {np.shape(c)}, expected "
                             f"(n_classes, d_sae) = ({n_classes}, {sae.cfg.d_sae})")
    was_training = sae.training
    sae.eval()
    selected = {(p, n): torch.from_numpy(select_latents(c, n)) for p, c in selections.items() for n in ns}
    union = torch.unique(torch.cat([i.reshape(-1) for i in selected.values()]))
    rows = decoder_rows(sae, union)
    names = settings_for(list(selections), ns)
    correct = {s: np.zeros(n_classes) for s in names}
    total = np.zeros(n_classes)
    labels_all = np.asarray(data.labels)
    try:
        for lo in tqdm(range(0, len(labels_all), batch_size), disable=not progress, desc="top-n"):
            labels = labels_all[lo:lo + batch_size]
            inputs = backbone.preprocess(data.examples[lo:lo + batch_size])
            acts, mask = backbone.activations(inputs, hook)
            x = acts[mask]
            code = sae.encode(x)
            ctx = sae.input_context(x)
            scale = sae.context_scale(ctx)
            tok_class = torch.as_tensor(labels, device=acts.device)[:, None].expand_as(mask)[mask]

            full, base = sae.decode(code, ctx), sae.decode(torch.zeros_like(code), ctx)
            recon = {"sae": full, "off_all": base, "zero": torch.zeros_like(x)}
            active = (code != 0).sum(1)
            for (p, n), idx in selected.items():
                on = kept_decode(code, tok_class, idx, rows, base, scale)
                recon[f"{p}/on_{n}"] = on
                # off = decode(a ⊙ (1 − keep)) = full − (on − base); exactly base where nothing is left
                nothing_left = active == (code.gather(1, idx.to(code.device)[tok_class]) != 0).sum(1)
                recon[f"{p}/off_{n}"] = torch.where(nothing_left[:, None], base, full - (on - base))
            out = {"no_sae": backbone.features_from(hook, acts, inputs)}
            for name, x_hat in recon.items():
                spliced = acts.clone()
                spliced[mask] = x_hat.to(acts.dtype)
                out[name] = backbone.features_from(hook, spliced, inputs)
            for name, f in out.items():
                hit = head.predict(f) == labels
                np.add.at(correct[name], labels, hit)
            np.add.at(total, labels, 1)
    finally:
        sae.train(was_training)
    present = total > 0
    per_class = {s: [float(100 * c / t) if t else None for c, t in zip(correct[s], total, strict=True)]
                 for s in names}
    mean = {s: float(np.mean(100 * correct[s][present] / total[present])) for s in names}
    selected = {p: {str(n): select_latents(c, n).tolist() for n in ns if n <= 10} for p, c in selections.items()}
    return {"mean_pct": mean, "per_class_pct": per_class, "class_names": list(data.class_names),
            "n_examples": int(total.sum()), "n_classes_present": int(present.sum()), "ns": list(ns),
            "protocols": list(selections), "selected": selected}


__all__ = ["LinearHead", "ZeroShotHead", "fit_linear_head", "pooled_features", "select_latents",
           "selection_mask", "settings_for", "topn_classification"]
