"""HashNet (Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017):
weighted pairwise maximum likelihood on ``tanh(β z)`` codes, with ``β`` raised during training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.factory import factory_for
from hashlab.losses.hashing import check_codes, check_labels, pairwise_similarity
from hashlab.losses.reductions import zero_loss
from hashlab.losses.registry import LOSSES
from hashlab.validation import check_int, check_nonnegative, check_real

__all__ = ["HashNetLoss"]


class HashNetLoss(nn.Module):
    """HashNet: weighted pairwise likelihood ``p(s_ij | h_i, h_j) = σ(α ⟨h_i, h_j⟩)`` on
    ``h = tanh(β z)``, with the continuation ``β`` growing over training iterations.

    Cao et al. 2017 (ICCV). ``codes`` is the hash layer's *linear* output ``z`` (use the
    ``greedy`` head); the loss applies ``h = tanh(β_t z)`` itself::

        ℓ_ij = log(1 + exp(α ⟨h_i, h_j⟩)) − α s_ij ⟨h_i, h_j⟩
        w_ij = |S| / |S_1| if s_ij = 1,   |S| / |S_0| if s_ij = 0
        L    = (1/|S|) Σ_{(i,j) ∈ S} w_ij ℓ_ij  =  mean_{S_1} ℓ + mean_{S_0} ℓ
        β_t  = β_0 · (1 + γ · t_s)^p,   t_s = step_size · ⌊t / step_size⌋

    ``S`` = the ordered pairs ``i ≠ j`` of the batch, ``S_1`` / ``S_0`` its similar / dissimilar
    pairs (``s_ij`` from class ids or multi-hot rows, see
    :func:`hashlab.losses.hashing.pairwise_similarity``); the weights are counted per batch
    (the paper counts them over the training pairs), and a class of pairs absent from the batch
    contributes nothing. The paper's loss is the sum; here it is divided by ``|S|`` so that it
    does not grow with the batch size. ``t`` counts the training-mode calls before this one (a
    buffer, saved in checkpoints; eval-mode calls neither advance nor reset it).

    Defaults, from the authors' PyTorch code: ``alpha=None`` → ``10 / k`` (their
    ``sigmoid_param = 10 / hash_bit``), ``beta0=1.0``, ``gamma=0.005``, ``power=0.5``,
    ``step_size=200`` (their ``AdaptiveSigmoid``/``tanh`` scale ``init_scale · (1 + γ · iter)^0.5``,
    refreshed every 200 iterations). ``log(1 + e^x)`` is evaluated as ``softplus`` (their code
    switches to the linear asymptote above 15). A batch of fewer than two codes gives 0.
    """

    def __init__(
        self,
        alpha: float | None = None,
        beta0: float = 1.0,
        gamma: float = 0.005,
        power: float = 0.5,
        step_size: int = 200,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        self.alpha = None if alpha is None else check_real(alpha, "alpha")
        self.beta0 = check_real(beta0, "beta0")
        self.gamma = check_nonnegative(gamma, "gamma")
        self.power = check_nonnegative(power, "power")
        self.step_size = check_int(step_size, "step_size")
        self.dim = dim
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        alpha = "10/k" if self.alpha is None else self.alpha
        return (f"alpha={alpha}, beta0={self.beta0}, gamma={self.gamma}, power={self.power}, "
                f"step_size={self.step_size}")

    def effective_alpha(self, bits: int) -> float:
        """The sigmoid scale used for ``bits``-bit codes (``alpha``, or ``10 / bits``)."""
        return 10.0 / bits if self.alpha is None else self.alpha

    def beta(self) -> torch.Tensor:
        """The continuation scale ``β_t`` of the next training call (``t = self.iteration``), a
        0-d float64 tensor (no host sync)."""
        t = torch.div(self.iteration, self.step_size, rounding_mode="floor") * self.step_size
        return self.beta0 * (1.0 + self.gamma * t.to(torch.float64)).pow(self.power)

    def likelihood_loss(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The weighted pairwise term on the continuation codes ``h = tanh(β z)``."""
        b = h.shape[0]
        if b < 2:
            return zero_loss(h)
        ip = self.effective_alpha(h.shape[1]) * (h @ h.T)
        s = pairwise_similarity(labels)
        nll = F.softplus(ip) - s.to(ip.dtype) * ip
        off_diagonal = ~torch.eye(b, dtype=torch.bool, device=h.device)
        value = zero_loss(h)
        for mask in (s & off_diagonal, ~s & off_diagonal):  # mean over S_1, mean over S_0
            m = mask.to(nll.dtype)
            value = value + (nll * m).sum() / m.sum().clamp(min=1.0)
        return value

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_codes(codes, self.dim)
        check_labels(codes, labels, multi_hot=True)
        z = codes.float() if codes.dtype in (torch.float16, torch.bfloat16) else codes
        h = torch.tanh(self.beta().to(z.dtype) * z)
        if self.training:
            self.iteration.add_(1)
        return self.likelihood_loss(h, labels)


LOSSES.register("hashnet")(factory_for(HashNetLoss))
