"""Visual attributes for multi-function codes (DPH): tables, per-image files, partial labels.

Attribute values are ``int8``: 1 (has it), 0 (does not), :data:`MISSING` = 2 (unknown, as in
DPH where ``A_ij = 2`` marks a missing label). Category labels use ``-1`` for missing (DPH's
``y = C + 1``).

* :func:`read_class_attributes` — a class-level table (CSV, one row per class, one 0/1 column
  per attribute), like the class-attribute matrices shipped with attribute datasets. hashlab
  ships one for Fashion-MNIST: ``configs/fmnist/attributes.csv`` (``"fmnist"``).
* :func:`read_attribute_csv` — per-image attributes (``image,attr1,attr2,...``; values
  1/0, 1/-1, or empty / 2 / ``?`` for missing).
* :func:`read_celeba_attributes` — CelebA's ``list_attr_celeba.txt`` (count line, names line,
  then ``filename v1 ... vp`` with 1/-1).
* :func:`partial_labels` — DPH's partially labelled training protocol: split the training
  images into disjoint train-both / train-category / train-attribute parts and hide the labels
  each part does not have.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.errors import DataError

__all__ = [
    "MISSING",
    "AttributeTable",
    "ImageAttributes",
    "PartialLabels",
    "attribute_table_path",
    "read_class_attributes",
    "read_attribute_csv",
    "read_celeba_attributes",
    "partial_labels",
    "resolve_attributes",
    "dataset_keys",
    "PARTS",
]

MISSING = 2
PARTS = ("both", "category", "attribute")

_BUILTIN_TABLES = {"fmnist": "fmnist/attributes.csv", "fashion-mnist": "fmnist/attributes.csv"}


@dataclass(frozen=True)
class AttributeTable:
    """Class-level attributes: ``matrix[c, j]`` in {0, 1} for class ``classes[c]``."""

    classes: list[str]
    names: list[str]
    matrix: np.ndarray  # int8 [C, p]

    def for_labels(self, labels: np.ndarray) -> np.ndarray:
        """Per-image attributes ``int8 [N, p]`` of images with class ids ``labels``."""
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DataError(
                f"class id out of range for an attribute table of {len(self.classes)} classes"
            )
        return self.matrix[labels]


@dataclass(frozen=True)
class ImageAttributes:
    """Per-image attributes read from a file: ``matrix[i]`` belongs to image ``keys[i]``."""

    keys: list[str]
    names: list[str]
    matrix: np.ndarray  # int8 [N, p] with MISSING

    def align(self, keys: list[str]) -> np.ndarray:
        """Rows for ``keys`` (e.g. a dataset's relative file paths); unknown keys are MISSING."""
        where = {k: i for i, k in enumerate(self.keys)}
        out = np.full((len(keys), len(self.names)), MISSING, dtype=np.int8)
        rows = [(i, where[k]) for i, k in enumerate(keys) if k in where]
        if rows:
            dst, src = np.array(rows).T
            out[dst] = self.matrix[src]
        return out


def attribute_table_path(name_or_path: str | Path) -> Path:
    """A built-in table name (``"fmnist"``) or a CSV path → the CSV path."""
    key = str(name_or_path)
    if key in _BUILTIN_TABLES:
        return Path(__file__).resolve().parent.parent / "configs" / _BUILTIN_TABLES[key]
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise DataError(
            f"attribute table {key!r}: not a file and not a built-in table "
            f"({sorted(_BUILTIN_TABLES)})"
        )
    return path


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read attribute file: {exc}") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [[c.strip() for c in row] for row in csv.reader(lines)]


def read_class_attributes(name_or_path: str | Path) -> AttributeTable:
    """Read a class-level attribute CSV: header ``class,attr1,...``; rows ``name,0/1,...``.

    Lines starting with ``#`` are comments. Row order defines the class ids (0, 1, ...).
    """
    path = attribute_table_path(name_or_path)
    rows = _rows(path)
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header and at least one class row")
    header, body = rows[0], rows[1:]
    if len(header) < 2:
        raise DataError(f"{path}: header needs a class column and at least one attribute")
    names = header[1:]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate attribute names in the header")
    matrix = np.zeros((len(body), len(names)), dtype=np.int8)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{path}: row {r + 2} has {len(row)} fields, header has {len(header)}")
        for j, v in enumerate(row[1:]):
            if v not in ("0", "1"):
                raise DataError(
                    f"{path}: row {r + 2} ({row[0]}), attribute {names[j]!r}: expected 0 or 1, "
                    f"got {v!r}"
                )
            matrix[r, j] = int(v)
    return AttributeTable([row[0] for row in body], names, matrix)


_VALUES = {"1": 1, "0": 0, "-1": 0, "": MISSING, "2": MISSING, "?": MISSING, "NA": MISSING}


def _parse_value(v: str, where: str) -> int:
    try:
        return _VALUES[v]
    except KeyError:
        raise DataError(
            f"{where}: expected 1, 0, -1 or empty/2/?/NA (missing), got {v!r}"
        ) from None


def read_attribute_csv(path: str | Path) -> ImageAttributes:
    """Per-image attributes: header ``image,attr1,...``; values 1/0 or 1/-1, missing = empty,
    ``2``, ``?`` or ``NA``."""
    path = Path(path)
    rows = _rows(path)
    if len(rows) < 2 or len(rows[0]) < 2:
        raise DataError(f"{path}: expected a header 'image,attr1,...' and at least one row")
    names = rows[0][1:]
    keys, matrix = [], np.empty((len(rows) - 1, len(names)), dtype=np.int8)
    for r, row in enumerate(rows[1:]):
        if len(row) != len(names) + 1:
            raise DataError(f"{path}: row {r + 2} has {len(row)} fields, expected {len(names) + 1}")
        keys.append(row[0])
        matrix[r] = [_parse_value(v, f"{path}: row {r + 2}") for v in row[1:]]
    if len(set(keys)) != len(keys):
        raise DataError(f"{path}: duplicate image names")
    return ImageAttributes(keys, names, matrix)


def read_celeba_attributes(path: str | Path) -> ImageAttributes:
    """CelebA ``list_attr_celeba.txt``: line 1 = number of images, line 2 = the 40 attribute
    names, then ``000001.jpg -1 1 1 ...`` (1 = has, -1 = has not), whitespace separated."""
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read attribute file: {exc}") from exc
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise DataError(f"{path}: not a CelebA attribute file (first line must be the count)")
    n, names = int(lines[0][0]), lines[1]
    body = lines[2:]
    if len(body) != n:
        raise DataError(f"{path}: header says {n} images, found {len(body)} rows (truncated?)")
    matrix = np.empty((n, len(names)), dtype=np.int8)
    keys = []
    for r, row in enumerate(body):
        if len(row) != len(names) + 1:
            raise DataError(
                f"{path}: line {r + 3} has {len(row) - 1} values, expected {len(names)}"
            )
        keys.append(row[0])
        for j, v in enumerate(row[1:]):
            if v not in ("1", "-1"):
                raise DataError(f"{path}: line {r + 3}: expected 1 or -1, got {v!r}")
            matrix[r, j] = v == "1"
    return ImageAttributes(keys, names, matrix)


@dataclass(frozen=True)
class PartialLabels:
    """Labels after hiding: ``labels`` (-1 = missing), ``attributes`` (2 = missing), and
    ``keep`` = indices of the training images used, ``part`` = their part name."""

    keep: np.ndarray
    labels: np.ndarray
    attributes: np.ndarray
    part: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {p: int((self.part == p).sum()) for p in PARTS}


def partial_labels(
    labels: np.ndarray,
    attributes: np.ndarray,
    fractions: dict[str, float],
    use: list[str] | tuple[str, ...] = PARTS,
    seed: int = 0,
) -> PartialLabels:
    """DPH's partial-label protocol.

    The images are shuffled with ``seed`` and cut into disjoint parts ``both`` (category and
    attributes kept), ``category`` (attributes hidden) and ``attribute`` (category hidden) of the
    given fractions (which must sum to at most 1; the rest is unused). Only the parts in ``use``
    are returned. The cut does not depend on ``use``, so "both only" and "both + category +
    attribute" share the same fully-labelled images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    attributes = np.asarray(attributes, dtype=np.int8)
    if attributes.ndim != 2 or len(attributes) != len(labels):
        raise DataError(f"attributes: expected [{len(labels)}, p], got {attributes.shape}")
    bad = set(fractions) - set(PARTS)
    if bad:
        raise DataError(f"partial labels: unknown part(s) {sorted(bad)}; parts are {PARTS}")
    bad = set(use) - set(PARTS)
    if bad or not use:
        raise DataError(f"partial labels: use must name parts from {PARTS}, got {list(use)}")
    fr = [float(fractions.get(p, 0.0)) for p in PARTS]
    if min(fr) < 0 or sum(fr) > 1 + 1e-9:
        raise DataError(f"partial labels: fractions must be >= 0 and sum to <= 1, got {fractions}")
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.floor(np.cumsum([0.0, *fr]) * n + 1e-9).astype(int)
    keep_parts, names = [], []
    for i, p in enumerate(PARTS):
        if p in use:
            idx = np.sort(order[bounds[i]: bounds[i + 1]])
            keep_parts.append(idx)
            names.append(np.full(len(idx), p))
    keep = np.concatenate(keep_parts)
    part = np.concatenate(names)
    out_labels = labels[keep].copy()
    out_attr = attributes[keep].copy()
    out_attr[part == "category"] = MISSING
    out_labels[part == "attribute"] = -1
    order2 = np.argsort(keep, kind="stable")
    return PartialLabels(keep[order2], out_labels[order2], out_attr[order2], part[order2])


def _header(path: Path) -> list[str]:
    rows = _rows(path)
    return rows[0] if rows else []


def dataset_keys(dataset: Any) -> list[str]:
    """Keys that per-image attribute files use for a dataset's images: the path relative to
    the root for an image folder, else the image's position as a string."""
    samples = getattr(dataset, "samples", None)
    root = getattr(dataset, "root", None)
    if samples is not None and root is not None:
        return [Path(p).relative_to(root).as_posix() for p, _ in samples]
    return [str(i) for i in range(len(dataset))]


def resolve_attributes(spec: str | Path, dataset: Any) -> tuple[np.ndarray, list[str]]:
    """Per-image attributes ``int8 [N, p]`` (2 = missing) and their names for ``dataset``.

    ``spec``: a built-in class table (``"fmnist"``), a class-table CSV (first header column
    ``class``; rows matched to the dataset's class names when it has them, else by class id),
    a per-image CSV (first header column ``image``) or a CelebA ``list_attr_celeba.txt``.
    """
    path = attribute_table_path(spec)
    labels = np.asarray(dataset.labels, dtype=np.int64)
    first = path.read_text(encoding="utf-8", errors="replace").lstrip().split("\n", 1)[0]
    if first.strip().isdigit():  # CelebA: the first line is the image count
        table = read_celeba_attributes(path)
        return table.align(dataset_keys(dataset)), table.names
    header = _header(path)
    if header and header[0].lower() == "image":
        per_image = read_attribute_csv(path)
        return per_image.align(dataset_keys(dataset)), per_image.names
    if not header or header[0].lower() != "class":
        raise DataError(f"{path}: first header column must be 'class' (class table) or 'image' "
                        "(per-image attributes)")
    classes = read_class_attributes(path)
    names = list(getattr(dataset, "classes", None) or [])
    if names and all(n in classes.classes for n in names):
        rows = np.array([classes.classes.index(n) for n in names], dtype=np.int64)
        return classes.matrix[rows][labels], classes.names
    n_cls = int(getattr(dataset, "num_classes", labels.max() + 1))
    if n_cls != len(classes.classes):
        raise DataError(f"{path}: table has {len(classes.classes)} classes, the dataset "
                        f"{n_cls} (and its class names do not match the table's)")
    return classes.for_labels(labels), classes.names
