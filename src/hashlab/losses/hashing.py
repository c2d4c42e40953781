"""Deep hashing losses on relaxed codes: DPSH's pairwise likelihood and DPH's Hamming and Euclidean
triplet losses, each with an optional quantization penalty.

Every loss is called as ``loss(codes, labels)`` with ``codes`` the relaxed code ``u`` of a batch
``[B, k]`` and ``labels`` int class ids ``[B]`` (DPSH also takes multi-hot ``[B, C]`` labels).

Code ranges. The losses are written for codes in ``[−1, 1]`` whose signs are the bits: the
``tanh`` and ``sign_ste`` hash heads (``code_range="pm1"``, the default). For the ``sigmoid`` head
(DPH's binary-like layer, ``u ∈ (0, 1)``, bit = ``u > 0.5``) pass ``code_range="01"``: the loss
then maps ``u ↦ 2u − 1 = tanh(z / 2)`` first, so that every formula, margin and default below
keeps its meaning (e.g. DPH's {0,1}-Hamming distance equals the ±1 one, and its Euclidean
distance on ``B^r`` is half the one used here).

Quantization. ``quantization_penalty(v) = mean((|v| − 1)²) = (1 / (B k)) Σ_i ‖b_i − v_i‖²`` with
``b = sgn(v)`` (``sgn(0) = ±1``): the DPSH regulariser ``Σ_i ‖b_i − u_i‖²`` averaged over the
entries; its gradient is the one of DPSH's alternating scheme, where ``b`` is held fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.distances import euclidean_distance, hamming_distance_matrix
from hashlab.losses.factory import factory_for
from hashlab.losses.reductions import zero_loss
from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import quantization_penalty
from hashlab.losses.triplet import MinedTripletLoss
from hashlab.validation import check_choice, check_nonnegative

__all__ = [
    "CODE_RANGES",
    "CodeTripletLoss",
    "DPSHLoss",
    "EuclideanTripletLoss",
    "HammingTripletLoss",
    "QuantizationLoss",
    "check_codes",
    "check_labels",
    "hamming_distance_matrix",
    "pairwise_similarity",
    "quantization_penalty",
    "to_pm1",
]

CODE_RANGES = ("pm1", "01")


# --------------------------------------------------------------------------- helpers


def to_pm1(codes: torch.Tensor, code_range: str = "pm1") -> torch.Tensor:
    """Codes in ``[−1, 1]``: unchanged for ``"pm1"``; ``2u − 1`` for ``"01"`` (sigmoid) codes.

    Half-precision codes are computed in float32 (the losses sum over ``k`` bits and ``B²`` pairs).
    """
    check_choice("code_range", code_range, CODE_RANGES)
    if codes.dtype in (torch.float16, torch.bfloat16):
        codes = codes.float()
    return codes if code_range == "pm1" else 2.0 * codes - 1.0


def pairwise_similarity(labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, B]`` semantic similarity: ``s_ij = 1`` iff samples i and j share a label.

    ``labels``: int class ids ``[B]`` (``s_ij = [y_i = y_j]``) or multi-hot ``[B, C]``
    (``s_ij = [y_i · y_j > 0]``, as in DPSH's multi-label NUS-WIDE setting).
    """
    if labels.ndim == 1:
        return labels[:, None] == labels[None, :]
    if labels.ndim == 2:
        y = (labels != 0).float()  # exact counts up to 2^24 shared labels
        return (y @ y.T) > 0
    raise ValueError(
        f"labels must be class ids [batch] or multi-hot [batch, classes], "
        f"got shape {tuple(labels.shape)}"
    )


def check_codes(codes: torch.Tensor, dim: int | None) -> None:
    """A loss's input check: ``codes`` is ``[batch, bits]`` (``bits == dim`` when given)."""
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape [batch, bits], got {tuple(codes.shape)}")
    if dim is not None and codes.shape[1] != dim:
        raise ValueError(f"codes must have shape [batch, {dim}], got {tuple(codes.shape)}")
    if not codes.is_floating_point():
        raise ValueError(f"codes must be a floating-point tensor, got dtype {codes.dtype}")


def check_labels(codes: torch.Tensor, labels: torch.Tensor, multi_hot: bool) -> None:
    """A loss's input check: one integer label per code (or a multi-hot row, if allowed)."""
    if labels.ndim == 0 or labels.shape[0] != codes.shape[0]:
        raise ValueError(
            f"labels must have {codes.shape[0]} rows (one per code), got shape "
            f"{tuple(labels.shape)}"
        )
    if labels.ndim == 2 and multi_hot:
        return
    if labels.ndim != 1:
        expected = "[batch] or multi-hot [batch, classes]" if multi_hot else "[batch]"
        raise ValueError(
            f"labels must have shape {expected}, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")


def _code_loss(
    loss: nn.Module,
    term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    labels: torch.Tensor,
    multi_hot: bool,
) -> torch.Tensor:
    """``term(v, labels) + λ · quantization_penalty(v)`` on the ±1-relaxed codes ``v``, after
    checking the inputs (``loss`` gives ``dim``, ``code_range`` and ``λ = quantization_weight``)."""
    check_codes(codes, loss.dim)
    check_labels(codes, labels, multi_hot=multi_hot)
    v = to_pm1(codes, loss.code_range)
    value = term(v, labels)
    if loss.quantization_weight:
        value = value + loss.quantization_weight * quantization_penalty(v)
    return value


# --------------------------------------------------------------------------- quantization


class QuantizationLoss(nn.Module):
    """``weight · mean((|v| − 1)²)`` with ``v`` the ±1-relaxed code (see :func:`to_pm1`).

    Zero exactly when every relaxed bit is ±1. Same as :func:`quantization_penalty` (the one
    ``hash-ce`` uses), as a module called like the losses (the labels are ignored), to add to
    another loss. Not registered in ``LOSSES``: on its own it would train nothing useful.
    """

    def __init__(self, weight: float = 1.0, code_range: str = "pm1") -> None:
        super().__init__()
        check_choice("code_range", code_range, CODE_RANGES)
        self.weight, self.code_range = check_nonnegative(weight, "weight"), code_range

    def extra_repr(self) -> str:
        return f"weight={self.weight}, code_range={self.code_range!r}"

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        check_codes(codes, None)
        return self.weight * quantization_penalty(to_pm1(codes, self.code_range))


# --------------------------------------------------------------------------- DPSH


class DPSHLoss(nn.Module):
    """DPSH: the negative log-likelihood of pairwise labels under ``p(s_ij = 1) = σ(θ_ij)``.

    Li, Wang & Kang 2016, "Feature Learning based Deep Supervised Hashing with Pairwise Labels"
    (IJCAI). With ``θ_ij = ½ u_iᵀ u_j``::

        L = 1/(B(B−1)) Σ_{i≠j} [log(1 + e^{θ_ij}) − s_ij θ_ij]  +  λ · (1/(B k)) Σ_i ‖b_i − u_i‖²

    with ``b_i = sgn(u_i)``, ``s_ij = 1`` iff i and j share a label (class ids or multi-hot rows,
    see :func:`pairwise_similarity`). ``log(1 + e^θ) = softplus(θ)`` is evaluated stably: no
    overflow for ``|θ|`` up to ``k/2`` with ±1 codes of any length.

    Differences from the paper, on purpose:

    - pairs are the ordered pairs ``i ≠ j`` within the batch. The paper sums over all given pairs
      of the training set; its authors' code pairs each batch with a memory ``U`` of the latest
      codes of every training image (including the image itself). The in-batch mean estimates
      the mean over all pairs; the memory variant is not implemented;
    - both terms are means (over pairs and over code entries) rather than sums, so that the
      loss does not scale with the batch size. The paper's ``J = Σ_pairs ℓ + η Σ_i ‖b_i − u_i‖²``
      over ``n`` codes, divided by its ``n (n − 1)`` pairs, is this loss with
      ``λ = η k / (n − 1)`` (the authors' PyTorch code likewise divides both terms by ``n B``).
      Their η = 10 on CIFAR-10 (``n = 5000`` training images; 50 on NUS-WIDE) at ``k = 48–64``
      gives λ ≈ 0.1–0.13, hence the default ``quantization_weight = 0.1``;
    - ``u`` is a relaxed code (tanh, sigmoid mapped by ``2u − 1``, or sign-STE), where the paper
      uses the unbounded linear output ``Wᵀφ(x) + v``; the quantization term then keeps ``u``
      near ±1.

    A batch with fewer than two codes gives a zero loss that still has a gradient.
    """

    def __init__(
        self, quantization_weight: float = 0.1, code_range: str = "pm1", dim: int | None = None
    ) -> None:
        super().__init__()
        check_choice("code_range", code_range, CODE_RANGES)
        self.quantization_weight = check_nonnegative(quantization_weight, "quantization_weight")
        self.code_range, self.dim = code_range, dim

    def extra_repr(self) -> str:
        return f"quantization_weight={self.quantization_weight}, code_range={self.code_range!r}"

    def likelihood_loss(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The pairwise term alone: ``mean_{i≠j} softplus(θ_ij) − s_ij θ_ij`` on ±1 codes."""
        b = codes.shape[0]
        if b < 2:
            return zero_loss(codes)
        theta = 0.5 * (codes @ codes.T)
        s = pairwise_similarity(labels).to(theta.dtype)
        nll = F.softplus(theta) - s * theta
        off_diagonal = ~torch.eye(b, dtype=torch.bool, device=codes.device)
        return nll[off_diagonal].mean()

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return _code_loss(self, self.likelihood_loss, codes, labels, multi_hot=True)


# --------------------------------------------------------------------------- DPH triplets


class CodeTripletLoss(MinedTripletLoss):
    """``[D(a,p) + m − D(a,n)]₊`` over triplets mined from the batch (the ``MINERS`` family), on
    the ±1-relaxed codes, plus ``λ · quantization_penalty``. Subclasses give ``D``
    (:meth:`distance_matrix`) and the default margin (:meth:`default_margin`)."""

    def __init__(
        self,
        margin: float | None = None,
        mining: str = "batch-all",
        reduction: str = "avg-nonzero",
        quantization_weight: float = 0.0,
        code_range: str = "pm1",
        dim: int | None = None,
    ) -> None:
        if margin is not None:
            margin = check_nonnegative(margin, "margin")
        super().__init__(mining, reduction)
        check_choice("code_range", code_range, CODE_RANGES)
        self.quantization_weight = check_nonnegative(quantization_weight, "quantization_weight")
        self.margin, self.code_range, self.dim = margin, code_range, dim

    def extra_repr(self) -> str:
        margin = "default" if self.margin is None else self.margin
        return (f"margin={margin}, mining={self.mining!r}, reduction={self.reduction!r}, "
                f"quantization_weight={self.quantization_weight}, "
                f"code_range={self.code_range!r}")

    def default_margin(self, bits: int) -> float:
        raise NotImplementedError

    def effective_margin(self, bits: int) -> float:
        """The margin used for ``bits``-bit codes (``margin``, or the default for ``bits``)."""
        return self.default_margin(bits) if self.margin is None else self.margin

    def margin_for(self, x: torch.Tensor) -> float:
        return self.effective_margin(x.shape[1])

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The ±1-relaxed codes (see :func:`to_pm1`), for :meth:`mine`."""
        return to_pm1(x, self.code_range)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return _code_loss(self, self.triplet_loss, codes, labels, multi_hot=False)


class HammingTripletLoss(CodeTripletLoss):
    """DPH's ``L^ml``: triplet hinge on the relaxed Hamming distance of the codes.

    Liu et al., "Learning Multifunctional Binary Codes for Personalized Image Retrieval"
    (Dual Purpose Hashing, DPH)::

        L_i^ml = Σ_{y_k ≠ y_i} Σ_{y_j = y_i} [D_H(B_i, B_j) + m − D_H(B_i, B_k)]₊

    ``D_H`` is relaxed for back-propagation as ``D_H(u_i, u_j) = ½ (k − u_iᵀ u_j)`` on ±1-relaxed
    codes (exactly the Hamming distance on ±1 codes; see :func:`hamming_distance_matrix`), so
    the margin ``m`` is in bits. Each triplet's hinge is ``[½ u_aᵀ(u_n − u_p) + m]₊``.

    - ``mining="batch-all"`` (default): all valid triplets, as in ``L^ml``; ``"batch-hard"`` and
      ``"semi-hard"`` (or any other registered miner, :mod:`hashlab.losses.miners`) on ``D_H``;
    - ``reduction="avg-nonzero"`` (default): mean over the triplets with positive loss (the
      paper sums per anchor and normalises the total by the number of labelled samples);
      ``"mean"``: mean over all mined triplets;
    - ``margin=None`` (default): ``k / 4`` bits, a quarter of the code length. The DPH summary
      gives no value for ``m``; k/4 asks a negative to differ in k/4 more bits than a positive,
      well inside what k-bit codes of tens of classes can satisfy;
    - ``quantization_weight`` (default 0: DPH's sigmoid layer has no quantization term);
    - ``code_range="01"`` for sigmoid codes (``D_H`` on ``2u − 1`` equals DPH's {0,1} Hamming
      distance on binary codes).
    """

    def default_margin(self, bits: int) -> float:
        return bits / 4.0

    def distance_matrix(self, codes: torch.Tensor) -> torch.Tensor:
        return hamming_distance_matrix(codes)


class EuclideanTripletLoss(CodeTripletLoss):
    """DPH's ``L^mlr``: triplet hinge on the Euclidean distance of the relaxed codes.

    DPH (see :class:`HammingTripletLoss`)::

        L_i^mlr = Σ_{y_k ≠ y_i} Σ_{y_j = y_i} [D_E(B^r_i, B^r_j) + m − D_E(B^r_i, B^r_k)]₊

    ``D_E(u_i, u_j) = ‖u_i − u_j‖₂`` on the (not normalised) ±1-relaxed codes, computed as
    :func:`hashlab.losses.distances.euclidean_distance` with ``normalize=False`` (finite gradient
    at coinciding codes). This is pytorch-metric-learning's ``TripletMarginLoss(margin,
    distance=LpDistance(normalize_embeddings=False))`` with its default ``AvgNonZeroReducer``.

    - ``margin=None`` (default): ``√k / 2``, a quarter of the diameter ``2√k`` of the ±1 code
      space (the same fraction as the Hamming loss's k/4 bits; for binary codes
      ``D_E = 2 √D_H``). The DPH summary gives no value;
    - ``mining``, ``reduction``, ``quantization_weight`` as :class:`HammingTripletLoss`;
    - ``code_range="01"`` for sigmoid codes: distances are then twice DPH's ``D_E`` on ``B^r``
      (so a paper margin ``m`` on ``B^r`` is ``2m`` here).
    """

    def default_margin(self, bits: int) -> float:
        return math.sqrt(bits) / 2.0

    def distance_matrix(self, codes: torch.Tensor) -> torch.Tensor:
        return euclidean_distance(codes, normalize=False)


# --------------------------------------------------------------------------- registry
# The classes take no num_classes; factory_for gives them the (num_classes, dim, **args) form.

LOSSES.register("dpsh")(factory_for(DPSHLoss))
LOSSES.register("hamming-triplet")(factory_for(HammingTripletLoss))
LOSSES.register("euclidean-triplet")(factory_for(EuclideanTripletLoss))
