"""Distributed training (DDP over gloo on CPU): 2 processes equal 1 process on the same global
batch, only rank 0 writes, resume is exact, and ``train.distributed.gather`` gives batch-wide
losses the whole batch.

Every training here runs in spawned processes (``torch.multiprocessing``), the one-process
reference too, so that the test-only backbone (a BatchNorm-free MLP: per-rank BatchNorm
statistics are the one thing DDP on CPU cannot make equal) is registered only there.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import tiny_config

PLUGIN = textwrap.dedent('''
    import torch
    from torch import nn
    from hashlab.models.registry import BACKBONES

    @BACKBONES.register("ddp-test-mlp")
    class Mlp(nn.Module):
        """No BatchNorm, no dropout: DDP on CPU can equal one process exactly."""

        def __init__(self, in_channels=1, feature_dim=32):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, feature_dim),
                                     nn.Tanh())
            self.feature_dim = self.feature_channels = feature_dim

        def forward(self, x):
            return self.net(x)

        def feature_map(self, x):
            return self.forward(x)[:, :, None, None]
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Crash(Exception):
    pass


def _worker(rank: int, world: int, port: int, plugin_dir: str, cfg: dict[str, Any],
            run_dir: str, resume: bool, crash_at: tuple[int, int] | None,
            forbid_writes: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    sys.path.insert(0, plugin_dir)
    import ddp_test_plugin  # noqa: F401  (registers the backbone)

    from hashlab.config import RunConfig, from_dict
    from hashlab.train import engine

    if forbid_writes and rank != 0:
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"rank {rank} wrote a file")

        for name in ("atomic_torch_save", "atomic_write_json", "atomic_write_text",
                     "plot_training_curve"):
            setattr(engine, name, refuse)

    def crash(trainer: Any, epoch: int, step: int) -> None:
        if (epoch, step) == crash_at:
            raise _Crash

    trainer = engine.Trainer(from_dict(RunConfig, cfg), run_dir, progress=False,
                             callbacks=[crash])
    assert (trainer.rank, trainer.world_size) == (rank, world)
    try:
        trainer.fit(resume=resume)
    except _Crash:
        return


def _train(tmp_path: Path, cfg: dict[str, Any], run: str, world: int, *, resume: bool = False,
           crash_at: tuple[int, int] | None = None, forbid_writes: bool = False) -> Path:
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir(exist_ok=True)
    (plugin_dir / "ddp_test_plugin.py").write_text(PLUGIN)
    run_dir = tmp_path / run
    mp.start_processes(_worker, nprocs=world, start_method="spawn", args=(
        world, _free_port(), str(plugin_dir), cfg, str(run_dir), resume, crash_at,
        forbid_writes))
    return run_dir


def _config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    base = {"model": {"backbone": "ddp-test-mlp", "backbone_args": {"feature_dim": 32},
                      "head": "embedding", "dim": 16},
            "data": {"dataset": "digits", "augment": {"hflip": False, "crop_padding": 0}},
            "loss": {"name": "cosface", "args": {}},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "scheduler": {"name": "cosine"},
            "train": {"epochs": 2, "batch_size": 64, "device": "cpu",
                      "max_batches_per_epoch": 6}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return tiny_config(tmp_path, **base)


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    from hashlab.train.engine import FINAL_MODEL, load_checkpoint

    state = load_checkpoint(run_dir / FINAL_MODEL)
    return {f"{part}.{k}": v for part in ("model", "loss") for k, v in state[part].items()}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def _moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    """CosFace: the model's and the loss's class weights are both averaged over the ranks,
    and only rank 0 writes (the other rank's writers raise)."""
    cfg = _config(tmp_path)
    one = _final(_train(tmp_path, cfg, "one", 1))
    two_dir = _train(tmp_path, cfg, "two", 2, forbid_writes=True)
    two = _final(two_dir)
    _assert_close(one, two)
    # training moved the weights (an equality of untouched weights would prove nothing)
    init = _final(_train(tmp_path, {**cfg, "train": {**cfg["train"], "epochs": 1,
                                                      "max_batches_per_epoch": 1}}, "init", 1))
    assert _moved(one, init) > 1e-3
    import json

    history = json.loads((two_dir / "metrics.json").read_text())["history"]
    reference = json.loads((tmp_path / "one" / "metrics.json").read_text())["history"]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in reference],
                                                         rel=1e-4)
    assert [h["accuracy"] for h in history] == [h["accuracy"] for h in reference]


def test_ddp_resume_is_exact(tmp_path):
    cfg = _config(tmp_path)
    straight = _train(tmp_path, cfg, "straight", 2)
    crashed = _train(tmp_path, cfg, "crashed", 2, crash_at=(1, 2))
    from hashlab.train.engine import CHECKPOINT, FINAL_MODEL, load_checkpoint

    assert not (crashed / FINAL_MODEL).exists()
    assert load_checkpoint(crashed / CHECKPOINT)["epoch"] == 1
    _train(tmp_path, cfg, "crashed", 2, resume=True)
    a, b = _final(straight), _final(crashed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # a DDP checkpoint is the same file as a one-process one: resuming it in one process
    # continues the same training
    crashed1 = _train(tmp_path, cfg, "crashed1", 2, crash_at=(1, 2))
    _train(tmp_path, cfg, "crashed1", 1, resume=True)
    _assert_close(a, _final(crashed1))


def test_gather_gives_a_batch_wide_loss_the_whole_batch(tmp_path):
    """A triplet loss mines over the batch: with ``gather`` 2 processes equal 1; without it
    each rank mines in its own half, which is another training."""
    loss = {"name": "triplet", "args": {"margin": 0.2}}
    sampler = {"name": "pk", "p": 8, "k": 4}
    cfg = _config(tmp_path, loss=loss, train={"sampler": sampler})
    one = _final(_train(tmp_path, cfg, "one", 1))
    gathered = _config(tmp_path, loss=loss, train={"sampler": sampler,
                                                   "distributed": {"gather": True}})
    _assert_close(one, _final(_train(tmp_path, gathered, "gathered", 2)))
    assert _moved(one, _final(_train(tmp_path, cfg, "local", 2))) > 1e-4


def test_uneven_global_batch_is_refused(tmp_path):
    from hashlab.config import RunConfig, from_dict

    cfg = from_dict(RunConfig, _config(tmp_path, model={"backbone": "small_cnn",
                                                        "backbone_args": {"width": 4}},
                                       train={"batch_size": 63}))
    from hashlab.train.engine import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.batch_size = cfg, 63
    trainer.rank, trainer.world_size = 0, 2
    trainer.model = trainer.loss_fn = torch.nn.Identity()
    trainer.learned_augment = trainer.objective = None
    from hashlab.errors import ConfigError

    with pytest.raises(ConfigError, match="does not split evenly over 2 processes"):
        trainer._wrap_distributed()


def test_train_nproc_launches_torchrun(tmp_path):
    """``hashlab train --nproc 2`` runs the command under torchrun: a finished run, written
    once, whose weights equal the in-process 2-rank training of the same config."""
    import subprocess

    import yaml

    cfg = _config(tmp_path, train={"epochs": 1})
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "ddp_test_plugin.py").write_text(PLUGIN)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "hashlab", "--plugin", "ddp_test_plugin", "train", str(path),
         "--nproc", "2", "--run-dir", str(tmp_path / "cli"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training tiny on 2 processes" in out.stdout
    assert out.stdout.count("done:") == 1  # rank 0 reports, the other rank is quiet
    _assert_close(_final(tmp_path / "cli"), _final(_train(tmp_path, cfg, "spawned", 2)))


def test_sharded_classifier_trains_like_one_process(tmp_path):
    """``partial-fc`` under DDP shards its class weights over the ranks (no DDP wrapper, no
    averaging): with r = 1 two processes train the weights of one; the checkpoint holds the
    whole matrix, so model.pt is the same file either way."""
    loss = {"name": "partial-fc", "args": {"method": "cosface", "sample_rate": 1.0}}
    cfg = _config(tmp_path, loss=loss)
    one = _final(_train(tmp_path, cfg, "one", 1))
    two = _final(_train(tmp_path, cfg, "two", 2, forbid_writes=True))
    assert one["loss.weight"].shape == (10, 16)
    sampler = {k for k in one if k.startswith("loss.sampler_")}  # the sampler's own record
    assert two["loss.sampler_world_size"] == 2
    _assert_close({k: v for k, v in one.items() if k not in sampler},
                  {k: v for k, v in two.items() if k not in sampler})


def test_sharded_sampled_classifier_resumes_exactly(tmp_path):
    """r < 1: each rank samples its own shard; its sampler and its optimiser state (momentum
    of its own rows) are saved per rank, so a crashed 2-process run resumes to the same
    weights, and resuming it with another number of processes is refused."""
    loss = {"name": "partial-fc", "args": {"method": "cosface", "sample_rate": 0.5}}
    cfg = _config(tmp_path, loss=loss)
    straight = _final(_train(tmp_path, cfg, "straight", 2))
    crashed = _train(tmp_path, cfg, "crashed", 2, crash_at=(1, 2))
    _train(tmp_path, cfg, "crashed", 2, resume=True)
    resumed = _final(crashed)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    _train(tmp_path, cfg, "again", 2, crash_at=(1, 2))
    with pytest.raises(mp.ProcessRaisedException, match="resume it with 2 process"):
        _train(tmp_path, cfg, "again", 1, resume=True)
