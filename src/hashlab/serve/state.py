"""What ``hashlab serve`` holds: the run's model, the index, the items' labels, metadata and
images, and the operations on them (encode, search, add, delete).

**The served index** is an :class:`IndexStore`: what a request reads (:meth:`IndexStore.view`,
an :class:`ItemView`: membership, codes, item records, the images of added items, the
conditioned search) and the writes (add, delete). Two implementations: :class:`FaissStore`, an
in-process FAISS index in memory or saved in an index directory (the snapshots below), and
:class:`MilvusStore`, a Milvus collection written by ``hashlab index --backend milvus``
(``--index milvus://...``), which is itself the persistent store: searches and their filters run
in Milvus, adds and deletes go straight to the collection, and an added item's label, metadata
and thumbnail are kept in the collection's ``extra`` field.

**Snapshots (FAISS).** The index and the item tables live in an immutable :class:`Snapshot`.
A search reads the current one; an add or delete works on a copy of the index (clone, change, save),
and only then swaps the new snapshot in, so a failed save changes nothing, on disk or in
memory, and searches never see a half-made change. Writes are serialised by a lock; searches
take a second lock only while FAISS runs (a search may set search-time parameters).

**Items.** Ids ``0..n-1`` of the split the index was built from (the ``train`` split without
``--index``) are the split's images: their label and image come from the split, their metadata
from ``items.json`` or, when absent, :func:`~hashlab.serve.metadata.synthetic_metadata`. Items
added through the API keep their label, code and a PNG thumbnail in ``items.json``. On Milvus,
every item's metadata is the one stored in the collection (filters run there, so no synthetic
metadata is made up), and added items keep their label and thumbnail in the collection.
"""

from __future__ import annotations

import abc
import base64
import functools
import io
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from hashlab.errors import HashlabError
from hashlab.eval.common import read_index_source
from hashlab.index import BinaryIndex, FloatIndex, IndexFileError, load_index, save_index
from hashlab.index.codes import check_packed
from hashlab.index.filters import (
    RERANK_FACTOR,
    ConditionedResult,
    ItemFilter,
    MetadataTable,
    conditioned_search,
    geo_rerank,
    haversine_km,
    takes_selector,
)
from hashlab.index.store import read_extra_file
from hashlab.serve.images import png_bytes, thumbnail_png
from hashlab.serve.limits import ServeLimits
from hashlab.serve.metadata import (
    ITEMS_FILE,
    AddedItem,
    dump_items,
    load_items,
    synthetic_metadata,
)

__all__ = ["ConflictError", "FaissStore", "IndexStore", "ItemRecord", "ItemView", "MilvusStore",
           "PersistError", "ServeState", "Snapshot", "UnknownItemError"]


class UnknownItemError(HashlabError, KeyError):
    """No item has this id (404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConflictError(HashlabError):
    """The change is not possible in the current state (409)."""


class PersistError(HashlabError):
    """The changed index could not be saved; nothing was changed (500)."""


def _clone(index: BinaryIndex | FloatIndex) -> BinaryIndex | FloatIndex:
    """An independent copy of ``index`` (through FAISS's serialisation, which every kind has)."""
    if isinstance(index, BinaryIndex):
        raw = faiss.deserialize_index_binary(faiss.serialize_index_binary(index.faiss_index))
        return BinaryIndex._from_faiss(raw, index.nbits, index.kind, dict(index.params))
    raw = faiss.deserialize_index(faiss.serialize_index(index.faiss_index))
    return FloatIndex._from_faiss(raw, index.dim, index.kind, dict(index.params))


@dataclass(frozen=True)
class ItemRecord:
    """What the service says about one item: its ``label`` (None: added without one), its
    ``metadata`` object (None: none), whether it has an image to show, and whether it was
    added through the API (else it is an image of the split, its id = position)."""

    label: int | None
    metadata: dict[str, Any] | None
    has_image: bool
    added: bool


class ItemView(abc.ABC):
    """What one request reads: the index and the items' data (a FAISS :class:`Snapshot`, or
    the live Milvus collection)."""

    #: the searched index: ``kind``, ``exact_radius``, ``params``, ``len()``
    index: Any

    @abc.abstractmethod
    def __contains__(self, item_id: int) -> bool: ...

    @abc.abstractmethod
    def code(self, item_id: int) -> np.ndarray:
        """The stored code of an item (packed bits or float vector); 404 when unknown."""

    @abc.abstractmethod
    def records(self, ids: list[int]) -> list[ItemRecord]:
        """The records of these items, in order; :class:`UnknownItemError` for an unknown id."""

    @abc.abstractmethod
    def added_png(self, item_id: int) -> bytes | None:
        """The thumbnail of an item added through the API (None: added without an image)."""

    @abc.abstractmethod
    def conditioned(self, q: np.ndarray, *, k: int | None, radius: int | None, exact: bool,
                    flt: ItemFilter, rerank: float | None) -> ConditionedResult:
        """One query searched among the items ``flt`` selects (see
        :func:`~hashlab.index.filters.conditioned_search`)."""


class IndexStore(abc.ABC):
    """The index the service holds: the current :meth:`view`, and the writes."""

    #: ``faiss`` or ``milvus``
    backend: str
    #: whether adds and deletes outlive the process
    persistent: bool

    @abc.abstractmethod
    def view(self) -> ItemView: ...

    @abc.abstractmethod
    def add(self, code: np.ndarray, *, item_id: int | None, label: int | None,
            metadata: dict[str, Any] | None, image_png: bytes | None) -> int:
        """Add an item; its id. :class:`ConflictError` when the id is taken,
        :class:`PersistError` when storing it failed (nothing changed)."""

    @abc.abstractmethod
    def delete(self, item_id: int) -> None: ...


# ---------------------------------------------------------------------------------------------
# FAISS
# ---------------------------------------------------------------------------------------------


class Snapshot(ItemView):
    """The FAISS index and item tables at one moment (never changed once made)."""

    def __init__(self, state: ServeState, index: BinaryIndex | FloatIndex,
                 added: Mapping[int, AddedItem], metadata: Mapping[int, dict[str, Any]]) -> None:
        self.state, self.index = state, index
        self.added, self.metadata = dict(added), dict(metadata)
        self.ids = index.ids()
        self.id_set = frozenset(self.ids.tolist())
        self._lock = threading.Lock()
        self._table: MetadataTable | None = None
        self._scan: Any = None

    def __contains__(self, item_id: int) -> bool:
        return item_id in self.id_set

    def item_metadata(self, item_id: int) -> dict[str, Any] | None:
        if item_id in self.metadata:
            return self.metadata[item_id]
        synthetic = self.state.synthetic
        if synthetic is not None and item_id not in self.added and item_id < len(synthetic):
            return synthetic[item_id]
        return None

    def records(self, ids: list[int]) -> list[ItemRecord]:
        out = []
        for item_id in ids:
            if item_id not in self.id_set:
                raise UnknownItemError(f"no item with id {item_id}")
            added = self.added.get(item_id)
            if added is not None:
                out.append(ItemRecord(added.label, self.item_metadata(item_id),
                                      added.image_png is not None, True))
            else:
                out.append(ItemRecord(int(self.state.base_labels[item_id]),
                                      self.item_metadata(item_id),
                                      self.state.modality == "image", False))
        return out

    def added_png(self, item_id: int) -> bytes | None:
        return self.added[item_id].image_png if item_id in self.added else None

    def table(self) -> MetadataTable:
        """The metadata of every item in the index, for filters (built once)."""
        with self._lock:
            if self._table is None:
                self._table = MetadataTable(self.ids, (self.item_metadata(int(i))
                                                       for i in self.ids))
            return self._table

    def scan(self) -> Any:
        """A flat copy of the index for filtered searches of kinds FAISS cannot filter (built
        once): read back from the index, or made from the codes for kinds that keep none."""
        index = self.index
        if takes_selector(index):
            return None
        with self._lock:
            if self._scan is None:
                if index.spec.storage is not None:
                    self._scan = index.flat_copy()
                else:
                    extra = {} if isinstance(index, BinaryIndex) else {
                        "metric": index.params["metric"]}
                    flat = type(index)(self.state.code_size, "flat", **extra)
                    if self.ids.size:
                        flat.add(np.stack([self.code(int(i)) for i in self.ids]), self.ids)
                    self._scan = flat
            return self._scan

    def code(self, item_id: int) -> np.ndarray:
        """The stored code of an item (packed bits or float vector)."""
        if item_id not in self.id_set:
            raise UnknownItemError(f"no item with id {item_id}")
        if item_id in self.added:
            return self.added[item_id].code
        return self.state.base_codes[item_id]

    def conditioned(self, q: np.ndarray, *, k: int | None, radius: int | None, exact: bool,
                    flt: ItemFilter, rerank: float | None) -> ConditionedResult:
        table = None if flt.empty else self.table()
        with self.state.search_lock:
            return conditioned_search(self.index, q, table, flt, k=k, radius=radius,
                                      exact=exact, rerank=rerank, scan=self.scan)


class FaissStore(IndexStore):
    """An in-process FAISS index: in memory (``index_dir`` None) or saved in ``index_dir`` with
    its ``items.json``; every change makes a new :class:`Snapshot` (module docstring)."""

    backend = "faiss"

    def __init__(self, state: ServeState, index: BinaryIndex | FloatIndex,
                 added: Mapping[int, AddedItem], metadata: Mapping[int, dict[str, Any]],
                 index_dir: Path | None) -> None:
        self.state, self.index_dir = state, index_dir
        self.persistent = index_dir is not None
        self.snap = Snapshot(state, index, added, metadata)

    def view(self) -> Snapshot:
        return self.snap

    def add(self, code: np.ndarray, *, item_id: int | None, label: int | None,
            metadata: dict[str, Any] | None, image_png: bytes | None) -> int:
        state = self.state
        with state.write_lock:
            snap = self.snap
            if item_id is None:
                last = max(int(snap.ids.max()) if snap.ids.size else -1,
                           len(state.base_labels) - 1, max(snap.added, default=-1))
                item_id = last + 1
            elif item_id in snap:
                raise ConflictError(f"an item with id {item_id} exists; delete it first or "
                                    "leave out id")
            index = _clone(snap.index)
            index.add(code[None], np.array([item_id], dtype=np.int64))
            added = {**snap.added, item_id: AddedItem(label, code, image_png)}
            stored = {i: m for i, m in snap.metadata.items() if i != item_id}
            if metadata is not None:
                stored[item_id] = metadata
            self._commit(Snapshot(state, index, added, stored))
            return item_id

    def delete(self, item_id: int) -> None:
        with self.state.write_lock:
            snap = self.snap
            if item_id not in snap:
                raise UnknownItemError(f"no item with id {item_id}")
            if not snap.index.spec.removable:
                raise ConflictError(
                    f"a {snap.index.kind!r} index cannot remove items (FAISS cannot remove ids "
                    "from it); serve a flat index to delete items, or rebuild the index "
                    "without them")
            index = _clone(snap.index)
            index.remove(np.array([item_id], dtype=np.int64))
            self._commit(Snapshot(
                self.state, index, {i: a for i, a in snap.added.items() if i != item_id},
                {i: m for i, m in snap.metadata.items() if i != item_id}))

    def _commit(self, new: Snapshot) -> None:
        """Save ``new`` (with an index directory) and make it current; nothing changes when
        the save fails."""
        if self.index_dir is not None:
            try:
                save_index(new.index, self.index_dir,
                           model_run=str(self.state.run.run_dir.resolve()),
                           source=self.state.source,
                           extra_files={ITEMS_FILE: dump_items(new.metadata, new.added)})
            except (OSError, HashlabError) as exc:
                raise PersistError(f"could not save the index to {self.index_dir} ({exc}); "
                                   "nothing was changed") from exc
        with self.state.search_lock:
            self.snap = new


# ---------------------------------------------------------------------------------------------
# Milvus
# ---------------------------------------------------------------------------------------------

#: how an added item's ``extra`` JSON starts (keys sorted: ``added`` comes first)
_ADDED_PREFIX = '{"added":true'
#: bytes of the ``extra`` field kept free for the JSON around the thumbnail
_EXTRA_SLACK = 256


class MilvusStore(ItemView, IndexStore):
    """A Milvus collection written by ``hashlab index --backend milvus``, served live: it is
    its own view (Milvus answers every read at ``Strong`` consistency, so a search sees every
    add and delete made before it) and the persistent store of the writes.

    Ids below the split's size are the split's images (label and image from the split);
    added items carry ``{"added": true, "label", "image_png_b64"}`` in the collection's
    ``extra`` field, with their metadata object. A thumbnail too large for the field (Milvus
    caps a VARCHAR at 65535 bytes) is shrunk until it fits."""

    backend = "milvus"
    persistent = True

    def __init__(self, state: ServeState, index: Any) -> None:
        self.state, self.index = state, index
        self.n_base = len(state.base_labels)
        self._next_id: int | None = None
        n = self.n_base
        beyond = index.count(f"id >= {n}")
        added = index.count(f"id >= {n} and extra like '{_ADDED_PREFIX}%'") \
            if beyond and index.has_extra else 0
        if beyond != added:
            raise IndexFileError(
                f"collection {index.collection!r} at {index.uri} holds {beyond - added} id(s) "
                f">= {n} that are neither images of the {state.split} split ({n} images) nor "
                "items added through the API: it was built from another split")

    def view(self) -> MilvusStore:
        return self

    def _binary(self) -> bool:
        return self.index.family == "binary"

    # -- reading -----------------------------------------------------------------------------

    def __contains__(self, item_id: int) -> bool:
        return 0 <= item_id < 2**63 and self.index.count(f"id == {int(item_id)}") > 0

    def code(self, item_id: int) -> np.ndarray:
        got = self.index.items([item_id]).get(item_id)
        if got is None:
            raise UnknownItemError(f"no item with id {item_id}")
        return got.vector  # type: ignore[no-any-return]

    def records(self, ids: list[int]) -> list[ItemRecord]:
        if not ids:
            return []
        items = self.index.items(np.asarray(ids, dtype=np.int64), vectors=False)
        out = []
        for item_id in ids:
            got = items.get(item_id)
            if got is None:
                raise UnknownItemError(f"no item with id {item_id}")
            if got.extra.get("added") is True:
                out.append(ItemRecord(got.extra.get("label"), got.metadata,
                                      bool(got.extra.get("image_png_b64")), True))
            else:
                base = item_id < self.n_base
                out.append(ItemRecord(int(self.state.base_labels[item_id]) if base else None,
                                      got.metadata, base and self.state.modality == "image",
                                      False))
        return out

    def added_png(self, item_id: int) -> bytes | None:
        got = self.index.items([item_id], vectors=False).get(item_id)
        if got is None or not got.extra.get("image_png_b64"):
            return None
        return base64.b64decode(got.extra["image_png_b64"])

    def conditioned(self, q: np.ndarray, *, k: int | None, radius: int | None, exact: bool,
                    flt: ItemFilter, rerank: float | None) -> ConditionedResult:
        """The filters run inside Milvus (:func:`hashlab.index.milvus.filter_expression`);
        ``rerank`` re-orders the filtered top ``RERANK_FACTOR * k`` by ``visual + lambda * km``
        as :func:`~hashlab.index.filters.conditioned_search` does."""
        if rerank is not None and flt.near is None:
            raise ValueError("rerank needs a near filter: the location whose distance is added")
        asked = k * RERANK_FACTOR if rerank is not None and k is not None else k
        with self.state.search_lock:  # query() may set nprobe for one call
            res = self.index.query(np.asarray(q)[None], k=asked, radius=radius,
                                   filter=None if flt.empty else flt, exact=exact)
            selected = None if flt.empty else self.index.count(flt)
        scores, found = res.hits[0]
        combined: np.ndarray = scores
        if rerank is not None:
            assert flt.near is not None
            located = self.index.items(found, vectors=False)
            lat = np.array([located[int(i)].metadata["lat"] for i in found], np.float64)
            lon = np.array([located[int(i)].metadata["lon"] for i in found], np.float64)
            km = haversine_km(flt.near.lat, flt.near.lon, lat, lon)
            order, combined = geo_rerank(scores, found, km, rerank, binary=self._binary())
            order, combined = order[:k], combined[:k]
            scores, found = scores[order], found[order]
        return ConditionedResult(found, scores, combined, res, selected)

    # -- writing -----------------------------------------------------------------------------

    def _new_id(self) -> int:
        if self._next_id is None:
            self._next_id = max(self.index._max_id(), self.n_base - 1) + 1
        return self._next_id

    def add(self, code: np.ndarray, *, item_id: int | None, label: int | None,
            metadata: dict[str, Any] | None, image_png: bytes | None) -> int:
        from hashlab.index.milvus import MAX_EXTRA_BYTES, MilvusCollectionError

        if not self.index.has_extra:
            raise ConflictError(
                f"collection {self.index.collection!r} was written before hashlab kept item data "
                "in Milvus (it has no extra field): rebuild it with `hashlab index RUN --backend "
                "milvus` to add items")
        with self.state.write_lock:
            if item_id is None:
                item_id = self._new_id()
            elif item_id in self:
                raise ConflictError(f"an item with id {item_id} exists; delete it first or "
                                    "leave out id")
            budget = MAX_EXTRA_BYTES - _EXTRA_SLACK - len(json.dumps(metadata).encode())
            png = _fit_png(image_png, budget)
            extra = {"added": True, "label": label,
                     "image_png_b64": None if png is None else base64.b64encode(png).decode()}
            try:
                self.index.add(code[None], np.array([item_id], dtype=np.int64), [metadata],
                               extra=[extra])
            except MilvusCollectionError as exc:
                raise PersistError(f"could not add the item to the Milvus collection ({exc}); "
                                   "nothing was changed") from exc
            self._next_id = max(self._new_id(), item_id + 1)
            return item_id

    def delete(self, item_id: int) -> None:
        from hashlab.index.milvus import MilvusCollectionError

        with self.state.write_lock:
            if item_id not in self:
                raise UnknownItemError(f"no item with id {item_id}")
            try:
                self.index.remove(np.array([item_id], dtype=np.int64))
            except MilvusCollectionError as exc:
                raise PersistError(f"could not delete the item from the Milvus collection "
                                   f"({exc})") from exc


def _fit_png(png: bytes | None, budget: int) -> bytes | None:
    """``png``, shrunk by halves until its base64 fits ``budget`` bytes (None if it never
    does above 8 pixels)."""
    if png is None or 4 * ((len(png) + 2) // 3) <= budget:
        return png
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    size = max(img.size)
    while size > 8:
        size //= 2
        small = thumbnail_png(img, size)
        if 4 * ((len(small) + 2) // 3) <= budget:
            return small
    return None


class ServeState:
    """A finished run, its index (``index_dir``: an index directory, a ``milvus://`` reference
    to a collection written by ``hashlab index --backend milvus``, or None for an in-memory flat
    index of the run's ``train`` split) and the items' data. See the module docstring. A
    cross-modal run is served through :class:`~hashlab.serve.runs.CrossModalServed`
    (``cross_modal``: text queries, items with texts and labels)."""

    def __init__(self, run_dir: str | Path, index_dir: str | Path | None = None, *,
                 limits: ServeLimits | None = None, synthetic: bool = True,
                 seed: int = 0) -> None:
        from hashlab.index.milvus import is_milvus_uri
        from hashlab.serve.runs import open_served_run

        self.limits = limits or ServeLimits()
        self.search_lock = threading.Lock()
        self.write_lock = threading.Lock()
        collection: Any = None  # the MilvusIndex, when serving a milvus:// collection
        self.index_dir: Path | None = None
        self.source: dict[str, Any] | None = None
        if is_milvus_uri(index_dir):
            from hashlab.index.milvus import MilvusIndex, check_run_source

            collection = MilvusIndex.open(index_dir)
            self.source = check_run_source(collection)  # a collection of `hashlab index`
        elif index_dir is not None:
            self.index_dir = Path(index_dir)
            self.source = read_index_source(self.index_dir)
        #: where the served index lives: the index directory or the milvus:// reference
        self.location = None if index_dir is None else (
            collection.ref if collection is not None else str(self.index_dir))
        self.run = open_served_run(run_dir, None if self.source is None
                                   else self.source.get("modality"))
        #: a cross-modal run: text queries, and items with texts and labels
        self.cross_modal = bool(getattr(self.run, "cross_modal", False))
        #: what the served codes are of (``image``, or ``text`` for a text index)
        self.modality = getattr(self.run, "modality", "image")
        model = self.run.model
        if collection is not None:
            if self.cross_modal:
                raise HashlabError("a Milvus collection holds the codes of a single-modality "
                                   "run; serve a cross-modal run with a FAISS index")
            from hashlab.index.milvus import check_run_source

            # same model and code width; the size changes with adds and deletes
            check_run_source(collection, self.run, count=False)
        if self.source is None:
            self.split, self.code = "train", "binary" if model.binary else "float"
        else:
            if self.source["model_sha256"] != self.run.model_sha256:
                raise IndexFileError(
                    f"index {self.index_dir} was built from another model.pt than "
                    f"{self.run.run_dir}'s current one: rebuild it with `hashlab index "
                    f"{self.run.run_dir} --split {self.source['split']}"
                    + (f" --modality {self.modality}" if self.cross_modal else "") + " ...`")
            self.split, self.code = self.source["split"], self.source["code"]
        self.binary = self.code == "binary"
        if self.binary and not model.binary:
            raise HashlabError("the index holds binary codes but this run has an embedding head")
        self.code_size = model.dim
        self.meta = self.run.meta
        self.classes = self.run.class_names(self.split) or \
            [str(i) for i in range(int(self.meta["num_classes"]))]
        self.image_shape = tuple(int(s) for s in self.meta["image_shape"])
        self.dataset = self.run.load_split(self.split)
        self._mean, self._std = self._norm()
        self._base_png = functools.lru_cache(maxsize=4096)(self._render_base)
        self.store: IndexStore
        if collection is not None:
            # the codes are in the collection: no encoding of the split; the metadata too (the
            # filters run in Milvus), so no synthetic metadata
            self.base_codes = None
            self.base_labels = np.asarray(self.dataset.labels, dtype=np.int64)
            self.synthetic = None
            self.store = MilvusStore(self, collection)
        else:
            codes = self.run.encode(self.split, progress=False)
            self.base_codes = codes.bits if self.binary else codes.float
            self.base_labels = codes.labels
            self.synthetic = synthetic_metadata(codes.labels, self.classes, seed) \
                if synthetic else None
            if self.index_dir is None:
                index = BinaryIndex(self.code_size) if self.binary else \
                    FloatIndex(self.code_size)
                index.add(self.base_codes, np.arange(len(codes), dtype=np.int64))
                metadata, added = {}, {}
            else:
                size = {"expect_nbits" if self.binary else "expect_dim": self.code_size}
                index = load_index(self.index_dir, **size)
                metadata, added = self._read_items()
            self.store = FaissStore(self, index, added, metadata, self.index_dir)
            self._check_ids(self.store.snap)
        self.ready = True

    @property
    def snap(self) -> ItemView:
        """What a request reads: the current FAISS snapshot, or the Milvus collection."""
        return self.store.view()

    @property
    def backend(self) -> str:
        return self.store.backend

    @property
    def persistent(self) -> bool:
        """Whether adds and deletes outlive the process (an index directory, or Milvus)."""
        return self.store.persistent

    # -- loading -----------------------------------------------------------------------------

    def _read_items(self) -> tuple[dict[int, dict[str, Any]], dict[int, AddedItem]]:
        assert self.index_dir is not None
        data = read_extra_file(self.index_dir, ITEMS_FILE)
        if data is None:
            return {}, {}
        try:
            return load_items(data, code_dtype=self.code_dtype, code_size=self.code_width,
                              num_classes=len(self.classes),
                              max_metadata_bytes=self.limits.max_metadata_bytes)
        except ValueError as exc:
            raise IndexFileError(f"{self.index_dir / ITEMS_FILE}: {exc}") from None

    def _check_ids(self, snap: Snapshot) -> None:
        base = snap.ids[~np.isin(snap.ids, np.fromiter(snap.added, np.int64, len(snap.added)))]
        if base.size and int(base.max()) >= len(self.base_labels):
            raise IndexFileError(
                f"index {self.index_dir} holds id {int(base.max())}, which is neither an image "
                f"of the {self.split} split ({len(self.base_labels)} images) nor an added item: "
                "it was built from another split or its items.json is missing")
        stray = sorted(set(snap.added) - snap.id_set) + sorted(set(snap.metadata) - snap.id_set)
        if stray:
            raise IndexFileError(f"{self.index_dir / ITEMS_FILE}: lists ids {stray[:10]} that "
                                 "are not in the index")

    def _norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        from hashlab.data.arrays import norm_tensor

        c = self.image_shape[0]
        mean = getattr(self.dataset, "mean", None)
        std = getattr(self.dataset, "std", None)
        m = norm_tensor(0.0 if mean is None else mean, c, "mean")
        s = norm_tensor(1.0 if std is None else std, c, "std")
        assert m is not None and s is not None
        return m[0], s[0]

    # -- codes -------------------------------------------------------------------------------

    @property
    def code_dtype(self) -> Any:
        return np.uint8 if self.binary else np.float32

    @property
    def code_width(self) -> int:
        """Elements of one stored code: bytes of packed bits, or floats."""
        return (self.code_size + 7) // 8 if self.binary else self.code_size

    def to_tensor(self, array: np.ndarray) -> torch.Tensor:
        """A model-sized uint8 image [H, W(, 3)] as the model's normalised input [C, H, W]."""
        x = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32).div_(255.0)
        x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def encode_batch(self, tensors: list[torch.Tensor]) -> list[tuple[np.ndarray, Any]]:
        """``(float code, packed bits or None)`` of each input (one forward pass)."""
        floats, bits = self.run.model.encode_all(torch.stack(tensors).to(self.run.device))
        return [(floats[i], None if bits is None else bits[i]) for i in range(len(tensors))]

    def query_code(self, floats: np.ndarray, bits: np.ndarray | None) -> np.ndarray:
        """The code the index searches with, from an encoder output."""
        return bits if self.binary else floats  # type: ignore[return-value]

    def code_from_vector(self, vector: Any) -> np.ndarray:
        """A float vector given by a client as a query code (binary: the signs, as the hash
        head's bits are)."""
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (self.code_size,) or not np.isfinite(v).all():
            raise ValueError(f"vector: expected {self.code_size} finite numbers")
        if not self.binary:
            if not v.any():
                raise ValueError("vector: a zero vector has no direction")
            return v.astype(np.float32)
        from hashlab.index.codes import pack_bits

        return pack_bits(v[None] > 0)[0]

    def code_from_bytes(self, data: bytes, name: str) -> np.ndarray:
        """Packed bits given by a client (hex or base64) as a query code."""
        if not self.binary:
            raise ValueError(f"{name}: this index holds float codes; query with vector, "
                             "image_b64 or id")
        if len(data) != self.code_width:
            raise ValueError(f"{name}: {len(data)} bytes, expected {self.code_width} "
                             f"({self.code_size} bits)")
        code = np.frombuffer(data, dtype=np.uint8).copy()
        check_packed(code[None], self.code_size, name)
        return code

    # -- items -------------------------------------------------------------------------------

    def label(self, snap: ItemView, item_id: int) -> int | None:
        return snap.records([item_id])[0].label

    def has_image(self, snap: ItemView, item_id: int) -> bool:
        return snap.records([item_id])[0].has_image

    def text_code(self, text: str) -> tuple[np.ndarray, list[str]]:
        """The code of a text query (cross-modal runs) and its warnings; ValueError when the
        run has no text encoder or knows none of the words."""
        if not self.cross_modal:
            raise ValueError("this run is not cross-modal: it encodes images only; query "
                             "with an image, a code, a vector or an id")
        try:
            return self.run.text_code(text)  # type: ignore[no-any-return]
        except HashlabError as exc:
            raise ValueError(str(exc)) from None

    def item(self, snap: ItemView, item_id: int) -> dict[str, Any]:
        """The public description of an item (404 when unknown)."""
        return self._describe(item_id, snap.records([item_id])[0])

    def _describe(self, item_id: int, rec: ItemRecord) -> dict[str, Any]:
        label = rec.label
        out = {"id": item_id, "label": label,
               "class_name": None if label is None else self.classes[label],
               "metadata": rec.metadata,
               "image_url": f"/v1/items/{item_id}/image" if rec.has_image else None}
        if self.cross_modal:
            base = not rec.added
            out["text"] = self.run.item_text(self.split, item_id) if base else None
            out["labels"] = self.run.item_labels(self.split, item_id) if base else None
        return out

    def image_png(self, item_id: int) -> bytes:
        snap = self.snap
        rec = snap.records([item_id])[0]  # 404 when unknown
        if rec.added:
            png = snap.added_png(item_id)
            if png is None:
                raise UnknownItemError(f"item {item_id} was added without an image")
            return png
        if not rec.has_image:
            raise UnknownItemError(f"item {item_id} is a text (this index holds text codes)")
        return self._base_png(item_id)

    def _render_base(self, item_id: int) -> bytes:
        ds = self.dataset
        if hasattr(ds, "images"):
            return png_bytes(np.asarray(ds.images[item_id]))
        from hashlab.data.image_folder import read_image

        path = ds.samples[item_id][0]
        return png_bytes(read_image(path, "L" if self.image_shape[0] == 1 else "RGB",
                                    getattr(ds, "image_size", None)))

    # -- search ------------------------------------------------------------------------------

    def search(self, q: np.ndarray, *, k: int | None, radius: int | None, exact: bool,
               flt: ItemFilter, rerank: float | None) -> dict[str, Any]:
        """Search one query code; ``rerank`` is the lambda of geographic re-ranking (needs
        ``flt.near``). Returns the results and the search's exactness and warnings."""
        snap = self.snap
        res = snap.conditioned(q, k=k, radius=radius, exact=exact, flt=flt, rerank=rerank)
        ids = res.ids.tolist()
        records = snap.records(ids)
        results = []
        for s, c, i, rec in zip(res.scores.tolist(), res.combined.tolist(), ids, records,
                                strict=True):
            entry = self._describe(i, rec)
            hit = {"id": i, "distance": s, "score": c, "label": entry["label"],
                   "class_name": entry["class_name"], "metadata": entry["metadata"],
                   "thumbnail_url": entry["image_url"]}
            if self.cross_modal:
                hit.update(text=entry["text"], labels=entry["labels"])
            results.append(hit)
        q_res = res.result
        return {"results": results, "exact": q_res.exact, "warnings": list(q_res.warnings),
                "method": q_res.method, "selected": res.selected}

    # -- changes -----------------------------------------------------------------------------

    def add_item(self, code: np.ndarray, *, item_id: int | None = None,
                 label: int | None = None, metadata: dict[str, Any] | None = None,
                 image_png: bytes | None = None) -> int:
        """Add an item (saved with the index when serving an index directory, written into
        the collection on Milvus); its id."""
        return self.store.add(code, item_id=item_id, label=label, metadata=metadata,
                              image_png=image_png)

    def delete_item(self, item_id: int) -> None:
        self.store.delete(item_id)
