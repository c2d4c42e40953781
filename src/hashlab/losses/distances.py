"""Pairwise distance matrices of a batch, the ``DISTANCES`` family of the triplet losses.

Each distance maps a batch ``x`` ``[B, d]`` to a ``[B, B]`` matrix and is called as
``distance(x, normalize=...)``; ``normalize`` asks for L2-normalised rows where that changes the
distance (``euclidean``), and is ignored where it does not apply (``cosine`` is always on
normalised rows, ``hamming`` never is). The formulas are in ``docs/losses.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hashlab.losses.registry import DISTANCES

__all__ = [
    "cosine_distance",
    "cosine_similarity_matrix",
    "euclidean_distance",
    "hamming_distance_matrix",
    "pairwise_distance",
]


@DISTANCES.register("euclidean", defaults={})
def euclidean_distance(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Euclidean distance ``‖x_i − x_j‖₂``, on L2-normalised rows when ``normalize``.

    As pytorch-metric-learning's ``LpDistance(normalize_embeddings=normalize)``. Computed from the
    Gram matrix, clamped at 0, with a square root whose gradient is 0 (not inf/NaN) where the
    distance is 0 (identical rows, the diagonal, which is exactly 0).
    """
    if normalize:
        x = F.normalize(x, dim=1)
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device))  # exact zero diagonal
    positive = d2 > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, d2, torch.ones_like(d2))), 0.0)


def cosine_similarity_matrix(x: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` cosine similarities ``x̂_i · x̂_j`` of the L2-normalised rows (a zero row has
    cosine 0 with everything)."""
    x = F.normalize(x, dim=1)
    return x @ x.T


@DISTANCES.register("cosine", defaults={})
def cosine_distance(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Cosine distance ``1 − cos(x_i, x_j)`` (rows always normalised; ``normalize`` is ignored).

    A triplet hinge on it is ``[S_an − S_ap + margin]₊``, as with pytorch-metric-learning's
    ``CosineSimilarity``.
    """
    return 1.0 - cosine_similarity_matrix(x)


@DISTANCES.register("hamming", defaults={})
def hamming_distance_matrix(codes: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Relaxed Hamming distance ``½ (k − u_iᵀ u_j)`` of ±1-relaxed k-bit codes (``normalize`` is
    ignored).

    For exact ±1 codes this is the Hamming distance (``u_iᵀu_j = k − 2 D_H``). For relaxed codes
    it is an affine function of the inner product (so the diagonal ``½ (k − ‖u_i‖²)`` is not 0
    unless the code is binary; the triplet losses never use it).
    """
    k = codes.shape[1]
    return 0.5 * (k - codes @ codes.T)


def pairwise_distance(
    embeddings: torch.Tensor, distance: str = "euclidean", normalize: bool = True
) -> torch.Tensor:
    """``[B, B]`` matrix of the registered ``distance`` between the rows of ``embeddings``.

    Unknown names raise a :class:`~hashlab.errors.ConfigError` (a ``ValueError``) listing the
    registered distances.
    """
    return DISTANCES.get(distance, key="distance")(embeddings, normalize=normalize)
