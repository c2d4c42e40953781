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

from hashlab.errors import HashlabError
from hashlab.index.codes import _to_numpy, check_packed, code_bytes

__all__ = ["BinaryIndex", "BINARY_KINDS", "DEFAULT_HASH_BITS", "UnknownIdsError"]


class UnknownIdsError(HashlabError, ValueError):
    """``remove`` was given ids that are not in the index; ``.ids`` lists them."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        super().__init__(f"cannot remove ids that are not in the index: {_fmt_ids(self.ids)}")


BINARY_KINDS = ("flat", "hash", "multihash", "ivf", "hnsw")

#: Default bucket-key width ``b`` of ``hash``/``multihash``: at most 24 bits per key, so a
#: table has at most 16M buckets and ``nflip=2`` costs ``1 + 24 + 276 = 301`` probes per query.
DEFAULT_HASH_BITS = 24

# IndexBinaryIDMap2.remove_ids assumes the wrapped index renumbers its entries after a removal
# (flat does); an IVF keeps its internal ids, so IDMap removal from an IVF corrupts the id map.
_REMOVABLE = ("flat",)

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
# helpers shared with floats.py
# ---------------------------------------------------------------------------------------------


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    return int(k)


def _as_ids(ids: Any, n: int, name: str = "ids") -> np.ndarray:
    """Validate user ids: 1-D, integer, non-negative, unique, ``n`` of them; return int64."""
    arr = _to_numpy(ids, name)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of int64 ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer ids, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: ids must fit in int64")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.shape[0] != n:
        raise ValueError(f"{name}: got {arr.shape[0]} ids for {n} vectors; need one id per vector")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name}: ids must be non-negative (-1 marks a missing result)")
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.size != arr.size:
        dup = uniq[counts > 1]
        raise ValueError(f"{name}: ids must be unique, duplicated: {_fmt_ids(dup)}")
    return arr


def _fmt_ids(ids: np.ndarray, limit: int = 20) -> str:
    ids = np.asarray(ids)
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    more = f" ... ({ids.size} in all)" if ids.size > limit else ""
    return f"[{shown}]{more}"


def _idmap_ids(idmap: Any) -> np.ndarray:
    """The user ids currently stored in an ``IndexIDMap2``/``IndexBinaryIDMap2`` (int64)."""
    return faiss.vector_to_array(idmap.id_map).astype(np.int64, copy=False)


def _check_new_ids(existing: np.ndarray, ids: np.ndarray) -> None:
    clash = ids[np.isin(ids, existing)]
    if clash.size:
        raise ValueError(f"ids already in the index: {_fmt_ids(np.sort(clash))}")


def _check_remove_ids(existing: np.ndarray, ids: Any) -> np.ndarray:
    arr = _to_numpy(ids, "ids")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids: expected a 1-D array of integer ids, got {arr.dtype} {arr.shape}")
    arr = np.unique(arr.astype(np.int64))
    unknown = arr[~np.isin(arr, existing)]
    if unknown.size:
        raise UnknownIdsError(unknown)
    return arr


def _sort_rows(scores: np.ndarray, ids: np.ndarray, descending: bool) -> tuple[np.ndarray, ...]:
    """Sort each row by (score, id) with missing entries (id -1) last."""
    key = -scores if descending else scores
    missing = ids < 0
    order = np.lexsort((ids, key, missing), axis=-1)
    return (np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1))


def _strictly_increasing(ids: np.ndarray) -> bool:
    return bool(ids.size < 2 or (ids[1:] > ids[:-1]).all())


def _rows_sorted(D: np.ndarray, ids: np.ndarray) -> bool:
    """True when every row is in (distance ascending, id ascending) order, missing (-1) last."""
    if D.shape[1] < 2:
        return True
    d0, d1, i0, i1 = D[:, :-1], D[:, 1:], ids[:, :-1], ids[:, 1:]
    valid_next = i1 >= 0
    ok = np.where(valid_next, (i0 >= 0) & ((d1 > d0) | ((d1 == d0) & (i1 > i0))), True)
    # once a row has a missing entry, all later entries must be missing
    ok &= ~((i0 < 0) & valid_next)
    return bool(ok.all())


def _split_range(lims: np.ndarray, scores: np.ndarray, ids: np.ndarray, descending: bool):
    """Split FAISS range-search output into per-query (scores, ids), each sorted by (score, id).

    One lexsort over all hits with the query number as the primary key, then views per query.
    """
    lims = np.asarray(lims, dtype=np.int64)
    ids = ids.astype(np.int64, copy=False)
    row = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
    if np.issubdtype(scores.dtype, np.integer) and not descending and scores.size:
        # Hamming distances: one int64 key (query, distance); FAISS's flat scan already lists
        # each query's hits by increasing position, so when ids increase within every query a
        # stable sort on that key alone gives (distance, id) order.
        lo = int(scores.min())
        key = row * (int(scores.max()) - lo + 1) + (scores - lo)
        if int(key.max()) < 2**16:  # numpy radix-sorts 16-bit ints
            key = key.astype(np.uint16)
        same_row = row[1:] == row[:-1]
        if bool(np.all(~same_row | (ids[1:] > ids[:-1]))):
            order = np.argsort(key, kind="stable")
        else:
            order = np.lexsort((ids, key))
    else:
        order = np.lexsort((ids, -scores if descending else scores, row))
    d, j = scores[order], ids[order]
    return [(d[s:e], j[s:e]) for s, e in zip(lims[:-1].tolist(), lims[1:].tolist(), strict=True)]


# ---------------------------------------------------------------------------------------------
# BinaryIndex
# ---------------------------------------------------------------------------------------------


class BinaryIndex:
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
        self.params = self._resolve(kind, {**_DEFAULTS[kind], **params})
        self._base = self._make_base()
        self._index = faiss.IndexBinaryIDMap2(self._base)
        self._apply_runtime()

    # -- construction ------------------------------------------------------------------------

    def _resolve(self, kind: str, p: dict[str, Any]) -> dict[str, Any]:
        def pos_int(name: str, v: Any, lo: int = 1) -> int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
            return int(v)

        nbits = self._nbits
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
    def kind(self) -> str:
        return self._kind

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def faiss_index(self) -> Any:
        """The underlying ``faiss.IndexBinaryIDMap2`` (for serialization; do not mutate)."""
        return self._index

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

    def ids(self) -> np.ndarray:
        """The ids currently in the index, in insertion order (int64)."""
        return _idmap_ids(self._index).copy()

    def set_params(self, **params: Any) -> None:
        """Change search-time params: ``nflip`` (hash kinds), ``nprobe`` (ivf), ``ef_search``."""
        allowed = _RUNTIME.get(self._kind, ())
        bad = set(params) - set(allowed)
        if bad:
            raise ValueError(
                f"cannot set {sorted(bad)} on a {self._kind!r} index; settable: {list(allowed)}"
            )
        new = self._resolve(self._kind, {**self.params, **params})
        self.params = new
        self._apply_runtime()

    def __repr__(self) -> str:
        return f"BinaryIndex(nbits={self._nbits}, kind={self._kind!r}, ntotal={self.ntotal})"

    # -- data --------------------------------------------------------------------------------

    def _codes(self, codes: Any, name: str) -> np.ndarray:
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
        x = self._codes(codes, "codes")
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

    def add(self, codes: Any, ids: Any = None) -> None:
        """Add packed uint8 codes ``[n, ceil(nbits/8)]`` with unique int64 ``ids`` ``[n]``.

        ``ids=None`` numbers the codes from ``max(existing ids) + 1``. An untrained ``ivf``
        index is first trained on these codes.
        """
        x = self._codes(codes, "codes")
        existing = _idmap_ids(self._index)
        if ids is None:
            start = int(existing.max()) + 1 if existing.size else 0
            ids = np.arange(start, start + x.shape[0], dtype=np.int64)
        ids = _as_ids(ids, x.shape[0])
        _check_new_ids(existing, ids)
        if not self._index.is_trained:
            self.train(x)
        self._index.add_with_ids(x, ids)

    def remove(self, ids: Any) -> int:
        """Remove the given ids; every id must be present. Returns the number removed."""
        if self._kind not in _REMOVABLE:
            raise NotImplementedError(
                f"remove is not supported for a {self._kind!r} binary index (FAISS cannot "
                f"remove ids from it); removal works for kinds {_REMOVABLE}; rebuild the "
                "index without these ids instead"
            )
        arr = _check_remove_ids(_idmap_ids(self._index), ids)
        if arr.size == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(arr)))

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest codes per query: ``(distances int32 [nq, k], ids int64 [nq, k])``.

        Rows are sorted by (distance, id); missing results are id -1 / distance -1. Exact for
        ``flat`` and for every row whose k-th distance is ``<= exact_radius``.
        """
        q = self._codes(queries, "queries")
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
        if self._kind == "flat" and _strictly_increasing(_idmap_ids(self._index)):
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
        q = self._codes(queries, "queries")
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
