"""The figures' common style: every SAE kind's colour, marker and label (from :mod:`repro.kinds`), the figure
order, log axes with plain tick labels, the kind legend, "no data" panels, and saving a figure as PDF and PNG."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from repro import kinds

UNKNOWN_COLOR = "#555555"
NAN_COLOR = "#c8c8c8"
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)))
DPI = 150


def is_sparsemax(kind: str) -> bool:
    """Whether ``kind`` is one of the sparsemax SAEs (emphasised in every figure; ``repro.kinds``)."""
    entry = kinds.info(str(kind))
    return bool(entry and entry.emphasised)


def is_fixed_k(kind: str) -> bool:
    """Whether ``kind``'s L0 is set by its ``k`` (``repro.kinds``: the guided kinds)."""
    return str(kind) in kinds.guided_kinds()


def kind_label(kind: str) -> str:
    """The display name of an SAE kind (the kind itself when unknown)."""
    return kinds.label(kind)


def kind_color(kind: str) -> str:
    """The colour of ``kind`` in every figure (``repro.kinds``; grey when it is not declared)."""
    entry = kinds.info(str(kind))
    return entry.color if entry else UNKNOWN_COLOR


def kind_style(kind: str) -> dict:
    """Line/marker keyword arguments for ``kind``: its colour and marker; sparsemax thicker, larger and on top."""
    sm = is_sparsemax(kind)
    entry = kinds.info(str(kind))
    return {
        "color": entry.color if entry else UNKNOWN_COLOR,
        "marker": entry.marker if entry else "o",
        "linewidth": 2.8 if sm else 1.5,
        "markersize": 13 if sm else 6,
        "zorder": 5 if sm else 3,
    }


def _kind_rank(kind: str) -> tuple[bool, int, str]:
    """Figure order: the paper's method first, then the catalogue's order (``repro.kinds``)."""
    return (kind != kinds.PAPER_METHOD, kinds.rank(kind), str(kind))


def _expansion_label(x: float) -> str:
    return f"{x:g}x"


def _no_data(ax: Axes, message: str = "no data") -> None:
    ax.text(
        0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.45", fontsize=11, style="italic"
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _stem(out: str | Path) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in (".pdf", ".png") else out


def save_figure(fig: Figure, out: str | Path) -> list[Path]:
    """Write ``fig`` to ``<out>.pdf`` and ``<out>.png`` (dpi 150), each atomically; returns both paths."""
    stem = _stem(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, meta in (("pdf", {"CreationDate": None}), ("png", {"Software": None})):
        path = stem.with_name(f"{stem.name}.{ext}")
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # same folder: os.replace is atomic
        try:
            fig.savefig(tmp, format=ext, dpi=DPI, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        paths.append(path)
    return paths


class _PlainLogFormatter(LogFormatter):
    """The ticks :class:`LogFormatter` labels, written plainly (0.3, 20, 1e-05)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _log(ax: Axes, axis: str = "y") -> None:
    """Log scale with plain tick labels (0.3, 20) instead of 3×10⁻¹."""
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(_PlainLogFormatter())
    target.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))


def _log_if_wide(ax: Axes, values: Iterable[float], axis: str = "y", ratio: float = 8.0) -> None:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size and (v > 0).all() and v.max() / v.min() > ratio:
        _log(ax, axis)


def _kind_legend(
    fig: Figure,
    kinds: Iterable[str],
    extra: list | None = None,
    markers: bool = True,
    notes: dict[str, str] | None = None,
) -> None:
    """One figure legend below the panels: a line (and marker) per SAE kind (with its note), then ``extra``."""
    handles = []
    for k in sorted(set(kinds), key=_kind_rank):
        st = kind_style(k)
        if not markers:
            st["marker"] = None
        note = (notes or {}).get(k)
        handles.append(Line2D([], [], label=kind_label(k) + (f" ({note})" if note else ""), **st))
    handles += extra or []
    if handles:
        longest = max(len(h.get_label()) for h in handles)
        fits = max(1, int(fig.get_figwidth() * 72 / (8.5 * 0.6 * longest + 40)))  # columns that fit the width
        fig.legend(
            handles=handles, loc="outside lower center", ncols=min(len(handles), 6, fits), fontsize=8.5, frameon=False
        )


def _clean_text(text: str, limit: int = 120) -> str:
    text = re.sub(r"\s+", " ", "".join(ch if ch.isprintable() else " " for ch in str(text))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
