from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hashlab.config import load_config
from hashlab.encode import TrainedRun
from hashlab.errors import CheckpointError, ConfigError
from hashlab.eval.metrics import retrieval_metrics
from hashlab.eval.protocols import evaluate_run
from hashlab.train.engine import CHECKPOINT, Trainer, load_checkpoint
from tests.conftest import needs_fmnist, tiny_config


class Crash(Exception):
    pass


def crash_at(epoch: int, step: int):
    def callback(trainer, e, s):
        if (e, s) == (epoch, step):
            raise Crash(f"simulated crash at epoch {e}, step {s}")
    return callback


def _weights(run_dir):
    return load_checkpoint(run_dir / "model.pt")["model"]


def test_resume_after_crash_gives_identical_weights(tmp_path):
    cfg = load_config(tiny_config(tmp_path))
    Trainer(cfg, tmp_path / "straight", progress=False).fit()

    crashed = Trainer(cfg, tmp_path / "crashed", progress=False, callbacks=[crash_at(1, 5)])
    with pytest.raises(Crash):
        crashed.fit()
    state = load_checkpoint(tmp_path / "crashed" / CHECKPOINT)
    assert state["epoch"] == 1  # the crash mid-epoch 2 left epoch 1's checkpoint intact
    assert not (tmp_path / "crashed" / "model.pt").exists()
    Trainer(cfg, tmp_path / "crashed", progress=False).fit(resume=True)

    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "crashed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    hist_a = json.loads((tmp_path / "straight" / "metrics.json").read_text())["history"]
    hist_b = json.loads((tmp_path / "crashed" / "metrics.json").read_text())["history"]
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]


def test_different_seeds_give_different_weights(tmp_path):
    # guards the test above: identical weights must come from determinism, not from a no-op
    Trainer(load_config(tiny_config(tmp_path, train={"epochs": 1})), tmp_path / "a",
            progress=False).fit()
    Trainer(load_config(tiny_config(tmp_path, seed=1, train={"epochs": 1})), tmp_path / "b",
            progress=False).fit()
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert not torch.equal(a["head.proj.weight"], b["head.proj.weight"])


def test_run_directory_outputs_and_learning(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 4}))
    trainer = Trainer(cfg, progress=False)
    history = trainer.fit()
    run = tmp_path / "runs" / "tiny"
    for name in ("config.yaml", "checkpoint.pt", "model.pt", "metrics.json", "curve.png"):
        assert (run / name).is_file(), name
    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(run / "config.yaml") == cfg
    assert len(history) == 4 and history[-1]["loss"] < history[0]["loss"]
    result = evaluate_run(TrainedRun(run), "retrieval", progress=False)
    # 10 balanced classes: a random code scores mAP ≈ 0.1; a trained one far above
    assert result["metrics"]["float"]["mAP@all"] > 0.5
    assert result["metrics"]["binary"]["mAP@all"] > 0.4


def test_refuses_to_overwrite_and_checks_resume(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 1}))
    Trainer(cfg, tmp_path / "r", progress=False).fit()
    with pytest.raises(CheckpointError, match="already holds a run"):
        Trainer(cfg, tmp_path / "r", progress=False).fit()
    other = load_config(tiny_config(tmp_path, train={"epochs": 1}, seed=5))
    with pytest.raises(CheckpointError, match="config differs"):
        Trainer(other, tmp_path / "r", progress=False).fit(resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint.pt"):
        Trainer(cfg, tmp_path / "empty", progress=False).fit(resume=True)


def test_resumes_a_checkpoint_written_before_a_config_option_existed(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 2}))
    with pytest.raises(Crash):
        Trainer(cfg, tmp_path / "r", progress=False, callbacks=[crash_at(1, 2)]).fit()
    ckpt = tmp_path / "r" / CHECKPOINT
    state = load_checkpoint(ckpt)
    del state["config"]["train"]["validation"]  # an option added after this run was started
    torch.save(state, ckpt)
    history = Trainer(cfg, tmp_path / "r", progress=False).fit(resume=True)
    assert len(history) == 2
    state = load_checkpoint(ckpt)
    state["config"]["train"]["validation"] = {"fraction": 0.5}  # a real difference still counts
    torch.save(state, ckpt)
    with pytest.raises(CheckpointError, match="train.validation"):
        Trainer(cfg, tmp_path / "r", progress=False).fit(resume=True)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 1}))
    Trainer(cfg, tmp_path / "r", progress=False).fit()
    ckpt = tmp_path / "r" / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    damaged = r"checkpoint.pt: (not a readable checkpoint|the checkpoint is corrupt)"
    with pytest.raises(CheckpointError, match=damaged):
        Trainer(cfg, tmp_path / "r", progress=False).fit(resume=True)


def test_codes_match_model_and_cache_invalidates(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 1}))
    Trainer(cfg, tmp_path / "r", progress=False).fit()
    run = TrainedRun(tmp_path / "r")
    codes = run.encode("test", batch_size=100, progress=False)
    ds = run.load_split("test")
    images, labels = ds.get_batch(torch.arange(len(ds)))
    with torch.no_grad():
        pre = run.model.head.pre_activation(run.model.backbone(images)).numpy()
    expected_bits = np.packbits(pre > 0, axis=1, bitorder="little")
    np.testing.assert_array_equal(codes.bits, expected_bits)
    np.testing.assert_allclose(codes.float, np.tanh(pre), atol=1e-5)
    np.testing.assert_array_equal(codes.labels, labels.numpy())
    assert codes.nbits == 16 and codes.bits.shape == (len(ds), 2)
    # a cached encode is reused; a re-trained model invalidates it
    again = run.encode("test", progress=False)
    np.testing.assert_array_equal(again.bits, codes.bits)


@needs_fmnist
def test_openset_protocol_trains_on_seen_classes_only(tmp_path):
    cfg = load_config(tiny_config(
        tmp_path, data={"dataset": "fashion-mnist", "classes": [0, 1, 2, 3, 4, 5]},
        train={"epochs": 1, "max_batches_per_epoch": 10}, eval={"protocol": "fmnist-openset"}))
    trainer = Trainer(cfg, tmp_path / "open", progress=False)
    assert trainer.num_classes == 6 and len(trainer.dataset) == 36_000
    assert set(np.unique(trainer.dataset.labels)) == set(range(6))
    trainer.fit()
    result = evaluate_run(TrainedRun(tmp_path / "open"), "fmnist-openset", progress=False)
    assert result["n_queries"] == 4000  # the 1,000 test images of each unseen class 6-9
    for kind in ("float", "binary"):
        m = result["metrics"][kind]
        assert m["n_pairs"] == 6000 and m["n_ranked"] == 3999  # each query ranks all others
        assert 0.25 < m["mAP@all"] <= 1 and 0.5 <= m["verification_accuracy"] <= 1

    # fmnist-unseen: 1,000 seeded test queries of classes 6-9 against their 24,000 training
    # images; oracle: the exhaustive numpy ranking of retrieval_metrics on the same selection
    run = TrainedRun(tmp_path / "open")
    unseen = evaluate_run(run, "fmnist-unseen", progress=False)
    assert (unseen["n_queries"], unseen["n_database"]) == (1000, 24_000)
    train, test = run.encode("train", progress=False), run.encode("test", progress=False)
    db = np.isin(train.labels, range(6, 10))
    candidates = np.flatnonzero(np.isin(test.labels, range(6, 10)))
    q = candidates[np.random.default_rng(0).choice(len(candidates), 1000, replace=False)]
    want = retrieval_metrics(test.bits[q], train.bits[db], test.labels[q], train.labels[db],
                             kind="binary", nbits=16)
    for key in ("mAP@all", "mAP@1000", "P@100"):
        assert unseen["metrics"]["binary"][key] == pytest.approx(want[key], abs=1e-12)


def test_selecting_absent_classes_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.classes: classes \[99\] have no training"):
        Trainer(load_config(tiny_config(tmp_path, data={"classes": [0, 99]})), progress=False)


def test_pk_sampler_batches_hold_p_classes_of_k(tmp_path):
    seen = []
    cfg = load_config(tiny_config(tmp_path, loss={"name": "triplet", "args": {}},
                                  train={"epochs": 1, "sampler": {"name": "pk", "p": 4, "k": 8}}))
    trainer = Trainer(cfg, tmp_path / "pk", progress=False)
    batches = trainer._epoch_batches(trainer._epoch_generator(0))
    for idx in batches:
        labels = trainer.dataset.labels[idx.numpy()]
        classes, counts = np.unique(labels, return_counts=True)
        seen.append((len(classes), set(counts.tolist())))
    assert len(batches) == len(trainer.dataset) // 32
    assert all(s == (4, {8}) for s in seen)
    trainer.fit()  # a loss without a classifier trains (no accuracy is logged)
    assert trainer.history[0]["accuracy"] is None
    with pytest.raises(ConfigError, match="train.sampler.p"):
        Trainer(load_config(tiny_config(tmp_path, train={"sampler": {"name": "pk", "p": 11}})),
                progress=False)


def test_triplet_diagram_is_recorded_during_training(tmp_path):
    cfg = load_config(tiny_config(tmp_path, train={"epochs": 1, "triplet_diagram": True}))
    trainer = Trainer(cfg, tmp_path / "d", progress=False)
    trainer.fit()
    summary = json.loads((tmp_path / "d" / "metrics.json").read_text())["triplet_diagram"]
    # one point per anchor that has a positive and a negative in its batch
    expected = 0
    for idx in trainer._epoch_batches(trainer._epoch_generator(0)):
        labels = trainer.dataset.labels[idx.numpy()]
        counts = {c: (labels == c).sum() for c in labels}
        expected += sum(1 for c in labels if 1 < counts[c] < len(labels))
    assert summary["num_triplets"] == expected > 0
    assert 0.0 <= summary["fraction_hard"] <= 1.0
    assert (tmp_path / "d" / "triplet_diagram.png").read_bytes()[:4] == b"\x89PNG"
