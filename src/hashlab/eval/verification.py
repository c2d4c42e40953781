"""Verification: are two images of the same class? Pairs, k-fold accuracy (the LFW protocol) and
TAR at a fixed FAR, from similarity scores (higher = more similar). Used by ``fmnist-openset``;
definitions in ``docs/protocols.md``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashlab.validation import check_choice


def make_pairs(labels: np.ndarray, n_same: int = 3000, n_diff: int = 3000, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n_same`` distinct same-class and ``n_diff`` distinct different-class pairs (i < j).

    Returns ``(i, j, is_same)``, shuffled with ``seed``. Raises ValueError if there are not
    enough pairs of either kind.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) < 2:
        raise ValueError(f"labels must be 1-D with at least 2 items, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    counts = np.unique(labels, return_counts=True)[1]
    total_same = int((counts * (counts - 1) // 2).sum())
    total_diff = len(labels) * (len(labels) - 1) // 2 - total_same
    if n_same > total_same or n_diff > total_diff:
        raise ValueError(f"asked for {n_same} same / {n_diff} different pairs, but only "
                         f"{total_same} / {total_diff} exist")
    chosen: dict[bool, set[tuple[int, int]]] = {True: set(), False: set()}
    wanted = {True: n_same, False: n_diff}
    n = len(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    multi = [c for c, idx in by_class.items() if len(idx) >= 2]
    while len(chosen[True]) < n_same:  # same-class pairs: pick a class, then two of its items
        c = multi[rng.integers(len(multi))]
        a, b = rng.choice(by_class[c], 2, replace=False)
        chosen[True].add((int(min(a, b)), int(max(a, b))))
    while len(chosen[False]) < n_diff:
        a, b = rng.integers(n, size=2)
        if labels[a] != labels[b]:
            chosen[False].add((int(min(a, b)), int(max(a, b))))
    pairs = [(a, b, same) for same in (True, False) for a, b in sorted(chosen[same])]
    assert all(len(chosen[s]) == wanted[s] for s in (True, False))
    order = rng.permutation(len(pairs))
    arr = np.array([pairs[k] for k in order], dtype=np.int64)
    return arr[:, 0], arr[:, 1], arr[:, 2].astype(bool)


def best_threshold(scores: np.ndarray, is_same: np.ndarray) -> float:
    """The threshold t maximising accuracy of ``score > t`` (midpoints between sorted scores;
    the smallest such t on ties)."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], is_same[order]
    # predicting "same" for items after position i: correct = negatives up to i + positives after
    neg_before = np.concatenate([[0], np.cumsum(~y)])
    pos_after = y.sum() - np.concatenate([[0], np.cumsum(y)])
    correct = neg_before + pos_after  # for cut positions 0..n (cut before item i)
    # a cut is only realisable between distinct scores
    valid = np.concatenate([[True], s[1:] > s[:-1], [True]])
    correct = np.where(valid, correct, -1)
    cut = int(np.argmax(correct))
    if cut == 0:
        return float(s[0] - 1.0)
    if cut == len(s):
        return float(s[-1])
    return float((s[cut - 1] + s[cut]) / 2)


@dataclass
class KFoldResult:
    accuracy: float
    std: float
    fold_accuracies: list[float]
    thresholds: list[float]


def kfold_accuracy(scores: np.ndarray, is_same: np.ndarray, n_folds: int = 10) -> KFoldResult:
    """LFW protocol: pairs split into ``n_folds`` contiguous folds; each fold is scored at the
    threshold that is best on the other folds."""
    scores, is_same = np.asarray(scores, dtype=np.float64), np.asarray(is_same, dtype=bool)
    if scores.shape != is_same.shape or scores.ndim != 1:
        raise ValueError("scores and is_same must be 1-D arrays of the same length")
    if not 2 <= n_folds <= len(scores):
        raise ValueError(f"n_folds must be in [2, {len(scores)}], got {n_folds}")
    folds = np.array_split(np.arange(len(scores)), n_folds)
    accs, thresholds = [], []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(scores)), fold)
        t = best_threshold(scores[train], is_same[train])
        accs.append(float(((scores[fold] > t) == is_same[fold]).mean()))
        thresholds.append(t)
    return KFoldResult(float(np.mean(accs)), float(np.std(accs)), accs, thresholds)


def tar_at_far(scores: np.ndarray, is_same: np.ndarray, far: float = 1e-3) -> tuple[float, float]:
    """True accept rate at the strictest threshold whose false accept rate is ≤ ``far``.

    Accept = ``score > threshold``. Returns ``(tar, threshold)``.
    """
    scores, is_same = np.asarray(scores, dtype=np.float64), np.asarray(is_same, dtype=bool)
    neg = np.sort(scores[~is_same])[::-1]
    if len(neg) == 0 or is_same.sum() == 0:
        raise ValueError("tar_at_far needs both same and different pairs")
    allowed = int(np.floor(far * len(neg) + 1e-9))  # false accepts we may make
    threshold = float(neg[allowed]) if allowed < len(neg) else float(neg[-1]) - 1.0
    # ties: every negative equal to the threshold is rejected (accept is strict)
    return float((scores[is_same] > threshold).mean()), threshold


def pair_scores(codes: np.ndarray, i: np.ndarray, j: np.ndarray, kind: str = "float"
                ) -> np.ndarray:
    """Similarity of each pair: cosine for float codes, −Hamming distance for packed bits."""
    if check_choice("kind", kind, ("float", "binary")) == "float":
        x = np.asarray(codes, dtype=np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.einsum("ij,ij->i", x[i], x[j])
    # binary: padding bits are zero in packed codes, so nbits is not needed
    packed = np.asarray(codes, dtype=np.uint8)
    return -np.bitwise_count(packed[i] ^ packed[j]).sum(1, dtype=np.int64).astype(np.float64)


def verification_metrics(codes: np.ndarray, labels: np.ndarray, *, kind: str = "float",
                         n_pairs: int = 6000, n_folds: int = 10,
                         far: float = 1e-3, seed: int = 0) -> dict[str, float]:
    """Seeded pairs (half same, half different) → k-fold accuracy and TAR@FAR."""
    i, j, same = make_pairs(labels, n_pairs // 2, n_pairs - n_pairs // 2, seed)
    scores = pair_scores(codes, i, j, kind)
    folds = kfold_accuracy(scores, same, n_folds)
    tar, threshold = tar_at_far(scores, same, far)
    return {"verification_accuracy": folds.accuracy, "verification_std": folds.std,
            f"TAR@FAR={far:g}": tar, "far_threshold": threshold, "n_pairs": int(len(same))}
