"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017).

An image network gives ``F [n, k]``, a text network ``G [n, k]`` (relaxed codes, here tanh
outputs), and every training item has one binary code ``B ∈ {−1, +1}^{n×k}`` shared by its
image and its text. The objective is

    J = −Σ_{i,j} (S_ij Θ_ij − log(1 + e^{Θ_ij})) + γ (‖B − F‖²_F + ‖B − G‖²_F)
        + η (‖F·1‖² + ‖G·1‖²),        Θ_ij = ½ F_iᵀ G_j,

``S_ij = 1`` iff image i and text j share a label: the negative log-likelihood of the
cross-modal similarities, a quantization term and a bit-balance term (each bit +1 on half of
the items). It is minimised alternately: the image network with G and B fixed, the text
network with F and B fixed, then ``B = sign(γ(F + G))``.

**Memory.** ``F`` and ``G`` of all n training items are memory matrices: a batch of images is
scored against *all* stored ``G_j``, and its rows of ``F`` are then replaced by the batch's
outputs (likewise for texts). Following the authors' code they start as standard normal
draws (seeded), and ``B = sign(F + G)``; the image pass comes first in each epoch.

**Normalisation.** The loss of a batch of b images is the part of J that depends on it,

    J_x = [ Σ_{i∈batch} Σ_{j=1..n} (log(1 + e^{Θ_ij}) − S_ij Θ_ij)
            + γ Σ_{i∈batch} ‖B_i − F_i‖² + η ‖F·1‖² ] / (b n),

with ``F·1`` the column sums of the memory whose batch rows are the live outputs. Dividing by
``b n`` (as the authors' code does) makes the likelihood a mean over the ``b × n`` pairs and
keeps the *relative* weights of the paper, so its γ and η keep their meaning (the authors'
code uses γ = η = 1; see :class:`DCMH` for the default η). The text loss ``J_y`` is the same
with the roles of F and G exchanged (``Θ_ij = ½ F_iᵀ G_j = ½ G_jᵀ F_i``).

**Codes.** ``B = sign(γ(F + G))`` with ``sign(0) = −1`` (the project's convention: bit =
``value > 0``); it minimises the B-terms ``γ(‖B − F‖² + ‖B − G‖²)`` over ``{−1, +1}^{n×k}``
for γ > 0. Retrieval codes are the signs of the hash layers' outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F_

from hashlab.crossmodal.base import (
    CrossModalBatch,
    CrossModalMethod,
    cross_modal_similarity,
    optimiser_step,
)
from hashlab.crossmodal.registry import CROSSMODAL_METHODS
from hashlab.crossmodal.towers import CrossModalNet, Modality
from hashlab.validation import check_nonnegative, check_real

__all__ = [
    "DCMH",
    "dcmh_batch_loss",
    "dcmh_objective",
    "pairwise_nll",
    "update_codes",
]


def pairwise_nll(codes: torch.Tensor, other: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """``Σ_{i,j} log(1 + e^{Θ_ij}) − S_ij Θ_ij`` with ``Θ = ½ codes · otherᵀ`` (a sum over the
    ``[b, n]`` pairs; softplus keeps it finite for large Θ)."""
    theta = 0.5 * codes @ other.T
    return (F_.softplus(theta) - S * theta).sum()


def dcmh_batch_loss(codes: torch.Tensor, idx: torch.Tensor, own: torch.Tensor,
                    other: torch.Tensor, S: torch.Tensor, B: torch.Tensor, gamma: float,
                    eta: float) -> torch.Tensor:
    """DCMH's loss of one batch of one modality (the module docstring's ``J_x``).

    Args:
        codes: the batch's relaxed codes ``[b, k]`` (``F_i``, or ``G_j`` for texts).
        idx: their positions in the training set ``[b]`` (distinct).
        own: this modality's memory ``[n, k]`` (its rows ``idx`` are ignored: the batch's live
            codes stand in for them in the balance term).
        other: the other modality's memory ``[n, k]``.
        S: similarities ``[b, n]`` of the batch items to every training item.
        B: the binary codes ``[n, k]``.
    """
    b, n = codes.shape[0], other.shape[0]
    likelihood = pairwise_nll(codes, other, S)
    quantization = (B[idx] - codes).pow(2).sum()
    column_sums = own.sum(0) - own[idx].sum(0) + codes.sum(0)
    balance = column_sums.pow(2).sum()
    return (likelihood + gamma * quantization + eta * balance) / (b * n)


def dcmh_objective(F: torch.Tensor, G: torch.Tensor, B: torch.Tensor, S: torch.Tensor,
                   gamma: float, eta: float) -> torch.Tensor:
    """The whole objective J of the module docstring (unnormalised; ``S`` is ``[n, n]``, so
    this is for small n: checks and tests)."""
    return (pairwise_nll(F, G, S) + gamma * ((B - F).pow(2).sum() + (B - G).pow(2).sum())
            + eta * (F.sum(0).pow(2).sum() + G.sum(0).pow(2).sum()))


def update_codes(F: torch.Tensor, G: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``B = sign(γ(F + G))`` in ``{−1, +1}`` (``sign(0) = −1``), the minimiser of
    ``γ(‖B − F‖² + ‖B − G‖²)``; γ must be > 0."""
    check_real(gamma, "gamma")
    one = torch.ones((), dtype=F.dtype, device=F.device)
    return torch.where(gamma * (F + G) > 0, one, -one)


@CROSSMODAL_METHODS.register("dcmh")
class DCMH(CrossModalMethod):
    """DCMH (Jiang & Li, CVPR 2017): cross-modal pairwise likelihood of each batch against
    the other modality's memory, with quantization and bit balance; image, text and code
    updates alternate.

    ``gamma`` weighs the quantization term, ``eta`` the bit balance (the paper's γ, η). The
    authors use γ = η = 1; η defaults to 0.01 here because the balance term overshoots with
    tanh codes and Adam at η = 1 (measured in ``docs/crossmodal.md``, "Hyperparameters").
    """

    def __init__(self, dim: int, gamma: float = 1.0, eta: float = 0.01) -> None:
        super().__init__(dim)
        self.gamma = check_real(gamma, "gamma")
        self.eta = check_nonnegative(eta, "eta")
        for name in ("F", "G", "B"):
            self.register_buffer(name, torch.zeros(0, dim))
        self.labels: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, gamma={self.gamma:g}, eta={self.eta:g}"

    # ------------------------------------------------------------------ state
    def bind(self, labels: torch.Tensor, generator: torch.Generator) -> None:
        n, device = labels.shape[0], labels.device
        self.labels = labels
        self.F = torch.randn(n, self.dim, generator=generator).to(device)
        self.G = torch.randn(n, self.dim, generator=generator).to(device)
        self.B = update_codes(self.F, self.G, self.gamma)

    def memory(self, modality: Modality) -> tuple[torch.Tensor, torch.Tensor]:
        """(this modality's memory, the other's): ``(F, G)`` for images, ``(G, F)`` for
        texts."""
        return (self.F, self.G) if modality == "image" else (self.G, self.F)

    def similarity(self, idx: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise RuntimeError("bind() the method to the training labels first")
        return cross_modal_similarity(self.labels, idx)

    def remember(self, modality: Modality, idx: torch.Tensor, codes: torch.Tensor) -> None:
        """Store a batch's codes in its modality's memory."""
        self.memory(modality)[0][idx] = codes.detach().to(self.F.dtype)

    def end_epoch(self, epoch: int) -> None:
        self.B = update_codes(self.F, self.G, self.gamma)

    # ------------------------------------------------------------------ training
    def batch_loss(self, modality: Modality, codes: torch.Tensor, idx: torch.Tensor,
                   S: torch.Tensor | None = None) -> torch.Tensor:
        """DCMH's loss of a batch of ``modality`` codes (:func:`dcmh_batch_loss`)."""
        own, other = self.memory(modality)
        S = self.similarity(idx) if S is None else S
        return dcmh_batch_loss(codes, idx, own, other, S, self.B, self.gamma, self.eta)

    def train_batch(self, net: CrossModalNet, modality: Modality, batch: CrossModalBatch,
                    optimizers: Mapping[str, torch.optim.Optimizer], step: int
                    ) -> dict[str, float]:
        codes = net(modality, batch.inputs(modality))
        loss = self.batch_loss(modality, codes, batch.idx)
        optimiser_step(optimizers[modality], loss)
        self.remember(modality, batch.idx, codes)
        return {"loss": float(loss.detach())}
