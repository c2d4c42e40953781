"""Conditioned search (hashlab.index.filters) against brute force: random codes, random
metadata and random filters; the filtered answer must equal filtering with numpy and ranking
by (distance, id), for every path (FAISS id selector on flat, a flat copy of an HNSW index, a
caller's scan index for a hash table, which keeps no readable codes, float flat), and geographic
re-ranking must equal a transcription of its score over the documented candidate set."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hashlab.index import BinaryIndex, FloatIndex
from hashlab.index.codes import pack_bits
from hashlab.index.filters import (
    RERANK_FACTOR,
    ItemFilter,
    MetadataTable,
    Near,
    conditioned_search,
    filtered_query,
    haversine_km,
)
from hashlab.serve.metadata import check_metadata, synthetic_metadata
from tests.test_index import bf_hamming

CENTRES = [(48.8566, 2.3522), (40.7128, -74.0060), (-33.8688, 151.2093)]
TAGS = ["red", "blue", "sale"]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def random_metadata(rng: np.random.Generator, n: int) -> list[dict | None]:
    out: list[dict | None] = []
    for _ in range(n):
        if rng.random() < 0.1:
            out.append(None)
            continue
        meta: dict = {}
        if rng.random() < 0.85:
            lat, lon = CENTRES[rng.integers(len(CENTRES))]
            meta["lat"], meta["lon"] = lat + rng.normal(0, 0.2), lon + rng.normal(0, 0.2)
        meta["tags"] = [t for t in TAGS if rng.random() < 0.5]
        if rng.random() < 0.85:
            when = T0 + timedelta(hours=int(rng.integers(0, 24 * 30)))
            meta["time"] = when.isoformat()
        out.append(meta)
    return out


def random_filter(rng: np.random.Generator) -> dict:
    flt: dict = {}
    if rng.random() < 0.6:
        lat, lon = CENTRES[rng.integers(len(CENTRES))]
        flt["near"] = {"lat": lat, "lon": lon, "km": float(rng.choice([0, 10, 30, 60, 20000]))}
    if rng.random() < 0.5:
        flt["tags"] = [t for t in TAGS if rng.random() < 0.4]
    if rng.random() < 0.5:
        a, b = sorted(rng.integers(0, 24 * 30, 2).tolist())
        flt["time"] = {"start": None if rng.random() < 0.3 else (T0 + timedelta(hours=a))
                       .isoformat(),
                       "end": None if rng.random() < 0.3 else (T0 + timedelta(hours=b))
                       .strftime("%Y-%m-%dT%H:%M:%SZ")}
    return flt


def km_oracle(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The haversine formula, written out with math (R = 6371.0088 km)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(min(1.0, a)))


def matches(meta: dict | None, flt: dict) -> bool:
    """The filter semantics, item by item: every condition given must hold (an empty tag list
    is no condition); an item without metadata meets none."""
    if meta is None:
        return not ("near" in flt or flt.get("tags") or "time" in flt)
    if "near" in flt:
        near = flt["near"]
        if "lat" not in meta or km_oracle(near["lat"], near["lon"], meta["lat"],
                                          meta["lon"]) > near["km"]:
            return False
    if not set(flt.get("tags", [])) <= set(meta.get("tags", [])):
        return False
    if "time" in flt:
        if "time" not in meta:
            return False
        t = datetime.fromisoformat(meta["time"])
        start, end = flt["time"]["start"], flt["time"]["end"]
        if start is not None and t < datetime.fromisoformat(start):
            return False
        if end is not None and t > datetime.fromisoformat(end):
            return False
    return True


def topk_oracle(dist: np.ndarray, ids: np.ndarray, keep: np.ndarray, k: int | None,
                radius: int | None, descending: bool = False):
    """Filter with a numpy mask, then rank by (distance, id)."""
    d, i = dist[keep], ids[keep]
    order = np.lexsort((i, -d if descending else d))
    d, i = d[order], i[order]
    if radius is not None:
        sel = d <= radius
        return d[sel], i[sel]
    return d[:k], i[:k]


def make_data(seed: int, n: int, nbits: int):
    rng = np.random.default_rng(seed)
    pool = pack_bits(rng.integers(0, 2, (max(1, n // 2), nbits)))  # repeated codes: ties
    codes = pool[rng.integers(0, len(pool), n)]
    ids = rng.choice(10 * n + 10, n, replace=False).astype(np.int64)
    meta = random_metadata(rng, n)
    return rng, codes, ids, meta


def binary_index(kind: str, nbits: int, codes, ids):
    params = {"hash": {"nflip": 0}, "hnsw": {"M": 4}}.get(kind, {})
    index = BinaryIndex(nbits, kind, **params)
    index.add(codes, ids)
    return index


@pytest.mark.parametrize("kind", ["flat", "hnsw", "hash"])
@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), nbits=st.sampled_from([8, 16, 24]),
       k=st.integers(1, 70), use_radius=st.booleans())
def test_filtered_binary_search_equals_brute_force(kind, seed, n, nbits, k, use_radius):
    rng, codes, ids, meta = make_data(seed, n, nbits)
    index = binary_index(kind, nbits, codes, ids)
    # a hash table keeps no readable codes: the caller gives a flat index of the same codes
    scan = binary_index("flat", nbits, codes, ids) if kind == "hash" else None
    table = MetadataTable(ids, meta)
    raw = random_filter(rng)
    flt = ItemFilter.from_dict(raw)
    keep = np.array([matches(m, raw) for m in meta], dtype=bool)
    np.testing.assert_array_equal(table.match(flt), np.sort(ids[keep]))
    q = codes[rng.integers(0, n, 3)] ^ rng.integers(0, 2, (3, codes.shape[1]), dtype=np.uint8)
    q[:, -1] &= np.uint8((1 << (nbits % 8 or 8)) - 1)
    radius = int(rng.integers(0, nbits + 1)) if use_radius else None
    res = filtered_query(index, q, table.match(flt), k=None if use_radius else k, radius=radius,
                         scan=scan)
    assert res.exact and res.query_exact.all()
    dist = bf_hamming(q, codes)
    for r in range(len(q)):
        want_d, want_i = topk_oracle(dist[r], ids, keep, k, radius)
        got_d, got_i = res.hits[r]
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_array_equal(got_d, want_d)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), k=st.integers(1, 70))
def test_filtered_float_search_equals_brute_force(seed, n, k):
    rng = np.random.default_rng(seed)
    pool = rng.normal(size=(max(1, n // 2), 6)).astype(np.float32)
    x = pool[rng.integers(0, len(pool), n)]  # duplicates: exactly tied similarities
    ids = rng.choice(10 * n + 10, n, replace=False).astype(np.int64)
    meta = random_metadata(rng, n)
    index = FloatIndex(6)
    index.add(x, ids)
    raw = random_filter(rng)
    keep = np.array([matches(m, raw) for m in meta], dtype=bool)
    q = rng.normal(size=(2, 6)).astype(np.float32)
    res = filtered_query(index, q, MetadataTable(ids, meta).match(ItemFilter.from_dict(raw)),
                         k=k)
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    cos = (q64 / np.linalg.norm(q64, axis=1, keepdims=True)) @ (
        x64 / np.linalg.norm(x64, axis=1, keepdims=True)).T
    for r in range(len(q)):
        want_s, want_i = topk_oracle(cos[r], ids, keep, k, None, descending=True)
        got_s, got_i = res.hits[r]
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_s, want_s, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@settings(max_examples=25)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), k=st.integers(1, 12),
       lam=st.sampled_from([0.0, 0.01, 0.1, 1.0, 10.0]), use_radius=st.booleans())
def test_rerank_equals_brute_force_over_the_candidates(kind, seed, n, k, lam, use_radius):
    rng, codes, ids, meta = make_data(seed, n, 16)
    index = binary_index(kind, 16, codes, ids)
    table = MetadataTable(ids, meta)
    raw = random_filter(rng)
    lat, lon = CENTRES[rng.integers(len(CENTRES))]
    raw["near"] = {"lat": lat, "lon": lon, "km": float(rng.choice([20, 60, 20000]))}
    keep = np.array([matches(m, raw) for m in meta], dtype=bool)
    q = codes[int(rng.integers(0, n))]
    radius = int(rng.integers(0, 17)) if use_radius else None
    got = conditioned_search(index, q, table, ItemFilter.from_dict(raw),
                             k=None if use_radius else k, radius=radius, rerank=lam)
    # candidates: the filtered top RERANK_FACTOR * k by Hamming distance (or the radius hits)
    dist = bf_hamming(q[None], codes)[0]
    cand_d, cand_i = topk_oracle(dist, ids, keep, RERANK_FACTOR * k, radius)
    pos = {int(i): j for j, i in enumerate(ids)}
    score = [float(d) + lam * km_oracle(lat, lon, meta[pos[int(i)]]["lat"],
                                        meta[pos[int(i)]]["lon"])
             for d, i in zip(cand_d, cand_i, strict=True)]
    order = sorted(range(len(score)), key=lambda j: (score[j], int(cand_i[j])))
    if radius is None:
        order = order[:k]
    np.testing.assert_array_equal(got.ids, cand_i[order])
    np.testing.assert_array_equal(got.scores, cand_d[order])
    np.testing.assert_allclose(got.combined, np.asarray(score)[order], rtol=1e-9, atol=1e-9)


def test_filters_that_match_nothing_and_bad_filters():
    rng, codes, ids, meta = make_data(0, 30, 16)
    index = binary_index("flat", 16, codes, ids)
    table = MetadataTable(ids, meta)
    flt = ItemFilter.from_dict({"tags": ["no-such-tag"]})
    res = filtered_query(index, codes[:2], table.match(flt), k=5)
    assert [h[1].size for h in res.hits] == [0, 0] and res.exact
    assert ItemFilter.from_dict({}).empty and ItemFilter.from_dict(None).empty
    assert not ItemFilter.from_dict({"time": {}}).empty  # a window: items need a time
    for bad, match in [({"near": {"lat": 91, "lon": 0, "km": 1}}, "near.lat"),
                       ({"near": {"lat": 0, "lon": 0}}, "near"),
                       ({"near": {"lat": 0, "lon": 0, "km": -1}}, "near.km"),
                       ({"tags": "red"}, "tags"), ({"time": {"start": "yesterday"}}, "ISO"),
                       ({"colour": "red"}, "unknown key")]:
        with pytest.raises(ValueError, match=match):
            ItemFilter.from_dict(bad)
    with pytest.raises(ValueError, match="lon"):
        MetadataTable([1], [{"lat": 3}])
    with pytest.raises(ValueError, match="tags"):
        check_metadata({"tags": "red"}, 1000)
    with pytest.raises(ValueError, match="bytes"):
        check_metadata({"note": "x" * 2000}, 1000)
    # no copy of the codes in a hash table, and no scan index given: refused, not post-filtered
    with pytest.raises(ValueError, match="cannot filter"):
        filtered_query(binary_index("hash", 16, codes, ids), codes[:1], ids[:3], k=2)
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.5, abs=1.0)


def test_synthetic_metadata_is_deterministic_and_marked():
    labels = np.array([0, 1, 2, 1, 0] * 20)
    names = ["T-shirt/top", "Trouser", "Pullover"]
    a, b = synthetic_metadata(labels, names, seed=0), synthetic_metadata(labels, names, seed=0)
    assert a == b and a != synthetic_metadata(labels, names, seed=1)
    assert all(m["synthetic"] is True for m in a)
    assert [m["tags"][0] for m in a[:3]] == ["t-shirt-top", "trouser", "pullover"]
    assert {m["tags"][1] for m in a} == {"sale", "new"}
    table = MetadataTable(np.arange(len(a)), a)
    # every item is within ~30 km of one of the synthetic cities
    near_any = np.zeros(len(a), bool)
    for lat, lon in {(m["lat"] // 1, m["lon"] // 1) for m in a}:
        near_any |= table.mask(ItemFilter(near=Near(lat + 0.5, lon + 0.5, 200)))
    assert near_any.all()
    assert not np.isnan(table.time).any()


def test_extra_files_are_saved_in_the_swap_and_checked(tmp_path):
    from hashlab.index import IndexFileError, load_index, save_index
    from hashlab.index.store import read_extra_file

    _, codes, ids, _ = make_data(1, 20, 16)
    index = binary_index("flat", 16, codes, ids)
    save_index(index, tmp_path / "idx", extra_files={"items.json": b"{}"})
    assert read_extra_file(tmp_path / "idx", "items.json") == b"{}"
    assert read_extra_file(tmp_path / "idx", "other.json") is None
    save_index(index, tmp_path / "idx")  # a later save without it drops it
    assert not (tmp_path / "idx" / "items.json").exists()
    save_index(index, tmp_path / "idx", extra_files={"items.json": b"{}"})
    (tmp_path / "idx" / "items.json").write_bytes(b"{ }")
    with pytest.raises(IndexFileError, match="items.json: SHA-256"):
        load_index(tmp_path / "idx")
    for name in ("../x", "manifest.json", "source.json", ""):
        with pytest.raises(ValueError, match="plain file name"):
            save_index(index, tmp_path / "idx", extra_files={name: b""})
