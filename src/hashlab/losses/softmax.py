"""Softmax cross-entropy on a linear classifier over the code (the plain baseline), and the
hashing baseline with a quantization penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.registry import LOSSES
from hashlab.validation import check_batch, check_nonnegative

__all__ = ["HashCrossEntropyLoss", "SoftmaxLoss", "check_class_batch", "quantization_penalty"]


def check_class_batch(
    embeddings: torch.Tensor, labels: torch.Tensor, dim: int, num_classes: int
) -> None:
    """``embeddings`` is ``[batch, dim]`` and ``labels`` are ``[batch]`` ids in
    ``[0, num_classes)`` (the inputs of a loss with a classifier over ``num_classes``)."""
    check_batch(embeddings, labels, dim)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def quantization_penalty(codes: torch.Tensor) -> torch.Tensor:
    """``mean((|u| − 1)²)``: zero exactly when every relaxed bit is ±1."""
    return (codes.abs() - 1).pow(2).mean()


@LOSSES.register("softmax")
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
        check_class_batch(embeddings, labels, self.dim, self.num_classes)
        return F.cross_entropy(self.logits(embeddings), labels)


@LOSSES.register("hash-ce")
class HashCrossEntropyLoss(SoftmaxLoss):
    """Baseline hashing loss: cross-entropy over the relaxed (tanh) code + quantization penalty.

    ``L = CE(W u + b, y) + λ · mean((|u| − 1)²)`` pushes each relaxed bit ``u ∈ (−1, 1)`` towards
    ±1, so that ``sign(u)`` loses little of what the classifier learnt.
    """

    def __init__(
        self, num_classes: int, dim: int, quantization_weight: float = 0.1, bias: bool = True
    ) -> None:
        super().__init__(num_classes, dim, bias=bias)
        self.quantization_weight = check_nonnegative(quantization_weight, "quantization_weight")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = super().forward(embeddings, labels)
        return ce + self.quantization_weight * quantization_penalty(embeddings)
