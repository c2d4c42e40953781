"""CodeModel = backbone ► head. ``forward`` gives the training-time code, ``encode`` the
deployable one: float32 embeddings or packed uint8 bits (FAISS's bit order)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from hashlab.errors import ConfigError
from hashlab.index.codes import pack_bits
from hashlab.models.registry import BACKBONES, HEADS
from hashlab.registry import check_kwargs

if TYPE_CHECKING:
    from hashlab.config import ModelConfig


class CodeModel(nn.Module):
    """An image → code network: ``backbone`` (features) followed by ``head`` (code)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def dim(self) -> int:
        return self.head.dim

    @property
    def binary(self) -> bool:
        return bool(self.head.binary)

    @property
    def takes_labels(self) -> bool:
        """Whether training passes the batch's labels to the head (``head.takes_labels``)."""
        return bool(getattr(self.head, "takes_labels", False))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head reads: the backbone's feature vector, or its last feature map for a
        head with ``takes_feature_map``."""
        if getattr(self.head, "takes_feature_map", False):
            return self.backbone.feature_map(images)
        return self.backbone(images)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None
                ) -> torch.Tensor:
        features = self.features(images)
        if labels is not None and self.takes_labels:
            return self.head(features, labels=labels)
        return self.head(features)

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Encode a batch in eval mode into (float32 [B, d], packed uint8 bits [B, ceil(k/8)] or
        None for an embedding head). Bit = (pre-activation > 0). Restores the previous mode."""
        was_training = self.training
        self.eval()
        try:
            features = self.features(images)
            floats = self.head(features).float().cpu().numpy()
            bits = pack_bits(self.head.pre_activation(features) > 0) if self.binary else None
            return floats, bits
        finally:
            self.train(was_training)

    def encode(self, images: torch.Tensor, kind: Literal["float", "binary"] = "float"
               ) -> np.ndarray:
        """Encode a batch: ``float`` → float32 [B, d]; ``binary`` → packed uint8 [B, ceil(k/8)]."""
        if kind not in ("float", "binary"):
            raise ValueError(f"kind must be 'float' or 'binary', got {kind!r}")
        if kind == "binary" and not self.binary:
            raise ValueError("this model has an embedding head; binary codes need head: hash")
        floats, bits = self.encode_all(images)
        return floats if kind == "float" else bits  # type: ignore[return-value]


def build_model(config: ModelConfig, in_channels: int) -> CodeModel:
    """Build a :class:`CodeModel` from its config; bad backbone args raise ConfigError."""
    factory = BACKBONES.get(config.backbone, key="model.backbone")
    check_kwargs(factory, config.backbone_args, "model.backbone_args")
    backbone = factory(in_channels=in_channels, **config.backbone_args)
    head_factory = HEADS.get(config.head, key="model.head")
    check_kwargs(head_factory, config.head_args, "model.head_args")
    in_dim = backbone.feature_dim
    if getattr(head_factory, "takes_feature_map", False):
        if not callable(getattr(backbone, "feature_map", None)):
            raise ConfigError(f"model.head {config.head!r} works on feature maps, but backbone "
                              f"{config.backbone!r} has no feature_map()")
        in_dim = backbone.feature_channels
    head = head_factory(in_dim=in_dim, dim=config.dim, **config.head_args)
    return CodeModel(backbone, head)
