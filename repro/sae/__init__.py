"""The SAE zoo: ``create(kind, d_in, d_sae, **hparams)``, ``load(path)``, ``KINDS``.

Architectures register themselves when their modules are imported below (explicit imports, one
registry); ``KINDS`` is the single list of kinds that the CLI, the workflow and the tests use.
"""

from repro.sae import attention, gated, jumprelu, relu, topk  # noqa: F401  (registers the kinds)
from repro.sae.base import SAE, SAEConfig, create, load, make_config, registry

KINDS: tuple[str, ...] = tuple(registry())

__all__ = ["KINDS", "SAE", "SAEConfig", "create", "load", "make_config", "registry"]
