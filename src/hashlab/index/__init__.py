"""Search: bit packing and FAISS-backed indexes (binary Hamming and float cosine), persistence.

Index kinds are :class:`IndexKind` specs in the ``BINARY_KINDS`` / ``FLOAT_KINDS`` registries
(built-in ones in :mod:`hashlab.index.kinds_binary` and :mod:`hashlab.index.kinds_float`).
:func:`run_query` (:mod:`hashlab.index.query`) runs one search that is exact or says it may not
be, within a memory limit.
"""

from hashlab.index.binary import BinaryIndex, UnknownIdsError
from hashlab.index.codes import code_bytes, hamming_distances, pack_bits, to_signs, unpack_bits
from hashlab.index.floats import FloatIndex
from hashlab.index.idmap import ResultTooLargeError
from hashlab.index.kinds import IndexKind, register_kind
from hashlab.index.query import QueryResult, run_query
from hashlab.index.registry import BINARY_KINDS, FLOAT_KINDS
from hashlab.index.store import IndexFileError, load_index, read_manifest, save_index

__all__ = [
    "BINARY_KINDS",
    "FLOAT_KINDS",
    "BinaryIndex",
    "FloatIndex",
    "IndexFileError",
    "IndexKind",
    "QueryResult",
    "ResultTooLargeError",
    "UnknownIdsError",
    "code_bytes",
    "hamming_distances",
    "load_index",
    "pack_bits",
    "read_manifest",
    "register_kind",
    "run_query",
    "save_index",
    "to_signs",
    "unpack_bits",
]
