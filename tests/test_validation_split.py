"""train.validation: the seeded stratified held-out split, the per-epoch validation mAP (against
brute-force Hamming ranking + scikit-learn's AP), keeping the best epoch, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.errors import ConfigError
from hashlab.index.codes import unpack_bits
from hashlab.train.engine import BEST_MODEL, CHECKPOINT, FINAL_MODEL, Trainer, load_checkpoint
from hashlab.train.heldout import split_validation
from tests.conftest import tiny_config


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 10, 1])
    train, val = split_validation(labels, 0.2, seed=3)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.bincount(labels[val], minlength=4).tolist() == [10, 6, 2, 0]  # the singleton trains
    again_train, again_val = split_validation(labels, 0.2, seed=3)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, split_validation(labels, 0.2, seed=4)[1])
    assert split_validation(labels, 0.0, seed=0)[1].size == 0


def brute_force_map(bits: np.ndarray, labels: np.ndarray) -> float:
    """Each item against the others: rank by (Hamming distance, index), AP by scikit-learn."""
    n = len(labels)
    aps = []
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        d = (bits[others] != bits[i]).sum(1)
        score = -(d * n + others).astype(np.float64)  # strict order: ties by index
        rel = labels[others] == labels[i]
        if rel.any():
            aps.append(average_precision_score(rel, score))
        else:
            aps.append(0.0)
    return float(np.mean(aps))


def config(tmp_path, **validation):
    return load_config(tiny_config(tmp_path, train={
        "epochs": 3, "validation": {"fraction": 0.2, "seed": 1, **validation}}))


def test_validation_map_each_epoch_matches_brute_force(tmp_path):
    trainer = Trainer(config(tmp_path), tmp_path / "run", progress=False)
    n_val = len(trainer.val_dataset)
    total = n_val + len(trainer.dataset)
    assert len(trainer.train_data.labels) == len(trainer.dataset) == total - n_val
    assert abs(n_val - 0.2 * total) <= 10  # 10 classes, rounded per class
    history = trainer.fit()
    assert all(h["val_mAP"] is not None for h in history)
    run = TrainedRun(tmp_path / "run")
    images, labels = trainer.val_dataset.get_batch(torch.arange(n_val))
    bits = unpack_bits(run.model.encode(images, "binary"), run.model.dim)
    expected = brute_force_map(np.asarray(bits), labels.numpy())
    assert history[-1]["val_mAP"] == pytest.approx(expected, abs=1e-9)
    assert expected > 0.3  # learned: 10 classes give ≈ 0.1 at chance


def test_keep_best_and_resume_exactly(tmp_path):
    class Crash(Exception):
        pass

    def crash(trainer, epoch, step):
        if (epoch, step) == (2, 2):
            raise Crash

    cfg = config(tmp_path, keep="best")
    history = Trainer(cfg, tmp_path / "straight", progress=False).fit()
    best_epoch = 1 + int(np.argmax([h["val_mAP"] for h in history]))
    final = load_checkpoint(tmp_path / "straight" / FINAL_MODEL)
    best = load_checkpoint(tmp_path / "straight" / BEST_MODEL)
    assert final["selected_epoch"]["epoch"] == best["epoch"] == best_epoch
    for key in final["model"]:
        assert torch.equal(final["model"][key], best["model"][key])
    last = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["model"]
    if best_epoch != len(history):  # the last epoch's weights differ from the kept ones
        assert any(not torch.equal(last[k], final["model"][k]) for k in last)

    with pytest.raises(Crash):
        Trainer(cfg, tmp_path / "crashed", progress=False, callbacks=[crash]).fit()
    Trainer(cfg, tmp_path / "crashed", progress=False).fit(resume=True)
    resumed = load_checkpoint(tmp_path / "crashed" / FINAL_MODEL)
    assert resumed["selected_epoch"] == final["selected_epoch"]
    for key in final["model"]:
        assert torch.equal(final["model"][key], resumed["model"][key])


@pytest.mark.parametrize("validation, key", [
    ({"fraction": 1.0}, "train.validation.fraction"),
    ({"fraction": -0.1}, "train.validation.fraction"),
    ({"keep": "best"}, "train.validation.keep"),
    ({"keep": "first", "fraction": 0.1}, "train.validation.keep"),
])
def test_bad_validation_config_names_the_key(tmp_path, validation, key):
    with pytest.raises(ConfigError, match=key):
        load_config(tiny_config(tmp_path, train={"validation": validation}))


def test_split_leaving_too_few_images_is_a_config_error(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"limit_train_samples": 3,
                                                   "validation": {"fraction": 0.1}}))
    with pytest.raises(ConfigError, match="train.validation.fraction"):
        Trainer(cfg, tmp_path / "run", progress=False)
