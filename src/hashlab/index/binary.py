"""Hamming-space search over packed binary codes, backed by FAISS binary indexes.

``BinaryIndex(nbits, kind)`` wraps a FAISS binary index in ``faiss.IndexBinaryIDMap2`` so every
result carries the caller's int64 ids (not insertion positions). Codes are packed as in
:mod:`hashlab.index.codes` (``ceil(nbits / 8)`` bytes, little-endian bits, zero padding); FAISS
needs a multiple of 8 bits, so ``nbits`` is padded to ``8 * ceil(nbits / 8)`` internally, which
does not change any distance because padding bits are zero.

Kinds (keys of the ``BINARY_KINDS`` registry), their FAISS factory string and when they are
exact (``index.exact_radius`` gives the radius as a number):

============  =====================================  ===========================================
kind          FAISS index (factory string)           exact for
============  =====================================  ===========================================
flat          ``IndexBinaryFlat`` (``BFlat``)        every ``search`` and every ``range_search``
hash          ``IndexBinaryHash(d, b)``, multi-probe ``range_search`` with radius ``<= nflip``;
              of all keys within ``nflip`` flips     ``search`` rows whose k-th distance
              (``BHash{b}``)                         ``<= nflip``
multihash     ``IndexBinaryMultiHash(d, nhash, b)``  radius ``<= nhash * (nflip + 1) - 1``
              (``nhash`` disjoint ``b``-bit keys;    (pigeonhole), ``search`` likewise
              ``BHash{nhash}x{b}``)
ivf           ``IndexBinaryIVF`` (trained;           only when ``nprobe >= nlist``
              ``BIVF{nlist}``)
hnsw          ``IndexBinaryHNSW`` (``BHNSW{M}``)     never (approximate); no ``range_search``
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

Each kind is one :class:`~hashlab.index.kinds.IndexKind` spec; the built-in ones live in
:mod:`hashlab.index.kinds_binary`, and a new kind is one module registering one spec (see
:mod:`hashlab.index.kinds`). ``docs/search.md`` has the full write-up.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from hashlab.index.codes import check_packed, code_bytes, to_numpy
from hashlab.index.idmap import IdMapIndex, UnknownIdsError, rows_sorted, sort_rows, split_range
from hashlab.index.kinds_binary import DEFAULT_HASH_BITS
from hashlab.index.registry import BINARY_KINDS
from hashlab.validation import check_int

__all__ = ["BinaryIndex", "BINARY_KINDS", "DEFAULT_HASH_BITS", "UnknownIdsError"]


# ---------------------------------------------------------------------------------------------
# BinaryIndex
# ---------------------------------------------------------------------------------------------


class BinaryIndex(IdMapIndex):
    """A Hamming-distance index over packed ``nbits``-bit codes with user int64 ids.

    ``kind`` is a key of ``BINARY_KINDS``. Parameters by kind (defaults in brackets):

    * ``hash``: ``b`` bits per bucket key [``min(nbits, 24)``], ``nflip`` probe radius [2].
    * ``multihash``: ``nhash`` tables [2], ``b`` bits each [``min(nbits // nhash, 24)``],
      ``nflip`` [1].
    * ``ivf``: ``nlist`` lists [16], ``nprobe`` [4]; trained with :meth:`train` or, if still
      untrained, on the codes of the first :meth:`add`.
    * ``hnsw``: ``M`` [16], ``ef_construction`` [40], ``ef_search`` [64].

    ``search``-time params (``nflip``, ``nprobe``, ``ef_search``: the spec's ``runtime``) can be
    changed with :meth:`set_params`. ``remove`` works for ``flat`` only (FAISS cannot remove
    from hash or HNSW indexes, and ID-mapped removal from an IVF corrupts the id map); the
    others raise ``NotImplementedError``.
    """

    _family = "binary"
    _items = "codes"
    _kinds = BINARY_KINDS
    _idmap_class = faiss.IndexBinaryIDMap2

    def __init__(self, nbits: int, kind: str = "flat", **params: Any) -> None:
        self._set_size(nbits)
        self._setup(kind, params)

    def _set_size(self, nbits: int) -> None:
        self._d = 8 * code_bytes(nbits)  # checks nbits; FAISS needs a multiple of 8 bits
        self._nbits = self._size = int(nbits)

    def _size_mismatch(self, d: int) -> str:
        return f"index has d={d} bits, manifest nbits={self._nbits} needs {self._d}"

    # -- properties --------------------------------------------------------------------------

    @property
    def nbits(self) -> int:
        return self._nbits

    @property
    def exact_radius(self) -> int:
        """Largest Hamming radius for which ``range_search`` is exact (-1: never exact)."""
        return self._spec.radius(self._nbits, self.params)

    def __repr__(self) -> str:
        return f"BinaryIndex(nbits={self._nbits}, kind={self._kind!r}, ntotal={self.ntotal})"

    # -- data --------------------------------------------------------------------------------

    def _prepare(self, codes: Any, name: str) -> np.ndarray:
        arr = to_numpy(codes, name)
        if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] != code_bytes(self._nbits):
            raise ValueError(
                f"{name}: index expects {self._nbits}-bit codes ({code_bytes(self._nbits)} bytes "
                f"per code), got {8 * arr.shape[1]}-bit codes ({arr.shape[1]} bytes per code)"
            )
        check_packed(arr, self._nbits, name)
        return np.ascontiguousarray(arr)

    # -- search ------------------------------------------------------------------------------

    _score_dtype = np.int32

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest codes per query: ``(distances int32 [nq, k'], ids int64 [nq, k'])``.

        ``k' = min(k, ntotal)``: a ``k`` beyond the index size is clamped (memory follows the
        result, never ``k``). Rows are sorted by (distance, id); codes an approximate kind did
        not find are id -1 / distance -1. Exact for ``flat`` and for every row whose k-th
        distance is ``<= exact_radius``. Queries are searched in chunks (``CHUNK_BYTES``); a
        result over ``MAX_RESULT_BYTES`` raises :class:`ResultTooLargeError` up front.
        """
        return self._search_chunked(queries, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        spec = self._spec
        if spec.before_search is not None:
            spec.before_search(self._base, k)
        D, ids = self._index.search(q, k)
        D = D.astype(np.int32, copy=False)
        ids = ids.astype(np.int64, copy=False)
        D[ids < 0] = -1
        if spec.insertion_order_ties and self._ids_increasing():
            # the index keeps the first-inserted codes among ties, sorted by (distance,
            # position), so with ids increasing in insertion order the rows are already final
            return D, ids
        self._complete_ties(q, D, ids)
        if rows_sorted(D, ids):
            return D, ids
        return sort_rows(D, ids, descending=False)

    def _complete_ties(self, q: np.ndarray, D: np.ndarray, ids: np.ndarray) -> None:
        """Replace rows whose result is exact up to a tie at the k-th distance (in place).

        FAISS keeps an arbitrary subset of the codes tied at the k-th distance. For rows where
        a range search at that distance is exact, fetch every code within it and keep the k
        smallest by (distance, id).
        """
        if not self._spec.range_search:
            return
        k = D.shape[1]
        last = D[:, -1]
        rows = np.nonzero((ids[:, -1] >= 0) & (last <= self.exact_radius))[0]
        for dk in np.unique(last[rows]):
            group = rows[last[rows] == dk]

            def keep_k(qg: np.ndarray, dk: int = int(dk)) -> tuple[list[Any], int]:
                res, _ = self._range(qg, dk)
                return [(d[:k], j[:k]) if d.size >= k else None for d, j in res], 0

            # chunked: a group's range results are dropped once its k best are kept
            res = self._range_chunked(q[group], keep_k, limited=False)
            for r, best in zip(group, res, strict=True):
                if best is not None:  # always, when the range search is exact
                    D[r], ids[r] = best

    def _range(self, q: np.ndarray, radius: int) -> tuple[list[Any], int]:
        """Per-query ``(distances, ids)`` within ``radius`` (one FAISS call) and the hit count."""
        # FAISS binary range search keeps distances strictly below its radius
        lims, dist, jd = self._index.range_search(q, int(radius) + 1)
        res = split_range(lims, dist.astype(np.int32, copy=False), jd, descending=False)
        return res, int(lims[-1])

    def range_search(
        self, queries: Any, radius: int, *, require_exact: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All codes within Hamming distance ``<= radius``: per query ``(distances, ids)``.

        Each list entry is sorted by (distance, id). Exact for ``radius <= exact_radius``
        (``flat``: always; ``hash``: ``<= nflip``; ``multihash``: ``<= nhash*(nflip+1)-1``);
        otherwise some codes may be missed, or, with ``require_exact=True``, a ValueError is
        raised (:func:`hashlab.index.query.run_query` with ``exact=True`` makes any radius exact).
        ``hnsw`` has no range search (NotImplementedError). Queries are searched in chunks that
        hold at most ``CHUNK_BYTES`` of results each; once the results pass
        ``MAX_RESULT_BYTES``, :class:`ResultTooLargeError`.
        """
        q = self._prepare(queries, "queries")
        radius = min(check_int(radius, "radius", 0), self._nbits)  # no code is farther
        if not self._spec.range_search:
            raise NotImplementedError(
                f"FAISS has no range search for kind {self._kind!r}; use one of the kinds "
                f"{self._kinds_that('range_search')}"
            )
        if require_exact and radius > self.exact_radius:
            raise ValueError(
                f"range_search on a {self._kind!r} index is exact only for radius <= "
                f"{self.exact_radius}, got radius={radius}"
            )
        if self.ntotal == 0:
            return self._empty_ranges(q.shape[0])
        return self._range_chunked(q, lambda qc: self._range(qc, radius))
