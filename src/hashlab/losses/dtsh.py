"""DTSH (Wang, Shi & Kitani, "Deep Supervised Hashing with Triplet Labels", ACCV 2016): the
likelihood of triplet labels under ``σ(θ_ij − θ_ik − α)``, with a quantization term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.factory import factory_for
from hashlab.losses.hashing import CODE_RANGES, _code_loss
from hashlab.losses.reductions import zero_loss
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_choice, check_nonnegative

__all__ = ["DTSHLoss"]


class DTSHLoss(nn.Module):
    """DTSH: negative log-likelihood of triplet labels plus ``λ`` · quantization.

    Wang et al. 2016 (ACCV). With ``θ_ij = ½ u_iᵀ u_j`` on the ±1-relaxed codes and ``T`` the
    valid triplets of the batch (anchor ``i``, positive ``j ≠ i`` of its class, negative ``k`` of
    another class)::

        L = (1/|T|) Σ_{(i,j,k) ∈ T} −log σ(θ_ij − θ_ik − α)  +  λ · (1/(B k)) Σ_i ‖b_i − u_i‖²

    ``b = sgn(u)``; ``−log σ(x) = softplus(−x)`` (stable). The paper sums over the triplets of
    the training set and adds ``λ Σ_n ‖b_n − u_n‖²``; both terms are means here (as for
    :class:`hashlab.losses.hashing.DPSHLoss`), and ``u`` is a relaxed code (``tanh`` head; the
    paper uses the linear output).

    - ``alpha=None`` (default): ``α = k / 2``, the authors' margin (half the code length; with
      ±1 codes ``θ_ij − θ_ik ∈ [−k, k]``, so α = k/2 asks a negative to be k/2 bits farther than a
      positive, a Hamming gap of k/4 in each direction);
    - ``quantization_weight`` (λ, default 0.1);
    - ``code_range="01"`` for sigmoid codes (see :func:`hashlab.losses.hashing.to_pm1`).

    A batch without a valid triplet gives ``λ`` · quantization only (still with a gradient).
    """

    def __init__(
        self,
        alpha: float | None = None,
        quantization_weight: float = 0.1,
        code_range: str = "pm1",
        dim: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("code_range", code_range, CODE_RANGES)
        self.alpha = None if alpha is None else check_nonnegative(alpha, "alpha")
        self.quantization_weight = check_nonnegative(quantization_weight, "quantization_weight")
        self.code_range, self.dim = code_range, dim

    def extra_repr(self) -> str:
        alpha = "k/2" if self.alpha is None else self.alpha
        return (f"alpha={alpha}, quantization_weight={self.quantization_weight}, "
                f"code_range={self.code_range!r}")

    def effective_alpha(self, bits: int) -> float:
        """The margin used for ``bits``-bit codes (``alpha``, or ``bits / 2``)."""
        return bits / 2.0 if self.alpha is None else self.alpha

    def triplet_loss(self, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``mean_{(i,j,k) ∈ T} softplus(θ_ik − θ_ij + α)`` over all valid batch triplets."""
        n = u.shape[0]
        if n < 3:
            return zero_loss(u)
        theta = 0.5 * (u @ u.T)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(n, dtype=torch.bool, device=u.device)
        valid = (same & ~eye)[:, :, None] & ~same[:, None, :]  # [i, j, k]
        x = theta[:, None, :] - theta[:, :, None] + self.effective_alpha(u.shape[1])
        weight = valid.to(u.dtype)
        return (F.softplus(x) * weight).sum() / weight.sum().clamp(min=1.0)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        value = _code_loss(self, self.triplet_loss, codes, labels, multi_hot=False)
        return value if codes.shape[0] else zero_loss(codes)  # empty batch: 0, not mean() = nan


LOSSES.register("dtsh")(factory_for(DTSHLoss))
