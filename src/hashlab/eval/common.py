"""What the evaluation protocols share: the Fashion-MNIST query set, retrieval metrics of a run's
codes, the saved index of a run, and the shape of a protocol's result.

This module imports no protocol module, so every protocol module may import it. The metrics
and protocols are defined in ``docs/protocols.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sized
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.data.registry import resolve_dataset_name
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError, HashlabError
from hashlab.eval.index_metrics import index_retrieval_metrics
from hashlab.eval.metrics import retrieval_metrics
from hashlab.index import BinaryIndex, load_index

__all__ = [
    "FASHION_MNIST",
    "FMNIST_QUERIES",
    "FMNIST_QUERY_SEED",
    "INDEX_SOURCE_FILE",
    "binary_index_metrics",
    "evaluate_codes",
    "fmnist_query_indices",
    "is_dataset",
    "load_run_index",
    "protocol_result",
    "read_index_source",
]

#: canonical name of the dataset of the ``fmnist-*`` protocols
FASHION_MNIST = "fashion-mnist"
FMNIST_QUERIES = 1000
FMNIST_QUERY_SEED = 0

#: the file ``hashlab index`` writes beside an index: the run, split and code it holds
INDEX_SOURCE_FILE = "source.json"


def is_dataset(name: str, canonical: str) -> bool:
    """Whether the dataset ``name`` of a config (any case, ``_`` or ``-``, or an alias such as
    ``fmnist``) is the dataset registered as ``canonical``; False for an unknown name."""
    try:
        return resolve_dataset_name(name) == canonical
    except HashlabError:
        return False


def fmnist_query_indices(n_test: int = 10_000, n_queries: int = FMNIST_QUERIES) -> np.ndarray:
    """Indices of the fmnist-retrieval queries among the test images."""
    return np.random.default_rng(FMNIST_QUERY_SEED).choice(n_test, n_queries, replace=False)


def protocol_result(protocol: str, queries: Sized, database: Sized,
                    metrics: dict[str, Any], start: float, **extra: Any) -> dict[str, Any]:
    """A protocol's result: its name, numbers of queries and database items, ``extra`` (such
    as the attribute names), the metrics and the seconds since ``start``."""
    return {"protocol": protocol, "n_queries": len(queries), "n_database": len(database),
            **extra, "metrics": metrics, "seconds": time.perf_counter() - start}


def binary_index_metrics(queries: Codes, database: Codes | None = None, *,
                         index: Any = None, topk: tuple[int, ...] = (100, 1000),
                         radius: int | None = 2, pr_curve: bool = True,
                         exclude_self: bool = False, progress: bool = False) -> dict[str, Any]:
    """Binary-code retrieval metrics through the index API (:mod:`hashlab.index`).

    Without ``index`` a ``flat`` :class:`~hashlab.index.BinaryIndex` of ``database.bits`` is
    built with ids = database positions (exact Hamming ranking, ties by position). With
    ``index``, ``database`` only supplies the labels of the ids (positions). With
    ``exclude_self`` the queries are the database itself and each one's own entry is dropped.
    """
    database = queries if database is None else database
    if index is None:
        if database.bits is None:
            raise ValueError("binary metrics need binary codes (this run has an embedding head)")
        index = BinaryIndex(database.nbits, "flat")
        index.add(database.bits)
    self_ids = np.arange(len(queries)) if exclude_self else None
    return index_retrieval_metrics(index, queries.bits, queries.labels,
                                   np.arange(len(database)), database.labels, topk=topk,
                                   radius=radius, pr_curve=pr_curve, exclude_self=exclude_self,
                                   query_ids=self_ids, progress=progress)


def evaluate_codes(queries: Codes, database: Codes, *, topk: tuple[int, ...] = (100, 1000),
                   radius: int = 2, progress: bool = False, index: Any = None
                   ) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of float codes (cosine) and, when present, binary codes (Hamming).

    Binary codes are searched through the index API (a flat index, or ``index`` when given:
    then only its kind is evaluated, float codes are skipped if it is a binary index).
    """
    if index is not None:
        if isinstance(index, BinaryIndex):
            if queries.bits is None:
                raise ValueError("a binary index needs a run with a hash head")
            return {"binary": binary_index_metrics(queries, database, index=index, topk=topk,
                                                   radius=radius, progress=progress)}
        return {"float": index_retrieval_metrics(index, queries.float, queries.labels,
                                                 np.arange(len(database)), database.labels,
                                                 topk=topk, radius=None, progress=progress)}
    results = {"float": retrieval_metrics(queries.float, database.float, queries.labels,
                                          database.labels, kind="float", topk=topk,
                                          progress=progress)}
    if queries.bits is not None and database.bits is not None:
        results["binary"] = binary_index_metrics(queries, database, topk=topk, radius=radius,
                                                 progress=progress)
    return results


def read_index_source(index_dir: Any) -> dict[str, Any]:
    """The ``source.json`` that ``hashlab index`` writes beside an index: run, split, code."""
    source_path = Path(index_dir) / INDEX_SOURCE_FILE
    if not source_path.is_file():
        raise ConfigError(f"{index_dir} has no {INDEX_SOURCE_FILE}: build it with `hashlab index`")
    return json.loads(source_path.read_text())


def load_run_index(run: TrainedRun, index_dir: Any) -> tuple[Any, dict[str, Any]]:
    """Load an index built by ``hashlab index`` and check it matches ``run``'s code width and
    the size of the split it was built from."""
    source = read_index_source(index_dir)
    binary = source.get("code") == "binary"
    index = load_index(index_dir, **({"expect_nbits": run.model.dim} if binary
                                     else {"expect_dim": run.model.dim}))
    n_split = len(run.load_split(source.get("split", "train")))
    if index.ntotal != n_split:
        raise ConfigError(f"index at {index_dir} holds {index.ntotal} codes but the run's "
                          f"{source.get('split')} split has {n_split} images (ids = positions)")
    return index, source
