"""The rows of the result table that ``hashlab eval`` and ``hashlab demo`` print.

Each protocol supplies its own rows: the ``rows=`` function of its :data:`PROTOCOLS` entry,
``rows(result) → [(label, value), ...]``. Protocols that report retrieval metrics of float and
binary codes use :func:`retrieval_rows`, the default.
"""

from __future__ import annotations

from typing import Any

from hashlab.eval.registry import PROTOCOLS

__all__ = ["ROW_LABELS", "result_rows", "retrieval_rows"]

Rows = list[tuple[str, str]]

#: metric key -> table label, in table order
ROW_LABELS = {"mAP@all": "mAP@all", "mAP@1000": "mAP@1000", "P@100": "P@100",
              "P@r2": "precision within radius 2", "verification_accuracy": "verification acc",
              "TAR@FAR=0.001": "TAR@FAR=1e-3"}


def retrieval_rows(result: dict[str, Any]) -> Rows:
    """Every reported metric of the binary code, and of the float code (only mAP@all when a
    binary code is reported too, to keep the table short)."""
    m = result["metrics"]
    rows: Rows = []
    for kind in ("float", "binary"):
        if kind not in m:
            continue
        prefix = "float" if kind == "float" else f"{m[kind]['nbits']}-bit"
        keys = ["mAP@all"] if kind == "float" and "binary" in m else list(ROW_LABELS)
        for key in keys:
            if key in m[kind]:
                rows.append((f"{prefix} {ROW_LABELS[key]}", f"{m[kind][key]:.4f}"))
    return rows


def result_rows(result: dict[str, Any]) -> Rows:
    """Table rows of an evaluation result, by the protocol named in ``result["protocol"]``
    (:func:`retrieval_rows` for a protocol without rows of its own or not registered)."""
    name = result.get("protocol")
    rows = None
    if isinstance(name, str) and name in PROTOCOLS:
        rows = PROTOCOLS.entry(name).meta.get("rows")
    return (rows or retrieval_rows)(result)
