"""Cosine-similarity search over real-valued embeddings, backed by FAISS float indexes.

``FloatIndex(dim, kind)`` L2-normalises every added and query vector and searches by inner
product, i.e. cosine similarity (``metric="inner_product"`` skips the normalisation: maximum
inner-product search), through ``faiss.IndexIDMap2`` so results carry the caller's
int64 ids. Results are sorted by (similarity descending, id ascending); missing results have id
``-1`` and similarity ``-inf``.

Kinds (keys of the ``FLOAT_KINDS`` registry):

============  ===============================================  ==============================
kind          FAISS index (factory string)                     exact?
============  ===============================================  ==============================
flat          ``IndexFlatIP`` (``Flat``)                       yes (up to float rounding)
hnsw          ``IndexHNSWFlat(dim, M, METRIC_INNER_PRODUCT)``  approximate
              (``HNSW{M}``)
ivfpq         ``IndexIVFPQ(IndexFlatIP, dim, nlist, m,         approximate (PQ-compressed
              pq_bits, METRIC_INNER_PRODUCT)``                 similarities)
              (``IVF{nlist},PQ{m}x{pq_bits}np``)
============  ===============================================  ==============================

Each kind is one :class:`~hashlab.index.kinds.IndexKind` spec; the built-in ones live in
:mod:`hashlab.index.kinds_float`, and a new kind is one module registering one spec (see
:mod:`hashlab.index.kinds`). ``docs/search.md`` has the full write-up.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from hashlab.index.codes import to_numpy
from hashlab.index.idmap import IdMapIndex, sort_rows, split_range
from hashlab.index.kinds import FAMILIES
from hashlab.index.registry import FLOAT_KINDS
from hashlab.validation import check_choice, check_int, check_real

__all__ = ["FloatIndex", "FLOAT_KINDS", "METRICS"]

#: ``cosine`` L2-normalises every vector; ``inner_product`` keeps them as given (maximum
#: inner-product search, e.g. DPH's attribute retrieval over log-probabilities)
METRICS = ("cosine", "inner_product")


class FloatIndex(IdMapIndex):
    """A cosine-similarity index over ``dim``-dimensional float vectors with int64 ids.

    ``kind`` is a key of ``FLOAT_KINDS``. Every kind takes ``metric`` [``"cosine"``] (see
    ``METRICS``). Parameters by kind (defaults in brackets): ``hnsw``: ``M`` [16],
    ``ef_construction`` [40], ``ef_search`` [64]; ``ivfpq``: ``nlist`` [16], ``nprobe`` [4],
    ``m`` sub-quantizers [largest divisor of dim <= dim // 4], ``pq_bits`` [8] (needs
    >= 2**pq_bits training vectors). ``ivfpq`` is trained by :meth:`train` or on the first
    :meth:`add`.
    """

    _family = "float"
    _items = "vectors"
    _kinds = FLOAT_KINDS
    _idmap_class = faiss.IndexIDMap2
    _family_defaults = FAMILIES["float"].defaults

    def __init__(self, dim: int, kind: str = "flat", **params: Any) -> None:
        self._set_size(dim)
        self._setup(kind, params)

    def _set_size(self, dim: int) -> None:
        self._dim = self._d = self._size = check_int(dim, "dim")

    def _resolve_params(self, p: dict[str, Any]) -> dict[str, Any]:
        p["metric"] = check_choice("metric", p.get("metric", "cosine"), METRICS)
        return super()._resolve_params(p)

    def _size_mismatch(self, d: int) -> str:
        return f"index has dim={d}, manifest says dim={self._dim}"

    # -- properties --------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def exact(self) -> bool:
        """Whether search results are exact (``flat`` only among the built-in kinds)."""
        return self._spec.exact

    def __repr__(self) -> str:
        return f"FloatIndex(dim={self._dim}, kind={self._kind!r}, ntotal={self.ntotal})"

    # -- data --------------------------------------------------------------------------------

    def _prepare(self, x: Any, name: str) -> np.ndarray:
        arr = to_numpy(x, name)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty 2-D array [n, dim], got {arr.shape}")
        if arr.shape[1] != self._dim:
            raise ValueError(f"{name}: index expects dim={self._dim}, got dim={arr.shape[1]}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name}: expected real-valued vectors, got dtype {arr.dtype}")
        out = np.array(arr, dtype=np.float32, order="C", copy=True)
        if not np.isfinite(out).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        if self.params["metric"] == "inner_product":
            return out
        norms = np.linalg.norm(out, axis=1)
        if (norms == 0).any():
            bad = np.nonzero(norms == 0)[0]
            raise ValueError(f"{name}: rows {bad[:10].tolist()} are zero vectors (no direction)")
        faiss.normalize_L2(out)
        return out

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: ``(similarities float32 [nq, k'], ids int64 [nq, k'])``.

        ``k' = min(k, ntotal)`` (a larger ``k`` is clamped). Rows sorted by (similarity
        descending, id); vectors an approximate kind did not find: id -1, similarity -inf.
        Chunked and limited like :meth:`BinaryIndex.search`.
        """
        return self._search_chunked(queries, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # one extra result reveals a tie at k (none possible when k is the whole index)
        kk = k + 1 if self._spec.exact and k < self.ntotal else k
        S, ids = self._index.search(q, kk)
        ids = ids.astype(np.int64, copy=False)
        S = S.astype(np.float32, copy=False)
        S[ids < 0] = -np.inf
        S, ids = sort_rows(S, ids, descending=True)
        if kk == k:
            return S, ids
        # FAISS keeps an arbitrary subset of vectors tied at the k-th similarity; for rows whose
        # (k+1)-th result ties the k-th, fetch every vector at least that similar and keep the
        # k best by (similarity desc, id)
        tied = np.nonzero((ids[:, k] >= 0) & (S[:, k] >= S[:, k - 1]))[0]
        S, ids = np.ascontiguousarray(S[:, :k]), np.ascontiguousarray(ids[:, :k])
        for r in tied:
            t = float(S[r, k - 1])
            radius = t - 1e-6 * max(1.0, abs(t))  # slack for rounding differences
            lims, rs, rid = self._index.range_search(q[r : r + 1], radius)
            ((s2, i2),) = split_range(lims, rs.astype(np.float32), rid, descending=True)
            if s2.size >= k:
                S[r], ids[r] = s2[:k], i2[:k]
        return S, ids

    def _range(self, q: np.ndarray, t: float) -> tuple[list[Any], int]:
        # FAISS keeps inner products strictly above its radius; step just below the threshold
        radius = float(np.nextafter(np.float32(t), np.float32(-np.inf)))
        lims, S, ids = self._index.range_search(q, radius)
        res = split_range(lims, S.astype(np.float32, copy=False), ids, descending=True)
        res = [(s[s >= np.float32(t)], j[s >= np.float32(t)]) for s, j in res]
        return res, int(lims[-1])

    def range_search(
        self, queries: Any, min_similarity: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All vectors with cosine ``>= min_similarity``: per query ``(similarities, ids)``.

        Each entry sorted by (similarity descending, id). Exact for ``flat``. Chunked and
        limited like :meth:`BinaryIndex.range_search`.
        """
        q = self._prepare(queries, "queries")
        t = check_real(min_similarity, "min_similarity", -np.inf, strict=False)
        if not self._spec.range_search:
            raise NotImplementedError(f"FAISS has no range search for kind {self._kind!r}")
        if self.ntotal == 0:
            return self._empty_ranges(q.shape[0])
        return self._range_chunked(q, lambda qc: self._range(qc, t))
