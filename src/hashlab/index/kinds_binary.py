"""The built-in binary index kinds: one :class:`~hashlab.index.kinds.IndexKind` spec each,
registered in ``BINARY_KINDS`` (see :mod:`hashlab.index.binary` for what they are for).

All are built from FAISS binary factory strings (``faiss.index_binary_factory``); ``hnsw``
sets ``efConstruction`` after the factory (no factory syntax for it).
"""

from __future__ import annotations

from typing import Any

from hashlab.index.kinds import HNSW, IndexKind, check_ints, register_kind
from hashlab.validation import check_int

__all__ = ["COUNTING_KNN_FROM", "DEFAULT_HASH_BITS"]

#: Default bucket-key width ``b`` of ``hash``/``multihash``: at most 24 bits per key, so a
#: table has at most 16M buckets and ``nflip=2`` costs ``1 + 24 + 276 = 301`` probes per query.
DEFAULT_HASH_BITS = 24

#: flat search with k >= this uses FAISS's counting k-NN (hammings_knn_mc) instead of a heap
COUNTING_KNN_FROM = 1000


def _flat_before_search(base: Any, k: int) -> None:
    # FAISS's counting k-NN beats its heap for large k (same results, ties included)
    base.use_heap = k < COUNTING_KNN_FROM


register_kind(IndexKind(
    name="flat", family="binary",
    description="exhaustive Hamming scan (IndexBinaryFlat): exact, supports remove",
    factory="BFlat", faiss_class="IndexBinaryFlat",
    exact_radius=lambda nbits, p: nbits,
    removable=True,
    # IndexBinaryFlat scans in insertion order and keeps the first codes among ties, sorted by
    # (distance, position) (tests/test_index.py checks this against brute force)
    insertion_order_ties=True,
    before_search=_flat_before_search,
))


def _key_bits(p: dict[str, Any], nbits: int, nhash: int) -> int:
    """The bucket-key width ``b`` of ``nhash`` disjoint keys: given, or the default."""
    return min(nbits // nhash, DEFAULT_HASH_BITS) if p["b"] is None else check_int(p["b"], "b")


def _hash_resolve(p: dict[str, Any], nbits: int) -> dict[str, Any]:
    b = _key_bits(p, nbits, 1)
    if b > min(nbits, 64):
        raise ValueError(f"b: bucket key of {b} bits must be <= min(nbits={nbits}, 64)")
    p["b"] = b
    p["nflip"] = check_int(p["nflip"], "nflip", 0)
    return p


register_kind(IndexKind(
    name="hash", family="binary",
    description="one b-bit bucket key, multi-probe within nflip flips (IndexBinaryHash): "
                "exact for radius <= nflip",
    factory="BHash{b}", faiss_class="IndexBinaryHash",
    defaults={"b": None, "nflip": 2},
    resolve=_hash_resolve,
    runtime={"nflip": "nflip"},
    exact_radius=lambda nbits, p: min(p["nflip"], nbits),
))


def _multihash_resolve(p: dict[str, Any], nbits: int) -> dict[str, Any]:
    nhash = check_int(p["nhash"], "nhash")
    if nhash > nbits:
        raise ValueError(f"nhash={nhash} tables need at least {nhash} bits, nbits={nbits}")
    b = _key_bits(p, nbits, nhash)
    if nhash * b > nbits or b > 64:
        raise ValueError(
            f"multihash needs nhash * b <= nbits and b <= 64, got nhash={nhash}, b={b}, "
            f"nbits={nbits}"
        )
    p.update(nhash=nhash, b=b, nflip=check_int(p["nflip"], "nflip", 0))
    return p


register_kind(IndexKind(
    name="multihash", family="binary",
    description="nhash disjoint b-bit bucket keys (IndexBinaryMultiHash): exact for radius "
                "<= nhash * (nflip + 1) - 1",
    factory="BHash{nhash}x{b}", faiss_class="IndexBinaryMultiHash",
    defaults={"nhash": 2, "b": None, "nflip": 1},
    resolve=_multihash_resolve,
    runtime={"nflip": "nflip"},
    # pigeonhole: a code within distance r is within floor(r / nhash) flips on some key
    exact_radius=lambda nbits, p: min(p["nhash"] * (p["nflip"] + 1) - 1, nbits),
))


register_kind(IndexKind(
    name="ivf", family="binary",
    description="inverted lists over a Hamming k-means (IndexBinaryIVF, trained): exact "
                "when nprobe >= nlist",
    factory="BIVF{nlist}", faiss_class="IndexBinaryIVF",
    defaults={"nlist": 16, "nprobe": 4},
    resolve=lambda p, nbits: check_ints(p, nlist=1, nprobe=1),
    runtime={"nprobe": "nprobe"},
    train_minimum=lambda p: p["nlist"],
    exact_radius=lambda nbits, p: nbits if p["nprobe"] >= p["nlist"] else -1,
))


register_kind(IndexKind(
    name="hnsw", family="binary",
    description="HNSW graph (IndexBinaryHNSW): approximate, no range search",
    factory="BHNSW{M}", faiss_class="IndexBinaryHNSW",
    range_search=False,
    **HNSW,
))
