"""Retrieval metrics for float codes (cosine) and binary codes (Hamming).

Ranking: each query ranks the database by distance ascending (cosine: similarity descending);
ties are broken by database index (lower index first). Relevance: with 1-D integer labels an
item is relevant when it has the query's class; with 2-D multi-hot {0, 1} labels when it shares
at least one label with the query.

Conventions (all metrics are averaged over queries):

* ``R`` is the number of relevant items in the (ranked) database. A query with ``R = 0`` gets
  AP 0 and recall 0 (it still counts in the average).
* mAP@k (DeepHash convention): AP over the top k, normalised by the number of relevant items
  retrieved in the top k; 0 when none are.
* P@k divides by ``min(k, n)`` where ``n`` is the number of ranked database items.
* Precision within Hamming radius r: retrieved = every item at distance <= r; a query that
  retrieves nothing has precision 0.
* Binary PR curve: precision and recall at every radius 0..nbits (precision of a query with
  nothing retrieved counts as 0), plus the mean number retrieved per radius. Float PR curve:
  precision and recall at a grid of cut-off ranks.

Lower-level functions (``*_from_relevance``) work on a ranked relevance matrix
``rel_sorted: bool [nq, n]`` (column i = the item at rank i + 1) and return per-query arrays.

Implementation: queries are processed in chunks. Binary: FAISS Hamming distances, cast to
uint8/uint16 so that numpy's stable argsort is a radix sort. Float: one BLAS matmul of
L2-normalised float32 rows, then a sort of unique uint64 keys (order-preserving similarity bits,
database index), which is exact including ties. Metrics come from the positions of the relevant
items (``np.flatnonzero``, ``bincount``, ``searchsorted``): no Python loop over database items.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from hashlab.index.codes import _to_numpy, check_packed, hamming_distances

__all__ = [
    "retrieval_metrics",
    "relevance_matrix",
    "cosine_similarities",
    "rank_by_distance",
    "rank_by_similarity",
    "ap_from_relevance",
    "ap_at_k_from_relevance",
    "precision_at_k_from_relevance",
    "recall_at_k_from_relevance",
    "radius_precision_recall_from_relevance",
    "hamming_pr_curve_from_relevance",
    "rank_pr_curve_from_relevance",
    "default_pr_ranks",
]

_LITTLE_ENDIAN = sys.byteorder == "little"


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def _check_rel_sorted(rel_sorted: Any) -> np.ndarray:
    rel = _to_numpy(rel_sorted, "rel_sorted")
    if rel.ndim != 2:
        raise ValueError(f"rel_sorted: expected a 2-D array [nq, n], got shape {rel.shape}")
    if rel.shape[0] == 0 or rel.shape[1] == 0:
        raise ValueError(f"rel_sorted: expected a non-empty array, got shape {rel.shape}")
    if rel.dtype == np.bool_:
        return rel
    if np.issubdtype(rel.dtype, np.integer) or np.issubdtype(rel.dtype, np.floating):
        ok = (rel == 0) | (rel == 1)
        if not ok.all():
            raise ValueError("rel_sorted: expected bool or {0, 1} values (NaN or other found)")
        return rel.astype(bool)
    raise ValueError(f"rel_sorted: expected bool or {{0, 1}} dtype, got dtype {rel.dtype}")


def _check_n_relevant(n_relevant: Any, found: np.ndarray) -> np.ndarray:
    """Validate ``n_relevant`` (R per query) against the relevant items found in the ranking."""
    if n_relevant is None:
        return found
    nr = _to_numpy(n_relevant, "n_relevant")
    if nr.ndim == 0:
        nr = np.full(found.shape[0], nr)
    if nr.shape != found.shape:
        raise ValueError(
            f"n_relevant: expected shape {found.shape} (one per query), got {nr.shape}"
        )
    if not (np.issubdtype(nr.dtype, np.integer) or np.issubdtype(nr.dtype, np.floating)):
        raise ValueError(f"n_relevant: expected integer counts, got dtype {nr.dtype}")
    if np.issubdtype(nr.dtype, np.floating) and not np.all(nr == np.round(nr)):
        raise ValueError("n_relevant: expected integer counts (NaN or fractions found)")
    nr = nr.astype(np.int64)
    if np.any(nr < found):
        bad = int(np.argmax(nr < found))
        raise ValueError(
            f"n_relevant: query {bad} has {found[bad]} relevant items in rel_sorted "
            f"but n_relevant={nr[bad]}"
        )
    return nr


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _check_labels(labels: Any, n: int, name: str) -> np.ndarray:
    arr = _to_numpy(labels, name)
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name}: expected 1-D class labels or 2-D multi-hot labels, got shape {arr.shape}"
        )
    if arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} rows (one per code), got {arr.shape[0]}")
    if arr.ndim == 1:
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name}: 1-D class labels must be integers, got dtype {arr.dtype}")
        return arr
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: multi-hot labels have zero columns (shape {arr.shape})")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name}: multi-hot labels must be {{0, 1}}, got dtype {arr.dtype}")
    if not ((arr == 0) | (arr == 1)).all():
        raise ValueError(f"{name}: multi-hot labels must contain only 0 and 1 (NaN or other found)")
    return arr.astype(bool)


def _prepare_labels(
    query_labels: Any, database_labels: Any, nq: int, ndb: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate labels; return compact (int32 class ids | float32 multi-hot) arrays + is_multi."""
    ql = _check_labels(query_labels, nq, "query_labels")
    dl = _check_labels(database_labels, ndb, "database_labels")
    if ql.ndim != dl.ndim:
        raise ValueError(
            "query_labels and database_labels must both be 1-D class labels or both 2-D "
            f"multi-hot, got {ql.ndim}-D and {dl.ndim}-D"
        )
    if ql.ndim == 1:
        _, inv = np.unique(
            np.concatenate([ql.astype(np.int64), dl.astype(np.int64)]), return_inverse=True
        )
        inv = inv.astype(np.int32)
        return inv[:nq], inv[nq:], False
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(
            "query_labels and database_labels must have the same number of label columns, "
            f"got {ql.shape[1]} and {dl.shape[1]}"
        )
    return ql.astype(np.float32), dl.astype(np.float32), True


def relevance_matrix(query_labels: Any, database_labels: Any) -> np.ndarray:
    """Relevance ``bool [nq, ndb]``: same class (1-D labels) or any shared label (2-D)."""
    ql0 = _to_numpy(query_labels, "query_labels")
    dl0 = _to_numpy(database_labels, "database_labels")
    if ql0.ndim == 0 or dl0.ndim == 0 or ql0.shape[0] == 0 or dl0.shape[0] == 0:
        raise ValueError(
            "query_labels and database_labels must be non-empty arrays, "
            f"got shapes {ql0.shape} and {dl0.shape}"
        )
    ql, dl, multi = _prepare_labels(ql0, dl0, ql0.shape[0], dl0.shape[0])
    return _relevance(ql, dl, multi)


def _relevance(ql: np.ndarray, dl: np.ndarray, multi: bool) -> np.ndarray:
    if multi:
        return (ql @ dl.T) > 0
    return ql[:, None] == dl[None, :]


# --------------------------------------------------------------------------------------------
# similarities and ranking
# --------------------------------------------------------------------------------------------


def _check_float_codes(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, dim], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{name}: float codes must have a floating dtype, got dtype {arr.dtype} "
            "(for packed binary codes use kind='binary')"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _l2_normalise(x: np.ndarray, name: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    if np.any(norms == 0):
        raise ValueError(
            f"{name}: row {int(np.argmax(norms == 0))} is the zero vector; "
            "cosine similarity is undefined"
        )
    return np.ascontiguousarray((x64 / norms[:, None]).astype(np.float32))


def cosine_similarities(queries: Any, database: Any) -> np.ndarray:
    """Cosine similarities float32 ``[nq, ndb]`` (BLAS matmul of L2-normalised float32 rows)."""
    q = _check_float_codes(queries, "queries")
    d = _check_float_codes(database, "database")
    if q.shape[1] != d.shape[1]:
        raise ValueError(
            f"queries and database must have the same dimension, got {q.shape[1]} and {d.shape[1]}"
        )
    return _l2_normalise(q, "queries") @ _l2_normalise(d, "database").T


def _small_uint(max_value: int) -> type[np.unsignedinteger]:
    return np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16


def rank_by_distance(distances: Any) -> np.ndarray:
    """Ranking ``int64 [nq, n]`` by integer distance ascending, ties by index (stable)."""
    d = _to_numpy(distances, "distances")
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"distances: expected a non-empty 2-D array, got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.integer):
        raise ValueError(f"distances: expected integer distances, got dtype {d.dtype}")
    if d.min() < 0:
        raise ValueError("distances: expected non-negative distances")
    dmax = int(d.max())
    if dmax <= np.iinfo(np.uint16).max:
        d = d.astype(_small_uint(dmax))  # numpy's stable sort of uint8/16 is a radix sort
    return np.argsort(d, axis=1, kind="stable")


def _fill_rank_keys(sims: np.ndarray, key: np.ndarray, scratch: np.ndarray) -> None:
    """Write uint64 keys ``(bits ordering sims descending) << 32 | column`` into ``key``.

    Sorting the keys ascending ranks by similarity descending with ties broken by column.
    ``sims`` (float32 ``[c, n]``) is modified in place; ``scratch`` is int32 ``[c, n]``.
    """
    n = sims.shape[1]
    sims += np.float32(0.0)  # -0.0 -> +0.0 so that the two zeros tie
    a = sims.view(np.int32)
    np.right_shift(a, 31, out=scratch)  # -1 for negative floats, 0 otherwise
    np.invert(scratch, out=scratch)
    np.bitwise_and(scratch, np.int32(0x7FFFFFFF), out=scratch)
    np.bitwise_xor(a, scratch, out=scratch)  # s >= 0: 0x7FFFFFFF - bits; s < 0: bits
    hi = scratch.view(np.uint32)
    if _LITTLE_ENDIAN:
        words = key.view(np.uint32)
        words[:, 1::2] = hi
        words[:, 0::2] = np.arange(n, dtype=np.uint32)
    else:  # pragma: no cover - big-endian hosts
        key[...] = hi
        key <<= np.uint64(32)
        key |= np.arange(n, dtype=np.uint64)


def _key_columns(key: np.ndarray) -> np.ndarray:
    """Column indices held in the low 32 bits of sorted keys (a view where possible)."""
    if _LITTLE_ENDIAN:
        return key.view(np.uint32)[:, 0::2]
    return (key & np.uint64(0xFFFFFFFF)).astype(np.intp)  # pragma: no cover


def rank_by_similarity(similarities: Any) -> np.ndarray:
    """Ranking ``int64 [nq, n]`` by similarity descending, ties by index."""
    s = _to_numpy(similarities, "similarities")
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"similarities: expected a non-empty 2-D array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        raise ValueError(f"similarities: expected a floating dtype, got dtype {s.dtype}")
    if np.isnan(s).any():
        raise ValueError("similarities: contains NaN")
    if s.dtype != np.float32 or s.shape[1] >= 2**32:
        # float32 keys would merge distinct float64 values: use an exact stable sort.
        return np.argsort(-s, axis=1, kind="stable")
    key = np.empty(s.shape, dtype=np.uint64)
    _fill_rank_keys(s.copy(), key, np.empty(s.shape, dtype=np.int32))
    key.sort(axis=1)  # keys are unique, so any sort algorithm gives the same result
    return _key_columns(key).astype(np.intp)


# --------------------------------------------------------------------------------------------
# metrics on a ranked relevance matrix
# --------------------------------------------------------------------------------------------


class _Hits:
    """The relevant items of a ranked relevance matrix ``bool [nq, n]``, row-major."""

    def __init__(self, rel: np.ndarray) -> None:
        nq, n = rel.shape
        self.nq, self.n = nq, n
        self.flat = np.flatnonzero(rel)  # sorted flat positions row * n + rank0
        self.n_rel = np.count_nonzero(rel, axis=1).astype(np.int64)
        self.starts = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(self.n_rel, out=self.starts[1:])
        self.rows = np.repeat(np.arange(nq, dtype=np.intp), self.n_rel)
        self.rank0 = self.flat - self.rows * n  # 0-based rank of each relevant item
        ordinal = np.arange(1, self.flat.size + 1, dtype=np.int64)
        ordinal -= np.repeat(self.starts[:-1], self.n_rel)  # j-th relevant item of its row
        self.prec = ordinal / (self.rank0 + 1.0)  # precision at the rank of each hit

    def top_count(self, m: np.ndarray | int) -> np.ndarray:
        """Relevant items among the top ``m`` (``m``: int, ``[nq]`` or ``[nq, j]``)."""
        m = np.asarray(m, dtype=np.int64)
        if m.ndim == 0:
            m = np.full(self.nq, m)
        r = np.arange(self.nq, dtype=np.int64).reshape((self.nq,) + (1,) * (m.ndim - 1))
        return np.searchsorted(self.flat, r * self.n + m, side="left") - self.starts[r]

    def ap_all(self, n_relevant: np.ndarray) -> np.ndarray:
        sums = np.bincount(self.rows, weights=self.prec, minlength=self.nq)
        return _safe_div(sums, n_relevant)

    def ap_at_k(self, k: int) -> np.ndarray:
        keep = self.rank0 < k
        sums = np.bincount(self.rows[keep], weights=self.prec[keep], minlength=self.nq)
        return _safe_div(sums, self.top_count(k))

    def precision_recall(
        self, n_retrieved: np.ndarray, n_relevant: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Precision (0 when nothing retrieved) and recall (0 when ``R = 0``) at the top
        ``n_retrieved`` (``[nq]`` or ``[nq, j]``)."""
        n_ret = np.asarray(n_retrieved, dtype=np.int64)
        hit = self.top_count(n_ret)
        n_rel = n_relevant.reshape((self.nq,) + (1,) * (n_ret.ndim - 1))
        return _safe_div(hit, n_ret), _safe_div(hit, n_rel)


class _PerQuery:
    """Per-query metrics of a chunked evaluation, averaged once at the end so that chunking
    does not change them. ``ks_eff`` maps each reported k to the cut-off actually used."""

    def __init__(self, nq: int, ks_eff: dict[int, int], radius: int | None, n_curve: int) -> None:
        self.nq, self.ks_eff, self.radius = nq, ks_eff, radius
        self.ap_all = np.zeros(nq)
        self.ap_k = {k: np.zeros(nq) for k in ks_eff}
        self.p_k = {k: np.zeros(nq) for k in ks_eff}
        self.r_k = {k: np.zeros(nq) for k in ks_eff}
        self.n_rel = np.zeros(nq, dtype=np.int64)
        self.p_rad, self.r_rad = np.zeros(nq), np.zeros(nq)
        self.curve_p, self.curve_r = np.zeros((nq, n_curve)), np.zeros((nq, n_curve))
        self.curve_n = np.zeros(n_curve, dtype=np.int64)
        self.counted = False  # whether curve_n holds numbers retrieved

    def add(self, rows: slice, hits: _Hits, n_rel: np.ndarray) -> None:
        """AP, AP@k, P@k, R@k of the queries ``rows`` (R = ``n_rel``)."""
        self.n_rel[rows] = n_rel
        self.ap_all[rows] = hits.ap_all(n_rel)
        for k, ke in self.ks_eff.items():
            self.ap_k[k][rows] = hits.ap_at_k(ke)
            top = hits.top_count(ke)
            self.p_k[k][rows] = top / float(ke)
            self.r_k[k][rows] = _safe_div(top, n_rel)

    def add_curve(self, rows: slice, hits: _Hits, n_retrieved: np.ndarray, n_rel: np.ndarray,
                  count_retrieved: bool) -> None:
        """Precision / recall at the cut-offs ``n_retrieved [c, points]`` of the queries."""
        self.curve_p[rows], self.curve_r[rows] = hits.precision_recall(n_retrieved, n_rel)
        if count_retrieved:
            self.curve_n += n_retrieved.sum(axis=0)
            self.counted = True

    def summary(self) -> dict[str, Any]:
        """``mAP@all``, ``mAP@k``, ``P@k``, ``R@k`` and, with a radius, ``P@r`` / ``R@r``."""
        out: dict[str, Any] = {"mAP@all": float(self.ap_all.mean())}
        out.update({f"mAP@{k}": float(v.mean()) for k, v in self.ap_k.items()})
        out.update({f"P@{k}": float(v.mean()) for k, v in self.p_k.items()})
        out.update({f"R@{k}": float(v.mean()) for k, v in self.r_k.items()})
        if self.radius is not None:
            out[f"P@r{self.radius}"] = float(self.p_rad.mean())
            out[f"R@r{self.radius}"] = float(self.r_rad.mean())
        return out

    def curve(self) -> dict[str, list]:
        """Mean precision, recall (and, if counted, number retrieved) per curve point."""
        out = {"precision": self.curve_p.mean(axis=0).tolist(),
               "recall": self.curve_r.mean(axis=0).tolist()}
        if self.counted:
            out["n_retrieved"] = (self.curve_n / self.nq).tolist()
        return out

    @property
    def n_without_relevant(self) -> int:
        return int((self.n_rel == 0).sum())


def _check_k(k: Any, n: int) -> int:
    return min(_check_positive_int(k, "k"), n)


def ap_from_relevance(rel_sorted: Any, n_relevant: Any = None) -> np.ndarray:
    """Per-query AP: ``(1/R) * sum of precision@i over relevant ranks i``; 0 when ``R = 0``.

    ``n_relevant`` (R) defaults to the number of relevant items in ``rel_sorted``; pass it
    when the ranking is truncated.
    """
    hits = _Hits(_check_rel_sorted(rel_sorted))
    return hits.ap_all(_check_n_relevant(n_relevant, hits.n_rel))


def ap_at_k_from_relevance(rel_sorted: Any, k: int) -> np.ndarray:
    """Per-query AP@k (DeepHash): normalised by relevant items in the top k; 0 when none."""
    rel = _check_rel_sorted(rel_sorted)
    return _Hits(rel).ap_at_k(_check_k(k, rel.shape[1]))


def precision_at_k_from_relevance(rel_sorted: Any, k: int) -> np.ndarray:
    """Per-query precision@k = relevant in the top k / min(k, n)."""
    rel = _check_rel_sorted(rel_sorted)
    k = _check_k(k, rel.shape[1])
    return _Hits(rel).top_count(k) / float(k)


def recall_at_k_from_relevance(rel_sorted: Any, k: int, n_relevant: Any = None) -> np.ndarray:
    """Per-query recall@k = relevant in the top k / R; 0 when ``R = 0``."""
    rel = _check_rel_sorted(rel_sorted)
    k = _check_k(k, rel.shape[1])
    hits = _Hits(rel)
    return _safe_div(hits.top_count(k), _check_n_relevant(n_relevant, hits.n_rel))


def _check_dist_sorted(dist_sorted: Any, shape: tuple[int, int]) -> np.ndarray:
    d = _to_numpy(dist_sorted, "dist_sorted")
    if d.shape != shape:
        raise ValueError(f"dist_sorted: expected shape {shape} like rel_sorted, got {d.shape}")
    if not np.issubdtype(d.dtype, np.integer):
        raise ValueError(f"dist_sorted: expected integer distances, got dtype {d.dtype}")
    if shape[1] > 1 and np.any(d[:, 1:] < d[:, :-1]):
        raise ValueError("dist_sorted: each row must be sorted ascending (ranked order)")
    return d


def radius_precision_recall_from_relevance(
    rel_sorted: Any, dist_sorted: Any, radius: int, n_relevant: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query precision and recall within Hamming radius ``radius``.

    Retrieved = items with distance <= radius; precision is 0 when nothing is retrieved,
    recall is 0 when ``R = 0``. ``dist_sorted`` holds the ranked distances.
    """
    rel = _check_rel_sorted(rel_sorted)
    d = _check_dist_sorted(dist_sorted, rel.shape)
    radius = _check_positive_int(radius, "radius", minimum=0)
    hits = _Hits(rel)
    n_rel = _check_n_relevant(n_relevant, hits.n_rel)
    return hits.precision_recall((d <= radius).sum(axis=1), n_rel)


def _counts_within_radius(d: np.ndarray, nbits: int) -> np.ndarray:
    """``int64 [nq, nbits + 1]``: items at distance <= r for r = 0..nbits (larger ignored)."""
    counts = np.empty((d.shape[0], nbits + 1), dtype=np.int64)
    for i in range(d.shape[0]):  # loop over queries, not database items
        counts[i] = np.bincount(d[i], minlength=nbits + 2)[: nbits + 1]
    np.cumsum(counts, axis=1, out=counts)
    return counts


def hamming_pr_curve_from_relevance(
    rel_sorted: Any, dist_sorted: Any, nbits: int, n_relevant: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query precision, recall and number retrieved at every radius 0..nbits.

    Returns three arrays of shape ``[nq, nbits + 1]`` (precision 0 where nothing retrieved).
    """
    rel = _check_rel_sorted(rel_sorted)
    d = _check_dist_sorted(dist_sorted, rel.shape)
    nbits = _check_positive_int(nbits, "nbits")
    if d.min() < 0 or d.max() > nbits:
        raise ValueError(f"dist_sorted: distances must lie in [0, nbits={nbits}]")
    hits = _Hits(rel)
    n_rel = _check_n_relevant(n_relevant, hits.n_rel)
    n_ret = _counts_within_radius(d, nbits)
    prec, rec = hits.precision_recall(n_ret, n_rel)
    return prec, rec, n_ret


def default_pr_ranks(n: int, points: int = 100) -> np.ndarray:
    """Default cut-off ranks of the float PR curve: ~``points`` evenly spaced ranks in [1, n]."""
    n = _check_positive_int(n, "n")
    points = _check_positive_int(points, "points")
    return np.unique(np.rint(np.linspace(1, n, num=min(points, n))).astype(np.int64))


def _check_ranks(ranks: Any, n: int) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0 or not np.issubdtype(r.dtype, np.integer) or r.min() < 1:
        raise ValueError(f"ranks: expected a non-empty 1-D sequence of ints >= 1, got {ranks!r}")
    return np.minimum(r.astype(np.int64), n)


def rank_pr_curve_from_relevance(
    rel_sorted: Any, ranks: Sequence[int] | np.ndarray, n_relevant: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query precision and recall at cut-off ranks (each clipped to n): ``[nq, len(ranks)]``."""
    rel = _check_rel_sorted(rel_sorted)
    r = _check_ranks(ranks, rel.shape[1])
    hits = _Hits(rel)
    n_rel = _check_n_relevant(n_relevant, hits.n_rel)
    return hits.precision_recall(np.broadcast_to(r, (rel.shape[0], r.size)), n_rel)


# --------------------------------------------------------------------------------------------
# the main entry point
# --------------------------------------------------------------------------------------------


def retrieval_metrics(
    queries: Any,
    database: Any,
    query_labels: Any,
    database_labels: Any,
    *,
    kind: Literal["float", "binary"],
    nbits: int | None = None,
    topk: tuple[int, ...] = (100, 1000),
    radius: int | None = 2,
    pr_curve: bool = True,
    pr_points: int = 100,
    chunk_size: int = 256,
    progress: bool = False,
    exclude_self: bool = False,
    query_db_indices: Any = None,
) -> dict[str, Any]:
    """Retrieval metrics of queries against a database, averaged over queries.

    ``kind="float"``: real-valued codes ranked by cosine similarity. ``kind="binary"``: packed
    uint8 codes (see :func:`hashlab.index.codes.pack_bits`) ranked by Hamming distance;
    ``nbits`` defaults to ``8 * bytes per code``. Ties are broken by database index.

    With ``exclude_self=True`` each query is also a database item, at position
    ``query_db_indices[i]``, and that item is removed from the query's ranking (and from its
    relevant count R).

    Returns a dict with ``"mAP@all"``, ``"mAP@k"``, ``"P@k"``, ``"R@k"`` for each k in
    ``topk``, for binary codes ``"P@r{radius}"`` and ``"R@r{radius}"`` (unless
    ``radius=None``), ``"pr_curve"`` (binary: lists ``radius``, ``precision``, ``recall``,
    ``n_retrieved``; float: lists ``rank``, ``precision``, ``recall`` at ``pr_points`` cut-off
    ranks) when ``pr_curve``, and ``n_queries``, ``n_database``, ``n_ranked`` (items each query
    ranks), ``n_queries_without_relevant``, ``kind``, ``nbits``. Queries are processed in
    chunks of ``chunk_size``: memory is O(chunk_size * n_database) plus, for the PR curve,
    O(n_queries * curve points).
    """
    if kind not in ("float", "binary"):
        raise ValueError(f"kind: expected 'float' or 'binary', got {kind!r}")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    pr_points = _check_positive_int(pr_points, "pr_points")
    if isinstance(topk, (int, np.integer)):
        topk = (int(topk),)
    ks = list(dict.fromkeys(_check_positive_int(k, "topk") for k in topk))

    if kind == "binary":
        q_nbits = check_packed(queries, nbits, "queries")
        db_nbits = check_packed(database, nbits, "database")
        q = np.ascontiguousarray(_to_numpy(queries, "queries"))
        db = np.ascontiguousarray(_to_numpy(database, "database"))
        if q.shape[1] != db.shape[1]:
            raise ValueError(
                "queries and database must have the same bytes per code, "
                f"got {q.shape[1]} and {db.shape[1]}"
            )
        nbits = q_nbits if nbits is None else int(nbits)
        assert q_nbits == db_nbits == nbits
        if nbits >= np.iinfo(np.uint16).max:
            raise ValueError(f"nbits: at most {np.iinfo(np.uint16).max - 1} bits, got {nbits}")
        if radius is not None:
            radius = _check_positive_int(radius, "radius", minimum=0)
            if radius > nbits:
                raise ValueError(f"radius: expected an int in [0, nbits={nbits}], got {radius}")
    else:
        if nbits is not None:
            raise ValueError(f"nbits: only used with kind='binary', got nbits={nbits!r}")
        q = _check_float_codes(queries, "queries")
        db = _check_float_codes(database, "database")
        if q.shape[1] != db.shape[1]:
            raise ValueError(
                "queries and database must have the same dimension, "
                f"got {q.shape[1]} and {db.shape[1]}"
            )
        if db.shape[0] >= 2**32 - 1:
            raise ValueError(f"database: at most 2**32 - 2 items, got {db.shape[0]}")
        q = _l2_normalise(q, "queries")
        db = _l2_normalise(db, "database")
        radius = None

    nq, ndb = q.shape[0], db.shape[0]
    ql, dl, multi = _prepare_labels(query_labels, database_labels, nq, ndb)

    self_idx: np.ndarray | None = None
    if exclude_self:
        if query_db_indices is None:
            raise ValueError("exclude_self=True needs query_db_indices (position of each query)")
        self_idx = _to_numpy(query_db_indices, "query_db_indices")
        if self_idx.shape != (nq,) or not np.issubdtype(self_idx.dtype, np.integer):
            raise ValueError(
                f"query_db_indices: expected {nq} integer indices, got shape {self_idx.shape} "
                f"and dtype {self_idx.dtype}"
            )
        if self_idx.min() < 0 or self_idx.max() >= ndb:
            raise ValueError(f"query_db_indices: expected indices in [0, {ndb}), got out of range")
        if ndb < 2:
            raise ValueError("exclude_self=True needs a database of at least 2 items")
        self_idx = self_idx.astype(np.intp)
    elif query_db_indices is not None:
        raise ValueError("query_db_indices is only used with exclude_self=True")

    n = ndb - int(exclude_self)  # items each query ranks
    ks_eff = {k: min(k, n) for k in ks}
    pr_ranks = default_pr_ranks(n, pr_points) if (pr_curve and kind == "float") else None
    n_curve = (nbits + 1) if kind == "binary" else (0 if pr_ranks is None else pr_ranks.size)

    acc = _PerQuery(nq, ks_eff, radius if kind == "binary" else None, n_curve if pr_curve else 0)

    # work buffers reused across chunks (fresh large arrays cost page faults every chunk)
    cs = min(chunk_size, nq)
    if kind == "binary":
        dist_buf = np.empty((cs, ndb), dtype=np.int32)
        small_buf = np.empty((cs, ndb), dtype=_small_uint(nbits + 1))
    else:
        sim_buf = np.empty((cs, ndb), dtype=np.float32)
        key_buf = np.empty((cs, ndb), dtype=np.uint64)
        scratch = np.empty((cs, ndb), dtype=np.int32)

    from tqdm.auto import tqdm

    bar = tqdm(total=nq, unit="query", desc=f"metrics ({kind})", disable=not progress)
    try:
        for start in range(0, nq, chunk_size):
            stop = min(start + chunk_size, nq)
            c = stop - start
            rows = np.arange(c)
            sidx = None if self_idx is None else self_idx[start:stop]
            counts = None
            if kind == "binary":
                dist = hamming_distances(q[start:stop], db, out=dist_buf[:c])
                small = small_buf[:c]
                small[...] = dist
                if sidx is not None:
                    small[rows, sidx] = nbits + 1  # ranked last, then dropped
                order = np.argsort(small, axis=1, kind="stable")  # radix sort on uint8/16
                if radius is not None or pr_curve:
                    counts = _counts_within_radius(small, nbits)
            else:
                sims = sim_buf[:c]
                np.matmul(q[start:stop], db.T, out=sims)
                key = key_buf[:c]
                _fill_rank_keys(sims, key, scratch[:c])
                if sidx is not None:
                    key[rows, sidx] = np.iinfo(np.uint64).max  # ranked last, then dropped
                key.sort(axis=1)  # keys are unique, so any sort algorithm is exact
                order = _key_columns(key)
            if sidx is not None:
                order = order[:, :n]
            if multi:
                rel = np.take_along_axis(_relevance(ql[start:stop], dl, True), order, axis=1)
            else:
                rel = dl[order] == ql[start:stop, None]
            del order
            hits = _Hits(rel)
            del rel
            n_rel = hits.n_rel
            rows_q = slice(start, stop)
            acc.add(rows_q, hits, n_rel)
            if counts is not None and radius is not None:
                acc.p_rad[rows_q], acc.r_rad[rows_q] = hits.precision_recall(
                    counts[:, radius], n_rel
                )
            if pr_curve:
                if kind == "binary":
                    assert counts is not None
                    acc.add_curve(rows_q, hits, counts, n_rel, count_retrieved=True)
                else:
                    assert pr_ranks is not None
                    acc.add_curve(rows_q, hits, np.broadcast_to(pr_ranks, (c, n_curve)), n_rel,
                                  count_retrieved=False)
            del hits
            bar.update(c)
    finally:
        bar.close()

    out = acc.summary()
    if pr_curve:
        curve: dict[str, list] = (
            {"radius": list(range(nbits + 1))} if kind == "binary"
            else {"rank": [int(x) for x in pr_ranks]}  # type: ignore[union-attr]
        )
        curve.update(acc.curve())
        out["pr_curve"] = curve
    out.update(
        n_queries=nq,
        n_database=ndb,
        n_ranked=n,
        n_queries_without_relevant=acc.n_without_relevant,
        kind=kind,
        nbits=nbits,
    )
    return out
