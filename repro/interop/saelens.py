"""Export a trained run to SAELens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``), the folder
that ``sae_lens.SAE.load_from_disk`` reads and that SAEBench and Neuronpedia tools consume.

Mapping (our kind -> SAELens ``architecture``): ``relu`` -> ``standard``, ``topk`` -> ``topk`` (with ``k``),
``jumprelu`` -> ``jumprelu`` (per-latent ``threshold``), ``batchtopk`` -> ``jumprelu`` with its inference
threshold broadcast to every latent (as SAELens saves a trained BatchTopK SAE), ``gated`` -> ``gated``.
The sparsemax-attention family has no SAELens counterpart and is refused.

Folding. Our classic kinds with ``input_norm: scalar`` encode x_n = c·x and decode x̂ = (a W_dec + b_dec)/c;
SAELens computes a = f((x − b_dec') W_enc' + b_enc') and x̂ = a W_dec' + b_dec'. With W_enc' = c·W_enc,
b_dec' = b_dec / c, W_dec' = W_dec / c and the encoder biases unchanged, the pre-activations, hence the
codes and thresholds, are equal and the reconstructions too, so SAELens needs no scaler
(``normalize_activations: none``). Per-token standardisation (``input_norm: token``) cannot be folded into
affine weights and is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from repro import run_record
from repro.files import atomic_write

SAELENS_ARCHITECTURE = {
    "relu": "standard",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "batchtopk": "jumprelu",
    "gated": "gated",
}
SAELENS_FORMAT_VERSION = "6.54.12"  # the sae_lens version whose save_model output this writer reproduces
CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE = "cfg.json", "sae_weights.safetensors", "sparsity.safetensors"


class NotExportable(ValueError):
    """The SAE cannot be written in SAELens's format without changing what it computes."""


def saelens_state(sae) -> tuple[str, dict[str, torch.Tensor], dict]:
    """(architecture, tensors, extra cfg keys) of ``sae`` in SAELens's parametrisation (module docstring)."""
    kind = sae.kind
    if kind not in SAELENS_ARCHITECTURE:
        raise NotExportable(
            f"kind {kind!r} has no SAELens architecture (exportable: "
            f"{', '.join(SAELENS_ARCHITECTURE)}); the sparsemax-attention family is not expressible"
        )
    norm = getattr(sae.cfg, "input_norm", "none")
    if norm == "token":
        raise NotExportable(
            f"{kind} with input_norm='token' standardises each token; SAELens's affine "
            "weights cannot express it (train with input_norm: scalar or none to export)"
        )
    with torch.no_grad():
        c = float(sae.input_scale) if norm == "scalar" else 1.0
        w_enc, w_dec = sae.W_enc.detach().float() * c, sae.W_dec.detach().float() / c
        b_dec = sae.b_dec.detach().float() / c
        b_enc = sae.b_enc.detach().float()
        tensors = {"W_enc": w_enc, "W_dec": w_dec, "b_dec": b_dec}
        extra: dict = {}
        if kind == "gated":
            tensors.update(b_gate=b_enc, r_mag=sae.r_mag.detach().float(), b_mag=sae.b_mag.detach().float())
        else:
            tensors["b_enc"] = b_enc
        if kind == "topk":
            extra = {"k": int(sae.cfg.k), "rescale_acts_by_decoder_norm": False}
        elif kind == "jumprelu":
            tensors["threshold"] = sae.theta().detach().float().expand(sae.cfg.d_sae).clone()
        elif kind == "batchtopk":
            t = float(sae.threshold)
            if not math.isfinite(t) or t < 0:
                raise NotExportable(f"batchtopk inference threshold {t} is not a nonnegative number (untrained?)")
            tensors["threshold"] = torch.full((sae.cfg.d_sae,), t)
    return SAELENS_ARCHITECTURE[kind], {k: v.contiguous() for k, v in tensors.items()}, extra


def saelens_config(
    sae, architecture: str, extra: dict, hook_name: str, model_name: str, provenance: dict | None = None
) -> dict:
    """The ``cfg.json`` record SAELens 6 reads: sizes, dtype, no input scaling, and the metadata."""
    metadata = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": SAELENS_FORMAT_VERSION,
        "hook_name": hook_name,
        "model_name": model_name,
    }
    if provenance:
        metadata["sae_repro"] = provenance
    return {
        "d_in": int(sae.cfg.d_in),
        "d_sae": int(sae.cfg.d_sae),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
        **extra,
        "architecture": architecture,
    }


def export_sae(sae, out_dir: str | Path, hook_name: str, model_name: str, provenance: dict | None = None) -> Path:
    """Write ``sae`` to ``out_dir`` as ``cfg.json`` + ``sae_weights.safetensors`` in SAELens's format (each file
    written atomically). Raises :class:`NotExportable` for a kind or normalisation SAELens cannot express."""
    from safetensors.torch import save_file

    architecture, tensors, extra = saelens_state(sae)
    cfg = saelens_config(sae, architecture, extra, hook_name, model_name, provenance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write(out_dir / CFG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=1)))
    return out_dir


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """:func:`export_sae` of the SAE of ``run_dir`` (its ``sae/`` folder), with the hook and model recorded
    in its ``train.json``. When the run has been evaluated for interpretability (``eval/interpretability.json``),
    also ``sparsity.safetensors``: {"sparsity": log10(p_i + 1e-10)} with p_i the latent's firing rate over the
    held-out test tokens (SAELens's trainer writes the same quantity over its training tokens). Returns
    ``out_dir``."""
    from safetensors.torch import save_file

    from repro.sae import load

    run_dir = Path(run_dir)
    sae = load(run_dir / "sae").eval()
    record = run_record.read(run_dir)
    spec = record["data"]["spec"]
    firing = run_dir / "eval" / "interpretability.json"
    provenance = {
        "run": str(run_dir),
        "kind": sae.kind,
        "sae_config": record.get("sae_config"),
        "dataset": spec["dataset"]["name"],
    }
    rate = None
    if firing.is_file():
        evaluation = json.loads(firing.read_text())
        rate = torch.tensor(evaluation["results"]["firing"]["firing_rate"], dtype=torch.float64)
        if rate.shape != (sae.cfg.d_sae,):
            raise ValueError(f"{firing}: {tuple(rate.shape)} firing rates for {sae.cfg.d_sae} latents")
        provenance["sparsity"] = (
            f"log10 of each latent's firing rate + 1e-10 over the "
            f"{evaluation['results']['firing']['n_tokens']} test tokens of {firing}"
        )
    out = export_sae(sae, out_dir, spec["hook"], spec["backbone"]["name"], provenance)
    if rate is not None:
        log_density = torch.log10(rate + 1e-10).float()
        atomic_write(out / SPARSITY_FILE, lambda tmp: save_file({"sparsity": log_density}, tmp))
    return out


__all__ = ["NotExportable", "SAELENS_ARCHITECTURE", "export_run", "export_sae", "saelens_config", "saelens_state"]
