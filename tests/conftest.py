from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import settings

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

torch.set_num_threads(2)

# shared CI machines are slow and noisy: a per-example deadline would make tests flaky
settings.register_profile("hashlab", deadline=None, print_blob=True)
settings.load_profile("hashlab")


def tiny_config(tmp_path: Path, **sections) -> dict:
    """A config that trains in about a second on scikit-learn's digits."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "digits", "augment": {"hflip": False, "crop_padding": 1}},
        "model": {"backbone": "small_cnn", "backbone_args": {"width": 8, "feature_dim": 32},
                  "head": "hash", "dim": 16},
        "loss": {"name": "hash_ce", "args": {"quantization_weight": 0.1}},
        "optim": {"name": "sgd", "lr": 0.05},
        "scheduler": {"name": "onecycle"},
        "train": {"epochs": 3, "batch_size": 64, "device": "cpu"},
        "eval": {"protocol": "retrieval"},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    return cfg


needs_fmnist = pytest.mark.skipif(not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                                  reason="Fashion-MNIST not installed (apt-get install "
                                         "dataset-fashion-mnist)")


def assert_crash_resume_is_exact(cfg, straight_dir: Path, crashed_dir: Path,
                                 crash_at: tuple[int, int]) -> None:
    """Train ``cfg`` into ``crashed_dir``, crash at (epoch, step), resume, and check that its
    last checkpoint's model and loss states equal those of the finished run in
    ``straight_dir``, tensor for tensor."""
    from hashlab.train.engine import CHECKPOINT, Trainer, load_checkpoint

    class Crash(Exception):
        pass

    def crash(trainer, epoch, step):
        if (epoch, step) == crash_at:
            raise Crash

    with pytest.raises(Crash):
        Trainer(cfg, crashed_dir, progress=False, callbacks=[crash]).fit()
    Trainer(cfg, crashed_dir, progress=False).fit(resume=True)
    a = load_checkpoint(straight_dir / CHECKPOINT)
    b = load_checkpoint(crashed_dir / CHECKPOINT)
    for part in ("model", "loss"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)


def assert_cli_search_is_brute_force(runner, app, index_ref: str, run: Path, out: Path) -> None:
    """``hashlab search INDEX`` (a folder or a ``milvus://`` reference of ``run``'s train codes):
    top-5 by id and a radius-2 search of test images equal a brute-force ranking by
    (Hamming distance, id)."""
    import json

    import numpy as np

    from hashlab.encode import TrainedRun
    from hashlab.index.codes import hamming_distances

    result = runner.invoke(app, ["search", index_ref, "--ids", "3", "--ids", "7", "--k", "5",
                                 "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["exact"]
    trained = TrainedRun(run)
    train = trained.encode("train", progress=False)
    d = hamming_distances(train.bits[[3, 7]], train.bits)
    for row, query in zip(d, report["results"], strict=True):
        expected = np.lexsort((np.arange(len(row)), row))[:5]
        assert query["ids"] == expected.tolist()
        assert query["distances"] == row[expected].tolist()
    result = runner.invoke(app, ["search", index_ref, "--split", "test", "--limit", "4",
                                 "--radius", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    test = trained.encode("test", progress=False)
    d = hamming_distances(test.bits[:4], train.bits)
    for row, query in zip(d, json.loads(out.read_text())["results"], strict=True):
        expected = sorted((int(row[i]), int(i)) for i in np.flatnonzero(row <= 2))
        assert list(zip(query["distances"], query["ids"], strict=True)) == expected
