"""The built-in binary index kinds: one :class:`~hashlab.index.kinds.IndexKind` spec each,
registered in ``BINARY_KINDS`` (see :mod:`hashlab.index.binary` for what they are for).

All are built from FAISS binary factory strings (``faiss.index_binary_factory``); ``hnsw``
sets ``efConstruction`` after the factory (no factory syntax for it).
"""

from __future__ import annotations

from math import comb
from typing import Any

import faiss

from hashlab.index import idmap
from hashlab.index.kinds import HNSW, MAX_NLIST, IndexKind, capped, check_ints, register_kind
from hashlab.validation import check_int

__all__ = ["COUNTING_KNN_FROM", "DEFAULT_HASH_BITS"]

#: Default bucket-key width ``b`` of ``hash``/``multihash``: at most 24 bits per key, so a
#: table has at most 16M buckets and ``nflip=2`` costs ``1 + 24 + 276 = 301`` probes per query.
DEFAULT_HASH_BITS = 24

#: flat search with k >= this uses FAISS's counting k-NN (hammings_knn_mc) instead of a heap
COUNTING_KNN_FROM = 1000


#: FAISS's default number of queries per block of an IndexBinaryFlat search
_QUERY_BATCH = 32


def _flat_before_search(base: Any, k: int) -> None:
    """FAISS's counting k-NN beats its heap for large k (same results, ties included), but it
    allocates ``(d + 1) * k`` int64 per query of a block: the block shrinks to fit
    ``CHUNK_BYTES`` (fewer queries in parallel), and the heap, whose memory is the result
    itself, takes over when a single query would not fit."""
    per_query = (base.d + 1) * k * 8
    counting = k >= COUNTING_KNN_FROM and per_query <= idmap.CHUNK_BYTES
    base.use_heap = not counting
    base.query_batch_size = (
        min(_QUERY_BATCH, idmap.CHUNK_BYTES // per_query) if counting else _QUERY_BATCH)


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
    storage=lambda base: base,
))


def _probes(b: int, nflip: int, nhash: int = 1) -> int:
    """Buckets probed per query: every key within ``nflip`` flips of ``nhash`` ``b``-bit keys."""
    return nhash * sum(comb(b, i) for i in range(min(nflip, b) + 1))


def _key_bits(p: dict[str, Any], nbits: int, nhash: int) -> int:
    """The bucket-key width ``b`` of ``nhash`` disjoint keys: given, or the default."""
    return min(nbits // nhash, DEFAULT_HASH_BITS) if p["b"] is None else check_int(p["b"], "b")


def _hash_resolve(p: dict[str, Any], nbits: int) -> dict[str, Any]:
    b = _key_bits(p, nbits, 1)
    if b > min(nbits, 64):
        raise ValueError(f"b: bucket key of {b} bits must be <= min(nbits={nbits}, 64)")
    p["b"] = b
    p["nflip"] = _check_nflip(p["nflip"], b)
    return p


def _check_nflip(nflip: Any, b: int) -> int:
    nflip = check_int(nflip, "nflip", 0)
    if nflip > b:
        # FAISS's probe enumeration never ends for nflip > b; nflip = b probes every key
        raise ValueError(f"nflip: expected an int <= b={b} (nflip=b already probes every "
                         f"bucket), got {nflip}")
    return nflip


#: Hash tables: FAISS's ``nflip`` never goes beyond the key width ``b`` (see :func:`capped`).
_NFLIP = {"nflip": capped("nflip", "b")}


register_kind(IndexKind(
    name="hash", family="binary",
    description="one b-bit bucket key, multi-probe within nflip flips (IndexBinaryHash): "
                "exact for radius <= nflip",
    factory="BHash{b}", faiss_class="IndexBinaryHash",
    defaults={"b": None, "nflip": 2},
    resolve=_hash_resolve,
    runtime=_NFLIP,
    # a code within distance r differs from the query in at most r key bits; with nflip >= b
    # every bucket is probed
    exact_radius=lambda nbits, p: nbits if p["nflip"] >= p["b"] else min(p["nflip"], nbits),
    exact_params=lambda nbits, p, radius: {"nflip": min(radius, p["b"])},
    probes=lambda p: _probes(p["b"], p["nflip"]),
    # no storage: FAISS cannot reconstruct codes from IndexBinaryHash buckets
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
    p.update(nhash=nhash, b=b, nflip=_check_nflip(p["nflip"], b))
    return p


def _multihash_radius(nbits: int, p: Any) -> int:
    # pigeonhole: a code within distance r is within floor(r / nhash) flips on some key; with
    # nflip >= b every bucket of every table is probed
    return nbits if p["nflip"] >= p["b"] else min(p["nhash"] * (p["nflip"] + 1) - 1, nbits)


register_kind(IndexKind(
    name="multihash", family="binary",
    description="nhash disjoint b-bit bucket keys (IndexBinaryMultiHash): exact for radius "
                "<= nhash * (nflip + 1) - 1",
    factory="BHash{nhash}x{b}", faiss_class="IndexBinaryMultiHash",
    defaults={"nhash": 2, "b": None, "nflip": 1},
    resolve=_multihash_resolve,
    runtime=_NFLIP,
    exact_radius=_multihash_radius,
    # smallest nflip with nhash * (nflip + 1) - 1 >= radius
    exact_params=lambda nbits, p, radius: {"nflip": min(-(-(radius + 1) // p["nhash"]) - 1,
                                                        p["b"])},
    probes=lambda p: _probes(p["b"], p["nflip"], p["nhash"]),
    storage=lambda base: faiss.downcast_IndexBinary(base.storage),  # an IndexBinaryFlat
))


register_kind(IndexKind(
    name="ivf", family="binary",
    description="inverted lists over a Hamming k-means (IndexBinaryIVF, trained): exact "
                "when nprobe >= nlist",
    factory="BIVF{nlist}", faiss_class="IndexBinaryIVF",
    defaults={"nlist": 16, "nprobe": 4},
    resolve=lambda p, nbits: check_ints(p, nlist=(1, MAX_NLIST), nprobe=1),
    runtime={"nprobe": capped("nprobe", "nlist")},
    train_minimum=lambda p: p["nlist"],
    exact_radius=lambda nbits, p: nbits if p["nprobe"] >= p["nlist"] else -1,
    exact_params=lambda nbits, p, radius: {"nprobe": p["nlist"]},
    storage=lambda base: base,
))


register_kind(IndexKind(
    name="hnsw", family="binary",
    description="HNSW graph (IndexBinaryHNSW): approximate, no range search",
    factory="BHNSW{M}", faiss_class="IndexBinaryHNSW",
    range_search=False,
    **HNSW,
))
