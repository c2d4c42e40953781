"""index_retrieval_metrics: metrics of what an index returns, checked against retrieval_metrics."""

from __future__ import annotations

import numpy as np
import pytest

from hashlab.eval.index_metrics import index_retrieval_metrics
from hashlab.eval.metrics import ap_from_relevance, relevance_matrix, retrieval_metrics
from hashlab.index import BinaryIndex, FloatIndex, pack_bits

KEYS = ["mAP@all", "mAP@5", "mAP@40", "P@5", "P@40", "R@5", "R@40", "P@r2", "R@r2"]


def clustered_codes(rng, n, nbits, nclass, flip=0.15):
    centres = rng.integers(0, 2, (nclass, nbits))
    labels = rng.integers(0, nclass, n)
    bits = centres[labels] ^ (rng.random((n, nbits)) < flip)
    return pack_bits(bits), labels


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    db, dl = clustered_codes(rng, 400, 16, 5)
    q, ql = clustered_codes(rng, 37, 16, 5)
    return q, ql, db, dl


@pytest.mark.parametrize("ids", ["positions", "spaced"])
def test_flat_full_ranking_equals_retrieval_metrics(data, ids):
    q, ql, db, dl = data
    db_ids = np.arange(len(db)) if ids == "positions" else 7 + 3 * np.arange(len(db))
    index = BinaryIndex(16, "flat")
    index.add(db, db_ids)
    got = index_retrieval_metrics(index, q, ql, db_ids, dl, topk=(5, 40), pr_curve=True,
                                  chunk_size=10)
    want = retrieval_metrics(q, db, ql, dl, kind="binary", nbits=16, topk=(5, 40), radius=2)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    for key in ("precision", "recall", "n_retrieved"):
        np.testing.assert_allclose(got["pr_curve"][key], want["pr_curve"][key], atol=1e-12)
    assert got["n_ranked"] == len(db) and got["n_returned"] == len(db)


def test_multilabel_and_exclude_self_equal_retrieval_metrics():
    rng = np.random.default_rng(5)
    db, _ = clustered_codes(rng, 300, 24, 4)
    dl = (rng.random((300, 6)) < 0.3).astype(np.int64)
    qi = rng.choice(300, 25, replace=False)
    index = BinaryIndex(24, "flat")
    index.add(db)
    got = index_retrieval_metrics(index, db[qi], dl[qi], np.arange(300), dl, topk=(5, 40),
                                  exclude_self=True, query_ids=qi)
    want = retrieval_metrics(db[qi], db, dl[qi], dl, kind="binary", nbits=24, topk=(5, 40),
                             exclude_self=True, query_db_indices=qi, pr_curve=False)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_truncated_ranking_normalises_by_all_relevant(data):
    q, ql, db, dl = data
    index = BinaryIndex(16)
    index.add(db)
    got = index_retrieval_metrics(index, q, ql, np.arange(len(db)), dl, k=30, topk=(5,),
                                  radius=None)
    _, order = index.search(q, 30)
    rel = dl[order] == ql[:, None]
    n_rel = relevance_matrix(ql, dl).sum(axis=1)
    assert got["mAP@all"] == pytest.approx(ap_from_relevance(rel, n_rel).mean(), abs=1e-12)
    assert got["n_ranked"] == 30


def test_hash_lookup_within_exact_radius_equals_flat(data):
    q, ql, db, dl = data
    ids = np.arange(len(db))
    flat, table = BinaryIndex(16, "flat"), BinaryIndex(16, "multihash", nhash=2, b=8, nflip=0)
    for index in (flat, table):
        index.add(db, ids)
    assert table.exact_radius >= 1
    a = index_retrieval_metrics(flat, q, ql, ids, dl, radius=1, topk=(5,))
    b = index_retrieval_metrics(table, q, ql, ids, dl, radius=1, topk=(5,))
    assert b["P@r1"] == pytest.approx(a["P@r1"]) and b["R@r1"] == pytest.approx(a["R@r1"])
    # a hash table returns only the codes in the probed buckets: fewer results, lower mAP@all
    assert b["n_returned"] < a["n_returned"]
    assert b["mAP@all"] < a["mAP@all"]


def test_float_flat_index_matches_retrieval_metrics():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12))
    dl = rng.integers(0, 4, 200)
    db = centres[dl] + 0.8 * rng.normal(size=(200, 12))
    ql = rng.integers(0, 4, 20)
    q = centres[ql] + 0.8 * rng.normal(size=(20, 12))
    index = FloatIndex(12)
    index.add(db.astype(np.float32))
    got = index_retrieval_metrics(index, q.astype(np.float32), ql, np.arange(200), dl,
                                  topk=(10,), radius=None)
    want = retrieval_metrics(q, db, ql, dl, kind="float", topk=(10,), pr_curve=False)
    for key in ("mAP@all", "mAP@10", "P@10", "R@10"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_errors(data):
    q, ql, db, dl = data
    index = BinaryIndex(16)
    with pytest.raises(ValueError, match="empty"):
        index_retrieval_metrics(index, q, ql, np.arange(len(db)), dl)
    index.add(db)
    with pytest.raises(ValueError, match="no label for 1 id"):
        index_retrieval_metrics(index, q, ql, np.arange(len(db) - 1), dl[:-1])
    with pytest.raises(ValueError, match="query_ids"):
        index_retrieval_metrics(index, q, ql, np.arange(len(db)), dl, exclude_self=True)
    with pytest.raises(TypeError, match="BinaryIndex or FloatIndex"):
        index_retrieval_metrics(object(), q, ql, np.arange(len(db)), dl)
    findex = FloatIndex(4)
    findex.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="radius"):
        index_retrieval_metrics(findex, np.eye(4, dtype=np.float32), [0, 1, 2, 3], range(4),
                                np.arange(4))
