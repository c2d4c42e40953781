"""P×K batch sampling for metric learning: each batch holds P distinct classes × K images each.

Triplet-style losses need several images of a class in a batch (to form anchor–positive pairs)
and several classes (for negatives); with plain shuffling and many classes most anchors have no
positive.
``pk_batches`` draws one epoch of such batches from a generator, so training stays reproducible and
resumable; ``PKBatchSampler`` wraps it as a ``torch.utils.data.Sampler`` for users' DataLoaders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def _class_index(labels: np.ndarray) -> list[torch.Tensor]:
    """Indices of each class's samples (classes in sorted label order)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.size == 0:
        return []
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    groups = np.split(order, starts[1:])
    return [torch.from_numpy(g.astype(np.int64)) for g in groups]


def _check_pk(p: int, k: int, num_classes: int) -> None:
    if p < 1 or k < 1:
        raise ValueError(f"p and k must be >= 1 (k >= 2 for triplet losses), got p={p}, k={k}")
    if num_classes < p:
        raise ValueError(
            f"P×K sampling needs at least p={p} distinct classes, but the labels have "
            f"{num_classes}"
        )


def pk_batches(
    labels: np.ndarray | Sequence[int],
    p: int,
    k: int,
    generator: torch.Generator,
    num_batches: int | None = None,
) -> list[torch.Tensor]:
    """One epoch of P×K batches: each is a ``LongTensor`` of ``p * k`` dataset indices.

    Every batch draws ``p`` distinct classes uniformly at random (without replacement within the
    batch), then ``k`` samples of each class, grouped class by class (the first ``k`` indices share
    a class, and so on). A class with at least ``k`` samples gives ``k`` distinct ones; a class with
    fewer than ``k`` samples is sampled with replacement: all of its samples once, then the rest
    drawn at random among them (so a triplet loss still finds positives, some of them duplicates).

    ``num_batches`` defaults to ``len(labels) // (p * k)`` (at least one batch). The result depends
    only on ``labels``, ``p``, ``k``, ``num_batches`` and the state of ``generator``.

    Raises ValueError when ``p < 1`` or ``k < 1`` or the labels have fewer than ``p`` classes. Note
    that triplet losses need ``k >= 2`` (``k = 1`` yields no anchor–positive pair).
    """
    groups = _class_index(np.asarray(labels))
    _check_pk(p, k, len(groups))
    if num_batches is None:
        num_batches = max(1, len(np.asarray(labels)) // (p * k))
    if num_batches < 0:
        raise ValueError(f"num_batches must be >= 0, got {num_batches}")

    batches = []
    for _ in range(num_batches):
        classes = torch.randperm(len(groups), generator=generator)[:p]
        parts = []
        for c in classes.tolist():
            members = groups[c]
            n = len(members)
            if n >= k:
                pick = torch.randperm(n, generator=generator)[:k]
            else:
                extra = torch.randint(n, (k - n,), generator=generator)
                pick = torch.cat([torch.randperm(n, generator=generator), extra])
            parts.append(members[pick])
        batches.append(torch.cat(parts))
    return batches


class PKBatchSampler(Sampler[list[int]]):
    """A batch sampler yielding P×K batches (lists of indices), e.g. for
    ``DataLoader(dataset, batch_sampler=PKBatchSampler(labels, p=8, k=4, seed=0))``.

    Batches are a function of ``(seed, epoch)`` only: iterating twice in the same epoch repeats
    them, so call ``set_epoch(e)`` at the start of each epoch (as with ``DistributedSampler``).
    """

    def __init__(
        self,
        labels: np.ndarray | Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        num_batches: int | None = None,
    ) -> None:
        self.labels = np.asarray(labels)
        self.p, self.k, self.seed = p, k, seed
        _check_pk(p, k, len(_class_index(self.labels)))
        if num_batches is None:
            num_batches = max(1, len(self.labels) // (p * k))
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self.num_batches = num_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        # SeedSequence mixes (seed, epoch) so that nearby pairs give unrelated streams.
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, np.uint64)
        return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))

    def __iter__(self) -> Iterator[list[int]]:
        batches = pk_batches(self.labels, self.p, self.k, self._generator(), self.num_batches)
        for batch in batches:
            yield batch.tolist()

    def __len__(self) -> int:
        return self.num_batches
