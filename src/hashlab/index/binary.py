"""Hamming-space search over packed binary codes, backed by FAISS binary indexes.

``BinaryIndex(nbits, kind)`` wraps a FAISS binary index in ``faiss.IndexBinaryIDMap2`` so every
result carries the caller's int64 ids (not insertion positions). Codes are packed as in
:mod:`hashlab.index.codes` (``ceil(nbits / 8)`` bytes, little-endian bits, zero padding); FAISS
needs a multiple of 8 bits, so ``nbits`` is padded to ``8 * ceil(nbits / 8)`` internally, which
does not change any distance because padding bits are zero.

Kinds and when they are exact (``index.exact_radius`` gives the radius as a number):

============  =====================================  ===========================================
kind          FAISS index                            exact for
============  =====================================  ===========================================
flat          ``IndexBinaryFlat``                    every ``search`` and every ``range_search``
hash          ``IndexBinaryHash(d, b)``, multi-probe ``range_search`` with radius ``<= nflip``;
              of all keys within ``nflip`` flips     ``search`` rows whose k-th distance
                                                     ``<= nflip``
multihash     ``IndexBinaryMultiHash(d, nhash, b)``  radius ``<= nhash * (nflip + 1) - 1``
              (``nhash`` disjoint ``b``-bit keys)    (pigeonhole), ``search`` likewise
ivf           ``IndexBinaryIVF`` (trained)           only when ``nprobe >= nlist``
hnsw          ``IndexBinaryHNSW``                    never (approximate); no ``range_search``
============  =====================================  ===========================================

Why: ``hash`` looks a query up in the buckets whose ``b``-bit key (the first ``b`` code bits) is
within ``nflip`` bit flips of the query's key. A code within Hamming distance ``r`` of the query
differs in at most ``r`` key bits, so every such code is found when ``r <= nflip``. ``multihash``
uses ``nhash`` disjoint keys; a code within distance ``r`` is within ``floor(r / nhash)`` of the
query on at least one key, so it is found when ``floor(r / nhash) <= nflip``. Larger ``b`` makes
buckets smaller (faster, less memory per probe) but the number of probes grows as
``sum_{i <= nflip} C(b, i)``.

Result order is always (distance ascending, id ascending). For exact rows ``search`` also fixes
FAISS's arbitrary choice among codes tied at the k-th distance (it fetches every code at that
distance with a range search), so it equals a brute-force ranking sorted by (distance, id).
Missing results (fewer than ``k`` codes found) have id ``-1`` and distance ``-1``.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from hashlab.index.codes import _to_numpy, check_packed, code_bytes
from hashlab.index.idmap import (
    IdMapIndex,
    UnknownIdsError,
    _check_k,
    _rows_sorted,
    _sort_rows,
    _split_range,
)

__all__ = ["BinaryIndex", "BINARY_KINDS", "DEFAULT_HASH_BITS", "UnknownIdsError"]


BINARY_KINDS = ("flat", "hash", "multihash", "ivf", "hnsw")

#: Default bucket-key width ``b`` of ``hash``/``multihash``: at most 24 bits per key, so a
#: table has at most 16M buckets and ``nflip=2`` costs ``1 + 24 + 276 = 301`` probes per query.
DEFAULT_HASH_BITS = 24

_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hash": {"b": None, "nflip": 2},
    "multihash": {"nhash": 2, "b": None, "nflip": 1},
    "ivf": {"nlist": 16, "nprobe": 4},
    "hnsw": {"M": 16, "ef_construction": 40, "ef_search": 64},
}

_FAISS_CLASS = {
    "flat": "IndexBinaryFlat",
    "hash": "IndexBinaryHash",
    "multihash": "IndexBinaryMultiHash",
    "ivf": "IndexBinaryIVF",
    "hnsw": "IndexBinaryHNSW",
}

# flat search with k >= this uses FAISS's counting k-NN (hammings_knn_mc) instead of a heap
_COUNTING_KNN_FROM = 1000

# which params may be changed after construction (search-time settings)
_RUNTIME = {"hash": ("nflip",), "multihash": ("nflip",), "ivf": ("nprobe",), "hnsw": ("ef_search",)}


# ---------------------------------------------------------------------------------------------
# BinaryIndex
# ---------------------------------------------------------------------------------------------


class BinaryIndex(IdMapIndex):
    """A Hamming-distance index over packed ``nbits``-bit codes with user int64 ids.

    Parameters by kind (defaults in brackets):

    * ``hash``: ``b`` bits per bucket key [``min(nbits, 24)``], ``nflip`` probe radius [2].
    * ``multihash``: ``nhash`` tables [2], ``b`` bits each [``min(nbits // nhash, 24)``],
      ``nflip`` [1].
    * ``ivf``: ``nlist`` lists [16], ``nprobe`` [4]; trained with :meth:`train` or, if still
      untrained, on the codes of the first :meth:`add`.
    * ``hnsw``: ``M`` [16], ``ef_construction`` [40], ``ef_search`` [64].

    ``search``-time params (``nflip``, ``nprobe``, ``ef_search``) can be changed with
    :meth:`set_params`. ``remove`` works for ``flat`` only (FAISS cannot remove from hash or
    HNSW indexes, and ID-mapped removal from an IVF corrupts the id map); the others raise
    ``NotImplementedError``.
    """

    _family = "binary"
    _runtime = _RUNTIME

    def __init__(self, nbits: int, kind: str = "flat", **params: Any) -> None:
        code_bytes(nbits)
        if kind not in BINARY_KINDS:
            raise ValueError(f"kind: expected one of {BINARY_KINDS}, got {kind!r}")
        unknown = set(params) - set(_DEFAULTS[kind])
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for kind {kind!r}; "
                f"accepted: {sorted(_DEFAULTS[kind]) or 'none'}"
            )
        self._nbits = int(nbits)
        self._kind = kind
        self._d = 8 * code_bytes(nbits)
        self.params = self._resolve_params({**_DEFAULTS[kind], **params})
        self._base = self._make_base()
        self._index = faiss.IndexBinaryIDMap2(self._base)
        self._apply_runtime()

    # -- construction ------------------------------------------------------------------------

    def _resolve_params(self, p: dict[str, Any]) -> dict[str, Any]:
        def pos_int(name: str, v: Any, lo: int = 1) -> int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
            return int(v)

        nbits, kind = self._nbits, self._kind
        if kind == "hash":
            b = min(nbits, DEFAULT_HASH_BITS) if p["b"] is None else pos_int("b", p["b"])
            if b > min(nbits, 64):
                raise ValueError(f"b: bucket key of {b} bits must be <= min(nbits={nbits}, 64)")
            p["b"] = b
            p["nflip"] = pos_int("nflip", p["nflip"], 0)
        elif kind == "multihash":
            nhash = pos_int("nhash", p["nhash"])
            if nhash > nbits:
                raise ValueError(f"nhash={nhash} tables need at least {nhash} bits, nbits={nbits}")
            b = min(nbits // nhash, DEFAULT_HASH_BITS) if p["b"] is None else pos_int("b", p["b"])
            if nhash * b > nbits or b > 64:
                raise ValueError(
                    f"multihash needs nhash * b <= nbits and b <= 64, got nhash={nhash}, b={b}, "
                    f"nbits={nbits}"
                )
            p.update(nhash=nhash, b=b, nflip=pos_int("nflip", p["nflip"], 0))
        elif kind == "ivf":
            p["nlist"] = pos_int("nlist", p["nlist"])
            p["nprobe"] = pos_int("nprobe", p["nprobe"])
        elif kind == "hnsw":
            p["M"] = pos_int("M", p["M"], 2)
            p["ef_construction"] = pos_int("ef_construction", p["ef_construction"])
            p["ef_search"] = pos_int("ef_search", p["ef_search"])
        return p

    def _make_base(self) -> Any:
        p, d = self.params, self._d
        if self._kind == "flat":
            return faiss.IndexBinaryFlat(d)
        if self._kind == "hash":
            return faiss.IndexBinaryHash(d, p["b"])
        if self._kind == "multihash":
            return faiss.IndexBinaryMultiHash(d, p["nhash"], p["b"])
        if self._kind == "ivf":
            self._quantizer = faiss.IndexBinaryFlat(d)
            base = faiss.IndexBinaryIVF(self._quantizer, d, p["nlist"])
            base.own_fields = False
            return base
        base = faiss.IndexBinaryHNSW(d, p["M"])
        base.hnsw.efConstruction = p["ef_construction"]
        return base

    def _apply_runtime(self) -> None:
        p = self.params
        if self._kind in ("hash", "multihash"):
            self._base.nflip = p["nflip"]
        elif self._kind == "ivf":
            self._base.nprobe = p["nprobe"]
        elif self._kind == "hnsw":
            self._base.hnsw.efSearch = p["ef_search"]

    @classmethod
    def _from_faiss(cls, idmap: Any, nbits: int, kind: str, params: dict[str, Any]) -> BinaryIndex:
        """Wrap a deserialized ``IndexBinaryIDMap2`` (used by :mod:`hashlab.index.store`)."""
        self = cls.__new__(cls)
        self._nbits, self._kind, self._d = int(nbits), kind, 8 * code_bytes(nbits)
        self.params = dict(params)
        self._owner = idmap  # the proxy that owns the C++ object; keep it alive
        idmap = faiss.downcast_IndexBinary(idmap)
        if not isinstance(idmap, faiss.IndexBinaryIDMap2):
            raise ValueError(f"expected an IndexBinaryIDMap2, got {type(idmap).__name__}")
        if idmap.d != self._d:
            raise ValueError(f"index has d={idmap.d} bits, manifest nbits={nbits} needs {self._d}")
        base = faiss.downcast_IndexBinary(idmap.index)
        expected = _FAISS_CLASS[kind]
        if type(base).__name__ != expected:
            raise ValueError(f"kind {kind!r} needs a {expected}, got {type(base).__name__}")
        self._index, self._base = idmap, base
        self._apply_runtime()
        return self

    # -- properties --------------------------------------------------------------------------

    @property
    def nbits(self) -> int:
        return self._nbits

    @property
    def exact_radius(self) -> int:
        """Largest Hamming radius for which ``range_search`` is exact (-1: never exact)."""
        p = self.params
        if self._kind == "flat":
            return self._nbits
        if self._kind == "hash":
            return min(p["nflip"], self._nbits)
        if self._kind == "multihash":
            return min(p["nhash"] * (p["nflip"] + 1) - 1, self._nbits)
        if self._kind == "ivf" and p["nprobe"] >= p["nlist"]:
            return self._nbits
        return -1

    def __repr__(self) -> str:
        return f"BinaryIndex(nbits={self._nbits}, kind={self._kind!r}, ntotal={self.ntotal})"

    # -- data --------------------------------------------------------------------------------

    def _prepare(self, codes: Any, name: str) -> np.ndarray:
        arr = _to_numpy(codes, name)
        if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] != code_bytes(self._nbits):
            raise ValueError(
                f"{name}: index expects {self._nbits}-bit codes ({code_bytes(self._nbits)} bytes "
                f"per code), got {8 * arr.shape[1]}-bit codes ({arr.shape[1]} bytes per code)"
            )
        check_packed(arr, self._nbits, name)
        return np.ascontiguousarray(arr)

    def train(self, codes: Any) -> None:
        """Train an ``ivf`` index's coarse quantizer (a no-op for the other kinds)."""
        x = self._prepare(codes, "codes")
        if self._kind != "ivf":
            return
        if self._index.is_trained:
            raise ValueError("this ivf index is already trained")
        if x.shape[0] < self.params["nlist"]:
            raise ValueError(
                f"training an ivf index with nlist={self.params['nlist']} needs at least that "
                f"many codes, got {x.shape[0]}"
            )
        self._index.train(x)

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest codes per query: ``(distances int32 [nq, k], ids int64 [nq, k])``.

        Rows are sorted by (distance, id); missing results are id -1 / distance -1. Exact for
        ``flat`` and for every row whose k-th distance is ``<= exact_radius``.
        """
        q = self._prepare(queries, "queries")
        k = _check_k(k)
        nq = q.shape[0]
        if self.ntotal == 0:
            return np.full((nq, k), -1, np.int32), np.full((nq, k), -1, np.int64)
        if self._kind == "flat":
            # FAISS's counting k-NN beats its heap for large k (same results, ties included)
            self._base.use_heap = k < _COUNTING_KNN_FROM
        D, ids = self._index.search(q, k)
        D = D.astype(np.int32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        D[ids < 0] = -1
        if self._kind == "flat" and self._ids_increasing():
            # IndexBinaryFlat scans in insertion order and keeps the first codes among ties,
            # sorted by (distance, position) (tests/test_index.py checks this against brute
            # force), so with ids increasing in insertion order the rows are already final.
            return D, ids
        self._complete_ties(q, D, ids)
        if _rows_sorted(D, ids):
            return D, ids
        return _sort_rows(D, ids, descending=False)

    def _complete_ties(self, q: np.ndarray, D: np.ndarray, ids: np.ndarray) -> None:
        """Replace rows whose result is exact up to a tie at the k-th distance (in place).

        FAISS keeps an arbitrary subset of the codes tied at the k-th distance. For rows where
        a range search at that distance is exact, fetch every code within it and keep the k
        smallest by (distance, id).
        """
        if self._kind == "hnsw":
            return
        k = D.shape[1]
        last = D[:, -1]
        rows = np.nonzero((ids[:, -1] >= 0) & (last <= self.exact_radius))[0]
        for dk in np.unique(last[rows]):
            group = rows[last[rows] == dk]
            res = self._range(q[group], int(dk))
            for r, (dist, jd) in zip(group, res, strict=True):
                if dist.size >= k:  # always true when the range search is exact
                    D[r], ids[r] = dist[:k], jd[:k]

    def _range(self, q: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        # FAISS binary range search keeps distances strictly below its radius
        lims, dist, jd = self._index.range_search(q, int(radius) + 1)
        return _split_range(lims, dist.astype(np.int32, copy=False), jd, descending=False)

    def range_search(
        self, queries: Any, radius: int, *, require_exact: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All codes within Hamming distance ``<= radius``: per query ``(distances, ids)``.

        Each list entry is sorted by (distance, id). Exact for ``radius <= exact_radius``
        (``flat``: always; ``hash``: ``<= nflip``; ``multihash``: ``<= nhash*(nflip+1)-1``);
        otherwise some codes may be missed, or, with ``require_exact=True``, a ValueError is
        raised. ``hnsw`` has no range search (NotImplementedError).
        """
        q = self._prepare(queries, "queries")
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius: expected an int >= 0, got {radius!r}")
        if self._kind == "hnsw":
            raise NotImplementedError(
                "FAISS has no range search for kind 'hnsw'; use kind 'flat', 'hash' or 'multihash'"
            )
        if require_exact and radius > self.exact_radius:
            raise ValueError(
                f"range_search on a {self._kind!r} index is exact only for radius <= "
                f"{self.exact_radius}, got radius={radius}"
            )
        if self.ntotal == 0:
            return [(np.empty(0, np.int32), np.empty(0, np.int64)) for _ in range(q.shape[0])]
        return self._range(q, int(radius))
