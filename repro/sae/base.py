"""The SAE interface, the registry of architectures and the checkpoint format.

Every architecture is a subclass of :class:`SAE` with a frozen config dataclass (a subclass of
:class:`SAEConfig`) and registers itself with :func:`register`. A checkpoint is a folder holding
``sae.safetensors`` (parameters and persistent buffers, i.e. the kind's state) and ``cfg.json``
(kind, config, schema version, library version, sha256 of the weights file); never a pickle.
:func:`load` checks the digest, so a corrupted or truncated weights file is refused, naming the file.

Shapes: ``x`` is ``(..., d_in)``; all leading dimensions are tokens. ``acts`` is ``(..., d_sae)``.
A saved SAE maps raw activations to raw reconstructions: any input normalisation it trained with
(a scalar factor, per-token standardisation, the sparsemax family's division by ||x||) is applied inside
``encode`` and undone inside ``decode``. Kinds whose normalisation is per token need that token's
statistics to decode: :meth:`SAE.input_context` returns them (None when not needed) and ``decode``
takes them as its second argument; ``forward`` does both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from repro.files import atomic_write

SCHEMA_VERSION = 2
DEFAULT_DEAD_WINDOW = 10_000_000  # tokens (Gao et al. 2024)
WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "cfg.json"

_REGISTRY: dict[str, type[SAE]] = {}


@dataclass(frozen=True)
class SAEConfig:
    """Fields shared by every architecture.

    d_in: width of the input activations. d_sae: number of latents. seed: seed of the initialisation
    (a private generator; the global RNG is not touched). dead_window: a latent counts as dead in
    training once it has not fired for this many tokens (AuxK and the logged dead fraction use it);
    None (the default) lets the trainer scale it to the run (:func:`repro.train.dead_window_for`;
    10M tokens outside training).
    decode: ``"auto"`` chooses sparse (``embedding_bag``) or dense decoding per step from the batch's
    largest L0, ``"dense"``/``"sparse"`` force one; all give the same result within fp32 tolerance.
    """

    d_in: int
    d_sae: int
    seed: int = 0
    dead_window: int | None = None
    decode: str = "auto"

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        require(isinstance(self.d_in, int) and self.d_in > 0, "d_in", self.d_in, "a positive integer")
        require(isinstance(self.d_sae, int) and self.d_sae > 0, "d_sae", self.d_sae, "a positive integer")
        require(isinstance(self.seed, int), "seed", self.seed, "an integer")
        require(
            self.dead_window is None or (isinstance(self.dead_window, int) and self.dead_window > 0),
            "dead_window",
            self.dead_window,
            "None or a positive integer (tokens)",
        )
        require(self.decode in ("auto", "dense", "sparse"), "decode", self.decode, "'auto', 'dense' or 'sparse'")


def require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"invalid SAE hyperparameter {name}={value!r}: expected {expected}")


def require_unit_interval(name: str, value: Any, *, closed_low: bool = True) -> None:
    """Raise ValueError unless ``value`` is a finite float in [0, 1] (or (0, 1] if not closed_low)."""
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value <= 1
    ok = ok and (value >= 0 if closed_low else value > 0)
    require(ok, name, value, "a number in [0, 1]" if closed_low else "a number in (0, 1]")


def require_nonnegative(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a finite number >= 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    require(ok, name, value, "a finite number >= 0")


def require_positive(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    require(ok, name, value, "a finite number > 0")


class SAE(nn.Module):
    """Base class: ``encode``, ``decode``, ``forward``, ``loss``, ``save``.

    Subclasses set ``kind`` and ``config_cls`` and implement ``encode``, ``decode`` and ``loss``.
    Kinds whose ``decode`` needs per-token statistics of the input (``needs_context``) return them from
    :meth:`input_context`; ``normalizes_input`` marks the sparsemax family, which encodes ``x / ||x||``
    and rescales the reconstruction by ``||x||`` (its context is ``||x||``, shape ``(..., 1)``).

    State that is not a parameter (firing counters, frequency masks, thresholds, the input scale) lives in
    persistent buffers, so it is saved with the weights and restored by :func:`load` and by the trainer's
    resume. Training hooks called by the trainer: :meth:`fit_to_data` (before the first step, on a sample
    of training tokens), :meth:`finish_training` (after the last step, on the same sample).
    """

    kind: ClassVar[str]
    config_cls: ClassVar[type[SAEConfig]]
    normalizes_input: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        # Tokens since each latent last fired (training only); float64 counts are exact to 2**53.
        self.register_buffer("tokens_since_fired", torch.zeros(cfg.d_sae, dtype=torch.float64))
        self.dead_window_tokens = cfg.dead_window or DEFAULT_DEAD_WINDOW

    # ----- interface -----------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Latent activations ``(..., d_sae)`` of inputs ``(..., d_in)``."""
        raise NotImplementedError

    def decode(self, acts: Tensor, ctx: Tensor | None = None) -> Tensor:
        """Reconstruction ``(..., d_in)`` in raw units from activations. ``ctx`` is
        :meth:`input_context` of the inputs: required when ``needs_context``, ignored otherwise."""
        raise NotImplementedError

    def decoder_directions(self) -> Tensor:
        """(d_sae, d_in) float64, detached: the direction each latent writes into input space (row i of
        ``W_dec``; kinds without one override this). Not normalised: compare directions with cosines."""
        if not hasattr(self, "W_dec"):
            raise ValueError(f"SAE kind {self.kind!r} has no W_dec and does not say how it decodes a latent")
        return self.W_dec.detach().double().clone()

    @property
    def needs_context(self) -> bool:
        """Whether ``decode`` needs :meth:`input_context` (a per-token normalisation)."""
        return self.normalizes_input

    def input_context(self, x: Tensor) -> Tensor | None:
        """What ``decode`` needs to know of each input token (``(..., c)``), or None. Default: ``||x||``
        for kinds with ``normalizes_input``, else None."""
        return x.norm(dim=-1, keepdim=True) if self.normalizes_input else None

    def context_scale(self, ctx: Tensor | None) -> Tensor | None:
        """The per-token factor ``s`` (``(..., 1)``) with decode(a, ctx) = decode(0, ctx) + s * (decode(a, u)
        - decode(0, u)) for the unit context u (:meth:`unit_context`); None means 1."""
        return ctx if self.normalizes_input else None

    def unit_context(self, n: int, device: str | torch.device = "cpu") -> Tensor | None:
        """The context of ``n`` tokens whose per-token normalisation is the identity (scale 1, shift 0)."""
        return torch.ones(n, 1, device=device) if self.normalizes_input else None

    def forward(self, x: Tensor, latent_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x_hat, acts)``; ``latent_scale`` (``(d_sae,)`` or broadcastable to acts) multiplies the
        activations before decoding (masking or steering), and the returned acts are the scaled ones."""
        x = self.check_input(x)
        acts = self.encode(x)
        if latent_scale is not None:
            acts = acts * latent_scale.to(acts.dtype)
        return self.decode(acts, self.input_context(x)), acts

    def loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Training objective on a batch: ``(scalar, parts)``; parts are detached floats for logging
        (always ``loss``, ``mse`` = mean over tokens of ||x - x_hat||^2 in raw units, and ``l0``; kinds with a
        sparsity penalty also ``sparsity_loss``, its weighted term in the loss). In training mode it also
        updates the kind's state (firing counters etc.)."""
        raise NotImplementedError

    # ----- training hooks --------------------------------------------------------------------------
    def fit_to_data(self, sample: Tensor) -> dict[str, float]:
        """Data-dependent initialisation from a sample of training tokens ``(n, d_in)`` (input scale,
        decoder bias, ...), called once before the first training step; returns what it set, for the
        record. Default: nothing."""
        return {}

    def finish_training(self, sample: Tensor) -> dict[str, float]:
        """Called once after the last training step with the same sample (e.g. to calibrate an inference
        threshold); returns what it set, for the record. Default: nothing."""
        return {}

    def thresholds(self) -> Tensor | None:
        """The kind's trained activation thresholds (for the training record), or None."""
        return None

    def constrain_grads(self) -> None:
        """Called by the trainer between backward and the optimiser step (e.g. remove the gradient
        component parallel to unit-norm decoder rows). Default: nothing."""

    def constrain_weights(self) -> None:
        """Called by the trainer after the optimiser step (e.g. renormalise decoder rows). Default: nothing."""

    # ----- shared helpers --------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> Tensor:
        """Raise ValueError if the last dimension is not ``d_in``; return x unchanged."""
        if x.ndim == 0 or x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"input has shape {tuple(x.shape)}: the last dimension must be d_in={self.cfg.d_in}")
        return x

    def init_generator(self) -> torch.Generator:
        """A CPU generator seeded with ``cfg.seed`` for the initialisation."""
        return torch.Generator().manual_seed(self.cfg.seed)

    @torch.no_grad()
    def track_firing(self, acts: Tensor) -> None:
        """Training-mode bookkeeping: reset the counter of latents that fired in this batch, add the
        batch's token count to the others."""
        fired = (acts.reshape(-1, acts.shape[-1]) != 0).any(dim=0)
        n_tokens = acts.numel() // acts.shape[-1]
        self.tokens_since_fired.add_(n_tokens).masked_fill_(fired, 0)

    @torch.no_grad()
    def track_fired_latents(self, latents: Tensor, n_tokens: int) -> None:
        """Sparse form of :meth:`track_firing`: ``latents`` lists the latents that fired (with repeats)
        in a batch of ``n_tokens`` tokens."""
        self.tokens_since_fired.add_(n_tokens)
        self.tokens_since_fired[latents.reshape(-1)] = 0

    def log_parts(self, loss: Tensor, mse: Tensor, l0: Tensor, **extra: Tensor) -> dict[str, float]:
        """The ``parts`` dict of :meth:`loss`: detached floats ``loss``, ``mse``, ``l0`` (mean count of
        nonzero acts per token, from the per-token counts ``l0``), ``l0_max``, ``dead_fraction`` (share
        of latents silent for ``dead_window_tokens`` training tokens) and any extra named terms."""
        parts = {
            "loss": float(loss.detach()),
            "mse": float(mse.detach()),
            "l0": float(l0.double().mean()),
            "l0_max": float(l0.max()) if l0.numel() else 0.0,
            "dead_fraction": float(self.dead_mask().double().mean()),
        }
        parts.update({k: float(v.detach()) for k, v in extra.items()})
        return parts

    def dead_mask(self) -> Tensor:
        """Latents that have not fired for ``dead_window_tokens`` training tokens."""
        return self.tokens_since_fired >= self.dead_window_tokens

    def use_sparse_decode(self, max_l0: int) -> bool:
        """Decide the decoding path for this step (``cfg.decode``; ``auto`` = sparse when the batch's
        largest L0 is at most d_sae / 32, the measured CPU crossover region of embedding_bag)."""
        if self.cfg.decode != "auto":
            return self.cfg.decode == "sparse"
        return max_l0 * 32 <= self.cfg.d_sae

    # ----- checkpoint ------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``sae.safetensors`` and ``cfg.json`` into the folder ``path`` atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        digest: list[str] = []

        def write_weights(tmp: str) -> None:
            save_file(tensors, tmp, metadata={"kind": self.kind})
            digest.append(file_sha256(tmp))

        atomic_write(path / WEIGHTS_FILE, write_weights)
        meta = {**config_record(self), "weights_sha256": digest[0]}
        atomic_write(path / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=2, sort_keys=True)))
        return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def config_record(sae: SAE) -> dict[str, Any]:
    """The JSON record written to ``cfg.json``."""
    from repro import __version__

    return {
        "kind": sae.kind,
        "schema_version": SCHEMA_VERSION,
        "repro_version": __version__,
        "config": dataclasses.asdict(sae.cfg),
    }


# ----- registry ------------------------------------------------------------------------------------
def register(cls: type[SAE]) -> type[SAE]:
    """Class decorator adding an architecture to the registry under ``cls.kind`` (no duplicates)."""
    if cls.kind in _REGISTRY:
        raise ValueError(f"SAE kind {cls.kind!r} is already registered")
    _REGISTRY[cls.kind] = cls
    return cls


def registry() -> dict[str, type[SAE]]:
    """A copy of the kind -> class mapping."""
    return dict(_REGISTRY)


def make_config(kind: str, d_in: int, d_sae: int, **hparams: Any) -> SAEConfig:
    """Build and validate the typed config of ``kind``; unknown hyperparameters raise ValueError."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown SAE kind={kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}")
    config_cls = _REGISTRY[kind].config_cls
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(hparams) - names)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) for kind {kind!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(names - {'d_in', 'd_sae'}))}"
        )
    cfg = config_cls(d_in=d_in, d_sae=d_sae, **hparams)
    cfg.validate()
    return cfg


def create(kind: str, d_in: int, d_sae: int, **hparams: Any) -> SAE:
    """A freshly initialised SAE of the given kind (see ``repro.sae.KINDS``)."""
    cfg = make_config(kind, d_in, d_sae, **hparams)
    return _REGISTRY[kind](cfg)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SAE:
    """Load an SAE saved with :meth:`SAE.save` (the folder, or its ``cfg.json``)."""
    path = Path(path)
    if path.name == CONFIG_FILE:
        path = path.parent
    cfg_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for f in (cfg_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"not an SAE checkpoint: {f} is missing")
    try:
        record = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt SAE config {cfg_file}: {e}") from None
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{cfg_file}: schema_version {record.get('schema_version')!r} is not supported "
            f"(this version reads {SCHEMA_VERSION})"
        )
    if file_sha256(weights_file) != record.get("weights_sha256"):
        raise ValueError(
            f"corrupt SAE weights {weights_file}: its sha256 differs from the one recorded in "
            f"{cfg_file} (the file was changed or damaged after it was written)"
        )
    config = dict(record["config"])
    sae = create(record["kind"], config.pop("d_in"), config.pop("d_sae"), **config)
    try:
        state = load_file(str(weights_file), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types on truncation/corruption
        raise ValueError(f"corrupt SAE weights {weights_file}: {e}") from None
    sae.load_state_dict(state, strict=True)
    return sae.to(map_location)
