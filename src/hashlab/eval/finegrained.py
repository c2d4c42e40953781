"""The fine-grained Fashion-MNIST retrieval protocols: ``fmnist-fine-upper`` and
``fmnist-fine-shoes``.

Each is ``fmnist-retrieval`` restricted to a group of similar classes: the database is every
*training* image of the group, the queries are 1,000 of the group's test images drawn as
``fmnist-retrieval`` draws its queries (``numpy.random.default_rng(0)``, without replacement,
positions among those test images in dataset order); relevant = same class; ties broken by
database index; mAP@all, mAP@1000, P@100 and, for binary codes, precision within Hamming radius 2.

- ``fmnist-fine-upper``: T-shirt/top (0), Pullover (2), Coat (4), Shirt (6), the classes
  Fashion-MNIST models confuse most (24,000 database images, 4,000 test images);
- ``fmnist-fine-shoes``: Sandal (5), Sneaker (7), Ankle boot (9) (18,000 / 3,000).

The run may be trained on all 10 classes (``data.classes: null``) or on the group only
(``data.classes: [0, 2, 4, 6]``, relabelled 0..len-1 for training). Either way the protocol
encodes the whole ``train`` and ``test`` splits, whose labels are the original Fashion-MNIST
classes (``data.classes`` selects training images only), so relevance is "same original class"
in both cases. The code width is the run's. Definitions: ``docs/protocols.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hashlab.data.fashion_mnist import FASHION_MNIST_CLASSES
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError
from hashlab.eval.common import (
    FASHION_MNIST,
    FMNIST_QUERIES,
    evaluate_codes,
    fmnist_query_indices,
    is_dataset,
    protocol_result,
)
from hashlab.eval.registry import PROTOCOLS
from hashlab.eval.report import retrieval_rows

__all__ = [
    "FINEGRAINED_CLASSES",
    "check_finegrained_run",
    "finegrained_indices",
    "finegrained_metrics",
    "fmnist_fine_shoes",
    "fmnist_fine_upper",
]

#: protocol -> the original Fashion-MNIST class ids it retrieves among
FINEGRAINED_CLASSES: dict[str, tuple[int, ...]] = {
    "fmnist-fine-upper": (0, 2, 4, 6),  # T-shirt/top, Pullover, Coat, Shirt
    "fmnist-fine-shoes": (5, 7, 9),  # Sandal, Sneaker, Ankle boot
}


def finegrained_indices(train_labels: np.ndarray, test_labels: np.ndarray,
                        classes: Sequence[int], n_queries: int = FMNIST_QUERIES
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(query positions in the test split, database positions in the train split) of a
    fine-grained protocol over ``classes`` (original class ids).

    Database: every training image of ``classes``, in dataset order. Queries: ``n_queries`` of
    the test images of ``classes`` (all of them when there are fewer), drawn with
    :func:`~hashlab.eval.common.fmnist_query_indices` (seed 0, without replacement) among their
    positions in dataset order."""
    database = np.flatnonzero(np.isin(train_labels, classes))
    pool = np.flatnonzero(np.isin(test_labels, classes))
    queries = pool[fmnist_query_indices(len(pool), min(n_queries, len(pool)))]
    return queries, database


def finegrained_metrics(train: Codes, test: Codes, classes: Sequence[int], *,
                        progress: bool = False) -> tuple[Codes, Codes, dict[str, Any]]:
    """(queries, database, metrics) of a fine-grained protocol on a run's codes of the whole
    ``train`` and ``test`` splits (labels = original Fashion-MNIST classes)."""
    q, db = finegrained_indices(train.labels, test.labels, classes)
    queries, database = test.take(q), train.take(db)
    metrics = evaluate_codes(queries, database, topk=(100, 1000), radius=2, progress=progress)
    return queries, database, metrics


def check_finegrained_run(run: TrainedRun, protocol: str, classes: Sequence[int]) -> str:
    """``"all"`` for a Fashion-MNIST run trained on every class, ``"subset"`` for one trained
    on ``classes`` only (``data.classes``, any order); ConfigError for any other run."""
    data = run.config.data
    if not is_dataset(data.dataset, FASHION_MNIST):
        raise ConfigError(f"protocol {protocol} needs a Fashion-MNIST run; this run was "
                          f"trained on {data.dataset!r}")
    trained = getattr(data, "classes", None)
    if trained is None or sorted(trained) == list(range(len(FASHION_MNIST_CLASSES))):
        return "all"
    if sorted(trained) == sorted(classes):
        return "subset"
    raise ConfigError(f"protocol {protocol} evaluates a Fashion-MNIST run trained on all 10 "
                      f"classes (data.classes: null) or on its classes only (data.classes: "
                      f"{list(classes)}); this run was trained with data.classes: "
                      f"{list(trained)}")


def _evaluate(protocol: str, run: TrainedRun, progress: bool, batch_size: int
              ) -> dict[str, Any]:
    classes = FINEGRAINED_CLASSES[protocol]
    trained_on = check_finegrained_run(run, protocol, classes)
    start = time.perf_counter()
    train = run.encode("train", batch_size=batch_size, progress=progress)
    test = run.encode("test", batch_size=batch_size, progress=progress)
    queries, database, metrics = finegrained_metrics(train, test, classes, progress=progress)
    return protocol_result(protocol, queries, database, metrics, start, classes=list(classes),
                           class_names=[FASHION_MNIST_CLASSES[c] for c in classes],
                           trained_on=trained_on)


@PROTOCOLS.register("fmnist-fine-upper", rows=retrieval_rows, index=False)
def fmnist_fine_upper(run: TrainedRun, progress: bool = True, batch_size: int = 1024
                      ) -> dict[str, Any]:
    """Fashion-MNIST tops (T-shirt, Pullover, Coat, Shirt): 1,000 test queries vs their
    24,000 training images."""
    return _evaluate("fmnist-fine-upper", run, progress, batch_size)


@PROTOCOLS.register("fmnist-fine-shoes", rows=retrieval_rows, index=False)
def fmnist_fine_shoes(run: TrainedRun, progress: bool = True, batch_size: int = 1024
                      ) -> dict[str, Any]:
    """Fashion-MNIST shoes (Sandal, Sneaker, Ankle boot): 1,000 test queries vs their
    18,000 training images."""
    return _evaluate("fmnist-fine-shoes", run, progress, batch_size)
