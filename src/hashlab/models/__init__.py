"""Models: backbones (feature extractors), heads (embedding or hash layer) and CodeModel."""

from hashlab.models import dph  # noqa: F401  (registers the dph head)
from hashlab.models.backbones import BACKBONES, CifarResNet18, SmallCNN
from hashlab.models.heads import HEADS, EmbeddingHead, HashHead
from hashlab.models.model import CodeModel, build_model

__all__ = ["BACKBONES", "HEADS", "CifarResNet18", "CodeModel", "EmbeddingHead", "HashHead",
           "SmallCNN", "build_model"]
