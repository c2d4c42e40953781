"""Online triplet mining, the ``MINERS`` family: which ``(anchor, positive, negative)`` triplets
of a batch a triplet loss uses.

A miner is called as ``miner(dist, labels, margin)`` with ``dist`` the ``[B, B]`` distance
matrix of the batch (see :mod:`hashlab.losses.distances`), ``labels`` the ``[B]`` class ids and
``margin`` the loss's margin, and returns three index tensors. Miners select indices only; they
run without gradient.

- ``batch-all``: every valid triplet (a ≠ p same class, n another class);
- ``batch-hard`` (Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification"):
  per anchor, its farthest positive and its closest negative;
- ``semi-hard`` (FaceNet): every triplet with ``d(a,p) < d(a,n) ≤ d(a,p) + margin``: all
  semi-hard negatives of each (a, p) pair, not one per pair — exactly what
  pytorch-metric-learning's ``TripletMarginMiner(type_of_triplets="semihard")`` returns.
"""

from __future__ import annotations

import torch

from hashlab.losses.distances import cosine_similarity_matrix
from hashlab.losses.registry import MINERS

__all__ = [
    "Triplets",
    "all_triplets",
    "mine_batch_all",
    "mine_batch_hard",
    "mine_semi_hard",
    "pair_masks",
    "similarity_triplets",
]

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` boolean ``[B, B]`` masks: same label but not self / other label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


@torch.no_grad()
def all_triplets(labels: torch.Tensor) -> Triplets:
    """Every valid triplet: ``labels[a] == labels[p]``, ``a != p``, ``labels[n] != labels[a]``."""
    pos, neg = pair_masks(labels)
    a, p, n = torch.nonzero(pos[:, :, None] & neg[:, None, :], as_tuple=True)
    return a, p, n


@MINERS.register("batch-all", defaults={})
@torch.no_grad()
def mine_batch_all(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """Every valid triplet of the batch (the reduction drops the easy ones).

    ``dist`` and ``margin`` are unused.
    """
    return all_triplets(labels)


@MINERS.register("batch-hard", defaults={})
@torch.no_grad()
def mine_batch_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """Per anchor, its farthest positive and its closest negative (Hermans et al. 2017).

    Only anchors with at least one positive and one negative; as pytorch-metric-learning's
    ``BatchHardMiner``.
    """
    pos, neg = pair_masks(labels)
    if len(labels) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=labels.device)
        return empty, empty, empty
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    hardest_pos = torch.where(pos, dist, -inf).argmax(1)
    hardest_neg = torch.where(neg, dist, inf).argmin(1)
    anchors = torch.nonzero(pos.any(1) & neg.any(1), as_tuple=True)[0]
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


@MINERS.register("semi-hard", defaults={})
@torch.no_grad()
def mine_semi_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float = 0.2) -> Triplets:
    """Every semi-hard triplet, ``d(a,p) < d(a,n) ≤ d(a,p) + margin`` (FaceNet).

    The negative is farther than the positive but still inside the margin. All such negatives of
    each (a, p) pair are kept, matching ``TripletMarginMiner(margin, type_of_triplets="semihard")``.
    """
    a, p, n = all_triplets(labels)
    gap = dist[a, n] - dist[a, p]
    keep = (gap > 0) & (gap <= margin)
    return a[keep], p[keep], n[keep]


def similarity_triplets(
    embeddings: torch.Tensor, labels: torch.Tensor, mining: str
) -> tuple[torch.Tensor, torch.Tensor, Triplets]:
    """``(S_ap, S_an, (a, p, n))``: cosine similarities of the triplets the miner ``mining``
    picks on the cosine distance of the L2-normalised embeddings (with ``batch-hard``: the least
    similar positive and the most similar negative of each anchor)."""
    sim = cosine_similarity_matrix(embeddings)
    a, p, n = MINERS.get(mining, key="mining")(1.0 - sim.detach(), labels, 0.0)
    return sim[a, p], sim[a, n], (a, p, n)
