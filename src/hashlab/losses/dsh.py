"""DSH (Liu, Wang, Shan & Chen, "Deep Supervised Hashing for Fast Image Retrieval", CVPR 2016):
a contrastive loss on real-valued codes with an L1 pull towards ±1."""

from __future__ import annotations

import torch
from torch import nn

from hashlab.losses.factory import factory_for
from hashlab.losses.hashing import check_codes, check_labels, pairwise_similarity
from hashlab.losses.reductions import zero_loss
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_nonnegative

__all__ = ["DSHLoss"]


class DSHLoss(nn.Module):
    """DSH: pairwise contrastive loss on the real-valued codes plus an L1 quantization term.

    Liu et al. 2016 (CVPR). For each pair ``i < j`` of the batch, with ``s_ij = 1`` iff the two
    images share a label (class ids or multi-hot rows; the paper's ``y = 1 − s``)::

        ℓ_ij = ½ s_ij ‖b_i − b_j‖² + ½ (1 − s_ij) max(m − ‖b_i − b_j‖², 0)
               + α (‖ |b_i| − 1 ‖₁ + ‖ |b_j| − 1 ‖₁)
        L    = 2 / (B (B − 1)) Σ_{i<j} ℓ_ij

    ``b`` is the network's real-valued output (the paper's linear last layer: use the ``greedy``
    head; a ``tanh`` head works too). The paper sums over the pairs generated online in each
    batch; here they are averaged so that the loss does not grow with the batch size.

    - ``margin=None`` (default): ``m = 2k``, the paper's choice (``k`` = code length);
    - ``alpha`` (default 0.01, the paper's weight of the regulariser).

    A batch of fewer than two codes gives a zero loss that still has a gradient.
    """

    def __init__(
        self, margin: float | None = None, alpha: float = 0.01, dim: int | None = None
    ) -> None:
        super().__init__()
        self.margin = None if margin is None else check_nonnegative(margin, "margin")
        self.alpha = check_nonnegative(alpha, "alpha")
        self.dim = dim

    def extra_repr(self) -> str:
        margin = "2k" if self.margin is None else self.margin
        return f"margin={margin}, alpha={self.alpha}"

    def effective_margin(self, bits: int) -> float:
        """The margin used for ``bits``-bit codes (``margin``, or ``2 · bits``)."""
        return 2.0 * bits if self.margin is None else self.margin

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.dim)
        check_labels(codes, labels, multi_hot=True)
        b = codes.float() if codes.dtype in (torch.float16, torch.bfloat16) else codes
        n = b.shape[0]
        if n < 2:
            return zero_loss(b)
        norms = (b * b).sum(dim=1)
        d2 = (norms[:, None] + norms[None, :] - 2.0 * (b @ b.T)).clamp(min=0.0)
        s = pairwise_similarity(labels).to(b.dtype)
        m = self.effective_margin(b.shape[1])
        contrastive = 0.5 * s * d2 + 0.5 * (1.0 - s) * (m - d2).clamp(min=0.0)
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool, device=b.device), diagonal=1)
        # each code is in n − 1 of the n (n − 1) / 2 pairs: the mean regulariser is 2/n Σ_i r_i
        regulariser = (b.abs() - 1.0).abs().sum(dim=1).sum() * (2.0 / n)
        return contrastive[upper].mean() + self.alpha * regulariser


LOSSES.register("dsh")(factory_for(DSHLoss))
