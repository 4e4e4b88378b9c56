"""The ``concepts`` figure: top-activating examples (images or token strings) of a few latents per run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from repro.report.figures.inputs import _floats, _ordered, _runs
from repro.report.figures.style import _clean_text, _no_data, kind_color, kind_label, save_figure

# concept grids: manual layout in inches (text rows need a known width to place tokens in a monospace font)
_LEFT, _RIGHT, _TOP, _BOTTOM = 0.75, 0.2, 0.3, 0.2


_MONO_EM = 0.602  # advance of a DejaVu Sans Mono glyph, in em


def _concept_rows(runs: list[tuple[str, dict]], max_latents: int, max_examples: int) -> list[tuple]:
    """(kind of row, payload, height in inches, padding above in inches) for the concepts figure."""
    rows: list[tuple] = []
    for rid, run in runs:
        rows.append(("header", (rid, run), 0.25, 0.25))
        latents = (run.get("latents") or [])[:max_latents]
        if not latents:
            rows.append(("empty", "no latents", 0.6, 0.1))
        for lat in latents:
            exs = (lat.get("examples") or [])[:max_examples]
            is_image = run.get("modality") == "image" or any(ex.get("image") is not None for ex in exs)
            if is_image:
                rows.append(("image", lat, 1.45, 0.42))
            else:
                rows.append(("text", lat, 0.3 + 0.24 * max(len(exs), 1), 0.25))
    return rows


def _image_example(ax: Axes, ex: dict, color: str) -> None:
    img = None if ex.get("image") is None else np.asarray(ex["image"], dtype=float)
    tmap = None if ex.get("token_map") is None else np.asarray(ex["token_map"], dtype=float)
    if img is None and tmap is None:
        _no_data(ax, "no image")
        return
    if img is not None and img.ndim == 2:
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        h, w = img.shape
    else:
        h, w = tmap.shape
        ax.imshow(np.zeros((h, w)), cmap="gray", vmin=0, vmax=1)
    if tmap is not None and tmap.ndim == 2 and tmap.size:
        t = np.nan_to_num(np.clip(tmap, 0, None))
        peak = t.max()
        if peak > 0:
            rgba = np.zeros((*t.shape, 4))
            rgba[..., :3] = to_rgb(color)
            rgba[..., 3] = 0.65 * t / peak
            extent = (-0.5, w - 0.5, h - 0.5, -0.5)
            ax.imshow(rgba, extent=extent, interpolation="nearest")
            gh, gw = t.shape
            ch, cw = h / gh, w / gw
            for i, j in zip(*np.nonzero(t > 0), strict=True):
                ax.add_patch(
                    Rectangle((j * cw - 0.5, i * ch - 0.5), cw, ch, fill=False, edgecolor=color, linewidth=1.0)
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(
        f"{_clean_text(ex.get('label', '?'), 22)}\nact {float(ex.get('value', float('nan'))):.3g}",
        fontsize=7,
        parse_math=False,
    )


def _text_examples(ax: Axes, exs: list[dict], width_in: float, color: str, fontsize: float = 7.5) -> None:
    """Token strings, one example per line, active tokens on a background whose opacity is the activation."""
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if not exs:
        _no_data(ax, "no examples")
        return
    n_chars = max(int(width_in * 72 / (_MONO_EM * fontsize)), 20)
    ax.set_xlim(0, n_chars)
    ax.set_ylim(len(exs) - 0.5, -0.5)
    for i, ex in enumerate(exs):
        prefix = f"{float(ex.get('value', float('nan'))):7.3g} │ "
        toks = [re.sub(r"\s", " ", str(t)) or " " for t in (ex.get("tokens") or [])]
        acts = _floats(ex.get("token_acts"))
        acts = np.concatenate([acts[: len(toks)], np.zeros(max(len(toks) - acts.size, 0))])
        acts = np.nan_to_num(acts)
        ax.text(0, i, prefix, fontsize=fontsize, family="monospace", va="center", color="0.35", parse_math=False)
        if not toks:
            ax.text(
                len(prefix),
                i,
                _clean_text(ex.get("label", "(no tokens)"), n_chars - len(prefix)),
                fontsize=fontsize,
                family="monospace",
                va="center",
                parse_math=False,
            )
            continue
        room = n_chars - len(prefix)
        start = _window(toks, int(np.argmax(acts)) if acts.size else 0, room)
        x = len(prefix)
        peak = acts.max() if acts.size and acts.max() > 0 else 1.0
        for tok, act in zip(toks[start:], acts[start:], strict=True):
            if x + len(tok) > n_chars:
                ax.text(n_chars - 1, i, "…", fontsize=fontsize, family="monospace", va="center")
                break
            if act > 0:
                ax.add_patch(
                    Rectangle(
                        (x, i - 0.42), len(tok), 0.84, facecolor=color, alpha=0.15 + 0.75 * act / peak, linewidth=0
                    )
                )
            ax.text(
                x,
                i,
                tok,
                fontsize=fontsize,
                family="monospace",
                va="center",
                parse_math=False,
                fontweight="bold" if act > 0 else "normal",
            )
            x += len(tok)


def _window(tokens: list[str], centre: int, room: int) -> int:
    """First token index such that the tokens around ``centre`` fit in ``room`` characters (context on the left)."""
    start, used = centre, len(tokens[centre]) if tokens else 0
    while start > 0 and used + len(tokens[start - 1]) <= room // 2:
        start -= 1
        used += len(tokens[start])
    return start


def figure_concepts(data: dict, out: str | Path, max_latents: int = 4, max_examples: int = 5) -> list[Path]:
    """Concept grids: for at most 2 runs (sparsemax first) and ``max_latents`` latents each, a row of the latent's
    top-activating examples: images with the active spatial tokens highlighted (overlay and outline, title: label
    and activation), or token strings with active tokens on a background proportional to their activation.
    """
    runs = _ordered(_runs(data))[:2]
    width = max(8.0, _LEFT + _RIGHT + 1.55 * max_examples)
    inner = width - _LEFT - _RIGHT
    rows = _concept_rows(runs, max_latents, max_examples) or [("empty", "no data", 1.0, 0.1)]
    height = _TOP + _BOTTOM + sum(h + pad for _, _, h, pad in rows)
    fig = Figure(figsize=(width, height))
    y = height - _TOP
    current = ("", {})
    for kind_of_row, payload, h, pad in rows:
        y -= pad + h
        rect = [_LEFT / width, y / height, inner / width, h / height]
        if kind_of_row == "header":
            current = payload
            rid, run = payload
            kind = run.get("kind", "")
            fig.text(
                _LEFT / width,
                (y + h / 2) / height,
                f"{kind_label(kind)}  ({rid})",
                fontsize=10,
                fontweight="bold",
                color=kind_color(kind),
                va="center",
                parse_math=False,
            )
            continue
        if kind_of_row == "empty":
            _no_data(fig.add_axes(rect), payload)
            continue
        color = kind_color(current[1].get("kind", ""))
        exs = (payload.get("examples") or [])[:max_examples]
        label = f"latent {payload.get('latent', '?')}"
        if kind_of_row == "text":
            ax = fig.add_axes(rect)
            _text_examples(ax, exs, inner, color)
            ax.set_title(
                "top activation │ tokens around the most active one (background ∝ token activation)",
                fontsize=7,
                loc="left",
                color="0.4",
            )
            ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
            continue
        cell = inner / max_examples
        for j in range(max(len(exs), 1)):
            ax = fig.add_axes([(_LEFT + j * cell + 0.05) / width, y / height, (cell - 0.1) / width, h / height])
            if not exs:
                _no_data(ax, "no examples")
            else:
                _image_example(ax, exs[j], color)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(
        "Top-activating examples per latent (highlight: where the latent is active, opacity ∝ activation)",
        fontsize=11,
        y=1 - 0.15 / height,
        va="top",
    )
    return save_figure(fig, out)
