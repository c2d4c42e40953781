"""The ``fmnist-unseen`` protocol: hashing on classes the model never saw.

Train on Fashion-MNIST classes 0–5 (``data.classes: [0, 1, 2, 3, 4, 5]``, as for
``fmnist-openset``); the database is every *training* image of the unseen classes 6–9 (24,000)
and the queries are 1,000 test images of classes 6–9 drawn with ``numpy.random.default_rng(0)``
without replacement; relevant = same class. Reported like ``fmnist-retrieval`` (mAP@all,
mAP@1000, P@100, precision within Hamming radius 2, PR curves). Hash-centre methods fix one code
per *training* class, so how their codes organise images of new classes is a question of its own.
Definitions: ``docs/protocols.md``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hashlab.encode import TrainedRun
from hashlab.eval.common import evaluate_codes, protocol_result
from hashlab.eval.openset import OPENSET_TEST_CLASSES, check_seen_classes_run
from hashlab.eval.registry import PROTOCOLS
from hashlab.eval.report import retrieval_rows

__all__ = ["UNSEEN_QUERIES", "fmnist_unseen", "unseen_query_indices"]

UNSEEN_QUERIES = 1000


def unseen_query_indices(n_unseen_test: int, n_queries: int = UNSEEN_QUERIES) -> np.ndarray:
    """Positions of the queries among the test images of the unseen classes (seed 0)."""
    return np.random.default_rng(0).choice(n_unseen_test, min(n_queries, n_unseen_test),
                                           replace=False)


@PROTOCOLS.register("fmnist-unseen", rows=retrieval_rows, index=False)
def fmnist_unseen(run: TrainedRun, progress: bool = True, batch_size: int = 1024
                  ) -> dict[str, Any]:
    """Train on classes 0–5; 1,000 test queries of classes 6–9 against their training images."""
    check_seen_classes_run(run, "fmnist-unseen")
    start = time.perf_counter()
    train = run.encode("train", batch_size=batch_size, progress=progress)
    test = run.encode("test", batch_size=batch_size, progress=progress)
    database = train.take(np.flatnonzero(np.isin(train.labels, OPENSET_TEST_CLASSES)))
    unseen = test.take(np.flatnonzero(np.isin(test.labels, OPENSET_TEST_CLASSES)))
    queries = unseen.take(unseen_query_indices(len(unseen)))
    metrics = evaluate_codes(queries, database, progress=progress)
    return protocol_result("fmnist-unseen", queries, database, metrics, start)
