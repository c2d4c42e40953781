"""Search: bit packing and FAISS-backed indexes (binary Hamming and float cosine), persistence."""

from hashlab.index.binary import BINARY_KINDS, BinaryIndex, UnknownIdsError
from hashlab.index.codes import code_bytes, hamming_distances, pack_bits, to_signs, unpack_bits
from hashlab.index.floats import FloatIndex
from hashlab.index.store import IndexFileError, load_index, read_manifest, save_index

__all__ = [
    "BINARY_KINDS",
    "BinaryIndex",
    "FloatIndex",
    "IndexFileError",
    "UnknownIdsError",
    "code_bytes",
    "hamming_distances",
    "load_index",
    "pack_bits",
    "read_manifest",
    "save_index",
    "to_signs",
    "unpack_bits",
]
