"""The catalogue of SAE kinds: everything the harness knows about a kind besides its code, declared once.

Each kind's code is its module in ``repro/sae/`` (a class decorated with ``@register``); its entry here says how
the rest of the harness treats it, and ``repro.sae`` refuses to import when the two disagree (a kind registered
without an entry, or an entry without a class). Everything else derives from these entries: the tables' row order
and labels, the figures' colours, markers, order and emphasis, which kinds the guidance sets ``k`` for, which
L0 distributions are drawn, and the sparsity hyperparameters recorded per run; ``tests/test_kinds.py`` holds the
config schema's kind enums to it. This module imports nothing heavy (no torch, pandas or matplotlib), so the
report code and the Snakefile read it cheaply.

Fields (:class:`Kind`): ``name``; ``label`` (tables and figures); ``color`` and ``marker`` (figures); ``family``
(``classic``: a linear encoder with a sparsifying activation; ``attention``: attention over a learned concept
dictionary; ``sparsemax``: a sparsemax code, emphasised in every figure as the paper's family); ``knob``, the
hyperparameter that sets its sparsity (None: sparsity is adaptive); ``guided``: its ``k`` is set from the sparsemax
run's L0 by ``repro guide``; ``l0_figure``: its per-token L0 distribution is drawn (adaptive or fixed-k codes).

The catalogue's order is the one order of kinds: baselines, then the attention family, the paper's method last (a
paper table's reading order); figures draw :data:`PAPER_METHOD` first and the rest in this order.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("classic", "attention", "sparsemax")


@dataclass(frozen=True)
class Kind:
    """One kind's entry (module docstring)."""

    name: str
    label: str
    color: str
    marker: str
    family: str
    knob: str | None = None
    guided: bool = False
    l0_figure: bool = False

    @property
    def emphasised(self) -> bool:
        """Drawn thicker, larger and on top in every figure (the sparsemax family)."""
        return self.family == "sparsemax"


CATALOGUE: dict[str, Kind] = {}


def declare(kind: Kind) -> Kind:
    """Add ``kind`` to the catalogue (one entry per kind; the family must be one of :data:`FAMILIES`)."""
    if kind.name in CATALOGUE:
        raise ValueError(f"SAE kind {kind.name!r} is already declared")
    if kind.family not in FAMILIES:
        raise ValueError(f"kind {kind.name!r}: family {kind.family!r} is not one of {', '.join(FAMILIES)}")
    CATALOGUE[kind.name] = kind
    return kind


for _kind in (
    Kind("relu", "ReLU", "#1f77b4", "o", "classic", knob="l1_coefficient"),  # blue
    Kind("jumprelu", "JumpReLU", "#17becf", "v", "classic", knob="l0_coefficient"),  # cyan
    Kind("gated", "Gated", "#bcbd22", "D", "classic", knob="l1_coefficient"),  # olive
    Kind("topk", "TopK", "#2ca02c", "s", "classic", knob="k", guided=True, l0_figure=True),  # green
    Kind("batchtopk", "BatchTopK", "#ff7f0e", "^", "classic", knob="k", guided=True, l0_figure=True),  # orange
    Kind("attention_relu", "Attention + ReLU", "#8c564b", "X", "attention", knob="l1_coefficient"),  # brown
    Kind("mlp_sparsemax", "MLP + sparsemax", "#9467bd", "P", "sparsemax", l0_figure=True),  # purple
    Kind("sparsemax_attention", "Sparsemax SAE", "#d62728", "*", "sparsemax", l0_figure=True),  # red: the paper's
    Kind("sparsemax_attention_paper", "Sparsemax SAE (paper eq.)", "#e377c2", "*", "sparsemax"),  # pink
):
    declare(_kind)

#: The paper's method: the guidance source, drawn first in every figure.
PAPER_METHOD = "sparsemax_attention"


def info(kind: str) -> Kind | None:
    """The entry of ``kind`` (None when it is not declared)."""
    return CATALOGUE.get(kind)


def order() -> tuple[str, ...]:
    """Every declared kind, in the catalogue's order."""
    return tuple(CATALOGUE)


def label(kind: str) -> str:
    """The display name of ``kind`` (the kind itself when it is not declared)."""
    entry = CATALOGUE.get(kind)
    return entry.label if entry else str(kind)


def rank(kind: str) -> int:
    """The position of ``kind`` in the catalogue (undeclared kinds after every declared one)."""
    names = order()
    return names.index(kind) if kind in names else len(names)


def guided_kinds() -> tuple[str, ...]:
    """The kinds whose ``k`` ``repro guide`` sets from the sparsemax run's L0."""
    return tuple(k.name for k in CATALOGUE.values() if k.guided)


def knobs() -> tuple[str, ...]:
    """The sparsity hyperparameters of the declared kinds, once each, in catalogue order."""
    return tuple(dict.fromkeys(k.knob for k in CATALOGUE.values() if k.knob))


__all__ = [
    "CATALOGUE",
    "FAMILIES",
    "Kind",
    "PAPER_METHOD",
    "declare",
    "guided_kinds",
    "info",
    "knobs",
    "label",
    "order",
    "rank",
]
