"""Binary-code utilities: packing, unpacking and Hamming distances.

Bit layout is the one FAISS's binary indexes use: bits are packed little-endian within each
byte, i.e. bit ``j`` of byte ``i`` holds code bit ``8 * i + j``. This equals
``np.packbits(bits, axis=1, bitorder="little")`` and ``faiss.fvecs2bitvecs`` on ±1 vectors.
Padding bits (when ``nbits`` is not a multiple of 8) are always zero.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

__all__ = [
    "to_numpy",
    "code_bytes",
    "check_packed",
    "pack_bits",
    "unpack_bits",
    "to_signs",
    "hamming_distances",
]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or array-like to a numpy array (no copy if possible)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            t = x.detach().cpu()
            if t.dtype in (torch.bfloat16, torch.float16):
                t = t.float()
            return t.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(
            f"{name}: expected a numpy array or torch tensor, got {type(x)!r}"
        ) from exc


def code_bytes(nbits: int) -> int:
    """Number of bytes of one packed code of ``nbits`` bits: ``ceil(nbits / 8)``."""
    if isinstance(nbits, bool) or not isinstance(nbits, (int, np.integer)):
        raise ValueError(f"nbits: expected a positive int, got {nbits!r} ({type(nbits).__name__})")
    if nbits <= 0:
        raise ValueError(f"nbits: expected a positive int, got {nbits}")
    return (int(nbits) + 7) // 8


def check_packed(packed: Any, nbits: int | None = None, name: str = "packed") -> int:
    """Validate a packed code array (2-D, uint8, non-empty, zero padding); return its nbits.

    With ``nbits=None`` the code length is taken as ``8 * packed.shape[1]``.
    """
    arr = to_numpy(packed, name)
    if arr.dtype != np.uint8:
        raise ValueError(f"{name}: expected packed codes of dtype uint8, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [N, nbytes], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    if nbits is None:
        return 8 * arr.shape[1]
    nbytes = code_bytes(nbits)
    if arr.shape[1] != nbytes:
        raise ValueError(
            f"{name}: nbits={nbits} needs {nbytes} bytes per code, "
            f"got {arr.shape[1]} bytes per code (shape {arr.shape})"
        )
    rem = nbits % 8
    if rem:
        pad_mask = np.uint8((0xFF << rem) & 0xFF)
        if np.any(arr[:, -1] & pad_mask):
            raise ValueError(
                f"{name}: padding bits beyond nbits={nbits} are not zero; "
                "the codes were not packed with this nbits"
            )
    return int(nbits)


def pack_bits(codes: Any) -> np.ndarray:
    """Pack codes ``[N, nbits]`` to uint8 ``[N, ceil(nbits / 8)]`` (FAISS bit order).

    ``codes`` may be a numpy array or torch tensor of bools, {0, 1}, {-1, +1} or real values;
    the bit is ``value > 0``.
    """
    arr = to_numpy(codes, "codes")
    if arr.ndim != 2:
        raise ValueError(f"codes: expected a 2-D array [N, nbits], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"codes: expected a non-empty array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        bits = arr
    elif np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
            raise ValueError("codes: contains NaN; cannot decide the sign of a NaN")
        bits = arr > 0
    else:
        raise ValueError(f"codes: expected bool, integer or real dtype, got dtype {arr.dtype}")
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_bits(packed: Any, nbits: int) -> np.ndarray:
    """Unpack uint8 ``[N, ceil(nbits / 8)]`` codes to uint8 {0, 1} ``[N, nbits]``."""
    nbits = check_packed(packed, nbits)
    arr = to_numpy(packed, "packed")
    return np.unpackbits(arr, axis=1, count=nbits, bitorder="little")


def to_signs(packed: Any, nbits: int) -> np.ndarray:
    """Unpack codes to float32 ±1 ``[N, nbits]`` (bit 1 -> +1, bit 0 -> -1)."""
    bits = unpack_bits(packed, nbits).astype(np.float32)
    bits *= 2.0
    bits -= 1.0
    return bits


def hamming_distances(
    queries_packed: Any, database_packed: Any, out: np.ndarray | None = None
) -> np.ndarray:
    """All pairwise Hamming distances, int32 ``[nq, ndb]``, computed by ``faiss.hammings``.

    Both inputs are packed uint8 codes of the same width. Memory is ``4 * nq * ndb`` bytes;
    chunk the queries for large inputs. ``out`` (optional) is a C-contiguous int32
    ``[nq, ndb]`` array to write into.
    """
    check_packed(queries_packed, None, "queries_packed")
    check_packed(database_packed, None, "database_packed")
    a = np.ascontiguousarray(to_numpy(queries_packed, "queries_packed"))
    b = np.ascontiguousarray(to_numpy(database_packed, "database_packed"))
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            "queries_packed and database_packed must have the same bytes per code, "
            f"got {a.shape[1]} and {b.shape[1]}"
        )
    na, nb, nbytes = a.shape[0], b.shape[0], a.shape[1]
    if out is None:
        out = np.empty((na, nb), dtype=np.int32)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != np.int32
        or out.shape != (na, nb)
        or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"out: expected a C-contiguous int32 array of shape {(na, nb)}, got "
            f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}"
        )
    faiss.hammings(faiss.swig_ptr(a), faiss.swig_ptr(b), na, nb, nbytes, faiss.swig_ptr(out))
    return out
