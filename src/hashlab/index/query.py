"""One search that is exact, or says loudly that it may not be: what ``hashlab search`` runs.

:func:`run_query` searches a :class:`~hashlab.index.BinaryIndex` or
:class:`~hashlab.index.FloatIndex` for the top ``k`` of each query, or (binary) every code within
a Hamming ``radius``, and returns a :class:`QueryResult`: the hits of each query plus ``exact``
(every query's answer is guaranteed to equal an exhaustive ranking) and ``warnings`` (why not,
and how to get the exact answer).

* ``exact=False`` searches the index as built. A range search is exact when ``radius <=
  index.exact_radius``; a top-k row is exact when its k-th distance is within it (hash tables,
  full-probe IVF) or the kind is exact (``flat``). Anything else is flagged.
* ``exact=True`` makes the answer exact whatever the kind, by the cheapest of: raising the
  kind's search-time parameter for this call (the spec's ``exact_params``: ``hash`` ``nflip =
  radius``, ``multihash`` the smallest ``nflip`` with ``nhash * (nflip + 1) - 1 >= radius``,
  ``ivf`` ``nprobe = nlist``), or an exhaustive scan of a ``flat`` copy of the stored codes
  (:meth:`~hashlab.index.idmap.IdMapIndex.flat_copy`; ``multihash``, ``hnsw``, ``ivf``). A kind
  that allows neither (``ivfpq``: compressed vectors) raises ValueError.

Memory: ``k`` is clamped to the index size, queries are searched in chunks of about
``idmap.CHUNK_BYTES`` of results, and a result over ``max_result_bytes`` (default
``idmap.MAX_RESULT_BYTES``, 4 GiB) is refused (:class:`~hashlab.index.idmap.ResultTooLargeError`):
before searching for top-k, as soon as it is passed for a range search. :meth:`Query.chunks`
yields the results a chunk at a time, for writers that stream them instead of holding them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hashlab.index import idmap
from hashlab.index.binary import BinaryIndex
from hashlab.index.codes import to_numpy
from hashlab.index.floats import FloatIndex
from hashlab.index.idmap import check_result_size, chunk_rows, range_limit_error
from hashlab.validation import check_int

__all__ = ["Query", "QueryResult", "run_query"]

Hits = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class QueryResult:
    """What :func:`run_query` found.

    ``hits[i]`` is ``(scores, ids)`` of query ``i`` (Hamming distances int32 or similarities
    float32, ids int64), sorted by (score, id), without missing entries. ``exact``: every
    query's hits are guaranteed to equal an exhaustive ranking (``query_exact`` per query);
    ``warnings`` say why not and how to get an exact answer. ``k`` is the effective k
    (``min(k, ntotal)``), ``method`` how the index was searched.
    """

    hits: Hits
    exact: bool
    warnings: list[str]
    query_exact: np.ndarray
    k: int | None
    radius: int | None
    method: str

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields besides the hits: ``exact``, ``warnings``, ``method``,
        ``inexact_queries`` (how many queries are not guaranteed exact) and ``k_effective``
        (``min(k, ntotal)``; None for a range search)."""
        return {"exact": self.exact, "warnings": list(self.warnings), "method": self.method,
                "inexact_queries": int((~self.query_exact).sum()), "k_effective": self.k}


@contextmanager
def _params(index: Any, params: dict[str, Any]) -> Iterator[None]:
    """Search-time ``params`` set on ``index`` for the duration of the block."""
    old = {name: index.params[name] for name in params}
    index.set_params(**params)
    try:
        yield
    finally:
        index.set_params(**old)


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items() if v is not None and k != "metric")


@dataclass
class Query:
    """A checked search of ``index``: ``k`` nearest or (binary) within ``radius``.

    Construction checks the arguments and picks how to search (see the module docstring);
    :meth:`chunks` runs it over chunks of queries and :meth:`result` collects everything.
    """

    index: BinaryIndex | FloatIndex
    k: int | None = None
    radius: int | None = None
    exact: bool = False
    method: str = field(init=False, default="index")
    _widened: int = field(init=False, default=0, repr=False)
    _scanned: int = field(init=False, default=0, repr=False)
    _target: Any = field(init=False, default=None, repr=False)
    _params: dict[str, Any] = field(init=False, default_factory=dict, repr=False)
    _rescan: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        index = self.index
        if not isinstance(index, (BinaryIndex, FloatIndex)):
            raise TypeError(f"index: expected a BinaryIndex or FloatIndex, got "
                            f"{type(index).__name__}")
        if (self.k is None) == (self.radius is None):
            raise ValueError("give exactly one of k (top-k search) and radius (range search)")
        self.binary = isinstance(index, BinaryIndex)
        self.ntotal = index.ntotal
        self._target = index
        if self.radius is not None:
            if not self.binary:
                raise ValueError("radius: a Hamming radius needs a BinaryIndex (binary codes)")
            self.radius = min(check_int(self.radius, "radius", 0), index.nbits)
            self._plan_range()
            return
        self._k_asked = check_int(self.k, "k")  # what the index is asked (it clamps it)
        self.k = min(self._k_asked, self.ntotal)
        spec = index.spec
        # top-k rows the index alone may answer exactly (then checked row by row)
        self._verifiable = self.ntotal == 0 or (
            index.exact_radius >= 0 if self.binary else spec.exact)
        possible = self._verifiable or spec.storage is not None or (
            self.binary and spec.exact_params is not None)
        if self.exact and not possible:
            raise ValueError(
                f"exact search is impossible on {self._describe()}: it keeps no exact copy of "
                f"its {'codes' if self.binary else 'vectors'}; search a flat index instead")

    # -- planning ----------------------------------------------------------------------------

    def _describe(self) -> str:
        shown = _shown(self.index.params)
        return f"this {self.index.kind!r} index" + (f" ({shown})" if shown else "")

    def _exact_params(self, radius: int) -> dict[str, Any] | None:
        """Runtime params making ``radius`` exact, or None when scanning is cheaper / needed."""
        spec, index = self.index.spec, self.index
        if spec.exact_params is None:
            return None
        params = spec.exact_params(index.nbits, index.params, radius)
        merged = {**index.params, **params}
        if spec.radius(index.nbits, merged) < radius:  # a plug-in's params that fall short
            return None
        if spec.storage is not None and spec.probes is not None \
                and spec.probes(merged) > self.ntotal:
            return None  # probing the hash tables costs more than scanning every code
        return params

    def _scan(self) -> Any:
        """The flat copy for an exhaustive scan (built once)."""
        if self._rescan is None:
            try:
                self._rescan = self.index.flat_copy()
            except NotImplementedError as exc:
                raise ValueError(f"exact search is impossible here: {exc}") from None
        return self._rescan

    def _plan_range(self) -> None:
        index, radius = self.index, self.radius
        exact_here = index.spec.range_search and radius <= index.exact_radius
        if exact_here or self.ntotal == 0:
            return
        if not self.exact:
            if not index.spec.range_search:
                raise ValueError(
                    f"{self._describe()} has no range search: use --exact (exact=True) to scan "
                    f"every stored code, or an index of a kind with range search")
            return
        params = self._exact_params(radius) if index.spec.range_search else None
        if params is not None:
            self._params = params
            self.method = f"index with {_shown(params)}"
        else:
            self._target = self._scan()
            self.method = "exhaustive scan"

    # -- running -----------------------------------------------------------------------------

    def _rows_exact(self, target: Any, D: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Per row: guaranteed equal to an exhaustive top-k."""
        if D.shape[1] == 0:  # empty index
            return np.ones(D.shape[0], bool)
        if not self.binary:
            return np.full(D.shape[0], bool(target.exact))
        return (ids[:, -1] >= 0) & (D[:, -1] <= target.exact_radius)

    def _topk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index, k = self.index, self._k_asked
        if self.exact and not self._verifiable:  # the index alone can never be trusted
            if not self.binary or index.spec.exact_params is None:
                D, ids = self._scan().search(q, k)
                self._scanned += q.shape[0]
                return D, ids, np.ones(D.shape[0], bool)
            D = np.full((q.shape[0], self.k), -1, np.int32)  # nothing found yet
            ids = np.full((q.shape[0], self.k), -1, np.int64)
            ok = np.zeros(q.shape[0], bool)
        else:
            D, ids = index.search(q, k)
            ok = self._rows_exact(index, D, ids)
            if not self.exact or ok.all():
                return D, ids, ok
        if self.binary:
            self._widen(q, D, ids, ok)
        rows = np.nonzero(~ok)[0]
        if rows.size:
            D[rows], ids[rows] = self._scan().search(q[rows], k)
            ok[rows] = True
            self._scanned += rows.size
        return D, ids, ok

    def _widen(self, q: np.ndarray, D: np.ndarray, ids: np.ndarray, ok: np.ndarray) -> None:
        """Search the inexact rows again with search params exact up to a larger radius.

        A row's true k-th distance is at most the k-th distance found, so params exact up to
        that radius make it exact; a row that found fewer than k codes doubles its radius
        instead. Rows left over (params costlier than a scan, or none) stay ``ok = False``.
        """
        index, nbits = self.index, self.index.nbits
        done = np.full(q.shape[0], max(index.exact_radius, 0))  # radius searched exactly
        rows = np.nonzero(~ok)[0]
        while rows.size:
            need = np.where(ids[rows, -1] >= 0, D[rows, -1], 2 * done[rows] + 1)
            need = np.clip(need, done[rows] + 1, nbits)  # each round widens every row
            for radius in np.unique(need):
                sel = rows[need == radius]
                params = self._exact_params(int(radius))
                if params is None:
                    done[sel] = nbits  # left to the scan
                    continue
                with _params(index, params):
                    D[sel], ids[sel] = index.search(q[sel], self._k_asked)
                    ok[sel] = self._rows_exact(index, D[sel], ids[sel])
                    done[sel] = index.exact_radius
                self._widened += sel.size
            rows = rows[~ok[rows] & (done[rows] < nbits)]

    def chunks(self, queries: Any, max_result_bytes: int | None = None
               ) -> Iterator[tuple[int, Hits, np.ndarray]]:
        """Yield ``(first query number, hits, per-query exact flags)`` chunk by chunk.

        ``max_result_bytes`` (default ``idmap.MAX_RESULT_BYTES``) bounds what all chunks hold
        together; a streaming writer may pass a larger value.
        """
        self.index._prepare(queries, "queries")  # refuse bad queries before searching any
        q = to_numpy(queries, "queries")
        nq = q.shape[0]
        limit = idmap.MAX_RESULT_BYTES if max_result_bytes is None else max_result_bytes
        if self.k is not None:
            check_result_size(nq, self.k, limit)
            step = chunk_rows(max(self.k, 1))
        else:
            step = chunk_rows(self.ntotal)
        total = 0
        for start in range(0, nq, step):
            qc = q[start : start + step]
            if self.k is not None:
                D, ids, ok = self._topk(qc)
                found = np.count_nonzero(ids >= 0, axis=1).tolist()  # missing entries are last
                hits = [(D[r, :n], ids[r, :n]) for r, n in enumerate(found)]
            else:
                with _params(self.index, self._params):
                    hits = self._target.range_search(qc, self.radius)
                ok = np.full(len(hits), self._range_exact())
                total += sum(j.size for _, j in hits)
                if total * idmap.RESULT_ENTRY_BYTES > limit:
                    raise range_limit_error(total, start + len(hits), nq, limit)
            yield start, hits, ok

    def _range_exact(self) -> bool:
        return (self._target is not self.index or bool(self._params)
                or self.radius <= self.index.exact_radius or self.ntotal == 0)

    def warnings(self, n_queries: int, n_inexact: int) -> list[str]:
        """Why the answer may be incomplete (empty when it is exact)."""
        if n_inexact == 0:
            return []
        index, fix = self.index, "use --exact (exact=True)"
        hint = ""
        if self.radius is not None and index.spec.exact_params is not None:
            params = index.spec.exact_params(index.nbits, index.params, self.radius)
            hint = f", or set {_shown(params)}"
        if self.radius is not None:
            if index.exact_radius < 0:
                return [f"a range search on {self._describe()} is approximate at any radius: "
                        f"results may miss codes; {fix} to get every code{hint}, or use a "
                        f"flat index"]
            return [f"radius {self.radius} exceeds the exact radius {index.exact_radius} of "
                    f"{self._describe()}: results may miss codes; {fix} to get every code"
                    f"{hint}, or use a flat index"]
        which = "all" if n_inexact == n_queries else f"{n_inexact} of"
        why = ("its k-th result lies beyond the index's exact radius or it found fewer than k"
               if self.binary and index.exact_radius >= 0 else "the index is approximate")
        nearer = "nearer codes" if self.binary else "more similar vectors"
        return [f"top-{self.k} search on {self._describe()}: {which} {n_queries} queries may "
                f"miss {nearer} ({why}); {fix} for an exact answer{hint}, or use a flat index"]

    def result(self, queries: Any, max_result_bytes: int | None = None) -> QueryResult:
        """Run over every query and collect a :class:`QueryResult`."""
        hits: Hits = []
        flags: list[np.ndarray] = []
        for _, h, ok in self.chunks(queries, max_result_bytes):
            hits.extend(h)
            flags.append(ok)
        query_exact = np.concatenate(flags) if flags else np.ones(0, bool)
        if self.k is not None and (self._widened or self._scanned):
            parts = [f"{n} queries {how}" for n, how in (
                (self._widened, "searched again with search parameters exact up to their k-th "
                                "distance"), (self._scanned, "by exhaustive scan")) if n]
            self.method = "index; " + "; ".join(parts)
        return QueryResult(
            hits=hits, exact=bool(query_exact.all()),
            warnings=self.warnings(len(hits), int((~query_exact).sum())),
            query_exact=query_exact, k=self.k, radius=self.radius, method=self.method)


def run_query(
    index: BinaryIndex | FloatIndex,
    queries: Any,
    *,
    k: int | None = None,
    radius: int | None = None,
    exact: bool = False,
    max_result_bytes: int | None = None,
) -> QueryResult:
    """Search ``queries`` in ``index``: top ``k``, or every code within Hamming ``radius``.

    Give exactly one of ``k`` and ``radius``. ``exact=True`` guarantees the exhaustive answer
    (raising search parameters or scanning the stored codes; ValueError where the kind keeps no
    exact copy); otherwise the result says whether it is exact (``QueryResult.exact``,
    ``warnings``). See the module docstring for memory limits.
    """
    query = Query(index, k=k, radius=radius, exact=exact)
    return query.result(queries, max_result_bytes)
