"""Cosine-similarity search over real-valued embeddings, backed by FAISS float indexes.

``FloatIndex(dim, kind)`` L2-normalises every added and query vector and searches by inner
product, i.e. cosine similarity (``metric="inner_product"`` skips the normalisation: maximum
inner-product search), through ``faiss.IndexIDMap2`` so results carry the caller's
int64 ids. Results are sorted by (similarity descending, id ascending); missing results have id
``-1`` and similarity ``-inf``.

============  ===============================================  ==============================
kind          FAISS index                                      exact?
============  ===============================================  ==============================
flat          ``IndexFlatIP``                                  yes (up to float rounding)
hnsw          ``IndexHNSWFlat(dim, M, METRIC_INNER_PRODUCT)``  approximate
ivfpq         ``IndexIVFPQ(IndexFlatIP, dim, nlist, m,         approximate (PQ-compressed
              pq_bits, METRIC_INNER_PRODUCT)``                 similarities)
============  ===============================================  ==============================
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from hashlab.index.codes import _to_numpy
from hashlab.index.idmap import IdMapIndex, _check_k, _sort_rows, _split_range

__all__ = ["FloatIndex", "FLOAT_KINDS"]

FLOAT_KINDS = ("flat", "hnsw", "ivfpq")

_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {"metric": "cosine"},
    "hnsw": {"M": 16, "ef_construction": 40, "ef_search": 64, "metric": "cosine"},
    "ivfpq": {"nlist": 16, "nprobe": 4, "m": None, "pq_bits": 8, "metric": "cosine"},
}
#: ``cosine`` L2-normalises every vector; ``inner_product`` keeps them as given (maximum
#: inner-product search, e.g. DPH's attribute retrieval over log-probabilities)
METRICS = ("cosine", "inner_product")
_RUNTIME = {"hnsw": ("ef_search",), "ivfpq": ("nprobe",)}
_FAISS_CLASS = {"flat": "IndexFlatIP", "hnsw": "IndexHNSWFlat", "ivfpq": "IndexIVFPQ"}


def _default_m(dim: int) -> int:
    """Largest divisor of ``dim`` that is ``<= max(1, dim // 4)`` (4-dim PQ sub-vectors)."""
    target = max(1, dim // 4)
    return max(m for m in range(1, target + 1) if dim % m == 0)


class FloatIndex(IdMapIndex):
    """A cosine-similarity index over ``dim``-dimensional float vectors with int64 ids.

    Parameters by kind (defaults in brackets): ``hnsw``: ``M`` [16], ``ef_construction`` [40],
    ``ef_search`` [64]; ``ivfpq``: ``nlist`` [16], ``nprobe`` [4], ``m`` sub-quantizers
    [largest divisor of dim <= dim // 4], ``pq_bits`` [8] (needs >= 2**pq_bits training
    vectors). ``ivfpq`` is trained by :meth:`train` or on the first :meth:`add`.
    """

    _family = "float"
    _runtime = _RUNTIME

    def __init__(self, dim: int, kind: str = "flat", **params: Any) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        if kind not in FLOAT_KINDS:
            raise ValueError(f"kind: expected one of {FLOAT_KINDS}, got {kind!r}")
        unknown = set(params) - set(_DEFAULTS[kind])
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for kind {kind!r}; "
                f"accepted: {sorted(_DEFAULTS[kind]) or 'none'}"
            )
        self._dim, self._kind = int(dim), kind
        self.params = self._resolve_params({**_DEFAULTS[kind], **params})
        self._base = self._make_base()
        self._index = faiss.IndexIDMap2(self._base)
        self._apply_runtime()

    def _resolve_params(self, p: dict[str, Any]) -> dict[str, Any]:
        def pos_int(name: str, v: Any, lo: int = 1) -> int:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
            return int(v)

        if p.get("metric", "cosine") not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {p['metric']!r}")
        p.setdefault("metric", "cosine")
        if self._kind == "hnsw":
            p["M"] = pos_int("M", p["M"], 2)
            p["ef_construction"] = pos_int("ef_construction", p["ef_construction"])
            p["ef_search"] = pos_int("ef_search", p["ef_search"])
        elif self._kind == "ivfpq":
            p["nlist"] = pos_int("nlist", p["nlist"])
            p["nprobe"] = pos_int("nprobe", p["nprobe"])
            m = _default_m(self._dim) if p["m"] is None else pos_int("m", p["m"])
            if self._dim % m:
                raise ValueError(f"m={m} sub-quantizers must divide dim={self._dim}")
            p["m"] = m
            p["pq_bits"] = pos_int("pq_bits", p["pq_bits"])
            if p["pq_bits"] > 16:
                raise ValueError(f"pq_bits: expected <= 16, got {p['pq_bits']}")
        return p

    def _make_base(self) -> Any:
        p, d = self.params, self._dim
        if self._kind == "flat":
            return faiss.IndexFlatIP(d)
        if self._kind == "hnsw":
            base = faiss.IndexHNSWFlat(d, p["M"], faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = p["ef_construction"]
            return base
        self._quantizer = faiss.IndexFlatIP(d)
        base = faiss.IndexIVFPQ(
            self._quantizer, d, p["nlist"], p["m"], p["pq_bits"], faiss.METRIC_INNER_PRODUCT
        )
        base.own_fields = False
        return base

    def _apply_runtime(self) -> None:
        if self._kind == "hnsw":
            self._base.hnsw.efSearch = self.params["ef_search"]
        elif self._kind == "ivfpq":
            self._base.nprobe = self.params["nprobe"]

    @classmethod
    def _from_faiss(cls, idmap: Any, dim: int, kind: str, params: dict[str, Any]) -> FloatIndex:
        """Wrap a deserialized ``IndexIDMap2`` (used by :mod:`hashlab.index.store`)."""
        self = cls.__new__(cls)
        self._dim, self._kind, self.params = int(dim), kind, {"metric": "cosine", **params}
        self._owner = idmap  # the proxy that owns the C++ object; keep it alive
        idmap = faiss.downcast_index(idmap)
        if not isinstance(idmap, faiss.IndexIDMap2):
            raise ValueError(f"expected an IndexIDMap2, got {type(idmap).__name__}")
        if idmap.d != self._dim:
            raise ValueError(f"index has dim={idmap.d}, manifest says dim={dim}")
        base = faiss.downcast_index(idmap.index)
        expected = _FAISS_CLASS[kind]
        if type(base).__name__ != expected:
            raise ValueError(f"kind {kind!r} needs a {expected}, got {type(base).__name__}")
        if base.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the index does not use inner-product similarity")
        self._index, self._base = idmap, base
        self._apply_runtime()
        return self

    # -- properties --------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def exact(self) -> bool:
        """Whether search results are exact (``flat`` only)."""
        return self._kind == "flat"

    def __repr__(self) -> str:
        return f"FloatIndex(dim={self._dim}, kind={self._kind!r}, ntotal={self.ntotal})"

    # -- data --------------------------------------------------------------------------------

    def _prepare(self, x: Any, name: str) -> np.ndarray:
        arr = _to_numpy(x, name)
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

    def train(self, vectors: Any) -> None:
        """Train an ``ivfpq`` index (a no-op for the other kinds)."""
        x = self._prepare(vectors, "vectors")
        if self._kind != "ivfpq":
            return
        if self._index.is_trained:
            raise ValueError("this ivfpq index is already trained")
        need = max(self.params["nlist"], 2 ** self.params["pq_bits"])
        if x.shape[0] < need:
            raise ValueError(
                f"training ivfpq (nlist={self.params['nlist']}, pq_bits={self.params['pq_bits']})"
                f" needs at least {need} vectors, got {x.shape[0]}"
            )
        self._index.train(x)

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: ``(similarities float32 [nq, k], ids int64 [nq, k])``.

        Rows sorted by (similarity descending, id); missing: id -1, similarity -inf.
        """
        q = self._prepare(queries, "queries")
        k = _check_k(k)
        nq = q.shape[0]
        if self.ntotal == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        kk = k + 1 if self._kind == "flat" else k  # one extra result reveals a tie at k
        S, ids = self._index.search(q, kk)
        ids = ids.astype(np.int64, copy=False)
        S = S.astype(np.float32, copy=False)
        S[ids < 0] = -np.inf
        S, ids = _sort_rows(S, ids, descending=True)
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
            ((s2, i2),) = _split_range(lims, rs.astype(np.float32), rid, descending=True)
            if s2.size >= k:
                S[r], ids[r] = s2[:k], i2[:k]
        return S, ids

    def range_search(
        self, queries: Any, min_similarity: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All vectors with cosine ``>= min_similarity``: per query ``(similarities, ids)``.

        Each entry sorted by (similarity descending, id). Exact for ``flat``.
        """
        q = self._prepare(queries, "queries")
        t = float(min_similarity)
        if not np.isfinite(t):
            raise ValueError(f"min_similarity: expected a finite number, got {min_similarity!r}")
        if self.ntotal == 0:
            return [(np.empty(0, np.float32), np.empty(0, np.int64)) for _ in range(q.shape[0])]
        # FAISS keeps inner products strictly above its radius; step just below the threshold
        radius = float(np.nextafter(np.float32(t), np.float32(-np.inf)))
        lims, S, ids = self._index.range_search(q, radius)
        res = _split_range(lims, S.astype(np.float32, copy=False), ids, descending=True)
        return [(s[s >= np.float32(t)], j[s >= np.float32(t)]) for s, j in res]
