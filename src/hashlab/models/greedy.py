"""The ``greedy`` head: a k-bit hash layer whose training output is the raw linear code.

GreedyHash (Su et al., NeurIPS 2018) applies ``sgn`` to the hash layer's linear output
``h = W φ + b`` inside the loss (forward ``b = sgn(h)``, backward the straight-through
``∂L/∂h = ∂L/∂b``), so the head must not squash ``h``. HashNet (Cao et al., ICCV 2017) applies its
own ``tanh(β z)`` with a growing ``β`` and DSH (Liu et al., CVPR 2016) trains the real-valued
output directly; they read the same raw code. Bits are ``h > 0`` like every hashlab hash head.
"""

from __future__ import annotations

import torch

from hashlab.models.heads import HashHead
from hashlab.models.registry import HEADS

__all__ = ["GreedyHead"]


@HEADS.register("greedy")
class GreedyHead(HashHead):
    """k-bit hash layer returning the raw linear output ``h = W φ + b``; bits = ``h > 0``."""

    binary = True

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__(in_dim, dim)
        self.activation = "linear"

    def extra_repr(self) -> str:
        return "activation='linear'"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)
