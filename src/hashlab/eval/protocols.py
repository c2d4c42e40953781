"""The retrieval protocols, and :func:`evaluate_run`, which runs any registered protocol.

``fmnist-retrieval``: database = the 60,000 Fashion-MNIST training images, queries = 1,000 test
images drawn with ``numpy.random.default_rng(0)`` without replacement; relevant = same class;
mAP@all, mAP@1000, P@100 and, for binary codes, precision within Hamming radius 2.
``retrieval`` is the same on any dataset with every test image a query. Definitions:
``docs/protocols.md``.

A new protocol is a function in its own module of ``hashlab/eval`` registered with
``@PROTOCOLS.register(...)`` (see :mod:`hashlab.eval.registry`); nothing here changes.
"""

from __future__ import annotations

import time
from typing import Any

from hashlab.encode import TrainedRun
from hashlab.errors import ConfigError
from hashlab.eval.common import (
    FASHION_MNIST,
    FMNIST_QUERIES,
    FMNIST_QUERY_SEED,
    INDEX_SOURCE_FILE,
    binary_index_metrics,
    evaluate_codes,
    fmnist_query_indices,
    is_dataset,
    load_run_index,
    protocol_result,
    read_index_source,
)
from hashlab.eval.registry import PROTOCOLS
from hashlab.eval.report import retrieval_rows

__all__ = [
    "FMNIST_QUERIES",
    "FMNIST_QUERY_SEED",
    "INDEX_SOURCE_FILE",
    "PROTOCOLS",
    "binary_index_metrics",
    "evaluate_codes",
    "evaluate_run",
    "fmnist_query_indices",
    "fmnist_retrieval",
    "load_run_index",
    "read_index_source",
    "retrieval",
]


@PROTOCOLS.register("fmnist-retrieval", rows=retrieval_rows, index=True)
def fmnist_retrieval(run: TrainedRun, progress: bool = True, batch_size: int = 1024,
                     index: Any = None) -> dict[str, Any]:
    """Fashion-MNIST: 1,000 seeded test queries against the 60,000 training images."""
    if not is_dataset(run.config.data.dataset, FASHION_MNIST):
        raise ConfigError(f"protocol fmnist-retrieval needs a Fashion-MNIST run; this run was "
                          f"trained on {run.config.data.dataset!r} (use --protocol retrieval)")
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    test = run.encode("test", batch_size=batch_size, progress=progress)
    queries = test.take(fmnist_query_indices(len(test)))
    metrics = evaluate_codes(queries, database, progress=progress, index=index)
    return protocol_result("fmnist-retrieval", queries, database, metrics, start)


@PROTOCOLS.register("retrieval", rows=retrieval_rows, index=True)
def retrieval(run: TrainedRun, progress: bool = True, batch_size: int = 1024,
              index: Any = None) -> dict[str, Any]:
    """Any dataset: every test image queries the training images."""
    start = time.perf_counter()
    database = run.encode("train", batch_size=batch_size, progress=progress)
    queries = run.encode("test", batch_size=batch_size, progress=progress)
    metrics = evaluate_codes(queries, database, topk=(min(100, len(database)),
                                                      min(1000, len(database))),
                             progress=progress, index=index)
    return protocol_result("retrieval", queries, database, metrics, start)


def open_run(run_dir: Any) -> Any:
    """The finished run in ``run_dir``: a :class:`~hashlab.crossmodal.trainer.CrossModalRun`
    for a cross-modal run, else a :class:`~hashlab.encode.TrainedRun`."""
    from hashlab.crossmodal.trainer import CrossModalRun, is_crossmodal_run

    return CrossModalRun(run_dir) if is_crossmodal_run(run_dir) else TrainedRun(run_dir)


def evaluate_run(run: Any, protocol: str, progress: bool = True,
                 index_dir: Any = None) -> dict[str, Any]:
    """Run a registered protocol on a finished run.

    ``index_dir``: search the protocol's queries in a saved index (``hashlab index``) built
    from the run's ``train`` split instead of ranking the codes exhaustively (protocols
    registered with ``index=True``).
    """
    entry = PROTOCOLS.entry(protocol)
    runs = entry.meta.get("runs", ("image",))
    kind = getattr(run, "kind", "image")
    if kind not in runs:
        able = [e.name for e in PROTOCOLS.entries() if kind in e.meta.get("runs", ("image",))]
        raise ConfigError(f"protocol {entry.name} evaluates {' or '.join(runs)} runs, and "
                          f"{run.run_dir} is a {kind} run; its protocols: {', '.join(able)}")
    if index_dir is None:
        return entry.obj(run, progress=progress)
    if not entry.meta.get("index"):
        able = [e.name for e in PROTOCOLS.entries() if e.meta.get("index")]
        raise ConfigError(f"--index works with protocols {', '.join(able)}, "
                          f"not {protocol!r}")
    index, source = load_run_index(run, index_dir)
    if source.get("split") != "train":
        raise ConfigError(f"protocol {entry.name} searches the train split; the index at "
                          f"{index_dir} holds the {source.get('split')!r} split")
    result = entry.obj(run, progress=progress, index=index)
    result["index"] = {"path": str(index_dir), "kind": index.kind, "ntotal": index.ntotal}
    return result
