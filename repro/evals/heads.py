"""Heads for the top-n evaluation and the pooled final features they read.

A head classifies the backbone's pooled final features: :class:`CosineHead` (offline default: nearest class
mean by cosine of the unmodified backbone's pooled features of the training split; CLIP's zero-shot head is a
cosine head too), :class:`LinearHead` (logistic regression, an option) or :class:`ZeroShotHead` (CLIP at paper
scale: cosine logits against class text embeddings). The pooled features of a split are computed once per
backbone and split and kept in the cache protocol (:func:`head_features_folder`, :mod:`repro.head_features`),
from the split's activation cache through the layers after the hook where the backbone can
(:func:`features_from_activation_cache`), else by a full forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from repro.backbones.base import Backbone


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
        return {
            "head": "linear",
            "model": "L2 normalisation + StandardScaler + LogisticRegression(C=1, lbfgs, max_iter=1000)",
            "fitted_on": "pooled final features of the unmodified backbone, training split",
            "converged": self.converged,
        }


class CosineHead:
    """Nearest class mean by cosine: prediction = argmax_c cos(f, μ_c), μ_c the normalised mean of the
    class's L2-normalised training features (float64). The default offline head: it judges a feature vector
    by its direction only, as CLIP's zero-shot head does (cosine logits against one embedding per class),
    and has nothing to fit beyond the class means, so it reads reconstructions of the backbone's inputs
    as it reads the clean ones."""

    def __init__(self):
        self.means: np.ndarray | None = None

    def fit(self, features: Tensor | np.ndarray, labels: np.ndarray) -> CosineHead:
        x, labels = _unit_rows(features), np.asarray(labels)
        classes = int(labels.max()) + 1
        means = np.zeros((classes, x.shape[1]))
        np.add.at(means, labels, x)
        self.means = _unit_rows(means)
        return self

    def predict(self, features: Tensor) -> np.ndarray:
        return (_unit_rows(features) @ self.means.T).argmax(1)

    def spec(self) -> dict:
        return {
            "head": "cosine",
            "model": "nearest class mean by cosine similarity (L2-normalised features)",
            "fitted_on": "pooled final features of the unmodified backbone, training split",
        }


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
    out = [
        backbone.features(backbone.preprocess(examples[lo : lo + batch_size])).cpu()
        for lo in range(0, len(examples), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def cached_example_activations(backbone, data, acts_cache: str | Path, hook: str) -> Tensor | None:
    """The activations ``(N, T, d)`` at ``hook`` of every example of ``data``, in order, read from its
    activation cache; None when they cannot stand in for a fresh forward pass: the backbone cannot run its
    tail from cached activations (``features_from_cached``), the cache is not float32, or it does not hold
    every token of every example of ``data`` in order (ids, positions 0..T-1: a token filter may have
    dropped some). Memory-mapped: nothing is copied until a slice is used."""
    from repro.cache import ActivationCache

    cache = ActivationCache.open(acts_cache)
    n_tokens = getattr(backbone, "n_tokens", None)
    if (
        cache.metadata["dtype"] != "float32"
        or n_tokens is None
        or type(backbone).features_from_cached is Backbone.features_from_cached
    ):
        return None
    t, n = n_tokens(hook), len(data)
    index = cache.index()
    if len(index) != n * t:
        return None
    ids, positions = index[:, 0].reshape(n, t), index[:, 1].reshape(n, t)
    if not (
        (ids == ids[:, :1]).all()
        and (positions == np.arange(t)).all()
        and np.array_equal(ids[:, 0], np.asarray(data.ids))
    ):
        return None
    return cache.tokens(0, n * t).view(n, t, cache.d_model)


def features_from_activation_cache(
    backbone, data, acts_cache: str | Path, hook: str, batch_size: int = 256
) -> Tensor | None:
    """:func:`pooled_features` of ``data`` computed from its activation cache at ``hook`` through the rest
    of the network only (``backbone.features_from_cached``): for EfficientNet at ``blocks.5.3`` that skips
    the costly high-resolution stages. None, so that the caller runs the full forward pass, where
    :func:`cached_example_activations` is None."""
    acts = cached_example_activations(backbone, data, acts_cache, hook)
    if acts is None:
        return None
    out = []
    for lo in range(0, len(acts), batch_size):
        feats = backbone.features_from_cached(hook, acts[lo : lo + batch_size])
        if feats is None:
            return None
        out.append(feats.cpu())
    return torch.cat(out) if out else None


def resolve_head(head: str, backbone: str) -> str:
    """The top-n head ``head`` names for backbone ``backbone``: ``auto`` is CLIP's zero-shot head on a CLIP
    backbone (one whose class computes zero-shot weights) and the cosine head elsewhere; others are themselves."""
    if head != "auto":
        return head
    from repro.backbones import backbone_class

    return "zero-shot" if hasattr(backbone_class(backbone), "zero_shot_weights") else "cosine"


def head_features_folder(
    backbone,
    data,
    batch_size: int = 32,
    cache_root: str | Path = "cache",
    acts_cache: str | Path | None = None,
    hook: str | None = None,
) -> Path:
    """The folder of :func:`pooled_features` of ``data`` in the cache protocol under ``cache_root``
    (:mod:`repro.head_features`: content addressed by the backbone's and the dataset's identity, verified,
    written atomically under a lock; computed only when absent or damaged), so that every run on one backbone
    and split shares one forward pass. With ``acts_cache`` (the activation cache of ``data`` at ``hook``) they
    are computed from it where :func:`features_from_activation_cache` can."""
    from repro import head_features

    spec = head_features.features_spec(backbone, data)
    return head_features.write(cache_root, spec, lambda: _compute(backbone, data, batch_size, acts_cache, hook))


def _compute(backbone, data, batch_size: int, acts_cache, hook) -> tuple[Tensor, str]:
    """(:func:`pooled_features` of ``data``, how they were computed): from ``acts_cache`` where it can."""
    if acts_cache is not None and hook is not None:
        feats = features_from_activation_cache(backbone, data, acts_cache, hook)
        if feats is not None:
            return feats, f"the split's activation cache at {hook}, through the layers after it"
    return pooled_features(backbone, data.examples, batch_size), "a full forward pass"


def cached_features(
    backbone,
    data,
    batch_size: int = 32,
    cache_root: str | Path | None = None,
    acts_cache: str | Path | None = None,
    hook: str | None = None,
) -> Tensor:
    """:func:`pooled_features` of ``data``: read from (or first written to) :func:`head_features_folder` under
    ``cache_root`` when it is given, else computed (from ``acts_cache`` where it can)."""
    from repro import head_features

    if cache_root is None:
        return _compute(backbone, data, batch_size, acts_cache, hook)[0]
    folder = head_features_folder(backbone, data, batch_size, cache_root, acts_cache, hook)
    return head_features.read(folder, head_features.features_spec(backbone, data))


def split_head_features(
    cache: str | Path,
    cache_root: str | Path,
    *,
    batch_size: int = 32,
    device: str = "cpu",
    data_root: str | None = None,
) -> Path:
    """The :func:`head_features_folder` of the split an activation cache holds: the backbone and the dataset
    (name, split, seed, limit) its spec names, computed from the cache where the backbone can
    (``repro features``, the workflow's ``head_features`` rule)."""
    import json

    from repro.cache import ActivationCache
    from repro.data import load
    from repro.evaluate import backbone_from_spec

    spec = ActivationCache.open(cache, checksums=False).metadata["spec"]
    backbone = backbone_from_spec(spec["backbone"], device)
    d = spec["dataset"]
    data = load(
        d["name"], split=d["split"], limit=d["limit"], seed=d["seed"], **({"root": data_root} if data_root else {})
    )
    if json.loads(json.dumps(data.spec())) != d:
        raise ValueError(f"the dataset {d['name']} ({d['split']}) loaded here is not the one cache {cache} holds")
    return head_features_folder(backbone, data, batch_size, cache_root, acts_cache=cache, hook=spec["hook"])


def fit_linear_head(backbone, data, **features) -> LinearHead:
    """A :class:`LinearHead` fitted on ``data`` (a LabelledData, normally the training split), on its
    :func:`cached_features` (``features``: that function's batch_size, cache_root, acts_cache and hook)."""
    return LinearHead().fit(cached_features(backbone, data, **features), data.labels)


def fit_cosine_head(backbone, data, **features) -> CosineHead:
    """A :class:`CosineHead` from ``data``'s :func:`cached_features` (as in :func:`fit_linear_head`)."""
    return CosineHead().fit(cached_features(backbone, data, **features), data.labels)


__all__ = [
    "CosineHead",
    "LinearHead",
    "ZeroShotHead",
    "cached_example_activations",
    "cached_features",
    "features_from_activation_cache",
    "fit_cosine_head",
    "fit_linear_head",
    "head_features_folder",
    "pooled_features",
    "resolve_head",
    "split_head_features",
]
