"""Paired image–text data for cross-modal hashing: every item is an image and a text (a bag of
words) sharing one multi-hot label vector.

The loaders of this family (``fmnist-captions``, MIRFLICKR-25K, NUS-WIDE, IAPR TC-12) return a
:class:`PairedData` per split. Relevance follows the multi-label convention of the cross-modal
hashing literature: two items are relevant if their label vectors share at least one label.
See ``docs/crossmodal.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hashlab.data.arrays import ArrayDataset
from hashlab.data.text import save_vocabulary

__all__ = ["SPLITS", "PairedData"]

# the cross-modal hashing convention (DCMH and after): a query set, a retrieval set (the
# database), and a training set drawn from the retrieval set
SPLITS = ("query", "database", "train")


@dataclass
class PairedData:
    """One split of a paired dataset.

    Attributes:
        images: the images, an :class:`ArrayDataset` (``get_batch(idx) -> (images, labels)``;
            its labels are :attr:`classes` where there are classes, else the first label).
        texts: float32 ``[N, V]`` bag of words of each item's text (counts or 0/1).
        labels: uint8 ``[N, L]`` multi-hot labels; two items are relevant if they share one.
        vocabulary: the ``V`` words of the bag-of-words columns.
        label_names: the ``L`` label names.
        classes: int64 ``[N]`` class ids where the dataset has single classes (fmnist-captions:
            the Fashion-MNIST class), else None; used for class-level relevance.
        sentences: the raw texts where the dataset has them (fmnist-captions), else None.
        indices: int64 ``[N]`` positions of these items in the dataset's full item list (so that
            a split can be traced back and splits can be checked disjoint).
    """

    images: ArrayDataset
    texts: np.ndarray
    labels: np.ndarray
    vocabulary: list[str]
    label_names: list[str]
    classes: np.ndarray | None = None
    sentences: list[str] | None = None
    indices: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.texts.ndim != 2 or self.texts.shape[0] != n:
            raise ValueError(f"texts: expected [{n}, V] bags of words, got {self.texts.shape}")
        if self.texts.shape[1] != len(self.vocabulary):
            raise ValueError(f"texts has {self.texts.shape[1]} columns but the vocabulary "
                             f"{len(self.vocabulary)} words")
        if self.labels.ndim != 2 or self.labels.shape[0] != n:
            raise ValueError(f"labels: expected [{n}, L] multi-hot rows, got {self.labels.shape}")
        if self.labels.shape[1] != len(self.label_names):
            raise ValueError(f"labels has {self.labels.shape[1]} columns but there are "
                             f"{len(self.label_names)} label names")
        for name in ("classes", "indices"):
            value = getattr(self, name)
            if value is not None and np.asarray(value).shape != (n,):
                raise ValueError(f"{name}: expected [{n}], got {np.asarray(value).shape}")
        if self.sentences is not None and len(self.sentences) != n:
            raise ValueError(f"sentences: expected {n}, got {len(self.sentences)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def save_vocabulary(self, path: str | os.PathLike[str]) -> Path:
        """Write :attr:`vocabulary` to ``path``, one word per line (UTF-8), so that a run can
        reload it (the loaders' ``vocabulary=`` argument accepts the path)."""
        return save_vocabulary(self.vocabulary, path)

    def text_batch(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """float32 ``[B, V]`` bags of words of the items ``idx``."""
        return torch.from_numpy(np.ascontiguousarray(self.texts[np.asarray(idx)],
                                                     dtype=np.float32))

    def label_batch(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``[B, L]`` multi-hot labels of the items ``idx`` (int64)."""
        return torch.from_numpy(np.asarray(self.labels[np.asarray(idx)], dtype=np.int64))

    def subset(self, idx: np.ndarray) -> PairedData:
        """The items ``idx`` (positions in this split), every field kept aligned."""
        idx = np.asarray(idx, dtype=np.int64)
        return PairedData(
            self.images.subset(idx), self.texts[idx], self.labels[idx], self.vocabulary,
            self.label_names, None if self.classes is None else self.classes[idx],
            None if self.sentences is None else [self.sentences[i] for i in idx],
            None if self.indices is None else self.indices[idx])
