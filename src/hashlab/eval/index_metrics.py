"""Retrieval metrics of queries searched through an index (``BinaryIndex`` or ``FloatIndex``).

:func:`retrieval_metrics` ranks a code matrix itself; :func:`index_retrieval_metrics` asks an
index instead, so the numbers describe what a deployed index returns: hash-table lookup,
IVF probing or HNSW graph search, not only exhaustive ranking.

* The ranking of each query is ``index.search(query, k)`` (``k`` defaults to every code in the
  index, i.e. a full ranking). Items the index does not return count as not retrieved, and AP
  is normalised by **all** relevant items in the index, so an approximate index is penalised
  for what it misses. With an exact index (``flat``) and ``k = ntotal`` the results equal
  :func:`retrieval_metrics` on the same codes (ties by id = by database position when ids are
  positions).
* ``P@r{radius}`` / ``R@r{radius}`` for binary indexes come from ``index.range_search(query,
  radius)`` (the hash-table lookup of ``hash`` / ``multihash`` indexes); ``hnsw`` has no range
  search, so there they are computed from the returned ranking.
* ``exclude_self=True``: each query's own id (``query_ids``) is dropped from its results and
  from its relevant count.

Definitions of the metrics are those of :mod:`hashlab.eval.metrics` (``docs/protocols.md``);
the evaluation loop is the one :func:`retrieval_metrics` runs (``PerQuery.run``), fed with the
index's results instead of an exhaustive ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashlab.eval.metrics import (
    Chunk,
    Hits,
    PerQuery,
    check_topk,
    prepare_labels,
    relevance,
)
from hashlab.index.binary import BinaryIndex
from hashlab.index.codes import to_numpy
from hashlab.index.floats import FloatIndex
from hashlab.validation import check_int

__all__ = ["index_retrieval_metrics"]


def _labels_by_id(index: Any, ids: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(labels of the indexed ids, those ids sorted), checking every indexed id has a label."""
    ids = to_numpy(ids, "database_ids")
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"database_ids: expected a 1-D integer array, got {ids.dtype} {ids.shape}")
    labels = to_numpy(labels, "database_labels")
    if labels.shape[0] != ids.shape[0]:
        raise ValueError(
            f"database_labels: {labels.shape[0]} labels for {ids.shape[0]} database_ids"
        )
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order].astype(np.int64)
    if sorted_ids.size > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise ValueError("database_ids: ids must be unique")
    present = np.sort(index.ids())
    pos = np.minimum(np.searchsorted(sorted_ids, present), max(sorted_ids.size - 1, 0))
    missing = present[sorted_ids[pos] != present] if sorted_ids.size else present
    if missing.size:
        raise ValueError(
            f"database_ids: no label for {missing.size} id(s) in the index, e.g. "
            f"{missing[:5].tolist()}"
        )
    return labels[order[pos]], present


def index_retrieval_metrics(
    index: BinaryIndex | FloatIndex,
    queries: Any,
    query_labels: Any,
    database_ids: Any,
    database_labels: Any,
    *,
    k: int | None = None,
    topk: tuple[int, ...] = (100, 1000),
    radius: int | None = 2,
    pr_curve: bool = False,
    chunk_size: int = 128,
    exclude_self: bool = False,
    query_ids: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Retrieval metrics of ``queries`` searched in ``index``, averaged over queries.

    ``database_ids`` / ``database_labels`` give the label of every id in the index (1-D class
    labels or 2-D multi-hot; extra ids are ignored). Returns ``mAP@all`` (over the index's
    ranking of ``k`` items, normalised by all relevant items), ``mAP@k``, ``P@k``, ``R@k`` for
    ``k`` in ``topk``, for binary indexes ``P@r{radius}``/``R@r{radius}`` and, with
    ``pr_curve``, the Hamming PR curve over radii (from the ranking), plus ``n_queries``,
    ``n_database``, ``n_ranked``, ``n_returned`` (mean results per query), ``index_kind``,
    ``kind`` and ``nbits``.
    """
    if not isinstance(index, (BinaryIndex, FloatIndex)):
        raise TypeError(f"index: expected a BinaryIndex or FloatIndex, got {type(index).__name__}")
    binary = isinstance(index, BinaryIndex)
    ntotal = index.ntotal
    if ntotal == 0:
        raise ValueError("index is empty: add codes before evaluating")
    q = to_numpy(queries, "queries")
    nq = q.shape[0] if q.ndim else 0
    if nq == 0:
        raise ValueError("queries: expected at least one query")
    chunk_size = check_int(chunk_size, "chunk_size")
    ks = check_topk(topk)
    if radius is not None:
        if not binary:
            raise ValueError("radius: only used with a BinaryIndex (pass radius=None)")
        radius = check_int(radius, "radius", minimum=0)
    if pr_curve and not binary:
        raise ValueError("pr_curve: only implemented for a BinaryIndex here")

    dl_sorted, sid = _labels_by_id(index, database_ids, database_labels)
    ql, dl, multi = prepare_labels(query_labels, dl_sorted, nq, sid.size)

    self_ids: np.ndarray | None = None
    if exclude_self:
        if query_ids is None:
            raise ValueError("exclude_self=True needs query_ids (the id of each query)")
        self_ids = to_numpy(query_ids, "query_ids").astype(np.int64)
        if self_ids.shape != (nq,):
            raise ValueError(f"query_ids: expected {nq} ids, got shape {self_ids.shape}")
        if not np.isin(self_ids, sid).all():
            raise ValueError("query_ids: every query id must be in the index")
    elif query_ids is not None:
        raise ValueError("query_ids is only used with exclude_self=True")

    n = ntotal - int(exclude_self)
    k_rank = n if k is None else min(check_int(k, "k"), n)
    k_search = k_rank + int(exclude_self)
    ks_eff = {t: min(t, k_rank) for t in ks}
    nbits = index.nbits if binary else None
    class_counts = None if multi else np.bincount(dl, minlength=int(ql.max(initial=0)) + 1)
    use_range = binary and radius is not None and index.spec.range_search

    n_curve = (nbits + 1) if (pr_curve and binary) else 0
    n_returned = 0

    def rank_chunk(start: int, stop: int) -> Chunk:
        nonlocal n_returned
        D, ids = index.search(q[start:stop], k_search)
        sids = None if self_ids is None else self_ids[start:stop]
        if sids is not None:
            D, ids = _drop_ids(D, ids, sids, k_rank)
        found = ids >= 0
        n_returned += int(found.sum())
        pos = _positions(sid, ids, found)
        qc = ql[start:stop]
        if multi:
            full = relevance(qc, dl, True)
            rel = np.take_along_axis(full, pos, axis=1) & found
            n_rel = full.sum(axis=1).astype(np.int64)
        else:
            rel = dl[pos] == qc[:, None]
            if not found.all():
                rel &= found
            n_rel = class_counts[qc]
        if sids is not None:
            n_rel -= _self_relevant(qc, dl, sid, sids, multi)
        hits = Hits(rel)
        radius_pr = None
        if binary and radius is not None:
            if use_range:
                radius_pr = _range_precision_recall(index, q[start:stop], radius, qc, dl, sid,
                                                    multi, n_rel, sids)
            else:
                radius_pr = hits.precision_recall((found & (D <= radius)).sum(axis=1), n_rel)
        return Chunk(hits, n_rel, radius_pr,
                      _counts_within(D, found, nbits) if n_curve else None)

    acc = PerQuery(nq, ks_eff, radius if binary else None, n_curve, count_retrieved=True)
    acc.run(rank_chunk, chunk_size, f"index metrics ({index.kind})", progress)
    out = acc.report({"radius": list(range(nbits + 1))} if n_curve else None)
    out.update(
        n_queries=nq,
        n_database=ntotal,
        n_ranked=k_rank,
        n_returned=n_returned / nq,
        n_queries_without_relevant=acc.n_without_relevant,
        index_kind=index.kind,
        kind="binary" if binary else "float",
        nbits=nbits,
    )
    return out


def _positions(sid: np.ndarray, ids: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Row of each returned id in the sorted id array ``sid`` (0 where nothing was returned)."""
    if sid[-1] - sid[0] + 1 == sid.size:  # contiguous ids (e.g. positions in a split)
        pos = ids - sid[0]
        if not found.all():
            pos = np.where(found, pos, 0)
        return pos
    return np.searchsorted(sid, np.where(found, ids, sid[0]))


def _counts_within(D: np.ndarray, found: np.ndarray, nbits: int) -> np.ndarray:
    """``[nq, nbits + 1]``: returned items at distance <= r for every radius r."""
    c = D.shape[0]
    d = np.where(found, D, nbits + 1).astype(np.int64)
    key = d + (nbits + 2) * np.arange(c, dtype=np.int64)[:, None]
    hist = np.bincount(key.ravel(), minlength=c * (nbits + 2)).reshape(c, nbits + 2)
    return np.cumsum(hist[:, : nbits + 1], axis=1)


def _drop_ids(
    D: np.ndarray, ids: np.ndarray, drop: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's ``drop`` id, keeping order; rows end up ``k`` wide."""
    hit = ids == drop[:, None]
    # rows without the id lose their last entry instead
    none = ~hit.any(axis=1)
    hit[none, -1] = True
    keep = ~hit
    return D[keep].reshape(D.shape[0], -1)[:, :k], ids[keep].reshape(ids.shape[0], -1)[:, :k]


def _self_relevant(
    qc: np.ndarray, dl: np.ndarray, sid: np.ndarray, self_ids: np.ndarray, multi: bool
) -> np.ndarray:
    """1 where the query's own database entry counts as relevant to it (then it is excluded)."""
    own = dl[np.searchsorted(sid, self_ids)]
    if multi:
        return ((own * qc).sum(axis=1) > 0).astype(np.int64)
    return (own == qc).astype(np.int64)


def _range_precision_recall(
    index: BinaryIndex,
    q: np.ndarray,
    radius: int,
    qc: np.ndarray,
    dl: np.ndarray,
    sid: np.ndarray,
    multi: bool,
    n_rel: np.ndarray,
    self_ids: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    res = index.range_search(q, radius)
    prec, rec = np.zeros(len(res)), np.zeros(len(res))
    for i, (_, rid) in enumerate(res):
        if self_ids is not None:
            rid = rid[rid != self_ids[i]]
        if rid.size == 0:
            continue
        lab = dl[np.searchsorted(sid, rid)]
        if multi:
            nhit = int(((lab @ qc[i]) > 0).sum())
        else:
            nhit = int((lab == qc[i]).sum())
        prec[i] = nhit / rid.size
        rec[i] = nhit / n_rel[i] if n_rel[i] else 0.0
    return prec, rec
