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
    from hashlab.eval.index_metrics import index_retrieval_metrics
    from hashlab.index import BinaryIndex

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
    from hashlab.index import BinaryIndex

    if index is not None:
        if isinstance(index, BinaryIndex):
            if queries.bits is None:
                raise ValueError("a binary index needs a run with a hash head")
            return {"binary": binary_index_metrics(queries, database, index=index, topk=topk,
                                                   radius=radius, progress=progress)}
        from hashlab.eval.index_metrics import index_retrieval_metrics

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


def _subset(codes: Codes, idx: np.ndarray) -> Codes:
    bits = codes.bits[idx] if codes.bits is not None else None
    return Codes(codes.float[idx], bits, codes.labels[idx], codes.nbits)


@PROTOCOLS.register("fmnist-retrieval")
def fmnist_retrieval(run: TrainedRun, progress: bool = True, batch_size: int = 1024,
                     index: Any = None) -> dict[str, Any]:
    if run.config.data.dataset not in ("fashion-mnist", "fmnist"):
        raise ConfigError(f"protocol fmnist-retrieval needs a Fashion-MNIST run; this run was "
                          f"trained on {run.config.data.dataset!r} (use --protocol retrieval)")
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    test = run.encode("test", batch_size=batch_size, progress=progress)
    queries = _subset(test, fmnist_query_indices(len(test)))
    metrics = evaluate_codes(queries, database, progress=progress, index=index)
    return {"protocol": "fmnist-retrieval", "n_queries": len(queries), "n_database": len(database),
            "metrics": metrics, "seconds": time.perf_counter() - start}


@PROTOCOLS.register("retrieval")
def retrieval(run: TrainedRun, progress: bool = True, batch_size: int = 1024,
              index: Any = None) -> dict[str, Any]:
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    queries = run.encode("test", batch_size=batch_size, progress=progress)
    metrics = evaluate_codes(queries, database, topk=(min(100, len(database)),
                                                      min(1000, len(database))),
                             progress=progress, index=index)
    return {"protocol": "retrieval", "n_queries": len(queries), "n_database": len(database),
            "metrics": metrics, "seconds": time.perf_counter() - start}


OPENSET_TRAIN_CLASSES = list(range(6))
OPENSET_TEST_CLASSES = list(range(6, 10))


def openset_metrics(codes: Codes, *, n_pairs: int = 6000, seed: int = 0,
                    progress: bool = False) -> dict[str, dict[str, Any]]:
    """Open-set evaluation of codes of unseen classes: retrieval mAP@all of each image against
    all the others, and verification (10-fold accuracy, TAR@FAR=1e-3) on seeded pairs."""
    from hashlab.eval.verification import verification_metrics

    n = len(codes)
    self_idx = np.arange(n)
    out: dict[str, dict[str, Any]] = {}
    kinds = [("float", codes.float)] + ([("binary", codes.bits)] if codes.bits is not None else [])
    for kind, x in kinds:
        if kind == "binary":
            m = binary_index_metrics(codes, topk=(100,), radius=2, pr_curve=False,
                                     exclude_self=True, progress=progress)
        else:
            m = retrieval_metrics(x, x, codes.labels, codes.labels, kind=kind, topk=(100,),
                                  pr_curve=False, exclude_self=True, query_db_indices=self_idx,
                                  progress=progress)
        m.update(verification_metrics(x, codes.labels, kind=kind, n_pairs=n_pairs, seed=seed))
        out[kind] = m
    return out


@PROTOCOLS.register("fmnist-openset")
def fmnist_openset(run: TrainedRun, progress: bool = True, batch_size: int = 1024
                   ) -> dict[str, Any]:
    """Train on classes 0–5 (``data.classes``), evaluate on the test images of classes 6–9."""
    cfg = run.config.data
    if cfg.dataset not in ("fashion-mnist", "fmnist") or cfg.classes != OPENSET_TRAIN_CLASSES:
        raise ConfigError("protocol fmnist-openset needs a Fashion-MNIST run trained with "
                          f"data.classes: {OPENSET_TRAIN_CLASSES}")
    start = time.perf_counter()
    test = run.encode("test", batch_size=batch_size, progress=progress)
    unseen = _subset(test, np.flatnonzero(np.isin(test.labels, OPENSET_TEST_CLASSES)))
    metrics = openset_metrics(unseen, progress=progress)
    return {"protocol": "fmnist-openset", "n_queries": len(unseen), "n_database": len(unseen),
            "metrics": metrics, "seconds": time.perf_counter() - start}


def evaluate_run(run: TrainedRun, protocol: str, progress: bool = True,
                 index_dir: Any = None) -> dict[str, Any]:
    """Run a named protocol on a finished run.

    ``index_dir``: search the protocol's queries in a saved index (``hashlab index``) built
    from the run's ``train`` split instead of ranking the codes exhaustively (``fmnist-retrieval``
    and ``retrieval`` only).
    """
    import hashlab.eval.dph  # noqa: F401  (registers fmnist-dph)

    fn = PROTOCOLS.get(protocol)
    if index_dir is None:
        return fn(run, progress=progress)
    index, source = load_run_index(run, index_dir)
    if protocol not in ("fmnist-retrieval", "retrieval"):
        raise ConfigError(f"--index works with protocols fmnist-retrieval and retrieval, "
                          f"not {protocol!r}")
    if source.get("split") != "train":
        raise ConfigError(f"protocol {protocol} searches the train split; the index at "
                          f"{index_dir} holds the {source.get('split')!r} split")
    result = fn(run, progress=progress, index=index)
    result["index"] = {"path": str(index_dir), "kind": index.kind, "ntotal": index.ntotal}
    return result


INDEX_SOURCE_FILE = "source.json"


def read_index_source(index_dir: Any) -> dict[str, Any]:
    """The ``source.json`` that ``hashlab index`` writes beside an index: run, split, code."""
    import json
    from pathlib import Path

    source_path = Path(index_dir) / INDEX_SOURCE_FILE
    if not source_path.is_file():
        raise ConfigError(f"{index_dir} has no {INDEX_SOURCE_FILE}: build it with `hashlab index`")
    return json.loads(source_path.read_text())


def load_run_index(run: TrainedRun, index_dir: Any) -> tuple[Any, dict[str, Any]]:
    """Load an index built by ``hashlab index`` and check it matches ``run``'s code width and
    the size of the split it was built from."""
    from hashlab.index import load_index

    source = read_index_source(index_dir)
    binary = source.get("code") == "binary"
    index = load_index(index_dir, **({"expect_nbits": run.model.dim} if binary
                                     else {"expect_dim": run.model.dim}))
    n_split = len(run.load_split(source.get("split", "train")))
    if index.ntotal != n_split:
        raise ConfigError(f"index at {index_dir} holds {index.ntotal} codes but the run's "
                          f"{source.get('split')} split has {n_split} images (ids = positions)")
    return index, source
