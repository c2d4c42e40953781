"""What a report shows, as numbers: the evaluation of a run, retrieval examples, a 2-D
projection of its codes, the code classifier's predictions and the scores of sampled pairs.

Everything here is seeded and deterministic (ties in a ranking are broken by database index,
as in ``docs/protocols.md``); :mod:`hashlab.report.figures` draws it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashlab.encode import Codes, TrainedRun
from hashlab.errors import HashlabError
from hashlab.eval.common import FASHION_MNIST, is_dataset
from hashlab.eval.registry import PROTOCOLS
from hashlab.index.codes import hamming_distances
from hashlab.train.engine import FINAL_MODEL

__all__ = [
    "Classifier",
    "Examples",
    "PairScores",
    "Projection",
    "choose_protocol",
    "code_classifier",
    "confusion_matrix",
    "load_or_evaluate",
    "pair_scores",
    "pca_projection",
    "retrieval_examples",
    "summary_maps",
]

#: rows of query codes ranked at once (memory: rows × database size distances)
_CHUNK = 256


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ evaluation
def choose_protocol(run: TrainedRun, requested: str | None) -> tuple[str, str | None]:
    """(canonical protocol name, a note when the config's protocol was replaced).

    Without ``requested``, the run config's ``eval.protocol``; an ``fmnist-*`` protocol on a run
    not trained on Fashion-MNIST is replaced by ``retrieval``, which works on any dataset."""
    if requested is not None:
        return PROTOCOLS.canonical(requested, key="--protocol"), None
    name = PROTOCOLS.canonical(run.config.eval.protocol, key="eval.protocol")
    dataset = run.config.data.dataset
    if name.startswith("fmnist-") and not is_dataset(dataset, FASHION_MNIST):
        return "retrieval", (f"the config's protocol {name} needs Fashion-MNIST and this run "
                             f"was trained on {dataset}, so the retrieval protocol was used")
    return name, None


def _read_result(path: Path, protocol: str) -> dict[str, Any] | None:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _warn(f"ignoring the unreadable evaluation {path} ({exc}); evaluating again")
        return None
    if not (isinstance(result, dict) and result.get("protocol") == protocol
            and isinstance(result.get("metrics"), dict)):
        _warn(f"ignoring {path}: not a {protocol} evaluation; evaluating again")
        return None
    return result


def load_or_evaluate(run: TrainedRun, protocol: str, progress: bool = True
                     ) -> tuple[dict[str, Any], Path, bool]:
    """The run's evaluation by ``protocol``: ``RUN/eval/<protocol>.json`` when it exists and
    is newer than ``model.pt``, else :func:`~hashlab.eval.protocols.evaluate_run` (its result
    saved to that file, as ``hashlab eval`` does). Returns (result, path, whether it was read)."""
    from hashlab.eval.protocols import evaluate_run
    from hashlab.io import atomic_write_json

    path = run.run_dir / "eval" / f"{protocol}.json"
    model = run.run_dir / FINAL_MODEL
    if path.is_file() and path.stat().st_mtime >= model.stat().st_mtime:
        result = _read_result(path, protocol)
        if result is not None:
            return result, path, True
    result = evaluate_run(run, protocol, progress=progress)
    try:
        atomic_write_json(path, result)
    except HashlabError as exc:
        _warn(f"{exc}; the evaluation is not saved")
    return result, path, False


def summary_maps(result: dict[str, Any]) -> dict[str, float]:
    """mAP@all per code kind (``float``, ``binary``) of an evaluation result; a DPH result's
    category retrieval counts as the binary code's."""
    metrics = result.get("metrics", {})
    out = {}
    for kind, key in (("float", "float"), ("binary", "binary"), ("binary", "category")):
        value = metrics.get(key, {}).get("mAP@all") if isinstance(metrics.get(key), dict) \
            else None
        if isinstance(value, (int, float)) and kind not in out:
            out[kind] = float(value)
    return out


# ------------------------------------------------------------------------------ rankings
def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _scores(queries: Codes, database: Codes, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scores [nq, ndb], ranking key [nq, ndb]: lower ranks first): Hamming distances, or
    cosine similarities with key = −similarity."""
    if binary:
        d = hamming_distances(queries.bits, database.bits)
        return d, d
    s = _unit_rows(queries.float) @ _unit_rows(database.float).T
    return s, -s


@dataclass
class Examples:
    """Top-``k`` database items of a few queries: ``query_ids`` [q] (positions in the query
    split), ``ids`` [q, k] (positions in the database), ``scores`` [q, k] (Hamming distances or
    cosine similarities), ``wrong`` [q, k] (database label ≠ query label)."""

    query_ids: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    wrong: np.ndarray
    binary: bool


def retrieval_examples(queries: Codes, database: Codes, *, n_queries: int = 8, k: int = 10,
                       seed: int = 0) -> Examples:
    """``n_queries`` queries drawn with ``default_rng(seed)`` (without replacement, sorted) and
    their top ``k`` by Hamming distance (binary codes) or cosine similarity, ties by index."""
    binary = queries.bits is not None and database.bits is not None
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(len(queries), min(n_queries, len(queries)), replace=False))
    k = min(k, len(database))
    scores, key = _scores(queries.take(qi), database, binary)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    wrong = database.labels[order] != queries.labels[qi][:, None]
    return Examples(qi, order, np.take_along_axis(scores, order, axis=1), wrong, binary)


# ------------------------------------------------------------------------------ projection
@dataclass
class Projection:
    """The first two principal components of a seeded subsample of codes."""

    points: np.ndarray  # [m, 2]
    labels: np.ndarray  # [m]
    indices: np.ndarray  # [m], positions in the codes
    explained: np.ndarray  # [2], fraction of the variance of each component


def subsample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded subsample of at most ``limit`` of ``n`` items."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def pca_projection(codes: np.ndarray, labels: np.ndarray, *, max_points: int = 2000,
                   seed: int = 0) -> Projection:
    """PCA (numpy SVD of the centred codes) of at most ``max_points`` codes drawn with
    ``default_rng(seed)``; each component's sign is fixed so that its largest loading is
    positive."""
    idx = subsample(len(codes), max_points, seed)
    x = np.asarray(codes, dtype=np.float64)[idx]
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = np.zeros((2, x.shape[1]))
    comps[: min(2, len(vt))] = vt[:2]
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps *= np.where(signs == 0, 1.0, signs)[:, None]
    total = float((s**2).sum())
    explained = np.zeros(2)
    explained[: min(2, len(s))] = (s[:2] ** 2) / total if total > 0 else 0.0
    return Projection(x @ comps.T, np.asarray(labels)[idx], idx, explained)


# ------------------------------------------------------------------------------ classifier
@dataclass
class Classifier:
    """Predicted and true classes of some query codes, and how they were predicted."""

    predicted: np.ndarray
    true: np.ndarray
    method: str  # "logits" or "1-nn"
    n_database: int = 0

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.true).mean()) if len(self.true) else 0.0


def code_classifier(run: TrainedRun, queries: Codes, database: Codes, *,
                    max_nn_queries: int = 2000, seed: int = 0) -> Classifier:
    """The loss's ``logits`` on the float codes of every query when the loss has them (a run
    trained on ``data.classes`` has its predictions mapped back to those class indices), else
    a 1-NN classifier on the codes (Hamming distance for binary codes, cosine similarity for
    float ones; ties by database index) for a seeded subsample of ≤ ``max_nn_queries``."""
    loss = run.loss_fn
    if callable(getattr(loss, "logits", None)):
        loss = loss.cpu().eval()
        preds = []
        with torch.no_grad():
            for start in range(0, len(queries), 4096):
                x = torch.from_numpy(np.ascontiguousarray(queries.float[start:start + 4096]))
                preds.append(loss.logits(x).argmax(dim=1).numpy())
        predicted = np.concatenate(preds) if preds else np.empty(0, dtype=np.int64)
        classes = run.config.data.classes
        if classes:
            predicted = np.asarray(classes, dtype=np.int64)[predicted]
        return Classifier(predicted.astype(np.int64), queries.labels, "logits")
    idx = subsample(len(queries), max_nn_queries, seed)
    sub = queries.take(idx)
    binary = sub.bits is not None and database.bits is not None
    nearest = np.empty(len(sub), dtype=np.int64)
    for start in range(0, len(sub), _CHUNK):
        _, key = _scores(sub.take(np.arange(start, min(start + _CHUNK, len(sub)))), database,
                         binary)
        nearest[start:start + len(key)] = key.argmin(axis=1)  # first minimum: lowest index
    return Classifier(database.labels[nearest], sub.labels, "1-nn", len(database))


def confusion_matrix(true: np.ndarray, predicted: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(classes, counts [true class, predicted class]) over the classes that occur in either."""
    classes = np.union1d(true, predicted)
    t = np.searchsorted(classes, true)
    p = np.searchsorted(classes, predicted)
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    return classes, counts


# ------------------------------------------------------------------------------ pairs
@dataclass
class PairScores:
    """Scores of seeded (query, database item) pairs of the same class and of different
    classes: Hamming distances for binary codes, cosine similarities for float codes;
    ``*_pairs``: the pairs, [n, 2] (query position, database position)."""

    relevant: np.ndarray
    irrelevant: np.ndarray
    binary: bool
    nbits: int | None
    relevant_pairs: np.ndarray
    irrelevant_pairs: np.ndarray


def pair_scores(queries: Codes, database: Codes, *, n_pairs: int = 5000, seed: int = 0
                ) -> PairScores:
    """``n_pairs`` relevant and ``n_pairs`` irrelevant pairs drawn with ``default_rng(seed)``:
    a uniform query, then a uniform database item of its class (relevant) or of another class
    (irrelevant); queries without such an item are dropped from that set."""
    rng = np.random.default_rng(seed)
    db_labels = database.labels
    order = np.argsort(db_labels, kind="stable")
    classes, starts, counts = np.unique(db_labels[order], return_index=True, return_counts=True)
    pos = np.searchsorted(classes, queries.labels)
    known = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)]
                                    == queries.labels)
    count = np.where(known, counts[np.minimum(pos, len(classes) - 1)], 0)
    start = np.where(known, starts[np.minimum(pos, len(classes) - 1)], 0)

    q_rel = rng.integers(len(queries), size=n_pairs)
    offset = np.floor(rng.random(n_pairs) * count[q_rel]).astype(np.int64)
    keep = count[q_rel] > 0
    rel = (q_rel[keep], order[start[q_rel] + offset][keep])

    q_irr = rng.integers(len(queries), size=n_pairs)
    others = len(database) - count[q_irr]
    j = np.floor(rng.random(n_pairs) * others).astype(np.int64)
    j = np.where(j < start[q_irr], j, j + count[q_irr])  # skip the query's class block
    keep = others > 0
    irr = (q_irr[keep], order[np.minimum(j, len(order) - 1)][keep])

    binary = queries.bits is not None and database.bits is not None

    def score(q: np.ndarray, d: np.ndarray) -> np.ndarray:
        if binary:
            return np.unpackbits(queries.bits[q] ^ database.bits[d], axis=1).sum(axis=1)
        return (_unit_rows(queries.float[q]) * _unit_rows(database.float[d])).sum(axis=1)

    return PairScores(score(*rel), score(*irr), binary, database.nbits if binary else None,
                      np.stack(rel, axis=1), np.stack(irr, axis=1))
