"""Milvus as the search engine behind the index API: :class:`MilvusIndex`.

A :class:`MilvusIndex` is one Milvus collection holding binary codes (``BINARY_VECTOR``,
Hamming distance) or float embeddings (``FLOAT_VECTOR``, cosine / inner product), keyed by the
caller's int64 ids, with the item metadata of the conditioned search as scalar fields. It
answers ``search`` / ``range_search`` / ``remove`` / ``ids`` like
:class:`~hashlab.index.BinaryIndex` and :class:`~hashlab.index.FloatIndex`, with the same result
arrays, the same (score, id) order and the same treatment of ties, so that a collection can
replace an in-process FAISS index when the codes outgrow one machine (``docs/scale.md``). The
same code talks to the embedded engine (milvus-lite: ``uri="/path/file.db"``), to Milvus
standalone and to a Milvus cluster (``uri="http://host:19530"``).

pymilvus (and, for local files, milvus-lite) is an optional dependency (``pip install
"hashlab[milvus]"``). It is imported on first use, not with this module: the registries of
index kinds import every module of :mod:`hashlab.index`, and neither that nor the 0.5 s that
importing pymilvus takes should burden code that never touches Milvus. Without it, the first
use raises :class:`MilvusNotInstalledError` (an ``ImportError`` and a ``HashlabError``) saying
what to install.

**Schema.** Fields: ``id`` (INT64, primary key: the caller's id), ``vector``
(``BINARY_VECTOR`` of ``8 * ceil(nbits / 8)`` bits, the packed codes of
:mod:`hashlab.index.codes`, or ``FLOAT_VECTOR`` of ``dim``), ``has_location`` (BOOL), ``lat`` and
``lon`` (DOUBLE, degrees, 0 when absent), ``tags`` (ARRAY of VARCHAR, escaped as below),
``has_time`` (BOOL) and ``time_us`` (INT64, microseconds since 1970-01-01 UTC, 0 when absent),
and ``extra`` (VARCHAR of at most 65535 bytes, ``""`` when empty): a JSON object holding the
item's metadata object as given (keys other than the filters' are kept) and what the caller
stores with the item (``add(..., extra=...)``: ``hashlab serve`` keeps an added item's label and
thumbnail there); :meth:`MilvusIndex.items` reads it back with the vectors. (Collections written
before ``extra`` existed are still read and searched; they cannot store or return it.)
milvus-lite has no nullable fields, so absence is the ``has_*`` flags. The vector index is
``BIN_FLAT`` / ``FLAT`` for ``kind="flat"`` and ``BIN_IVF_FLAT`` / ``IVF_FLAT`` (``nlist``, search
``nprobe``) for ``kind="ivf"`` (milvus-lite builds only ``BIN_FLAT`` for binary vectors). Float
collections always use Milvus's ``IP`` metric: with ``metric="cosine"`` hashlab L2-normalises
every vector and query itself, exactly as ``FloatIndex`` does (Milvus's own ``COSINE`` metric
renormalises and rounds differently), so a foreign client searching such a collection directly
must normalise its queries. The collection's description holds a JSON record of the family,
``nbits`` / ``dim``, kind, params, tag limits and ``source`` (what the codes were made from:
``hashlab index`` records the run, split, code and model SHA-256 there, as ``source.json`` does
for a FAISS index folder); :meth:`MilvusIndex.open` reads it back.

**Consistency.** Every search and count is run with ``consistency_level="Strong"``, so it sees
every insert and delete made before it (no flush needed). A collection has a single writer:
``add`` checks the ids against the collection before inserting, and Milvus itself accepts
duplicate primary keys, so two concurrent writers could insert the same id twice.

**Exactness and ties** (``kind="flat"``, or ``"ivf"`` with ``nprobe >= nlist``). Milvus's
top-k keeps an arbitrary subset of the entries tied at the k-th score, in an order of its own
(milvus-lite: binary ties in insertion order, float ones reversed), caps ``limit`` at
``MAX_LIMIT`` (16384) per query, and has no ``offset`` beyond it. :meth:`MilvusIndex.search`
therefore works like a cursor over score windows, using Milvus's range search (Hamming:
``range_filter <= d < radius``; inner product: ``radius < s <= range_filter``), each window's
page being the first ``limit`` entries by score:

1. ask for ``k + 1`` (at most ``MAX_LIMIT``); a page shorter than asked holds every entry left;
2. every entry strictly better than the page's worst score ``w`` is final (nothing outside the
   page can beat it);
3. binary: the entries at exactly distance ``w`` are fetched in increasing id order (a range
   search ``w <= d < w + 1`` restricted to id intervals, bisected whenever an interval holds
   ``MAX_LIMIT`` entries or more; the rows of a batch tied at the same ``w`` share one call)
   until ``k`` are taken; float: every entry with similarity
   ``>= w - 1e-6 * max(1, |w|)`` is fetched (same id paging), sorted by (similarity desc, id),
   as ``FloatIndex`` completes its ties;
4. still short of ``k`` (only when ``k >= MAX_LIMIT`` or a ``near`` filter dropped entries):
   the next page is searched below the band just fetched, and so on.

So a binary search equals a FAISS ``flat`` ``BinaryIndex`` entry for entry, ties included, for
any ``k``; a float search equals a ``flat`` ``FloatIndex`` up to float rounding (milvus-lite's
``FLAT`` / ``IP`` computes the same float32 inner products as FAISS's ``IndexFlatIP`` in the
tests, but this is not guaranteed on every build). ``range_search`` pages the same way when a
query has ``MAX_LIMIT`` hits or more, so it returns every hit. ``kind="ivf"`` with
``nprobe < nlist`` is approximate: rows are sorted but may miss entries.

**Filters** (:class:`~hashlab.index.filters.ItemFilter`, or its dict form) run inside Milvus as
a boolean expression (:func:`filter_expression`) and select exactly the items
:class:`~hashlab.index.filters.MetadataTable` selects from the same metadata:

* ``tags`` → ``array_contains_all(tags, [...])``. Tags are stored escaped: ``%``, ``"``, ``'``,
  ``\\``, control characters and lone surrogates become ``%XX`` (their UTF-8 bytes), since
  Milvus string literals cannot carry control characters; :func:`tag_key` is the mapping.
* a time window → ``has_time == true`` and ``time_us >= start`` / ``time_us <= end``, both
  inclusive, in integer microseconds. ``MetadataTable`` compares float POSIX seconds, which
  tell microseconds apart (and so agree exactly) for times between the years 1685 and 2255.
* ``near`` → ``has_location == true`` and a latitude/longitude bounding box of the spherical
  cap (split at the antimeridian, dropped when the cap holds a pole), widened by a relative
  1e-9 so rounding cannot put a matching item outside it. Milvus expressions cannot combine
  two fields arithmetically (``x * qx + y * qy`` is refused) and have no trigonometry, so the
  exact test, the haversine distance ``<= km`` of :func:`~hashlab.index.filters.haversine_km`
  on the stored ``lat`` / ``lon``, runs on the results, and the cursor above keeps paging
  until ``k`` items pass it: still exact.

A raw Milvus expression string is accepted too (``filter="time_us > 0"``) and used as is.

**milvus-lite** (2.5), the embedded engine of the tests, differs from a server in ways this
module works around or states: one process at a time opens a ``.db`` file (share a collection
through a server); no ``BIN_IVF_FLAT``, no nullable fields, no collection rename (so
``overwrite=True`` drops before it refills), no expression templates (``filter_params`` makes
it fail, so expressions are written out), and an empty ``id in []`` or a ``not (...)`` in an
expression makes it fail (never written here). pymilvus 2.5 cannot decode an empty query result
of a collection with an ARRAY field, so id look-ups are counted first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from hashlab.errors import HashlabError
from hashlab.index import idmap
from hashlab.index.binary import BinaryIndex
from hashlab.index.codes import code_bytes, to_numpy
from hashlab.index.filters import (
    EARTH_RADIUS_KM,
    ItemFilter,
    MetadataTable,
    Near,
    haversine_km,
    parse_time,
)
from hashlab.index.floats import METRICS, FloatIndex
from hashlab.index.idmap import (
    RESULT_ENTRY_BYTES,
    UnknownIdsError,
    _as_ids,
    _fmt_ids,
    check_result_size,
    range_limit_error,
)
from hashlab.index.query import QueryResult
from hashlab.index.store import IndexFileError
from hashlab.validation import check_choice, check_int, check_real

__all__ = [
    "FIELDS", "KINDS", "MAX_LIMIT", "MilvusCollectionError", "MilvusIndex",
    "MilvusNotInstalledError", "MilvusRef", "MilvusRefError", "check_collection_name",
    "MilvusItem", "check_run_source", "check_writable", "filter_expression", "format_milvus_uri",
    "is_milvus_uri", "parse_milvus_uri", "tag_from_key", "tag_key", "write_run_collection",
]

#: Milvus's largest ``limit`` (top-k) of one search, and its largest number of queries per call;
#: read at call time (tests lower it to exercise the paging)
MAX_LIMIT = 16384
#: entries (queries x limit) one search call may return; larger batches of queries are split
MAX_CALL_ENTRIES = 2**18
#: ids checked / deleted per Milvus call (``id in [...]`` expressions)
ID_CHUNK = 4096

#: the fields of a hashlab collection, in schema order
FIELDS = ("id", "vector", "has_location", "lat", "lon", "tags", "has_time", "time_us", "extra")
#: the largest ``extra`` JSON of one item, bytes (Milvus's VARCHAR limit)
MAX_EXTRA_BYTES = 65535
#: hashlab's kinds, their Milvus index types per family, and their params with defaults
KINDS: dict[str, dict[str, Any]] = {
    "flat": {"binary": "BIN_FLAT", "float": "FLAT", "defaults": {}},
    "ivf": {"binary": "BIN_IVF_FLAT", "float": "IVF_FLAT",
            "defaults": {"nlist": 16, "nprobe": 4}},
}
#: what the collection description's JSON record says it is, and the format version
DESCRIPTION_FORMAT = "hashlab-milvus-index"
FORMAT_VERSION = 1
#: a collection name Milvus accepts
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
#: Milvus caps an ARRAY field at 4096 elements and a VARCHAR at 65535 bytes
_MAX_CAPACITY, _MAX_LENGTH = 4096, 65535
#: the relative slack of a float tie band, as :class:`FloatIndex` completes its ties
_FLOAT_SLACK = 1e-6
#: relative widening of the ``near`` bounding box (rounding must not push a match out of it)
_BOX_SLACK = 1e-9
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FLT_LOWEST = float(np.finfo(np.float32).min)
_ID_RANGE = (0, 2**63 - 1)


@dataclass(frozen=True)
class MilvusItem:
    """One item read back by :meth:`MilvusIndex.items`: its stored vector (packed bits, or the
    float32 vector as stored: L2-normalised for cosine), its metadata object as given to
    :meth:`MilvusIndex.add` (None when it had none) and the caller's ``extra`` dict ({} when
    none)."""

    id: int
    vector: np.ndarray
    metadata: dict[str, Any] | None
    extra: dict[str, Any]


class MilvusNotInstalledError(HashlabError, ImportError):
    """pymilvus (or milvus-lite, for a local ``.db`` file) is not installed."""


class MilvusCollectionError(IndexFileError):
    """A collection is missing, not a hashlab collection, or incompatible; or Milvus failed."""


class MilvusRefError(MilvusCollectionError, ValueError):
    """A malformed ``milvus://`` reference, uri or collection name."""


_INSTALL = 'pip install "hashlab[milvus]"'


def _pymilvus() -> Any:
    """The pymilvus module, imported on first use (see the module docstring)."""
    try:
        import pymilvus
    except ImportError as exc:
        raise MilvusNotInstalledError(
            f"Milvus support needs the pymilvus client (and milvus-lite for a local .db file), "
            f"which are not installed: {_INSTALL}") from exc
    return pymilvus


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pymilvus's own log lines (it logs every failed call and iterator set-up) held back;
    its exceptions still propagate and are reported by hashlab."""
    logs = [logging.getLogger(name) for name in ("pymilvus", "pymilvus.milvus_client")]
    levels = [log.level for log in logs]  # pymilvus configures both with their own levels
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


# ---------------------------------------------------------------------------------------------
# milvus:// references
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MilvusRef:
    """Where a collection lives: ``uri`` as pymilvus takes it (a local ``.db`` file for the
    embedded engine, or ``http(s)://host:port``), the ``collection`` name, an optional
    ``token`` (``user:password`` or an API key) and ``db_name``."""

    uri: str
    collection: str | None = None
    token: str | None = None
    db_name: str | None = None

    @property
    def local(self) -> bool:
        return not self.uri.startswith(("http://", "https://"))

    def __str__(self) -> str:
        return format_milvus_uri(self.uri, self.collection, db_name=self.db_name)


def is_milvus_uri(text: Any) -> bool:
    """Whether ``text`` is a ``milvus://`` / ``milvus+https://`` index reference."""
    return isinstance(text, str) and text.lower().startswith(("milvus://", "milvus+https://"))


def parse_milvus_uri(text: str, *, collection_required: bool = True) -> MilvusRef:
    """Parse an index reference naming a Milvus collection.

    * ``milvus:///abs/path/file.db?collection=NAME``: the embedded engine (milvus-lite) on that
      file (an absolute path: three slashes);
    * ``milvus://host:19530?collection=NAME``: a Milvus server over ``http``;
      ``milvus+https://host:443?collection=NAME`` over TLS; ``milvus://user:password@host...``
      passes ``user:password`` as the token (else ``$MILVUS_TOKEN`` when set);
    * ``&db=NAME`` selects a database other than ``default``.

    :class:`MilvusRefError` (a ValueError) naming what is wrong otherwise.
    """
    if not is_milvus_uri(text):
        raise MilvusRefError(f"{text!r} is not a milvus:// reference (expected "
                                    "milvus:///path/file.db?collection=NAME or "
                                    "milvus://host:19530?collection=NAME)")
    parts = urllib.parse.urlsplit(text)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"collection", "db"}
    if unknown:
        raise MilvusRefError(f"{text}: unknown parameter(s) {sorted(unknown)}; allowed: "
                                    "collection, db")
    if any(len(v) != 1 for v in query.values()):
        raise MilvusRefError(f"{text}: give each parameter once")
    collection = query.get("collection", [None])[0]
    db_name = query.get("db", [None])[0] or None
    if collection_required and not collection:
        raise MilvusRefError(f"{text}: name the collection: ...?collection=NAME")
    if collection:
        check_collection_name(collection)
    token = None
    if not parts.netloc:  # milvus:///abs/path.db
        path = urllib.parse.unquote(parts.path)
        if parts.scheme.lower() != "milvus" or not path.startswith("/"):
            raise MilvusRefError(f"{text}: a local Milvus file needs an absolute path: "
                                        "milvus:///abs/path/file.db?collection=NAME")
        uri = path
    else:
        if parts.path not in ("", "/"):
            raise MilvusRefError(f"{text}: a Milvus server address has no path; a local "
                                        "file needs three slashes: milvus:///abs/path/file.db")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        scheme = "https" if parts.scheme.lower() == "milvus+https" else "http"
        uri = f"{scheme}://{host}{port}"
        if parts.username is not None:
            token = urllib.parse.unquote(parts.username)
            if parts.password is not None:
                token += ":" + urllib.parse.unquote(parts.password)
    return MilvusRef(uri, collection or None, token, db_name)


def format_milvus_uri(uri: str, collection: str | None, *, db_name: str | None = None) -> str:
    """The ``milvus://`` reference of a collection (no token: credentials are not printed)."""
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        scheme = "milvus+https" if parts.scheme == "https" else "milvus"
        base = f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    else:
        base = "milvus://" + urllib.parse.quote(os.path.abspath(uri))
    query = {k: v for k, v in (("collection", collection), ("db", db_name)) if v}
    return base + (f"?{urllib.parse.urlencode(query)}" if query else "")


def check_collection_name(name: Any) -> str:
    """``name`` if Milvus accepts it as a collection name, else ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MilvusRefError(
            f"collection name {name!r}: use letters, digits and underscores, starting with a "
            "letter or underscore (at most 255 characters)")
    return name


def _client_uri(uri: Any) -> tuple[str, MilvusRef | None]:
    """pymilvus's uri for ``uri`` (a ``.db`` path, ``http(s)://...`` or ``milvus://...``)."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise MilvusRefError(f"uri: expected a local .db file, http(s)://host:port or a "
                                    f"milvus:// reference, got {uri!r}")
    if is_milvus_uri(uri):
        ref = parse_milvus_uri(uri, collection_required=False)
        return ref.uri, ref
    if uri.startswith(("http://", "https://", "tcp://", "unix:")):
        return uri, None
    if not uri.endswith(".db"):
        raise MilvusRefError(
            f"uri {uri!r}: the embedded Milvus engine stores a collection in a file whose name "
            "ends with .db (e.g. codes.db); a Milvus server is http://host:19530")
    path = os.path.abspath(uri)
    if not os.path.isdir(os.path.dirname(path)):
        raise MilvusRefError(f"uri {uri!r}: folder {os.path.dirname(path)} does not exist")
    return path, None


def _connect(uri: Any, token: str | None, db_name: str | None) -> tuple[Any, str, str | None]:
    """A ``MilvusClient`` for ``uri``; returns (client, pymilvus uri, db_name)."""
    client_uri, ref = _client_uri(uri)
    if ref is not None:
        token = token if token is not None else ref.token
        db_name = db_name if db_name is not None else ref.db_name
    token = token if token is not None else os.environ.get("MILVUS_TOKEN")
    pymilvus = _pymilvus()
    kwargs = {"token": token} if token else {}
    if db_name:
        kwargs["db_name"] = db_name
    try:
        with _quiet():
            client = pymilvus.MilvusClient(uri=client_uri, **kwargs)
    except ImportError as exc:  # milvus-lite missing for a local file
        raise MilvusNotInstalledError(f"a local Milvus file ({client_uri}) needs milvus-lite, "
                                      f"which is not installed: {_INSTALL}") from exc
    except pymilvus.MilvusException as exc:
        hint = "" if client_uri.startswith(("http://", "https://")) else (
            " (the embedded engine opens a .db file in one process at a time: is another "
            "process using it? Share a collection between processes through a Milvus server)")
        raise MilvusCollectionError(f"cannot connect to Milvus at {client_uri}: "
                                    f"{_message(exc)}{hint}") from exc
    return client, client_uri, db_name


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0]


# ---------------------------------------------------------------------------------------------
# metadata: tags, times, filters
# ---------------------------------------------------------------------------------------------


def _escaped(ch: str) -> bool:
    o = ord(ch)
    return ch in "%\"'\\" or o < 0x20 or o == 0x7F or 0xD800 <= o <= 0xDFFF


def tag_key(tag: str) -> str:
    """How a tag is stored in the ``tags`` field: ``%``, quotes, backslash, control characters
    and lone surrogates as ``%XX`` of their (surrogate-passing) UTF-8 bytes, everything else
    as is. Reversible (:func:`tag_from_key`); the result is safe inside a Milvus string
    literal."""
    if not any(_escaped(ch) for ch in tag):
        return tag
    return "".join("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
                   if _escaped(ch) else ch for ch in tag)


def tag_from_key(key: str) -> str:
    """The tag stored as ``key`` (inverse of :func:`tag_key`)."""
    return urllib.parse.unquote(key, errors="surrogatepass")


def _time_us(t: datetime) -> int:
    """Microseconds since 1970-01-01 UTC of an aware datetime (exact integer arithmetic)."""
    return (t - _EPOCH) // timedelta(microseconds=1)


def _num(x: float) -> str:
    """A float as a Milvus literal (round-trip repr)."""
    return repr(float(x))


def _str_list(keys: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{k}"' for k in keys) + "]"


def _near_box(near: Near) -> str:
    """A Milvus expression selecting at least every located item within ``near.km`` of the
    point: a latitude band and, unless the cap reaches a pole, longitude intervals."""
    delta = near.km / EARTH_RADIUS_KM  # angular radius
    parts = ["has_location == true"]
    if delta >= math.pi:
        return parts[0]
    delta = delta * (1 + _BOX_SLACK) + _BOX_SLACK
    lat0 = math.radians(near.lat)
    lo, hi = lat0 - delta, lat0 + delta
    pad = math.degrees(delta) * _BOX_SLACK + _BOX_SLACK
    if lo > -math.pi / 2:
        parts.append(f"lat >= {_num(math.degrees(lo) - pad)}")
    if hi < math.pi / 2:
        parts.append(f"lat <= {_num(math.degrees(hi) + pad)}")
    # the cap's longitude half-width when it holds no pole: asin(sin(delta) / cos(lat0))
    ratio = math.sin(delta) / math.cos(lat0) if lo > -math.pi / 2 and hi < math.pi / 2 else 2.0
    if ratio < 1.0:
        half = math.degrees(math.asin(ratio)) * (1 + _BOX_SLACK) + pad
        if half < 180.0:
            pieces = []
            for shift in (-360.0, 0.0, 360.0):
                a, b = max(near.lon - half + shift, -180.0), min(near.lon + half + shift, 180.0)
                if a <= b:
                    pieces.append(f"(lon >= {_num(a)} and lon <= {_num(b)})")
            parts.append("(" + " or ".join(pieces) + ")")
    return " and ".join(parts)


def filter_expression(flt: ItemFilter | Mapping[str, Any] | None) -> str:
    """The Milvus boolean expression of an :class:`ItemFilter` (or its dict form); ``""`` for
    an empty filter. For ``near`` it is a bounding box: :class:`MilvusIndex` then checks the
    haversine distance itself (see the module docstring)."""
    flt = _as_filter(flt)
    if not isinstance(flt, ItemFilter):
        return flt
    parts = []
    if flt.near is not None:
        parts.append(_near_box(flt.near))
    if flt.tags:
        parts.append(f"array_contains_all(tags, {_str_list(tag_key(t) for t in flt.tags)})")
    if flt.timed:
        parts.append("has_time == true")
        if flt.start is not None:
            parts.append(f"time_us >= {_time_us(flt.start)}")
        if flt.end is not None:
            parts.append(f"time_us <= {_time_us(flt.end)}")
    return " and ".join(parts)


def _as_filter(flt: Any) -> ItemFilter | str:
    if flt is None:
        return ItemFilter()
    if isinstance(flt, (ItemFilter, str)):
        return flt
    if isinstance(flt, Mapping):
        return ItemFilter.from_dict(flt)
    raise ValueError(f"filter: expected an ItemFilter, its dict form or a Milvus expression, "
                     f"got {type(flt).__name__}")


@dataclass(frozen=True)
class _Condition:
    """A compiled filter: the Milvus expression and the exact ``near`` check left to us."""

    expr: str
    near: Near | None = None

    @property
    def fields(self) -> list[str]:
        return ["lat", "lon"] if self.near is not None else []

    def mask(self, fields: dict[str, np.ndarray] | None, n: int) -> np.ndarray:
        if self.near is None:
            return np.ones(n, bool)
        assert fields is not None
        km = haversine_km(self.near.lat, self.near.lon, fields["lat"], fields["lon"])
        return km <= self.near.km

    def narrowed(self, lo: int, hi: int) -> str:
        """The expression restricted to ids in ``[lo, hi]``."""
        if (lo, hi) == _ID_RANGE:
            return self.expr
        ids = f"id >= {lo} and id <= {hi}"
        return f"({self.expr}) and {ids}" if self.expr else ids


def _compile(flt: Any) -> _Condition:
    flt = _as_filter(flt)
    if isinstance(flt, str):
        return _Condition(flt)
    return _Condition(filter_expression(flt), flt.near)


# ---------------------------------------------------------------------------------------------
# MilvusIndex
# ---------------------------------------------------------------------------------------------

_Page = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]


def _prev32(x: float) -> float:
    """The largest float32 strictly below ``x`` (as a float)."""
    return float(np.nextafter(np.float32(x), np.float32(-np.inf)))


class MilvusIndex:
    """A Milvus collection searched like a :class:`BinaryIndex` / :class:`FloatIndex`.

    ``MilvusIndex(uri, collection, family="binary", nbits=64)`` creates the collection (a
    ``family="float"`` one takes ``dim=`` and ``metric="cosine"`` (default) or
    ``"inner_product"``, as :class:`FloatIndex`);
    :meth:`open` opens an existing one. ``uri``: a local ``.db`` file (the embedded engine,
    milvus-lite), ``http(s)://host:19530`` (Milvus standalone / cluster) or a ``milvus://``
    reference (:func:`parse_milvus_uri`); ``token`` / ``db_name`` as pymilvus takes them.

    ``kind``: ``"flat"`` (``BIN_FLAT`` / ``FLAT``: exact) or ``"ivf"`` (``BIN_IVF_FLAT`` /
    ``IVF_FLAT`` with ``nlist`` [16] lists, searched with ``nprobe`` [4]: exact only when
    ``nprobe >= nlist``; milvus-lite refuses ``BIN_IVF_FLAT``). ``source``: a JSON-ready dict
    stored with the collection (what the codes were made from). ``num_shards``: Milvus shards
    of the collection (a server's write parallelism; default Milvus's, 1). ``max_tags`` /
    ``max_tag_bytes``: capacity of the ``tags`` field (an item with more tags, or a longer
    escaped tag, is refused by :meth:`add`). An existing collection of that name is refused
    unless ``overwrite=True``, which drops it first (only a hashlab collection: a foreign one
    is never dropped). Not atomic: the old collection is gone before the new one is filled.
    """

    _client: Any
    _meta: dict[str, Any]

    def __init__(
        self, uri: Any, collection: str, *, family: str = "binary", nbits: int | None = None,
        dim: int | None = None, kind: str = "flat", metric: str | None = None,
        source: dict[str, Any] | None = None, overwrite: bool = False,
        num_shards: int | None = None, max_tags: int = 256, max_tag_bytes: int = 256,
        token: str | None = None, db_name: str | None = None, **params: Any,
    ) -> None:
        family = check_choice("family", family, ("binary", "float"))
        kind = check_choice("kind", kind, tuple(KINDS))
        check_collection_name(collection)
        meta: dict[str, Any] = {"format": DESCRIPTION_FORMAT, "version": FORMAT_VERSION,
                                "family": family, "kind": kind}
        if family == "binary":
            if dim is not None:
                raise ValueError("a binary collection takes nbits=, not dim=")
            code_bytes(nbits)  # type: ignore[arg-type]  # checks it
            meta["nbits"] = int(nbits)  # type: ignore[arg-type]
            if metric not in (None, "hamming"):
                raise ValueError("metric: binary codes are compared by Hamming distance only")
        else:
            if nbits is not None:
                raise ValueError("a float collection takes dim=, not nbits=")
            meta["dim"] = check_int(dim, "dim")
            params["metric"] = check_choice("metric", metric or "cosine", METRICS)
        defaults = dict(KINDS[kind]["defaults"])
        own = {k: v for k, v in params.items() if k != "metric"}
        unknown = set(own) - set(defaults)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} for kind {kind!r}; "
                             f"accepted: {sorted(defaults) or 'none'}")
        meta["params"] = {**defaults, **params}
        for name in defaults:
            check_int(meta["params"][name], name)
        meta["max_tags"] = check_int(max_tags, "max_tags")
        meta["max_tag_bytes"] = check_int(max_tag_bytes, "max_tag_bytes")
        if max_tags > _MAX_CAPACITY or max_tag_bytes > _MAX_LENGTH:
            raise ValueError(f"max_tags <= {_MAX_CAPACITY} and max_tag_bytes <= {_MAX_LENGTH} "
                             "(Milvus's limits)")
        if source is not None and not isinstance(source, dict):
            raise TypeError(f"source: expected a dict, got {type(source).__name__}")
        meta["source"] = source
        meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        description = json.dumps(meta, separators=(",", ":"))
        self._connect(uri, collection, token, db_name)
        self._load_meta(meta)
        client, pymilvus = self._client, _pymilvus()
        with self._errors("create"):
            if client.has_collection(collection):
                if not overwrite:
                    raise MilvusCollectionError(
                        f"collection {collection!r} already exists at {self.uri}: open it with "
                        f"MilvusIndex.open, or pass overwrite=True to replace it")
                _read_meta(client, collection, self.uri)  # refuses a foreign collection
                client.drop_collection(collection)
            dt = pymilvus.DataType
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                          description=description)
            schema.add_field("id", dt.INT64, is_primary=True)
            if family == "binary":
                schema.add_field("vector", dt.BINARY_VECTOR, dim=self._d)
            else:
                schema.add_field("vector", dt.FLOAT_VECTOR, dim=self._d)
            schema.add_field("has_location", dt.BOOL)
            schema.add_field("lat", dt.DOUBLE)
            schema.add_field("lon", dt.DOUBLE)
            schema.add_field("tags", dt.ARRAY, element_type=dt.VARCHAR,
                             max_capacity=meta["max_tags"], max_length=meta["max_tag_bytes"])
            schema.add_field("has_time", dt.BOOL)
            schema.add_field("time_us", dt.INT64)
            schema.add_field("extra", dt.VARCHAR, max_length=MAX_EXTRA_BYTES)
            index_params = client.prepare_index_params()
            build = {"nlist": self.params["nlist"]} if kind == "ivf" else {}
            index_params.add_index("vector", index_type=self.index_type,
                                   metric_type=self.milvus_metric, params=build)
            extra = {} if num_shards is None else {
                "num_shards": check_int(num_shards, "num_shards")}
            try:
                client.create_collection(collection, schema=schema, index_params=index_params,
                                         consistency_level="Strong", **extra)
            except pymilvus.MilvusException:
                # the collection may exist without its index (an index type the engine
                # refuses): leave nothing half-made behind
                if client.has_collection(collection):
                    client.drop_collection(collection)
                raise

    # -- construction ------------------------------------------------------------------------

    def _connect(self, uri: Any, collection: str, token: str | None,
                 db_name: str | None) -> None:
        self._client, self.uri, self.db_name = _connect(uri, token, db_name)
        self.collection = collection

    def _load_meta(self, meta: dict[str, Any]) -> None:
        self._meta = meta
        #: whether the collection has the ``extra`` field (collections written before it lack it)
        self.has_extra = bool(meta.pop("_extra", True))
        self._family, self._kind = meta["family"], meta["kind"]
        self.params = dict(meta["params"])
        if self._family == "binary":
            self._nbits = meta["nbits"]
            self._d = 8 * code_bytes(self._nbits)
            self._checker: Any = BinaryIndex(self._nbits, "flat")
        else:
            self._d = meta["dim"]
            self._checker = FloatIndex(self._d, "flat", metric=self.params["metric"])

    @classmethod
    def open(cls, uri: Any, collection: str | None = None, *, token: str | None = None,
             db_name: str | None = None) -> MilvusIndex:
        """Open an existing hashlab collection (``uri`` may be a ``milvus://`` reference that
        names the collection). :class:`MilvusCollectionError` when there is none, or it was not
        written by :class:`MilvusIndex`."""
        if collection is None:
            if not is_milvus_uri(uri):
                raise MilvusRefError("name the collection (or give a milvus://...?"
                                     "collection=NAME reference)")
            collection = parse_milvus_uri(uri).collection
        check_collection_name(collection)
        self = cls.__new__(cls)
        self._connect(uri, collection, token, db_name)  # type: ignore[arg-type]
        with self._errors("open"):
            self._load_meta(_read_meta(self._client, collection, self.uri))
            self._client.load_collection(collection)
        return self

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Milvus's failures as :class:`MilvusCollectionError` naming the collection."""
        pymilvus = _pymilvus()
        try:
            with _quiet():
                yield
        except pymilvus.MilvusException as exc:
            raise MilvusCollectionError(
                f"Milvus could not {what} collection {self.collection!r} at {self.uri}: "
                f"{_message(exc)}") from exc

    # -- properties --------------------------------------------------------------------------

    @property
    def family(self) -> str:
        return self._family

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def nbits(self) -> int:
        if self._family != "binary":
            raise AttributeError("a float collection has dim, not nbits")
        return self._nbits

    @property
    def dim(self) -> int:
        if self._family != "float":
            raise AttributeError("a binary collection has nbits, not dim")
        return self._d

    @property
    def metric(self) -> str:
        """``hamming`` (binary), ``cosine`` or ``inner_product`` (float)."""
        return "hamming" if self._family == "binary" else self.params["metric"]

    @property
    def index_type(self) -> str:
        """The Milvus index type of the vector field (``BIN_FLAT``, ``IVF_FLAT``, ...)."""
        return KINDS[self._kind][self._family]

    @property
    def milvus_metric(self) -> str:
        return "HAMMING" if self._family == "binary" else "IP"

    @property
    def exact(self) -> bool:
        """Whether searches are exhaustive: ``flat``, or ``ivf`` probing every list."""
        return self._kind == "flat" or self.params["nprobe"] >= self.params["nlist"]

    @property
    def exact_radius(self) -> int:
        """Largest Hamming radius a ``range_search`` answers exactly (-1: never), as
        :attr:`BinaryIndex.exact_radius`."""
        return self.nbits if self.exact else -1

    @property
    def source(self) -> dict[str, Any] | None:
        """The ``source`` dict stored with the collection (None when none was given)."""
        return self._meta.get("source")

    @property
    def ref(self) -> str:
        """The ``milvus://`` reference of this collection (what ``hashlab search`` takes)."""
        return format_milvus_uri(self.uri, self.collection, db_name=self.db_name)

    @property
    def ntotal(self) -> int:
        return self._count("")

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        size = f"nbits={self._nbits}" if self._family == "binary" else f"dim={self._d}"
        return (f"MilvusIndex({self.ref!r}, {self._family}, {size}, kind={self._kind!r}, "
                f"ntotal={self.ntotal})")

    def set_params(self, **params: Any) -> None:
        """Change search-time params: ``nprobe`` (``ivf``)."""
        bad = set(params) - ({"nprobe"} if self._kind == "ivf" else set())
        if bad:
            raise ValueError(f"cannot set {sorted(bad)} on a {self._kind!r} collection; "
                             f"settable: {['nprobe'] if self._kind == 'ivf' else []}")
        for name, value in params.items():
            self.params[name] = check_int(value, name)

    # -- reading the collection --------------------------------------------------------------

    def _count(self, expr: str) -> int:
        with self._errors("count"):
            res = self._client.query(self.collection, filter=expr, output_fields=["count(*)"],
                                     consistency_level="Strong")
        return int(res[0]["count(*)"])

    def ids(self) -> np.ndarray:
        """Every id in the collection, sorted ascending (int64). (``BinaryIndex.ids`` lists
        insertion order; Milvus keeps no insertion order across segments.)

        Paged by primary key, as pymilvus's query iterator does (``id > last`` with the
        ``iterator`` flag, under which Milvus returns the smallest keys in order); each page
        is counted first (pymilvus 2.5 cannot decode an empty page of a collection with an
        ARRAY field), and the total is checked against ``ntotal``.
        """
        out: list[np.ndarray] = []
        last, total, page = -1, self._count(""), min(MAX_LIMIT, 8192)
        with self._errors("list the ids of"):
            while sum(a.size for a in out) < total and self._count(f"id > {last}"):
                rows = self._client.query(self.collection, filter=f"id > {last}",
                                          output_fields=["id"], limit=page, iterator="True",
                                          consistency_level="Strong")
                got = np.sort(np.asarray([int(r["id"]) for r in rows], dtype=np.int64))
                if got.size == 0:
                    break
                out.append(got)
                last = int(got[-1])
        ids = np.concatenate(out) if out else np.empty(0, np.int64)
        if ids.size != total or np.unique(ids).size != ids.size:
            raise MilvusCollectionError(
                f"listing the ids of collection {self.collection!r} at {self.uri} found "
                f"{ids.size} of {total} (was it written to meanwhile?)")
        return ids

    def _present(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` (unique) are in the collection."""
        found: list[int] = []
        with self._errors("look up ids in"):
            for start in range(0, ids.size, ID_CHUNK):
                chunk = ids[start : start + ID_CHUNK]
                expr = f"id in [{','.join(map(str, chunk.tolist()))}]"
                # counted first: pymilvus 2.5 fails to decode an empty query result of a
                # collection with an ARRAY field ("Unsupported data type: 0")
                if self._count(expr) == 0:
                    continue
                rows = self._client.query(self.collection, filter=expr, output_fields=["id"],
                                          limit=int(chunk.size), consistency_level="Strong")
                found.extend(int(r["id"]) for r in rows)
        return np.isin(ids, np.asarray(found, dtype=np.int64))

    def _max_id(self) -> int:
        """The largest id (-1 when empty): a binary search on ``count(id >= m)``."""
        if self._count("") == 0:
            return -1
        lo, hi = 0, _ID_RANGE[1]
        while lo < hi:
            mid = lo + (hi - lo + 1) // 2
            if self._count(f"id >= {mid}"):
                lo = mid
            else:
                hi = mid - 1
        return lo

    # -- data --------------------------------------------------------------------------------

    def _prepare(self, x: Any, name: str) -> np.ndarray:
        """Validate (and for cosine L2-normalise) codes / vectors as BinaryIndex/FloatIndex."""
        return self._checker._prepare(x, name)

    def _wire(self, x: np.ndarray) -> list[Any]:
        """Prepared rows as pymilvus takes them: bytes (binary) or float32 arrays."""
        if self._family == "binary":
            return [row.tobytes() for row in x]
        return list(x)

    def _metadata_rows(self, ids: np.ndarray, metadata: Any) -> list[dict[str, Any]]:
        """The scalar fields of each item, validated as :class:`MetadataTable` does (a bad
        value raises ValueError naming the id)."""
        n = ids.size
        if metadata is None:
            return [{"has_location": False, "lat": 0.0, "lon": 0.0, "tags": [],
                     "has_time": False, "time_us": 0}] * n
        if isinstance(metadata, Mapping) or not isinstance(metadata, Iterable):
            raise ValueError("metadata: expected one mapping (or None) per row")
        metadata = list(metadata)
        table = MetadataTable(ids, metadata)  # validates; counts the rows
        rows = []
        limit_tags, limit_bytes = self._meta["max_tags"], self._meta["max_tag_bytes"]
        for row, meta in enumerate(metadata):
            located = not np.isnan(table.lat[row])
            fields: dict[str, Any] = {
                "has_location": bool(located),
                "lat": float(table.lat[row]) if located else 0.0,
                "lon": float(table.lon[row]) if located else 0.0,
                "tags": [], "has_time": False, "time_us": 0}
            if meta:
                if meta.get("time") is not None:
                    fields["has_time"] = True
                    fields["time_us"] = _time_us(parse_time(meta["time"], "time"))
                keys = sorted({tag_key(t) for t in meta.get("tags") or []})
                what = f"metadata of item {int(ids[row])}"
                if len(keys) > limit_tags:
                    raise ValueError(f"{what}: {len(keys)} tags, more than this collection's "
                                     f"max_tags={limit_tags}")
                long = [tag_from_key(k) for k in keys if len(k.encode()) > limit_bytes]
                if long:
                    raise ValueError(f"{what}: tag {long[0]!r} is longer than this "
                                     f"collection's max_tag_bytes={limit_bytes} (escaped UTF-8)")
                fields["tags"] = keys
            rows.append(fields)
        return rows

    def _extra_rows(self, ids: np.ndarray, metadata: Any, extra: Any) -> list[str] | None:
        """The ``extra`` field of each row: JSON of ``{**extra[i], "metadata": metadata[i]}``
        (keys sorted), ``""`` when both are empty; None for a collection without the field."""
        if not self.has_extra:
            if extra is not None:
                raise ValueError(f"collection {self.collection!r} was written before the extra "
                                 "field existed: it cannot store extra data; rebuild it")
            return None
        n = ids.size
        metas = [None] * n if metadata is None else list(metadata)
        extras = [None] * n if extra is None else list(extra)
        if len(extras) != n:
            raise ValueError(f"extra: {len(extras)} entries for {n} rows")
        out = []
        for i, meta, more in zip(ids.tolist(), metas, extras, strict=True):
            if more is not None and not isinstance(more, Mapping):
                raise ValueError(f"extra of item {i}: expected a mapping or None")
            doc = dict(more or {})
            if "metadata" in doc:
                raise ValueError(f"extra of item {i}: the key 'metadata' is reserved")
            if meta:
                doc["metadata"] = dict(meta)
            try:
                text = json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                  allow_nan=False) if doc else ""
            except (TypeError, ValueError) as exc:
                raise ValueError(f"extra / metadata of item {i}: not plain JSON ({exc})") from None
            if len(text.encode()) > MAX_EXTRA_BYTES:
                raise ValueError(f"extra / metadata of item {i}: {len(text.encode())} bytes of "
                                 f"JSON, more than Milvus's {MAX_EXTRA_BYTES}")
            out.append(text)
        return out

    def add(self, x: Any, ids: Any = None, metadata: Sequence[Mapping[str, Any] | None] |
            None = None, *, extra: Sequence[Mapping[str, Any] | None] | None = None,
            batch_size: int = 10_000, progress: bool = False) -> None:
        """Insert ``x`` with unique int64 ``ids``, optional per-row ``metadata`` and ``extra``.

        ``ids=None`` numbers the rows from ``max(existing ids) + 1``; ids are validated as
        :meth:`BinaryIndex.add` does (1-D, non-negative, unique) and an id already in the
        collection is refused. ``metadata[i]`` (a mapping with ``lat``/``lon``, ``tags``,
        ``time``, or None) belongs to row ``i`` and is validated like :class:`MetadataTable`.
        ``extra[i]`` (a JSON-ready mapping, or None) is stored with row ``i`` in the ``extra``
        field, next to its metadata object (:meth:`items` reads both back; at most
        ``MAX_EXTRA_BYTES`` of JSON together).
        Everything is checked before the first row is inserted; rows go in ``batch_size`` at a
        time (a tqdm bar with ``progress``).
        """
        from tqdm.auto import tqdm

        x = self._prepare(x, "codes" if self._family == "binary" else "vectors")
        n = x.shape[0]
        batch_size = check_int(batch_size, "batch_size")
        if ids is None:
            start = self._max_id() + 1
            ids = np.arange(start, start + n, dtype=np.int64)
        ids = _as_ids(ids, n)
        present = self._present(ids)
        if present.any():
            raise ValueError(f"ids already in the index: {_fmt_ids(np.sort(ids[present]))}")
        fields = self._metadata_rows(ids, metadata)
        texts = self._extra_rows(ids, metadata, extra)
        if texts is not None:
            fields = [{**f, "extra": t} for f, t in zip(fields, texts, strict=True)]
        with self._errors("insert into"), tqdm(
                total=n, desc=f"milvus {self.collection}", unit="codes", disable=not progress,
                leave=False) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                rows = [{"id": int(i), "vector": v, **f} for i, v, f in zip(
                    ids[start:stop].tolist(), self._wire(x[start:stop]), fields[start:stop],
                    strict=True)]
                self._client.insert(self.collection, rows)
                bar.update(stop - start)

    def items(self, ids: Any, *, vectors: bool = True) -> dict[int, MilvusItem]:
        """The stored data of the given ids that are in the collection (absent ones are left
        out): vector (unless ``vectors=False``: an empty array), metadata object and extra."""
        arr = to_numpy(ids, "ids").reshape(-1)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids: expected integer ids, got {arr.dtype}")
        arr = np.unique(arr.astype(np.int64))
        fields = (["vector"] if vectors else []) + (["extra"] if self.has_extra else [])
        out: dict[int, MilvusItem] = {}
        width = code_bytes(self._nbits) if self._family == "binary" else self._d
        with self._errors("read items of"):
            for start in range(0, arr.size, ID_CHUNK):
                chunk = arr[start : start + ID_CHUNK]
                expr = f"id in [{','.join(map(str, chunk.tolist()))}]"
                if self._count(expr) == 0:  # see _present
                    continue
                rows = self._client.query(self.collection, filter=expr,
                                          output_fields=fields or ["id"],
                                          limit=int(chunk.size), consistency_level="Strong")
                for row in rows:
                    vec = np.empty(0, np.uint8 if self._family == "binary" else np.float32)
                    if vectors:
                        raw = row["vector"]
                        if self._family == "binary":
                            raw = raw[0] if isinstance(raw, list) else raw
                            vec = np.frombuffer(bytes(raw), np.uint8)[:width].copy()
                        else:
                            vec = np.asarray(raw, np.float32)
                    doc = json.loads(row["extra"]) if row.get("extra") else {}
                    meta = doc.pop("metadata", None)
                    out[int(row["id"])] = MilvusItem(int(row["id"]), vec, meta, doc)
        return out

    def count(self, filter: Any = None) -> int:
        """How many items ``filter`` selects (all without one); exact for ``near`` too (the
        bounding box's items are read and tested by distance, paged by id)."""
        cond = _compile(filter)
        if cond.near is None:
            return self._count(cond.expr)
        total, last, page = 0, -1, min(MAX_LIMIT, 8192)
        with self._errors("count"):
            while True:
                expr = cond.narrowed(last + 1, _ID_RANGE[1])
                if self._count(expr) == 0:
                    return total
                rows = self._client.query(self.collection, filter=expr,
                                          output_fields=["id", "lat", "lon"], limit=page,
                                          iterator="True", consistency_level="Strong")
                if not rows:
                    return total
                ids = np.asarray([int(r["id"]) for r in rows], np.int64)
                fields = {f: np.asarray([r[f] for r in rows], np.float64) for f in ("lat", "lon")}
                total += int(cond.mask(fields, ids.size).sum())
                last = int(ids.max())

    def remove(self, ids: Any) -> int:
        """Remove the given ids; every id must be present (:class:`UnknownIdsError` listing
        the others, nothing removed). Returns the number removed."""
        arr = to_numpy(ids, "ids")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"ids: expected a 1-D array of integer ids, got {arr.dtype} "
                             f"{arr.shape}")
        arr = np.unique(arr.astype(np.int64))
        present = self._present(arr)
        if not present.all():
            raise UnknownIdsError(arr[~present])
        with self._errors("delete from"):
            for start in range(0, arr.size, ID_CHUNK):
                self._client.delete(self.collection, ids=arr[start : start + ID_CHUNK].tolist())
        return int(arr.size)

    def drop(self) -> None:
        """Drop the collection (its data is gone)."""
        with self._errors("drop"):
            self._client.drop_collection(self.collection)

    # -- search primitives -------------------------------------------------------------------

    def _window_params(self, window: tuple[Any, Any] | None) -> dict[str, Any]:
        """Milvus range-search params of a score window.

        Binary ``(lo, hi)``: distances ``lo <= d < hi`` (Milvus: ``range_filter <= d <
        radius``). Float ``(lo, hi)``: similarities ``lo < s <= hi``, either side open when
        None (Milvus, IP: ``radius < s <= range_filter``).
        """
        params: dict[str, Any] = {}
        if window is not None:
            lo, hi = window
            if self._family == "binary":
                params = {"radius": int(hi), "range_filter": int(lo)}
            else:
                params = {"radius": _FLT_LOWEST if lo is None else float(lo)}
                if hi is not None:
                    params["range_filter"] = float(hi)
        if self._kind == "ivf":
            params["nprobe"] = self.params["nprobe"]
        return params

    def _pages(self, q: list[Any], limit: int, cond: _Condition, expr: str | None = None,
               window: tuple[Any, Any] | None = None) -> list[_Page]:
        """One Milvus search per batch of queries: per query (scores, ids, fields), unsorted."""
        params = self._window_params(window)
        search_params = {"params": params} if params else {}
        step = max(1, min(MAX_LIMIT, MAX_CALL_ENTRIES // limit))
        out: list[_Page] = []
        binary = self._family == "binary"
        with self._errors("search"):
            for start in range(0, len(q), step):
                res = self._client.search(
                    self.collection, data=q[start : start + step], limit=limit,
                    filter=cond.expr if expr is None else expr, output_fields=cond.fields,
                    search_params=search_params, anns_field="vector",
                    consistency_level="Strong")
                for hits in res:
                    ids = np.asarray(list(hits.ids), dtype=np.int64)
                    raw = np.asarray(list(hits.distances), dtype=np.float64 if binary
                                     else np.float32)
                    scores = np.rint(raw).astype(np.int32) if binary else raw
                    fields = None
                    if cond.fields:
                        fields = {f: np.asarray([h["entity"][f] for h in hits], np.float64)
                                  for f in cond.fields}
                    out.append((scores, ids, fields))
        return out

    def _sort(self, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
        key = scores if self._family == "binary" else -scores
        return np.lexsort((ids, key))

    def _enumerate(self, q: Any, window: tuple[Any, Any], cond: _Condition,
                   need: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every entry of one query inside ``window`` that passes ``cond``, sorted by (score,
        id); with ``need``, only the ``need`` smallest ids (for a window of one score).

        A page of ``MAX_LIMIT`` entries may be incomplete, so the id range is bisected until
        each piece's page is short; pieces are read in increasing id order, which lets the
        ``need`` smallest ids stop early.
        """
        stack, parts_s, parts_i, got = [_ID_RANGE], [], [], 0
        while stack:
            lo, hi = stack.pop()
            ((s, i, f),) = self._pages([q], MAX_LIMIT, cond, cond.narrowed(lo, hi), window)
            if i.size >= MAX_LIMIT and lo < hi:
                # split at the page's median id: a sample of the piece, so the halves are
                # about even whatever the spread of the ids (both halves non-empty intervals)
                mid = min(max(int(np.median(i)), lo), hi - 1)
                stack += [(mid + 1, hi), (lo, mid)]  # the lower half is read first
                continue
            keep = cond.mask(f, i.size)
            parts_s.append(s[keep])
            parts_i.append(i[keep])
            got += int(keep.sum())
            if need is not None and got >= need:
                break
        s = np.concatenate(parts_s) if parts_s else np.empty(0, self._score_dtype)
        i = np.concatenate(parts_i) if parts_i else np.empty(0, np.int64)
        order = self._sort(s, i)
        s, i = s[order], i[order]
        return (s, i) if need is None else (s[:need], i[:need])

    @property
    def _score_dtype(self) -> Any:
        return np.int32 if self._family == "binary" else np.float32

    def _topk_row(self, q: Any, k: int, cond: _Condition, page: _Page, limit: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-``k`` of one query, starting from its first page (asked with
        ``limit``): the cursor of the module docstring."""
        binary = self._family == "binary"
        taken_s: list[np.ndarray] = []
        taken_i: list[np.ndarray] = []
        seen: set[int] = set()
        count = 0
        window: tuple[Any, Any] | None = None

        def take(s: np.ndarray, i: np.ndarray) -> None:
            nonlocal count
            if not binary and seen:
                fresh = np.fromiter((j not in seen for j in i.tolist()), bool, i.size)
                s, i = s[fresh], i[fresh]
            s, i = s[: k - count], i[: k - count]
            taken_s.append(s)
            taken_i.append(i)
            seen.update(i.tolist())
            count += i.size

        while True:
            s, i, f = page
            keep = cond.mask(f, i.size)
            order = self._sort(s, i)
            s, i, keep = s[order], i[order], keep[order]
            if i.size < limit:  # the page holds every entry left in the window
                take(s[keep], i[keep])
                break
            w = s[-1]
            firm = (s < w) if binary else (s > w)
            take(s[firm & keep], i[firm & keep])
            if count == k:
                break
            if binary:  # entries at distance w, smallest ids first
                take(*self._enumerate(q, (int(w), int(w) + 1), cond, need=k - count))
                if count == k or w + 1 > self._nbits:
                    break
                window = (int(w) + 1, self._nbits + 1)
            else:  # everything within the tie slack of w, as FloatIndex completes ties
                floor = float(np.float32(w - _FLOAT_SLACK * max(1.0, abs(float(w)))))
                hi = None if window is None else window[1]
                take(*self._enumerate(q, (_prev32(floor), hi), cond))
                if count == k:
                    break
                window = (None, _prev32(floor))
            need = k - count
            limit = min(MAX_LIMIT, max(need + 1, 2 * limit if cond.near else need + 1))
            (page,) = self._pages([q], limit, cond, window=window)
        if not taken_i:
            return np.empty(0, self._score_dtype), np.empty(0, np.int64)
        return np.concatenate(taken_s), np.concatenate(taken_i)

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: Any, k: int, filter: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest entries per query among those ``filter`` selects.

        Returns ``(scores, ids)`` of shape ``[nq, k']``, ``k' = min(k, ntotal)``, like
        :meth:`BinaryIndex.search` (int32 Hamming distances ascending, missing: -1 / -1) and
        :meth:`FloatIndex.search` (float32 similarities descending, missing: -inf / -1); rows
        sorted by (score, id). Rows with fewer than ``k'`` selected entries end in missing
        entries. ``filter``: an :class:`ItemFilter`, its dict form, or a Milvus expression.
        Exact for ``flat`` (see the module docstring); a result over ``MAX_RESULT_BYTES``
        raises :class:`~hashlab.index.ResultTooLargeError` up front.
        """
        q = self._prepare(queries, "queries")
        nq = q.shape[0]
        k = min(check_int(k, "k"), self.ntotal)
        check_result_size(nq, k)
        missing = -1 if self._family == "binary" else -np.inf
        scores = np.full((nq, k), missing, dtype=self._score_dtype)
        ids = np.full((nq, k), -1, dtype=np.int64)
        if k == 0:
            return scores, ids
        cond = _compile(filter)
        limit = min(MAX_LIMIT, 2 * (k + 1) if cond.near else k + 1)
        wire = self._wire(q)
        pages = self._pages(wire, limit, cond)
        rows: Iterable[int] = range(nq)
        if self._family == "binary" and cond.near is None and limit == k + 1:
            rows = self._binary_ties(wire, k, cond, pages, scores, ids)
        for r in rows:
            s, i = self._topk_row(wire[r], k, cond, pages[r], limit)
            scores[r, : i.size], ids[r, : i.size] = s, i
        return scores, ids

    def _binary_ties(self, wire: list[Any], k: int, cond: _Condition, pages: list[_Page],
                     scores: np.ndarray, ids: np.ndarray) -> list[int]:
        """The common case of :meth:`_topk_row`, batched: fill every row whose first page
        (``k + 1`` asked) is final or whose tie at the k-th distance ``w`` is settled by one
        range search at ``w`` (rows grouped by ``w``, one Milvus call per group); returns the
        rows left to the cursor (a band of ``MAX_LIMIT`` entries or more)."""
        ties: dict[int, list[int]] = {}
        for r, (s, i, _) in enumerate(pages):
            order = self._sort(s, i)
            s, i = s[order], i[order]
            pages[r] = (s, i, None)
            if i.size <= k or s[k] > s[k - 1]:
                scores[r, : min(k, i.size)], ids[r, : min(k, i.size)] = s[:k], i[:k]
            else:
                ties.setdefault(int(s[k]), []).append(r)
        left: list[int] = []
        for w, group in ties.items():
            bands = self._pages([wire[r] for r in group], MAX_LIMIT, cond, window=(w, w + 1))
            for r, (_, band, _) in zip(group, bands, strict=True):
                if band.size >= MAX_LIMIT:
                    left.append(r)
                    continue
                s, i, _ = pages[r]
                firm = int(np.count_nonzero(s < w))
                ids[r, :firm], scores[r, :firm] = i[:firm], s[:firm]
                ids[r, firm:] = np.sort(band)[: k - firm]
                scores[r, firm:] = w
        return left

    def range_search(self, queries: Any, radius: Any, filter: Any = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every selected entry within ``radius``: per query ``(scores, ids)`` sorted by
        (score, id).

        Binary: Hamming distance ``<= radius`` (an int; above ``nbits`` it is read as
        ``nbits``). Float: ``radius`` is the minimum similarity (``>=``, as
        :meth:`FloatIndex.range_search`). A query with ``MAX_LIMIT`` hits or more is paged by
        id ranges, so nothing is cut off; once all hits pass ``MAX_RESULT_BYTES``,
        :class:`~hashlab.index.ResultTooLargeError`.
        """
        q = self._prepare(queries, "queries")
        binary = self._family == "binary"
        if binary:
            r = min(check_int(radius, "radius", 0), self._nbits)
            window: tuple[Any, Any] = (0, r + 1)
        else:
            t = check_real(radius, "min_similarity", -np.inf, strict=False)
            window = (max(_prev32(t), _FLT_LOWEST), None)
        cond = _compile(filter)
        wire = self._wire(q)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        total = 0
        for r_, (s, i, f) in enumerate(self._pages(wire, MAX_LIMIT, cond, window=window)):
            if i.size >= MAX_LIMIT:
                s, i = self._enumerate(wire[r_], window, cond)
            else:
                keep = cond.mask(f, i.size)
                order = self._sort(s[keep], i[keep])
                s, i = s[keep][order], i[keep][order]
            if not binary:  # Milvus's bound is exclusive: keep s >= t as FloatIndex does
                ok = s >= np.float32(t)
                s, i = s[ok], i[ok]
            total += i.size
            if total * RESULT_ENTRY_BYTES > idmap.MAX_RESULT_BYTES:
                raise range_limit_error(total, r_ + 1, q.shape[0], idmap.MAX_RESULT_BYTES)
            out.append((s, i))
        return out

    def query(self, queries: Any, *, k: int | None = None, radius: int | None = None,
              filter: Any = None, exact: bool = False) -> QueryResult:
        """One search as a :class:`~hashlab.index.QueryResult`, like
        :func:`~hashlab.index.run_query`: top ``k`` or (binary) every code within ``radius``.

        ``exact=True`` on an ``ivf`` collection probes every list for this call
        (``nprobe = nlist``); without it an approximate collection's result says so
        (``exact`` False, a warning).
        """
        if (k is None) == (radius is None):
            raise ValueError("give exactly one of k (top-k search) and radius (range search)")
        if radius is not None and self._family != "binary":
            raise ValueError("radius: a Hamming radius needs a binary collection")
        old = dict(self.params)
        if exact and not self.exact:
            self.params["nprobe"] = self.params["nlist"]
        try:
            is_exact = self.exact
            if k is not None:
                scores, ids = self.search(queries, k, filter)
                counts = np.count_nonzero(ids >= 0, axis=1).tolist()
                hits = [(scores[r, :c], ids[r, :c]) for r, c in enumerate(counts)]
                keff: int | None = scores.shape[1]
            else:
                hits = self.range_search(queries, radius, filter)
                keff = None
        finally:
            self.params = old
        warnings = [] if is_exact else [
            f"the {self.index_type} Milvus collection {self.collection!r} (nlist="
            f"{self.params['nlist']}, nprobe={self.params['nprobe']}) is approximate: results "
            f"may miss entries; use --exact (exact=True) to probe every list, or a flat "
            f"collection"]
        method = (f"Milvus {self.index_type} collection {self.collection!r}"
                  + (f" (nprobe={self.params['nlist']})" if exact and self._kind == "ivf" else ""))
        return QueryResult(hits=hits, exact=is_exact, warnings=warnings,
                           query_exact=np.full(len(hits), is_exact), k=keff,
                           radius=None if radius is None else min(int(radius), self._nbits),
                           method=method)


def _read_meta(client: Any, collection: str, uri: str) -> dict[str, Any]:
    """The JSON record of a hashlab collection, checked; MilvusCollectionError otherwise."""
    if not client.has_collection(collection):
        known = ", ".join(sorted(client.list_collections())) or "none"
        raise MilvusCollectionError(
            f"no collection {collection!r} at {uri} (collections there: {known}); build one "
            "with `hashlab index RUN --backend milvus --uri URI --collection NAME`")
    desc = client.describe_collection(collection)
    try:
        meta = json.loads(desc.get("description") or "")
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != DESCRIPTION_FORMAT:
        raise MilvusCollectionError(f"collection {collection!r} at {uri} was not written by "
                                    "hashlab (its description holds no hashlab record)")
    if meta.get("version") != FORMAT_VERSION:
        raise MilvusCollectionError(f"collection {collection!r} at {uri}: format version "
                                    f"{meta.get('version')!r} is not supported (this hashlab "
                                    f"reads version {FORMAT_VERSION})")
    names = [f["name"] for f in desc.get("fields", [])]
    family = meta.get("family")
    size = "nbits" if family == "binary" else "dim"
    ok = (family in ("binary", "float") and meta.get("kind") in KINDS
          and isinstance(meta.get(size), int) and not isinstance(meta.get(size), bool)
          and meta[size] > 0 and isinstance(meta.get("params"), dict)
          and (family == "binary" or meta["params"].get("metric") in METRICS)
          and all(isinstance(meta.get(key), int) for key in ("max_tags", "max_tag_bytes"))
          and names in (list(FIELDS), list(FIELDS[:-1])))
    if not ok:
        raise MilvusCollectionError(f"collection {collection!r} at {uri}: its hashlab record "
                                    "or schema is damaged or from another version")
    meta["_extra"] = names == list(FIELDS)  # read by MilvusIndex._load_meta, not stored
    return meta


# ---------------------------------------------------------------------------------------------
# the run a collection was built from (``hashlab index --backend milvus`` / ``hashlab search``)
# ---------------------------------------------------------------------------------------------

_SOURCE_FIELDS = ("run", "split", "code", "model_sha256")


def check_run_source(index: MilvusIndex, run: Any = None, *,
                     count: bool = True) -> dict[str, Any]:
    """The ``source`` record ``hashlab index`` stored with ``index``, checked (its fields, and
    that its code matches the collection's family); with ``run`` (a
    :class:`~hashlab.encode.TrainedRun`), also that the run's current model made the codes
    (same ``model.pt`` SHA-256, same code width) from a split of the current size, as
    :func:`hashlab.eval.common.load_run_index` checks a saved index. ``count=False`` skips the
    size check (``hashlab serve`` adds and deletes items in the collection)."""
    source = index.source
    where = f"collection {index.collection!r} at {index.uri}"
    hint = (f"; rebuild it: hashlab index RUN --split SPLIT --kind {index.kind}"
            f"{' --code float' if index.family == 'float' else ''} --backend milvus --uri "
            f"{index.uri} --collection {index.collection}")
    if not isinstance(source, dict) or not all(
            isinstance(source.get(key), str) for key in _SOURCE_FIELDS):
        raise MilvusCollectionError(f"{where} records no run it was built from (run, split, "
                                    f"code, model_sha256): it was not built by `hashlab index`"
                                    f"{hint}")
    if (source["code"] == "binary") != (index.family == "binary"):
        raise MilvusCollectionError(f"{where}: says {source['code']} codes but holds "
                                    f"{index.family} ones{hint}")
    if run is None:
        return source
    if source["model_sha256"] != run.model_sha256:
        raise MilvusCollectionError(
            f"{where} was built from another model.pt (SHA-256 {source['model_sha256'][:12]}…) "
            f"than {run.run_dir}'s current one ({run.model_sha256[:12]}…): the run was "
            f"retrained or replaced, and its codes would not match the queries{hint}")
    size = index.nbits if index.family == "binary" else index.dim
    if size != run.model.dim:
        raise MilvusCollectionError(f"{where} holds {size}-dimensional codes, but the model "
                                    f"produces {run.model.dim}{hint}")
    if not count:
        return source
    n_split = len(run.load_split(source["split"]))
    if index.ntotal != n_split:
        raise MilvusCollectionError(f"{where} holds {index.ntotal} codes but the run's "
                                    f"{source['split']} split has {n_split} images (ids = "
                                    f"positions){hint}")
    return source


def check_writable(uri: Any, collection: str) -> None:
    """Refuse, before any work, a target ``hashlab index --backend milvus`` cannot write: a
    bad collection name, an unreachable server, or a collection of that name that hashlab did
    not write (a hashlab collection is replaced)."""
    check_collection_name(collection)
    client, client_uri, _ = _connect(uri, None, None)
    pymilvus = _pymilvus()
    try:
        with _quiet():
            if client.has_collection(collection):
                _read_meta(client, collection, client_uri)
    except pymilvus.MilvusException as exc:
        raise MilvusCollectionError(f"Milvus at {client_uri} failed: {_message(exc)}") from exc


def write_run_collection(run: Any, x: Any, ids: Any, *, uri: Any, collection: str, split: str,
                         code: str, kind: str = "flat", progress: bool = False,
                         metadata: Sequence[Mapping[str, Any] | None] | None = None
                         ) -> MilvusIndex:
    """Write the ``code`` codes ``x`` of ``run``'s ``split`` (ids = positions) into a new
    collection, replacing a hashlab collection of that name, with the same ``source`` record
    as a FAISS index's ``source.json`` (:func:`hashlab.eval.common.index_source`);
    ``metadata``: one metadata object (or None) per row, for filtered search."""
    from hashlab.eval.common import index_source

    arr = to_numpy(x, "codes")
    size = {"nbits": run.model.dim} if code == "binary" else {"dim": int(arr.shape[1])}
    index = MilvusIndex(uri, collection, family=code, kind=kind,
                        source=index_source(run, split, code), overwrite=True, **size)
    index.add(arr, ids, metadata, progress=progress)
    return index
