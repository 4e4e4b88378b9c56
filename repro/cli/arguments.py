"""Values of the command line's options, parsed: key=value pairs, hook points, cache pointers, limits."""

from __future__ import annotations

import json
import re


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """``key=value`` arguments of the repeatable option ``flag`` as a dict (ValueError naming the option)."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects key=value, got {pair!r}")
        out[key] = value
    return out


def _parse_hparams(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as JSON where possible (numbers, null, true), else strings."""
    out = {}
    for key, value in _parse_pairs(pairs, "--set").items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _parse_labels(pairs: list[str] | None) -> dict[str, str]:
    """``key=value`` labels recorded with a run (config, run id, setting) for aggregation."""
    return _parse_pairs(pairs, "--label")


def resolve_hook(hook_points: tuple[str, ...], layer: str) -> str:
    """A hook point from ``--layer``: a hook name, or a layer number L meaning the one hook named
    ``<letters>.L`` (``layer.L``, ``resid.L``, ``vision.layers.L``), or else the L-th hook point."""
    if layer in hook_points:
        return layer
    if layer.isdigit():
        named = [h for h in hook_points if re.fullmatch(rf"[A-Za-z_.]+\.{layer}", h)]
        if len(named) == 1:
            return named[0]
        if int(layer) < len(hook_points):
            return hook_points[int(layer)]
    raise ValueError(f"unknown hook point {layer!r}; valid: {', '.join(hook_points)} (or a layer number)")


def _cache_path(value: str) -> str:
    """A cache folder, or a pointer file written by ``repro extract --pointer``."""
    from repro.cache import CacheError
    from repro.files import pointed_folder

    return str(pointed_folder(value, "cache", CacheError))


def _positive_int(name: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer or 'all', got {value!r}")
    return int(value)
