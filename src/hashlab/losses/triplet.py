"""Triplet losses with online mining, softmax + triplet regularisation and the selectively
contrastive loss.

``L = [d(a, p) − d(a, n) + margin]₊`` over triplets mined from a (P×K) batch. The parts are
plug-ins of their own families, each in its module:

- the distance ``d`` (``DISTANCES``, :mod:`hashlab.losses.distances`): ``euclidean`` (on
  L2-normalised embeddings when ``normalize=True``, the default, as pytorch-metric-learning's
  ``LpDistance()``), ``cosine`` (``1 − cos(a, b)``, always normalised: the loss is then
  ``[S_an − S_ap + margin]₊`` as with pytorch-metric-learning's ``CosineSimilarity``), ...;
- the miner (``MINERS``, :mod:`hashlab.losses.miners`): ``batch-all``, ``batch-hard``,
  ``semi-hard``;
- the reduction (``REDUCTIONS``, :mod:`hashlab.losses.reductions`): ``avg-nonzero`` (the
  default) averages over the mined triplets whose loss is strictly positive, like
  pytorch-metric-learning's ``AvgNonZeroReducer`` (the default reducer of its
  ``TripletMarginLoss``), so easy triplets do not dilute the gradient as training progresses;
  ``mean`` averages over all mined triplets (Hermans et al.'s batch-hard).

With no mined triplet, or none with positive loss, the loss is ``0`` and still has a gradient.
:class:`MinedTripletLoss` holds the one hinge every triplet-style loss uses (this module's and the
deep-hashing code triplets of :mod:`hashlab.losses.hashing`). Formulas: ``docs/losses.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.factory import factory_for
from hashlab.losses.miners import Triplets, similarity_triplets
from hashlab.losses.reductions import zero_loss
from hashlab.losses.registry import DISTANCES, LOSSES, MINERS, REDUCTIONS
from hashlab.losses.softmax import SoftmaxLoss
from hashlab.validation import check_batch, check_choice, check_nonnegative, check_real

__all__ = [
    "SCT_MININGS",
    "MinedTripletLoss",
    "SelectivelyContrastiveLoss",
    "TripletLoss",
    "TripletRegularizedLoss",
]


class MinedTripletLoss(nn.Module):
    """Base of every triplet-style loss: ``[d(a,p) − d(a,n) + margin]₊`` over the triplets the
    miner ``mining`` picks from the batch, reduced by ``reduction``.

    A subclass gives :meth:`distance_matrix` and :meth:`margin_for` (and :meth:`prepare` if its
    inputs need a transform first); :meth:`triplet_loss` is the hinge itself.
    ``last_num_triplets`` / ``last_num_active`` hold the number of mined triplets and of those
    with positive loss in the latest call (for logging). ``mining`` and ``reduction`` accept any
    spelling of a registered key (``"batch_hard"`` is ``"batch-hard"``) and are stored as keys.
    """

    def __init__(self, mining: str = "batch-all", reduction: str = "avg-nonzero") -> None:
        super().__init__()
        self.mining = MINERS.canonical(mining, key="mining")
        self.reduction = REDUCTIONS.canonical(reduction, key="reduction")
        self.last_num_triplets = 0
        self.last_num_active = 0

    def distance_matrix(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, B]`` distances between the rows of ``x`` (after :meth:`prepare`)."""
        raise NotImplementedError

    def margin_for(self, x: torch.Tensor) -> float:
        """The margin for the batch ``x`` (after :meth:`prepare`)."""
        raise NotImplementedError

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the distances are computed on (the input itself by default)."""
        return x

    def mine(self, x: torch.Tensor, labels: torch.Tensor) -> Triplets:
        """The ``(anchor, positive, negative)`` index triplets this loss would use."""
        with torch.no_grad():
            x = self.prepare(x.detach())
            return MINERS.get(self.mining)(self.distance_matrix(x), labels, self.margin_for(x))

    def triplet_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The hinge alone, on prepared inputs ``x``: mine, ``[d_ap − d_an + margin]₊``, reduce."""
        margin = self.margin_for(x)
        dist = self.distance_matrix(x)
        a, p, n = MINERS.get(self.mining)(dist.detach(), labels, margin)
        losses = F.relu(dist[a, p] - dist[a, n] + margin)
        self.last_num_triplets, self.last_num_active = len(losses), int((losses > 0).sum())
        return REDUCTIONS.get(self.reduction)(losses)


class TripletLoss(MinedTripletLoss):
    """Triplet loss ``[d(a,p) − d(a,n) + margin]₊`` over triplets mined online from the batch.

    See the module docstring for the miners, distances and reductions. ``normalize`` L2-normalises
    the embeddings first for the distances where it matters (``euclidean``). No ``logits``: this
    loss has no classifier.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "batch-all",
        distance: str = "euclidean",
        normalize: bool = True,
        reduction: str = "avg-nonzero",
    ) -> None:
        margin = check_nonnegative(margin, "margin")
        super().__init__(mining, reduction)
        self.margin = margin
        self.distance = DISTANCES.canonical(distance, key="distance")
        self.normalize = normalize

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, "
                f"normalize={self.normalize}, reduction={self.reduction!r}")

    def distance_matrix(self, x: torch.Tensor) -> torch.Tensor:
        return DISTANCES.get(self.distance)(x, normalize=self.normalize)

    def margin_for(self, x: torch.Tensor) -> float:
        return self.margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(embeddings, labels)
        return self.triplet_loss(embeddings, labels)


class TripletRegularizedLoss(nn.Module):
    """``classifier(embeddings, labels) + weight · triplet(embeddings, labels)``.

    "In Defense of the Triplet Loss for Visual Recognition" (Taha et al. 2019): the triplet loss on
    the embedding regularises a softmax classifier, so one network serves both classification and
    retrieval at no extra inference cost. ``logits`` are the classifier's.
    """

    def __init__(self, classifier: nn.Module, triplet: TripletLoss, weight: float = 1.0) -> None:
        super().__init__()
        if not callable(getattr(classifier, "logits", None)):
            raise TypeError("classifier must expose logits(embeddings)")
        self.classifier, self.triplet = classifier, triplet
        self.weight = check_nonnegative(weight, "weight")

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier.logits(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings, labels) + self.weight * self.triplet(embeddings, labels)


#: the miners the selectively contrastive loss supports
SCT_MININGS = ("batch-hard", "batch-all")


class SelectivelyContrastiveLoss(nn.Module):
    """Selectively contrastive triplet loss ("Hard negative examples are hard, but useful",
    Xuan et al. 2020), on cosine similarities of L2-normalised embeddings.

    Per mined triplet: if the negative is harder than the positive (``S_an > S_ap``) only push the
    negative away, ``λ · S_an``; otherwise the NCA-style triplet loss
    ``−log(e^{S_ap/τ} / (e^{S_ap/τ} + e^{S_an/τ})) = softplus((S_an − S_ap)/τ)``.
    Averaged over the mined triplets (one per anchor with ``mining="batch-hard"``: its least
    similar positive and most similar negative; every valid triplet with ``"batch-all"``).
    No triplet → 0.
    """

    def __init__(self, tau: float = 0.1, lam: float = 1.0, mining: str = "batch-hard") -> None:
        super().__init__()
        self.tau = check_real(tau, "tau")
        self.lam = float(lam)
        self.mining = check_choice("mining", MINERS.canonical(mining, key="mining"), SCT_MININGS)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, lam={self.lam}, mining={self.mining!r}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_batch(embeddings, labels)
        s_ap, s_an, _ = similarity_triplets(embeddings, labels, self.mining)
        if len(s_ap) == 0:
            return zero_loss(embeddings)
        hard = s_an > s_ap
        losses = torch.where(hard, self.lam * s_an, F.softplus((s_an - s_ap) / self.tau))
        return losses.mean()


# --------------------------------------------------------------------------- registry

LOSSES.register("triplet")(factory_for(TripletLoss))
LOSSES.register("selective-contrastive")(factory_for(SelectivelyContrastiveLoss))


@LOSSES.register("softmax-triplet")
def softmax_triplet(
    num_classes: int,
    dim: int,
    weight: float = 1.0,
    margin: float = 0.2,
    mining: str = "semi-hard",
    distance: str = "euclidean",
    normalize: bool = True,
) -> nn.Module:
    """Softmax cross-entropy + weight · triplet loss (Taha et al. 2019)."""
    return TripletRegularizedLoss(
        SoftmaxLoss(num_classes, dim),
        TripletLoss(margin=margin, mining=mining, distance=distance, normalize=normalize),
        weight=weight,
    )
