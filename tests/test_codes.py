"""Tests of hashlab.index.codes: bit packing (FAISS layout) and Hamming distances."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hashlab.index.codes import (
    check_packed,
    code_bytes,
    hamming_distances,
    pack_bits,
    to_signs,
    unpack_bits,
)

SETTINGS = settings(max_examples=60, deadline=None)


def _random_bits(seed: int, n: int, nbits: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, nbits), dtype=np.uint8)


def _faiss_pack(signs: np.ndarray) -> np.ndarray:
    """Pack ±1 float32 vectors with faiss.fvecs2bitvecs."""
    x = np.ascontiguousarray(signs, dtype=np.float32)
    n, d = x.shape
    out = np.zeros((n, (d + 7) // 8), dtype=np.uint8)
    faiss.fvecs2bitvecs(faiss.swig_ptr(x), faiss.swig_ptr(out), d, n)
    return out


def _brute_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    xor = a[:, None, :] ^ b[None, :, :]
    return np.unpackbits(xor, axis=-1).sum(axis=-1)


# ------------------------------------------------------------------------------------------
# packing
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20), nbits=st.integers(1, 140))
def test_pack_unpack_round_trip(seed: int, n: int, nbits: int) -> None:
    bits = _random_bits(seed, n, nbits)
    packed = pack_bits(bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (n, code_bytes(nbits)) == (n, -(-nbits // 8))
    unpacked = unpack_bits(packed, nbits)
    assert unpacked.dtype == np.uint8
    np.testing.assert_array_equal(unpacked, bits)
    # padding bits are zero: a full unpack shows zeros beyond nbits
    full = np.unpackbits(packed, axis=1, bitorder="little")
    assert not full[:, nbits:].any()
    assert check_packed(packed, nbits) == nbits


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 20), nbits=st.integers(1, 140))
def test_bit_order_matches_faiss_and_numpy_little(seed: int, n: int, nbits: int) -> None:
    bits = _random_bits(seed, n, nbits)
    signs = bits.astype(np.float32) * 2 - 1
    expected = np.packbits(bits, axis=1, bitorder="little")
    np.testing.assert_array_equal(pack_bits(signs), expected)
    np.testing.assert_array_equal(pack_bits(signs), _faiss_pack(signs))
    np.testing.assert_array_equal(pack_bits(bits), expected)
    np.testing.assert_array_equal(pack_bits(bits.astype(bool)), expected)
    np.testing.assert_array_equal(to_signs(expected, nbits), signs)


def test_bit_order_explicit() -> None:
    bits = np.zeros((2, 16), dtype=np.uint8)
    bits[0, 0] = 1  # code bit 0 -> byte 0, bit 0
    bits[1, 9] = 1  # code bit 9 -> byte 1, bit 1
    np.testing.assert_array_equal(pack_bits(bits), [[1, 0], [0, 2]])


def test_pack_real_values_sign_rule() -> None:
    x = np.array([[0.3, -0.2, 0.0, 5.0, -1e-9, 1e-9, -7.0, 2.0, 0.1]])
    expected_bits = (x > 0).astype(np.uint8)
    np.testing.assert_array_equal(unpack_bits(pack_bits(x), 9), expected_bits)
    np.testing.assert_array_equal(pack_bits(x.astype(np.float32)), pack_bits(expected_bits))
    ints = np.array([[1, -1, -1, 1, 1, -1, 1, -1, -1]], dtype=np.int8)
    np.testing.assert_array_equal(unpack_bits(pack_bits(ints), 9)[0], (ints[0] > 0))


def test_torch_inputs() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 21)).astype(np.float32)
    expected = pack_bits(x)
    np.testing.assert_array_equal(pack_bits(torch.from_numpy(x)), expected)
    np.testing.assert_array_equal(pack_bits(torch.from_numpy(x) > 0), expected)
    np.testing.assert_array_equal(pack_bits(torch.from_numpy(x).sign().to(torch.int8)), expected)
    np.testing.assert_array_equal(pack_bits(torch.from_numpy(x).requires_grad_()), expected)
    np.testing.assert_array_equal(pack_bits(torch.from_numpy(x).to(torch.bfloat16)), expected)
    t_packed = torch.from_numpy(expected)
    np.testing.assert_array_equal(unpack_bits(t_packed, 21), (x > 0).astype(np.uint8))
    np.testing.assert_array_equal(
        hamming_distances(t_packed, t_packed), hamming_distances(expected, expected)
    )


# ------------------------------------------------------------------------------------------
# Hamming distances
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    na=st.integers(1, 12),
    nb=st.integers(1, 30),
    nbytes=st.integers(1, 33),
)
def test_hamming_matches_brute_force(seed: int, na: int, nb: int, nbytes: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(na, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, size=(nb, nbytes), dtype=np.uint8)
    b[: nb // 2] = rng.integers(0, 2, size=(nb // 2, nbytes), dtype=np.uint8)  # near-duplicates
    d = hamming_distances(a, b)
    assert d.dtype == np.int32 and d.shape == (na, nb)
    np.testing.assert_array_equal(d, _brute_hamming(a, b))


def test_hamming_noncontiguous_input_and_out() -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, size=(10, 16), dtype=np.uint8)
    a = big[::2, :8]  # not C-contiguous
    b = big[:, 8:]
    out = np.full((5, 10), -1, dtype=np.int32)
    res = hamming_distances(a, b, out=out)
    assert res is out
    np.testing.assert_array_equal(out, _brute_hamming(np.ascontiguousarray(a), b))
    with pytest.raises(ValueError, match="out"):
        hamming_distances(a, b, out=np.empty((5, 10), dtype=np.int64))
    with pytest.raises(ValueError, match="out"):
        hamming_distances(a, b, out=np.empty((5, 9), dtype=np.int32))


def test_hamming_agrees_with_faiss_binary_index() -> None:
    rng = np.random.default_rng(1)
    db = rng.integers(0, 256, size=(200, 8), dtype=np.uint8)
    q = rng.integers(0, 256, size=(5, 8), dtype=np.uint8)
    index = faiss.IndexBinaryFlat(64)
    index.add(db)
    dist, _ = index.search(q, 200)
    np.testing.assert_array_equal(np.sort(hamming_distances(q, db), axis=1), dist)


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


def test_code_bytes() -> None:
    assert [code_bytes(k) for k in (1, 7, 8, 9, 16, 64, 65)] == [1, 1, 1, 2, 2, 8, 9]
    for bad in (0, -8, 8.0, True, "8"):
        with pytest.raises(ValueError, match="nbits"):
            code_bytes(bad)  # type: ignore[arg-type]


def test_hamming_errors() -> None:
    a = np.zeros((3, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="same bytes per code"):
        hamming_distances(a, np.zeros((3, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(a.astype(np.int32), a)
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(a, a.astype(np.float32))
    with pytest.raises(ValueError, match="2-D"):
        hamming_distances(a[0], a)
    with pytest.raises(ValueError, match="non-empty"):
        hamming_distances(a[:0], a)


def test_pack_unpack_errors() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pack_bits(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        pack_bits(np.ones(8))
    with pytest.raises(ValueError, match="non-empty"):
        pack_bits(np.ones((0, 8)))
    with pytest.raises(ValueError, match="non-empty"):
        pack_bits(np.ones((3, 0)))
    with pytest.raises(ValueError, match="dtype"):
        pack_bits(np.array([["a", "b"]]))
    packed = pack_bits(np.ones((2, 12)))
    with pytest.raises(ValueError, match="needs 1 bytes"):
        unpack_bits(packed, 8)
    with pytest.raises(ValueError, match="needs 3 bytes"):
        unpack_bits(packed, 17)
    with pytest.raises(ValueError, match="padding"):
        unpack_bits(packed, 10)  # bits 10, 11 are set: not packed with nbits=10
    with pytest.raises(ValueError, match="uint8"):
        unpack_bits(packed.astype(np.int64), 12)
    with pytest.raises(ValueError, match="nbits"):
        to_signs(packed, 0)
