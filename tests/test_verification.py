from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics.pairwise import cosine_similarity

from hashlab.eval.verification import (
    best_threshold,
    kfold_accuracy,
    make_pairs,
    pair_scores,
    tar_at_far,
    verification_metrics,
)
from hashlab.index.codes import pack_bits


def _accuracy(scores, same, t):
    return ((scores > t) == same).mean()


def _brute_best_accuracy(scores, same):
    candidates = np.concatenate([[scores.min() - 1], np.unique(scores)])
    return max(_accuracy(scores, same, t) for t in candidates)


score_lists = st.lists(st.integers(-5, 5), min_size=2, max_size=40)


@given(score_lists, st.data())
def test_best_threshold_is_optimal(raw, data):
    scores = np.array(raw, dtype=float)  # small integers: many ties
    same = np.array(data.draw(st.lists(st.booleans(), min_size=len(raw), max_size=len(raw))))
    t = best_threshold(scores, same)
    assert _accuracy(scores, same, t) == pytest.approx(_brute_best_accuracy(scores, same))


def test_kfold_matches_a_loop():
    rng = np.random.default_rng(0)
    same = rng.random(200) < 0.5
    scores = np.where(same, rng.normal(1, 1, 200), rng.normal(-1, 1, 200)).round(1)
    result = kfold_accuracy(scores, same, n_folds=10)
    expected = []
    for f in range(10):
        test = np.arange(f * 20, (f + 1) * 20)
        train = np.setdiff1d(np.arange(200), test)
        cands = np.concatenate([[scores[train].min() - 1], np.unique(scores[train])])
        best = max(cands, key=lambda t: (_accuracy(scores[train], same[train], t), -t))
        expected.append(_accuracy(scores[test], same[test], best))
    assert result.fold_accuracies == pytest.approx(expected)
    assert result.accuracy == pytest.approx(np.mean(expected))


@given(score_lists, st.data(), st.sampled_from([0.0, 0.1, 0.25, 0.5]))
def test_tar_at_far_is_the_best_tar_within_the_far(raw, data, far):
    scores = np.array(raw, dtype=float)
    same = np.array(data.draw(st.lists(st.booleans(), min_size=len(raw), max_size=len(raw))))
    if same.all() or not same.any():
        with pytest.raises(ValueError):
            tar_at_far(scores, same, far)
        return
    tar, t = tar_at_far(scores, same, far)
    assert ((scores[~same] > t).mean()) <= far + 1e-12
    candidates = np.concatenate([[scores.min() - 1], np.unique(scores)])
    best = max((scores[same] > c).mean() for c in candidates
               if (scores[~same] > c).mean() <= far + 1e-12)
    assert tar == pytest.approx(best)


def test_make_pairs_counts_labels_and_determinism():
    labels = np.repeat(np.arange(4), 25)
    i, j, same = make_pairs(labels, 300, 300, seed=3)
    assert same.sum() == 300 and (~same).sum() == 300
    assert np.all(i < j)
    assert np.array_equal(labels[i] == labels[j], same)
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == 600  # all distinct
    again = make_pairs(labels, 300, 300, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, same), again, strict=True))
    assert not np.array_equal(make_pairs(labels, 300, 300, seed=4)[0], i)
    with pytest.raises(ValueError, match="only"):
        make_pairs(labels, 4 * 300 + 1, 1)


def test_pair_scores_against_oracles():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 12)).astype(np.float32)
    i, j = rng.integers(30, size=50), rng.integers(30, size=50)
    np.testing.assert_allclose(pair_scores(x, i, j), cosine_similarity(x)[i, j], atol=1e-6)
    bits = rng.integers(0, 2, size=(30, 20))
    packed = pack_bits(bits)
    expected = -(bits[i] != bits[j]).sum(1)
    np.testing.assert_array_equal(pair_scores(packed, i, j, "binary"), expected)


def test_separable_codes_verify_perfectly():
    labels = np.repeat(np.arange(4), 30)
    codes = np.eye(4)[labels] + 0.01 * np.random.default_rng(0).normal(size=(120, 4))
    m = verification_metrics(codes, labels, n_pairs=600)
    assert m["verification_accuracy"] == 1.0 and m["TAR@FAR=0.001"] == 1.0
