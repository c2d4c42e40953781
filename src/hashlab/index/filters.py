"""Conditioned search: metadata filters executed inside FAISS, and location-aware re-ranking.

Items may carry metadata ``{"lat", "lon", "tags": [...], "time": ISO-8601}``.
:class:`MetadataTable` holds it column-wise and turns an :class:`ItemFilter` (near a point,
having all of some tags, within a time window) into the ids that match. :func:`filtered_query`
then searches only those ids, and the filter runs *inside* the search, never after it (a
post-filtered top-k would come back short):

* ``flat`` indexes (binary and float) search through FAISS's ``IDMap2`` with
  ``faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids))``, so FAISS scores only selected
  entries;
* every other kind (hash tables, HNSW, IVF, ...: FAISS 1.15 refuses a selector on them, or
  would return fewer than k results) is answered by the same selector search on an exhaustive
  ``flat`` copy of its entries: the caller's ``scan`` index, else ``index.flat_copy()``.

Either way a filtered answer is exact: equal to ranking the selected entries by (distance, id)
(binary: Hamming distance ascending; float: similarity descending), ties at the k-th place
completed by a range search at that score.

:func:`geo_rerank` re-ranks candidates by ``visual distance + lambda * km``, where the visual
distance is the Hamming distance (binary) or ``1 - cosine`` (float) and ``km`` the haversine
distance to the ``near`` point. The candidates are the filtered top ``RERANK_FACTOR * k`` by
visual distance (or every hit of a range search).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import faiss
import numpy as np

from hashlab.index.binary import BinaryIndex
from hashlab.index.floats import FloatIndex
from hashlab.index.idmap import check_result_size, sort_rows, split_range
from hashlab.index.query import QueryResult, run_query
from hashlab.validation import check_int

__all__ = [
    "EARTH_RADIUS_KM", "RERANK_FACTOR", "SELECTOR_KINDS", "ConditionedResult", "ItemFilter",
    "MetadataTable", "Near", "conditioned_search", "filtered_query", "geo_rerank",
    "haversine_km", "parse_time", "takes_selector",
]

#: mean Earth radius (IUGG), for the haversine distance
EARTH_RADIUS_KM = 6371.0088
#: re-ranking candidates: the filtered top ``RERANK_FACTOR * k`` by visual distance
RERANK_FACTOR = 10
#: index kinds whose FAISS search takes an ID selector (``SearchParameters(sel=...)``) and
#: still returns the exact top-k of the selected entries
SELECTOR_KINDS = {"binary": frozenset({"flat"}), "float": frozenset({"flat"})}


def haversine_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (numpy broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def parse_time(value: Any, name: str) -> datetime:
    """An ISO-8601 string as an aware datetime (a time without a zone is read as UTC)."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: expected an ISO-8601 string, got {value!r}")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an ISO-8601 date or time: {value!r}") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t


def _real(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{name}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Near:
    """Within ``km`` kilometres (great-circle) of (``lat``, ``lon``) in degrees."""

    lat: float
    lon: float
    km: float

    @classmethod
    def from_dict(cls, d: Any, name: str = "near") -> Near:
        if not isinstance(d, Mapping) or set(d) != {"lat", "lon", "km"}:
            raise ValueError(f"{name}: expected {{\"lat\", \"lon\", \"km\"}}, got {d!r}")
        return cls(_real(d["lat"], f"{name}.lat", -90, 90),
                   _real(d["lon"], f"{name}.lon", -180, 180),
                   _real(d["km"], f"{name}.km", 0, math.inf))


@dataclass(frozen=True)
class ItemFilter:
    """Items near a point, having every tag of ``tags``, with a time in [``start``, ``end``]
    (both inclusive, either open when None). A condition an item has no metadata for excludes
    it; an empty filter matches every item."""

    near: Near | None = None
    tags: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    timed: bool = False  #: a time window was given (even one open at both ends)

    @classmethod
    def from_dict(cls, d: Any, name: str = "filters") -> ItemFilter:
        """Parse ``{"near": {...}, "tags": [...], "time": {"start", "end"}}`` (each optional);
        ValueError naming the bad field."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError(f"{name}: expected an object, got {d!r}")
        unknown = set(d) - {"near", "tags", "time"}
        if unknown:
            raise ValueError(f"{name}: unknown key(s) {sorted(unknown)}; allowed: near, tags, "
                             "time")
        near = None if d.get("near") is None else Near.from_dict(d["near"], f"{name}.near")
        tags = d.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{name}.tags: expected a list of strings, got {tags!r}")
        window, start, end = d.get("time"), None, None
        if window is not None:
            if not isinstance(window, Mapping) or not set(window) <= {"start", "end"}:
                raise ValueError(f"{name}.time: expected {{\"start\", \"end\"}}, got {window!r}")
            if window.get("start") is not None:
                start = parse_time(window["start"], f"{name}.time.start")
            if window.get("end") is not None:
                end = parse_time(window["end"], f"{name}.time.end")
        return cls(near, tuple(dict.fromkeys(tags)), start, end, window is not None)

    @property
    def empty(self) -> bool:
        return self.near is None and not self.tags and not self.timed


class MetadataTable:
    """The metadata of a set of items, column-wise, for filtering.

    ``metadata[i]`` belongs to ``ids[i]`` (None: no metadata). Reads ``lat`` / ``lon``
    (degrees; both or neither), ``tags`` (strings) and ``time`` (ISO-8601); other keys are
    ignored. Malformed values raise ValueError naming the id.
    """

    def __init__(self, ids: Sequence[int] | np.ndarray,
                 metadata: Iterable[Mapping[str, Any] | None]) -> None:
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = self.ids.size
        self.lat = np.full(n, np.nan)
        self.lon = np.full(n, np.nan)
        self.time = np.full(n, np.nan)  # POSIX seconds
        tagged: dict[str, list[int]] = {}
        count = 0
        for row, meta in enumerate(metadata):
            count += 1
            if not meta:
                continue
            what = f"metadata of item {int(self.ids[row])}"
            if meta.get("lat") is not None or meta.get("lon") is not None:
                self.lat[row] = _real(meta.get("lat"), f"{what}: lat", -90, 90)
                self.lon[row] = _real(meta.get("lon"), f"{what}: lon", -180, 180)
            if meta.get("time") is not None:
                self.time[row] = parse_time(meta["time"], f"{what}: time").timestamp()
            tags = meta.get("tags") or []
            if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
                raise ValueError(f"{what}: tags must be a list of strings, got {tags!r}")
            for tag in set(tags):
                tagged.setdefault(tag, []).append(row)
        if count != n:
            raise ValueError(f"got metadata for {count} items but {n} ids")
        self._tags = {tag: np.asarray(rows, dtype=np.int64) for tag, rows in tagged.items()}

    def __len__(self) -> int:
        return int(self.ids.size)

    def mask(self, flt: ItemFilter) -> np.ndarray:
        """Per item: whether it matches ``flt``."""
        keep = np.ones(len(self), dtype=bool)
        if flt.near is not None:
            located = ~np.isnan(self.lat)
            km = np.full(len(self), np.inf)
            km[located] = haversine_km(flt.near.lat, flt.near.lon, self.lat[located],
                                       self.lon[located])
            keep &= km <= flt.near.km
        for tag in flt.tags:
            has = np.zeros(len(self), dtype=bool)
            has[self._tags.get(tag, np.empty(0, np.int64))] = True
            keep &= has
        if flt.timed:
            keep &= ~np.isnan(self.time)
            if flt.start is not None:
                keep &= self.time >= flt.start.timestamp()
            if flt.end is not None:
                keep &= self.time <= flt.end.timestamp()
        return keep

    def match(self, flt: ItemFilter) -> np.ndarray:
        """The ids of the items matching ``flt``, sorted."""
        return np.sort(self.ids[self.mask(flt)])

    def km_to(self, ids: np.ndarray, near: Near) -> np.ndarray:
        """Haversine km from ``near`` to each of ``ids`` (inf for an item without a location;
        KeyError for an id not in the table)."""
        order = np.argsort(self.ids, kind="stable")
        pos = np.searchsorted(self.ids, ids, sorter=order)
        pos = order[np.clip(pos, 0, max(len(order) - 1, 0))]
        if ids.size and (len(self) == 0 or np.any(self.ids[pos] != ids)):
            raise KeyError("ids not in the metadata table")
        km = haversine_km(near.lat, near.lon, self.lat[pos], self.lon[pos])
        return np.where(np.isnan(km), np.inf, km)


# ---------------------------------------------------------------------------------------------
# search restricted to selected ids
# ---------------------------------------------------------------------------------------------

def takes_selector(index: BinaryIndex | FloatIndex) -> bool:
    """Whether FAISS searches ``index`` exactly with an ID selector (see ``SELECTOR_KINDS``)."""
    family = "binary" if isinstance(index, BinaryIndex) else "float"
    return index.kind in SELECTOR_KINDS[family]


class _Selection:
    """``faiss.SearchParameters`` selecting ``ids`` (kept alive together with the selector)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.selector = faiss.IDSelectorBatch(self.ids)
        self.params = faiss.SearchParameters(sel=self.selector)


def _selected_topk(target: BinaryIndex | FloatIndex, q: np.ndarray, k: int,
                   sel: _Selection) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``q`` among the selected entries of a selector-capable ``target``;
    ``k`` is at most the number of selected entries."""
    binary = isinstance(target, BinaryIndex)
    params = sel.params
    kk = k + 1 if k < sel.ids.size else k  # one more reveals a tie at the k-th place
    if target.spec.before_search is not None:
        target.spec.before_search(target._base, kk)
    S, ids = target.faiss_index.search(q, kk, params=params)
    ids = ids.astype(np.int64, copy=False)
    S = S.astype(np.int32 if binary else np.float32, copy=False)
    S[ids < 0] = -1 if binary else -np.inf
    S, ids = sort_rows(S, ids, descending=not binary)
    if kk == k:
        return S, ids
    last, nxt = S[:, k - 1], S[:, k]
    tied = np.nonzero((ids[:, k] >= 0) & ((nxt == last) if binary else (nxt >= last)))[0]
    S, ids = np.ascontiguousarray(S[:, :k]), np.ascontiguousarray(ids[:, :k])
    for r in tied:
        t = S[r, k - 1]
        if binary:  # FAISS keeps distances strictly below its radius
            lims, rs, rid = target.faiss_index.range_search(q[r : r + 1], int(t) + 1,
                                                            params=params)
        else:  # slack for rounding, as FloatIndex does
            lims, rs, rid = target.faiss_index.range_search(
                q[r : r + 1], float(t) - 1e-6 * max(1.0, abs(float(t))), params=params)
        ((s2, i2),) = split_range(lims, rs.astype(S.dtype), rid, descending=not binary)
        if s2.size >= k:
            S[r], ids[r] = s2[:k], i2[:k]
    return S, ids


def filtered_query(
    index: BinaryIndex | FloatIndex,
    queries: Any,
    ids: Any | None,
    *,
    k: int | None = None,
    radius: int | None = None,
    exact: bool = False,
    scan: Any = None,
) -> QueryResult:
    """Search ``queries`` among the entries of ``index`` whose id is in ``ids``.

    ``ids=None`` searches everything (:func:`~hashlab.index.query.run_query`, with its
    ``exact`` semantics). Otherwise the answer is always exact (see the module docstring):
    ``index`` itself when its kind takes an ID selector, else ``scan`` (a ``flat`` index of the
    same entries and ids, e.g. one the caller keeps up to date, or a function returning it,
    called only when needed) or ``index.flat_copy()``.
    ``radius`` (binary only): every selected code within that Hamming distance. Ids not in the
    index are ignored; no selected entry gives empty hits.
    """
    if ids is None:
        return run_query(index, queries, k=k, radius=radius, exact=exact)
    if (k is None) == (radius is None):
        raise ValueError("give exactly one of k (top-k search) and radius (range search)")
    binary = isinstance(index, BinaryIndex)
    if radius is not None and not binary:
        raise ValueError("radius: a Hamming radius needs a BinaryIndex (binary codes)")
    target = index
    if not takes_selector(index):
        scan = scan() if callable(scan) else scan
        if scan is None:
            try:
                scan = index.flat_copy()
            except NotImplementedError as exc:
                raise ValueError(f"cannot filter this search: {exc}") from None
        if not takes_selector(scan) or type(scan) is not type(index):
            raise ValueError("scan: expected a flat index of the same family")
        target = scan
    q = target._prepare(queries, "queries")
    wanted = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
    sel = _Selection(wanted[np.isin(wanted, target.ids())])
    nq, nsel = q.shape[0], sel.ids.size
    how = "id selector" if target is index else "id selector on an exhaustive flat copy"
    if radius is not None:
        radius = min(check_int(radius, "radius", 0), index.nbits)
        if nsel == 0:
            hits = [(np.empty(0, np.int32), np.empty(0, np.int64)) for _ in range(nq)]
        else:
            lims, D, found = target.faiss_index.range_search(q, radius + 1, params=sel.params)
            hits = split_range(lims, D.astype(np.int32, copy=False), found, descending=False)
        keff = None
    else:
        keff = min(check_int(k, "k"), nsel)
        check_result_size(nq, keff)
        if keff == 0:
            S = np.empty((nq, 0), np.int32 if binary else np.float32)
            found = np.empty((nq, 0), np.int64)
        else:
            S, found = _selected_topk(target, q, keff, sel)
        counts = np.count_nonzero(found >= 0, axis=1).tolist()
        hits = [(S[r, :c], found[r, :c]) for r, c in enumerate(counts)]
    return QueryResult(hits=hits, exact=True, warnings=[], query_exact=np.ones(nq, bool),
                       k=keff, radius=radius, method=f"{how} ({nsel} selected)")


def geo_rerank(scores: np.ndarray, ids: np.ndarray, km: np.ndarray, lam: float, *,
               binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """Candidates re-ranked by ``visual + lam * km``: returns ``(order, combined score)``.

    ``scores``: Hamming distances (binary, visual = distance) or cosine similarities (float,
    visual = ``1 - cosine``); ``km``: each candidate's distance to the query location. Sorted
    by (combined score ascending, id ascending); ``order`` indexes the candidates.
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) \
            or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lambda: expected a finite number >= 0, got {lam!r}")
    s = np.asarray(scores, dtype=np.float64)
    visual = s if binary else 1.0 - s
    combined = visual + float(lam) * np.asarray(km, dtype=np.float64)
    order = np.lexsort((np.asarray(ids), combined))
    return order, combined[order]


@dataclass
class ConditionedResult:
    """What :func:`conditioned_search` found for one query: ``ids`` in final order with their
    visual ``scores`` (Hamming distance / cosine) and ``combined`` scores (the re-ranked score,
    else the visual one); ``result`` is the underlying search (exactness, warnings, method);
    ``selected`` how many items matched the filter (None without one)."""

    ids: np.ndarray
    scores: np.ndarray
    combined: np.ndarray
    result: QueryResult
    selected: int | None


def conditioned_search(
    index: BinaryIndex | FloatIndex, query: Any, table: MetadataTable | None,
    flt: ItemFilter, *, k: int | None = None, radius: int | None = None, exact: bool = False,
    rerank: float | None = None, scan: Any = None,
) -> ConditionedResult:
    """One query searched among the items of ``table`` matching ``flt``, optionally re-ranked.

    With ``rerank`` (lambda, needs ``flt.near``) the candidates are the filtered top
    ``RERANK_FACTOR * k`` by visual distance (every hit of a ``radius`` search), ordered by
    :func:`geo_rerank`, and the first ``k`` are kept. ``scan``: see :func:`filtered_query`.
    """
    if rerank is not None and flt.near is None:
        raise ValueError("rerank needs a near filter: the location whose distance is added")
    if not flt.empty and table is None:
        raise ValueError("a filter needs the metadata table")
    ids = None if flt.empty else table.match(flt)  # type: ignore[union-attr]
    asked = k * RERANK_FACTOR if rerank is not None and k is not None else k
    res = filtered_query(index, np.asarray(query)[None], ids, k=asked, radius=radius,
                         exact=exact, scan=scan)
    scores, found = res.hits[0]
    combined: np.ndarray = scores
    if rerank is not None:
        km = table.km_to(found, flt.near)  # type: ignore[union-attr, arg-type]
        order, combined = geo_rerank(scores, found, km, rerank,
                                     binary=isinstance(index, BinaryIndex))
        order, combined = order[:k], combined[:k]
        scores, found = scores[order], found[order]
    return ConditionedResult(found, scores, combined, res,
                             None if ids is None else int(ids.size))
