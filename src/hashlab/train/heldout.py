"""The validation split: a seeded, class-stratified part of the training set that training never
sees, searched after every epoch so that epochs and hyperparameters are chosen without the test
queries (``train.validation`` in the config; ``docs/protocols.md#model-selection``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hashlab.eval.metrics import retrieval_metrics
from hashlab.index.codes import pack_bits
from hashlab.models.model import CodeModel

__all__ = ["split_validation", "validation_map"]


def split_validation(labels: Any, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: from every class, ``round(fraction · n_c)`` images (at least
    one if the class has two or more) drawn with ``numpy.random.default_rng(seed)`` are held
    out; both index arrays are sorted. Multi-hot or missing (−1) labels count as one group each
    row's first label / the missing group."""
    labels = np.asarray(labels)
    groups = labels[:, 0] if labels.ndim == 2 else labels
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        take = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        held.append(rng.choice(members, size=take, replace=False) if take else members[:0])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(groups)), val)
    return train, val


def validation_map(model: CodeModel, dataset: Any, device: torch.device,
                   batch_size: int = 1024) -> float:
    """mAP@all of the binary codes of ``dataset`` (the model's bits; the sign of an embedding
    head's output), each image against all the others (itself excluded), relevant = same
    class. The model is encoded in eval mode and left in the mode it was in."""
    packed = []
    n = len(dataset)
    for start in range(0, n, batch_size):
        images, _ = dataset.get_batch(torch.arange(start, min(start + batch_size, n)))
        floats, bits = model.encode_all(images.to(device))
        packed.append(bits if bits is not None else pack_bits(floats > 0))
    codes = np.concatenate(packed)
    labels = np.asarray(dataset.labels)
    result = retrieval_metrics(codes, codes, labels, labels, kind="binary", nbits=model.dim,
                               topk=(100,), radius=None, pr_curve=False, exclude_self=True,
                               query_db_indices=np.arange(n))
    return float(result["mAP@all"])
