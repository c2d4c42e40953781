"""What the FAISS-backed indexes share: user ids through ``IDMap2``, their validation, and the
(score, id) ordering of results. :class:`IdMapIndex` is the common base of
:class:`hashlab.index.BinaryIndex` and :class:`hashlab.index.FloatIndex`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Self

import faiss
import numpy as np

from hashlab.errors import HashlabError
from hashlab.index.codes import to_numpy
from hashlab.index.kinds import FAMILIES, IndexKind, downcast
from hashlab.registry import Registry
from hashlab.validation import check_int

__all__ = [
    "CHUNK_BYTES", "MAX_RESULT_BYTES", "RESULT_ENTRY_BYTES", "IdMapIndex", "ResultTooLargeError",
    "UnknownIdsError",
]

#: The most bytes of results (score + id arrays) one ``search`` / ``range_search`` call returns;
#: a larger top-k request is refused before anything is searched, a range search as soon as its
#: results pass the limit (:class:`ResultTooLargeError`). Read at call time: set
#: ``hashlab.index.idmap.MAX_RESULT_BYTES`` to change it.
MAX_RESULT_BYTES = 4 * 2**30

#: Queries are searched in chunks whose results (and FAISS's working memory for them) take about
#: this many bytes, so temporary memory stays bounded whatever the number of queries.
CHUNK_BYTES = 256 * 2**20

#: Bytes of one result entry: a 4-byte score (int32 distance / float32 similarity) + an int64 id.
RESULT_ENTRY_BYTES = 12


class UnknownIdsError(HashlabError, ValueError):
    """``remove`` was given ids that are not in the index; ``.ids`` lists them."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        super().__init__(f"cannot remove ids that are not in the index: {_fmt_ids(self.ids)}")


class ResultTooLargeError(HashlabError, ValueError):
    """A search would return more results than fit in the memory limit (``MAX_RESULT_BYTES``)."""


def _gib(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes} bytes"


def check_result_size(nq: int, k: int, limit: int | None = None) -> None:
    """Refuse a top-k request whose ``[nq, k]`` result would exceed ``limit`` bytes."""
    limit = MAX_RESULT_BYTES if limit is None else limit
    need = nq * k * RESULT_ENTRY_BYTES
    if need > limit:
        raise ResultTooLargeError(
            f"a top-{k} search of {nq} queries returns {nq} x {k} results ({_gib(need)}), more "
            f"than the limit of {_gib(limit)}: search fewer queries at a time (--limit), ask for "
            f"a smaller k, or stream the results chunk by chunk")


def range_limit_error(nhits: int, done: int, nq: int, limit: int) -> ResultTooLargeError:
    """The error of a range search whose results passed ``limit`` bytes after ``done`` queries."""
    return ResultTooLargeError(
        f"range search stopped: the first {done} of {nq} queries already found {nhits} results "
        f"({_gib(nhits * RESULT_ENTRY_BYTES)}), more than the limit of {_gib(limit)}: use a "
        f"smaller radius, search fewer queries at a time (--limit), or stream the results")


def chunk_rows(entries_per_query: int) -> int:
    """Queries per chunk so that a chunk's results take about ``CHUNK_BYTES`` (at least 1)."""
    return max(1, CHUNK_BYTES // max(1, entries_per_query * RESULT_ENTRY_BYTES))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _as_ids(ids: Any, n: int, name: str = "ids") -> np.ndarray:
    """Validate user ids: 1-D, integer, non-negative, unique, ``n`` of them; return int64."""
    arr = to_numpy(ids, name)
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
    arr = to_numpy(ids, "ids")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids: expected a 1-D array of integer ids, got {arr.dtype} {arr.shape}")
    arr = np.unique(arr.astype(np.int64))
    unknown = arr[~np.isin(arr, existing)]
    if unknown.size:
        raise UnknownIdsError(unknown)
    return arr


def sort_rows(scores: np.ndarray, ids: np.ndarray, descending: bool) -> tuple[np.ndarray, ...]:
    """Sort each row by (score, id) with missing entries (id -1) last."""
    key = -scores if descending else scores
    missing = ids < 0
    order = np.lexsort((ids, key, missing), axis=-1)
    return (np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1))


def _strictly_increasing(ids: np.ndarray) -> bool:
    return bool(ids.size < 2 or (ids[1:] > ids[:-1]).all())


def rows_sorted(D: np.ndarray, ids: np.ndarray) -> bool:
    """True when every row is in (distance ascending, id ascending) order, missing (-1) last."""
    if D.shape[1] < 2:
        return True
    d0, d1, i0, i1 = D[:, :-1], D[:, 1:], ids[:, :-1], ids[:, 1:]
    valid_next = i1 >= 0
    ok = np.where(valid_next, (i0 >= 0) & ((d1 > d0) | ((d1 == d0) & (i1 > i0))), True)
    # once a row has a missing entry, all later entries must be missing
    ok &= ~((i0 < 0) & valid_next)
    return bool(ok.all())


def split_range(lims: np.ndarray, scores: np.ndarray, ids: np.ndarray, descending: bool):
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
# the part BinaryIndex and FloatIndex share
# ---------------------------------------------------------------------------------------------


class IdMapIndex:
    """A FAISS index wrapped in an ``IDMap2`` so results carry the caller's int64 ids.

    What depends on the kind comes from its :class:`~hashlab.index.kinds.IndexKind` spec
    (``self.spec``), looked up in the family's registry. Subclasses set the class attributes
    ``_family`` (``"binary"`` / ``"float"``), ``_items`` (what a row is called in messages),
    ``_kinds`` (the registry), ``_idmap_class`` and ``_family_defaults`` (params every kind of
    the family takes), and implement ``_set_size(size)`` (check ``nbits`` / ``dim``; set ``_d``,
    the FAISS dimension, and ``_size``, given to the spec's resolver), ``_prepare(x, name)``
    (validate and convert vectors / codes) and ``_size_mismatch(d)`` (the message of a wrong
    ``d``). Their ``__init__`` calls ``_set_size`` and :meth:`_setup`.
    """

    _family = ""
    _items = ""
    _family_defaults: Mapping[str, Any] = MappingProxyType({})
    _kinds: Registry[Any]
    _idmap_class: Any
    _index: Any
    _base: Any
    _kind: str
    _spec: IndexKind
    _d: int
    _size: int
    params: dict[str, Any]

    def _prepare(self, x: Any, name: str) -> np.ndarray:
        raise NotImplementedError

    def _set_size(self, size: int) -> None:
        raise NotImplementedError

    def _size_mismatch(self, d: int) -> str:
        raise NotImplementedError

    # -- construction ------------------------------------------------------------------------

    def _setup(self, kind: str, params: dict[str, Any]) -> None:
        """Build a new index of ``kind`` with ``params`` (plus the family's own params)."""
        spec: IndexKind = self._kinds.get(kind, "kind")
        defaults = {**spec.defaults, **self._family_defaults}
        unknown = set(params) - set(defaults)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {sorted(unknown)} for kind {kind!r}; "
                f"accepted: {sorted(defaults) or 'none'}"
            )
        self._spec, self._kind = spec, spec.name
        self.params = self._resolve_params({**defaults, **params})
        built = spec.build(self._d, self.params)
        self._index = self._idmap_class(built)  # keeps ``built``, which owns the index, alive
        self._base = downcast(self._family, built)
        self._apply_runtime()

    @classmethod
    def _from_faiss(cls, idmap: Any, size: int, kind: str, params: dict[str, Any]) -> Self:
        """Wrap a deserialized ``IDMap2`` of ``kind`` (used by :mod:`hashlab.index.store`)."""
        self = cls.__new__(cls)
        self._set_size(size)
        self._attach(idmap, kind, params)
        return self

    def _attach(self, idmap: Any, kind: str, params: dict[str, Any]) -> None:
        spec: IndexKind = self._kinds.get(kind, "kind")
        self._spec, self._kind = spec, spec.name
        self.params = {**self._family_defaults, **params}
        self._owner = idmap  # the proxy that owns the C++ object; keep it alive
        idmap = downcast(self._family, idmap)
        if not isinstance(idmap, self._idmap_class):
            raise ValueError(
                f"expected an {self._idmap_class.__name__}, got {type(idmap).__name__}")
        if idmap.d != self._d:
            raise ValueError(self._size_mismatch(idmap.d))
        base = downcast(self._family, idmap.index)
        spec.check_loaded(base)
        self._index, self._base = idmap, base
        self._apply_runtime()

    def _resolve_params(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._spec.resolve_params(p, self._size)

    def _apply_runtime(self) -> None:
        self._spec.apply_runtime(self._base, self.params)

    def _kinds_that(self, attr: str) -> str:
        """The family's kinds whose spec has ``attr`` set, for messages."""
        return ", ".join(repr(n) for n in self._kinds.names() if getattr(self._kinds.get(n), attr))

    # -- properties --------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def spec(self) -> IndexKind:
        """The :class:`~hashlab.index.kinds.IndexKind` spec of this index's kind."""
        return self._spec

    @property
    def factory(self) -> str:
        """The FAISS factory string of this index (recorded in saved manifests)."""
        return self._spec.factory_string(self.params)

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
        """The underlying FAISS ``IDMap2`` index (for serialization; do not mutate)."""
        return self._index

    def ids(self) -> np.ndarray:
        """The ids currently in the index, in insertion order (int64)."""
        return _idmap_ids(self._index).copy()

    def _ids_increasing(self) -> bool:
        """Whether the ids increase in insertion order (cached; kept up to date by ``add``)."""
        cached = getattr(self, "_increasing", None)
        if cached is None:
            cached = self._increasing = _strictly_increasing(_idmap_ids(self._index))
        return cached

    def flat_copy(self) -> Self:
        """An exhaustive (``flat``) index of the same codes / vectors and ids: an exact scan.

        Reads the stored rows back from FAISS (the spec's ``storage``) a chunk at a time and
        holds one copy of them. NotImplementedError for kinds that keep no exact copy
        (``hash`` buckets, ``ivfpq``'s compressed vectors).
        """
        exhaustive = FAMILIES[self._family].exhaustive
        if self._spec.storage is None:
            raise NotImplementedError(
                f"a {self._kind!r} {self._family} index does not keep its {self._items} in a "
                f"form FAISS can read back, so it cannot be scanned exhaustively; rebuild it "
                f"as a {exhaustive!r} index")
        storage = self._spec.storage(self._base)
        copy = type(self).__new__(type(self))
        copy._set_size(self._size)
        copy._setup(exhaustive, {name: self.params[name] for name in self._family_defaults})
        ids = _idmap_ids(self._index)
        row_bytes = self._d // 8 if self._family == "binary" else 4 * self._d
        step = max(1, CHUNK_BYTES // row_bytes)
        for start in range(0, ids.size, step):
            n = min(step, ids.size - start)
            copy._index.add_with_ids(storage.reconstruct_n(start, n), ids[start : start + n])
        return copy

    def set_params(self, **params: Any) -> None:
        """Change the search-time params of this kind (see the class docstring)."""
        allowed = tuple(self._spec.runtime)
        bad = set(params) - set(allowed)
        if bad:
            raise ValueError(
                f"cannot set {sorted(bad)} on a {self._kind!r} index; settable: {list(allowed)}"
            )
        self.params = self._resolve_params({**self.params, **params})
        self._apply_runtime()

    # -- search (chunked; the subclasses rank and sort) ---------------------------------------

    #: dtype of the score arrays ``search`` returns
    _score_dtype: Any = np.float32

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of prepared queries, ``1 <= k <= ntotal`` (implemented by the subclasses)."""
        raise NotImplementedError

    def _search_chunked(self, queries: Any, k: Any) -> tuple[np.ndarray, np.ndarray]:
        """Top-``min(k, ntotal)`` of each query, searched a chunk of queries at a time.

        ``k`` beyond the index size is clamped to ``ntotal`` (the columns it would add could only
        be missing entries), so memory is allocated by the result, never by ``k``; a result over
        ``MAX_RESULT_BYTES`` is refused before any search. One chunk (the common case) returns
        the arrays of ``_search`` as they are.
        """
        q = self._prepare(queries, "queries")
        k = min(check_int(k, "k"), self.ntotal)
        nq = q.shape[0]
        check_result_size(nq, k)
        if k == 0:  # empty index
            return np.empty((nq, 0), self._score_dtype), np.empty((nq, 0), np.int64)
        step = chunk_rows(k)
        if nq <= step:
            return self._search(q, k)
        scores, ids = np.empty((nq, k), self._score_dtype), np.empty((nq, k), np.int64)
        for start in range(0, nq, step):
            scores[start : start + step], ids[start : start + step] = self._search(
                q[start : start + step], k)
        return scores, ids

    def _range_chunked(
        self, q: np.ndarray, run: Callable[[np.ndarray], tuple[list[Any], int]],
        limited: bool = True,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``run(chunk) -> (per-query results, number of hits)`` over chunks of queries.

        A chunk holds at most ``CHUNK_BYTES`` of results even if every query matched everything
        in the index; ``limited``: once the results pass ``MAX_RESULT_BYTES``,
        :class:`ResultTooLargeError`.
        """
        limit = MAX_RESULT_BYTES if limited else None
        nq = q.shape[0]
        step = chunk_rows(self.ntotal)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        total = 0
        for start in range(0, nq, step):
            res, nhits = run(q[start : start + step])
            total += nhits
            if limit is not None and total * RESULT_ENTRY_BYTES > limit:
                raise range_limit_error(total, min(start + step, nq), nq, limit)
            out.extend(res)
        return out

    def _empty_ranges(self, nq: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.empty(0, self._score_dtype), np.empty(0, np.int64)) for _ in range(nq)]

    # -- data --------------------------------------------------------------------------------

    def train(self, x: Any) -> None:
        """Train an index whose kind needs training (``ivf``, ``ivfpq``); a no-op otherwise."""
        x = self._prepare(x, self._items)
        minimum = self._spec.train_minimum
        if minimum is None:
            return
        if self._index.is_trained:
            raise ValueError(f"this {self._kind} index is already trained")
        need = minimum(self.params)
        if x.shape[0] < need:
            shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
            raise ValueError(
                f"training {self._kind} ({shown}) needs at least {need} {self._items}, "
                f"got {x.shape[0]}"
            )
        self._index.train(x)

    def add(self, x: Any, ids: Any = None) -> None:
        """Add ``x`` with unique int64 ``ids`` (one per row).

        ``ids=None`` numbers the rows from ``max(existing ids) + 1``. An untrained index
        (``ivf``, ``ivfpq``) is first trained on these rows.
        """
        x = self._prepare(x, self._items)
        existing = _idmap_ids(self._index)
        if ids is None:
            start = int(existing.max()) + 1 if existing.size else 0
            ids = np.arange(start, start + x.shape[0], dtype=np.int64)
        ids = _as_ids(ids, x.shape[0])
        _check_new_ids(existing, ids)
        if not self._index.is_trained:
            self.train(x)
        increasing = self._ids_increasing() and _strictly_increasing(ids)
        self._index.add_with_ids(x, ids)
        self._increasing = increasing and (existing.size == 0 or bool(ids[0] > existing[-1]))

    def remove(self, ids: Any) -> int:
        """Remove the given ids; every id must be present. Returns the number removed.

        Only kinds whose spec is ``removable`` (``flat``): ``IDMap2.remove_ids`` assumes the
        wrapped index renumbers its entries after a removal (flat does); an IVF keeps its
        internal ids, so IDMap removal from an IVF corrupts the id map, and FAISS cannot remove
        from hash or HNSW indexes at all.
        """
        if not self._spec.removable:
            raise NotImplementedError(
                f"remove is not supported for a {self._kind!r} {self._family} index (FAISS "
                f"cannot remove ids from it); removal works for kinds "
                f"{self._kinds_that('removable')}; rebuild the index without these ids instead"
            )
        arr = _check_remove_ids(_idmap_ids(self._index), ids)
        if arr.size == 0:
            return 0
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(arr)))
        if not self._ids_increasing():
            self._increasing = None  # removal keeps the order; an unordered rest may be ordered
        return removed
