"""The low-label split of a training set (``data.semi`` in the config; the ``fmnist-semi``
protocol of ``docs/protocols.md#fmnist-semi-low-label-training``).

From every class ``labels_per_class`` images keep their labels; ``validation`` images drawn
uniformly from the rest are held out for choosing hyperparameters (never the test queries);
everything else is the unlabelled pool. The unlabelled images keep their true labels in memory
only so that recipes can *log* the accuracy of their pseudo-labels; no training code reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hashlab.errors import ConfigError

__all__ = ["SemiParts", "SemiSplit", "semi_parts", "semi_split"]


@dataclass(frozen=True)
class SemiSplit:
    """Sorted index arrays into the training set: disjoint, covering it."""

    labelled: np.ndarray
    validation: np.ndarray
    unlabelled: np.ndarray

    def summary(self) -> dict[str, int]:
        return {"labelled": len(self.labelled), "validation": len(self.validation),
                "unlabelled": len(self.unlabelled)}


def semi_split(labels: Any, labels_per_class: int, validation: int, seed: int) -> SemiSplit:
    """Draw the split with ``numpy.random.default_rng(seed)``: for each class in ascending order
    ``labels_per_class`` labelled images, then ``validation`` images from a permutation of the
    remaining ones; the rest is unlabelled."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ConfigError("data.semi needs single-label training data (one class per image)")
    if labels_per_class < 1:
        raise ConfigError(f"data.semi.labels_per_class must be >= 1, got {labels_per_class}")
    if validation < 0:
        raise ConfigError(f"data.semi.validation must be >= 0, got {validation}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < labels_per_class:
            raise ConfigError(f"data.semi.labels_per_class: class {int(c)} has only "
                              f"{len(members)} training images, fewer than {labels_per_class}")
        chosen.append(rng.choice(members, size=labels_per_class, replace=False))
    labelled = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(labels)), labelled)
    if validation > len(rest):
        raise ConfigError(f"data.semi.validation: {validation} images asked for, but only "
                          f"{len(rest)} are left after the labelled ones")
    order = rng.permutation(rest)
    return SemiSplit(labelled, np.sort(order[:validation]), np.sort(order[validation:]))


@dataclass
class SemiParts:
    """The three parts of a training set as datasets (``ArrayDataset``)."""

    labelled: Any
    validation: Any
    unlabelled: Any
    split: SemiSplit


def semi_parts(dataset: Any, labels_per_class: int, validation: int, seed: int) -> SemiParts:
    """:func:`semi_split` of an in-memory dataset, as its three subsets."""
    from hashlab.data.arrays import ArrayDataset

    if not isinstance(dataset, ArrayDataset):
        raise ConfigError("data.semi needs an in-memory dataset")
    split = semi_split(dataset.labels, labels_per_class, validation, seed)
    return SemiParts(dataset.subset(split.labelled), dataset.subset(split.validation),
                     dataset.subset(split.unlabelled), split)
