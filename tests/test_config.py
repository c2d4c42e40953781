from __future__ import annotations

import pytest
import yaml

from hashlab.cli import CONFIG_ROOT
from hashlab.config import RunConfig, load_config
from hashlab.errors import ConfigError
from hashlab.train.engine import build_loss


@pytest.mark.parametrize("data, key", [
    ({"optim": {"lrr": 0.1}}, "optim.lrr"),
    ({"data": {"augment": {"flip": True}}}, "data.augment.flip"),
    ({"bogus": 1}, "bogus"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"batch_size": True}}, "train.batch_size"),
    ({"optim": {"lr": -1}}, "optim.lr"),
    ({"optim": {"name": "rmsprop"}}, "optim.name"),
    ({"model": {"head": "conv"}}, "model.head"),
    ({"model": "small"}, "model"),
    ({"seed": None}, "seed"),
    ({"train": {"device": "tpu"}}, "train.device"),
    ({"scheduler": {"warmup_fraction": 1.5}}, "scheduler.warmup_fraction"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        load_config(data)
    assert str(info.value).startswith(f"{key}:"), str(info.value)


def test_defaults_and_coercion():
    cfg = load_config({"optim": {"lr": "5e-4", "weight_decay": 0}})
    assert cfg.optim.lr == pytest.approx(5e-4) and isinstance(cfg.optim.weight_decay, float)
    assert cfg.train.threads is None and cfg.model.head == "hash"


def test_yaml_round_trip(tmp_path):
    cfg = load_config({"name": "x", "train": {"epochs": 3}, "loss": {"args": {"bias": False}}})
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_overrides_apply_and_validate():
    cfg = load_config({}, ["train.epochs=3", "data.augment.hflip=true", "optim.lr=0.2"])
    assert (cfg.train.epochs, cfg.data.augment.hflip, cfg.optim.lr) == (3, True, 0.2)
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config({}, ["train.epochz=3"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config({}, ["train.epochs"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_loss_and_backbone_args_are_checked():
    cfg = load_config({"loss": {"name": "hash_ce", "args": {"quantisation_weight": 1}}})
    with pytest.raises(ConfigError, match=r"loss.args.quantisation_weight"):
        build_loss(cfg, num_classes=10)
    with pytest.raises(ConfigError, match="unknown loss 'arcface2'"):
        build_loss(load_config({"loss": {"name": "arcface2"}}), num_classes=10)
    from hashlab.models import build_model

    cfg = load_config({"model": {"backbone_args": {"depth": 3}}})
    with pytest.raises(ConfigError, match=r"model.backbone_args.depth"):
        build_model(cfg.model, in_channels=1)


@pytest.mark.parametrize("path", sorted(CONFIG_ROOT.rglob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_presets_are_valid(path):
    from hashlab.crossmodal.config import (
        CrossModalConfig,
        is_crossmodal_config,
        load_crossmodal_config,
    )

    data = yaml.safe_load(path.read_text())
    if is_crossmodal_config(data):  # image–text runs (docs/crossmodal.md)
        assert isinstance(load_crossmodal_config(path), CrossModalConfig)
        with pytest.raises(ConfigError):  # and they are not single-modality configs
            load_config(path)
        return
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert data["name"] == cfg.name
