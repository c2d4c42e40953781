"""Models: backbones (feature extractors), heads (embedding or hash layer) and CodeModel.

Backbones and heads register themselves in :mod:`hashlab.models.registry` from their own
modules (auto-discovered); see ``docs/data-and-models.md``.
"""

from hashlab.models.backbones import CifarResNet18, SmallCNN
from hashlab.models.heads import EmbeddingHead, HashHead
from hashlab.models.model import CodeModel, build_model
from hashlab.models.registry import BACKBONES, HEADS

__all__ = ["BACKBONES", "HEADS", "CifarResNet18", "CodeModel", "EmbeddingHead", "HashHead",
           "SmallCNN", "build_model"]
