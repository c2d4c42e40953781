"""Tests of hashlab.eval.metrics against scikit-learn and a plain brute-force transcription."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from hashlab.eval import (
    ap_at_k_from_relevance,
    ap_from_relevance,
    cosine_similarities,
    default_pr_ranks,
    hamming_pr_curve_from_relevance,
    precision_at_k_from_relevance,
    radius_precision_recall_from_relevance,
    rank_by_distance,
    rank_by_similarity,
    rank_pr_curve_from_relevance,
    recall_at_k_from_relevance,
    relevance_matrix,
    retrieval_metrics,
)
from hashlab.index.codes import pack_bits

SETTINGS = settings(max_examples=50, deadline=None)


# ------------------------------------------------------------------------------------------
# brute-force reference: a literal, loop-based transcription of the definitions
# ------------------------------------------------------------------------------------------


def _ref_distances(q: np.ndarray, db: np.ndarray, kind: str) -> list[list[float]]:
    """Binary: Hamming distance from unpacked bit lists; float: 1 - cosine (float64)."""
    out = []
    for qi in q:
        row = []
        for x in db:
            if kind == "binary":
                qb = [int(b) for byte in qi for b in format(int(byte), "08b")]
                xb = [int(b) for byte in x for b in format(int(byte), "08b")]
                row.append(float(sum(a != b for a, b in zip(qb, xb, strict=True))))
            else:
                dot = sum(float(a) * float(b) for a, b in zip(qi, x, strict=True))
                nq = math.sqrt(sum(float(a) ** 2 for a in qi))
                nx = math.sqrt(sum(float(b) ** 2 for b in x))
                row.append(-dot / (nq * nx))  # distance ascending = similarity descending
        out.append(row)
    return out


def _ref_relevant(a: Any, b: Any) -> bool:
    if np.ndim(a) == 0:
        return bool(a == b)
    return any(x == 1 and y == 1 for x, y in zip(a, b, strict=True))


def _ref_metrics(
    q: np.ndarray,
    db: np.ndarray,
    ql: np.ndarray,
    dl: np.ndarray,
    *,
    kind: str,
    nbits: int | None,
    topk: tuple[int, ...],
    radius: int | None,
    pr_ranks: list[int] | None = None,
    self_idx: np.ndarray | None = None,
) -> dict[str, Any]:
    dists = _ref_distances(q, db, kind)
    per: dict[str, list] = {}

    def add(key: str, value: Any) -> None:
        per.setdefault(key, []).append(value)

    for i in range(len(q)):
        items = [j for j in range(len(db)) if self_idx is None or j != self_idx[i]]
        ranked = sorted(items, key=lambda j, i=i: (dists[i][j], j))
        rel = [_ref_relevant(ql[i], dl[j]) for j in ranked]
        n = len(ranked)
        big_r = sum(rel)
        # AP over the whole ranking
        hits, total = 0, 0.0
        for pos, r in enumerate(rel, start=1):
            if r:
                hits += 1
                total += hits / pos
        add("mAP@all", total / big_r if big_r else 0.0)
        for k in topk:
            kk = min(k, n)
            hits, total = 0, 0.0
            for pos in range(1, kk + 1):
                if rel[pos - 1]:
                    hits += 1
                    total += hits / pos
            add(f"mAP@{k}", total / hits if hits else 0.0)
            add(f"P@{k}", hits / kk)
            add(f"R@{k}", hits / big_r if big_r else 0.0)

        if kind == "binary":
            ranked_d = [dists[i][j] for j in ranked]
            if radius is not None:
                p, r, _ = _ref_within(radius, ranked_d, rel)
                add(f"P@r{radius}", p)
                add(f"R@r{radius}", r)
            assert nbits is not None
            curve = [_ref_within(r_, ranked_d, rel) for r_ in range(nbits + 1)]
            add("curve_p", [c[0] for c in curve])
            add("curve_r", [c[1] for c in curve])
            add("curve_n", [c[2] for c in curve])
        elif pr_ranks is not None:
            add("curve_p", [sum(rel[: min(m, n)]) / min(m, n) for m in pr_ranks])
            add("curve_r", [sum(rel[: min(m, n)]) / big_r if big_r else 0.0 for m in pr_ranks])
    out: dict[str, Any] = {}
    for key, values in per.items():
        if key.startswith("curve"):
            out[key] = [sum(col) / len(values) for col in zip(*values, strict=True)]
        else:
            out[key] = sum(values) / len(values)
    return out


def _ref_within(radius: int, ranked_d: list[float], rel: list[bool]) -> tuple[float, float, int]:
    """Precision, recall and count of the items within Hamming radius ``radius``."""
    got = [r for d, r in zip(ranked_d, rel, strict=True) if d <= radius]
    big_r = sum(rel)
    prec = sum(got) / len(got) if got else 0.0
    rec = sum(got) / big_r if big_r else 0.0
    return prec, rec, len(got)


def _assert_matches_reference(res: dict[str, Any], ref: dict[str, Any], kind: str) -> None:
    for key, value in ref.items():
        if key.startswith("curve"):
            continue
        assert res[key] == pytest.approx(value, abs=1e-12), key
    if "curve_p" in ref:
        curve = res["pr_curve"]
        np.testing.assert_allclose(curve["precision"], ref["curve_p"], atol=1e-12)
        np.testing.assert_allclose(curve["recall"], ref["curve_r"], atol=1e-12)
        if kind == "binary":
            np.testing.assert_allclose(curve["n_retrieved"], ref["curve_n"], atol=1e-12)


# ------------------------------------------------------------------------------------------
# random case generators (small codes -> many distance ties)
# ------------------------------------------------------------------------------------------


def _labels(rng: np.random.Generator, n: int, n_classes: int, multi: bool) -> np.ndarray:
    if multi:
        return (rng.random((n, n_classes)) < 0.3).astype(np.int64)  # some rows all-zero
    return rng.integers(0, n_classes, size=n)


def _binary_case(seed: int, nq: int, ndb: int, nbits: int, n_classes: int, multi: bool):
    rng = np.random.default_rng(seed)
    dbits = rng.integers(0, 2, size=(ndb, nbits))
    dbits[ndb // 2 :] = dbits[: ndb - ndb // 2]  # exact duplicates: more ties
    qbits = rng.integers(0, 2, size=(nq, nbits))
    return (
        pack_bits(qbits),
        pack_bits(dbits),
        _labels(rng, nq, n_classes, multi),
        _labels(rng, ndb, n_classes, multi),
    )


def _pm1_float_case(seed: int, nq: int, ndb: int, dim: int, n_classes: int, multi: bool):
    """±1 vectors scaled by powers of two: cosine values are exact, so ties are exact."""
    rng = np.random.default_rng(seed)

    def codes(n: int) -> np.ndarray:
        x = rng.choice([-1.0, 1.0], size=(n, dim))
        return (x * 2.0 ** rng.integers(-3, 4, size=(n, 1))).astype(np.float32)

    return (
        codes(nq),
        codes(ndb),
        _labels(rng, nq, n_classes, multi),
        _labels(rng, ndb, n_classes, multi),
    )


case_params = dict(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 6),
    ndb=st.integers(1, 40),
    n_classes=st.integers(1, 4),
    multi=st.booleans(),
    topk=st.lists(st.integers(1, 50), min_size=1, max_size=3).map(tuple),
    chunk_size=st.integers(1, 8),
)


# ------------------------------------------------------------------------------------------
# AP against scikit-learn
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    rels=st.lists(st.lists(st.booleans(), min_size=60, max_size=60), min_size=1, max_size=6),
    n=st.integers(1, 60),
)
def test_ap_equals_sklearn(rels: list[list[bool]], n: int) -> None:
    rel = np.array(rels, dtype=bool)[:, :n]
    assume(rel.any(axis=1).all())  # sklearn's AP is undefined without positives
    scores = np.arange(n, 0, -1, dtype=np.float64)  # strictly decreasing by rank: no ties
    ours = ap_from_relevance(rel)
    for i in range(rel.shape[0]):
        assert ours[i] == pytest.approx(average_precision_score(rel[i], scores), abs=1e-12)


def test_ap_zero_relevant_is_zero() -> None:
    rel = np.zeros((2, 5), dtype=bool)
    rel[1, 2] = True
    np.testing.assert_array_equal(ap_from_relevance(rel), [0.0, 1 / 3])
    np.testing.assert_array_equal(ap_at_k_from_relevance(rel, 2), [0.0, 0.0])
    np.testing.assert_array_equal(recall_at_k_from_relevance(rel, 5), [0.0, 1.0])


def test_ap_with_truncated_ranking_uses_n_relevant() -> None:
    rel = np.array([[True, False, True]])
    # two more relevant items exist beyond the ranking: R = 4
    assert ap_from_relevance(rel, n_relevant=[4])[0] == pytest.approx((1 + 2 / 3) / 4)
    assert recall_at_k_from_relevance(rel, 3, n_relevant=4)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_relevant"):
        ap_from_relevance(rel, n_relevant=[1])
    with pytest.raises(ValueError, match="shape"):
        ap_from_relevance(rel, n_relevant=[4, 4])


# ------------------------------------------------------------------------------------------
# lower-level functions against the brute force
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 5),
    n=st.integers(1, 30),
    k=st.integers(1, 40),
    nbits=st.integers(1, 10),
)
def test_relevance_level_functions(seed: int, nq: int, n: int, k: int, nbits: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.random((nq, n)) < rng.random()
    dist = np.sort(rng.integers(0, nbits + 1, size=(nq, n)), axis=1)
    radius = int(rng.integers(0, nbits + 1))
    ranks = sorted(set(rng.integers(1, n + 5, size=4).tolist()))
    ap_k = ap_at_k_from_relevance(rel, k)
    p_k = precision_at_k_from_relevance(rel, k)
    r_k = recall_at_k_from_relevance(rel, k)
    p_rad, r_rad = radius_precision_recall_from_relevance(rel, dist, radius)
    cp, cr, cn = hamming_pr_curve_from_relevance(rel, dist, nbits)
    rp, rr = rank_pr_curve_from_relevance(rel, ranks)
    for i in range(nq):
        row = rel[i].tolist()
        big_r = sum(row)
        kk = min(k, n)
        top = row[:kk]
        hits, tot = 0, 0.0
        for pos, r in enumerate(top, 1):
            if r:
                hits += 1
                tot += hits / pos
        assert ap_k[i] == pytest.approx(tot / hits if hits else 0.0, abs=1e-12)
        assert p_k[i] == pytest.approx(sum(top) / kk)
        assert r_k[i] == pytest.approx(sum(top) / big_r if big_r else 0.0)
        for r_ in range(nbits + 1):
            got = [row[p] for p in range(n) if dist[i, p] <= r_]
            prec = sum(got) / len(got) if got else 0.0
            rec = sum(got) / big_r if big_r else 0.0
            assert cn[i, r_] == len(got)
            assert cp[i, r_] == pytest.approx(prec) and cr[i, r_] == pytest.approx(rec)
            if r_ == radius:
                assert p_rad[i] == pytest.approx(prec) and r_rad[i] == pytest.approx(rec)
        for j, m in enumerate(ranks):
            mm = min(m, n)
            assert rp[i, j] == pytest.approx(sum(row[:mm]) / mm)
            assert rr[i, j] == pytest.approx(sum(row[:mm]) / big_r if big_r else 0.0)


def test_ranking_ties_broken_by_index() -> None:
    d = np.array([[2, 1, 2, 0, 1, 2], [0, 0, 0, 0, 0, 0]], dtype=np.int32)
    np.testing.assert_array_equal(rank_by_distance(d), [[3, 1, 4, 0, 2, 5], list(range(6))])
    np.testing.assert_array_equal(rank_by_distance(d.astype(np.int64) * 1000), rank_by_distance(d))
    s = np.array([[0.5, 1.0, 0.5, -0.0, 0.0, -1.0, 1.0]], dtype=np.float32)
    expected = [[1, 6, 0, 2, 3, 4, 5]]  # -0.0 and 0.0 tie
    np.testing.assert_array_equal(rank_by_similarity(s), expected)
    np.testing.assert_array_equal(rank_by_similarity(s.astype(np.float64)), expected)
    rng = np.random.default_rng(0)
    s = rng.choice(np.float32([-2.5, -1e-30, 0.0, 1e-30, 3.0, np.inf, -np.inf]), size=(4, 50))
    for row, order in zip(s, rank_by_similarity(s), strict=True):
        assert order.tolist() == sorted(range(50), key=lambda j, row=row: (-row[j], j))


def test_similarity_ranking_resolves_single_ulps() -> None:
    """Neighbouring float32 values (1 ulp apart) keep their exact order, both signs."""
    vals = [_ulp_step(b, u) for b in np.float32([0.5, -0.25, 1e-38, -3.0]) for u in range(-20, 21)]
    vals += [np.float32(0.0), np.float32(-0.0)]
    rng = np.random.default_rng(0)
    s = rng.permutation(np.array(vals + vals[::7], dtype=np.float32))[None, :]
    expected = sorted(range(s.shape[1]), key=lambda j: (-float(s[0, j]), j))
    assert rank_by_similarity(s)[0].tolist() == expected


def _ulp_step(x: np.float32, steps: int) -> np.float32:
    direction = np.float32(np.inf) if steps > 0 else np.float32(-np.inf)
    for _ in range(abs(steps)):
        x = np.nextafter(x, direction)
    return np.float32(x)


# ------------------------------------------------------------------------------------------
# retrieval_metrics against the brute force
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(nbits=st.sampled_from([4, 8, 12]), data=st.data(), **case_params)
def test_binary_metrics_match_reference(
    seed, nq, ndb, n_classes, multi, topk, chunk_size, nbits, data
) -> None:
    q, db, ql, dl = _binary_case(seed, nq, ndb, nbits, n_classes, multi)
    radius = data.draw(st.integers(0, nbits))
    res = retrieval_metrics(
        q,
        db,
        ql,
        dl,
        kind="binary",
        nbits=nbits,
        topk=topk,
        radius=radius,
        chunk_size=chunk_size,
    )
    ref = _ref_metrics(q, db, ql, dl, kind="binary", nbits=nbits, topk=topk, radius=radius)
    _assert_matches_reference(res, ref, "binary")
    assert res["pr_curve"]["radius"] == list(range(nbits + 1))
    assert res["n_queries"] == nq and res["n_database"] == ndb and res["nbits"] == nbits


@SETTINGS
@given(dim=st.sampled_from([4, 16]), **case_params)
def test_float_metrics_match_reference_with_exact_ties(
    seed, nq, ndb, n_classes, multi, topk, chunk_size, dim
) -> None:
    q, db, ql, dl = _pm1_float_case(seed, nq, ndb, dim, n_classes, multi)
    res = retrieval_metrics(
        q, db, ql, dl, kind="float", topk=topk, chunk_size=chunk_size, pr_points=7
    )
    ranks = res["pr_curve"]["rank"]
    assert ranks == default_pr_ranks(ndb, 7).tolist()
    assert ranks[0] == 1 and ranks[-1] == ndb and ranks == sorted(set(ranks))
    ref = _ref_metrics(
        q, db, ql, dl, kind="float", nbits=None, topk=topk, radius=None, pr_ranks=ranks
    )
    _assert_matches_reference(res, ref, "float")
    assert "P@r2" not in res


@pytest.mark.parametrize("seed", range(4))
def test_float_metrics_gaussian(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((5, 8))
    db = rng.standard_normal((60, 8)).astype(np.float32)
    ql, dl = rng.integers(0, 3, 5), rng.integers(0, 3, 60)
    sims = np.sort(cosine_similarities(q, db).astype(np.float64), axis=1)
    assert np.diff(sims, axis=1).min() > 1e-6  # no near-ties: float32 ranking is unambiguous
    res = retrieval_metrics(q, db, ql, dl, kind="float", topk=(1, 10, 100), pr_points=10)
    ref = _ref_metrics(
        q,
        db,
        ql,
        dl,
        kind="float",
        nbits=None,
        topk=(1, 10, 100),
        radius=None,
        pr_ranks=res["pr_curve"]["rank"],
    )
    _assert_matches_reference(res, ref, "float")


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    nq=st.integers(1, 5),
    ndb=st.integers(2, 30),
    kind=st.sampled_from(["binary", "float"]),
    multi=st.booleans(),
    chunk_size=st.integers(1, 6),
)
def test_exclude_self_matches_reference(seed, nq, ndb, kind, multi, chunk_size) -> None:
    rng = np.random.default_rng(seed)
    if kind == "binary":
        _, db, _, dl = _binary_case(seed, 1, ndb, 6, 3, multi)
    else:
        _, db, _, dl = _pm1_float_case(seed, 1, ndb, 4, 3, multi)
    idx = rng.integers(0, ndb, size=nq)
    q, ql = db[idx], dl[idx]
    nbits = 6 if kind == "binary" else None
    topk = (1, 5, 100)
    res = retrieval_metrics(
        q,
        db,
        ql,
        dl,
        kind=kind,
        nbits=nbits,
        topk=topk,
        radius=1,
        chunk_size=chunk_size,
        exclude_self=True,
        query_db_indices=idx,
        pr_points=5,
    )
    ref = _ref_metrics(
        q,
        db,
        ql,
        dl,
        kind=kind,
        nbits=nbits,
        topk=topk,
        radius=1,
        pr_ranks=res["pr_curve"].get("rank"),
        self_idx=idx,
    )
    _assert_matches_reference(res, ref, kind)
    assert res["n_ranked"] == ndb - 1


def test_exclude_self_equals_deleting_the_item() -> None:
    q, db, ql, dl = _binary_case(5, 1, 50, 8, 3, False)
    for i in (0, 17, 49):
        a = retrieval_metrics(
            db[[i]],
            db,
            dl[[i]],
            dl,
            kind="binary",
            topk=(10,),
            exclude_self=True,
            query_db_indices=[i],
        )
        b = retrieval_metrics(
            db[[i]],
            np.delete(db, i, axis=0),
            dl[[i]],
            np.delete(dl, i),
            kind="binary",
            topk=(10,),
        )
        for key in ("mAP@all", "mAP@10", "P@10", "R@10", "P@r2", "R@r2", "pr_curve"):
            assert a[key] == b[key], key


@pytest.mark.parametrize("kind", ["binary", "float", "float-gaussian"])
@pytest.mark.parametrize("multi", [False, True])
def test_chunk_size_invariance(kind: str, multi: bool) -> None:
    if kind == "binary":
        q, db, ql, dl = _binary_case(11, 23, 300, 8, 4, multi)
    elif kind == "float":
        q, db, ql, dl = _pm1_float_case(11, 23, 300, 16, 4, multi)
    else:
        rng = np.random.default_rng(11)
        q, db = rng.standard_normal((23, 12)), rng.standard_normal((300, 12))
        ql, dl = _labels(rng, 23, 4, multi), _labels(rng, 300, 4, multi)
    kw = dict(kind=kind.split("-")[0], topk=(5, 50, 1000), radius=2 if kind == "binary" else None)
    results = [retrieval_metrics(q, db, ql, dl, chunk_size=cs, **kw) for cs in (1, 7, 23, 1000)]
    for other in results[1:]:
        assert other == results[0]  # bit-identical, PR curve included


# ------------------------------------------------------------------------------------------
# hand-computed examples
# ------------------------------------------------------------------------------------------


def test_hand_computed_binary_example() -> None:
    bits = lambda s: [int(c) for c in s]  # noqa: E731
    db = pack_bits(np.array([bits(s) for s in ["0001", "0000", "0011", "0001", "1111", "0111"]]))
    dl = np.array([1, 0, 0, 0, 1, 0])
    q = pack_bits(np.array([bits("0000"), bits("1111")]))
    ql = np.array([0, 2])  # the second query has no relevant item: it scores 0 everywhere
    res = retrieval_metrics(q, db, ql, dl, kind="binary", nbits=4, topk=(2, 3), radius=1)
    # query 0 ranking (distance, index): 1(d0,rel) 0(d1) 3(d1,rel) 2(d2,rel) 5(d3,rel) 4(d4)
    assert res["mAP@all"] == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 5) / 4 / 2)
    assert res["mAP@2"] == pytest.approx(1.0 / 2)
    assert res["mAP@3"] == pytest.approx((1 + 2 / 3) / 2 / 2)
    assert res["P@2"] == pytest.approx(1 / 2 / 2)
    assert res["P@3"] == pytest.approx(2 / 3 / 2)
    assert res["R@3"] == pytest.approx(2 / 4 / 2)
    assert res["P@r1"] == pytest.approx(2 / 3 / 2)
    assert res["R@r1"] == pytest.approx(2 / 4 / 2)
    curve = res["pr_curve"]
    np.testing.assert_allclose(curve["precision"], np.array([1, 2 / 3, 3 / 4, 4 / 5, 4 / 6]) / 2)
    np.testing.assert_allclose(curve["recall"], np.array([1 / 4, 2 / 4, 3 / 4, 1, 1]) / 2)
    # query 1 (1111): distances 3 4 2 3 0 1 -> within r: 1 2 3 5 6; query 0: 1 3 4 5 6
    np.testing.assert_allclose(curve["n_retrieved"], [1, 2.5, 3.5, 5, 6])
    assert res["n_queries_without_relevant"] == 1
    assert res["n_queries"] == 2 and res["n_database"] == 6 and res["n_ranked"] == 6


def test_hand_computed_float_example() -> None:
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    db = np.array([[0, 1], [3, 0], [-1, 0], [1, 1]], dtype=np.float32)
    # similarities 0, 1, -1, 0.707 -> ranking 1 (not rel), 3, 0, 2 (all rel)
    res = retrieval_metrics(q, db, [0], [0, 1, 0, 0], kind="float", topk=(2,), pr_points=4)
    assert res["mAP@all"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert res["mAP@2"] == pytest.approx(1 / 2)
    assert res["P@2"] == pytest.approx(1 / 2) and res["R@2"] == pytest.approx(1 / 3)
    assert res["pr_curve"] == {
        "rank": [1, 2, 3, 4],
        "precision": pytest.approx([0, 1 / 2, 2 / 3, 3 / 4]),
        "recall": pytest.approx([0, 1 / 3, 2 / 3, 1]),
    }


def test_multilabel_relevance() -> None:
    ql = np.array([[1, 0, 1], [0, 0, 0]])
    dl = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
    expected = [[False, True, True, False], [False, False, False, False]]
    np.testing.assert_array_equal(relevance_matrix(ql, dl), expected)
    np.testing.assert_array_equal(relevance_matrix(ql.astype(bool), dl.astype(float)), expected)
    np.testing.assert_array_equal(
        relevance_matrix([3, 1], [1, 3, 3, 2]), [[False, True, True, False], [1, 0, 0, 0]]
    )


def test_torch_and_float64_inputs() -> None:
    q, db, ql, dl = _pm1_float_case(2, 4, 30, 16, 3, False)
    a = retrieval_metrics(q, db, ql, dl, kind="float")
    b = retrieval_metrics(
        torch.from_numpy(q),
        torch.from_numpy(db).double(),
        torch.from_numpy(ql),
        torch.from_numpy(dl),
        kind="float",
    )
    assert a == b
    qb, dbb, ql, dl = _binary_case(2, 4, 30, 16, 3, False)
    assert retrieval_metrics(qb, dbb, ql, dl, kind="binary") == retrieval_metrics(
        torch.from_numpy(qb), torch.from_numpy(dbb), ql, dl, kind="binary", nbits=16
    )


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


def test_input_validation() -> None:
    qb, dbb, ql, dl = _binary_case(0, 3, 10, 12, 2, False)
    qf, dbf, _, _ = _pm1_float_case(0, 3, 10, 4, 2, False)

    def bad(match: str, *args: Any, **kw: Any) -> None:
        with pytest.raises(ValueError, match=match):
            retrieval_metrics(*args, **kw)

    bad("kind", qb, dbb, ql, dl, kind="hamming")
    bad("uint8", qf, dbf, ql, dl, kind="binary")
    bad("floating dtype", qb, dbb, ql, dl, kind="float")
    bad("same bytes per code", qb, dbb[:, :1], ql, dl, kind="binary")
    bad("needs 1 bytes", qb, dbb, ql, dl, kind="binary", nbits=8)
    bad("padding", qb, dbb, ql, dl, kind="binary", nbits=9)
    bad("radius", qb, dbb, ql, dl, kind="binary", nbits=12, radius=13)
    bad("nbits", qf, dbf, ql, dl, kind="float", nbits=4)
    bad("same dimension", qf, dbf[:, :3], ql, dl, kind="float")
    bad("NaN", np.where(qf == qf[0, 0], np.nan, qf), dbf, ql, dl, kind="float")
    bad("zero vector", qf, np.zeros_like(dbf), ql, dl, kind="float")
    bad("non-empty", qb[:0], dbb, ql[:0], dl, kind="binary")
    bad("non-empty", qf, dbf[:0], ql, dl[:0], kind="float")
    bad("query_labels: expected 3 rows", qb, dbb, ql[:2], dl, kind="binary")
    bad("database_labels: expected 10 rows", qb, dbb, ql, dl[:9], kind="binary")
    bad("both be 1-D", qb, dbb, ql, np.eye(10, 3), kind="binary")
    bad("integers", qb, dbb, ql.astype(float), dl, kind="binary")
    bad("only 0 and 1", qb, dbb, np.full((3, 2), 2), np.ones((10, 2)), kind="binary")
    bad("only 0 and 1", qb, dbb, np.full((3, 2), np.nan), np.ones((10, 2)), kind="binary")
    bad("label columns", qb, dbb, np.ones((3, 2)), np.ones((10, 3)), kind="binary")
    bad("topk", qb, dbb, ql, dl, kind="binary", topk=(0,))
    bad("chunk_size", qb, dbb, ql, dl, kind="binary", chunk_size=0)
    bad("query_db_indices", qb, dbb, ql, dl, kind="binary", exclude_self=True)
    bad("range", qb, dbb, ql, dl, kind="binary", exclude_self=True, query_db_indices=[0, 1, 10])
    bad("3 integer", qb, dbb, ql, dl, kind="binary", exclude_self=True, query_db_indices=[0, 1])
    bad("only used with exclude_self", qb, dbb, ql, dl, kind="binary", query_db_indices=[0, 1, 2])


def test_lower_level_validation() -> None:
    rel = np.array([[True, False, True]])
    with pytest.raises(ValueError, match="2-D"):
        ap_from_relevance(rel[0])
    with pytest.raises(ValueError, match="non-empty"):
        ap_from_relevance(rel[:, :0])
    with pytest.raises(ValueError, match=r"\{0, 1\}"):
        ap_from_relevance(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="k"):
        precision_at_k_from_relevance(rel, 0)
    with pytest.raises(ValueError, match="sorted ascending"):
        radius_precision_recall_from_relevance(rel, np.array([[2, 1, 3]]), 1)
    with pytest.raises(ValueError, match="shape"):
        radius_precision_recall_from_relevance(rel, np.array([[1, 2]]), 1)
    with pytest.raises(ValueError, match="lie in"):
        hamming_pr_curve_from_relevance(rel, np.array([[0, 1, 5]]), 4)
    with pytest.raises(ValueError, match="ranks"):
        rank_pr_curve_from_relevance(rel, [0, 2])
    with pytest.raises(ValueError, match="non-empty"):
        relevance_matrix([], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        rank_by_similarity(np.array([[np.nan, 1.0]]))
    # {0, 1} integer relevance is accepted and equals the bool version
    np.testing.assert_array_equal(ap_from_relevance(rel.astype(int)), ap_from_relevance(rel))


def test_progress_bar_does_not_change_results(capsys: pytest.CaptureFixture[str]) -> None:
    q, db, ql, dl = _binary_case(4, 9, 40, 8, 3, False)
    quiet = retrieval_metrics(q, db, ql, dl, kind="binary", chunk_size=4)
    loud = retrieval_metrics(q, db, ql, dl, kind="binary", chunk_size=4, progress=True)
    assert quiet == loud
    assert "9/9" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# protocols: registration, dataset names, Codes.take and the result-table rows
# ------------------------------------------------------------------------------------------


def _fake_run(dataset: str, codes: dict[str, Any], classes: list[int] | None = None) -> Any:
    from types import SimpleNamespace

    data = SimpleNamespace(dataset=dataset, classes=classes, attributes=None)
    return SimpleNamespace(config=SimpleNamespace(data=data),
                           encode=lambda split, batch_size=1024, progress=True: codes[split])


def _codes(seed: int, n: int, nbits: int = 16, n_classes: int = 10) -> Any:
    from hashlab.encode import Codes

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, nbits))
    x = (centres[labels] + rng.normal(size=(n, nbits))).astype(np.float32)
    return Codes(x, pack_bits(x), labels, nbits)


def test_protocols_register_themselves_with_rows_and_index_support() -> None:
    from hashlab.eval.dph import dph_rows
    from hashlab.eval.registry import PROTOCOLS
    from hashlab.eval.report import retrieval_rows

    want = {"fmnist-retrieval": (retrieval_rows, True), "retrieval": (retrieval_rows, True),
            "fmnist-openset": (retrieval_rows, False), "fmnist-dph": (dph_rows, False)}
    for name, (rows, index) in want.items():
        entry = PROTOCOLS.entry(name)
        assert entry.meta["rows"] is rows and entry.meta["index"] is index, name
        assert entry.description, name
    assert PROTOCOLS.canonical("FMNIST_Retrieval") == "fmnist-retrieval"


def test_codes_take() -> None:
    codes = _codes(0, 20)
    idx = np.array([5, 1, 5])
    sub = codes.take(idx)
    np.testing.assert_array_equal(sub.float, codes.float[idx])
    np.testing.assert_array_equal(sub.bits, codes.bits[idx])
    np.testing.assert_array_equal(sub.labels, codes.labels[idx])
    assert sub.nbits == codes.nbits and len(sub) == 3
    mask = codes.labels < 5
    assert len(codes.take(mask)) == int(mask.sum())
    codes.bits, codes.nbits = None, None
    assert codes.take(idx).bits is None


def test_protocols_accept_any_spelling_of_the_dataset() -> None:
    from hashlab.errors import ConfigError
    from hashlab.eval.common import is_dataset
    from hashlab.eval.protocols import evaluate_run, fmnist_query_indices

    for name in ("fashion-mnist", "fmnist", "Fashion_MNIST", " FMNIST "):
        assert is_dataset(name, "fashion-mnist"), name
    assert not is_dataset("digits", "fashion-mnist")
    assert not is_dataset("no-such-dataset", "fashion-mnist")
    codes = {"train": _codes(1, 300), "test": _codes(2, 1000)}
    result = evaluate_run(_fake_run("Fashion_MNIST", codes), "fmnist_retrieval", progress=False)
    assert result["protocol"] == "fmnist-retrieval" and result["n_queries"] == 1000
    assert result["n_database"] == 300 and set(result["metrics"]) == {"float", "binary"}
    queries = codes["test"].take(fmnist_query_indices(1000))
    want = retrieval_metrics(queries.float, codes["train"].float, queries.labels,
                             codes["train"].labels, kind="float")
    assert result["metrics"]["float"] == want
    with pytest.raises(ConfigError, match="needs a Fashion-MNIST run"):
        evaluate_run(_fake_run("digits", codes), "fmnist-retrieval", progress=False)
    with pytest.raises(ConfigError, match="needs a Fashion-MNIST run trained with data.classes"):
        evaluate_run(_fake_run("fmnist", codes), "fmnist-openset", progress=False)


def test_openset_protocol_on_synthetic_codes() -> None:
    from hashlab.eval.protocols import evaluate_run

    codes = {"test": _codes(3, 800)}
    run = _fake_run("FMNIST", codes, classes=[0, 1, 2, 3, 4, 5])
    result = evaluate_run(run, "fmnist-openset", progress=False)
    unseen = int(np.isin(codes["test"].labels, [6, 7, 8, 9]).sum())
    assert result["n_queries"] == result["n_database"] == unseen
    for kind in ("float", "binary"):
        m = result["metrics"][kind]
        assert m["n_ranked"] == unseen - 1 and m["n_pairs"] == 6000


def test_index_option_is_refused_by_protocols_without_index_support() -> None:
    from hashlab.errors import ConfigError
    from hashlab.eval.protocols import evaluate_run

    for name in ("fmnist-openset", "fmnist-dph"):
        with pytest.raises(ConfigError, match="--index works with protocols fmnist-retrieval, "
                                              f"retrieval, not '{name}'"):
            evaluate_run(None, name, index_dir="anywhere")  # type: ignore[arg-type]


def _retrieval_result(protocol: str, kinds: tuple[str, ...], openset: bool = False
                      ) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        m = {"mAP@all": 0.51234 + i, "P@100": 0.3, "R@100": 0.2, "n_queries": 10,
             "kind": kind, "nbits": 64 if kind == "binary" else None}
        if not openset:
            m.update({"mAP@100": 0.4, "mAP@1000": 0.61236, "P@1000": 0.25})
        if kind == "binary":
            m.update({"P@r2": 0.912345, "R@r2": 0.1})
        if openset:
            m.update({"verification_accuracy": 0.87654, "TAR@FAR=0.001": 0.05, "n_pairs": 6000})
        metrics[kind] = m
    return {"protocol": protocol, "n_queries": 10, "n_database": 20, "metrics": metrics,
            "seconds": 1.0}


@pytest.mark.parametrize("protocol", ["fmnist-retrieval", "retrieval", "no-such-protocol"])
def test_result_rows_of_retrieval_protocols(protocol: str) -> None:
    from hashlab.eval.report import result_rows

    both = _retrieval_result(protocol, ("float", "binary"))
    assert result_rows(both) == [
        ("float mAP@all", "0.5123"),
        ("64-bit mAP@all", "1.5123"),
        ("64-bit mAP@1000", "0.6124"),
        ("64-bit P@100", "0.3000"),
        ("64-bit precision within radius 2", "0.9123"),
    ]
    assert result_rows(_retrieval_result(protocol, ("float",))) == [
        ("float mAP@all", "0.5123"), ("float mAP@1000", "0.6124"), ("float P@100", "0.3000")]
    assert result_rows(_retrieval_result(protocol, ("binary",)))[0] == ("64-bit mAP@all",
                                                                        "0.5123")


def test_result_rows_of_openset_protocol() -> None:
    from hashlab.eval.report import result_rows

    assert result_rows(_retrieval_result("fmnist-openset", ("float", "binary"), True)) == [
        ("float mAP@all", "0.5123"),
        ("64-bit mAP@all", "1.5123"),
        ("64-bit P@100", "0.3000"),
        ("64-bit precision within radius 2", "0.9123"),
        ("64-bit verification acc", "0.8765"),
        ("64-bit TAR@FAR=1e-3", "0.0500"),
    ]
    assert result_rows(_retrieval_result("fmnist-openset", ("float",), True)) == [
        ("float mAP@all", "0.5123"), ("float P@100", "0.3000"),
        ("float verification acc", "0.8765"), ("float TAR@FAR=1e-3", "0.0500")]
