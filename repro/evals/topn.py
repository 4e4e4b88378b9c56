"""Top-n concept classification: how much class information an SAE's top-n latents per class carry.

Protocol (the paper's "on n" numbers; ``official_code.md`` §5.2–5.3, ``metrics.md`` §9), with the changes
that make it able to say something on a small offline setup (``review_turn2.md`` §3):

1. Selection statistic stat[c, i] over the class's examples and tokens of the SAE's code a = ``sae(x)[1]``
   (the SAE as trained, frequency mask frozen): ``nonzero`` Σ 1[a_ti ≠ 0] (default: scale-free, so a
   sparsemax SAE whose codes lie in (0, 0.23] is not wiped out), ``sum`` Σ a_ti, or the official
   ``threshold`` Σ 1[a_ti > 0.2]. idx_c(n) = the n largest stat[c, ·], ties to the lower latent index.
   A class with fewer than n positive entries is an error (:class:`TopNSelectionError`), never filled
   with latents 0..n-1 that never fired for it.
2. Classification: every counted token at the hook is replaced by the SAE reconstruction of a scaled
   code, x̂ = decode(a ⊙ s), with a the code *without* the frequency mask (the official ``forward_clamp``),
   and the backbone finishes the forward pass to its final pooled features, which a head classifies.
   For an example of ground-truth class c: ``on_n`` keeps only idx_c(n), ``off_n`` removes them.
   Controls: ``agnostic_n`` keeps the n latents with the largest statistic summed over classes (the same
   for every class), ``random_n`` n seeded random latents among those that fire (the same for every
   class); ``no_sae`` (clean forward), ``sae`` (full reconstruction by the SAE as trained), ``on_all`` (full
   reconstruction without the mask, the official on_F), ``off_all`` (decode of the zero code) and
   ``zero`` (the hook's tokens zeroed).
3. Metric: per-class accuracy (percent of the class's examples predicted as the class), then the mean
   over the classes present (class-balanced accuracy, the official ``metrics_mean.csv``).
4. Gate (:func:`setup_gate`): a setup is usable only when no_sae is far above chance and the full
   reconstructions lose at most 10 points of it; otherwise on_n cannot measure what the latents carry.

Two protocols share step 2 and differ in where step 1 counts: ``official`` counts on the same split that
is classified (as the official code does on ImageNet val), ``heldout`` counts on the training split and
classifies the test split. The gap between them measures how much the official numbers profit from
selecting on the evaluation images.

Heads: :class:`CosineHead` (offline default: nearest class mean by cosine of the pooled final features of
the unmodified backbone on the training split; CLIP's zero-shot head is a cosine head too),
:class:`LinearHead` (logistic regression, an option) or :class:`ZeroShotHead` (CLIP at paper scale: cosine
logits against class text embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from repro.evals.heads import cached_example_activations
from repro.metrics import bootstrap_balanced_accuracy_ci

SELECTIONS = ("nonzero", "sum", "threshold")


class TopNSelectionError(ValueError):
    """A class has fewer than n latents with a positive selection statistic: its top-n would be filled by
    latents that never fired for it (the old silent tie-break to latents 0..n-1)."""


def selection_statistic(nonzero: np.ndarray, sums: np.ndarray, counts: np.ndarray, selection: str) -> np.ndarray:
    """The (C, F) statistic top-n ranks by: ``nonzero`` = Σ_t 1[a_ti ≠ 0] over the class's tokens (default,
    scale-free), ``sum`` = Σ_t a_ti, ``threshold`` = Σ_t 1[a_ti > threshold] (the official code's, 0.2)."""
    table = {"nonzero": nonzero, "sum": sums, "threshold": counts}
    if selection not in table:
        raise ValueError(f"unknown top-n selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    return np.asarray(table[selection], dtype=np.float64)


def check_selectable(stat: np.ndarray, n: int, class_names: Sequence[str] | None = None, what: str = "") -> None:
    """Raise :class:`TopNSelectionError` when a row of ``stat`` has fewer than ``n`` positive entries."""
    stat = np.atleast_2d(np.asarray(stat))
    available = (stat > 0).sum(1)
    short = np.flatnonzero(available < int(n))
    if short.size:
        names = [class_names[c] if class_names is not None else str(c) for c in short[:5]]
        examples = ", ".join(f"{nm}: {available[c]}" for nm, c in zip(names, short, strict=False))
        raise TopNSelectionError(
            f"top-{n}{what}: {len(short)} of {len(stat)} classes have fewer than {n} latents with a positive "
            f"selection statistic (e.g. {examples}); "
            "choose smaller n (evaluation.ns) or another statistic (evaluation.selection)"
        )


def select_latents(
    stat: np.ndarray, n: int, *, strict: bool = True, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """(C, n) latent indices: per class the n largest statistics, ties to the lower index. ``strict``:
    :class:`TopNSelectionError` when a class has fewer than n positive statistics (never a silent fill)."""
    stat = np.asarray(stat)
    n = int(n)
    if n > stat.shape[1]:
        raise TopNSelectionError(f"top-{n}: the SAE has only {stat.shape[1]} latents")
    if strict:
        check_selectable(stat, n, class_names)
    order = np.argsort(-stat, axis=1, kind="stable")
    return order[:, :n]


def agnostic_latents(stat: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """(C, n): the n latents with the largest statistic summed over classes, the same for every class
    (a control: what top-n gets without knowing the class)."""
    total = np.asarray(stat).sum(0, keepdims=True)
    check_selectable(total, n, what=" (class-agnostic)")
    return np.repeat(np.argsort(-total, axis=1, kind="stable")[:, :n], n_classes, axis=0)


def random_latents(stat: np.ndarray, n: int, n_classes: int, seed: int = 0) -> np.ndarray:
    """(C, n): n latents drawn uniformly without replacement (seeded) among those with a positive summed
    statistic, the same for every class (a control: n latents that know nothing of the class)."""
    alive = np.flatnonzero(np.asarray(stat).sum(0) > 0)
    if len(alive) < n:
        raise TopNSelectionError(f"top-{n} (random control): only {len(alive)} latents ever fire")
    pick = np.sort(np.random.default_rng(seed).choice(alive, size=int(n), replace=False))
    return np.repeat(pick[None], n_classes, axis=0)


def selection_mask(stat: np.ndarray, n: int, strict: bool = True) -> Tensor:
    """(C, F) float mask, 1 on each class's top-n latents (:func:`select_latents`)."""
    stat = np.asarray(stat)
    mask = np.zeros(stat.shape, np.float32)
    np.put_along_axis(mask, select_latents(stat, n, strict=strict), 1.0, axis=1)
    return torch.from_numpy(mask)


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


def kept_decode(
    code: Tensor, tok_class: Tensor, idx: Tensor, rows: dict[int, Tensor], base: Tensor, scale: Tensor | None
) -> Tensor:
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


CONTROLS = ("agnostic", "random")


def settings_for(protocols: Sequence[str], ns: Sequence[int], controls: bool = True) -> list[str]:
    """Setting names in report order: no_sae, sae, on_all, off_all, zero, then per protocol and n
    on_n/off_n and (controls) agnostic_n/random_n."""
    names = ["no_sae", "sae", "on_all", "off_all", "zero"]
    sides = ("on", "off") + (CONTROLS if controls else ())
    for p in protocols:
        names += [f"{p}/{side}_{n}" for n in ns for side in sides]
    return names


@contextmanager
def frequency_mask_off(sae):
    """The SAE without its training-time frequency mask (``cfg.freq_mask`` set to None while inside), as
    the official top-n classification (``forward_clamp``) encodes; a no-op for kinds without one."""
    cfg = sae.cfg
    if getattr(cfg, "freq_mask", None) is None:
        yield sae
        return
    sae.cfg = replace(cfg, freq_mask=None)
    try:
        yield sae
    finally:
        sae.cfg = cfg


def setup_gate(mean_pct: dict, n_classes: int, max_drop: float = 10.0, min_ratio_to_chance: float = 2.0) -> dict:
    """Whether a top-n setup can say anything: the clean backbone must classify well above chance
    (no_sae ≥ ``min_ratio_to_chance`` × 100/C) and the full reconstruction must keep the class signal
    (no_sae − sae ≤ ``max_drop`` points, and the same for on_all). Returns usable and the failed reasons."""
    chance = 100.0 / n_classes
    clean = mean_pct["no_sae"]
    reasons = []
    if clean < min_ratio_to_chance * chance:
        reasons.append(f"no-SAE accuracy {clean:.1f} % is not far above chance ({chance:.1f} %)")
    for name in ("sae", "on_all"):
        if name in mean_pct and clean - mean_pct[name] > max_drop:
            reasons.append(
                f"full reconstruction ({name}) loses {clean - mean_pct[name]:.1f} points "
                f"(> {max_drop:g}) of the no-SAE accuracy {clean:.1f} %"
            )
    return {
        "usable": not reasons,
        "reasons": reasons,
        "chance_pct": chance,
        "max_drop": max_drop,
        "min_ratio_to_chance": min_ratio_to_chance,
    }


def _selected_latents(
    selections: dict[str, np.ndarray], ns: Sequence[int], n_classes: int, controls: bool, class_names, seed: int
) -> dict[tuple[str, str, int], np.ndarray]:
    """(protocol, side, n) → (C, n) latent indices; every selection checked before any work is done."""
    out = {}
    for p, stat in selections.items():
        for n in ns:
            idx = select_latents(stat, n, class_names=class_names)
            out[(p, "on", n)] = out[(p, "off", n)] = idx
            if controls:
                out[(p, "agnostic", n)] = agnostic_latents(stat, n, n_classes)
                out[(p, "random", n)] = random_latents(stat, n, n_classes, seed=seed + n)
    return out


@torch.no_grad()
def topn_classification(
    backbone,
    sae,
    hook: str,
    data,
    head,
    selections: dict[str, np.ndarray],
    ns: Sequence[int] = (1, 5, 10, 50),
    batch_size: int = 32,
    progress: bool = False,
    controls: bool = True,
    seed: int = 0,
    acts_cache: str | Path | None = None,
) -> dict:
    """Class-balanced accuracy (percent) of ``head`` on ``data`` under every setting (module docstring).

    With ``acts_cache`` (the activation cache of ``data`` at ``hook``) the clean activations are read from
    it where :func:`cached_example_activations` can, so that only the layers after the hook run (the same
    numbers up to float rounding; recomputing them took 44 of the 95 s of a vision run's top-n).

    ``selections`` maps a protocol name to its (C, F) selection statistic (step 1); a class with fewer
    than n positive entries raises :class:`TopNSelectionError` before any forward pass. Reconstructions
    are decoded from the code of the SAE without its frequency mask (:func:`frequency_mask_off`), except
    ``sae`` (the SAE as trained). Returns ``mean_pct`` {setting: accuracy}, ``ci95`` {setting: {lo, hi}: the
    bootstrap 95 % interval over test examples, stratified by class, the same draws for every setting},
    ``per_class_pct`` {setting:
    [accuracy per class, None for absent classes]}, ``class_names``, ``n_examples``, ``selected``
    {protocol: {n: (C, n) indices as lists}}, ``gate`` (:func:`setup_gate`)."""
    from tqdm import tqdm

    n_classes = len(data.class_names)
    for p, c in selections.items():
        if np.shape(c) != (n_classes, sae.cfg.d_sae):
            raise ValueError(
                f"class statistics of protocol {p!r} have shape {np.shape(c)}, expected "
                f"(n_classes, d_sae) = ({n_classes}, {sae.cfg.d_sae})"
            )
    chosen = _selected_latents(selections, ns, n_classes, controls, data.class_names, seed)
    was_training = sae.training
    sae.eval()
    selected = {key: torch.from_numpy(idx) for key, idx in chosen.items()}
    union = torch.unique(torch.cat([i.reshape(-1) for i in selected.values()]))
    with frequency_mask_off(sae):
        rows = decoder_rows(sae, union)
    masked = getattr(sae.cfg, "freq_mask", None) is not None
    names = settings_for(list(selections), ns, controls)
    hits: dict[str, list[np.ndarray]] = {s: [] for s in names}  # per test example, in order
    labels_all = np.asarray(data.labels)
    cached = None if acts_cache is None else cached_example_activations(backbone, data, acts_cache, hook)
    try:
        for lo in tqdm(range(0, len(labels_all), batch_size), disable=not progress, desc="top-n"):
            labels = labels_all[lo : lo + batch_size]
            if cached is None:
                inputs = backbone.preprocess(data.examples[lo : lo + batch_size])
                acts, mask = backbone.activations(inputs, hook)
                features = partial(backbone.features_from, hook, inputs=inputs)
            else:
                acts = cached[lo : lo + batch_size].to(backbone.device)
                mask = torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)
                features = partial(backbone.features_from_cached, hook)
            x = acts[mask]
            ctx = sae.input_context(x)
            with frequency_mask_off(sae):
                code = sae.encode(x)
                scale = sae.context_scale(ctx)
                full, base = sae.decode(code, ctx), sae.decode(torch.zeros_like(code), ctx)
            trained = sae.decode(sae.encode(x), ctx) if masked else full  # without a mask they are one code
            tok_class = torch.as_tensor(labels, device=acts.device)[:, None].expand_as(mask)[mask]
            recon = {"sae": trained, "on_all": full, "off_all": base, "zero": torch.zeros_like(x)}
            active = (code != 0).sum(1)
            for (p, side, n), idx in selected.items():  # "on" comes before "off" for every (p, n)
                if side != "off":
                    recon[f"{p}/{side}_{n}"] = kept_decode(code, tok_class, idx, rows, base, scale)
                    continue
                on = recon[f"{p}/on_{n}"]
                # off = decode(a ⊙ (1 − keep)) = full − (on − base); exactly base where nothing is left
                nothing_left = active == (code.gather(1, idx.to(code.device)[tok_class]) != 0).sum(1)
                recon[f"{p}/off_{n}"] = torch.where(nothing_left[:, None], base, full - (on - base))
            out = {"no_sae": features(acts)}
            for name, x_hat in recon.items():
                spliced = acts.clone()
                spliced[mask] = x_hat.to(acts.dtype)
                out[name] = features(spliced)
            for name, f in out.items():
                hits[name].append(np.asarray(head.predict(f) == labels, dtype=bool))
    finally:
        sae.train(was_training)
    hit = {s: np.concatenate(h) for s, h in hits.items()}
    total = np.bincount(labels_all, minlength=n_classes).astype(float)
    correct = {s: np.bincount(labels_all, weights=h, minlength=n_classes) for s, h in hit.items()}
    present = total > 0
    per_class = {s: [float(100 * c / t) if t else None for c, t in zip(correct[s], total, strict=True)] for s in names}
    mean = {s: float(np.mean(100 * correct[s][present] / total[present])) for s in names}
    ci95 = {}
    for s in names:
        b = bootstrap_balanced_accuracy_ci(hit[s], labels_all, seed=seed)
        ci95[s] = {"lo": b["lo"], "hi": b["hi"], "n_boot": b["n_boot"], "unit": b["unit"]}
    selected_out = {p: {str(n): chosen[(p, "on", n)].tolist() for n in ns if n <= 10} for p in selections}
    return {
        "mean_pct": mean,
        "per_class_pct": per_class,
        "class_names": list(data.class_names),
        "n_examples": int(total.sum()),
        "n_classes_present": int(present.sum()),
        "ns": list(ns),
        "protocols": list(selections),
        "selected": selected_out,
        "controls": list(CONTROLS) if controls else [],
        "ci95": ci95,
        "gate": setup_gate(mean, int(present.sum())),
    }


__all__ = [
    "CONTROLS",
    "SELECTIONS",
    "TopNSelectionError",
    "agnostic_latents",
    "check_selectable",
    "frequency_mask_off",
    "random_latents",
    "select_latents",
    "selection_mask",
    "selection_statistic",
    "settings_for",
    "setup_gate",
    "topn_classification",
]
