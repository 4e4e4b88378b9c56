"""WordNet 3.0 glosses labelled by lexicographer file (supersense), from the Debian package
``wordnet-base`` (files ``data.noun`` and ``data.verb`` in ``/usr/share/wordnet``; WordNet 3.0 licence,
permissive, Princeton University; see ``/usr/share/doc/wordnet-base/copyright``).

Parsing: lines starting with two spaces are the licence header and are skipped. In a synset line the
second field is the two-digit lexicographer file number, mapped to a name through the fixed WordNet
list :data:`LEXNAMES` (45 names, ``lexnames(5WN)``; the table itself is not shipped by the package); a
number outside 0..44, or one that names another part of speech than the file, raises ValueError. The
gloss is the text after ``" | "``.

Curation: nouns and verbs only (adjectives fall into 3 lexicographer files and adverbs into 1, which
would make the label mostly a part-of-speech test); the text is the definition part of the gloss only:
the gloss is cut before the first example sentence (``; "...`` or ``: "...``), and synsets whose gloss is only an
example are dropped; classes with fewer than :data:`MIN_CLASS_SIZE` synsets are dropped (none is, in
WordNet 3.0: the smallest, noun.motive, has 42). This yields 41 classes (26 noun, 15 verb) and 95,882
synsets. ``class_names`` lists the kept lexfile names in lexfile-number order; a label indexes that
list (not :data:`LEXNAMES`). Identical definitions in different synsets are kept (they are different
senses).

Split: the seeded stratified 80/20 rule of :mod:`repro.data._base`. Ids: the index in the canonical
curated list (``data.noun`` synsets in file order, then ``data.verb``).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._base import (
    LabelledData,
    check_args,
    debian_version,
    readonly,
    require_files,
    split_and_limit,
)

NAME = "wordnet-glosses"
PACKAGE = "wordnet-base"
INSTALL = f"sudo apt-get install -y {PACKAGE}"
DEFAULT_DIR = Path("/usr/share/wordnet")
POS_FILES = ("noun", "verb")
MIN_CLASS_SIZE = 40
LOADER_VERSION = 1

LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
assert len(LEXNAMES) == 45

_EXAMPLE = re.compile(r'[;:]\s*"')


class Synset(NamedTuple):
    """One parsed synset line."""

    pos: str  # "noun" or "verb" (the data file)
    offset: int  # byte offset in the data file (WordNet's synset id within a part of speech)
    lexfile: int  # lexicographer file number, index into LEXNAMES
    words: tuple[str, ...]
    gloss: str  # full gloss
    definition: str  # gloss before the first example sentence


def definition_of(gloss: str) -> str:
    """The definition part of a gloss: the text before the first ``; "`` or ``: "`` (example sentences), stripped;
    empty when the gloss starts with an example."""
    gloss = gloss.strip()
    if gloss.startswith('"'):
        return ""
    return _EXAMPLE.split(gloss, maxsplit=1)[0].strip().rstrip(";:").strip()


def read_synsets(pos: str, directory: str | os.PathLike = DEFAULT_DIR) -> list[Synset]:
    """All synsets of ``data.<pos>`` in file order. Raises ValueError on a malformed line or a lexfile
    number that is out of range or belongs to another part of speech."""
    path = Path(directory) / f"data.{pos}"
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            head, sep, gloss = line.partition(" | ")
            fields = head.split()
            if not sep or len(fields) < 4:
                raise ValueError(f"{path}:{lineno}: malformed synset line")
            try:
                offset, lexfile, n_words = int(fields[0]), int(fields[1]), int(fields[3], 16)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: malformed synset line ({exc})") from exc
            if not 0 <= lexfile < len(LEXNAMES) or not LEXNAMES[lexfile].startswith(pos + "."):
                raise ValueError(f"{path}:{lineno}: lexicographer file number {lexfile} is not a {pos} file")
            words = tuple(fields[4 : 4 + 2 * n_words : 2])
            gloss = gloss.strip()
            out.append(Synset(pos, offset, lexfile, words, gloss, definition_of(gloss)))
    return out


@functools.lru_cache(maxsize=2)
def _read_all(directory: str, stamp: tuple) -> tuple[tuple[Synset, ...], tuple[str, ...], np.ndarray]:
    synsets = [s for pos in POS_FILES for s in read_synsets(pos, directory) if s.definition]
    sizes = np.bincount([s.lexfile for s in synsets], minlength=len(LEXNAMES))
    kept = [k for k in range(len(LEXNAMES)) if sizes[k] >= MIN_CLASS_SIZE]
    label_of = {k: i for i, k in enumerate(kept)}
    synsets = [s for s in synsets if s.lexfile in label_of]
    labels = np.asarray([label_of[s.lexfile] for s in synsets], np.int64)
    return tuple(synsets), tuple(LEXNAMES[k] for k in kept), readonly(labels)


def read_all(directory: str | os.PathLike = DEFAULT_DIR) -> tuple[tuple[Synset, ...], tuple[str, ...], np.ndarray]:
    """The canonical curated list: (synsets, class names, int64 labels indexing the class names),
    cached in-process. Raises DatasetUnavailable when a data file is missing."""
    directory = Path(directory)
    stamp = require_files(NAME, [directory / f"data.{pos}" for pos in POS_FILES], INSTALL)
    return _read_all(str(directory.resolve()), stamp)


def load(
    split: str = "train", limit: int | None = None, seed: int = 0, directory: str | os.PathLike | None = None
) -> LabelledData:
    """WordNet noun+verb definitions labelled by lexicographer file, ``split`` under the seeded
    stratified 80/20 rule; ``limit`` takes a seeded class-balanced subset."""
    check_args(NAME, split, limit, seed)
    directory = Path(directory) if directory is not None else DEFAULT_DIR
    synsets, class_names, labels = read_all(directory)
    pos = split_and_limit(labels, split, limit, seed, f"{NAME}/{split}")
    default = directory.resolve() == DEFAULT_DIR.resolve()
    return LabelledData(
        name=NAME,
        split=split,
        modality="text",
        examples=[synsets[i].definition for i in pos],
        labels=labels[pos].copy(),
        class_names=list(class_names),
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
            "pos": list(POS_FILES),
            "text": "definition before the first example sentence",
            "min_class_size": MIN_CLASS_SIZE,
        },
    )
