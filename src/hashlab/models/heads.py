"""Heads: backbone features → code. An embedding head gives a float vector, a hash head a k-bit
relaxed code ``tanh(W φ + b)`` whose signs are the binary code."""

from __future__ import annotations

import torch
from torch import nn

from hashlab.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")


class EmbeddingHead(nn.Module):
    """Linear projection to a d-dimensional float embedding."""

    binary = False

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.dim = dim

    def pre_activation(self, features: torch.Tensor) -> torch.Tensor:
        """The code before any squashing; its signs are the bits of a hash head."""
        return self.proj(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class HashHead(EmbeddingHead):
    """k-bit hash layer: relaxed code ``u = tanh(W φ + b) ∈ (−1, 1)^k``; bits = ``u > 0``."""

    binary = True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(features))


HEADS.register("embedding")(EmbeddingHead)
HEADS.register("hash")(HashHead)
