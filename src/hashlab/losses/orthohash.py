"""OrthoHash: one cosine-similarity cross-entropy to fixed orthogonal ±1 codewords.

Hoe, Ng, Chan, Chan & Wang 2021, "One Loss for All: Deep Hashing with a Single Cosine Similarity
based Learning Objective" (NeurIPS). Formulas and defaults: ``docs/losses.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashlab.losses.csq import CentreLoss
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_choice, check_nonnegative, check_real

__all__ = ["OrthoHashLoss"]

MULTI_LABEL_LOSSES = ("bce", "label-smoothing")


@LOSSES.register("orthohash")
class OrthoHashLoss(CentreLoss):
    """OrthoHash (Hoe et al. 2021): cross-entropy of ``s · cos(v, b_c)`` with a cosine margin on
    the target, against fixed ±1 codewords ``b_c`` (+ optional λ · quantization).

    ``cos θ_ic = b_cᵀ v_i / (‖b_c‖ ‖v_i‖)``; single-label (class ids)::

        L = −1/B Σ_i log( e^{s(cos θ_iy − m)} / (e^{s(cos θ_iy − m)} + Σ_{c≠y} e^{s cos θ_ic}) )

    multi-label (multi-hot ``y``), ``z_ic = s (cos θ_ic − m y_ic)``: ``"bce"`` (default)
    ``−1/(B C) Σ_ic [y_ic log σ(z_ic) + (1 − y_ic) log σ(−z_ic)]``, or ``"label-smoothing"``
    ``−1/B Σ_i Σ_c (y_ic / Σ_c' y_ic') log softmax(z_i)_c`` (both forms of the authors' code).

    Defaults ``s = 8``, ``m = 0.2`` (the authors' defaults); ``codewords="random"`` (Bernoulli ±1,
    the paper's default, nearly orthogonal for long codes) or ``"hadamard"`` (exactly orthogonal
    for ``C <= k``); ``quantization_weight = 0`` (the paper's quantization term is optional).
    ``logits(codes)`` are the cosines ``cos θ_ic`` (unscaled, no margin).
    """

    multi_label = True

    def __init__(self, num_classes: int, dim: int, s: float = 8.0, m: float = 0.2,
                 codewords: str = "random", multi_label_loss: str = "bce",
                 quantization_weight: float = 0.0, seed: int = 0,
                 min_distance: float | None = None, max_draws: int = 100,
                 code_range: str = "pm1") -> None:
        super().__init__(num_classes, dim, codewords, seed, min_distance, max_draws,
                         quantization_weight, code_range)
        self.s, self.m = check_real(s, "s"), check_nonnegative(m, "m")
        self.multi_label_loss = check_choice("multi_label_loss", multi_label_loss,
                                             MULTI_LABEL_LOSSES)

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, " + super().extra_repr()

    def cosines(self, v: torch.Tensor) -> torch.Tensor:
        """``cos θ [B, C]`` of ±1-relaxed codes and the codewords (a zero code gives 0)."""
        b = self.centres.to(v.dtype)
        return F.normalize(v, dim=1) @ F.normalize(b, dim=1).T

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        return self.cosines(self.prepare(codes, None))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        v = self.prepare(codes, labels)
        cos = self.cosines(v)
        if labels.ndim == 2:
            y = (labels != 0).to(cos.dtype)
            z = self.s * (cos - self.m * y)
            if self.multi_label_loss == "bce":
                loss = F.binary_cross_entropy_with_logits(z, y)
            else:
                loss = -(y / y.sum(1, keepdim=True).clamp_min(1) * F.log_softmax(z, 1)).sum(1)
                loss = loss.mean()
        else:
            margin = F.one_hot(labels, self.num_classes).to(cos.dtype) * self.m
            loss = F.cross_entropy(self.s * (cos - margin), labels)
        return loss + self.quantization(v)
