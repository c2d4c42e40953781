"""Triplet losses with online mining, softmax + triplet regularisation, the selectively
contrastive loss, and the "triplet diagram" recorder.

``L = [d(a, p) − d(a, n) + margin]₊`` over triplets mined from a (P×K) batch:

- ``batch_all``: every valid triplet (a ≠ p same class, n another class);
- ``batch_hard`` (Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification"):
  per anchor, its farthest positive and its closest negative;
- ``semi_hard`` (FaceNet): every triplet with ``d(a,p) < d(a,n) ≤ d(a,p) + margin``: all
  semi-hard negatives of each (a, p) pair, not one per pair — this is exactly what
  pytorch-metric-learning's ``TripletMarginMiner(type_of_triplets="semihard")`` returns.

Reduction (``reduction="avg_nonzero"``, the default) averages the loss over the mined triplets whose
loss is strictly positive, like pytorch-metric-learning's ``AvgNonZeroReducer`` (the default reducer
of its ``TripletMarginLoss``); so easy triplets do not dilute the gradient as training progresses.
``reduction="mean"`` averages over all mined triplets instead (Hermans et al.'s batch-hard).
With no mined triplet, or none with positive loss, the loss is ``0`` and still has a gradient.

Distances: ``"euclidean"`` (on L2-normalised embeddings when ``normalize=True``, the default, as
pytorch-metric-learning's ``LpDistance()``), or ``"cosine"``: ``1 − cos(a, b)`` (always normalised;
the triplet loss is then ``[S_an − S_ap + margin]₊`` as with pytorch-metric-learning's
``CosineSimilarity``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import SoftmaxLoss

DISTANCES = ("euclidean", "cosine")
Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- distances


def pairwise_distance(
    embeddings: torch.Tensor, distance: str = "euclidean", normalize: bool = True
) -> torch.Tensor:
    """``[B, B]`` matrix of distances between the rows of ``embeddings``.

    ``"euclidean"``: ``‖x_i − x_j‖₂``, on L2-normalised rows when ``normalize``; computed from the
    Gram matrix, clamped at 0, with a square root whose gradient is 0 (not inf/NaN) where the
    distance is 0 (identical embeddings, the diagonal). ``"cosine"``: ``1 − cos(x_i, x_j)`` (zero
    vectors have cosine 0 with everything).
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; known: {', '.join(DISTANCES)}")
    if distance == "cosine":
        return 1.0 - cosine_similarity_matrix(embeddings)
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device))  # exact zero diagonal
    positive = d2 > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, d2, torch.ones_like(d2))), 0.0)


def cosine_similarity_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` cosine similarities ``x̂_i · x̂_j`` of the L2-normalised rows."""
    x = F.normalize(embeddings, dim=1)
    return x @ x.T


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` boolean ``[B, B]`` masks: same label but not self / other label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


# --------------------------------------------------------------------------- miners
# Each miner maps (distance matrix, labels, margin) to index tensors (anchor, positive, negative).
# Miners select indices only; they run without gradient.


@torch.no_grad()
def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every valid triplet: ``labels[a] == labels[p]``, ``a != p``, ``labels[n] != labels[a]``."""
    pos, neg = _pair_masks(labels)
    a, p, n = torch.nonzero(pos[:, :, None] & neg[:, None, :], as_tuple=True)
    return a, p, n


@torch.no_grad()
def mine_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """All valid triplets (``dist`` and ``margin`` are unused; the reducer drops easy ones)."""
    return all_triplets(labels)


@torch.no_grad()
def mine_batch_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """Per anchor with at least one positive and one negative: its farthest positive and its
    closest negative (as pytorch-metric-learning's ``BatchHardMiner``)."""
    pos, neg = _pair_masks(labels)
    if len(labels) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=labels.device)
        return empty, empty, empty
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    hardest_pos = torch.where(pos, dist, -inf).argmax(1)
    hardest_neg = torch.where(neg, dist, inf).argmin(1)
    anchors = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


@torch.no_grad()
def mine_semi_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> Triplets:
    """Every semi-hard triplet ``d(a,p) < d(a,n) ≤ d(a,p) + margin`` (FaceNet): the negative is
    farther than the positive but still inside the margin. All such negatives of each (a, p) pair
    are kept, matching ``TripletMarginMiner(margin, type_of_triplets="semihard")``."""
    a, p, n = all_triplets(labels)
    gap = dist[a, n] - dist[a, p]
    keep = (gap > 0) & (gap <= margin)
    return a[keep], p[keep], n[keep]


MINERS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], Triplets]] = {
    "batch_all": mine_batch_all,
    "batch_hard": mine_batch_hard,
    "semi_hard": mine_semi_hard,
}
REDUCTIONS = ("avg_nonzero", "mean")


def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape [batch, dim], got {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"labels must have shape [{embeddings.shape[0]}], got {tuple(labels.shape)}"
        )


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    """A zero loss that is still connected to the graph (so ``backward()`` works)."""
    return (embeddings * 0.0).sum()


def _check_choice(name: str, value: str, known: tuple[str, ...] | dict) -> None:
    if value not in known:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(known)}")


# --------------------------------------------------------------------------- losses


class TripletLoss(nn.Module):
    """``[d(a,p) − d(a,n) + margin]₊`` over triplets mined online from the batch.

    See the module docstring for the miners, distances and the reduction. No ``logits``: this loss
    has no classifier. ``last_num_triplets`` / ``last_num_active`` hold the number of mined
    triplets and of those with positive loss in the latest call (for logging).
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "batch_all",
        distance: str = "euclidean",
        normalize: bool = True,
        reduction: str = "avg_nonzero",
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        _check_choice("mining", mining, MINERS)
        _check_choice("distance", distance, DISTANCES)
        _check_choice("reduction", reduction, REDUCTIONS)
        self.margin, self.mining, self.distance = float(margin), mining, distance
        self.normalize, self.reduction = normalize, reduction
        self.last_num_triplets = 0
        self.last_num_active = 0

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, mining={self.mining!r}, distance={self.distance!r}, "
                f"normalize={self.normalize}, reduction={self.reduction!r}")

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        """The triplets this loss would use for the batch."""
        with torch.no_grad():
            dist = pairwise_distance(embeddings.detach(), self.distance, self.normalize)
            return MINERS[self.mining](dist, labels, self.margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        dist = pairwise_distance(embeddings, self.distance, self.normalize)
        a, p, n = MINERS[self.mining](dist.detach(), labels, self.margin)
        losses = F.relu(dist[a, p] - dist[a, n] + self.margin)
        active = losses > 0
        self.last_num_triplets, self.last_num_active = len(losses), int(active.sum())
        if self.reduction == "avg_nonzero":
            losses = losses[active]
        if len(losses) == 0:
            return _zero(embeddings)
        return losses.mean()


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
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.classifier, self.triplet, self.weight = classifier, triplet, float(weight)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier.logits(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings, labels) + self.weight * self.triplet(embeddings, labels)


SCT_MININGS = ("batch_hard", "batch_all")


def _similarity_triplets(
    embeddings: torch.Tensor, labels: torch.Tensor, mining: str
) -> tuple[torch.Tensor, torch.Tensor, Triplets]:
    """``(S_ap, S_an, (a, p, n))`` on L2-normalised embeddings; batch-hard means the least similar
    positive and the most similar negative of each anchor."""
    sim = cosine_similarity_matrix(embeddings)
    a, p, n = MINERS[mining](1.0 - sim.detach(), labels, 0.0)
    return sim[a, p], sim[a, n], (a, p, n)


class SelectivelyContrastiveLoss(nn.Module):
    """Selectively contrastive triplet loss ("Hard negative examples are hard, but useful",
    Xuan et al. 2020), on cosine similarities of L2-normalised embeddings.

    Per mined triplet: if the negative is harder than the positive (``S_an > S_ap``) only push the
    negative away, ``λ · S_an``; otherwise the NCA-style triplet loss
    ``−log(e^{S_ap/τ} / (e^{S_ap/τ} + e^{S_an/τ})) = softplus((S_an − S_ap)/τ)``.
    Averaged over the mined triplets (one per anchor with ``mining="batch_hard"``: its least similar
    positive and most similar negative; every valid triplet with ``"batch_all"``). No triplet → 0.
    """

    def __init__(self, tau: float = 0.1, lam: float = 1.0, mining: str = "batch_hard") -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        _check_choice("mining", mining, SCT_MININGS)
        self.tau, self.lam, self.mining = float(tau), float(lam), mining

    def extra_repr(self) -> str:
        return f"tau={self.tau}, lam={self.lam}, mining={self.mining!r}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        s_ap, s_an, _ = _similarity_triplets(embeddings, labels, self.mining)
        if len(s_ap) == 0:
            return _zero(embeddings)
        hard = s_an > s_ap
        losses = torch.where(hard, self.lam * s_an, F.softplus((s_an - s_ap) / self.tau))
        return losses.mean()


# --------------------------------------------------------------------------- triplet diagram


class TripletDiagram:
    """Records ``(S_an, S_ap)`` cosine similarities of triplets over training, to draw the
    "triplet diagram" of Xuan et al. (points above the diagonal ``S_ap = S_an`` are already
    correctly ordered; points below it are hard triplets, whose negative is closer than the
    positive).

    ``mode="hardest"``: per anchor, its least similar positive and most similar negative;
    ``mode="random"``: a random positive and a random negative per anchor (seeded by ``seed``).
    Anchors without a positive or a negative in the batch are skipped.
    """

    MODES = ("hardest", "random")

    def __init__(self, mode: str = "hardest", seed: int = 0) -> None:
        _check_choice("mode", mode, self.MODES)
        self.mode = mode
        self._generator = torch.Generator().manual_seed(seed)
        self._s_ap: list[np.ndarray] = []
        self._s_an: list[np.ndarray] = []

    def reset(self) -> None:
        self._s_ap, self._s_an = [], []

    @torch.no_grad()
    def record(
        self, embeddings: torch.Tensor, labels: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add one batch; returns this batch's ``(s_ap, s_an)`` (one entry per used anchor)."""
        _check_batch(embeddings, labels)
        emb = embeddings.detach().cpu().double()
        labels = labels.detach().cpu()
        if self.mode == "hardest":
            s_ap, s_an, _ = _similarity_triplets(emb, labels, "batch_hard")
        else:
            sim = cosine_similarity_matrix(emb)
            pos, neg = _pair_masks(labels)
            anchors = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
            p = torch.multinomial(pos[anchors].double(), 1, generator=self._generator)[:, 0]
            n = torch.multinomial(neg[anchors].double(), 1, generator=self._generator)[:, 0]
            s_ap, s_an = sim[anchors, p], sim[anchors, n]
        s_ap, s_an = s_ap.numpy().copy(), s_an.numpy().copy()
        self._s_ap.append(s_ap)
        self._s_an.append(s_an)
        return s_ap, s_an

    @property
    def s_ap(self) -> np.ndarray:
        return np.concatenate(self._s_ap) if self._s_ap else np.zeros(0)

    @property
    def s_an(self) -> np.ndarray:
        return np.concatenate(self._s_an) if self._s_an else np.zeros(0)

    @property
    def num_batches(self) -> int:
        return len(self._s_ap)

    def to_dict(self) -> dict[str, Any]:
        """Summary: counts, the fraction of hard triplets (``S_an > S_ap``), mean similarities."""
        s_ap, s_an = self.s_ap, self.s_an
        n = len(s_ap)

        def mean(x: np.ndarray) -> float | None:
            return float(x.mean()) if n else None

        return {
            "mode": self.mode,
            "num_batches": self.num_batches,
            "num_triplets": n,
            "fraction_hard": mean((s_an > s_ap).astype(float)),
            "fraction_within_0.1": mean((s_an > s_ap - 0.1).astype(float)),
            "mean_s_ap": mean(s_ap),
            "mean_s_an": mean(s_an),
            "mean_gap": mean(s_ap - s_an),
        }

    def plot(self, path: str | Path, title: str | None = None, hexbin_above: int = 2000) -> Path:
        """Draw ``S_an`` (x) against ``S_ap`` (y) with the diagonal; a hexbin when there are more
        than ``hexbin_above`` points, else a scatter. Written atomically as a PNG."""
        from io import BytesIO

        from matplotlib.figure import Figure

        from hashlab.io import atomic_write

        s_ap, s_an = self.s_ap, self.s_an
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot()
        if len(s_ap) > hexbin_above:
            hb = ax.hexbin(s_an, s_ap, gridsize=50, extent=(-1, 1, -1, 1), mincnt=1, bins="log",
                           cmap="viridis")
            fig.colorbar(hb, ax=ax, label="triplets (log)")
        elif len(s_ap):
            ax.scatter(s_an, s_ap, s=6, alpha=0.5, color="tab:blue", linewidths=0)
        ax.plot([-1, 1], [-1, 1], "--", color="tab:red", lw=1, label="$S_{ap} = S_{an}$")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-1.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("$S_{an}$ (anchor–negative cosine similarity)")
        ax.set_ylabel("$S_{ap}$ (anchor–positive cosine similarity)")
        summary = self.to_dict()
        if summary["num_triplets"]:
            ax.text(0.02, 0.98, f"n = {summary['num_triplets']}\n"
                    f"hard (S_an > S_ap): {summary['fraction_hard']:.1%}",
                    transform=ax.transAxes, va="top", fontsize=8)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(title or f"triplet diagram ({self.mode})")
        fig.tight_layout()
        buf = BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return atomic_write(path, lambda f: f.write(buf.getvalue()))


# --------------------------------------------------------------------------- registry


@LOSSES.register("triplet")
def triplet(
    num_classes: int,
    dim: int,
    margin: float = 0.2,
    mining: str = "batch_all",
    distance: str = "euclidean",
    normalize: bool = True,
    reduction: str = "avg_nonzero",
) -> nn.Module:
    return TripletLoss(margin=margin, mining=mining, distance=distance, normalize=normalize,
                       reduction=reduction)


@LOSSES.register("softmax_triplet")
def softmax_triplet(
    num_classes: int,
    dim: int,
    weight: float = 1.0,
    margin: float = 0.2,
    mining: str = "semi_hard",
    distance: str = "euclidean",
    normalize: bool = True,
) -> nn.Module:
    return TripletRegularizedLoss(
        SoftmaxLoss(num_classes, dim),
        TripletLoss(margin=margin, mining=mining, distance=distance, normalize=normalize),
        weight=weight,
    )


@LOSSES.register("selective_contrastive")
def selective_contrastive(
    num_classes: int, dim: int, tau: float = 0.1, lam: float = 1.0, mining: str = "batch_hard"
) -> nn.Module:
    return SelectivelyContrastiveLoss(tau=tau, lam=lam, mining=mining)
