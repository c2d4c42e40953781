"""Searches are exact or say so, and no user parameter makes them allocate without bound.

Brute-force references are the popcount rankings of tests/test_index.py (sorted by (distance,
id)); every kind is checked against them.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashlab.index import BinaryIndex, FloatIndex, idmap, load_index, save_index
from hashlab.index.idmap import ResultTooLargeError
from hashlab.index.kinds import MAX_EF, MAX_M, MAX_NLIST
from hashlab.index.query import run_query
from tests.test_index import bf_knn, bf_range, random_codes, user_ids

#: every binary kind, with params that make its index inexact beyond a small radius
KINDS = {
    "flat": {},
    "hash": {"nflip": 1},
    "multihash": {"nhash": 2, "nflip": 0},
    "ivf": {"nlist": 4, "nprobe": 1},
    "hnsw": {"M": 4, "ef_search": 2},
}


def build(kind, x, ids, nbits, **params):
    index = BinaryIndex(nbits, kind, **{**KINDS[kind], **params})
    index.add(x, ids)
    return index


def knn_hits(nq_codes, x, ids, k):
    """Brute-force top-k as per-query (distances, ids), missing entries dropped."""
    wd, wi = bf_knn(nq_codes, x, ids, k)
    return [(d[i >= 0], i[i >= 0]) for d, i in zip(wd, wi, strict=True)]


def same(a, b) -> bool:
    da, ia = a
    db, ib = b
    return da.shape == db.shape and ia.shape == ib.shape and bool(
        (da == db).all() and (ia == ib).all())


def all_same(got, want) -> bool:
    return all(same(g, w) for g, w in zip(got, want, strict=True))


def data(seed, n, nbits, nq=6, patterns=None):
    """Codes (from a few patterns when given: many ties and clusters), queries, shuffled ids."""
    rng = np.random.default_rng(seed)
    if patterns:
        base = random_codes(rng, patterns, nbits)
        x = base[rng.integers(0, patterns, n)]
    else:
        x = random_codes(rng, n, nbits)
    q = np.concatenate([x[:2], random_codes(rng, nq - 2, nbits)])
    return x, q, user_ids(rng, n)


def indexed(kind, c):
    """Data drawn by ``codes`` and a ``kind`` index of it: ``(x, q, ids, index)``."""
    x, q, ids = data(c["seed"], c["n"], c["nbits"], patterns=c["patterns"])
    return x, q, ids, build(kind, x, ids, c["nbits"])


codes = st.fixed_dictionaries({
    "seed": st.integers(0, 2**16),
    "n": st.integers(8, 120),
    "nbits": st.sampled_from([8, 12, 16]),
    "patterns": st.sampled_from([None, 3, 20]),
})


# ---------------------------------------------------------------------------------------------
# (a) exact=True equals brute force, every kind, radii above the exact radius
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=12)
@given(c=codes, extra=st.integers(1, 8))
def test_exact_range_equals_bruteforce(kind, c, extra):
    x, q, ids, index = indexed(kind, c)
    radius = min(max(index.exact_radius, 0) + extra, c["nbits"])
    res = run_query(index, q, radius=radius, exact=True)
    assert res.exact and res.query_exact.all() and res.warnings == []
    want = bf_range(q, x, ids, radius)
    assert all_same(res.hits, want)
    assert all(index.params[p] == v for p, v in KINDS[kind].items())  # params restored


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=10)
@given(c=codes, k=st.integers(1, 150))
def test_exact_knn_equals_bruteforce(kind, c, k):
    x, q, ids, index = indexed(kind, c)
    res = run_query(index, q, k=k, exact=True)
    assert res.exact and res.k == min(k, c["n"])
    assert all_same(res.hits, knn_hits(q, x, ids, k))


def test_issue_example_hash_radius_4_beyond_nflip_2():
    """The issue's case: radius 4 on a hash index with nflip=2 misses codes, now flagged; with
    exact=True (nflip raised for the call) every code is found."""
    rng = np.random.default_rng(1)
    x = random_codes(rng, 20_000, 32)
    # queries one to four bit flips from an indexed code: each has hits beyond nflip=2
    q = x[:40].copy()
    for r in range(40):
        for bit in rng.choice(32, 1 + r % 4, replace=False):
            q[r, bit // 8] ^= np.uint8(1 << (bit % 8))
    ids = np.arange(len(x))
    index = BinaryIndex(32, "hash", nflip=2)
    index.add(x, ids)
    want = bf_range(q, x, ids, 4)
    loose = run_query(index, q, radius=4)
    missed = sum(g[1].size < w[1].size for g, w in zip(loose.hits, want, strict=True))
    assert missed > 0  # the defect is real at these settings
    assert not loose.exact and not loose.query_exact.any()
    (warning,) = loose.warnings
    assert "radius 4 exceeds the exact radius 2" in warning and "'hash'" in warning
    assert "--exact" in warning and "nflip=4" in warning
    assert loose.summary()["exact"] is False and loose.summary()["inexact_queries"] == 40
    strict = run_query(index, q, radius=4, exact=True)
    assert strict.exact and strict.method == "index with nflip=4" and index.params["nflip"] == 2
    assert all_same(strict.hits, want)


def test_exact_search_of_a_scannable_kind_scans_when_probing_costs_more():
    x, q, ids = data(3, 300, 16)
    index = build("multihash", x, ids, 16)  # b=8: radius 12 needs nflip=6, 2*247 probes > 300
    res = run_query(index, q, radius=12, exact=True)
    assert res.method == "exhaustive scan" and res.exact
    assert all_same(res.hits, bf_range(q, x, ids, 12))


def test_exact_is_refused_where_impossible_and_hnsw_range_needs_it():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(300, 8)).astype(np.float32)
    pq = FloatIndex(8, "ivfpq", nlist=2, m=2, pq_bits=4)
    pq.add(v)
    with pytest.raises(ValueError, match="exact search is impossible.*'ivfpq'"):
        run_query(pq, v[:3], k=5, exact=True)
    x, q, ids = data(0, 50, 16)
    hnsw = build("hnsw", x, ids, 16)
    with pytest.raises(ValueError, match="'hnsw' index .* has no range search: use --exact"):
        run_query(hnsw, q, radius=3)
    with pytest.raises(ValueError, match="exactly one of k"):
        run_query(hnsw, q, k=3, radius=3)
    with pytest.raises(ValueError, match="needs a BinaryIndex"):
        run_query(pq, v[:3], radius=1)


def test_float_exact_and_flags():
    rng = np.random.default_rng(5)
    v = rng.normal(size=(400, 8)).astype(np.float32)
    ids = user_ids(rng, 400)
    flat, hnsw = FloatIndex(8), FloatIndex(8, "hnsw", M=4, ef_search=1)
    flat.add(v, ids)
    hnsw.add(v, ids)
    q = rng.normal(size=(20, 8)).astype(np.float32)
    ref = run_query(flat, q, k=10)
    assert ref.exact and ref.warnings == []
    loose = run_query(hnsw, q, k=10)
    assert not loose.exact and "approximate" in loose.warnings[0]
    strict = run_query(hnsw, q, k=10, exact=True)
    assert strict.exact and strict.method == "index; 20 queries by exhaustive scan"
    for g, w in zip(strict.hits, ref.hits, strict=True):
        np.testing.assert_array_equal(g[1], w[1])
        np.testing.assert_allclose(g[0], w[0], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# (b) without exact=True: exact only when guaranteed, flagged whenever results may miss codes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "hnsw"])
@settings(max_examples=12)
@given(c=codes, radius=st.integers(0, 16))
def test_range_flag_is_exactly_the_guarantee(kind, c, radius):
    x, q, ids, index = indexed(kind, c)
    radius = min(radius, c["nbits"])
    res = run_query(index, q, radius=radius)
    want = bf_range(q, x, ids, radius)
    assert res.exact == (radius <= index.exact_radius)  # flagged by the guarantee, not by luck
    assert bool(res.warnings) == (not res.exact)
    if res.exact:
        assert all_same(res.hits, want)
    else:
        assert f"radius {radius}" in res.warnings[0] or "approximate" in res.warnings[0]
    for g, w in zip(res.hits, want, strict=True):  # never a code outside the radius
        assert np.isin(g[1], w[1]).all()


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=12)
@given(c=codes, k=st.integers(1, 150))
def test_knn_rows_flagged_exact_equal_bruteforce(kind, c, k):
    x, q, ids, index = indexed(kind, c)
    res = run_query(index, q, k=k)
    want = knn_hits(q, x, ids, k)
    for ok, g, w in zip(res.query_exact, res.hits, want, strict=True):
        if ok:
            assert same(g, w)
        elif not same(g, w):
            assert not res.exact and res.warnings
    assert res.exact == bool(res.query_exact.all())
    assert bool(res.warnings) == (not res.exact)
    if index.exact_radius < 0:  # hnsw, ivf probing fewer than all lists: never claimed exact
        assert not res.query_exact.any()
    if kind == "flat":
        assert res.exact


def test_knn_misses_are_flagged():
    """Rows whose k-th distance is beyond the exact radius are inexact, and some do differ."""
    x, q, ids = data(2, 2000, 16, nq=40)
    index = build("hash", x, ids, 16)  # nflip=1
    res = run_query(index, q, k=30)
    want = knn_hits(q, x, ids, 30)
    wrong = [not same(g, w) for g, w in zip(res.hits, want, strict=True)]
    assert any(wrong) and not res.query_exact[wrong].any()
    assert "may miss nearer codes" in res.warnings[0]


# ---------------------------------------------------------------------------------------------
# (c) memory: k is clamped, queries chunked, oversized requests refused up front
# ---------------------------------------------------------------------------------------------


def test_huge_k_equals_k_ntotal_without_allocating_by_k():
    x, q, ids = data(4, 1000, 64, nq=8)
    index = build("flat", x, ids, 64)
    tracemalloc.start()
    try:
        D, R = index.search(q, 10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20  # the result is 8 x 1000 entries; k alone would be 12 GB per query
    D2, R2 = index.search(q, 1000)
    np.testing.assert_array_equal(D, D2)
    np.testing.assert_array_equal(R, R2)
    assert D.shape == (8, 1000)
    res = run_query(index, q, k=10**9)
    assert res.k == 1000 and all(h[1].size == 1000 for h in res.hits)
    f = FloatIndex(4)
    f.add(np.random.default_rng(0).normal(size=(50, 4)))
    S, R = f.search(np.ones((2, 4)), 10**9)
    assert S.shape == R.shape == (2, 50)


def test_oversized_requests_are_refused_up_front(monkeypatch):
    x, q, ids = data(5, 500, 16, nq=20)
    index = build("flat", x, ids, 16)

    def no_search(*args, **kwargs):
        raise AssertionError("searched before refusing")

    monkeypatch.setattr(BinaryIndex, "_search", no_search)
    too_big = r"20 x 400 results \(93.8 KiB\), more than the limit.*--limit"
    with pytest.raises(ResultTooLargeError, match=too_big):
        run_query(index, q, k=400, max_result_bytes=20 * 399 * 12)
    monkeypatch.setattr(idmap, "MAX_RESULT_BYTES", 20 * 100 * 12 - 1)
    with pytest.raises(ResultTooLargeError, match="smaller k"):
        index.search(q, 100)
    monkeypatch.undo()
    assert run_query(index, q, k=400, max_result_bytes=20 * 400 * 12).k == 400


def test_range_results_over_the_limit_stop_early(monkeypatch):
    x, q, ids = data(6, 400, 8, nq=30)
    index = build("flat", x, ids, 8)
    with pytest.raises(ResultTooLargeError, match="smaller radius"):
        run_query(index, q, radius=8, max_result_bytes=400 * 12 * 5)
    monkeypatch.setattr(idmap, "MAX_RESULT_BYTES", 400 * 12 * 5)
    monkeypatch.setattr(idmap, "CHUNK_BYTES", 400 * 12 * 2)  # two queries per chunk
    with pytest.raises(ResultTooLargeError, match=r"first 6 of 30 queries"):
        index.range_search(q, 8)
    assert len(index.range_search(q[:5], 8)) == 5


@pytest.mark.parametrize("kind", ["flat", "hash", "hnsw"])
def test_chunked_search_equals_one_chunk(monkeypatch, kind):
    x, q, ids = data(7, 600, 16, nq=24, patterns=30)
    index = build(kind, x, ids, 16)
    whole = index.search(q, 20), index.range_search(q, 2) if kind != "hnsw" else None
    res = run_query(index, q, k=20, exact=True)
    monkeypatch.setattr(idmap, "CHUNK_BYTES", 20 * 12 * 3)  # 3 queries per top-k chunk
    calls = []
    real = BinaryIndex._search
    monkeypatch.setattr(BinaryIndex, "_search",
                        lambda self, qq, k: calls.append(len(qq)) or real(self, qq, k))
    parts = index.search(q, 20), index.range_search(q, 2) if kind != "hnsw" else None
    assert max(calls) == 3 and sum(calls) >= 24
    np.testing.assert_array_equal(parts[0][0], whole[0][0])
    np.testing.assert_array_equal(parts[0][1], whole[0][1])
    if kind != "hnsw":
        assert all_same(parts[1], whole[1])
    res2 = run_query(index, q, k=20, exact=True)
    assert all_same(res.hits, res2.hits)


def test_counting_knn_memory_follows_the_chunk_budget(monkeypatch):
    """k >= 1000 uses FAISS's counting k-NN, (d+1)*k int64 per query of a block: the block
    shrinks to the budget, and the heap takes over when one query would not fit."""
    x, q, ids = data(8, 3000, 64, nq=40)
    index = build("flat", x, ids, 64)
    want = index.search(q, 2000)
    base = index._base
    assert not base.use_heap and base.query_batch_size == 32
    monkeypatch.setattr(idmap, "CHUNK_BYTES", 65 * 2000 * 8 * 4)
    got = index.search(q, 2000)
    assert not base.use_heap and base.query_batch_size == 4
    monkeypatch.setattr(idmap, "CHUNK_BYTES", 65 * 2000 * 8 - 1)
    got2 = index.search(q, 2000)
    assert base.use_heap and base.query_batch_size == 32
    for a in (got, got2):
        np.testing.assert_array_equal(a[0], want[0])
        np.testing.assert_array_equal(a[1], want[1])


# ---------------------------------------------------------------------------------------------
# parameters that FAISS would turn into a hang, a crash or a huge allocation
# ---------------------------------------------------------------------------------------------


def test_bad_index_params_are_clear_value_errors(tmp_path):
    with pytest.raises(ValueError, match="nflip: expected an int <= b=8"):
        BinaryIndex(16, "hash", b=8, nflip=9)  # FAISS's probe loop would never end
    with pytest.raises(ValueError, match="nflip: expected an int <= b=4"):
        BinaryIndex(16, "multihash", nhash=2, b=4, nflip=2**40)
    with pytest.raises(ValueError, match=f"nlist: expected an int <= {MAX_NLIST}"):
        BinaryIndex(16, "ivf", nlist=10**8)  # FAISS: std::bad_alloc
    with pytest.raises(ValueError, match=f"nlist: expected an int <= {MAX_NLIST}"):
        FloatIndex(8, "ivfpq", nlist=2**40)  # FAISS: C++ exception stoi
    with pytest.raises(ValueError, match=f"ef_search: expected an int <= {MAX_EF}"):
        BinaryIndex(16, "hnsw", ef_search=10**9)  # FAISS: abort (std::bad_alloc)
    with pytest.raises(ValueError, match=f"M: expected an int <= {MAX_M}"):
        FloatIndex(8, "hnsw", M=10**6)
    index = BinaryIndex(16, "hash", b=8, nflip=8)
    with pytest.raises(ValueError, match="nflip"):
        index.set_params(nflip=9)
    assert index.exact_radius == 16  # nflip = b probes every bucket


def test_values_past_what_faiss_accepts_are_capped(tmp_path):
    x, q, ids = data(9, 200, 16)
    # a manifest written before nflip was checked: FAISS gets min(nflip, b), so no hang
    index = build("hash", x, ids, 16, b=8, nflip=8)
    path = save_index(index, tmp_path / "idx")
    index.params["nflip"] = 50
    index._apply_runtime()
    assert index._base.nflip == 8
    loaded = load_index(path)
    loaded.params["nflip"] = 50
    loaded._apply_runtime()
    assert loaded._base.nflip == 8
    assert all_same(loaded.range_search(q, 3), bf_range(q, x, ids, 3))
    ivf = build("ivf", x, ids, 16, nprobe=2**62)  # FAISS's size_t would overflow past 2**64
    assert ivf._base.nprobe == 4 and ivf.exact_radius == 16
    flat = build("flat", x, ids, 16)
    far = flat.range_search(q, 2**40)  # FAISS takes a C int: TypeError before the clamp
    assert all_same(far, bf_range(q, x, ids, 16))


@pytest.mark.parametrize("exact", [False, True])
def test_empty_index_is_trivially_exact(exact):
    q = np.zeros((3, 2), np.uint8)
    for index, queries in ((BinaryIndex(16, "hash"), q), (BinaryIndex(16, "hnsw"), q),
                           (FloatIndex(4, "hnsw"), np.ones((3, 4)))):
        res = run_query(index, queries, k=5, exact=exact)
        assert res.exact and res.k == 0 and res.warnings == []
        assert [h[1].size for h in res.hits] == [0, 0, 0]
