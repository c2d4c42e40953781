"""GreedyHash (Su, Zhang, Han & Tian, "Greedy Hash: Towards Fast Optimization for Accurate Hash
Coding in CNN", NeurIPS 2018): hash with the sign in the forward pass and pass the gradient
straight through it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.hashing import check_codes, check_labels
from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import check_class_batch
from hashlab.validation import check_nonnegative

__all__ = ["GreedyHashLoss", "greedy_sign"]


class _GreedySign(torch.autograd.Function):
    """``sgn(h)`` (``+1 if h > 0 else −1``) forward; the identity ``∂L/∂h = ∂L/∂b`` backward."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        one = torch.ones((), dtype=h.dtype, device=h.device)
        return torch.where(h > 0, one, -one)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def greedy_sign(h: torch.Tensor) -> torch.Tensor:
    """GreedyHash's hash layer: ``b = sgn(h) ∈ {−1, +1}`` (``sgn(0) = −1``, agreeing with bit =
    ``h > 0``), with the greedy (unclipped straight-through) gradient ``∂L/∂h = ∂L/∂b``."""
    return _GreedySign.apply(h)


@LOSSES.register("greedy-hash")
class GreedyHashLoss(nn.Module):
    """GreedyHash: cross-entropy of a linear classifier on ``b = sgn(h)`` + α · mean(| |h| − 1 |³).

    Su et al. 2018 (NeurIPS). ``codes`` is the hash layer's *linear* output ``h`` (use the
    ``greedy`` head, which does not squash it); the loss applies :func:`greedy_sign`::

        b = sgn(h)                      (backward: ∂L/∂h = ∂L/∂b, the greedy update h ← h − η ∂L/∂b)
        L = CE(W b + c, y) + α · (1/(B k)) Σ_{i,m} | |h_im| − 1 |³

    The penalty pulls ``h`` towards ±1 so that the greedy step stays close to the true sign.
    ``alpha`` (default 0.1, the weight of the reference PyTorch implementation; the paper
    leaves α a hyperparameter). ``sgn(0) = −1`` (the paper's ``sign`` gives 0 there; hashlab's
    bits are ``h > 0``). ``logits(h)`` are the classifier's scores on ``sgn(h)``.
    """

    def __init__(
        self, num_classes: int, dim: int, alpha: float = 0.1, bias: bool = True
    ) -> None:
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.alpha = check_nonnegative(alpha, "alpha")
        self.classifier = nn.Linear(dim, num_classes, bias=bias)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, alpha={self.alpha}"

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Class scores ``W sgn(h) + c``."""
        return self.classifier(greedy_sign(codes).to(self.classifier.weight.dtype))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.dim)
        check_labels(codes, labels, multi_hot=False)
        check_class_batch(codes, labels, self.dim, self.num_classes)
        if labels.numel() == 0:
            return codes.sum() * 0.0
        ce = F.cross_entropy(self.logits(codes), labels.long())
        h = codes.float() if codes.dtype in (torch.float16, torch.bfloat16) else codes
        penalty = (h.abs() - 1).abs().pow(3).mean()
        return ce + self.alpha * penalty
