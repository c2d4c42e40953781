"""Tests of hashlab.index.binary / floats / store against brute-force numpy rankings."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hashlab.errors import HashlabError
from hashlab.index import store
from hashlab.index.binary import BinaryIndex, UnknownIdsError
from hashlab.index.codes import pack_bits
from hashlab.index.floats import FloatIndex
from hashlab.index.store import IndexFileError, load_index, save_index

# ---------------------------------------------------------------------------------------------
# brute force references
# ---------------------------------------------------------------------------------------------


def bf_hamming(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.unpackbits(np.bitwise_xor(q[:, None, :], x[None, :, :]), axis=2).sum(2)


def bf_knn(q, x, ids, k):
    D = bf_hamming(q, x)
    outd = np.full((len(q), k), -1, np.int64)
    outi = np.full((len(q), k), -1, np.int64)
    for r in range(len(q)):
        order = np.lexsort((ids, D[r]))[:k]
        outd[r, : len(order)], outi[r, : len(order)] = D[r, order], ids[order]
    return outd, outi


def bf_range(q, x, ids, radius):
    D = bf_hamming(q, x)
    out = []
    for r in range(len(q)):
        sel = np.nonzero(D[r] <= radius)[0]
        order = np.lexsort((ids[sel], D[r, sel]))
        out.append((D[r, sel][order], ids[sel][order]))
    return out


def random_codes(rng, n, nbits):
    return pack_bits(rng.integers(0, 2, (n, nbits)))


def user_ids(rng, n):
    """Non-contiguous, shuffled int64 ids (not positions)."""
    return (rng.permutation(50 * n)[:n] * 3 + 11).astype(np.int64)


def assert_range_equal(got, want):
    assert len(got) == len(want)
    for (gd, gi), (wd, wi) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gd, wd)
        np.testing.assert_array_equal(gi, wi)
        assert gi.dtype == np.int64


@pytest.fixture
def data16():
    rng = np.random.default_rng(0)
    x = random_codes(rng, 600, 16)  # 16-bit codes: heavy distance ties
    q = np.concatenate([x[:10], random_codes(rng, 30, 16)])
    return x, q, user_ids(rng, len(x))


# ---------------------------------------------------------------------------------------------
# exact kinds equal brute force
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nbits", [16, 13])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_flat_knn_equals_bruteforce(nbits, k):
    rng = np.random.default_rng(nbits + k)
    x, q = random_codes(rng, 500, nbits), random_codes(rng, 25, nbits)
    ids = user_ids(rng, len(x))
    index = BinaryIndex(nbits, "flat")
    index.add(x[:200], ids[:200])
    index.add(x[200:], ids[200:])
    D, R = index.search(q, k)
    assert D.dtype == np.int32 and R.dtype == np.int64 and D.shape == (25, k)
    wd, wi = bf_knn(q, x, ids, k)
    np.testing.assert_array_equal(D, wd)
    np.testing.assert_array_equal(R, wi)


@given(
    n=st.integers(1, 60),
    nbits=st.sampled_from([3, 8, 12]),
    k=st.integers(1, 70),
    seed=st.integers(0, 2**16),
)
def test_flat_knn_property(n, nbits, k, seed):
    rng = np.random.default_rng(seed)
    x, q = random_codes(rng, n, nbits), random_codes(rng, 4, nbits)
    ids = user_ids(rng, n)
    index = BinaryIndex(nbits)
    index.add(x, ids)
    D, R = index.search(q, k)
    wd, wi = bf_knn(q, x, ids, k)
    assert D.shape == R.shape == (4, min(k, n))  # a k beyond the index is clamped to ntotal
    np.testing.assert_array_equal(D, wd[:, : min(k, n)])
    np.testing.assert_array_equal(R, wi[:, : min(k, n)])


@pytest.mark.parametrize("nbits", [8, 64, 256])
def test_flat_knn_increasing_ids_fast_path_equals_bruteforce(nbits):
    """With ids increasing in insertion order hashlab trusts FAISS's own tie order (no rescan).

    Codes drawn from a few patterns make almost every k-th distance a tie; removal and a second
    add keep ids increasing, so this also covers the compacted flat index.
    """
    rng = np.random.default_rng(nbits)
    patterns = random_codes(rng, 12, nbits)
    x = patterns[rng.integers(0, 12, 3000)]
    q = np.concatenate([patterns, random_codes(rng, 20, nbits)])
    index = BinaryIndex(nbits, "flat")
    index.add(x[:1800])  # ids 0..1799
    index.add(x[1800:], np.arange(5000, 6200))
    ids = np.concatenate([np.arange(1800), np.arange(5000, 6200)])
    gone = ids[rng.choice(len(ids), 400, replace=False)]
    index.remove(gone)
    keep = ~np.isin(ids, gone)
    for k in (1, 50, 700, 2000):  # 2000: FAISS's counting k-NN instead of its heap
        D, R = index.search(q, k)
        wd, wi = bf_knn(q, x[keep], ids[keep], k)
        np.testing.assert_array_equal(D, wd)
        np.testing.assert_array_equal(R, wi)


def test_flat_knn_after_an_add_breaks_the_id_order_equals_bruteforce():
    """The cached "ids increase" flag must turn off when a later add brings smaller ids (the
    fast path would then keep FAISS's positional tie order, which is not id order)."""
    rng = np.random.default_rng(9)
    patterns = random_codes(rng, 6, 16)
    x = patterns[rng.integers(0, 6, 400)]
    q = patterns
    index = BinaryIndex(16, "flat")
    index.add(x[:200], np.arange(1000, 1200))
    D, R = index.search(q, 30)
    wd, wi = bf_knn(q, x[:200], np.arange(1000, 1200), 30)
    np.testing.assert_array_equal(R, wi)
    index.add(x[200:], np.arange(200))  # smaller ids, inserted later
    ids = np.concatenate([np.arange(1000, 1200), np.arange(200)])
    D, R = index.search(q, 30)
    wd, wi = bf_knn(q, x, ids, 30)
    np.testing.assert_array_equal(D, wd)
    np.testing.assert_array_equal(R, wi)
    index.remove(np.arange(1000, 1200))  # what is left increases again
    D, R = index.search(q, 30)
    wd, wi = bf_knn(q, x[200:], np.arange(200), 30)
    np.testing.assert_array_equal(R, wi)


def test_flat_range_equals_bruteforce(data16):
    x, q, ids = data16
    index = BinaryIndex(16)
    index.add(x, ids)
    for radius in (0, 1, 3, 5, 16):
        assert_range_equal(index.range_search(q, radius), bf_range(q, x, ids, radius))


@pytest.mark.parametrize(
    "kind, params, exact_radius",
    [
        ("hash", {"b": 16, "nflip": 2}, 2),
        ("hash", {"b": 10, "nflip": 1}, 1),
        ("multihash", {"nhash": 2, "b": 8, "nflip": 1}, 3),
        ("multihash", {"nhash": 3, "b": 5, "nflip": 0}, 2),
    ],
)
def test_hash_range_exact_within_radius(data16, kind, params, exact_radius):
    x, q, ids = data16
    index = BinaryIndex(16, kind, **params)
    index.add(x, ids)
    assert index.exact_radius == exact_radius
    for radius in range(exact_radius + 1):
        got = index.range_search(q, radius, require_exact=True)
        assert_range_equal(got, bf_range(q, x, ids, radius))
    with pytest.raises(ValueError, match="exact only for radius"):
        index.range_search(q, exact_radius + 1, require_exact=True)
    # beyond the exact radius results are a subset of the truth
    for (gd, gi), (_, wi) in zip(
        index.range_search(q, exact_radius + 2),
        bf_range(q, x, ids, exact_radius + 2),
        strict=True,
    ):
        assert set(gi.tolist()) <= set(wi.tolist())
        assert np.all(np.diff(gd) >= 0)


@pytest.mark.parametrize(
    "kind, params", [("hash", {"b": 16, "nflip": 3}), ("multihash", {"nhash": 2, "nflip": 1})]
)
def test_hash_knn_exact_rows(data16, kind, params):
    x, q, ids = data16
    index = BinaryIndex(16, kind, **params)
    index.add(x, ids)
    D, R = index.search(q, 5)
    wd, wi = bf_knn(q, x, ids, 5)
    exact_rows = (R[:, -1] >= 0) & (D[:, -1] <= index.exact_radius)
    assert exact_rows.sum() >= 10  # the 10 queries taken from the database at least
    np.testing.assert_array_equal(D[exact_rows], wd[exact_rows])
    np.testing.assert_array_equal(R[exact_rows], wi[exact_rows])
    # every result is a true code at its reported distance, rows sorted
    H = bf_hamming(q, x)
    pos = {int(i): p for p, i in enumerate(ids)}
    for r in range(len(q)):
        for d, i in zip(D[r], R[r], strict=True):
            if i >= 0:
                assert H[r, pos[int(i)]] == d


def test_ivf_full_probe_is_exact(data16):
    x, q, ids = data16
    index = BinaryIndex(16, "ivf", nlist=4, nprobe=4)
    index.add(x, ids)
    assert index.exact_radius == 16
    D, R = index.search(q, 6)
    wd, wi = bf_knn(q, x, ids, 6)
    np.testing.assert_array_equal(D, wd)
    np.testing.assert_array_equal(R, wi)


# ---------------------------------------------------------------------------------------------
# approximate kinds: recall against flat
# ---------------------------------------------------------------------------------------------


def clustered_codes(rng, n, nbits, ncenters=16, flip=0.08):
    centers = rng.integers(0, 2, (ncenters, nbits))
    bits = centers[rng.integers(0, ncenters, n)]
    bits = np.where(rng.random(bits.shape) < flip, 1 - bits, bits)
    return pack_bits(bits)


def hamming_recall(q, x, ids, R, k):
    """Fraction of returned ids whose distance is within the true k-th distance (tie-safe)."""
    H = bf_hamming(q, x)
    kth = np.sort(H, axis=1)[:, k - 1]
    pos = {int(i): p for p, i in enumerate(ids)}
    hits = sum(1 for r in range(len(q)) for i in R[r] if i >= 0 and H[r, pos[int(i)]] <= kth[r])
    return hits / (len(q) * k)


@pytest.mark.parametrize(
    "kind, params, floor",
    [("ivf", {"nlist": 8, "nprobe": 3}, 0.6), ("hnsw", {"M": 8, "ef_search": 32}, 0.8)],
)
def test_approximate_binary_recall(kind, params, floor):
    rng = np.random.default_rng(5)
    x = clustered_codes(rng, 1500, 32)
    q = clustered_codes(rng, 40, 32)
    ids = user_ids(rng, len(x))
    index = BinaryIndex(32, kind, **params)
    index.add(x, ids)
    D, R = index.search(q, 10)
    assert np.all(np.diff(D, axis=1) >= 0)
    recall = hamming_recall(q, x, ids, R, 10)
    assert recall >= floor, f"{kind} recall@10 {recall:.3f} < {floor}"


# ---------------------------------------------------------------------------------------------
# remove and validation
# ---------------------------------------------------------------------------------------------


def test_remove(data16):
    x, q, ids = data16
    index = BinaryIndex(16, "flat")
    index.add(x, ids)
    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    assert len(index) == len(x) - len(gone)
    keep = np.ones(len(x), bool)
    keep[::3] = False
    D, R = index.search(q, 8)
    wd, wi = bf_knn(q, x[keep], ids[keep], 8)
    np.testing.assert_array_equal(D, wd)
    np.testing.assert_array_equal(R, wi)
    with pytest.raises(UnknownIdsError, match=r"not in the index: \[1, 2\]") as info:
        index.remove(np.array([ids[1], 2, 1]))
    np.testing.assert_array_equal(info.value.ids, [1, 2])
    assert len(index) == len(x) - len(gone)  # nothing removed on error


@pytest.mark.parametrize("kind", ["hash", "multihash", "ivf", "hnsw"])
def test_remove_unsupported(kind):
    index = BinaryIndex(16, kind, **({"nlist": 2} if kind == "ivf" else {}))
    index.add(random_codes(np.random.default_rng(0), 10, 16))
    with pytest.raises(NotImplementedError, match=kind):
        index.remove([0])


def test_hnsw_has_no_range_search():
    index = BinaryIndex(16, "hnsw")
    index.add(random_codes(np.random.default_rng(0), 10, 16))
    with pytest.raises(NotImplementedError, match="hnsw"):
        index.range_search(random_codes(np.random.default_rng(1), 2, 16), 2)


def test_binary_validation():
    rng = np.random.default_rng(0)
    index = BinaryIndex(16)
    x = random_codes(rng, 10, 16)
    with pytest.raises(ValueError, match=r"16-bit codes \(2 bytes.*got 24-bit codes \(3 bytes"):
        index.add(random_codes(rng, 10, 24))
    with pytest.raises(ValueError, match="uint8"):
        index.add(x.astype(np.int64))
    with pytest.raises(ValueError, match="unique"):
        index.add(x, np.array([1] * 10))
    with pytest.raises(ValueError, match="one id per vector"):
        index.add(x, np.arange(9))
    with pytest.raises(ValueError, match="integer ids"):
        index.add(x, np.arange(10, dtype=float))
    index.add(x, np.arange(10) * 5)
    with pytest.raises(ValueError, match=r"already in the index: \[0, 5\]"):
        index.add(x[:2], np.array([5, 0]))
    index.add(x[:2])  # default ids continue after the largest
    np.testing.assert_array_equal(index.ids()[-2:], [46, 47])
    with pytest.raises(ValueError, match="expects 16-bit"):
        index.search(random_codes(rng, 2, 8), 3)
    with pytest.raises(ValueError, match="padding"):
        BinaryIndex(12).add(np.full((2, 2), 255, np.uint8))
    with pytest.raises(ValueError, match="kind"):
        BinaryIndex(16, "lsh")
    with pytest.raises(ValueError, match="unknown parameter"):
        BinaryIndex(16, "flat", nflip=2)
    with pytest.raises(ValueError, match="k:"):
        index.search(x, 0)
    assert index.ntotal == len(index) == 12 and index.nbits == 16 and index.kind == "flat"


def test_empty_index_and_set_params():
    index = BinaryIndex(16, "hash", nflip=1)
    q = random_codes(np.random.default_rng(0), 3, 16)
    D, R = index.search(q, 4)
    assert D.shape == R.shape == (3, 0)  # k is clamped to ntotal = 0
    assert all(len(i) == 0 for _, i in index.range_search(q, 3))
    index.set_params(nflip=3)
    assert index.exact_radius == 3
    with pytest.raises(ValueError, match="cannot set"):
        index.set_params(b=4)


# ---------------------------------------------------------------------------------------------
# float index
# ---------------------------------------------------------------------------------------------


def bf_cosine(q, x):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return qn @ xn.T


def test_float_flat_equals_bruteforce():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 12)).astype(np.float32) * rng.uniform(0.5, 3, (400, 1))
    q = rng.normal(size=(20, 12)).astype(np.float32)
    ids = user_ids(rng, len(x))
    index = FloatIndex(12)
    index.add(x, ids)
    S, R = index.search(q, 8)
    C = bf_cosine(q.astype(np.float64), x.astype(np.float64))
    order = np.argsort(-C, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(R, ids[order])
    np.testing.assert_allclose(S, np.take_along_axis(C, order, 1), atol=1e-5)
    assert np.all(np.diff(S, axis=1) <= 0)
    t = 0.4
    for r, (s, i) in enumerate(index.range_search(q, t)):
        want = np.nonzero(C[r] >= t)[0]
        assert set(i.tolist()) == set(ids[want].tolist())
        assert np.all(s >= np.float32(t)) and np.all(np.diff(s) <= 0)
    # ties (duplicate vectors) are broken by id
    dup = FloatIndex(4)
    dup.add(np.ones((5, 4)), np.array([9, 3, 7, 1, 5]))
    dup.add(np.eye(4), np.array([0, 2, 4, 6]))
    _, R = dup.search(np.ones((2, 4)), 3)
    np.testing.assert_array_equal(R, [[1, 3, 5], [1, 3, 5]])
    S, R = dup.search(np.ones((1, 4)), 12)  # k clamped to the 9 vectors
    np.testing.assert_array_equal(R[0, 5:], [0, 2, 4, 6])
    assert S.shape == (1, 9) and np.all(np.isfinite(S))


@pytest.mark.parametrize(
    "kind, params, floor",
    [("hnsw", {"M": 8}, 0.9), ("ivfpq", {"nlist": 4, "nprobe": 3, "m": 8, "pq_bits": 4}, 0.3)],
)
def test_float_approximate_recall(kind, params, floor):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(800, 16)).astype(np.float32)
    q = rng.normal(size=(30, 16)).astype(np.float32)
    index = FloatIndex(16, kind, **params)
    index.add(x, np.arange(len(x)) * 2)
    _, R = index.search(q, 10)
    truth = np.argsort(-bf_cosine(q, x), axis=1)[:, :10] * 2
    pairs = zip(R.tolist(), truth.tolist(), strict=True)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in pairs])
    assert recall >= floor, f"{kind} recall@10 {recall:.3f} < {floor}"


def test_float_validation():
    index = FloatIndex(4)
    with pytest.raises(ValueError, match="dim=4, got dim=3"):
        index.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match="zero vectors"):
        index.add(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((2, 4), np.nan))
    index.add(np.eye(4), [10, 20, 30, 40])
    with pytest.raises(UnknownIdsError, match=r"\[11\]"):
        index.remove([10, 11])
    assert index.remove([10]) == 1 and len(index) == 3
    hnsw = FloatIndex(4, "hnsw")
    hnsw.add(np.eye(4))
    with pytest.raises(NotImplementedError, match="hnsw"):
        hnsw.remove([0])


# ---------------------------------------------------------------------------------------------
# store
# ---------------------------------------------------------------------------------------------

BINARY_CASES = [
    ("flat", {}),
    ("hash", {"b": 12, "nflip": 2}),
    ("multihash", {"nhash": 2, "b": 8, "nflip": 1}),
    ("ivf", {"nlist": 4, "nprobe": 2}),
    ("hnsw", {"M": 8, "ef_search": 20}),
]


@pytest.mark.parametrize("kind, params", BINARY_CASES)
def test_binary_round_trip(tmp_path, data16, kind, params):
    x, q, ids = data16
    index = BinaryIndex(16, kind, **params)
    index.add(x, ids)
    out = save_index(index, tmp_path / "idx", model_run="runs/tiny-001")
    loaded = load_index(out, expect_nbits=16)
    assert isinstance(loaded, BinaryIndex)
    assert (loaded.kind, loaded.nbits, len(loaded)) == (kind, 16, len(index))
    assert loaded.params == index.params
    for a, b in zip(index.search(q, 9), loaded.search(q, 9), strict=True):
        np.testing.assert_array_equal(a, b)
    if kind != "hnsw":
        assert_range_equal(loaded.range_search(q, 2), index.range_search(q, 2))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["family"] == "binary" and manifest["nbits"] == 16
    assert manifest["count"] == len(x) and manifest["model_run"] == "runs/tiny-001"
    assert manifest["format_version"] == store.FORMAT_VERSION and len(manifest["sha256"]) == 64
    assert sorted(os.listdir(tmp_path)) == ["idx"]


@pytest.mark.parametrize(
    "kind, params", [("flat", {}), ("hnsw", {}), ("ivfpq", {"nlist": 4, "pq_bits": 4})]
)
def test_float_round_trip(tmp_path, kind, params):
    rng = np.random.default_rng(8)
    x, q = rng.normal(size=(300, 8)), rng.normal(size=(5, 8))
    index = FloatIndex(8, kind, **params)
    index.add(x, user_ids(rng, 300))
    loaded = load_index(save_index(index, tmp_path / "f"), expect_dim=8)
    assert isinstance(loaded, FloatIndex) and loaded.dim == 8 and loaded.kind == kind
    for a, b in zip(index.search(q, 5), loaded.search(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexFileError, match="dim=16"):
        load_index(tmp_path / "f", expect_dim=16)
    with pytest.raises(IndexFileError, match="16-bit"):
        load_index(tmp_path / "f", expect_nbits=16)


@pytest.mark.parametrize("writer", ["_write_faiss_file", "_write_manifest"])
def test_failed_save_keeps_previous(tmp_path, monkeypatch, data16, writer):
    x, q, ids = data16
    old = BinaryIndex(16)
    old.add(x[:100], ids[:100])
    path = save_index(old, tmp_path / "idx")
    before = {p: (path / p).read_bytes() for p in os.listdir(path)}
    new = BinaryIndex(16)
    new.add(x, ids)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store, writer, boom)
    with pytest.raises(OSError, match="simulated"):
        save_index(new, path)
    assert {p: (path / p).read_bytes() for p in os.listdir(path)} == before
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temp directory left behind
    assert len(load_index(path)) == 100
    monkeypatch.undo()
    save_index(new, path)  # and a later save replaces it
    assert len(load_index(path)) == len(x)
    assert sorted(os.listdir(tmp_path)) == ["idx"]


@pytest.fixture
def saved(tmp_path):
    index = BinaryIndex(16)
    index.add(random_codes(np.random.default_rng(0), 50, 16))
    return save_index(index, tmp_path / "idx")


def test_truncated_file(saved):
    data = (saved / "index.faiss").read_bytes()
    (saved / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFileError, match=r"index\.faiss.*truncated"):
        load_index(saved)


def test_modified_file(saved):
    data = bytearray((saved / "index.faiss").read_bytes())
    data[-1] ^= 1
    (saved / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=r"index\.faiss.*SHA-256"):
        load_index(saved)


def test_foreign_faiss_file_with_valid_checksum(saved):
    import hashlib

    junk = b"not a faiss index at all" * 10
    (saved / "index.faiss").write_bytes(junk)
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest.update(sha256=hashlib.sha256(junk).hexdigest(), file_size=len(junk))
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError, match=r"index\.faiss: not a readable binary FAISS"):
        load_index(saved)


def test_kind_mismatch_is_refused(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest.update(kind="hash")
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError, match="IndexBinaryHash"):
        load_index(saved)


def test_wrong_bit_width_and_bad_manifests(saved, tmp_path):
    with pytest.raises(IndexFileError, match="16-bit codes, but the model produces 64-bit"):
        load_index(saved, expect_nbits=64)
    (saved / "manifest.json").write_text("{ not json")
    with pytest.raises(IndexFileError, match=r"manifest\.json: not valid JSON"):
        load_index(saved)
    (saved / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(IndexFileError, match="format_version 99"):
        load_index(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(IndexFileError, match=r"manifest\.json: missing"):
        load_index(saved)
    with pytest.raises(IndexFileError, match="does not exist"):
        load_index(tmp_path / "nope")
    foreign = tmp_path / "model.pt"
    foreign.write_bytes(b"\x80\x02junk")
    with pytest.raises(IndexFileError, match="not an index directory"):
        load_index(foreign)
    assert issubclass(IndexFileError, HashlabError)


def test_save_refuses_to_clobber_non_index(tmp_path):
    other = tmp_path / "data"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    index = BinaryIndex(8)
    index.add(np.arange(4, dtype=np.uint8)[:, None])
    with pytest.raises(IndexFileError, match="not an index directory"):
        save_index(index, other)
    assert (other / "precious.txt").read_text() == "keep me"
