"""The ``fmnist-openset`` protocol: train on Fashion-MNIST classes 0–5, evaluate on the test
images of the unseen classes 6–9 (retrieval of each image against all the others, and
verification). Definitions: ``docs/protocols.md``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hashlab.encode import Codes, TrainedRun
from hashlab.errors import ConfigError
from hashlab.eval.common import FASHION_MNIST, binary_index_metrics, is_dataset, protocol_result
from hashlab.eval.metrics import retrieval_metrics
from hashlab.eval.registry import PROTOCOLS
from hashlab.eval.report import retrieval_rows
from hashlab.eval.verification import verification_metrics

__all__ = ["OPENSET_TEST_CLASSES", "OPENSET_TRAIN_CLASSES", "check_seen_classes_run",
           "fmnist_openset", "openset_metrics"]

OPENSET_TRAIN_CLASSES = list(range(6))
OPENSET_TEST_CLASSES = list(range(6, 10))


def openset_metrics(codes: Codes, *, n_pairs: int = 6000, seed: int = 0,
                    progress: bool = False) -> dict[str, dict[str, Any]]:
    """Open-set evaluation of codes of unseen classes: retrieval mAP@all of each image against
    all the others, and verification (10-fold accuracy, TAR@FAR=1e-3) on seeded pairs."""
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


def check_seen_classes_run(run: TrainedRun, protocol: str) -> None:
    """Refuse a run that was not trained on Fashion-MNIST classes 0–5 only (the unseen-class
    protocols' training regime)."""
    cfg = run.config.data
    if not is_dataset(cfg.dataset, FASHION_MNIST) or cfg.classes != OPENSET_TRAIN_CLASSES:
        raise ConfigError(f"protocol {protocol} needs a Fashion-MNIST run trained with "
                          f"data.classes: {OPENSET_TRAIN_CLASSES}")


@PROTOCOLS.register("fmnist-openset", rows=retrieval_rows, index=False)
def fmnist_openset(run: TrainedRun, progress: bool = True, batch_size: int = 1024
                   ) -> dict[str, Any]:
    """Train on classes 0–5 (``data.classes``), evaluate on the test images of classes 6–9."""
    check_seen_classes_run(run, "fmnist-openset")
    start = time.perf_counter()
    test = run.encode("test", batch_size=batch_size, progress=progress)
    unseen = test.take(np.flatnonzero(np.isin(test.labels, OPENSET_TEST_CLASSES)))
    metrics = openset_metrics(unseen, progress=progress)
    return protocol_result("fmnist-openset", unseen, unseen, metrics, start)
