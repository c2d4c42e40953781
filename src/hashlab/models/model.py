"""CodeModel = backbone ► head. ``forward`` gives the training-time code, ``encode`` the
deployable one: float32 embeddings or packed uint8 bits (FAISS's bit order)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    @torch.no_grad()
    def encode_all(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Encode a batch in eval mode into (float32 [B, d], packed uint8 bits [B, ceil(k/8)] or
        None for an embedding head). Bit = (pre-activation > 0). Restores the previous mode."""
        was_training = self.training
        self.eval()
        try:
            features = self.backbone(images)
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
    head = head_factory(in_dim=backbone.feature_dim, dim=config.dim, **config.head_args)
    return CodeModel(backbone, head)
