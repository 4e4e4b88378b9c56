"""Import an SAE saved in SAELens's on-disk format (``cfg.json`` + ``sae_weights.safetensors``, as SAELens's
``save_model`` writes it and ``sae_lens.SAE.load_from_disk`` reads it) as one of our runs, which
``repro evaluate`` and the workflow evaluate like a trained one. sae_lens itself is not needed.

Architectures (SAELens -> our kind, with ``input_norm: none``): ``standard`` -> ``relu``, ``topk`` -> ``topk``,
``jumprelu`` -> ``jumprelu``, ``gated`` -> ``gated``. The tensors are folded (in float64, stored as float32) so
that our encode and decode compute SAELens's:

- ``apply_b_dec_to_input: false`` (SAELens's pre-activation x W_enc + b_enc, ours (x - b_dec) W_enc + b_enc):
  b_enc += b_dec W_enc; for gated, b_gate += b_dec W_enc and b_mag += (b_dec W_enc) ⊙ exp(r_mag);
- TopK with ``rescale_acts_by_decoder_norm`` (SAELens takes the top k of z_i n_i with n_i = ‖W_dec,i‖ and
  decodes a_i / n_i): W_enc[:, i] and b_enc[i] times n_i, W_dec[i] / n_i, so the codes are SAELens's codes;
- JumpReLU: SAELens computes ReLU(z) ⊙ 1[z > θ] and we z ⊙ 1[z > θ]; they agree once θ is clamped at 0
  (for θ < 0 both are ReLU(z)). A ``log_threshold`` of an older file is exponentiated, as SAELens does.

Input normalisation: at inference SAELens transforms nothing for ``normalize_activations`` ``none`` and
``expected_average_only_in`` (its trainer folds that scaling factor into the weights when it saves), so
neither do we. The per-token transforms ``layer_norm`` and ``constant_norm_rescale``, ``covariance_whitening``,
``reshape_activations: hook_z`` (attention heads) and ``finetuning_scaling_factor`` are refused with a message.
Configs written before SAELens 6 (``hook_point``, ``activation_fn: topk`` with ``activation_fn_kwargs.k``, a
boolean ``normalize_activations``) are read as SAELens 6 reads them.

The run (:func:`import_run`): ``sae/`` in our format and a ``train.json`` whose ``data.spec`` is the extraction
spec of an activation cache of ours (backbone, dataset, token filter, batching) with the hook replaced by the
SAE's. Evaluations then extract the splits they read with that spec (content addressed: at the cache's own
hook they reuse what our runs extracted), so an imported SAE is scored on exactly the tokens ours are. The
SAE's ``metadata.model_name`` must name that backbone (ours, or an alias in
:data:`repro.backbones.ALIASES`) and its ``metadata.hook_name`` one of its hooks (ours, or a TransformerLens
name in :data:`repro.backbones.EXTERNAL_HOOKS`); ``model`` and ``hook`` override them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import torch

from repro import run_record
from repro.files import read_json_object

OUR_KIND = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
UNSCALED_NORMS = ("none", "expected_average_only_in")  # SAELens applies no input transform for these
CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"


class NotImportable(ValueError):
    """The folder is not an SAELens SAE that one of our kinds computes exactly, or it does not fit the cache."""


# ------------------------------------------------------------------------------------------ the format
def _saelens6_config(cfg: dict) -> dict:
    """``cfg`` with the defaults and renames SAELens 6 applies to a config written by an older version."""
    meta = cfg.get("metadata") or {}
    version = str(cfg.get("sae_lens_version") or meta.get("sae_lens_version") or "0")
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 6:
        return cfg
    out = {{"hook_point": "hook_name"}.get(k, k): v for k, v in cfg.items()}
    out.setdefault("apply_b_dec_to_input", True)
    out.setdefault("architecture", "standard")
    if (
        out.get("activation_fn", out.get("activation_fn_str")) == "topk"
        and (out.get("activation_fn_kwargs") or {}).get("k") is not None
    ):
        out["architecture"], out["k"] = "topk", out["activation_fn_kwargs"]["k"]
    if isinstance(out.get("normalize_activations"), bool):
        out["normalize_activations"] = "expected_average_only_in" if out["normalize_activations"] else "none"
    out["normalize_activations"] = out.get("normalize_activations") or "none"
    out.setdefault("reshape_activations", "hook_z" if "hook_z" in str(out.get("hook_name", "")) else "none")
    return out


def read_config(folder: str | os.PathLike) -> dict:
    """The config of an SAELens folder as SAELens 6 reads it; NotImportable when a file is missing or the
    config is not a JSON object."""
    folder = Path(folder)
    cfg_file = folder / CFG_FILE
    for f in (cfg_file, folder / WEIGHTS_FILE):
        if not f.is_file():
            raise NotImportable(f"{folder} is not an SAELens SAE folder: {f.name} is missing")
    return _saelens6_config(read_json_object(cfg_file, NotImportable))


def read_saelens(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of an SAELens folder (:func:`read_config`); NotImportable for a missing, unreadable or
    truncated file."""
    from safetensors.torch import load_file

    cfg = read_config(folder)
    weights_file = Path(folder) / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights_file))
    except Exception as e:  # safetensors raises its own error types on truncation or corruption
        raise NotImportable(f"{weights_file}: unreadable ({e})") from None
    return cfg, tensors


def saelens_names(cfg: dict) -> tuple[str | None, str | None]:
    """(model_name, hook_name) recorded in an SAELens config (``metadata``, or top level in older files)."""
    meta = cfg.get("metadata") or {}
    return meta.get("model_name") or cfg.get("model_name"), meta.get("hook_name") or cfg.get("hook_name")


def importable_kind(cfg: dict) -> str:
    """Our kind for ``cfg``, or NotImportable naming the key SAELens computes differently from every kind of ours."""
    arch = cfg.get("architecture")
    if arch not in OUR_KIND:
        raise NotImportable(f"architecture {arch!r} is not importable (importable: {', '.join(OUR_KIND)})")
    norm = cfg.get("normalize_activations", "none")
    if norm not in UNSCALED_NORMS:
        raise NotImportable(
            f"normalize_activations={norm!r} transforms each input at inference, which no kind "
            f"of ours with affine weights reproduces (importable: {', '.join(UNSCALED_NORMS)})"
        )
    if cfg.get("reshape_activations", "none") != "none":
        raise NotImportable(
            f"reshape_activations={cfg['reshape_activations']!r} (per-head attention SAEs) is "
            "not importable: our hooks are residual-stream vectors"
        )
    if cfg.get("finetuning_scaling_factor"):
        raise NotImportable(
            "finetuning_scaling_factor is set; SAELens 6 no longer applies it, so what the file computes is ambiguous"
        )
    return OUR_KIND[arch]


def _tensor(tensors: dict, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if name not in tensors:
        raise NotImportable(f"tensor {name!r} is missing from {WEIGHTS_FILE} (has: {', '.join(sorted(tensors))})")
    t = tensors[name].to(torch.float64)
    if tuple(t.shape) != shape:
        raise NotImportable(f"tensor {name!r} has shape {tuple(t.shape)}, expected {shape} (d_in, d_sae from cfg.json)")
    if not torch.isfinite(t).all():
        raise NotImportable(f"tensor {name!r} holds non-finite values")
    return t


def sae_from_saelens(cfg: dict, tensors: dict[str, torch.Tensor]):
    """Our SAE computing what SAELens computes with ``cfg`` and ``tensors`` (module docstring), in eval mode."""
    from repro.sae import create

    kind = importable_kind(cfg)
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (d_in, d_sae)):
        raise NotImportable(f"cfg.json: d_in and d_sae must be positive integers, got {d_in!r}, {d_sae!r}")
    w_enc, w_dec = _tensor(tensors, "W_enc", (d_in, d_sae)), _tensor(tensors, "W_dec", (d_sae, d_in))
    b_dec = _tensor(tensors, "b_dec", (d_in,))
    new = {"W_enc": w_enc, "W_dec": w_dec, "b_dec": b_dec}
    hp: dict = {"input_norm": "none"}
    if kind == "gated":
        b_gate, r_mag, b_mag = (_tensor(tensors, n, (d_sae,)) for n in ("b_gate", "r_mag", "b_mag"))
    else:
        b_enc = _tensor(tensors, "b_enc", (d_sae,))
    if kind == "topk":
        hp["k"] = cfg.get("k")
        if not isinstance(hp["k"], int) or not 0 < hp["k"] <= d_sae:
            raise NotImportable(f"cfg.json: topk needs k in [1, d_sae={d_sae}], got {hp['k']!r}")
        if cfg.get("rescale_acts_by_decoder_norm", False):
            n = w_dec.norm(dim=1)
            if not (n > 0).all():
                raise NotImportable("rescale_acts_by_decoder_norm with a zero decoder row cannot be folded")
            w_enc, b_enc, new["W_dec"] = w_enc * n, b_enc * n, w_dec / n[:, None]
            new["W_enc"] = w_enc
    if not cfg.get("apply_b_dec_to_input", True):
        shift = b_dec @ w_enc
        if kind == "gated":
            b_gate, b_mag = b_gate + shift, b_mag + shift * r_mag.exp()
        else:
            b_enc = b_enc + shift
    if kind == "gated":
        new |= {"b_enc": b_gate, "r_mag": r_mag, "b_mag": b_mag}
    else:
        new["b_enc"] = b_enc
    if kind == "jumprelu":
        if "threshold" not in tensors and "log_threshold" in tensors:
            tensors = {**tensors, "threshold": tensors["log_threshold"].to(torch.float64).exp()}
        new["threshold"] = _tensor(tensors, "threshold", (d_sae,)).clamp(min=0.0)
    sae = create(kind, d_in, d_sae, seed=0, **hp)
    with torch.no_grad():
        for name, value in new.items():
            getattr(sae, name).copy_(value.to(torch.float32))
        if kind == "jumprelu":
            sae.rms_norm.fill_(1.0)  # theta = threshold x rms_norm: the threshold in raw units
    return sae.eval()


# ------------------------------------------------------------------------------------------- the run
def resolve_target(cfg: dict, cache_spec: dict, model: str | None = None, hook: str | None = None) -> tuple[str, str]:
    """(our backbone, our hook) of an SAELens config, checked against the cache it is to be evaluated beside."""
    from repro.backbones import ALIASES, BACKBONES, canonical_name, external_hook

    model_name, hook_name = saelens_names(cfg)
    theirs = model or model_name
    if not theirs:
        raise NotImportable("cfg.json names no model (metadata.model_name); pass --model with our backbone's name")
    ours = canonical_name(theirs)
    if ours is None:
        known = ", ".join(f"{b} ({', '.join(ALIASES.get(b, ()))})" for b in BACKBONES)
        raise NotImportable(
            f"model {theirs!r} is none of our backbones: {known}; if it is one of them under "
            "another name, pass --model with ours"
        )
    if ours != cache_spec["backbone"]["name"]:
        raise NotImportable(
            f"the SAE reads {theirs!r} (our {ours}) but the cache was extracted from "
            f"{cache_spec['backbone']['name']}: pass a cache of {ours}"
        )
    if hook is None:
        if not hook_name:
            raise NotImportable("cfg.json names no hook (metadata.hook_name); pass --hook with one of ours")
        hook = external_hook(ours, hook_name) or hook_name
    return ours, hook


def import_run(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    cache: str | os.PathLike,
    *,
    model: str | None = None,
    hook: str | None = None,
    labels: dict | None = None,
) -> Path:
    """Write the run ``out_dir`` (``sae/`` and ``train.json``, the latter last and atomically) for the SAELens
    SAE in ``folder``, to be evaluated on the backbone, dataset and token filter of the activation ``cache``
    at the SAE's hook (module docstring). Refuses a folder that already holds a run."""
    from repro.cache import ActivationCache, spec_hash
    from repro.evaluate import backbone_from_spec
    from repro.provenance import provenance
    from repro.sae.base import file_sha256

    out_dir = Path(out_dir)
    if run_record.exists(out_dir):
        raise FileExistsError(f"{out_dir} already holds a run (train.json); remove it or choose another --out")
    cfg, tensors = read_saelens(folder)
    sae = sae_from_saelens(cfg, tensors)
    acts = ActivationCache.open(cache, checksums=False)
    spec = dict(acts.spec)
    backbone, hook = resolve_target(cfg, spec, model, hook)
    if hook == spec["hook"]:
        d_model = acts.d_model
    else:
        net = backbone_from_spec(spec["backbone"])
        try:
            net.check_hook(hook)
        except ValueError as e:
            raise NotImportable(f"the SAE's hook {hook!r} is not a hook of {backbone} ({e}); pass --hook") from None
        d_model = net.d_model(hook)
        spec["hook"] = hook
    if d_model != sae.cfg.d_in:
        raise NotImportable(f"the SAE reads {sae.cfg.d_in}-d inputs but {backbone} at {hook} is {d_model}-d")
    model_name, hook_name = saelens_names(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".sae.tmp"))
    try:
        sae.save(tmp)
        if (out_dir / "sae").exists():
            shutil.rmtree(out_dir / "sae")  # a previous import cut off before its train.json
        os.replace(tmp, out_dir / "sae")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    folder = Path(folder).resolve()
    summary = {
        "kind": sae.kind,
        "sae_config": dataclasses.asdict(sae.cfg),
        "train_config": {"seed": None, "imported": True},
        "training": {},
        "provenance": provenance(),
        "data": {
            "cache": str(Path(cache).resolve()) if hook == acts.spec["hook"] else None,
            "spec_hash": spec_hash(spec),
            "spec": spec,
            "labels": dict(labels or {}),
        },
        "imported": {
            "format": "saelens",
            "folder": str(folder),
            "architecture": cfg.get("architecture"),
            "model_name": model_name,
            "hook_name": hook_name,
            "backbone": backbone,
            "hook": hook,
            "weights_sha256": file_sha256(folder / WEIGHTS_FILE),
            "cfg": cfg,
        },
    }
    run_record.write(out_dir, summary)
    return out_dir


__all__ = [
    "NotImportable",
    "OUR_KIND",
    "import_run",
    "importable_kind",
    "read_config",
    "read_saelens",
    "resolve_target",
    "sae_from_saelens",
    "saelens_names",
]
