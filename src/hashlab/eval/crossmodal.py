"""Cross-modal retrieval protocols: image → text and text → image in one Hamming space.

``fmnist-captions``: the run's 2,000 query items (test images and their captions) search the
60,000-item retrieval set of the other modality: image queries against the captions' codes,
caption queries against the images' codes, each through a flat ``BinaryIndex`` (the same index
class for both directions). Relevant = sharing at least one label (class or attribute), the
multi-label convention of MIRFLICKR-25K / NUS-WIDE; the class-level numbers (relevant = same
Fashion-MNIST class) are reported beside. Definitions: ``docs/protocols.md#fmnist-captions``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hashlab.errors import ConfigError
from hashlab.eval.index_metrics import index_retrieval_metrics
from hashlab.eval.registry import PROTOCOLS
from hashlab.index.binary import BinaryIndex

__all__ = ["DIRECTIONS", "crossmodal_metrics", "crossmodal_rows", "fmnist_captions"]

#: (name, query modality, database modality)
DIRECTIONS = (("image_to_text", "image", "text"), ("text_to_image", "text", "image"))


def crossmodal_metrics(query_codes: dict[str, np.ndarray], database_codes: dict[str, np.ndarray],
                       query_labels: np.ndarray, database_labels: np.ndarray, nbits: int, *,
                       query_classes: np.ndarray | None = None,
                       database_classes: np.ndarray | None = None,
                       topk: tuple[int, ...] = (100, 1000), progress: bool = False
                       ) -> dict[str, dict[str, Any]]:
    """Both directions' binary retrieval metrics: ``query_codes[m]`` / ``database_codes[m]``
    are packed bits of modality ``m`` (``image``, ``text``). Each direction searches a flat
    :class:`BinaryIndex` of the other modality's database codes (ids = positions); relevance
    by shared labels (multi-hot), and by class when classes are given (``<direction>_class``)."""
    out: dict[str, dict[str, Any]] = {}
    ids = np.arange(len(database_labels))
    for name, q_mod, db_mod in DIRECTIONS:
        index = BinaryIndex(nbits, "flat")
        index.add(database_codes[db_mod])
        relevance = [(name, query_labels, database_labels)]
        if query_classes is not None and database_classes is not None:
            relevance.append((f"{name}_class", query_classes, database_classes))
        for key, q_labels, db_labels in relevance:
            out[key] = index_retrieval_metrics(index, query_codes[q_mod], q_labels, ids,
                                               db_labels, topk=topk, radius=2, pr_curve=True,
                                               progress=progress)
    return out


def crossmodal_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """mAP@all, mAP@1000 and P@100 of each direction (and their class-level versions)."""
    rows = []
    for key, m in result["metrics"].items():
        label = key.replace("_to_", "→").replace("_class", " (class)")
        for metric in ("mAP@all", "mAP@1000", "P@100"):
            if metric in m:
                rows.append((f"{m['nbits']}-bit {label} {metric}", f"{m[metric]:.4f}"))
    return rows


@PROTOCOLS.register("fmnist-captions", rows=crossmodal_rows, index=False,
                    runs=("cross-modal",))
def fmnist_captions(run: Any, progress: bool = True, batch_size: int = 1024) -> dict[str, Any]:
    """Image ↔ caption retrieval on fmnist-captions: 2,000 queries against 60,000 items."""
    from hashlab.data.registry import PAIRED_DATASETS, load_paired

    data = run.config.data
    if PAIRED_DATASETS.canonical(data.dataset) != "fmnist-captions":
        raise ConfigError(f"protocol fmnist-captions needs a run trained on fmnist-captions; "
                          f"this one was trained on {data.dataset!r}")
    start = time.perf_counter()
    # the run's own split arguments (seed, sizes) and vocabulary: its texts tokenise the same way
    args = {**data.args, "vocabulary": run.vocabulary}
    splits = {s: load_paired(data.dataset, s, root=data.root, **args)
              for s in ("query", "database")}
    codes = {s: {"image": run.encode_images(d, batch_size=batch_size),
                 "text": run.encode_texts(d, batch_size=batch_size)} for s, d in splits.items()}
    q, db = splits["query"], splits["database"]
    metrics = crossmodal_metrics(codes["query"], codes["database"], q.labels, db.labels, run.dim,
                                 query_classes=q.classes, database_classes=db.classes,
                                 progress=progress)
    return {"protocol": "fmnist-captions", "n_queries": len(q), "n_database": len(db),
            "metrics": metrics, "seconds": time.perf_counter() - start}
