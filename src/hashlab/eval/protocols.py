"""Evaluation protocols: which images are queries, which the database, and what is reported.

``fmnist-retrieval`` (``shared/reference/formulas.md``): database = the 60,000 Fashion-MNIST
training images, queries = 1,000 test images drawn with ``numpy.random.default_rng(0)`` without
replacement; relevant = same class; mAP@all, mAP@1000, P@100 and, for binary codes, precision
within Hamming radius 2. ``retrieval`` is the same on any dataset with every test image a query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError
from hashlab.eval.metrics import retrieval_metrics
from hashlab.registry import Registry

Protocol = Callable[..., dict[str, Any]]
PROTOCOLS: Registry[dict[str, Any]] = Registry("protocol")

FMNIST_QUERIES = 1000
FMNIST_QUERY_SEED = 0


def fmnist_query_indices(n_test: int = 10_000, n_queries: int = FMNIST_QUERIES) -> np.ndarray:
    """Indices of the fmnist-retrieval queries among the test images."""
    return np.random.default_rng(FMNIST_QUERY_SEED).choice(n_test, n_queries, replace=False)


def evaluate_codes(queries: Codes, database: Codes, *, topk: tuple[int, ...] = (100, 1000),
                   radius: int = 2, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of float codes (cosine) and, when present, binary codes (Hamming)."""
    results = {"float": retrieval_metrics(queries.float, database.float, queries.labels,
                                          database.labels, kind="float", topk=topk,
                                          progress=progress)}
    if queries.bits is not None and database.bits is not None:
        results["binary"] = retrieval_metrics(queries.bits, database.bits, queries.labels,
                                              database.labels, kind="binary",
                                              nbits=queries.nbits, topk=topk, radius=radius,
                                              progress=progress)
    return results


def _subset(codes: Codes, idx: np.ndarray) -> Codes:
    bits = codes.bits[idx] if codes.bits is not None else None
    return Codes(codes.float[idx], bits, codes.labels[idx], codes.nbits)


@PROTOCOLS.register("fmnist-retrieval")
def fmnist_retrieval(run: TrainedRun, progress: bool = True, batch_size: int = 1024
                     ) -> dict[str, Any]:
    if run.config.data.dataset not in ("fashion-mnist", "fmnist"):
        raise ConfigError(f"protocol fmnist-retrieval needs a Fashion-MNIST run; this run was "
                          f"trained on {run.config.data.dataset!r} (use --protocol retrieval)")
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    test = run.encode("test", batch_size=batch_size, progress=progress)
    queries = _subset(test, fmnist_query_indices(len(test)))
    metrics = evaluate_codes(queries, database, progress=progress)
    return {"protocol": "fmnist-retrieval", "n_queries": len(queries), "n_database": len(database),
            "metrics": metrics, "seconds": time.perf_counter() - start}


@PROTOCOLS.register("retrieval")
def retrieval(run: TrainedRun, progress: bool = True, batch_size: int = 1024) -> dict[str, Any]:
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    queries = run.encode("test", batch_size=batch_size, progress=progress)
    metrics = evaluate_codes(queries, database, topk=(min(100, len(database)),
                                                      min(1000, len(database))),
                             progress=progress)
    return {"protocol": "retrieval", "n_queries": len(queries), "n_database": len(database),
            "metrics": metrics, "seconds": time.perf_counter() - start}


def evaluate_run(run: TrainedRun, protocol: str, progress: bool = True) -> dict[str, Any]:
    """Run a named protocol on a finished run."""
    return PROTOCOLS.get(protocol)(run, progress=progress)
