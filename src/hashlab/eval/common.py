"""What the evaluation protocols share: the Fashion-MNIST query set, retrieval metrics of a run's
codes, the saved index of a run, and the shape of a protocol's result.

This module imports no protocol module, so every protocol module may import it. The metrics
and protocols are defined in ``docs/protocols.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sized
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.artifacts import SHA256_PATTERN, check_fields
from hashlab.data.registry import resolve_dataset_name
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError, HashlabError
from hashlab.eval.index_metrics import index_retrieval_metrics
from hashlab.eval.metrics import retrieval_metrics
from hashlab.index import BinaryIndex, IndexFileError, load_index, read_manifest, save_index
from hashlab.index.store import MANIFEST_FILE, SOURCE_FILE, read_source

__all__ = [
    "FASHION_MNIST",
    "FMNIST_QUERIES",
    "FMNIST_QUERY_SEED",
    "INDEX_SOURCE_FILE",
    "binary_index_metrics",
    "evaluate_codes",
    "fmnist_query_indices",
    "index_source",
    "is_dataset",
    "load_run_index",
    "protocol_result",
    "read_index_source",
    "save_run_index",
]

#: canonical name of the dataset of the ``fmnist-*`` protocols
FASHION_MNIST = "fashion-mnist"
FMNIST_QUERIES = 1000
FMNIST_QUERY_SEED = 0

#: the file ``hashlab index`` writes inside an index: the run, split, code and model it holds
INDEX_SOURCE_FILE = SOURCE_FILE


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


#: what ``source.json`` must hold, and the types
_SOURCE_FIELDS: dict[str, type] = {"run": str, "split": str, "code": str, "model_sha256": str}


def _rebuild_hint(index_dir: Any, source: dict[str, Any], kind: str = "KIND") -> str:
    code = " --code float" if source.get("code") == "float" else ""
    return (f"rebuild it: hashlab index {source.get('run', 'RUN')} --split "
            f"{source.get('split', 'SPLIT')} --kind {kind}{code} --out {index_dir}")


def read_index_source(index_dir: Any) -> dict[str, Any]:
    """The ``source.json`` that ``hashlab index`` writes inside an index: run, split, code and
    the SHA-256 of the model that made the codes; checked against the index's manifest.
    :class:`~hashlab.index.IndexFileError` naming the file when it is missing or malformed."""
    index_dir = Path(index_dir)
    source_path = index_dir / INDEX_SOURCE_FILE
    if index_dir.is_dir() and not any((index_dir / name).exists()
                                      for name in (INDEX_SOURCE_FILE, MANIFEST_FILE)):
        raise IndexFileError(f"{index_dir} is not an index directory (no {MANIFEST_FILE}, no "
                             f"{INDEX_SOURCE_FILE}): build one with `hashlab index RUN ...`")
    manifest = read_manifest(index_dir)
    source = read_source(index_dir, manifest)
    if source is None:
        raise IndexFileError(f"{index_dir} has no {INDEX_SOURCE_FILE}: it was not built by "
                             "`hashlab index`; build it with `hashlab index RUN ...`")
    hint = f"; {_rebuild_hint(index_dir, source, manifest['kind'])}"
    check_fields(source, _SOURCE_FIELDS, source_path, "index source file", IndexFileError, hint)
    if source["code"] not in ("binary", "float"):
        raise IndexFileError(f"{source_path}: code must be 'binary' or 'float', got "
                             f"{source['code']!r}{hint}")
    if not SHA256_PATTERN.fullmatch(source["model_sha256"]):
        raise IndexFileError(f"{source_path}: model_sha256 is not a SHA-256 hex digest{hint}")
    if (source["code"] == "binary") != (manifest["family"] == "binary"):
        raise IndexFileError(f"{source_path}: says {source['code']} codes but the index holds "
                             f"{manifest['family']} ones{hint}")
    return source


def index_source(run: TrainedRun, split: str, code: str, modality: str | None = None
                 ) -> dict[str, Any]:
    """The ``source.json`` of an index of ``run``'s ``split`` (``code``: binary or float;
    ``modality``: ``image`` or ``text`` for a cross-modal run's index)."""
    source = {"run": str(run.run_dir.resolve()), "split": split, "code": code,
              "model_sha256": run.model_sha256}
    return source if modality is None else {**source, "modality": modality}


def save_run_index(run: TrainedRun, index: Any, path: Any, *, split: str, code: str,
                   modality: str | None = None) -> Path:
    """Save ``index`` (of ``run``'s ``split``) with its ``source.json``, in one atomic swap."""
    return save_index(index, path, model_run=str(run.run_dir.resolve()),
                      source=index_source(run, split, code, modality))


def load_run_index(run: TrainedRun, index_dir: Any) -> tuple[Any, dict[str, Any]]:
    """Load an index built by ``hashlab index`` and check it was built by ``run``'s current
    model (same ``model.pt`` SHA-256), for its code width, from a split of the current size."""
    source = read_index_source(index_dir)
    kind = read_manifest(index_dir)["kind"]
    if source["model_sha256"] != run.model_sha256:
        raise IndexFileError(
            f"index {index_dir} was built from another model.pt (SHA-256 "
            f"{source['model_sha256'][:12]}…) than {run.run_dir}'s current one "
            f"({run.model_sha256[:12]}…): the run was retrained or replaced, and its codes "
            f"would not match the queries; {_rebuild_hint(index_dir, source, kind)}")
    binary = source["code"] == "binary"
    index = load_index(index_dir, **({"expect_nbits": run.model.dim} if binary
                                     else {"expect_dim": run.model.dim}))
    n_split = len(run.load_split(source["split"]))
    if index.ntotal != n_split:
        raise ConfigError(f"index at {index_dir} holds {index.ntotal} codes but the run's "
                          f"{source['split']} split has {n_split} images (ids = positions)")
    return index, source
