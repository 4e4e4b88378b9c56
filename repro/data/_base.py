"""Shared pieces of :mod:`repro.data`: the :class:`LabelledData` container, the
:class:`DatasetUnavailable` error, argument checks, the seeded stratified split, the class-balanced
``limit`` subset and source-version look-ups.

Split rule (used by every source without an official split): for each class in increasing label
order, the example ids of that class (ascending) are permuted with one ``numpy.random.default_rng(seed)``
generator shared across classes; the first ``round(0.2 * n_class)`` ids of the permutation (at least
one when the class has two or more examples, never all of them) form the test split, the rest the
train split.

Limit rule: within a split, each class's positions are ranked by a permutation drawn from
``default_rng([seed, 1])``; the classes are visited round-robin (in a class order also drawn from that
generator) taking rank 0 of every class, then rank 1, and so on; the first ``limit`` positions of that
sequence are kept. Class counts therefore differ by at most one (unless a class runs out), and for a
fixed seed and split the subset of ``limit`` n is contained in the subset of any larger ``limit``.
Returned examples are always in ascending id order.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "test")
TEST_FRACTION = 0.2


class DatasetUnavailable(Exception):
    """The source of a dataset is not installed (or not pre-cached); the message names the command or
    the steps that make it available."""


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledData:
    """One split (or a subset of it) of a labelled dataset.

    ``examples``: for images a uint8 array (N, H, W) or (N, H, W, 3), or for Hugging Face backed data a
    lazy sequence of PIL images; for texts a list of str (a lazy sequence of str for Hugging Face
    backed data). ``labels``: int64 (N,), indices into ``class_names``. ``ids``: int64 (N,), the index
    of each example in the full, unsplit, canonical ordering of the source (see each source module).
    ``source`` and ``curation`` are JSON-serialisable dicts that enter :meth:`spec`.
    """

    name: str
    split: str
    modality: str
    examples: Any
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray
    seed: int = 0
    limit: int | None = None
    source: dict = dataclasses.field(default_factory=dict)
    curation: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.examples)
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(f"{self.name}: {n} examples but labels {self.labels.shape}, ids {self.ids.shape}")
        if self.labels.dtype != np.int64 or self.ids.dtype != np.int64:
            raise ValueError(f"{self.name}: labels and ids must be int64")
        if self.modality not in ("image", "text"):
            raise ValueError(f"{self.name}: unknown modality {self.modality!r}")

    def __len__(self) -> int:
        return len(self.labels)

    def spec(self) -> dict:
        """A JSON-serialisable dict that identifies this content exactly (name, split, seed, limit,
        modality, size, class list, source package and version, curation parameters); hash it (e.g.
        ``json.dumps(spec, sort_keys=True)``) to name caches."""
        spec = {
            "name": self.name,
            "split": self.split,
            "seed": int(self.seed),
            "limit": None if self.limit is None else int(self.limit),
            "modality": self.modality,
            "n": len(self),
            "class_names": list(self.class_names),
            "source": self.source,
            "curation": self.curation,
        }
        return json.loads(json.dumps(spec))  # a deep copy that is guaranteed to serialise


def check_args(name: str, split: str, limit: int | None, seed: int, splits: Sequence[str] = SPLITS) -> None:
    """Validate the common ``load`` arguments; raise ValueError on a bad value."""
    if split not in splits:
        raise ValueError(f"{name}: split must be one of {list(splits)}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"{name}: limit must be a positive int or None, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name}: seed must be a non-negative int, got {seed!r}")


def stratified_split(
    labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of positions ``0..len(labels)-1`` (see the module docstring).
    Returns (train, test) int64 position arrays, each ascending."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        n_test = int(np.floor(test_fraction * n + 0.5))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        test_parts.append(rng.permutation(idx)[:n_test])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test.astype(np.int64)


def balanced_subset(labels: np.ndarray, limit: int, seed: int, what: str = "dataset") -> np.ndarray:
    """Ascending positions of a deterministic, class-balanced subset of ``limit`` of ``labels`` (see the
    module docstring); ValueError when ``limit`` exceeds ``len(labels)``."""
    labels = np.asarray(labels)
    n = len(labels)
    if limit > n:
        raise ValueError(f"{what}: limit={limit} exceeds the split size {n}")
    rng = np.random.default_rng([seed, 1])
    classes = np.unique(labels)
    class_pos = np.empty(len(classes), np.int64)
    class_pos[rng.permutation(len(classes))] = np.arange(len(classes))
    rank = np.empty(n, np.int64)
    order = np.empty(n, np.int64)
    for k, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        rank[idx[rng.permutation(len(idx))]] = np.arange(len(idx))
        order[idx] = class_pos[k]
    chosen = np.lexsort((order, rank))[:limit]
    return np.sort(chosen).astype(np.int64)


def split_and_limit(labels: np.ndarray, split: str, limit: int | None, seed: int, what: str) -> np.ndarray:
    """Positions (ascending) of ``split`` under the seeded stratified rule, then of the ``limit``
    subset when one is asked for."""
    train, test = stratified_split(labels, seed)
    pos = train if split == "train" else test
    return limit_positions(labels, pos, limit, seed, what)


def limit_positions(labels: np.ndarray, pos: np.ndarray, limit: int | None, seed: int, what: str) -> np.ndarray:
    """Restrict the split positions ``pos`` (ascending) to the class-balanced ``limit`` subset."""
    if limit is None:
        return pos
    return pos[balanced_subset(np.asarray(labels)[pos], limit, seed, what)]


@functools.cache
def debian_version(package: str) -> str | None:
    """Installed version of a Debian package (``dpkg-query``), or None when unknown."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def pypi_version(distribution: str) -> str | None:
    """Installed version of a Python distribution, or None when absent."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def require_files(name: str, paths: Sequence[Path], install: str) -> tuple[tuple[int, int], ...]:
    """Raise DatasetUnavailable naming the missing files and the install command, else return a stamp
    (size, mtime) of the files, so that in-process caches notice a changed source."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetUnavailable(f"{name}: missing {', '.join(missing)}; install it with: {install}")
    return tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def readonly(array: np.ndarray) -> np.ndarray:
    """Mark a cached array read-only (so callers cannot corrupt an in-process cache) and return it."""
    array.flags.writeable = False
    return array
