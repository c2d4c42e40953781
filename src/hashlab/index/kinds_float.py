"""The built-in float index kinds: one :class:`~hashlab.index.kinds.IndexKind` spec each,
registered in ``FLOAT_KINDS`` (see :mod:`hashlab.index.floats` for what they are for).

``hnsw`` and ``ivfpq`` are built from FAISS factory strings (``faiss.index_factory`` with
``METRIC_INNER_PRODUCT``; ``hnsw`` sets ``efConstruction`` after the factory). ``flat`` keeps an
explicit builder: the factory string ``Flat`` gives an ``IndexFlat`` with inner-product metric,
which searches and serializes the same but is not the ``IndexFlatIP`` class.
"""

from __future__ import annotations

from typing import Any

import faiss

from hashlab.index.kinds import HNSW, MAX_NLIST, IndexKind, capped, check_ints, register_kind
from hashlab.validation import check_int

__all__ = ["default_m"]

register_kind(IndexKind(
    name="flat", family="float",
    description="exhaustive inner-product scan (IndexFlatIP): exact, supports remove",
    factory="Flat", faiss_class="IndexFlatIP",
    builder=lambda d, p: faiss.IndexFlatIP(d),
    removable=True,
    exact=True,
    storage=lambda base: base,
))

register_kind(IndexKind(
    name="hnsw", family="float",
    description="HNSW graph (IndexHNSWFlat, inner product): approximate",
    factory="HNSW{M}", faiss_class="IndexHNSWFlat",
    **HNSW,
))


def default_m(dim: int) -> int:
    """Largest divisor of ``dim`` that is ``<= max(1, dim // 4)`` (4-dim PQ sub-vectors)."""
    target = max(1, dim // 4)
    return max(m for m in range(1, target + 1) if dim % m == 0)


def _ivfpq_resolve(p: dict[str, Any], dim: int) -> dict[str, Any]:
    check_ints(p, nlist=(1, MAX_NLIST), nprobe=1)
    m = default_m(dim) if p["m"] is None else check_int(p["m"], "m")
    if dim % m:
        raise ValueError(f"m={m} sub-quantizers must divide dim={dim}")
    p["m"] = m
    p["pq_bits"] = check_int(p["pq_bits"], "pq_bits")
    if p["pq_bits"] > 16:
        raise ValueError(f"pq_bits: expected <= 16, got {p['pq_bits']}")
    return p


register_kind(IndexKind(
    name="ivfpq", family="float",
    description="inverted lists + product quantization (IndexIVFPQ, inner product, trained): "
                "approximate, compressed",
    # "np": no polysemous training, as IndexIVFPQ's constructor
    factory="IVF{nlist},PQ{m}x{pq_bits}np", faiss_class="IndexIVFPQ",
    defaults={"nlist": 16, "nprobe": 4, "m": None, "pq_bits": 8},
    resolve=_ivfpq_resolve,
    runtime={"nprobe": capped("nprobe", "nlist")},
    train_minimum=lambda p: max(p["nlist"], 2 ** p["pq_bits"]),
    # no storage: the vectors are kept only product-quantized
))
