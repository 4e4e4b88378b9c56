"""The SAE zoo: ``create(kind, d_in, d_sae, **hparams)``, ``load(path)``, ``KINDS``.

Architectures register themselves when their modules are imported below (explicit imports, one
registry); ``KINDS`` is the single list of kinds that the CLI, the workflow and the tests use. Each registered
kind has an entry in :mod:`repro.kinds` (its label, colour, family, sparsity knob, ...), checked here.
"""

from repro.kinds import CATALOGUE
from repro.sae import attention, gated, jumprelu, relu, topk  # noqa: F401  (registers the kinds)
from repro.sae.base import SAE, SAEConfig, create, load, make_config, registry


def check_catalogue() -> None:
    """Every registered kind is declared in :mod:`repro.kinds` and every declared kind is registered."""
    registered, declared = set(registry()), set(CATALOGUE)
    if registered != declared:
        raise RuntimeError(
            f"SAE kinds registered without a repro.kinds entry: {sorted(registered - declared)}; "
            f"declared without a registered class: {sorted(declared - registered)}"
        )


check_catalogue()
KINDS: tuple[str, ...] = tuple(registry())

__all__ = ["KINDS", "SAE", "SAEConfig", "check_catalogue", "create", "load", "make_config", "registry"]
