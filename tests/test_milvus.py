"""The Milvus backend (hashlab.index.milvus) on the real embedded engine (milvus-lite).

Every comparison is against the FAISS ``flat`` indexes (BinaryIndex / FloatIndex) on the same
codes and ids, or against a numpy brute force over the items MetadataTable selects.
"""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import hashlab.index
from hashlab.cli import app
from hashlab.errors import HashlabError
from hashlab.index import BinaryIndex, FloatIndex, UnknownIdsError, hamming_distances
from hashlab.index import milvus as M
from hashlab.index.filters import ItemFilter, MetadataTable
from tests.conftest import assert_cli_search_is_brute_force, tiny_config

N_CODES = 3000


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """One embedded engine (one .db file) for the whole module."""
    return str(tmp_path_factory.mktemp("milvus") / "codes.db")


def _codes(rng, n, nbits, dups=300):
    """Random packed codes with exact duplicates (ties at distance 0 and everywhere)."""
    codes = rng.integers(0, 256, (n, nbits // 8), dtype=np.uint8)
    codes[rng.choice(n, dups, replace=False)] = codes[rng.choice(n, dups, replace=False)]
    return codes


def _ids(rng, n):
    """Non-contiguous ids in shuffled (not increasing) order."""
    return rng.choice(10**9, n, replace=False).astype(np.int64)


def _queries(rng, codes, nq):
    """Half perturbed database codes (near neighbours, many ties), half random codes."""
    near = codes[rng.choice(len(codes), nq // 2)] ^ (
        rng.random((nq // 2, codes.shape[1] * 8)) < 0.05).reshape(nq // 2, -1, 8).dot(
        1 << np.arange(8)).astype(np.uint8)
    far = rng.integers(0, 256, (nq - nq // 2, codes.shape[1]), dtype=np.uint8)
    return np.concatenate([near, far])


def _same_ranges(got, want):
    assert len(got) == len(want)
    for (d1, i1), (d2, i2) in zip(got, want, strict=True):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(d1, d2)
        assert d1.dtype == d2.dtype and i1.dtype == np.int64


@pytest.fixture(scope="module")
def binary_sets(db):
    """64- and 256-bit collections of 3000 codes, with the FAISS flat index of the same."""
    rng = np.random.default_rng(0)
    out = {}
    for nbits in (64, 256):
        codes, ids = _codes(rng, N_CODES, nbits), _ids(rng, N_CODES)
        index = M.MilvusIndex(db, f"b{nbits}", nbits=nbits, overwrite=True)
        index.add(codes, ids, batch_size=700)
        flat = BinaryIndex(nbits, "flat")
        flat.add(codes, ids)
        out[nbits] = (index, flat, codes, ids, _queries(rng, codes, 120))
    return out


# ---------------------------------------------------------------------------------------------
# binary: search and range search equal the FAISS flat index, ties included
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nbits", [64, 256])
def test_binary_search_equals_faiss_flat(binary_sets, nbits):
    index, flat, codes, ids, q = binary_sets[nbits]
    assert index.ntotal == len(index) == N_CODES
    for k in (1, 10, 100):
        d, i = index.search(q, k)
        d2, i2 = flat.search(q, k)
        assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (len(q), k)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(d, d2)
    # the database codes themselves: every duplicate ties at distance 0
    d, i = index.search(codes[:60], 5)
    d2, i2 = flat.search(codes[:60], 5)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)
    # k beyond the collection is clamped, as BinaryIndex does
    assert index.search(q[:2], N_CODES + 10)[0].shape == (2, N_CODES)


@pytest.mark.parametrize("nbits, radius", [(64, 20), (256, 112)])
def test_binary_range_search_equals_faiss_flat(binary_sets, nbits, radius):
    index, flat, codes, ids, q = binary_sets[nbits]
    got = index.range_search(q, radius)
    _same_ranges(got, flat.range_search(q, radius))
    assert sum(i.size for _, i in got) > 100  # not vacuous
    _same_ranges(index.range_search(q[:3], 10**6), flat.range_search(q[:3], nbits))


def test_paging_beyond_milvus_limit(binary_sets, monkeypatch):
    """With Milvus's per-search limit lowered to 50, a top-120 and range searches with
    hundreds of hits need the cursor and the id-range paging: still equal to FAISS."""
    monkeypatch.setattr(M, "MAX_LIMIT", 50)
    index, flat, codes, ids, q = binary_sets[64]
    q = q[::12]
    for k in (49, 120):
        d, i = index.search(q, k)
        d2, i2 = flat.search(q, k)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(d, d2)
    got = index.range_search(q, 26)
    assert max(i.size for _, i in got) > 4 * 50
    _same_ranges(got, flat.range_search(q, 26))
    # a limit of 10: the band at the k-th distance itself holds more than a page
    monkeypatch.setattr(M, "MAX_LIMIT", 10)
    for k in (9, 30):
        d, i = index.search(q[:4], k)
        d2, i2 = flat.search(q[:4], k)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(d, d2)


# ---------------------------------------------------------------------------------------------
# float vectors: equal to FloatIndex up to float rounding
# ---------------------------------------------------------------------------------------------


def _assert_float_rows(S, ids, S2, ids2, tol=1e-5):
    """Similarities equal within ``tol``; ids equal except among near-ties (an id in one
    row and not the other must lie within ``tol`` of the k-th similarity)."""
    assert S.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_allclose(S, S2, atol=tol)
    for r in range(S.shape[0]):
        for a, b, s in ((ids[r], ids2[r], S[r]), (ids2[r], ids[r], S2[r])):
            extra = ~np.isin(a, b)
            assert np.all(s[extra] <= s[-1] + tol), (r, a[extra])


@pytest.fixture(scope="module")
def float_set(db):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    x[rng.choice(2000, 100, replace=False)] = x[rng.choice(2000, 100, replace=False)] * 2.0
    ids = _ids(rng, 2000)
    index = M.MilvusIndex(db, "f32", family="float", dim=32, overwrite=True)
    index.add(x, ids)
    flat = FloatIndex(32, "flat")
    flat.add(x, ids)
    q = np.concatenate([x[:40] + 0.01 * rng.standard_normal((40, 32)).astype(np.float32),
                        rng.standard_normal((40, 32)).astype(np.float32)])
    return index, flat, x, ids, q


def test_float_cosine_equals_faiss_flat(float_set):
    index, flat, x, ids, q = float_set
    assert index.metric == "cosine" and index.dim == 32
    for k in (1, 10, 50):
        _assert_float_rows(*index.search(q, k), *flat.search(q, k))
    # exact duplicates (ties at similarity 1) resolved by id, as FloatIndex does
    S, ids_ = index.search(x[:30], 3)
    S2, ids2 = flat.search(x[:30], 3)
    _assert_float_rows(S, ids_, S2, ids2)
    for t in (0.3, 0.5):
        got, want = index.range_search(q, t), flat.range_search(q, t)
        for (s1, i1), (s2, i2) in zip(got, want, strict=True):
            assert np.all(s1 >= np.float32(t)) and np.all(np.diff(s1) <= 0)
            sure = i2[s2 >= t + 1e-5]  # not a near-tie with the threshold
            assert np.isin(sure, i1).all()
            assert np.isin(i1, i2[s2 >= t - 1e-5]).all()


def test_float_paging_and_inner_product(db, float_set, monkeypatch):
    index, flat, x, ids, q = float_set
    monkeypatch.setattr(M, "MAX_LIMIT", 40)
    _assert_float_rows(*index.search(q[:8], 100), *flat.search(q[:8], 100))
    monkeypatch.undo()
    rng = np.random.default_rng(2)
    y = rng.standard_normal((500, 8)).astype(np.float32)
    mips = M.MilvusIndex(db, "mips", family="float", dim=8, metric="inner_product",
                         overwrite=True)
    mips.add(y)  # ids 0..499
    ref = FloatIndex(8, "flat", metric="inner_product")
    ref.add(y)
    _assert_float_rows(*mips.search(y[:20] * 3, 7), *ref.search(y[:20] * 3, 7))


def test_float_ivf_probing_every_list_is_exact(db, float_set):
    index, flat, x, ids, q = float_set
    ivf = M.MilvusIndex(db, "fivf", family="float", dim=32, kind="ivf", nlist=8, nprobe=8,
                        overwrite=True)
    assert ivf.index_type == "IVF_FLAT" and ivf.exact
    ivf.add(x, ids)
    _assert_float_rows(*ivf.search(q[:20], 10), *flat.search(q[:20], 10))
    ivf.set_params(nprobe=1)
    assert not ivf.exact
    res = ivf.query(q[:5], k=10)
    assert not res.exact and "approximate" in res.warnings[0]
    res = ivf.query(q[:5], k=10, exact=True)
    assert res.exact and ivf.params["nprobe"] == 1
    with pytest.raises(ValueError, match="cannot set"):
        ivf.set_params(nlist=4)


# ---------------------------------------------------------------------------------------------
# filters: equal to a brute force over the items MetadataTable selects
# ---------------------------------------------------------------------------------------------

CITIES = [(48.85, 2.35), (-33.87, 151.21), (64.15, -21.94), (0.0, 179.9), (89.5, 10.0)]
TAGS = ["a", "b", "c", 'we"ird', "new\nline", "é", "x%y", "back\\slash"]


def _metadata(rng, n):
    out = []
    for _ in range(n):
        if rng.random() < 0.1:
            out.append(None)
            continue
        meta = {}
        if rng.random() < 0.7:
            lat, lon = CITIES[rng.integers(len(CITIES))]
            meta["lat"] = float(np.clip(lat + rng.normal(0, 8), -90, 90))
            meta["lon"] = float((lon + rng.normal(0, 8) + 180) % 360 - 180)
        if rng.random() < 0.8:
            meta["tags"] = [str(t) for t in rng.choice(TAGS, rng.integers(0, 4))]
        if rng.random() < 0.6:
            tz = ["Z", "+02:00", "-05:30", ""][rng.integers(4)]
            meta["time"] = (f"202{rng.integers(0, 5)}-0{rng.integers(1, 10)}-1{rng.integers(10)}"
                            f"T{rng.integers(10, 24)}:{rng.integers(10, 60)}:00{tz}")
        out.append(meta)
    return out


FILTERS = [
    {"tags": ["a"]},
    {"tags": ["a", "b"]},
    {"tags": ['we"ird', "new\nline"]},
    {"tags": ["x%y"]},
    {"tags": ["back\\slash", "é"]},
    {"tags": ["nowhere"]},
    {"time": {"start": "2022-01-01T00:00:00Z"}},
    {"time": {"end": "2021-06-15T12:00:00+02:00"}},
    {"time": {"start": "2021-01-01", "end": "2023-03-31T23:59:59Z"}},
    {"time": {}},
    {"near": {"lat": 48.85, "lon": 2.35, "km": 700}},
    {"near": {"lat": 0.0, "lon": 179.9, "km": 1500}},  # crosses the antimeridian
    {"near": {"lat": 89.5, "lon": 10.0, "km": 900}},  # holds the pole
    {"near": {"lat": -33.87, "lon": 151.21, "km": 6000}},
    {"near": {"lat": 10.0, "lon": 10.0, "km": 30000}},  # the whole globe
    {"near": {"lat": 48.85, "lon": 2.35, "km": 1200}, "tags": ["b"],
     "time": {"start": "2020-06-01T00:00:00Z"}},
]


@pytest.fixture(scope="module")
def tagged(binary_sets):
    index, flat, codes, ids, q = binary_sets[64]
    rng = np.random.default_rng(3)
    metadata = _metadata(rng, N_CODES)
    tagged = M.MilvusIndex(index.uri, "tagged", nbits=64, overwrite=True)
    tagged.add(codes, ids, metadata)
    return tagged, MetadataTable(ids, metadata), codes, ids, q[:40]


@pytest.mark.parametrize("spec", FILTERS, ids=lambda f: json.dumps(f, ensure_ascii=True)[:60])
def test_filtered_search_equals_brute_force(tagged, spec):
    index, table, codes, ids, q = tagged
    flt = ItemFilter.from_dict(spec)
    keep = table.mask(flt)
    sel_codes, sel_ids = codes[keep], ids[keep]
    d_all = hamming_distances(q, sel_codes) if keep.any() else np.empty((len(q), 0), np.int32)
    k = 15
    d, i = index.search(q, k, filter=spec)
    assert d.shape == (len(q), min(k, N_CODES))
    for r in range(len(q)):
        order = np.lexsort((sel_ids, d_all[r]))[:k]
        n = order.size
        np.testing.assert_array_equal(i[r, :n], sel_ids[order])
        np.testing.assert_array_equal(d[r, :n], d_all[r, order])
        assert np.all(i[r, n:] == -1) and np.all(d[r, n:] == -1)
    for (dr, ir), row in zip(index.range_search(q, 24, filter=flt), d_all, strict=True):
        hit = np.flatnonzero(row <= 24)
        order = hit[np.lexsort((sel_ids[hit], row[hit]))]
        np.testing.assert_array_equal(ir, sel_ids[order])
        np.testing.assert_array_equal(dr, row[order])


def test_filtered_search_with_paging(tagged, monkeypatch):
    """A near filter under a small Milvus limit: the cursor keeps paging past the items the
    bounding box lets through but the great circle does not."""
    monkeypatch.setattr(M, "MAX_LIMIT", 30)
    index, table, codes, ids, q = tagged
    spec = {"near": {"lat": 48.85, "lon": 2.35, "km": 900}, "tags": ["a"]}
    keep = table.mask(ItemFilter.from_dict(spec))
    d, i = index.search(q[:6], 40, filter=spec)
    d_all = hamming_distances(q[:6], codes[keep])
    for r in range(6):
        order = np.lexsort((ids[keep], d_all[r]))[:40]
        np.testing.assert_array_equal(i[r, : order.size], ids[keep][order])


def test_time_window_bounds_are_inclusive(db):
    """Times exactly on a window's bounds (in other time zones, to the microsecond) are in,
    one microsecond outside is out, as MetadataTable decides."""
    times = ["2023-05-01T12:00:00Z", "2023-05-01T14:00:00+02:00", "2023-05-01T11:59:59.999999Z",
             "2023-05-02T00:00:00.000001Z", "2023-05-01T20:00:00-04:00", "1969-12-31T23:59:59Z"]
    metadata = [{"time": t} for t in times] + [None, {"tags": ["a"]}]
    ids = np.arange(10, 10 + len(metadata))
    index = M.MilvusIndex(db, "times", nbits=8, overwrite=True)
    index.add(np.zeros((len(ids), 1), np.uint8), ids, metadata)
    table = MetadataTable(ids, metadata)
    for window in ({"start": "2023-05-01T12:00:00Z", "end": "2023-05-02T00:00:00Z"},
                   {"end": "1970-01-01"}, {"start": "2023-05-01T12:00:00.000001Z"}, {}):
        flt = ItemFilter.from_dict({"time": window})
        _, got = index.search(np.zeros((1, 1), np.uint8), 20, filter=flt)
        assert sorted(got[0][got[0] >= 0].tolist()) == table.match(flt).tolist(), window


def test_filter_expressions():
    assert M.filter_expression(None) == "" and M.filter_expression({}) == ""
    expr = M.filter_expression({"tags": ['a"b', "c\nd"], "time": {"start": "1970-01-01T00:00:01Z",
                                                                   "end": "2000-01-01"}})
    assert 'array_contains_all(tags, ["a%22b", "c%0Ad"])' in expr
    assert "has_time == true and time_us >= 1000000 and time_us <= 946684800000000" in expr
    box = M.filter_expression({"near": {"lat": 0.0, "lon": 179.0, "km": 500}})
    assert box.startswith("has_location == true and lat >= -4.49") and "lon >= -180.0" in box
    assert M.filter_expression({"near": {"lat": 89.0, "lon": 0.0, "km": 500}}).count("lon") == 0
    assert M.filter_expression("time_us > 5") == "time_us > 5"  # a raw expression as is
    with pytest.raises(ValueError, match="unknown key"):
        M.filter_expression({"colour": "red"})


@given(st.text(max_size=12))
def test_tag_keys_round_trip(tag):
    key = M.tag_key(tag)
    assert M.tag_from_key(key) == tag
    assert not any(ch in key for ch in "\"'\\") and all(ord(ch) >= 0x20 for ch in key)
    assert (M.tag_key(tag + "x") == key + "x") or "%" in key or not tag


def test_bad_metadata_refused(db):
    index = M.MilvusIndex(db, "meta_limits", nbits=16, overwrite=True, max_tags=2,
                          max_tag_bytes=4)
    codes = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="item 7: lat"):
        index.add(codes, [6, 7], [None, {"lat": 91, "lon": 0}])
    with pytest.raises(ValueError, match="item 7: 3 tags"):
        index.add(codes, [6, 7], [None, {"tags": ["a", "b", "c"]}])
    assert index.ntotal == 0  # nothing inserted by a refused call
    with pytest.raises(ValueError, match="longer than"):
        index.add(codes, [6, 7], [{"tags": ["a%b"]}, None])  # escaped: "a%25b", 5 bytes
    index.add(codes, [6, 7], [{"tags": ["a%"]}, None])  # "a%25": 4 bytes fit
    assert index.ntotal == 2


# ---------------------------------------------------------------------------------------------
# ids, removal, reopening, errors
# ---------------------------------------------------------------------------------------------


def test_ids_remove_and_errors(db):
    rng = np.random.default_rng(4)
    codes = _codes(rng, 400, 32, dups=40)
    ids = _ids(rng, 400)
    index = M.MilvusIndex(db, "small", nbits=32, overwrite=True)
    flat = BinaryIndex(32, "flat")
    index.add(codes, ids)
    flat.add(codes, ids)
    np.testing.assert_array_equal(index.ids(), np.sort(ids))
    with pytest.raises(ValueError, match="ids already in the index"):
        index.add(codes[:3], [5, int(ids[1]), 6])
    with pytest.raises(ValueError, match="ids must be unique"):
        index.add(codes[:2], [5, 5])
    with pytest.raises(ValueError, match="non-negative"):
        index.add(codes[:1], [-3])
    with pytest.raises(ValueError, match="32-bit codes"):
        index.add(np.zeros((1, 8), np.uint8), [9])
    assert index.ntotal == 400
    gone = ids[::3]
    with pytest.raises(UnknownIdsError) as err:
        index.remove(np.concatenate([gone, [123, 456]]))
    np.testing.assert_array_equal(err.value.ids, [123, 456])
    assert index.ntotal == 400  # nothing removed
    assert index.remove(gone) == gone.size
    flat.remove(gone)
    assert index.ntotal == flat.ntotal
    q = _queries(rng, codes, 30)
    d, i = index.search(q, 12)
    d2, i2 = flat.search(q, 12)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)
    # ids=None numbers from the largest id + 1, like BinaryIndex
    index.add(codes[:2])
    assert np.isin([ids.max() + 1, ids.max() + 2], index.ids()).all()
    index.drop()
    with pytest.raises(M.MilvusCollectionError, match="no collection 'small'"):
        M.MilvusIndex.open(db, "small")


def test_reopen_gives_the_same_results(binary_sets, db):
    index, flat, codes, ids, q = binary_sets[256]
    again = M.MilvusIndex.open(db, "b256")
    assert (again.nbits, again.kind, again.ntotal, again.source) == (256, "flat", N_CODES, None)
    same = M.MilvusIndex.open(index.ref)  # the milvus:// reference names the collection
    for other in (again, same):
        d, i = other.search(q[:20], 10)
        d2, i2 = index.search(q[:20], 10)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(d, d2)
    with pytest.raises(M.MilvusCollectionError, match="already exists"):
        M.MilvusIndex(db, "b256", nbits=256)
    with pytest.raises(M.MilvusCollectionError, match="no collection 'nope'"):
        M.MilvusIndex.open(db, "nope")


def test_foreign_collection_is_never_touched(db):
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(db)
    schema = client.create_schema(auto_id=False, description="someone else's")
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.BINARY_VECTOR, dim=8)
    if client.has_collection("foreign"):
        client.drop_collection("foreign")
    client.create_collection("foreign", schema=schema)
    with pytest.raises(M.MilvusCollectionError, match="not written by hashlab"):
        M.MilvusIndex.open(db, "foreign")
    with pytest.raises(M.MilvusCollectionError, match="not written by hashlab"):
        M.MilvusIndex(db, "foreign", nbits=8, overwrite=True)
    assert client.has_collection("foreign")


def test_constructor_checks(db, tmp_path):
    with pytest.raises(ValueError, match="nbits"):
        M.MilvusIndex(db, "x", nbits=0)
    with pytest.raises(ValueError, match="takes dim"):
        M.MilvusIndex(db, "x", family="float", nbits=8)
    with pytest.raises(ValueError, match="unknown parameter"):
        M.MilvusIndex(db, "x", nbits=8, nlist=3)
    with pytest.raises(ValueError, match="collection name"):
        M.MilvusIndex(db, "bad-name", nbits=8)
    with pytest.raises(M.MilvusCollectionError, match="ends with .db"):
        M.MilvusIndex(str(tmp_path / "codes.sqlite"), "x", nbits=8)
    with pytest.raises(ValueError, match="kind"):
        M.MilvusIndex(db, "x", nbits=8, kind="hnsw")
    with pytest.raises(M.MilvusCollectionError, match="BIN_IVF_FLAT"):
        M.MilvusIndex(db, "binivf", nbits=8, kind="ivf")  # milvus-lite builds BIN_FLAT only


def test_milvus_uris():
    ref = M.parse_milvus_uri("milvus:///data/x%20y/codes.db?collection=c1")
    assert (ref.uri, ref.collection, ref.token, ref.local) == ("/data/x y/codes.db", "c1",
                                                              None, True)
    assert str(ref) == "milvus:///data/x%20y/codes.db?collection=c1"
    ref = M.parse_milvus_uri("milvus://bob:s3cr%40t@db.example:19530?collection=c&db=prod")
    assert (ref.uri, ref.token, ref.db_name) == ("http://db.example:19530", "bob:s3cr@t", "prod")
    assert str(ref) == "milvus://db.example:19530?collection=c&db=prod"  # no credentials
    assert M.parse_milvus_uri("milvus+https://h:443?collection=c").uri == "https://h:443"
    for bad, match in (("milvus://h?collection=c&x=1", "unknown parameter"),
                       ("milvus:///a.db", "name the collection"),
                       ("milvus://h/path?collection=c", "no path"),
                       ("milvus:///a.db?collection=1x", "collection name"),
                       ("http://h?collection=c", "not a milvus://")):
        with pytest.raises(M.MilvusCollectionError, match=match):
            M.parse_milvus_uri(bad)


def test_missing_pymilvus_says_what_to_install(monkeypatch, db):
    """Importing the module needs no pymilvus (the registries import every module of
    hashlab.index); the first use says what to install."""
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    monkeypatch.delitem(sys.modules, "hashlab.index.milvus")
    monkeypatch.setattr(hashlab.index, "milvus", M, raising=False)
    fresh = importlib.import_module("hashlab.index.milvus")
    assert fresh is not M
    with pytest.raises(ImportError, match=r'pip install "hashlab\[milvus\]"') as err:
        fresh.MilvusIndex(db, "x", nbits=8)
    assert isinstance(err.value, HashlabError)


# ---------------------------------------------------------------------------------------------
# the command line: hashlab index --backend milvus, hashlab search milvus://...
# ---------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_index_and_search_milvus(tmp_path):
    from hashlab.encode import TrainedRun

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, train={"epochs": 1})))
    assert runner.invoke(app, ["train", str(config), "--no-progress"]).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    db = tmp_path / "cli.db"

    bad = runner.invoke(app, ["index", str(run), "--backend", "milvus"])
    assert bad.exit_code == 2 and "needs --uri" in bad.output
    bad = runner.invoke(app, ["index", str(run), "--uri", str(db)])
    assert bad.exit_code == 2 and "go with --backend milvus" in bad.output
    bad = runner.invoke(app, ["index", str(run), "--backend", "milvus", "--uri", str(db),
                              "--kind", "hash"])
    assert bad.exit_code == 2 and "flat, ivf" in bad.output

    result = runner.invoke(app, ["index", str(run), "--backend", "milvus", "--uri", str(db),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    ref = f"milvus://{db}?collection=hashlab_tiny_train_flat"
    assert ref in result.output
    index = M.MilvusIndex.open(ref)
    train = TrainedRun(run).encode("train", progress=False)
    assert index.source["split"] == "train" and index.source["code"] == "binary"
    assert index.ntotal == len(train)

    out = tmp_path / "hits.json"
    assert_cli_search_is_brute_force(runner, app, ref, run, out)
    result = runner.invoke(app, ["search", ref, "--ids", "3", "--k", "1", "--out", str(out),
                                 "--no-progress"])
    assert json.loads(out.read_text())["index"] == ref

    # float codes (cosine) into a named collection, equal to a FloatIndex of the same
    result = runner.invoke(app, ["index", str(run), "--backend", "milvus", "--uri", str(db),
                                 "--code", "float", "--collection", "tiny_float",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    fref = f"milvus://{db}?collection=tiny_float"
    result = runner.invoke(app, ["search", fref, "--ids", "0", "--ids", "9", "--k", "4",
                                 "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    flat = FloatIndex(train.float.shape[1])
    flat.add(train.float)
    S, top = flat.search(train.float[[0, 9]], 4)
    for r, query in enumerate(json.loads(out.read_text())["results"]):
        np.testing.assert_allclose(query["similarities"], S[r], atol=1e-5)
        assert query["ids"] == top[r].tolist()

    # a collection that does not match the run (not the whole split) is refused
    M.write_run_collection(TrainedRun(run), train.bits[:10], np.arange(10), uri=str(db),
                           collection="short", split="train", code="binary")
    bad = runner.invoke(app, ["search", f"milvus://{db}?collection=short", "--ids", "1"])
    assert bad.exit_code == 2 and "holds 10 codes but the run's train split" in bad.output
    bad = runner.invoke(app, ["search", f"milvus://{db}?collection=missing", "--ids", "1"])
    assert bad.exit_code == 2 and "no collection 'missing'" in bad.output
