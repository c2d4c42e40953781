"""DPH — Dual Purpose Hashing (Liu et al., "Learning Multifunctional Binary Codes for
Personalized Image Retrieval"): one k-bit code serves category and attribute retrieval.

The network is backbone ► :class:`DPHHead`, the binary-like layer
``B^r = σ(W^hash φ(x) + b^hash) ∈ (0, 1)^k``; the binary code is ``B = 1[B^r > 0.5]`` (the
sign of the pre-activation, as for every hashlab hash head). The category classifier
``W^cls`` and the attribute classifier ``W^attr`` read the code and live in
:class:`hashlab.losses.dph.DPHLoss` (like the class weights of the margin losses), which a
finished run saves beside the model; :func:`attribute_probabilities` applies the attribute
classifier to binary database codes for attribute retrieval (``A = σ(W^attr B + b^attr)``).
"""

from __future__ import annotations

import numpy as np
import torch

from hashlab.index.codes import unpack_bits
from hashlab.models.heads import HashHead
from hashlab.models.registry import HEADS

__all__ = ["DPHHead", "attribute_probabilities", "category_probabilities"]


@HEADS.register("dph")
class DPHHead(HashHead):
    """k-bit binary-like layer ``B^r = σ(W φ + b)``; bits = ``B^r > 0.5`` ⇔ pre-activation > 0."""

    binary = True

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__(in_dim, dim, activation="sigmoid")  # DPH's layer is always a sigmoid




def _bits_tensor(packed: np.ndarray, nbits: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(unpack_bits(packed, nbits).astype(np.float32)).to(dtype)


@torch.no_grad()
def attribute_probabilities(loss: torch.nn.Module, packed: np.ndarray, nbits: int,
                            chunk: int = 8192) -> np.ndarray:
    """``σ(W^attr B + b^attr)`` for packed binary codes ``B ∈ {0,1}^k``: float32 ``[n, p]``."""
    w = loss.attribute_classifier
    out = [torch.sigmoid(w(_bits_tensor(packed[s: s + chunk], nbits, w.weight.dtype)))
           for s in range(0, len(packed), chunk)]
    return torch.cat(out).numpy().astype(np.float32)


@torch.no_grad()
def category_probabilities(loss: torch.nn.Module, packed: np.ndarray, nbits: int,
                           chunk: int = 8192) -> np.ndarray:
    """Softmax of ``W^cls B + b^cls`` for packed binary codes: float32 ``[n, C]``."""
    w = loss.category_classifier
    out = [torch.softmax(w(_bits_tensor(packed[s: s + chunk], nbits, w.weight.dtype)), dim=1)
           for s in range(0, len(packed), chunk)]
    return torch.cat(out).numpy().astype(np.float32)
