"""What ``hashlab serve`` holds: the run's model, the index, the items' labels, metadata and
images, and the operations on them (encode, search, add, delete).

**Snapshots.** The index and the item tables live in an immutable :class:`Snapshot`. A search
reads the current one; an add or delete works on a copy of the index (clone, change, save),
and only then swaps the new snapshot in, so a failed save changes nothing, on disk or in
memory, and searches never see a half-made change. Writes are serialised by a lock; searches
take a second lock only while FAISS runs (a search may set search-time parameters).

**Items.** Ids ``0..n-1`` of the split the index was built from (the ``train`` split without
``--index``) are the split's images: their label and image come from the split, their metadata
from ``items.json`` or, when absent, :func:`~hashlab.serve.metadata.synthetic_metadata`. Items
added through the API keep their label, code and a PNG thumbnail in ``items.json``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from hashlab.errors import HashlabError
from hashlab.eval.common import read_index_source
from hashlab.index import BinaryIndex, FloatIndex, IndexFileError, load_index, save_index
from hashlab.index.codes import check_packed
from hashlab.index.filters import ItemFilter, MetadataTable, conditioned_search, takes_selector
from hashlab.index.store import read_extra_file
from hashlab.serve.images import png_bytes
from hashlab.serve.limits import ServeLimits
from hashlab.serve.metadata import (
    ITEMS_FILE,
    AddedItem,
    dump_items,
    load_items,
    synthetic_metadata,
)

__all__ = ["ConflictError", "PersistError", "ServeState", "Snapshot", "UnknownItemError"]


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


class Snapshot:
    """The index and item tables at one moment (never changed once made)."""

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


class ServeState:
    """A finished run, its index (``index_dir``, or an in-memory flat index of the run's
    ``train`` split) and the items' data. See the module docstring. A cross-modal run is served
    through :class:`~hashlab.serve.runs.CrossModalServed` (``cross_modal``: text queries, items
    with texts and labels)."""

    def __init__(self, run_dir: str | Path, index_dir: str | Path | None = None, *,
                 limits: ServeLimits | None = None, synthetic: bool = True,
                 seed: int = 0) -> None:
        from hashlab.serve.runs import open_served_run

        self.limits = limits or ServeLimits()
        self.index_dir = None if index_dir is None else Path(index_dir)
        self.source: dict[str, Any] | None = None
        if self.index_dir is not None:
            self.source = read_index_source(self.index_dir)
        self.run = open_served_run(run_dir, None if self.source is None
                                   else self.source.get("modality"))
        #: a cross-modal run: text queries, and items with texts and labels
        self.cross_modal = bool(getattr(self.run, "cross_modal", False))
        #: what the served codes are of (``image``, or ``text`` for a text index)
        self.modality = getattr(self.run, "modality", "image")
        model = self.run.model
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
        names = self.run.class_names(self.split) if self.cross_modal else \
            list(self.meta.get("classes") or [])
        self.classes = names or [str(i) for i in range(int(self.meta["num_classes"]))]
        self.image_shape = tuple(int(s) for s in self.meta["image_shape"])
        self.dataset = self.run.load_split(self.split)
        codes = self.run.encode(self.split, progress=False)
        self.base_codes = codes.bits if self.binary else codes.float
        self.base_labels = codes.labels
        self.synthetic = synthetic_metadata(codes.labels, self.classes, seed) \
            if synthetic else None
        self._mean, self._std = self._norm()
        self._base_png = functools.lru_cache(maxsize=4096)(self._render_base)
        if self.index_dir is None:
            index = BinaryIndex(self.code_size) if self.binary else FloatIndex(self.code_size)
            index.add(self.base_codes, np.arange(len(codes), dtype=np.int64))
            metadata, added = {}, {}
        else:
            size = {"expect_nbits" if self.binary else "expect_dim": self.code_size}
            index = load_index(self.index_dir, **size)
            metadata, added = self._read_items()
        self.snap = Snapshot(self, index, added, metadata)
        self._check_ids(self.snap)
        self.search_lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.ready = True

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

    def label(self, snap: Snapshot, item_id: int) -> int | None:
        if item_id in snap.added:
            return snap.added[item_id].label
        return int(self.base_labels[item_id])

    def has_image(self, snap: Snapshot, item_id: int) -> bool:
        if item_id in snap.added:
            return snap.added[item_id].image_png is not None
        return self.modality == "image"  # the items of a text index are texts

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

    def item(self, snap: Snapshot, item_id: int) -> dict[str, Any]:
        """The public description of an item (404 when unknown)."""
        if item_id not in snap:
            raise UnknownItemError(f"no item with id {item_id}")
        label = self.label(snap, item_id)
        out = {"id": item_id, "label": label,
               "class_name": None if label is None else self.classes[label],
               "metadata": snap.item_metadata(item_id),
               "image_url": f"/v1/items/{item_id}/image" if self.has_image(snap, item_id)
               else None}
        if self.cross_modal:
            base = item_id not in snap.added
            out["text"] = self.run.item_text(self.split, item_id) if base else None
            out["labels"] = self.run.item_labels(self.split, item_id) if base else None
        return out

    def image_png(self, item_id: int) -> bytes:
        snap = self.snap
        if item_id not in snap:
            raise UnknownItemError(f"no item with id {item_id}")
        if item_id in snap.added:
            png = snap.added[item_id].image_png
            if png is None:
                raise UnknownItemError(f"item {item_id} was added without an image")
            return png
        if not self.has_image(snap, item_id):
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
        table = None if flt.empty else snap.table()
        with self.search_lock:
            res = conditioned_search(snap.index, q, table, flt, k=k, radius=radius,
                                     exact=exact, rerank=rerank, scan=snap.scan)
        results = []
        for s, c, i in zip(res.scores.tolist(), res.combined.tolist(), res.ids.tolist(),
                           strict=True):
            entry = self.item(snap, i)
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
        """Add an item (saved with the index when serving an index directory); its id."""
        with self.write_lock:
            snap = self.snap
            if item_id is None:
                last = max(int(snap.ids.max()) if snap.ids.size else -1,
                           len(self.base_labels) - 1, max(snap.added, default=-1))
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
            self._commit(Snapshot(self, index, added, stored))
            return item_id

    def delete_item(self, item_id: int) -> None:
        with self.write_lock:
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
                self, index, {i: a for i, a in snap.added.items() if i != item_id},
                {i: m for i, m in snap.metadata.items() if i != item_id}))

    def _commit(self, new: Snapshot) -> None:
        """Save ``new`` (with an index directory) and make it current; nothing changes when
        the save fails."""
        if self.index_dir is not None:
            try:
                save_index(new.index, self.index_dir, model_run=str(self.run.run_dir.resolve()),
                           source=self.source,
                           extra_files={ITEMS_FILE: dump_items(new.metadata, new.added)})
            except (OSError, HashlabError) as exc:
                raise PersistError(f"could not save the index to {self.index_dir} ({exc}); "
                                   "nothing was changed") from exc
        with self.search_lock:
            self.snap = new
