"""Texts as bags of words: the tokeniser, vocabularies (built, saved, loaded) and 0/1 bags.

* :func:`tokenize` — lower-case, then words = runs of letters; a hyphenated word is **kept as one
  word** (``"long-sleeved"``, ``"t-shirt"``); every other character separates words.
* :func:`build_vocabulary` — the words occurring at least ``min_count`` times, sorted by
  descending count, then alphabetically.
* :func:`save_vocabulary` / :func:`load_vocabulary` — one word per line, UTF-8, so that a run can
  store the vocabulary its text encoder was trained on and reuse it.
* :func:`bag_of_words` — float32 ``[N, V]`` presence (0/1) of each vocabulary word; words
  outside the vocabulary are ignored.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from hashlab.errors import DataError

__all__ = [
    "bag_of_words",
    "build_vocabulary",
    "load_vocabulary",
    "resolve_vocabulary",
    "save_vocabulary",
    "tokenize",
]

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text``: runs of letters ``a-z``, hyphenated words kept whole."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """Words occurring at least ``min_count`` times in ``texts`` (occurrences, not documents),
    by descending count, ties alphabetically."""
    if int(min_count) < 1:
        raise DataError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(w for text in texts for w in tokenize(text))
    return sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))


def _check_words(words: Sequence[str], where: str) -> list[str]:
    words = list(words)
    bad = [w for w in words if not isinstance(w, str) or not w or w != w.strip() or "\n" in w]
    if bad:
        raise DataError(f"{where}: vocabulary words must be non-empty strings without surrounding "
                        f"spaces or newlines, got {bad[:3]!r}")
    dups = sorted(w for w, c in Counter(words).items() if c > 1)
    if dups:
        raise DataError(f"{where}: duplicate vocabulary words {dups[:5]}")
    return words


def save_vocabulary(vocabulary: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Write ``vocabulary`` to ``path``, one word per line (UTF-8); returns the path."""
    words = _check_words(vocabulary, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{w}\n" for w in words), encoding="utf-8")
    return path


def load_vocabulary(path: str | os.PathLike[str]) -> list[str]:
    """Read a vocabulary written by :func:`save_vocabulary` (blank lines are skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the vocabulary file: {exc}") from exc
    words = [line.strip() for line in text.splitlines() if line.strip()]
    if not words:
        raise DataError(f"{path}: the vocabulary file is empty")
    return _check_words(words, str(path))


def resolve_vocabulary(vocabulary: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    """A vocabulary given as a list of words or as the path of a vocabulary file."""
    if isinstance(vocabulary, (str, os.PathLike)):
        return load_vocabulary(vocabulary)
    words = _check_words(vocabulary, "vocabulary")
    if not words:
        raise DataError("vocabulary: the list of words is empty")
    return words


def bag_of_words(texts: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """float32 ``[len(texts), len(vocabulary)]``: 1 where the text contains the word.

    Out-of-vocabulary words are ignored."""
    column = {w: j for j, w in enumerate(vocabulary)}
    out = np.zeros((len(texts), len(column)), dtype=np.float32)
    for i, text in enumerate(texts):
        cols = [column[w] for w in tokenize(text) if w in column]
        out[i, cols] = 1.0
    return out
