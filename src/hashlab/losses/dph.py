"""DPH loss (Dual Purpose Hashing): category cross-entropy + weighted attribute loss, with
missing labels masked and every term normalised by its number of labelled samples.

Targets are one int64 tensor ``[B, 1 + p]``: column 0 the category (``-1`` = missing, DPH's
``y = C + 1``), columns ``1..p`` the attributes (1 / 0, ``2`` = missing). On the binary-like
code ``B^r ∈ (0,1)^k`` of :class:`hashlab.models.dph.DPHHead`::

    L_i^cls   = −log softmax(W^cls B_i^r + b^cls)_{y_i}
    p_ij      = σ(W_j^attr B_i^r + b_j^attr)
    L_ij^wsce = −1[A_ij ≠ 2] (w_j^p A_ij log p_ij + w_j^n (1 − A_ij) log(1 − p_ij))
    w_j^p     = N_j^n / (N_j^n + N_j^p),   w_j^n = N_j^p / (N_j^n + N_j^p)
    L_ij^hinge = 1[A_ij ≠ 2] max(1 − (2 A_ij − 1)(W_j^attr B_i^r + b_j^attr), 0)
    L = Σ_i L_i^cls / Σ_t 1[y_t ≤ C]  +  α Σ_j Σ_i L_ij / Σ_t 1[A_tj ≠ 2]

``N_j^p`` / ``N_j^n`` are the positive / negative labelled counts of attribute ``j`` in the
training set, set from the training data by :meth:`DPHLoss.on_train_data` (the hook the trainer
calls, see :mod:`hashlab.data.facts`) or by hand with :meth:`DPHLoss.set_attribute_counts`;
until then both weights are 1/2. A term with no labelled sample in the batch contributes 0.
The loss is registered with ``needs=("attributes",)``: it needs ``data.attributes`` in the
config, and its factory reads the number of attributes from the training data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashlab.errors import ConfigError
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_choice, check_int, check_nonnegative

if TYPE_CHECKING:
    from hashlab.data.facts import TrainData

__all__ = ["DPHLoss", "MISSING_ATTRIBUTE", "MISSING_CATEGORY"]

MISSING_CATEGORY = -1
MISSING_ATTRIBUTE = 2
ATTRIBUTE_LOSSES = ("wsce", "hinge")


class DPHLoss(nn.Module):
    """``loss(codes, targets)`` for DPH; holds ``category_classifier`` and
    ``attribute_classifier`` (``nn.Linear`` on the k-bit code)."""

    def __init__(self, num_classes: int, dim: int, num_attributes: int, *,
                 attribute_weight: float = 1.0,
                 attribute_loss: Literal["wsce", "hinge"] = "wsce",
                 category_weight: float = 1.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: DPH needs at least 2 categories, got {num_classes}")
        self.num_attributes = check_int(num_attributes, "num_attributes")
        self.attribute_loss = check_choice("attribute_loss", attribute_loss, ATTRIBUTE_LOSSES)
        self.attribute_weight = check_nonnegative(attribute_weight, "attribute_weight")
        self.category_weight = check_nonnegative(category_weight, "category_weight")
        self.num_classes, self.dim = num_classes, dim
        self.category_classifier = nn.Linear(dim, num_classes)
        self.attribute_classifier = nn.Linear(dim, num_attributes)
        self.register_buffer("pos_weight", torch.full((num_attributes,), 0.5))
        self.register_buffer("neg_weight", torch.full((num_attributes,), 0.5))

    def set_attribute_counts(self, positives: np.ndarray, negatives: np.ndarray) -> None:
        """Set ``w^p = N^n / (N^n + N^p)`` and ``w^n = N^p / (N^n + N^p)`` per attribute
        (attributes never labelled keep 1/2, 1/2)."""
        pos = torch.as_tensor(np.asarray(positives, dtype=np.float64))
        neg = torch.as_tensor(np.asarray(negatives, dtype=np.float64))
        if pos.shape != (self.num_attributes,) or neg.shape != (self.num_attributes,):
            raise ValueError(f"expected {self.num_attributes} positive and negative counts")
        total = pos + neg
        wp = torch.where(total > 0, neg / total.clamp(min=1), torch.full_like(total, 0.5))
        wn = torch.where(total > 0, pos / total.clamp(min=1), torch.full_like(total, 0.5))
        self.pos_weight.copy_(wp.to(self.pos_weight))
        self.neg_weight.copy_(wn.to(self.neg_weight))

    def on_train_data(self, data: TrainData) -> None:
        """The training-data hook: the attribute counts ``N^p`` (label 1) and ``N^n`` (label 0)
        of ``data.attributes`` (2 = missing counts in neither)."""
        attrs = np.asarray(_attributes(data))
        self.set_attribute_counts((attrs == 1).sum(0), (attrs == 0).sum(0))

    def _split(self, codes: torch.Tensor, targets: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if codes.ndim != 2 or codes.shape[1] != self.dim:
            raise ValueError(f"codes: expected [B, {self.dim}], got {tuple(codes.shape)}")
        if targets.ndim != 2 or targets.shape != (codes.shape[0], 1 + self.num_attributes):
            raise ValueError(
                f"targets: expected [B, 1 + {self.num_attributes}] (category, attributes), got "
                f"{tuple(targets.shape)}; DPH needs data.attributes in the config")
        y, a = targets[:, 0].long(), targets[:, 1:].long()
        if ((y < MISSING_CATEGORY) | (y >= self.num_classes)).any():
            raise ValueError(f"targets[:, 0]: categories must be in [-1, {self.num_classes})")
        if ((a < 0) | (a > MISSING_ATTRIBUTE)).any():
            raise ValueError("targets[:, 1:]: attributes must be 0, 1 or 2 (missing)")
        return y, a

    def category_loss(self, codes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_i L_i^cls / (number of images with a category); 0 if none."""
        known = y != MISSING_CATEGORY
        if not known.any():
            return codes.sum() * 0.0
        logits = self.category_classifier(codes[known])
        return F.cross_entropy(logits, y[known], reduction="sum") / known.sum()

    def attribute_term(self, codes: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Σ_j Σ_i L_ij / (number of images labelled for attribute j)."""
        z = self.attribute_classifier(codes)
        known = a != MISSING_ATTRIBUTE
        target = (a == 1).to(z.dtype)
        if self.attribute_loss == "wsce":
            # −[w^p A log σ(z) + w^n (1 − A) log(1 − σ(z))], log σ via logsigmoid (stable)
            per = -(self.pos_weight * target * F.logsigmoid(z)
                    + self.neg_weight * (1 - target) * F.logsigmoid(-z))
        else:
            per = F.relu(1 - (2 * target - 1) * z)
        per = per * known
        count = known.sum(dim=0)
        return (per.sum(dim=0) / count.clamp(min=1)).sum()

    def forward(self, codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y, a = self._split(codes, targets)
        loss = self.category_weight * self.category_loss(codes, y)
        return loss + self.attribute_weight * self.attribute_term(codes, a)


def _attributes(data: TrainData) -> np.ndarray:
    """``data.attributes``, or a ConfigError if the config gives none."""
    if data.attributes is None:
        raise ConfigError("loss 'dph' needs attribute labels: set data.attributes (e.g. "
                          "data.attributes: fmnist)")
    return data.attributes


@LOSSES.register("dph", needs=("attributes",))
def dph(num_classes: int, dim: int, data: TrainData, attribute_weight: float = 1.0,
        attribute_loss: Literal["wsce", "hinge"] = "wsce", category_weight: float = 1.0
        ) -> DPHLoss:
    """DPH (Dual Purpose Hashing): category CE + α · weighted attribute sigmoid CE (or hinge),
    missing labels masked.

    ``num_attributes`` comes from the training data (``data.attributes``).
    """
    _attributes(data)
    return DPHLoss(num_classes, dim, data.num_attributes,
                   attribute_weight=attribute_weight, attribute_loss=attribute_loss,
                   category_weight=category_weight)
