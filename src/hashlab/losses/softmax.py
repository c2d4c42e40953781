"""Softmax cross-entropy on a linear classifier over the code (the plain baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.registry import LOSSES


def _check_inputs(
    embeddings: torch.Tensor, labels: torch.Tensor, dim: int, num_classes: int
) -> None:
    if embeddings.ndim != 2 or embeddings.shape[1] != dim:
        raise ValueError(
            f"embeddings must have shape [batch, {dim}], got {tuple(embeddings.shape)}"
        )
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"labels must have shape [{embeddings.shape[0]}], got {tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


class SoftmaxLoss(nn.Module):
    """Cross-entropy of a linear classifier ``W x + b`` over the embedding.

    Called as ``loss(embeddings, labels)``; the classifier lives in the module.
    ``logits(embeddings)`` gives the class scores (for accuracy and prediction).
    """

    def __init__(self, num_classes: int, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.classifier = nn.Linear(dim, num_classes, bias=bias)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_inputs(embeddings, labels, self.dim, self.num_classes)
        return F.cross_entropy(self.logits(embeddings), labels)


class HashCrossEntropyLoss(SoftmaxLoss):
    """Baseline hashing loss: cross-entropy over the relaxed (tanh) code + quantization penalty.

    ``L = CE(W u + b, y) + λ · mean((|u| − 1)²)`` pushes each relaxed bit ``u ∈ (−1, 1)`` towards
    ±1, so that ``sign(u)`` loses little of what the classifier learnt.
    """

    def __init__(
        self, num_classes: int, dim: int, quantization_weight: float = 0.1, bias: bool = True
    ) -> None:
        super().__init__(num_classes, dim, bias=bias)
        if quantization_weight < 0:
            raise ValueError(f"quantization_weight must be >= 0, got {quantization_weight}")
        self.quantization_weight = quantization_weight

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = super().forward(embeddings, labels)
        return ce + self.quantization_weight * quantization_penalty(embeddings)


def quantization_penalty(codes: torch.Tensor) -> torch.Tensor:
    """``mean((|u| − 1)²)``: zero exactly when every relaxed bit is ±1."""
    return (codes.abs() - 1).pow(2).mean()


@LOSSES.register("softmax")
def softmax(num_classes: int, dim: int, bias: bool = True) -> nn.Module:
    return SoftmaxLoss(num_classes, dim, bias=bias)


@LOSSES.register("hash_ce")
def hash_ce(
    num_classes: int, dim: int, quantization_weight: float = 0.1, bias: bool = True
) -> nn.Module:
    return HashCrossEntropyLoss(
        num_classes, dim, quantization_weight=quantization_weight, bias=bias
    )
