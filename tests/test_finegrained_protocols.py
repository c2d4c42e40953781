"""The fine-grained Fashion-MNIST protocols fmnist-fine-upper and fmnist-fine-shoes: their
database / query selection against an independent selection from the raw labels, their metrics
against a brute-force ranking scored with scikit-learn's AP, for any code width, and a run
trained on the classes subset (``data.classes``) end to end."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from hashlab.encode import Codes
from hashlab.errors import ConfigError
from hashlab.eval.finegrained import FINEGRAINED_CLASSES, finegrained_indices
from hashlab.eval.protocols import evaluate_run
from hashlab.eval.registry import PROTOCOLS
from hashlab.eval.report import retrieval_rows
from hashlab.index.codes import pack_bits
from tests.conftest import needs_fmnist, tiny_config

UPPER, SHOES = (0, 2, 4, 6), (5, 7, 9)
PROTOCOL_CLASSES = {"fmnist-fine-upper": UPPER, "fmnist-fine-shoes": SHOES}


def _fake_run(codes: dict[str, Codes], classes: list[int] | None = None,
              dataset: str = "fashion-mnist") -> Any:
    data = SimpleNamespace(dataset=dataset, classes=classes, attributes=None)
    return SimpleNamespace(config=SimpleNamespace(data=data), run_dir="fake",
                           encode=lambda split, batch_size=1024, progress=True: codes[split])


def _codes(seed: int, n: int, nbits: int) -> Codes:
    """Codes of ``n`` images of the 10 classes; classes 2, 6 and 7 sit close to 0, 4 and 5,
    so the groups are hard, and few bits make many Hamming ties."""
    rng = np.random.default_rng(seed)
    weights = np.array([2, 1, 2, 1, 2, 2, 2, 2, 1, 2])  # the grouped classes twice as often
    labels = rng.choice(10, n, p=weights / weights.sum())
    centres = np.random.default_rng(99).normal(size=(10, nbits))
    centres[2], centres[6], centres[7] = (centres[0] + 0.3, centres[4] + 0.3,
                                          centres[5] + 0.3)
    x = (centres[labels] + rng.normal(size=(n, nbits))).astype(np.float32)
    return Codes(x, pack_bits(x > 0), labels, nbits)


def _independent_selection(train_labels, test_labels, classes, n_queries=1000):
    """The protocol's definition, written out: every training image of the classes (dataset
    order); queries drawn with default_rng(0) among the positions of their test images."""
    database = np.array([i for i, y in enumerate(train_labels.tolist()) if y in classes])
    pool = np.array([i for i, y in enumerate(test_labels.tolist()) if y in classes])
    draw = np.random.default_rng(0).choice(len(pool), min(n_queries, len(pool)), replace=False)
    return pool[draw], database


def _brute_force(q_bits, db_bits, q_float, db_float, q_labels, db_labels):
    """Binary: rank by (Hamming distance, database index); float: by (−cosine, index).
    mAP@all with scikit-learn's AP on the strict rank order, mAP@1000 (normalised by the
    relevant items in the top 1000), P@100 and precision within Hamming radius 2."""
    n = len(db_labels)
    ranks = -np.arange(n)  # a strictly decreasing score along the ranking
    qn = q_float / np.linalg.norm(q_float, axis=1, keepdims=True)
    dn = db_float / np.linalg.norm(db_float, axis=1, keepdims=True)
    out: dict[str, list[float]] = {k: [] for k in ("map", "map1000", "p100", "pr2", "fmap")}
    for i in range(len(q_labels)):
        d = (db_bits != q_bits[i]).sum(1)
        order = np.lexsort((np.arange(n), d))
        rel = db_labels[order] == q_labels[i]
        out["map"].append(average_precision_score(rel, ranks) if rel.any() else 0.0)
        top = rel[:1000]
        hits = np.cumsum(top)
        out["map1000"].append(float((hits / np.arange(1, len(top) + 1))[top].sum() / top.sum())
                              if top.any() else 0.0)
        out["p100"].append(rel[:100].mean())
        within = d <= 2
        out["pr2"].append((db_labels[within] == q_labels[i]).mean() if within.any() else 0.0)
        cos = dn @ qn[i]
        forder = np.lexsort((np.arange(n), -cos))
        frel = db_labels[forder] == q_labels[i]
        out["fmap"].append(average_precision_score(frel, ranks) if frel.any() else 0.0)
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_both_protocols_are_registered_like_the_unseen_protocol():
    assert dict(FINEGRAINED_CLASSES) == PROTOCOL_CLASSES
    for name in PROTOCOL_CLASSES:
        entry = PROTOCOLS.entry(name)
        assert entry.meta["rows"] is retrieval_rows and entry.meta["index"] is False
        assert entry.description and "1,000 test queries" in entry.description
    assert PROTOCOLS.canonical("FMNIST_Fine_Upper") == "fmnist-fine-upper"
    with pytest.raises(ConfigError, match="--index works with protocols"):
        evaluate_run(None, "fmnist-fine-shoes", index_dir="anywhere")  # type: ignore[arg-type]


def test_selection_equals_the_definition_on_synthetic_labels():
    rng = np.random.default_rng(5)
    train, test = rng.integers(0, 10, 700), rng.integers(0, 10, 3000)
    for classes in (UPPER, SHOES):
        q, db = finegrained_indices(train, test, classes)
        want_q, want_db = _independent_selection(train, test, classes)
        np.testing.assert_array_equal(q, want_q)
        np.testing.assert_array_equal(db, want_db)
    # fewer test images of the classes than 1,000: every one of them is a query
    q, _ = finegrained_indices(train, test[:1000], SHOES)
    assert np.array_equal(np.sort(q), np.flatnonzero(np.isin(test[:1000], SHOES)))


@pytest.mark.parametrize(("protocol", "nbits"), [("fmnist-fine-upper", 12),
                                                 ("fmnist-fine-shoes", 24),
                                                 ("fmnist-fine-upper", 32),
                                                 ("fmnist-fine-shoes", 48)])
def test_metrics_match_brute_force_for_any_code_width(protocol, nbits):
    codes = {"train": _codes(1, 3200, nbits), "test": _codes(2, 3200, nbits)}
    result = evaluate_run(_fake_run(codes), protocol, progress=False)
    classes = PROTOCOL_CLASSES[protocol]
    q, db = _independent_selection(codes["train"].labels, codes["test"].labels, classes)
    assert result["protocol"] == protocol and result["trained_on"] == "all"
    assert (result["n_queries"], result["n_database"]) == (1000, len(db))
    assert len(db) > 1000  # so that mAP@1000 is not mAP@all
    assert result["classes"] == list(classes) and len(result["class_names"]) == len(classes)
    queries, database = codes["test"].take(q), codes["train"].take(db)
    want = _brute_force(queries.float > 0, database.float > 0, queries.float, database.float,
                        queries.labels, database.labels)
    binary, floats = result["metrics"]["binary"], result["metrics"]["float"]
    assert binary["nbits"] == nbits
    assert binary["mAP@all"] == pytest.approx(want["map"], abs=1e-9)
    assert binary["mAP@1000"] == pytest.approx(want["map1000"], abs=1e-9)
    assert binary["P@100"] == pytest.approx(want["p100"], abs=1e-12)
    assert binary["P@r2"] == pytest.approx(want["pr2"], abs=1e-12)
    assert floats["mAP@all"] == pytest.approx(want["fmap"], abs=1e-6)
    assert f"{nbits}-bit mAP@all" in dict(retrieval_rows(result))


def test_a_subset_run_is_scored_in_the_original_classes_and_others_are_refused():
    codes = {"train": _codes(3, 600, 16), "test": _codes(4, 600, 16)}
    everything = evaluate_run(_fake_run(codes), "fmnist-fine-upper", progress=False)
    # trained on the group only (any order): the same codes give the same numbers
    subset = evaluate_run(_fake_run(codes, [6, 4, 2, 0]), "fmnist-fine-upper", progress=False)
    assert subset["trained_on"] == "subset"
    assert subset["metrics"] == everything["metrics"]
    listed = evaluate_run(_fake_run(codes, list(range(10))), "fmnist-fine-upper",
                          progress=False)
    assert listed["trained_on"] == "all"
    with pytest.raises(ConfigError, match=r"data.classes: \[5, 7, 9\]"):
        evaluate_run(_fake_run(codes, [0, 2, 4, 6]), "fmnist-fine-shoes", progress=False)
    with pytest.raises(ConfigError, match="needs a Fashion-MNIST run"):
        evaluate_run(_fake_run(codes, dataset="digits"), "fmnist-fine-upper", progress=False)


@needs_fmnist
@pytest.mark.parametrize("protocol", sorted(PROTOCOL_CLASSES))
def test_selection_on_real_fashion_mnist(protocol):
    from hashlab.data.fashion_mnist import load_fashion_mnist

    classes = PROTOCOL_CLASSES[protocol]
    _, train = load_fashion_mnist("train", download=False)
    _, test = load_fashion_mnist("test", download=False)
    q, db = finegrained_indices(train, test, classes)
    want_q, want_db = _independent_selection(train, test, classes)
    np.testing.assert_array_equal(db, want_db)
    np.testing.assert_array_equal(q, want_q)
    assert len(db) == 6000 * len(classes)
    assert np.bincount(train[db], minlength=10)[list(classes)].tolist() == [6000] * len(classes)
    assert len(q) == len(np.unique(q)) == 1000 and set(test[q].tolist()) <= set(classes)
    again_q, again_db = finegrained_indices(train, test, classes)
    assert np.array_equal(again_q, q) and np.array_equal(again_db, db)


@needs_fmnist
def test_a_run_trained_on_the_shoes_only(tmp_path):
    from hashlab.config import load_config
    from hashlab.encode import TrainedRun
    from hashlab.eval.metrics import retrieval_metrics
    from hashlab.train.engine import Trainer

    cfg = load_config(tiny_config(
        tmp_path, data={"dataset": "fashion-mnist", "classes": [5, 7, 9], "image_size": 14},
        model={"dim": 12, "backbone_args": {"width": 4, "feature_dim": 16}},
        train={"epochs": 1, "max_batches_per_epoch": 10},
        eval={"protocol": "fmnist-fine-shoes"}))
    trainer = Trainer(cfg, tmp_path / "shoes", progress=False)
    assert trainer.num_classes == 3 and len(trainer.dataset) == 18_000
    assert trainer.dataset.classes == ["Sandal", "Sneaker", "Ankle boot"]
    trainer.fit()
    run = TrainedRun(tmp_path / "shoes")
    result = evaluate_run(run, "fmnist-fine-shoes", progress=False)
    assert (result["n_queries"], result["n_database"]) == (1000, 18_000)
    assert result["trained_on"] == "subset"
    train, test = run.encode("train", progress=False), run.encode("test", progress=False)
    assert set(np.unique(test.labels).tolist()) == set(range(10))  # original label space
    q, db = _independent_selection(train.labels, test.labels, SHOES)
    want = retrieval_metrics(test.bits[q], train.bits[db], test.labels[q], train.labels[db],
                             kind="binary", nbits=12)
    for key in ("mAP@all", "mAP@1000", "P@100", "P@r2"):
        assert result["metrics"]["binary"][key] == pytest.approx(want[key], abs=1e-12), key
    assert result["metrics"]["binary"]["nbits"] == 12
    with pytest.raises(ConfigError, match="data.classes"):
        evaluate_run(run, "fmnist-fine-upper", progress=False)
