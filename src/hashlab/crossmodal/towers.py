"""The two towers of cross-modal hashing and the network that joins them.

- the **image tower** is any backbone of :data:`hashlab.models.registry.BACKBONES`
  (``image.backbone``, e.g. ``small-cnn``): image ``[B, C, H, W]`` → features ``[B, d_x]``;
- the **text tower** (:class:`TextTower`) is an MLP over the bag of words: ``[B, V]`` →
  Linear–ReLU(–dropout) per hidden size → Linear–ReLU → features ``[B, d_y]`` (DCMH's text
  network is such an MLP with one hidden layer of 8,192 units);
- a **hash layer** per modality, Linear → tanh: ``k`` relaxed bits in ``(−1, 1)`` whose signs
  are the code (the project's :class:`~hashlab.models.heads.HashHead`; bit = pre-activation
  ``> 0``).

:class:`CrossModalNet` holds both towers and hash layers, and optionally an *attention module*
per modality (a method that has one builds it): a module mapping features to a
mask in ``[0, 1]^d``; the hash layer then sees the attended features ``mask ⊙ features``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from hashlab.errors import ConfigError, HashlabError, summary
from hashlab.index.codes import pack_bits
from hashlab.models.heads import HashHead
from hashlab.models.registry import BACKBONES
from hashlab.registry import check_kwargs

__all__ = [
    "MODALITIES",
    "CrossModalNet",
    "TextTower",
    "build_image_tower",
    "split_features",
]

MODALITIES = ("image", "text")
Modality = Literal["image", "text"]


class TextTower(nn.Module):
    """MLP over a bag of words ``[B, V]`` → features ``[B, feature_dim]`` (non-negative).

    ``hidden``: the sizes of the hidden layers (Linear–ReLU, then dropout when ``dropout > 0``);
    the last layer is Linear–ReLU to ``feature_dim``.
    """

    def __init__(self, vocab_size: int, hidden: Sequence[int] = (512,), feature_dim: int = 512,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if vocab_size < 1 or feature_dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"text tower sizes must be >= 1, got vocabulary {vocab_size}, "
                             f"hidden {list(hidden)}, feature_dim {feature_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = vocab_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers += [nn.Linear(width, feature_dim), nn.ReLU(inplace=True)]
        self.mlp = nn.Sequential(*layers)
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim

    def forward(self, bows: torch.Tensor) -> torch.Tensor:
        return self.mlp(bows)


def build_image_tower(backbone: str, backbone_args: dict[str, Any], in_channels: int
                      ) -> nn.Module:
    """The backbone ``backbone`` of BACKBONES for ``in_channels``-channel images; an unknown
    name or a refused argument is a ConfigError naming ``image.backbone(_args)``."""
    factory = BACKBONES.get(backbone, key="image.backbone")
    check_kwargs(factory, backbone_args, "image.backbone_args")
    try:
        return factory(in_channels=in_channels, **backbone_args)
    except HashlabError:
        raise
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"image.backbone_args: {backbone_args} is refused "
                          f"({summary(exc)})") from exc


def split_features(features: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(attended ``mask ⊙ f``, unattended ``(1 − mask) ⊙ f``), computed as ``u = f − m ⊙ f``,
    ``a = f − u`` so that ``a + u == f`` holds exactly in floating point (for ``m ∈ [0, 1]``,
    Sterbenz's lemma makes one of the two subtractions exact); ``a`` is ``m ⊙ f`` up to
    rounding."""
    unattended = features - mask * features
    return features - unattended, unattended


class CrossModalNet(nn.Module):
    """Image and text towers, a k-bit hash layer each, optional attention modules.

    ``net(modality, x)`` gives the relaxed codes ``tanh(W h + c)`` of a batch, where ``h`` is
    the tower's features, attended (``mask ⊙ features``) when the modality has an attention
    module; :meth:`encode` gives float codes or packed bits (bit = pre-activation > 0, in
    :func:`hashlab.index.codes.pack_bits` order).
    """

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, dim: int,
                 image_attention: nn.Module | None = None,
                 text_attention: nn.Module | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.towers = nn.ModuleDict({"image": image_tower, "text": text_tower})
        self.hashes = nn.ModuleDict({m: HashHead(self.towers[m].feature_dim, dim)
                                     for m in MODALITIES})
        attention = {"image": image_attention, "text": text_attention}
        self.attention = nn.ModuleDict({m: a for m, a in attention.items() if a is not None})

    def feature_dim(self, modality: Modality) -> int:
        return int(self.towers[modality].feature_dim)

    def features(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        """The tower's features ``[B, d]``. On the CPU, images go through the convolutions in
        channels-last memory order (several times faster there; the same numbers)."""
        if modality == "image" and x.ndim == 4 and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.towers[modality](x)

    def hash_input(self, modality: Modality, features: torch.Tensor) -> torch.Tensor:
        """What the hash layer encodes: ``mask ⊙ features`` with attention, else ``features``."""
        if modality in self.attention:
            return split_features(features, self.attention[modality](features))[0]
        return features

    def codes_of(self, modality: Modality, hash_input: torch.Tensor) -> torch.Tensor:
        """Relaxed codes ``tanh(W h + c)`` of given hash-layer inputs."""
        return self.hashes[modality](hash_input)

    def forward(self, modality: Modality, x: torch.Tensor) -> torch.Tensor:
        return self.codes_of(modality, self.hash_input(modality, self.features(modality, x)))

    def modality_parameters(self, modality: Modality) -> Iterator[nn.Parameter]:
        """The feature-learning and hashing parameters of one modality (tower + hash layer)."""
        yield from self.towers[modality].parameters()
        yield from self.hashes[modality].parameters()

    def attention_parameters(self, modality: Modality) -> Iterator[nn.Parameter]:
        if modality in self.attention:
            yield from self.attention[modality].parameters()

    @torch.no_grad()
    def encode(self, modality: Modality, x: torch.Tensor,
               kind: Literal["float", "binary"] = "binary") -> np.ndarray:
        """One batch in eval mode: float32 codes ``[B, k]`` or packed bits ``[B, ceil(k/8)]``.
        Restores the previous train/eval mode."""
        if kind not in ("float", "binary"):
            raise ValueError(f"kind must be 'float' or 'binary', got {kind!r}")
        was_training = self.training
        self.eval()
        try:
            h = self.hash_input(modality, self.features(modality, x))
            head = self.hashes[modality]
            if kind == "float":
                return head(h).float().cpu().numpy()
            return pack_bits(head.pre_activation(h) > 0)
        finally:
            self.train(was_training)
