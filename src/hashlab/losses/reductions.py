"""How per-triplet losses become one scalar, the ``REDUCTIONS`` family.

A reduction is called as ``reduce(losses)`` on the ``[T]`` hinge values of the mined triplets.
With nothing to average (no triplet, or none with positive loss) it returns ``0``, still
connected to the graph, so ``backward()`` works and gives a zero gradient.
"""

from __future__ import annotations

import torch

from hashlab.losses.registry import REDUCTIONS

__all__ = ["avg_nonzero", "mean", "zero_loss"]


def zero_loss(x: torch.Tensor) -> torch.Tensor:
    """A zero loss that is still connected to the graph of ``x`` (so ``backward()`` works)."""
    return (x * 0.0).sum()


def _mean_or_zero(losses: torch.Tensor) -> torch.Tensor:
    return losses.mean() if len(losses) else losses.sum()


@REDUCTIONS.register("avg-nonzero", defaults={})
def avg_nonzero(losses: torch.Tensor) -> torch.Tensor:
    """Mean over the triplets whose loss is strictly positive (PML's ``AvgNonZeroReducer``).

    As pytorch-metric-learning's default reducer of ``TripletMarginLoss``: easy triplets do not
    dilute the gradient as training progresses.
    """
    return _mean_or_zero(losses[losses > 0])


@REDUCTIONS.register("mean", defaults={})
def mean(losses: torch.Tensor) -> torch.Tensor:
    """Mean over all mined triplets (Hermans et al.'s batch-hard loss)."""
    return _mean_or_zero(losses)
