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

The definitions, with examples, are in ``docs/protocols.md``.

Implementation: queries are processed in chunks, by one loop (:meth:`PerQuery.run`) shared
with :func:`hashlab.eval.index_metrics.index_retrieval_metrics`; a *ranker* per kind turns a
chunk of queries into rankings. Binary: FAISS Hamming distances, cast to
uint8/uint16 so that numpy's stable argsort is a radix sort. Float: one BLAS matmul of
L2-normalised float32 rows, then a sort of unique uint64 keys (order-preserving similarity bits,
database index), which is exact including ties. Metrics come from the positions of the relevant
items (``np.flatnonzero``, ``bincount``, ``searchsorted``): no Python loop over database items.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from hashlab.index.codes import check_packed, hamming_distances, to_numpy
from hashlab.validation import check_choice, check_int

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


def _check_matrix(x: Any, name: str, shape: str) -> np.ndarray:
    """``x`` as a non-empty 2-D numpy array (``shape`` names its axes in messages)."""
    arr = to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array {shape}, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    return arr


def check_topk(topk: Any) -> list[int]:
    """The distinct cut-offs of ``topk`` (an int or a sequence of ints >= 1), in order."""
    if isinstance(topk, (int, np.integer)):
        topk = (int(topk),)
    return list(dict.fromkeys(check_int(k, "topk") for k in topk))


def _check_rel_sorted(rel_sorted: Any) -> np.ndarray:
    rel = _check_matrix(rel_sorted, "rel_sorted", "[nq, n]")
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
    nr = to_numpy(n_relevant, "n_relevant")
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
    arr = to_numpy(labels, name)
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


def prepare_labels(
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
    ql0 = to_numpy(query_labels, "query_labels")
    dl0 = to_numpy(database_labels, "database_labels")
    if ql0.ndim == 0 or dl0.ndim == 0 or ql0.shape[0] == 0 or dl0.shape[0] == 0:
        raise ValueError(
            "query_labels and database_labels must be non-empty arrays, "
            f"got shapes {ql0.shape} and {dl0.shape}"
        )
    ql, dl, multi = prepare_labels(ql0, dl0, ql0.shape[0], dl0.shape[0])
    return relevance(ql, dl, multi)


def relevance(ql: np.ndarray, dl: np.ndarray, multi: bool) -> np.ndarray:
    if multi:
        return (ql @ dl.T) > 0
    return ql[:, None] == dl[None, :]


# --------------------------------------------------------------------------------------------
# similarities and ranking
# --------------------------------------------------------------------------------------------


def _check_float_codes(x: Any, name: str) -> np.ndarray:
    arr = _check_matrix(x, name, "[N, dim]")
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


def _check_same_width(q: np.ndarray, db: np.ndarray, what: str) -> None:
    if q.shape[1] != db.shape[1]:
        raise ValueError(
            f"queries and database must have the same {what}, got {q.shape[1]} and {db.shape[1]}"
        )


def _normalised_pair(queries: Any, database: Any) -> tuple[np.ndarray, np.ndarray]:
    """Float query and database codes, checked and L2-normalised (float32)."""
    q = _check_float_codes(queries, "queries")
    d = _check_float_codes(database, "database")
    _check_same_width(q, d, "dimension")
    return _l2_normalise(q, "queries"), _l2_normalise(d, "database")


def cosine_similarities(queries: Any, database: Any) -> np.ndarray:
    """Cosine similarities float32 ``[nq, ndb]`` (BLAS matmul of L2-normalised float32 rows)."""
    q, d = _normalised_pair(queries, database)
    return q @ d.T


def _small_uint(max_value: int) -> type[np.unsignedinteger]:
    return np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16


def _check_scores(x: Any, name: str, dtype: type[np.generic], what: str) -> np.ndarray:
    """``x`` as a non-empty 2-D array of ``dtype`` (``np.integer`` or ``np.floating``)."""
    arr = to_numpy(x, name)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, dtype):
        raise ValueError(f"{name}: expected {what}, got dtype {arr.dtype}")
    return arr


def rank_by_distance(distances: Any) -> np.ndarray:
    """Ranking ``int64 [nq, n]`` by integer distance ascending, ties by index (stable)."""
    d = _check_scores(distances, "distances", np.integer, "integer distances")
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
    s = _check_scores(similarities, "similarities", np.floating, "a floating dtype")
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


class Hits:
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


class Chunk(NamedTuple):
    """What a ranking of a chunk of queries gives the shared loop."""

    hits: Hits  # the relevant items of each query's ranking
    n_rel: np.ndarray  # R of each query (all relevant items, retrieved or not)
    radius_pr: tuple[np.ndarray, np.ndarray] | None = None  # P@r, R@r of each query
    cutoffs: np.ndarray | None = None  # [c, points]: items retrieved at each PR-curve point


class PerQuery:
    """Per-query metrics of a chunked evaluation, averaged once at the end so that chunking
    does not change them. ``ks_eff`` maps each reported k to the cut-off actually used;
    ``n_curve`` is the number of PR-curve points (0: no curve); with ``count_retrieved`` the
    curve also reports the mean number retrieved per point."""

    def __init__(self, nq: int, ks_eff: dict[int, int], radius: int | None, n_curve: int,
                 count_retrieved: bool = False) -> None:
        self.nq, self.ks_eff, self.radius = nq, ks_eff, radius
        self.count_retrieved = count_retrieved
        self.ap_all = np.zeros(nq)
        self.ap_k = {k: np.zeros(nq) for k in ks_eff}
        self.p_k = {k: np.zeros(nq) for k in ks_eff}
        self.r_k = {k: np.zeros(nq) for k in ks_eff}
        self.n_rel = np.zeros(nq, dtype=np.int64)
        self.p_rad, self.r_rad = np.zeros(nq), np.zeros(nq)
        self.curve_p, self.curve_r = np.zeros((nq, n_curve)), np.zeros((nq, n_curve))
        self.curve_n = np.zeros(n_curve, dtype=np.int64)

    def run(self, rank_chunk: Callable[[int, int], Chunk], chunk_size: int, desc: str,
            progress: bool) -> None:
        """The evaluation loop: ``rank_chunk(start, stop)`` ranks queries ``start:stop``."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.nq, unit="query", desc=desc, disable=not progress)
        try:
            for start in range(0, self.nq, chunk_size):
                stop = min(start + chunk_size, self.nq)
                self.add(slice(start, stop), rank_chunk(start, stop))
                bar.update(stop - start)
        finally:
            bar.close()

    def add(self, rows: slice, chunk: Chunk) -> None:
        """The metrics of the queries ``rows``."""
        hits, n_rel = chunk.hits, chunk.n_rel
        self.n_rel[rows] = n_rel
        self.ap_all[rows] = hits.ap_all(n_rel)
        for k, ke in self.ks_eff.items():
            self.ap_k[k][rows] = hits.ap_at_k(ke)
            top = hits.top_count(ke)
            self.p_k[k][rows] = top / float(ke)
            self.r_k[k][rows] = _safe_div(top, n_rel)
        if chunk.radius_pr is not None:
            self.p_rad[rows], self.r_rad[rows] = chunk.radius_pr
        if chunk.cutoffs is not None:
            self.curve_p[rows], self.curve_r[rows] = hits.precision_recall(chunk.cutoffs, n_rel)
            if self.count_retrieved:
                self.curve_n += chunk.cutoffs.sum(axis=0)

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

    def report(self, curve_axis: dict[str, list] | None) -> dict[str, Any]:
        """:meth:`summary` plus, when ``curve_axis`` (the curve points) is given,
        ``pr_curve``: the points, mean precision, recall and (if counted) number retrieved."""
        out = self.summary()
        if curve_axis is not None:
            curve = {**curve_axis, "precision": self.curve_p.mean(axis=0).tolist(),
                     "recall": self.curve_r.mean(axis=0).tolist()}
            if self.count_retrieved:
                curve["n_retrieved"] = (self.curve_n / self.nq).tolist()
            out["pr_curve"] = curve
        return out

    @property
    def n_without_relevant(self) -> int:
        return int((self.n_rel == 0).sum())


def _check_k(k: Any, n: int) -> int:
    return min(check_int(k, "k"), n)


def ap_from_relevance(rel_sorted: Any, n_relevant: Any = None) -> np.ndarray:
    """Per-query AP: ``(1/R) * sum of precision@i over relevant ranks i``; 0 when ``R = 0``.

    ``n_relevant`` (R) defaults to the number of relevant items in ``rel_sorted``; pass it
    when the ranking is truncated.
    """
    hits = Hits(_check_rel_sorted(rel_sorted))
    return hits.ap_all(_check_n_relevant(n_relevant, hits.n_rel))


def ap_at_k_from_relevance(rel_sorted: Any, k: int) -> np.ndarray:
    """Per-query AP@k (DeepHash): normalised by relevant items in the top k; 0 when none."""
    rel = _check_rel_sorted(rel_sorted)
    return Hits(rel).ap_at_k(_check_k(k, rel.shape[1]))


def precision_at_k_from_relevance(rel_sorted: Any, k: int) -> np.ndarray:
    """Per-query precision@k = relevant in the top k / min(k, n)."""
    rel = _check_rel_sorted(rel_sorted)
    k = _check_k(k, rel.shape[1])
    return Hits(rel).top_count(k) / float(k)


def recall_at_k_from_relevance(rel_sorted: Any, k: int, n_relevant: Any = None) -> np.ndarray:
    """Per-query recall@k = relevant in the top k / R; 0 when ``R = 0``."""
    rel = _check_rel_sorted(rel_sorted)
    k = _check_k(k, rel.shape[1])
    hits = Hits(rel)
    return _safe_div(hits.top_count(k), _check_n_relevant(n_relevant, hits.n_rel))


def _check_dist_sorted(dist_sorted: Any, shape: tuple[int, int]) -> np.ndarray:
    d = to_numpy(dist_sorted, "dist_sorted")
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
    radius = check_int(radius, "radius", minimum=0)
    hits = Hits(rel)
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
    nbits = check_int(nbits, "nbits")
    if d.min() < 0 or d.max() > nbits:
        raise ValueError(f"dist_sorted: distances must lie in [0, nbits={nbits}]")
    hits = Hits(rel)
    n_rel = _check_n_relevant(n_relevant, hits.n_rel)
    n_ret = _counts_within_radius(d, nbits)
    prec, rec = hits.precision_recall(n_ret, n_rel)
    return prec, rec, n_ret


def default_pr_ranks(n: int, points: int = 100) -> np.ndarray:
    """Default cut-off ranks of the float PR curve: ~``points`` evenly spaced ranks in [1, n]."""
    n = check_int(n, "n")
    points = check_int(points, "points")
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
    hits = Hits(rel)
    n_rel = _check_n_relevant(n_relevant, hits.n_rel)
    return hits.precision_recall(np.broadcast_to(r, (rel.shape[0], r.size)), n_rel)


# --------------------------------------------------------------------------------------------
# exhaustive rankers: a chunk of queries -> rankings of the database
# --------------------------------------------------------------------------------------------


def _binary_inputs(queries: Any, database: Any, nbits: int | None, radius: int | None
                   ) -> tuple[np.ndarray, np.ndarray, int, int | None]:
    """Packed query and database codes, their ``nbits`` and the checked ``radius``."""
    q_nbits = check_packed(queries, nbits, "queries")
    db_nbits = check_packed(database, nbits, "database")
    q = np.ascontiguousarray(to_numpy(queries, "queries"))
    db = np.ascontiguousarray(to_numpy(database, "database"))
    _check_same_width(q, db, "bytes per code")
    nbits = q_nbits if nbits is None else int(nbits)
    assert q_nbits == db_nbits == nbits
    if nbits >= np.iinfo(np.uint16).max:
        raise ValueError(f"nbits: at most {np.iinfo(np.uint16).max - 1} bits, got {nbits}")
    if radius is not None:
        radius = check_int(radius, "radius", minimum=0)
        if radius > nbits:
            raise ValueError(f"radius: expected an int in [0, nbits={nbits}], got {radius}")
    return q, db, nbits, radius


def _float_inputs(queries: Any, database: Any, nbits: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Float query and database codes, checked and L2-normalised."""
    if nbits is not None:
        raise ValueError(f"nbits: only used with kind='binary', got nbits={nbits!r}")
    q, db = _normalised_pair(queries, database)
    if db.shape[0] >= 2**32 - 1:
        raise ValueError(f"database: at most 2**32 - 2 items, got {db.shape[0]}")
    return q, db


class _HammingRanker:
    """Hamming ranking of packed codes: FAISS distances cast to uint8/uint16, so that numpy's
    stable argsort is a radix sort (ties by database index). Its cut-offs are the numbers of
    items within every radius 0..nbits (P@r and the binary PR curve)."""

    count_retrieved = True

    def __init__(self, q: np.ndarray, db: np.ndarray, nbits: int, radius: int | None,
                 pr_curve: bool, rows: int) -> None:
        self.q, self.db, self.nbits, self.radius = q, db, nbits, radius
        self.n_curve = nbits + 1 if pr_curve else 0
        self.curve_axis = {"radius": list(range(nbits + 1))} if pr_curve else None
        self._count = radius is not None or pr_curve
        # work buffers reused across chunks (fresh large arrays cost page faults every chunk)
        self._dist = np.empty((rows, db.shape[0]), dtype=np.int32)
        self._small = np.empty((rows, db.shape[0]), dtype=_small_uint(nbits + 1))

    def rank(self, start: int, stop: int, self_idx: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Ranking of queries ``start:stop`` (each ``self_idx`` item last) and cut-offs."""
        c = stop - start
        dist = hamming_distances(self.q[start:stop], self.db, out=self._dist[:c])
        small = self._small[:c]
        small[...] = dist
        if self_idx is not None:
            small[np.arange(c), self_idx] = self.nbits + 1  # ranked last, then dropped
        order = np.argsort(small, axis=1, kind="stable")  # radix sort on uint8/16
        return order, (_counts_within_radius(small, self.nbits) if self._count else None)


class _CosineRanker:
    """Cosine ranking: one BLAS matmul of L2-normalised float32 rows, then a sort of unique
    uint64 keys (order-preserving similarity bits, database index): exact including ties. Its
    cut-offs are the ranks of the float PR curve."""

    count_retrieved = False
    radius = None

    def __init__(self, q: np.ndarray, db: np.ndarray, pr_ranks: np.ndarray | None,
                 rows: int) -> None:
        self.q, self.db, self.pr_ranks = q, db, pr_ranks
        self.n_curve = 0 if pr_ranks is None else pr_ranks.size
        self.curve_axis = None if pr_ranks is None else {"rank": [int(x) for x in pr_ranks]}
        shape = (rows, db.shape[0])
        self._sims = np.empty(shape, dtype=np.float32)
        self._key = np.empty(shape, dtype=np.uint64)
        self._scratch = np.empty(shape, dtype=np.int32)

    def rank(self, start: int, stop: int, self_idx: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Ranking of queries ``start:stop`` (each ``self_idx`` item last) and cut-offs."""
        c = stop - start
        sims = self._sims[:c]
        np.matmul(self.q[start:stop], self.db.T, out=sims)
        key = self._key[:c]
        _fill_rank_keys(sims, key, self._scratch[:c])
        if self_idx is not None:
            key[np.arange(c), self_idx] = np.iinfo(np.uint64).max  # ranked last, then dropped
        key.sort(axis=1)  # keys are unique, so any sort algorithm is exact
        cutoffs = None if self.pr_ranks is None else np.broadcast_to(
            self.pr_ranks, (c, self.n_curve))
        return _key_columns(key), cutoffs


def _check_self_positions(exclude_self: bool, query_db_indices: Any, nq: int, ndb: int
                          ) -> np.ndarray | None:
    """The database position of each query when ``exclude_self`` (else None), checked."""
    if not exclude_self:
        if query_db_indices is not None:
            raise ValueError("query_db_indices is only used with exclude_self=True")
        return None
    if query_db_indices is None:
        raise ValueError("exclude_self=True needs query_db_indices (position of each query)")
    self_idx = to_numpy(query_db_indices, "query_db_indices")
    if self_idx.shape != (nq,) or not np.issubdtype(self_idx.dtype, np.integer):
        raise ValueError(
            f"query_db_indices: expected {nq} integer indices, got shape {self_idx.shape} "
            f"and dtype {self_idx.dtype}"
        )
    if self_idx.min() < 0 or self_idx.max() >= ndb:
        raise ValueError(f"query_db_indices: expected indices in [0, {ndb}), got out of range")
    if ndb < 2:
        raise ValueError("exclude_self=True needs a database of at least 2 items")
    return self_idx.astype(np.intp)


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
    check_choice("kind", kind, ("float", "binary"))
    chunk_size = check_int(chunk_size, "chunk_size")
    pr_points = check_int(pr_points, "pr_points")
    ks = check_topk(topk)
    if kind == "binary":
        q, db, nbits, radius = _binary_inputs(queries, database, nbits, radius)
    else:
        q, db = _float_inputs(queries, database, nbits)
    nq, ndb = q.shape[0], db.shape[0]
    ql, dl, multi = prepare_labels(query_labels, database_labels, nq, ndb)
    self_idx = _check_self_positions(exclude_self, query_db_indices, nq, ndb)

    n = ndb - int(exclude_self)  # items each query ranks
    rows = min(chunk_size, nq)
    ranker: _HammingRanker | _CosineRanker
    if kind == "binary":
        ranker = _HammingRanker(q, db, nbits, radius, pr_curve, rows)
    else:
        ranker = _CosineRanker(q, db, default_pr_ranks(n, pr_points) if pr_curve else None, rows)

    def rank_chunk(start: int, stop: int) -> Chunk:
        sidx = None if self_idx is None else self_idx[start:stop]
        order, cutoffs = ranker.rank(start, stop, sidx)
        if sidx is not None:
            order = order[:, :n]
        if multi:
            rel = np.take_along_axis(relevance(ql[start:stop], dl, True), order, axis=1)
        else:
            rel = dl[order] == ql[start:stop, None]
        del order
        hits = Hits(rel)
        del rel
        radius_pr = None
        if ranker.radius is not None:
            radius_pr = hits.precision_recall(cutoffs[:, ranker.radius], hits.n_rel)
        return Chunk(hits, hits.n_rel, radius_pr, cutoffs if ranker.n_curve else None)

    acc = PerQuery(nq, {k: min(k, n) for k in ks}, ranker.radius, ranker.n_curve,
                    ranker.count_retrieved)
    acc.run(rank_chunk, chunk_size, f"metrics ({kind})", progress)
    out = acc.report(ranker.curve_axis)
    out.update(
        n_queries=nq,
        n_database=ndb,
        n_ranked=n,
        n_queries_without_relevant=acc.n_without_relevant,
        kind=kind,
        nbits=nbits,
    )
    return out
