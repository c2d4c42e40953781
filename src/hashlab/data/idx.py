"""Read and write IDX files (the MNIST format), plain or gzip-compressed.

Layout: two zero bytes, a dtype code byte, an ndim byte, ``ndim`` big-endian uint32 sizes, then
the array data in big-endian C order. Gzip is detected by its magic bytes, not the file name.
Every problem with a file raises :class:`~hashlab.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hashlab.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

#: IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_FOR: dict[tuple[str, int], int] = {(dt.kind, dt.itemsize): c for c, dt in IDX_DTYPES.items()}
_SUPPORTED = "uint8, int8, int16, int32, float32, float64"
_CHUNK = 1 << 20

PathLike = str | os.PathLike[str]


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC


def _os_error(path: Path, exc: OSError) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return DataError(f"{path}: is a directory, not an IDX file")
    return DataError(f"{path}: cannot read file ({exc.strerror or exc})")


def _gzip_error(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, EOFError):
        what = "truncated gzip stream (the file ends before the end-of-stream marker)"
    else:
        what = f"corrupt gzip data ({exc})"
    return DataError(f"{path}: {what}; re-create or re-download the file")


def _read_content(path: Path) -> bytes:
    """The whole (decompressed) content of an IDX file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _os_error(path, exc) from exc
    if not raw:
        raise DataError(f"{path}: file is empty (0 bytes)")
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise _gzip_error(path, exc) from exc
        if not raw:
            raise DataError(f"{path}: gzip stream decompresses to 0 bytes")
    return raw


def _open_content(path: Path) -> BinaryIO:
    """A binary stream of the (decompressed) content; caller handles gzip errors on read."""
    try:
        if _is_gzip(path):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise _os_error(path, exc) from exc


def _parse_header(head: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse the header at the start of ``head``; returns (dtype, shape, header length)."""
    if not head:
        raise DataError(f"{path}: file is empty (0 bytes)")
    if len(head) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(head)} bytes, need >= 4)")
    if head[0] != 0 or head[1] != 0:
        raise DataError(
            f"{path}: not an IDX file: bad magic {head[:4].hex(' ')} "
            "(expected two zero bytes, a dtype code and ndim)"
        )
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise DataError(
            f"{path}: truncated header: declares {ndim} dimensions ({header_len} header bytes) "
            f"but the content is only {len(head)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", head[4:header_len])
    return IDX_DTYPES[code], tuple(int(s) for s in shape), header_len


def read_idx_header(path: PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """Read only the header: (native-order dtype, shape). Cheap even for large gzip files."""
    path = Path(path)
    stream = _open_content(path)
    try:
        with stream:
            head = stream.read(4)
            if len(head) == 4 and head[0] == 0 and head[1] == 0:
                head += stream.read(4 * head[3])
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(path, exc) from exc
    dtype, shape, _ = _parse_header(head, path)
    return dtype.newbyteorder("="), shape


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-byte-order numpy array."""
    path = Path(path)
    content = _read_content(path)
    dtype, shape, header_len = _parse_header(content, path)
    expected = math.prod(shape) * dtype.itemsize
    actual = len(content) - header_len
    if actual != expected:
        why = "truncated" if actual < expected else "trailing data after the array"
        raise DataError(
            f"{path}: payload is {actual} bytes but the header declares shape {shape} of "
            f"{dtype.newbyteorder('=').name} = {expected} bytes ({why})"
        )
    arr = np.frombuffer(content, dtype=dtype, count=math.prod(shape), offset=header_len)
    return arr.reshape(shape).astype(dtype.newbyteorder("="))  # copy: writable, native order


def content_sha256(path: PathLike) -> str:
    """SHA-256 hex digest of the file's decompressed content (of the raw bytes if not gzip)."""
    path = Path(path)
    digest = hashlib.sha256()
    stream = _open_content(path)
    try:
        with stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise _gzip_error(path, exc) from exc
    return digest.hexdigest()


def write_idx(path: PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, atomically; gzip if ``compress`` (default: path ends .gz)."""
    path = Path(path)
    arr = np.asarray(array)
    code = _CODE_FOR.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise DataError(f"{path}: cannot write dtype {arr.dtype} as IDX (supported: {_SUPPORTED})")
    if arr.ndim > 255:
        raise DataError(f"{path}: IDX supports at most 255 dimensions, got {arr.ndim}")
    if any(s >= 2**32 for s in arr.shape):
        raise DataError(f"{path}: IDX dimension sizes must be < 2**32, got shape {arr.shape}")
    if compress is None:
        compress = path.name.lower().endswith(".gz")
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).tobytes()
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise DataError(f"{path}: cannot write file ({exc.strerror or exc})") from exc
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write file ({exc.strerror or exc})") from exc
        raise
    return path
