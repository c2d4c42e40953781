"""Saving and loading search indexes as directories, atomically and with integrity checks.

An index directory holds::

    index.faiss     the FAISS index (IDMap2-wrapped, so user ids are inside it)
    manifest.json   {format_version, family, kind, factory, nbits | dim, count, params,
                     created, model_run, faiss_version, sha256, file_size[, source_sha256]}
    source.json     optional: what the index was built from (``save_index(..., source=...)``;
                    ``hashlab index`` records run, split, code and the model's SHA-256)
    <extra files>   optional: further files written with the index (``save_index(...,
                    extra_files={name: bytes})``, e.g. ``hashlab serve``'s ``items.json``)

``factory`` is the FAISS factory string of the index (e.g. ``BHash2x8``; see
:mod:`hashlab.index.kinds`), for the record: loading does not need it, and manifests written
before it was added (same format version) load as before. The FAISS class the loaded index must
have comes from the kind's spec.

:func:`save_index` writes a complete new directory next to the target (``.<name>.tmp-*``),
then swaps it in with two renames (under a lock on the parent directory, so concurrent saves
of one path serialise: the last one wins whole); the previous directory is removed only after the
new one is in place, so an exception (or crash) while writing leaves the previous index
untouched. ``source.json`` is written inside the new directory, so it is swapped in with the
index it describes, and its SHA-256 is in the manifest; so is every extra file (their SHA-256s
are in the manifest's ``extra_files``; :func:`read_extra_file` reads one back checked).
:func:`load_index` checks the manifest, format version, size and SHA-256 of ``index.faiss`` (and
of ``source.json``) before deserializing it, and raises :class:`IndexFileError` naming the bad
file otherwise. No file of an index is unpickled: FAISS's own format and JSON only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from hashlab.artifacts import SHA256_PATTERN, parse_json_object, read_json_object, sha256_bytes
from hashlab.errors import HashlabError
from hashlab.index.binary import BinaryIndex
from hashlab.index.floats import FloatIndex
from hashlab.index.registry import BINARY_KINDS, FLOAT_KINDS

__all__ = ["FORMAT_VERSION", "SOURCE_FILE", "IndexFileError", "save_index", "load_index",
           "read_extra_file", "read_manifest", "read_source"]

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
#: the optional sidecar: what the index was built from (written by ``save_index(source=...)``)
SOURCE_FILE = "source.json"
#: what an extra file of an index directory may be called (one plain file name)
_EXTRA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class IndexFileError(HashlabError):
    """An index directory or file is missing, corrupt, foreign or incompatible."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory`` (no lock file left behind)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock on this platform
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _serialize(index: BinaryIndex | FloatIndex) -> bytes:
    if isinstance(index, BinaryIndex):
        return faiss.serialize_index_binary(index.faiss_index).tobytes()
    return faiss.serialize_index(index.faiss_index).tobytes()


def _write_faiss_file(index: BinaryIndex | FloatIndex, path: Path) -> str:
    """Write the serialized FAISS index to ``path``; return its SHA-256 hex digest."""
    data = _serialize(index)
    _write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _write_manifest(manifest: dict[str, Any], path: Path) -> None:
    _write_bytes(path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))


def _check_replaceable(path: Path) -> None:
    if path.exists() and not (path.is_dir() and (path / MANIFEST_FILE).is_file()):
        if not path.is_dir() or any(path.iterdir()):
            raise IndexFileError(
                f"{path}: exists and is not an index directory (no {MANIFEST_FILE}); "
                "refusing to overwrite it"
            )


def save_index(
    index: BinaryIndex | FloatIndex, path: str | Path, *, model_run: str | None = None,
    source: dict[str, Any] | None = None, extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write ``index`` to the directory ``path`` atomically (replacing a previous index there).

    ``model_run`` (e.g. the run directory whose model produced the codes) is recorded in the
    manifest. ``source`` (a JSON-serialisable dict: what the index was built from) is written
    as ``source.json`` in the same atomic swap, its SHA-256 recorded in the manifest.
    ``extra_files`` (file name → bytes) are written in the same swap too, their SHA-256s in the
    manifest's ``extra_files``. Refuses to replace an existing path that is not an index
    directory.
    """
    if not isinstance(index, (BinaryIndex, FloatIndex)):
        raise TypeError(f"index: expected a BinaryIndex or FloatIndex, got {type(index).__name__}")
    if source is not None and not isinstance(source, dict):
        raise TypeError(f"source: expected a dict, got {type(source).__name__}")
    source_bytes = None if source is None else (
        json.dumps(source, indent=2) + "\n").encode("utf-8")
    extra = _check_extra_files(extra_files)
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = path.parent / f".{path.name}.tmp-{token}"
    old = path.parent / f".{path.name}.old-{token}"
    tmp.mkdir()
    try:
        digest = _write_faiss_file(index, tmp / INDEX_FILE)
        if source_bytes is not None:
            _write_bytes(tmp / SOURCE_FILE, source_bytes)
        for name, data in extra.items():
            _write_bytes(tmp / name, data)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "family": "binary" if isinstance(index, BinaryIndex) else "float",
            "kind": index.kind,
            "factory": index.factory,
            "count": index.ntotal,
            "params": index.params,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_run": None if model_run is None else str(model_run),
            "faiss_version": faiss.__version__,
            "sha256": digest,
            "file_size": (tmp / INDEX_FILE).stat().st_size,
        }
        if isinstance(index, BinaryIndex):
            manifest["nbits"] = index.nbits
        else:
            manifest["dim"] = index.dim
        if source_bytes is not None:
            manifest["source_sha256"] = sha256_bytes(source_bytes)
        if extra:
            manifest["extra_files"] = {name: sha256_bytes(data) for name, data in extra.items()}
        _write_manifest(manifest, tmp / MANIFEST_FILE)
        _fsync_dir(tmp)
        with _dir_lock(path.parent):
            _check_replaceable(path)  # again: another writer may have acted meanwhile
            if path.exists():
                os.replace(path, old)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old, path)
                    raise
            else:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def _check_extra_files(extra_files: Mapping[str, bytes] | None) -> dict[str, bytes]:
    if extra_files is None:
        return {}
    if not isinstance(extra_files, Mapping):
        raise TypeError(f"extra_files: expected a mapping, got {type(extra_files).__name__}")
    for name, data in extra_files.items():
        if not (isinstance(name, str) and _EXTRA_NAME.fullmatch(name)) or name in (
                INDEX_FILE, MANIFEST_FILE, SOURCE_FILE):
            raise ValueError(f"extra_files: {name!r} is not a plain file name other than "
                             f"{INDEX_FILE}, {MANIFEST_FILE} and {SOURCE_FILE}")
        if not isinstance(data, bytes):
            raise TypeError(f"extra_files[{name!r}]: expected bytes, got {type(data).__name__}")
    return dict(extra_files)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of the index directory ``path``."""
    path = Path(path)
    if not path.exists():
        leftovers = sorted(p.name for p in path.parent.glob(f".{path.name}.old-*"))
        hint = f" (an interrupted save left {leftovers[0]} next to it)" if leftovers else ""
        raise IndexFileError(f"{path}: index directory does not exist{hint}")
    if not path.is_dir():
        raise IndexFileError(
            f"{path}: not an index directory (expected a directory with {MANIFEST_FILE} and "
            f"{INDEX_FILE}, got a file)"
        )
    mpath = path / MANIFEST_FILE
    if not mpath.is_file():
        raise IndexFileError(f"{mpath}: missing; {path} is not a hashlab index directory")
    manifest = read_json_object(mpath, "index manifest", IndexFileError)
    if "format_version" not in manifest:
        raise IndexFileError(f"{mpath}: not a hashlab index manifest (no format_version)")
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexFileError(
            f"{mpath}: format_version {manifest['format_version']!r} is not supported "
            f"(this hashlab reads version {FORMAT_VERSION})"
        )
    family = manifest.get("family")
    size_key = "nbits" if family == "binary" else "dim"
    required = ("family", "kind", "count", "params", "sha256", "file_size", size_key)
    missing = [key for key in required if key not in manifest]
    if missing:
        raise IndexFileError(f"{mpath}: missing key(s) {missing}")
    kinds = BINARY_KINDS if family == "binary" else FLOAT_KINDS if family == "float" else ()
    if manifest["kind"] not in kinds:
        hint = (f" (known: {', '.join(kinds)}; a kind from a plug-in needs the plug-in loaded)"
                if kinds else "")
        raise IndexFileError(
            f"{mpath}: unknown index family/kind {family!r}/{manifest['kind']!r}{hint}")
    size = manifest[size_key]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise IndexFileError(f"{mpath}: {size_key} must be a positive int, got {size!r}")
    for key in ("count", "file_size"):
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise IndexFileError(f"{mpath}: {key} must be a non-negative int, got {value!r}")
    for key in ("sha256", "source_sha256"):
        if key in manifest and not (isinstance(manifest[key], str)
                                    and SHA256_PATTERN.fullmatch(manifest[key])):
            raise IndexFileError(f"{mpath}: {key} must be a SHA-256 hex digest")
    if not isinstance(manifest["params"], dict):
        raise IndexFileError(f"{mpath}: params must be an object, got {manifest['params']!r}")
    extra = manifest.get("extra_files", {})
    if not (isinstance(extra, dict) and all(
            isinstance(k, str) and _EXTRA_NAME.fullmatch(k) and isinstance(v, str)
            and SHA256_PATTERN.fullmatch(v) for k, v in extra.items())):
        raise IndexFileError(f"{mpath}: extra_files must map file names to SHA-256 hex digests")
    return manifest


def read_source(path: str | Path, manifest: dict[str, Any] | None = None
                ) -> dict[str, Any] | None:
    """The ``source.json`` of the index directory ``path`` (None when there is none and the
    manifest records none), checked against the SHA-256 the manifest records for it."""
    path = Path(path)
    manifest = read_manifest(path) if manifest is None else manifest
    spath = path / SOURCE_FILE
    expected = manifest.get("source_sha256")
    if not spath.exists():
        if expected is not None:
            raise IndexFileError(f"{spath}: missing, but {MANIFEST_FILE} records one; the index "
                                 "directory is incomplete: rebuild the index")
        return None
    try:
        data = spath.read_bytes()
    except OSError as exc:
        raise IndexFileError(f"{spath}: cannot read it ({exc.strerror or exc})") from exc
    if expected is not None and sha256_bytes(data) != expected:
        raise IndexFileError(f"{spath}: SHA-256 does not match {MANIFEST_FILE}; it was modified "
                             "or belongs to another index: rebuild the index")
    return parse_json_object(data, spath, "index source file", IndexFileError)


def read_extra_file(path: str | Path, name: str, manifest: dict[str, Any] | None = None
                    ) -> bytes | None:
    """The extra file ``name`` saved with the index directory ``path`` (None when the manifest
    records none of that name), checked against its SHA-256 in the manifest."""
    path = Path(path)
    manifest = read_manifest(path) if manifest is None else manifest
    expected = manifest.get("extra_files", {}).get(name)
    if expected is None:
        return None
    fpath = path / name
    try:
        data = fpath.read_bytes()
    except OSError as exc:
        raise IndexFileError(f"{fpath}: cannot read it ({exc.strerror or exc}); the index "
                             "directory is incomplete") from exc
    if sha256_bytes(data) != expected:
        raise IndexFileError(f"{fpath}: SHA-256 does not match {MANIFEST_FILE}; it was modified "
                             "or belongs to another index")
    return data


def load_index(
    path: str | Path, *, expect_nbits: int | None = None, expect_dim: int | None = None
) -> BinaryIndex | FloatIndex:
    """Load an index directory written by :func:`save_index`, verifying its integrity.

    ``expect_nbits`` / ``expect_dim``: the code length / embedding size of the model the
    queries will come from; an index built for a different size is refused.
    """
    path = Path(path)
    manifest = read_manifest(path)
    mpath = path / MANIFEST_FILE
    family = manifest["family"]
    if expect_nbits is not None:
        if family != "binary" or manifest["nbits"] != expect_nbits:
            got = f"{manifest['nbits']}-bit codes" if family == "binary" else "float vectors"
            raise IndexFileError(
                f"{path}: index holds {got}, but the model produces {expect_nbits}-bit codes; "
                "rebuild the index with this model"
            )
    if expect_dim is not None:
        if family != "float" or manifest["dim"] != expect_dim:
            got = f"dim={manifest['dim']}" if family == "float" else "binary codes"
            raise IndexFileError(
                f"{path}: index holds {got}, but the model produces dim={expect_dim} vectors"
            )
    fpath = path / INDEX_FILE
    if not fpath.is_file():
        raise IndexFileError(f"{fpath}: missing; the index directory is incomplete")
    data = fpath.read_bytes()
    if len(data) != manifest["file_size"]:
        raise IndexFileError(
            f"{fpath}: size {len(data)} bytes, manifest says {manifest['file_size']}; "
            "the file is truncated or was replaced"
        )
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise IndexFileError(
            f"{fpath}: SHA-256 does not match {mpath.name}; the file is corrupt or was modified"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        if family == "binary":
            raw = faiss.deserialize_index_binary(buf)
            index: BinaryIndex | FloatIndex = BinaryIndex._from_faiss(
                raw, manifest["nbits"], manifest["kind"], manifest["params"]
            )
        else:
            raw = faiss.deserialize_index(buf)
            index = FloatIndex._from_faiss(
                raw, manifest["dim"], manifest["kind"], manifest["params"]
            )
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise IndexFileError(
            f"{fpath}: not a readable {family} FAISS index of the kind the manifest names "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if index.ntotal != manifest["count"]:
        raise IndexFileError(
            f"{fpath}: holds {index.ntotal} entries, manifest says {manifest['count']}"
        )
    read_source(path, manifest)  # a sidecar that does not belong to this index is refused
    for name in manifest.get("extra_files", {}):
        read_extra_file(path, name, manifest)
    return index
