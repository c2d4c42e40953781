"""The typed YAML config of a cross-modal run: :class:`CrossModalConfig`.

Validated with the project's :func:`hashlab.config.from_dict` machinery: unknown keys, wrong
types and out-of-range values raise :class:`~hashlab.errors.ConfigError` naming the key
(``text.dropout``, ``method.args.gamma``, ...). A config file looks like
``src/hashlab/configs/fmnist/dcmh-64.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hashlab.config import (
    MAX_DIM,
    MAX_THREADS,
    OptimConfig,
    apply_overrides,
    check_field,
    check_seed,
    coerce_args,
    from_dict,
    is_folder_name,
    read_config_mapping,
)
from hashlab.errors import ConfigError, HashlabError, summary

__all__ = [
    "CrossModalConfig",
    "CrossModalOptimConfig",
    "CrossModalTrainConfig",
    "ImageTowerConfig",
    "MethodConfig",
    "PairedDataConfig",
    "TextTowerConfig",
    "load_crossmodal_config",
]


@dataclass
class PairedDataConfig:
    """The paired dataset: ``load_paired(dataset, "train", root=root, **args)``."""

    dataset: str = "fmnist-captions"
    root: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageTowerConfig:
    backbone: str = "small-cnn"  # a name in BACKBONES (hashlab list backbones)
    backbone_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextTowerConfig:
    """The MLP over the bag of words: hidden sizes, output features, dropout after hidden
    layers."""

    hidden: list[int] = field(default_factory=lambda: [512])
    feature_dim: int = 512
    dropout: float = 0.0

    def validate(self, path: str) -> None:
        for i, h in enumerate(self.hidden):
            check_field(0 < h <= MAX_DIM, f"{path}.hidden[{i}]", f"must be in 1..{MAX_DIM}")
        check_field(0 < self.feature_dim <= MAX_DIM, f"{path}.feature_dim",
                    f"must be in 1..{MAX_DIM}")
        check_field(0.0 <= self.dropout < 1.0, f"{path}.dropout", "must be in [0, 1)")


@dataclass
class MethodConfig:
    name: str = "dcmh"  # a name in CROSSMODAL_METHODS (hashlab list cross-modal-methods)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class CrossModalOptimConfig(OptimConfig):
    """The run's optimiser (one per parameter group of the method, all alike) and its
    per-epoch learning-rate schedule: ``constant``, or ``linear`` / ``cosine`` from ``lr`` at
    the first epoch to ``final_lr_fraction × lr`` at the last (DCMH's code decays linearly)."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    final_lr_fraction: float = 0.01

    def validate(self, path: str) -> None:
        super().validate(path)
        check_field(0 < self.final_lr_fraction <= 1, f"{path}.final_lr_fraction",
               "must be in (0, 1]")


@dataclass
class CrossModalTrainConfig:
    epochs: int = 20
    batch_size: int = 128
    device: str = "auto"
    threads: int | None = None
    limit_train_samples: int | None = None  # train on a seeded subset of this many items

    def validate(self, path: str) -> None:
        check_field(self.epochs > 0, f"{path}.epochs", "must be > 0")
        check_field(self.batch_size > 1, f"{path}.batch_size", "must be > 1")
        check_field(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"{path}.device", f"must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        check_field(self.threads is None or 0 < self.threads <= MAX_THREADS, f"{path}.threads",
               f"must be in 1..{MAX_THREADS} or null")
        check_field(self.limit_train_samples is None or self.limit_train_samples > 1,
               f"{path}.limit_train_samples", "must be > 1 or null")


@dataclass
class CrossModalConfig:
    """Everything a cross-modal training run needs (see ``docs/crossmodal.md``)."""

    name: str = "crossmodal"
    seed: int = 0
    plugins: list[str] = field(default_factory=list)  # modules to import first (methods, ...)
    output_dir: str = "runs"
    data: PairedDataConfig = field(default_factory=PairedDataConfig)
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    dim: int = 64  # bits of the shared Hamming space
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: CrossModalOptimConfig = field(default_factory=CrossModalOptimConfig)
    train: CrossModalTrainConfig = field(default_factory=CrossModalTrainConfig)

    def validate(self, path: str) -> None:
        """Check the names against the registries and the method's and backbone's arguments
        (converted to their parameters' types); every error names its key."""
        from hashlab.crossmodal.registry import CROSSMODAL_METHODS
        from hashlab.models.registry import BACKBONES
        from hashlab.registry import check_kwargs, load_plugins

        check_field(is_folder_name(self.name), "name",
               f"must be a single folder name (not empty, not '.' or '..', no '/' or '\\'), got "
               f"{self.name!r}")
        check_seed(self.seed, "seed")
        check_field(0 < self.dim <= MAX_DIM, "dim", f"must be in 1..{MAX_DIM}")
        load_plugins(self.plugins)
        method = CROSSMODAL_METHODS.get(self.method.name, key="method.name")
        backbone = BACKBONES.get(self.image.backbone, key="image.backbone")
        self.method.args = coerce_args(method, self.method.args, "method.args")
        check_kwargs(method, self.method.args, "method.args")
        self.image.backbone_args = coerce_args(backbone, self.image.backbone_args,
                                               "image.backbone_args")
        check_kwargs(backbone, self.image.backbone_args, "image.backbone_args")
        try:  # a value the method refuses (gamma: -1, ...) is a config error now
            method(dim=self.dim, **self.method.args)
        except HashlabError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"method.args: {self.method.name!r} refuses {self.method.args} "
                              f"({summary(exc)})") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def is_crossmodal_config(data: Mapping[str, Any]) -> bool:
    """Whether a config mapping describes a cross-modal run (it has a ``method`` section;
    single-modality configs have ``loss``)."""
    return "method" in data and "loss" not in data


def load_crossmodal_config(source: str | Path | Mapping[str, Any],
                           overrides: list[str] | None = None) -> CrossModalConfig:
    """A :class:`CrossModalConfig` from a YAML file or a mapping, then ``key=value``
    overrides with dotted keys (``["train.epochs=2", "method.args.gamma=0.5"]``)."""
    data = read_config_mapping(source)
    return from_dict(CrossModalConfig, apply_overrides(dict(data), overrides or []))
