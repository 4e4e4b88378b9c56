"""Fortune cookies from the Debian package ``fortunes`` (fortune-mod's cookie files; licence BSD, see
``/usr/share/doc/fortunes/copyright``), one category per file in ``/usr/share/games/fortunes``, entries
separated by a line holding only ``%``. Label = category.

Curation. Only a neutral subset of the 43 category files is used (:data:`CATEGORIES`): art, computers,
food, law, literature, medicine, science, sports. They are topical (the label is a subject, so a text
probe has something to find), mostly quotations and light jokes, and were chosen after reading samples.
Left out: categories that are about people or groups and hold dated or edgy humour (men-women, ethnic,
people, drugs, politics, love, kids), grab-bags without a topic (cookie, fortunes, miscellaneous,
platitudes, wisdom, zippy, definitions, disclaimer, humorists, songs-poems, work, riddles, news, tao,
paradoxum, magic, goedel), fandom or project in-jokes (startrek, pratchett, knghtbrd, debian, linux,
linuxcookie, perl), ascii-art and translate-me (not prose), and education and pets (education overlaps
literature's author quotes; pets is small).

Cleaning, in this order: text decoded as UTF-8 (undecodable bytes replaced); terminal overstrike
sequences applied (each backspace deletes the character before it, so ``____^H^H^H^HBODY`` reads
``BODY``); surrounding whitespace stripped (inner newlines and tabs kept); empty entries and entries
longer than :data:`MAX_CHARS` characters dropped; exact duplicates within a category kept once; texts
found in more than one category dropped (their label is ambiguous).

Split: the seeded stratified 80/20 rule of :mod:`repro.data._base`. Ids: the index in the canonical
curated list (categories in :data:`CATEGORIES` order, entries in file order, after cleaning).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from ._base import (
    LabelledData,
    check_args,
    debian_version,
    readonly,
    require_files,
    split_and_limit,
)

NAME = "fortunes"
PACKAGE = "fortunes"
INSTALL = f"sudo apt-get install -y {PACKAGE}"
DEFAULT_DIR = Path("/usr/share/games/fortunes")
CATEGORIES = ("art", "computers", "food", "law", "literature", "medicine", "science", "sports")
MAX_CHARS = 1000
LOADER_VERSION = 1

_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)
_OVERSTRIKE = re.compile(r"[^\x08\n]\x08")


def clean(entry: str) -> str:
    """One cookie with overstrikes applied and surrounding whitespace stripped."""
    entry = entry.replace("\r\n", "\n")
    while "\x08" in entry:
        new = _OVERSTRIKE.sub("", entry, count=0)
        if new == entry:  # a backspace at the start of a line: nothing left to delete
            new = entry.replace("\x08", "")
        entry = new
    return entry.strip()


def read_category(path: str | os.PathLike) -> list[str]:
    """All cleaned, non-empty entries of one cookie file, in file order (no length filter, no dedupe)."""
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    entries = (clean(part) for part in _SEPARATOR.split(text))
    return [e for e in entries if e]


@functools.lru_cache(maxsize=4)
def _read_all(directory: str, stamp: tuple) -> tuple[tuple[str, ...], np.ndarray]:
    per_category = []
    for cat in CATEGORIES:
        kept = []
        seen = set()
        for entry in read_category(Path(directory) / cat):
            if len(entry) <= MAX_CHARS and entry not in seen:
                seen.add(entry)
                kept.append(entry)
        per_category.append(kept)
    counts: dict[str, int] = {}
    for kept in per_category:
        for entry in kept:
            counts[entry] = counts.get(entry, 0) + 1
    texts, labels = [], []
    for label, kept in enumerate(per_category):
        for entry in kept:
            if counts[entry] == 1:
                texts.append(entry)
                labels.append(label)
    return tuple(texts), readonly(np.asarray(labels, np.int64))


def read_all(directory: str | os.PathLike = DEFAULT_DIR) -> tuple[tuple[str, ...], np.ndarray]:
    """The canonical curated list: (texts, int64 labels indexing :data:`CATEGORIES`), cached in-process.
    Raises DatasetUnavailable when a category file is missing."""
    directory = Path(directory)
    stamp = require_files(NAME, [directory / cat for cat in CATEGORIES], INSTALL)
    return _read_all(str(directory.resolve()), stamp)


def load(
    split: str = "train", limit: int | None = None, seed: int = 0, directory: str | os.PathLike | None = None
) -> LabelledData:
    """Curated fortunes ``split`` (seeded stratified 80/20; ``limit`` takes a seeded class-balanced
    subset) read from ``directory`` (default: the Debian package's directory)."""
    check_args(NAME, split, limit, seed)
    directory = Path(directory) if directory is not None else DEFAULT_DIR
    texts, labels = read_all(directory)
    pos = split_and_limit(labels, split, limit, seed, f"{NAME}/{split}")
    default = directory.resolve() == DEFAULT_DIR.resolve()
    return LabelledData(
        name=NAME,
        split=split,
        modality="text",
        examples=[texts[i] for i in pos],
        labels=labels[pos].copy(),
        class_names=list(CATEGORIES),
        ids=pos,
        seed=seed,
        limit=limit,
        source={
            "kind": "debian",
            "package": PACKAGE,
            "version": debian_version(PACKAGE) if default else None,
            "path": str(directory.resolve()),
        },
        curation={
            "loader_version": LOADER_VERSION,
            "split_rule": "stratified-80-20",
            "categories": list(CATEGORIES),
            "max_chars": MAX_CHARS,
            "dedupe": "exact, cross-category dropped",
        },
    )
