"""Item metadata for conditioned search: validation, synthetic demo locations, ``items.json``.

Metadata of an item is a JSON object; the keys search filters read are ``lat`` / ``lon``
(degrees), ``tags`` (strings) and ``time`` (ISO-8601); others are kept and returned as given.

**Synthetic metadata (demo only).** Fashion-MNIST and digits have no locations, so
:func:`synthetic_metadata` gives every image of a split a made-up "store" (one of ``CITIES``,
jittered by about 5 km), tags (the class name and ``sale`` or ``new``) and a time in 2026, drawn
from ``numpy.random.default_rng(seed)``: the same for the same labels and seed. Each item says
``"synthetic": true``. ``hashlab serve`` uses it for items of the split that have no stored
metadata, unless ``--no-synthetic-metadata``.

**items.json**, saved inside the index directory in the same atomic swap as the index
(``save_index(..., extra_files=...)``, its SHA-256 in the manifest)::

    {"format_version": 1,
     "metadata": {"<id>": {...}, ...},          # items with stored metadata
     "added": {"<id>": {"label": int | null,    # items added through the API
                        "code_b64": str,        # packed bits, or float32 little-endian
                        "image_png_b64": str | null}}}

:func:`attach_metadata` stores real metadata for the items of an index this way.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.index.filters import MetadataTable

__all__ = ["CITIES", "ITEMS_FILE", "AddedItem", "attach_metadata", "check_metadata", "dump_items",
           "load_items", "synthetic_metadata"]

ITEMS_FILE = "items.json"
ITEMS_FORMAT = 1
#: the synthetic stores: (name, latitude, longitude)
CITIES: tuple[tuple[str, float, float], ...] = (
    ("Paris", 48.8566, 2.3522), ("London", 51.5074, -0.1278), ("New York", 40.7128, -74.0060),
    ("Tokyo", 35.6762, 139.6503), ("Sao Paulo", -23.5505, -46.6333),
    ("Sydney", -33.8688, 151.2093), ("Nairobi", -1.2921, 36.8219), ("Berlin", 52.5200, 13.4050))
#: standard deviation of the jitter around a city centre, degrees (about 5 km)
JITTER_DEG = 0.05
SYNTHETIC_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
MAX_TAGS = 32
MAX_TAG_CHARS = 64


def tag_slug(name: str) -> str:
    """``T-shirt/top`` → ``t-shirt-top``: lower-case words joined by ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or name


def synthetic_metadata(labels: Sequence[int] | np.ndarray, class_names: Sequence[str],
                       seed: int = 0) -> list[dict[str, Any]]:
    """Made-up, deterministic metadata for a split's images (see the module docstring)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    rng = np.random.default_rng(seed)
    n = labels.size
    city = rng.integers(0, len(CITIES), n)
    jitter = rng.normal(0.0, JITTER_DEG, (n, 2))
    extra = rng.integers(0, 2, n)
    seconds = rng.integers(0, 365 * 86400, n)
    out = []
    for i in range(n):
        name, lat, lon = CITIES[city[i]]
        label = int(labels[i])
        cls = class_names[label] if 0 <= label < len(class_names) else str(label)
        when = SYNTHETIC_START + timedelta(seconds=int(seconds[i]))
        out.append({"lat": round(float(np.clip(lat + jitter[i, 0], -90, 90)), 6),
                    "lon": round(float(lon + jitter[i, 1]), 6),
                    "tags": [tag_slug(cls), ("sale", "new")[extra[i]]],
                    "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "city": name,
                    "synthetic": True})
    return out


def check_metadata(meta: Any, max_bytes: int, name: str = "metadata") -> dict[str, Any]:
    """``meta`` if it is a valid metadata object, else ValueError naming the problem."""
    if not isinstance(meta, dict):
        raise ValueError(f"{name}: expected an object, got {type(meta).__name__}")
    try:
        size = len(json.dumps(meta, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not plain JSON ({exc})") from None
    if size > max_bytes:
        raise ValueError(f"{name}: {size} bytes of JSON, more than the limit of {max_bytes}")
    tags = meta.get("tags")
    if tags is not None and (not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(
            isinstance(t, str) and 0 < len(t) <= MAX_TAG_CHARS for t in tags)):
        raise ValueError(f"{name}.tags: expected at most {MAX_TAGS} non-empty strings of at "
                         f"most {MAX_TAG_CHARS} characters")
    MetadataTable([0], [meta])  # lat / lon / time
    return meta


@dataclass(frozen=True)
class AddedItem:
    """An item added through the API: its label, code and (optional) PNG image."""

    label: int | None
    code: np.ndarray
    image_png: bytes | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dump_items(metadata: Mapping[int, dict[str, Any]], added: Mapping[int, AddedItem]) -> bytes:
    """``items.json`` of these items (ids sorted)."""
    doc = {"format_version": ITEMS_FORMAT,
           "metadata": {str(i): metadata[i] for i in sorted(metadata)},
           "added": {str(i): {"label": a.label, "code_b64": _b64(a.code.tobytes()),
                              "image_png_b64": None if a.image_png is None else _b64(a.image_png)}
                     for i, a in sorted(added.items())}}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def _id(key: str, where: str) -> int:
    if not re.fullmatch(r"[0-9]{1,18}", key):
        raise ValueError(f"{where}: {key!r} is not an item id")
    return int(key)


def load_items(data: bytes, *, code_dtype: Any, code_size: int, num_classes: int,
               max_metadata_bytes: int) -> tuple[dict[int, dict[str, Any]], dict[int, AddedItem]]:
    """Parse and check ``items.json``; ValueError naming the bad entry."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format_version") != ITEMS_FORMAT:
        raise ValueError(f"expected an object with format_version {ITEMS_FORMAT}")
    unknown = set(doc) - {"format_version", "metadata", "added"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}")
    raw_meta, raw_added = doc.get("metadata", {}), doc.get("added", {})
    if not isinstance(raw_meta, dict) or not isinstance(raw_added, dict):
        raise ValueError("metadata and added must be objects keyed by item id")
    metadata = {_id(k, "metadata"): check_metadata(v, max_metadata_bytes, f"metadata[{k}]")
                for k, v in raw_meta.items()}
    added = {}
    width = np.dtype(code_dtype).itemsize * code_size
    for key, entry in raw_added.items():
        where = f"added[{key}]"
        if not isinstance(entry, dict) or set(entry) != {"label", "code_b64", "image_png_b64"}:
            raise ValueError(f"{where}: expected label, code_b64 and image_png_b64")
        label = entry["label"]
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)
                                  or not 0 <= label < num_classes):
            raise ValueError(f"{where}.label: expected null or 0..{num_classes - 1}")
        try:
            code = base64.b64decode(entry["code_b64"], validate=True)
            png = entry["image_png_b64"]
            image = None if png is None else base64.b64decode(png, validate=True)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: code_b64 / image_png_b64 are not base64") from None
        if len(code) != width:
            raise ValueError(f"{where}.code_b64: {len(code)} bytes, expected {width}")
        added[_id(key, where)] = AddedItem(label, np.frombuffer(code, dtype=code_dtype).copy(),
                                           image)
    return metadata, added


def attach_metadata(index_dir: str | Path, metadata: Mapping[int, dict[str, Any]], *,
                    max_metadata_bytes: int = 16 * 2**10) -> Path:
    """Store ``metadata`` (item id → object) in the ``items.json`` of the index at
    ``index_dir``, saved again with the index in one atomic swap; other stored metadata and
    added items are kept. ValueError for an id not in the index or invalid metadata."""
    from hashlab.index import load_index, read_manifest, save_index
    from hashlab.index.store import read_extra_file, read_source

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    index = load_index(index_dir)
    data = read_extra_file(index_dir, ITEMS_FILE, manifest)
    doc = json.loads(data) if data else {"format_version": ITEMS_FORMAT, "metadata": {},
                                         "added": {}}
    present = set(index.ids().tolist())
    for item_id, meta in metadata.items():
        if item_id not in present:
            raise ValueError(f"metadata: no item with id {item_id} in {index_dir}")
        doc["metadata"][str(item_id)] = check_metadata(meta, max_metadata_bytes,
                                                       f"metadata[{item_id}]")
    return save_index(index, index_dir, model_run=manifest.get("model_run"),
                      source=read_source(index_dir, manifest),
                      extra_files={ITEMS_FILE: (json.dumps(doc, indent=1) + "\n").encode()})
