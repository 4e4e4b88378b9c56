"""Evaluate a trained run: ``evaluate_run(run_dir, names, settings)`` → one JSON per evaluation.

A run folder (``repro train``) holds ``sae/`` and ``train.json``, whose "data" record names the activation
cache the SAE was trained on, hence the backbone (name, options, weights digest), the hook point and the
dataset (name, seed, limit). Each evaluation rebuilds those from the registries, reads the activations of
the splits it reads (given, as the workflow's extract rules wrote them, or extracted here, the cache being
content addressed), and writes ``<out>/<name>.json``, the evaluation record (:mod:`repro.eval_record`), with its
numbers and provenance (SAE kind and config, the run's labels and training record, data identities and cache
hashes, evaluation settings, git commit, package versions, seconds).

Evaluations (:data:`EVALS`):

- ``reconstruction``: :class:`repro.metrics.ReconstructionMetrics` on the held-out (test) split, with the
  examples of fewest and most active latents (their class and content) and the run's thinned training curve
  for the figures (:mod:`repro.evals.payloads`);
- ``interpretability``: per-latent top examples (saved beside the JSON as ``top_examples.npz``; the purest
  latents' examples with their content and token strings in the JSON, for the concept figures), label
  purity/entropy of the top 50, firing rate and mean activation (:mod:`repro.evals.interpretability`), on the
  test split;
- ``probing``: sparse probing of the mean-pooled SAE codes and, as reference rows, of the mean-pooled
  raw activations (top-k dimensions and all dimensions) (:mod:`repro.evals.probing`): selection and
  fit on the training split, accuracy on the test split;
- ``topn``: top-n concept classification, ``official`` and ``heldout`` protocols (:mod:`repro.evals.topn`)
  with a cosine (or linear) head on the backbone's pooled final features (:mod:`repro.evals.heads`), or CLIP's
  zero-shot head;
- ``lm_loss``: CE/KL degradation with the SAE spliced in (causal language models only;
  :mod:`repro.evals.lm_loss`), on test-split texts.

The training split used by ``probing`` and ``topn`` is the training cache's own dataset when that is a
training split (so nothing is extracted twice), else ``train_limit`` examples of the training split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from repro import run_record
from repro.evals import registry, topn

EVALS = registry.names()  # the built-in evaluations (repro.evals.registry; one more is one declare there)
HEADS = ("auto", "cosine", "linear", "zero-shot")
TRAIN_SUMMARY = run_record.FILE


@dataclass
class EvalSettings:
    """test_limit: at most this many examples of the test split (a class-balanced subset; None = all).
    train_limit: at most this many examples of the training split when the training cache is not one.
    selection: the top-n selection statistic (``nonzero``, ``sum`` or ``threshold``; repro.evals.topn).
    threshold: the counting threshold of the ``threshold`` statistic (official 0.2). ns: top-n sizes.
    top_k: top examples kept per latent. probe_ks / probe_seed: sparse probing. lm_texts: test texts for
    the LM loss. head: the top-n head, "auto" (CLIP's zero-shot head for CLIP backbones, else "cosine"),
    "cosine", "linear" or "zero-shot";
    zero_shot_renormalise: re-normalise the template mean (False reproduces the official code).
    batch_size: backbone batch size. cache_root: where caches are extracted. data_root: the local folder
    of paper-scale datasets (``repro.data.load(..., root=)``; the offline ones need none). device: torch
    device for the backbone and the SAE. progress: progress bars."""

    test_limit: int | None = 1000
    train_limit: int | None = 4000
    selection: str = "nonzero"
    threshold: float = 0.2
    ns: tuple[int, ...] = (1, 5, 10, 50)
    top_k: int = 50
    probe_ks: tuple[int, ...] = (1, 2, 5)
    probe_seed: int = 42
    lm_texts: int = 64
    head: str = "auto"
    zero_shot_renormalise: bool = True
    batch_size: int = 32
    cache_root: str = "cache"
    data_root: str | None = None
    device: str = "cpu"
    progress: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""

        def pos_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        checks = [
            ("test_limit", self.test_limit is None or pos_int(self.test_limit), "a positive integer or null"),
            ("train_limit", self.train_limit is None or pos_int(self.train_limit), "a positive integer or null"),
            ("threshold", isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold), "a number"),
            ("ns", len(self.ns) > 0 and all(pos_int(n) for n in self.ns), "a list of positive integers"),
            ("top_k", pos_int(self.top_k), "a positive integer"),
            (
                "probe_ks",
                len(self.probe_ks) > 0 and all(pos_int(k) for k in self.probe_ks),
                "a list of positive integers",
            ),
            ("probe_seed", isinstance(self.probe_seed, int), "an integer"),
            ("lm_texts", pos_int(self.lm_texts), "a positive integer"),
            ("head", self.head in HEADS, f"one of {', '.join(HEADS)}"),
            ("selection", self.selection in topn.SELECTIONS, f"one of {', '.join(topn.SELECTIONS)}"),
            ("batch_size", pos_int(self.batch_size), "a positive integer"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise ValueError(f"evaluation setting {name}={getattr(self, name)!r} must be {what}")


# ----------------------------------------------------------------------------------------- the run
def read_run(run_dir: str | Path) -> dict:
    """The run record (:func:`repro.run_record.read`) of a finished run, checked to name its activation cache."""
    summary = run_record.read(run_dir)
    if "spec" not in (summary.get("data") or {}):
        raise ValueError(
            f"{Path(run_dir) / TRAIN_SUMMARY} does not record the activation cache the SAE was trained "
            "on (runs trained before this was recorded must be retrained with `repro train`)"
        )
    return summary


def backbone_from_spec(spec: dict, device: str = "cpu"):
    """Load the backbone a cache was extracted with and check that its weights are the same."""
    from repro.backbones import BACKBONES, PREFIXES
    from repro.backbones import load as load_backbone

    name = spec["name"]
    if name not in BACKBONES and not name.startswith(PREFIXES):
        raise ValueError(
            f"backbone {name!r} of this run is not a registered backbone; only reconstruction "
            "metrics on its own cache can be computed"
        )
    pre = spec.get("preprocessing", {})
    options = {k: pre[k] for k in ("image_size", "max_length") if k in pre}
    if name == "effnet-lite0":
        options["interpolation"] = "bilinear" if "bilinear" in pre.get("resize", "") else "bicubic"
    backbone = load_backbone(name, device=device, **options)
    got = backbone.spec()
    for key in ("weights_digest", "preprocessing"):
        if got.get(key) != spec.get(key):
            raise ValueError(
                f"backbone {name!r} as loaded here differs from the one the SAE's cache was extracted "
                f"with in its {key}: {got.get(key)} vs {spec.get(key)}"
            )
    return backbone


class RunData:
    """The run's SAE, backbone, hook and datasets, with the encoded splits computed once each.

    ``split_caches`` ({split: cache folder or pointer file}) are the activation caches of the splits, extracted
    beforehand (the workflow's extract rules); when given, every split read must be among them (checked to be
    extracted as the run's training cache was, on the split's dataset) and nothing is extracted. Without them a
    split's cache is extracted, or found, under ``settings.cache_root``. ``head_features`` (a folder or pointer
    of :mod:`repro.head_features`) are the training split's pooled features for the top-n head."""

    def __init__(
        self,
        run_dir: str | Path,
        settings: EvalSettings,
        pooled: bool = True,
        split_caches: dict[str, str | Path] | None = None,
        head_features: str | Path | None = None,
    ):
        from repro.cache import CacheError
        from repro.files import pointed_folder
        from repro.sae import load as load_sae

        self.run_dir = Path(run_dir)
        self.settings = settings
        self.pooled = pooled  # keep per-example pooled codes (probing needs them; E x F floats)
        self.given_caches = {s: pointed_folder(p, "cache", CacheError) for s, p in (split_caches or {}).items()}
        self.head_features = head_features
        self.summary = read_run(run_dir)
        self.cache_spec = self.summary["data"]["spec"]
        self.hook = self.cache_spec["hook"]
        self.sae = load_sae(self.run_dir / "sae", map_location=settings.device).eval()
        self._backbone = None
        self._datasets: dict[str, Any] = {}
        self._caches: dict[str, Path] = {}
        self._encoded: dict[str, Any] = {}

    @property
    def backbone(self):
        if self._backbone is None:
            from repro.backbones.token_filter import TokenFilter

            self._backbone = backbone_from_spec(self.cache_spec["backbone"], self.settings.device)
            # the tokens the SAE was trained on: evaluation caches and splicing select the same ones
            self._backbone.token_filter = TokenFilter.from_spec(self.cache_spec.get("token_filter"))
        return self._backbone

    def dataset(self, split: str):
        """The training split as trained on (when the cache holds a training split) or a subset."""
        from repro.data import load_at_most

        if split not in self._datasets:
            d = self.cache_spec["dataset"]
            if split == d["split"] and (split == "train" or d["limit"] == self.settings.test_limit):
                limit = d["limit"]
            else:
                limit = self.settings.test_limit if split == "test" else self.settings.train_limit
            self._datasets[split] = load_at_most(d["name"], split, limit, d["seed"], root=self.settings.data_root)
        return self._datasets[split]

    def cache(self, split: str) -> Path:
        """The activation cache of ``split``: the given one (checked), else extracted or found (class docstring)."""
        from repro.cache import extract

        if split not in self._caches:
            if self.given_caches:
                self._caches[split] = self._given_cache(split)
            else:
                s = self.cache_spec
                self._caches[split] = extract(
                    self.backbone,
                    self.dataset(split),
                    self.hook,
                    self.settings.cache_root,
                    dtype=s["dtype"],
                    batch_size=s["batch_size"],
                    shard_tokens=s["shard_tokens"],
                    progress=self.settings.progress,
                )
        return self._caches[split]

    def _given_cache(self, split: str) -> Path:
        """The given cache of ``split``, refused (CacheError) unless its spec is the training cache's with the
        split's dataset: same backbone, hook, token filter, dtype, batching, and the dataset this evaluation
        reads (name, split, seed and limit)."""
        from repro.cache import ActivationCache, CacheError

        if split not in self.given_caches:
            raise CacheError(
                f"no activation cache was given for the {split} split (given: {', '.join(self.given_caches)}); "
                "an evaluation with given caches never extracts one"
            )
        folder = self.given_caches[split]
        spec = ActivationCache.open(folder, checksums=False).metadata["spec"]
        expected = self.cache_spec | {"dataset": json.loads(json.dumps(self.dataset(split).spec()))}
        differ = sorted(k for k in set(spec) | set(expected) if spec.get(k) != expected.get(k))
        if differ:
            raise CacheError(
                f"the {split} split's cache {folder} is not the one this evaluation reads: it differs from the "
                f"run's training cache with the {split} split's dataset in {', '.join(differ)}"
            )
        return folder

    def pooled_head_features(self) -> Tensor:
        """The training split's pooled final features for the top-n head: the given ones (checked to be of this
        backbone and split, :mod:`repro.head_features`), else computed or found under ``settings.cache_root``."""
        from repro import head_features
        from repro.evals.heads import cached_features

        data = self.dataset("train")
        if self.head_features is not None:
            return head_features.read(self.head_features, head_features.features_spec(self.backbone, data))
        return cached_features(
            self.backbone,
            data,
            self.settings.batch_size,
            self.settings.cache_root,
            acts_cache=self.cache("train"),
            hook=self.hook,
        )

    def encoded(self, split: str):
        """The split encoded once (:func:`repro.evals.latents.encode_cache`), pooled codes kept if asked."""
        from repro.cache import ActivationCache
        from repro.evals.latents import encode_cache

        if split not in self._encoded:
            self._encoded[split] = encode_cache(
                self.sae,
                ActivationCache.open(self.cache(split)),
                threshold=self.settings.threshold,
                top_k=self.settings.top_k,
                pooled=self.pooled,
                n_classes=len(self.dataset(split).class_names),
                device=self.settings.device,
            )
        return self._encoded[split]

    def data_record(self, splits: tuple[str, ...]) -> dict:
        return {
            "backbone": self.cache_spec["backbone"],
            "hook": self.hook,
            "training_cache": self.summary["data"].get("spec_hash"),
            "splits": {
                s: {"dataset": self.dataset(s).spec() | {"class_names": None}, "cache": self.cache(s).name}
                for s in splits
            },
        }


def applicable(run: RunData, name: str) -> bool:
    """Whether evaluation ``name`` applies to this run's backbone (:mod:`repro.evals.registry`: lm_loss needs a
    causal LM)."""
    return registry.get(name).applies_to(run.cache_spec["backbone"])


def evaluate_run(
    run_dir: str | Path,
    names: tuple[str, ...] | list[str],
    settings: EvalSettings | None = None,
    out_dir: str | Path | None = None,
    split_caches: dict[str, str | Path] | None = None,
    head_features: str | Path | None = None,
) -> dict[str, Path]:
    """Run the evaluations ``names`` (see :data:`EVALS`; "all" = every applicable one) on ``run_dir``; write
    ``<out_dir>/<name>.json`` (default ``<run_dir>/eval``); return the written paths. ``split_caches`` and
    ``head_features``: the splits' activation caches and the head's pooled features, extracted beforehand
    (:class:`RunData`)."""
    from repro import eval_record
    from repro.provenance import provenance

    settings = settings or EvalSettings()
    settings.validate()
    names = list(names)
    unknown = sorted(set(names) - set(registry.names()) - {"all"})
    if unknown:
        raise ValueError(f"unknown evaluation(s) {', '.join(unknown)}; known: {', '.join(registry.names())}, all")
    run = RunData(run_dir, settings, "probing" in names or "all" in names, split_caches, head_features)
    if "all" in names:
        names = [n for n in registry.names() if applicable(run, n)]
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    written = {}
    for name in names:
        began = time.perf_counter()
        results, splits = registry.get(name).function()(run)
        record = {
            "eval": name,
            "run": str(run_dir),
            "kind": run.sae.kind,
            "sae_config": dataclasses.asdict(run.sae.cfg),
            "train_config": run.summary["train_config"],
            "seed": run.summary["train_config"].get("seed"),
            **eval_record.run_fields(run.summary),
            "data": run.data_record(splits),
            "settings": dataclasses.asdict(settings),
            "results": results,
            "seconds": time.perf_counter() - began,
            "provenance": provenance(),
        }
        path = eval_record.write(out_dir / f"{name}.json", record)
        if name == "interpretability":
            _save_top_examples(out_dir / "top_examples.npz", run.encoded("test"))
        written[name] = path
    return written


def _save_top_examples(path: Path, enc) -> None:
    """Per latent its top examples: values (float32), example ids, token positions, labels (int32; -1
    for empty slots), for the concept figures."""
    from repro.files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                values=enc.top_values.astype(np.float32),
                ids=enc.top_ids.astype(np.int64),
                positions=enc.top_positions.astype(np.int32),
                labels=enc.top_labels.astype(np.int32),
            )

    atomic_write(path, write)
