"""Center loss (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep Face
Recognition") and softmax + λ · center, the usual baseline for triplet-regularised softmax."""

from __future__ import annotations

import torch
from torch import nn

from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import SoftmaxLoss, check_class_batch
from hashlab.validation import check_nonnegative

__all__ = ["CenterLoss", "SoftmaxCenterLoss"]


class CenterLoss(nn.Module):
    """``L_C = mean_i ½ ‖x_i − c_{y_i}‖²`` with one learnable centre per class.

    The centres are an ``nn.Parameter`` (``centers``, shape ``[num_classes, dim]``, initialised
    ``N(0, init_std²)``) updated by the optimiser with the rest of the model, rather than by the
    paper's separate moving-average rule (its ``α`` is then the ratio of learning rates). An empty
    batch gives 0.
    """

    def __init__(self, num_classes: int, dim: int, init_std: float = 1.0) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        self.num_classes, self.dim = num_classes, dim
        self.centers = nn.Parameter(torch.randn(num_classes, dim) * init_std)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_class_batch(embeddings, labels, self.dim, self.num_classes)
        if len(labels) == 0:
            return (embeddings * 0.0).sum() + (self.centers * 0.0).sum()
        diff = embeddings - self.centers[labels].to(embeddings.dtype)
        return 0.5 * diff.pow(2).sum(1).mean()


@LOSSES.register("center")
class SoftmaxCenterLoss(SoftmaxLoss):
    """Softmax cross-entropy + ``weight`` · center loss (Wen et al. 2016).

    ``CE(W x + b, y) + weight · CenterLoss(x, y)``; ``logits`` are the linear classifier's.
    """

    def __init__(
        self, num_classes: int, dim: int, weight: float = 0.01, bias: bool = True
    ) -> None:
        super().__init__(num_classes, dim, bias=bias)
        self.weight = check_nonnegative(weight, "weight")
        self.center = CenterLoss(num_classes, dim)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = super().forward(embeddings, labels)
        return ce + self.weight * self.center(embeddings, labels)
