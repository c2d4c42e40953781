"""P×K batch sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hashlab.data.sampler import PKBatchSampler, pk_batches


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_labels(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # non-contiguous label values, unequal class sizes, shuffled order
    labels = np.repeat([3, 7, 10, 42, 99, 5], [30, 12, 25, 8, 40, 17])
    return rng.permutation(labels)


def as_tuples(batches):
    return [tuple(b.tolist()) for b in batches]


@pytest.mark.parametrize("p,k", [(2, 4), (4, 2), (6, 3), (3, 1)])
def test_every_batch_is_p_classes_by_k_samples(p, k):
    labels = make_labels()
    batches = pk_batches(labels, p, k, gen(0))
    assert len(batches) == len(labels) // (p * k)
    for batch in batches:
        assert batch.dtype == torch.int64 and batch.shape == (p * k,)
        got = labels[batch.numpy()]
        counts = Counter(got.tolist())
        assert len(counts) == p and set(counts.values()) == {k}
        # grouped class by class, k at a time
        assert all(len(set(got[i * k:(i + 1) * k].tolist())) == 1 for i in range(p))
        # classes with at least k samples give k distinct indices
        assert len(set(batch.tolist())) == p * k
    # over the epoch every class shows up
    seen = {int(labels[i]) for b in batches for i in b.tolist()}
    assert seen == set(np.unique(labels).tolist())


def test_deterministic_per_seed_and_seeds_differ():
    labels = make_labels()
    a = pk_batches(labels, 3, 4, gen(5))
    b = pk_batches(labels, 3, 4, gen(5))
    c = pk_batches(labels, 3, 4, gen(6))
    assert as_tuples(a) == as_tuples(b)
    assert as_tuples(a) != as_tuples(c)
    # the same generator, continued, gives a different epoch
    g = gen(5)
    first, second = pk_batches(labels, 3, 4, g), pk_batches(labels, 3, 4, g)
    assert as_tuples(first) == as_tuples(a) and as_tuples(second) != as_tuples(first)


def test_num_batches_and_list_input():
    labels = make_labels().tolist()
    assert len(pk_batches(labels, 2, 2, gen(0), num_batches=7)) == 7
    assert pk_batches(labels, 2, 2, gen(0), num_batches=0) == []
    # fewer samples than one batch: still one batch by default
    assert len(pk_batches([0, 0, 1, 1], 2, 4, gen(0))) == 1


def test_small_classes_are_sampled_with_replacement():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1)
    for batch in pk_batches(labels, 3, 4, gen(1), num_batches=20):
        got = labels[batch.numpy()]
        assert Counter(got.tolist()) == {0: 4, 1: 4, 2: 4}
        idx = batch.tolist()
        # every sample of a small class is present (then duplicates fill up to k)
        assert {10, 11} <= set(idx) and idx.count(12) == 4
        group0 = [g for g in (idx[:4], idx[4:8], idx[8:]) if labels[g[0]] == 0][0]
        assert len(set(group0)) == 4  # class 0 has enough samples: no duplicate


def test_classes_are_drawn_roughly_uniformly():
    labels = np.repeat(np.arange(10), [100] + [5] * 9)
    counts = Counter()
    for batch in pk_batches(labels, 2, 2, gen(3), num_batches=2000):
        counts.update(set(labels[batch.numpy()].tolist()))
    # each class appears in ~2/10 of the batches regardless of its size
    assert all(300 < counts[c] < 500 for c in range(10)), counts


@pytest.mark.parametrize("p,k,labels,match", [
    (0, 2, [0, 1], "p and k"),
    (2, 0, [0, 1], "p and k"),
    (-1, 2, [0, 1], "p and k"),
    (3, 2, [0, 0, 1, 1], "at least p=3 distinct classes"),
    (1, 2, [], "at least p=1"),
])
def test_errors(p, k, labels, match):
    with pytest.raises(ValueError, match=match):
        pk_batches(np.array(labels, dtype=int), p, k, gen(0))
    with pytest.raises(ValueError, match=match):
        PKBatchSampler(np.array(labels, dtype=int), p, k, seed=0)


def test_bad_shapes_and_counts():
    with pytest.raises(ValueError, match="one-dimensional"):
        pk_batches(np.zeros((3, 2)), 1, 2, gen(0))
    with pytest.raises(ValueError, match="num_batches"):
        pk_batches(np.array([0, 1]), 1, 2, gen(0), num_batches=-1)


def test_batch_sampler_with_dataloader_and_epochs():
    labels = make_labels()
    sampler = PKBatchSampler(labels, p=4, k=3, seed=0)
    assert len(sampler) == len(labels) // 12
    data = TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    loader = DataLoader(data, batch_sampler=sampler)
    epoch0 = [idx.tolist() for idx, _ in loader]
    assert len(epoch0) == len(sampler)
    for idx, y in loader:
        assert Counter(y.tolist()).most_common()[-1][1] == 3 and len(set(y.tolist())) == 4
        assert torch.equal(torch.as_tensor(labels)[idx], y)
    assert [idx.tolist() for idx, _ in loader] == epoch0  # same epoch → same batches
    sampler.set_epoch(1)
    epoch1 = [idx.tolist() for idx, _ in loader]
    assert epoch1 != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    other = PKBatchSampler(labels, p=4, k=3, seed=1)
    assert list(other) != epoch0
    assert len(PKBatchSampler(labels, 2, 2, seed=0, num_batches=5)) == 5
