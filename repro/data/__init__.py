"""Labelled datasets for probes and SAE benchmarks, behind one call::

    from repro.data import load, DATASETS, LabelledData, DatasetUnavailable
    ds = load("fashion-mnist", split="train", limit=1000, seed=0)

Offline sources (:data:`OFFLINE_DATASETS`, installed as Debian or PyPI packages, never the network):
``fashion-mnist`` (:mod:`.fashion_mnist`), ``mnist-5k`` (:mod:`.mnist5k`), ``digits`` (:mod:`.digits`),
``fortunes`` (:mod:`.fortunes`), ``wordnet-glosses`` (:mod:`.wordnet`). Paper-scale sources
(:data:`PAPER_DATASETS`, :mod:`.hf`) are read from a local directory given by ``root``; and any local
Hugging Face data can be named ``hf-imagefolder:<path>`` or ``hf-disk:<path>``.

Each source module's docstring states its licence, split rule, id scheme and curation; the shared
split and ``limit`` rules are in :mod:`._base`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import digits, fashion_mnist, fortunes, hf, mnist5k, wordnet
from ._base import SPLITS, DatasetUnavailable, LabelledData, balanced_subset, stratified_split

__all__ = [
    "DATASETS",
    "OFFLINE_DATASETS",
    "PAPER_DATASETS",
    "PREFIXES",
    "SPLITS",
    "DatasetUnavailable",
    "LabelledData",
    "balanced_subset",
    "load",
    "load_at_most",
    "stratified_split",
]

_DIRECTORY_SOURCES: dict[str, Callable[..., LabelledData]] = {
    fashion_mnist.NAME: fashion_mnist.load,
    fortunes.NAME: fortunes.load,
    wordnet.NAME: wordnet.load,
}
_PACKAGE_SOURCES: dict[str, Callable[..., LabelledData]] = {
    mnist5k.NAME: mnist5k.load,
    digits.NAME: digits.load,
}
OFFLINE_DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist-5k", "digits", "fortunes", "wordnet-glosses")
PAPER_DATASETS: tuple[str, ...] = hf.PAPER_DATASETS
PREFIXES: tuple[str, ...] = hf.PREFIXES
DATASETS: tuple[str, ...] = OFFLINE_DATASETS + PAPER_DATASETS
assert set(OFFLINE_DATASETS) == set(_DIRECTORY_SOURCES) | set(_PACKAGE_SOURCES)


def load(
    name: str,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    *,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LabelledData:
    """Load ``split`` ("train" or "test") of dataset ``name``, optionally a seeded class-balanced subset
    of ``limit`` examples, as a :class:`LabelledData`.

    ``name`` is one of :data:`DATASETS` or ``hf-imagefolder:<path>`` / ``hf-disk:<path>``. ``root``:
    for the Debian-backed sources (fashion-mnist, fortunes, wordnet-glosses) a directory replacing the
    package's data directory; for the paper-scale names the directory holding ``<root>/<name>``; not
    accepted by the others. ``cache_dir``: the ``datasets`` cache for ImageFolder sources only.
    Raises ValueError for an unknown name or bad argument, DatasetUnavailable when the source is not
    installed or not pre-cached (the message says how to get it)."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a str, got {name!r}")
    for prefix in PREFIXES:
        if name.startswith(prefix):
            if root is not None:
                raise ValueError(f"{name}: root is not used with a {prefix} path")
            path = name[len(prefix) :]
            if not path:
                raise ValueError(f"{name}: give a path after {prefix!r}")
            return hf.load_local(prefix[:-1], path, split=split, limit=limit, seed=seed, name=name, cache_dir=cache_dir)
    if name in PAPER_DATASETS:
        return hf.load_named(name, split=split, limit=limit, seed=seed, root=root, cache_dir=cache_dir)
    if cache_dir is not None:
        raise ValueError(f"{name}: cache_dir is only used by Hugging Face ImageFolder sources")
    if name in _DIRECTORY_SOURCES:
        return _DIRECTORY_SOURCES[name](split=split, limit=limit, seed=seed, directory=root)
    if name in _PACKAGE_SOURCES:
        if root is not None:
            raise ValueError(f"{name}: root is not used by this source")
        return _PACKAGE_SOURCES[name](split=split, limit=limit, seed=seed)
    raise ValueError(
        f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, or {' / '.join(p + '<path>' for p in PREFIXES)}"
    )


def load_at_most(
    name: str, split: str = "test", limit: int | None = None, seed: int = 0, *, root: str | os.PathLike | None = None
) -> LabelledData:
    """``split`` of ``name`` with at most ``limit`` examples: the class-balanced subset of :func:`load` when
    ``limit`` is below the split's size, else the whole split (recorded with limit None). The evaluation
    splits are read this way (``repro evaluate --test-limit``, ``repro extract --at-most``), so that a limit
    larger than a small split means "all" instead of an error."""
    kw = {"root": root} if root else {}
    data = load(name, split=split, limit=None, seed=seed, **kw)
    if limit is not None and limit < len(data):
        data = load(name, split=split, limit=limit, seed=seed, **kw)
    return data
