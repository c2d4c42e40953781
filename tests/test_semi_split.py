"""The low-label split (data.semi): exact per-class label counts, disjoint covering parts,
seeded, and a plain run that trains on the labelled part only."""

from __future__ import annotations

import numpy as np
import pytest

from hashlab.config import RunConfig, from_dict
from hashlab.data.semi import semi_split
from hashlab.errors import ConfigError
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config


def test_split_counts_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), [30, 40, 50, 60, 70])
    split = semi_split(labels, 4, 25, seed=3)
    assert np.bincount(labels[split.labelled]).tolist() == [4] * 5
    assert len(split.validation) == 25
    parts = np.concatenate([split.labelled, split.validation, split.unlabelled])
    assert sorted(parts.tolist()) == list(range(len(labels)))  # disjoint and covering
    again = semi_split(labels, 4, 25, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(
        (split.labelled, split.validation), (again.labelled, again.validation), strict=True))
    other = semi_split(labels, 4, 25, seed=4)
    assert not np.array_equal(split.labelled, other.labelled)
    assert split.summary() == {"labelled": 20, "validation": 25, "unlabelled": 205}


def test_split_refuses_impossible_requests():
    labels = np.repeat(np.arange(3), [2, 10, 10])
    with pytest.raises(ConfigError, match="class 0 has only 2"):
        semi_split(labels, 3, 0, seed=0)
    with pytest.raises(ConfigError, match="only 16 are left"):
        semi_split(labels, 2, 17, seed=0)


def test_a_plain_run_trains_on_the_labelled_part(tmp_path):
    cfg = from_dict(RunConfig, tiny_config(
        tmp_path, data={"semi": {"labels_per_class": 7, "validation": 100, "seed": 1}},
        train={"batch_size": 16}))
    trainer = Trainer(cfg, progress=False)
    labels = np.asarray(trainer.dataset.labels)
    assert len(labels) == 70 and np.bincount(labels).tolist() == [7] * 10
    with pytest.raises(ConfigError, match="data.semi.labels_per_class"):
        from_dict(RunConfig, tiny_config(tmp_path, data={"semi": {"labels_per_class": 0}}))
