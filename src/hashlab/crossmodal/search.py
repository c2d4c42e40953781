"""Searching a cross-modal run's index: images by text, texts (or images) by image.

``hashlab index RUN --modality image|text`` stores one modality's codes of a split (default
``database``) with a ``source.json`` naming the modality; :func:`search_crossmodal` encodes the
queries with the same run and describes every hit by its class (or labels) and, for a text
index, its sentence. See ``docs/crossmodal.md#command-line``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hashlab.crossmodal.trainer import CrossModalRun
from hashlab.data.arrays import ArrayDataset
from hashlab.data.paired import PairedData
from hashlab.data.text import bag_of_words, tokenize
from hashlab.errors import HashlabError

__all__ = ["describe_item", "encode_text_queries", "item_text", "search_crossmodal",
           "write_contact_sheet"]


def describe_item(data: PairedData, i: int, modality: str) -> str:
    """A hit in words: its sentence (text items that have one), else its class, else the
    names of its labels."""
    if modality == "text" and data.sentences is not None:
        return data.sentences[i]
    if data.classes is not None and data.images.classes:
        return str(data.images.classes[int(data.classes[i])])
    return ", ".join(n for n, on in zip(data.label_names, data.labels[i], strict=True) if on)


def item_text(data: PairedData, i: int) -> str:
    """The text of item ``i``: its sentence where the dataset has them, else the words of its
    bag of words (e.g. MIRFLICKR-25K's tags)."""
    if data.sentences is not None:
        return data.sentences[i]
    return " ".join(data.vocabulary[j] for j in np.flatnonzero(data.texts[i]))


def encode_text_queries(run: CrossModalRun, texts: list[str], what: str = "--text"
                        ) -> tuple[np.ndarray, list[str]]:
    """Packed bits of text queries (bags of words over the run's vocabulary), and warnings
    naming the words that are not in it. :class:`HashlabError` for a text none of whose words
    is known (its code would say nothing about it)."""
    known = set(run.vocabulary)
    warnings = []
    for t in texts:
        words = tokenize(t)
        unknown = [w for w in words if w not in known]
        if len(unknown) == len(words):
            raise HashlabError(f"{what} {t!r}: none of its words is in the run's vocabulary "
                               f"({len(known)} words, e.g. {', '.join(run.vocabulary[:8])})")
        if unknown:
            warnings.append(f"{what} {t!r}: words not in the vocabulary, ignored: "
                            f"{', '.join(unknown)}")
    return run.encode_texts(bag_of_words(texts, run.vocabulary)), warnings


def write_contact_sheet(data: PairedData, ids: np.ndarray, path: Path, title: str) -> Path:
    """A PNG grid of the images ``ids`` of ``data``, each captioned with its class/labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hashlab.io import atomic_write

    n = max(len(ids), 1)
    cols = min(n, 10)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, ids, strict=False):
        img = np.asarray(data.images.images[int(i)])
        if img.ndim == 3 and img.shape[0] in (1, 3):  # channels first
            img = np.moveaxis(img, 0, -1)
        ax.imshow(img.squeeze(), cmap="gray" if img.squeeze().ndim == 2 else None)
        ax.set_title(describe_item(data, int(i), "image")[:18], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def _image_queries(run: CrossModalRun, data: PairedData, images: list[Path]) -> np.ndarray:
    from PIL import Image

    from hashlab.data.image_folder import read_image

    c, h, w = run.image_shape
    arrays = [read_image(p, "L" if c == 1 else "RGB", (h, w), Image.Resampling.BICUBIC)
              for p in images]
    ds = ArrayDataset(np.stack(arrays), np.zeros(len(arrays), dtype=np.int64),
                      mean=data.images.mean, std=data.images.std)
    return run.encode_images(ds)


def search_crossmodal(index_dir: Path, source: dict[str, Any], *, texts: list[str],
                      images: list[Path], k: int = 10, radius: int | None = None,
                      exact: bool = False, sheet: Path | None = None
                      ) -> tuple[dict[str, Any], list[str]]:
    """Search the cross-modal index at ``index_dir`` (its ``source.json`` is ``source``) with
    text or image queries; returns the JSON-ready results (with ``warnings``) and the lines to
    print."""
    from hashlab.eval.common import load_run_index
    from hashlab.index.query import run_query

    if bool(texts) == bool(images):
        raise HashlabError("a cross-modal index is searched with --text or --image (one kind)")
    modality = source["modality"]
    if sheet is not None and modality != "image":
        raise HashlabError("--sheet shows images: it needs an index of image codes")
    run = CrossModalRun(source["run"])
    index, _ = load_run_index(run, index_dir)
    data = run.load_split(source["split"])
    warnings: list[str] = []
    if texts:
        queries, warnings = encode_text_queries(run, texts)
        names = list(texts)
    else:
        queries, names = _image_queries(run, data, images), [str(p) for p in images]
    res = run_query(index, queries, k=None if radius is not None else k, radius=radius,
                    exact=exact)
    warnings += list(res.warnings)
    results, lines = [], []
    for name, (dist, ids), ok in zip(names, res.hits, res.query_exact, strict=True):
        hits = [{"id": int(i), "distance": int(d), "item": describe_item(data, int(i), modality)}
                for d, i in zip(dist, ids, strict=True)]
        results.append({"query": name, "ids": [h["id"] for h in hits],
                        "distances": [h["distance"] for h in hits], "exact": bool(ok),
                        "items": [h["item"] for h in hits]})
        lines.append(f"{name}:")
        lines += [f"  {h['id']:>6}  d={h['distance']:<3} {h['item']}" for h in hits[:k]]
    if sheet is not None and results:
        write_contact_sheet(data, np.asarray(results[0]["ids"][:k]), sheet,
                            f"{names[0]!r}: top {min(k, len(results[0]['ids']))} of "
                            f"{source['split']} ({modality})")
    return {"index": str(index_dir), "modality": modality, "k": k, "radius": radius,
            **res.summary(), "results": results, "warnings": warnings}, lines
