"""DPN: bit-wise hinge "polarization" loss towards fixed ±1 target codes of the classes.

Fan, Ng, Ju, Zhang & Chan 2020, "Deep Polarized Network for Supervised Learning of Accurate
Binary Hashing Codes" (IJCAI). Formulas and defaults: ``docs/losses.md``.
"""

from __future__ import annotations

import torch

from hashlab.losses.csq import CentreLoss
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_nonnegative

__all__ = ["DPNLoss"]


@LOSSES.register("dpn")
class DPNLoss(CentreLoss):
    """DPN (Fan et al. 2020): polarization hinge ``max(m − v_ij t_ij, 0)`` of every bit to its
    class's target code ``t_y`` (+ optional λ · quantization).

    With ``v`` the ±1-relaxed code::

        L = 1/(B k) Σ_i Σ_j max(m − v_ij t_{y_i j}, 0)  +  λ mean((|v| − 1)²)

    Targets (``targets=``): ``"random"`` (default: Bernoulli ±1 per class, re-drawn to keep a
    minimum pairwise distance, as CSQ's random centres), ``"hadamard"`` or ``"auto"``. Margin
    ``m = 1`` (default): with tanh codes the hinge never vanishes, so every bit keeps being pushed
    to its target sign (the paper's margin study finds m around 1 best). Class ids only.
    """

    def __init__(self, num_classes: int, dim: int, margin: float = 1.0, targets: str = "random",
                 quantization_weight: float = 0.0, seed: int = 0,
                 min_distance: float | None = None, max_draws: int = 100,
                 code_range: str = "pm1") -> None:
        super().__init__(num_classes, dim, targets, seed, min_distance, max_draws,
                         quantization_weight, code_range)
        self.margin = check_nonnegative(margin, "margin")

    def extra_repr(self) -> str:
        return f"margin={self.margin}, " + super().extra_repr()

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        v = self.prepare(codes, labels)
        t = self.centres.to(v.dtype)[labels]
        return (self.margin - v * t).clamp_min(0).mean() + self.quantization(v)
