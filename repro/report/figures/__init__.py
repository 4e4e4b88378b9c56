"""Paper figures from the tidy metrics CSV (:mod:`repro.report.aggregate`) and the figure-data JSON files.

One function per figure, ``figure_<name>(input, out) -> [<out>.pdf, <out>.png]``; both files are written
atomically (a temporary file in the same folder, then :func:`os.replace`). Figures are built on
:class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot, no global state). Every SAE kind has one
colour, marker and label across all figures, from the kind catalogue (:mod:`repro.kinds`); the sparsemax family
is drawn larger and with a thicker line, and the paper's method comes first. A panel without data shows "no data"
instead of failing.

Figures (:data:`FIGURES`, name -> (function, input)):

- ``nmse_vs_size`` (metrics): NMSE, and CE degradation when measured, vs dictionary size per kind and backbone;
- ``pareto`` (metrics): the NMSE–L0 frontier at the sweep's expansion, points joined per kind in order of L0;
- ``l0_distribution`` (``l0_distribution.json``): per-token L0 histograms, sparsemax vs fixed-k, and the inputs
  with the fewest and most active latents;
- ``firing_vs_activation`` (``latents.json``): per-latent firing rate vs mean activation, coloured by entropy;
- ``concepts`` (``concepts.json``): top-activating examples of a few latents per run;
- ``training_curves`` (``training_curves.json``): loss, MSE and L0 vs training step.

:func:`render` dispatches by figure name, reading the CSV or ``<data_dir>/<stem>.json``.

Layout: :mod:`~repro.report.figures.style` (colours, markers, labels, axes, legend, saving),
:mod:`~repro.report.figures.inputs` (seed means, error bars, figure-data runs), and one module per figure, named
after it; this package holds the registry :data:`FIGURES` and :func:`render`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from repro.report.catalogue import FIGURE_SOURCES
from repro.report.figures.concepts import figure_concepts
from repro.report.figures.firing_vs_activation import figure_firing_vs_activation
from repro.report.figures.inputs import _errors
from repro.report.figures.l0_distribution import _fixed_k, figure_l0_distribution
from repro.report.figures.nmse_vs_size import figure_nmse_vs_size
from repro.report.figures.pareto import _setting_label, figure_pareto
from repro.report.figures.style import UNKNOWN_COLOR, _kind_rank, kind_color, kind_label, kind_style, save_figure
from repro.report.figures.training_curves import figure_training_curves
from repro.report.metrics_csv import read as read_metrics

# the names other modules and the tests import from here
__all__ = [
    "FIGURES",
    "UNKNOWN_COLOR",
    "_errors",
    "_fixed_k",
    "_kind_rank",
    "_setting_label",
    "figure_concepts",
    "figure_firing_vs_activation",
    "figure_l0_distribution",
    "figure_nmse_vs_size",
    "figure_training_curves",
    "kind_color",
    "kind_label",
    "kind_style",
    "render",
    "save_figure",
]

_DRAW: dict[str, Callable[..., list[Path]]] = {
    "nmse_vs_size": figure_nmse_vs_size,
    "pareto": figure_pareto,
    "l0_distribution": figure_l0_distribution,
    "firing_vs_activation": figure_firing_vs_activation,
    "concepts": figure_concepts,
    "training_curves": figure_training_curves,
}


# name -> (drawing function, source: "metrics" or a figure-data stem); names and sources: repro.report.catalogue
FIGURES: dict[str, tuple[Callable[..., list[Path]], str]] = {
    name: (_DRAW[name], source) for name, source in FIGURE_SOURCES.items()
}


def render(name: str, metrics_csv: Path | None, data_dir: Path | None, out: Path) -> list[Path]:
    """Draw figure ``name`` (a key of :data:`FIGURES`) from the metrics CSV or ``<data_dir>/<stem>.json`` into
    ``<out>.pdf`` and ``<out>.png``; a missing input file raises FileNotFoundError naming it.
    """
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    fn, source = FIGURES[name]
    if source == "metrics":
        if metrics_csv is None:
            raise ValueError(f"figure {name!r} needs the metrics CSV")
        return fn(read_metrics(metrics_csv), out)
    if data_dir is None:
        raise ValueError(f"figure {name!r} needs the figure-data folder holding {source}.json")
    path = Path(data_dir) / f"{source}.json"
    if not path.is_file():
        raise FileNotFoundError(f"figure data for {name!r} not found: {path}")
    return fn(json.loads(path.read_text()), out)
