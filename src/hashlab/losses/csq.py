"""CSQ: central similarity quantization with Hadamard or random hash centres, and the hash-centre
helpers that the other centre / codeword losses (``orthohash``, ``dpn``) share.

Yuan, Wang, Tay, Xie, Chen, Yuan & Feng 2020, "Central Similarity Quantization for Efficient
Image and Video Retrieval" (CVPR). Formulas and defaults: ``docs/losses.md``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from hashlab.losses.hashing import CODE_RANGES, check_codes, to_pm1
from hashlab.losses.registry import LOSSES
from hashlab.losses.softmax import quantization_penalty
from hashlab.validation import check_choice, check_int, check_nonnegative

__all__ = [
    "CENTRE_KINDS",
    "CSQLoss",
    "check_centre_labels",
    "hadamard_centres",
    "hash_centres",
    "min_pairwise_hamming",
    "multi_label_centres",
    "random_centres",
]

CENTRE_KINDS = ("auto", "hadamard", "random")


# --------------------------------------------------------------------------- centres


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def min_pairwise_hamming(centres: np.ndarray) -> int:
    """The smallest Hamming distance between two distinct rows of a ±1 matrix ``[C, k]``
    (``k`` when ``C < 2``: there is no pair)."""
    c = np.asarray(centres, dtype=np.int64)
    if len(c) < 2:
        return int(c.shape[1])
    dist = (c.shape[1] - c @ c.T) // 2
    return int(dist[np.triu_indices(len(c), 1)].min())


def hadamard_centres(num_classes: int, bits: int) -> np.ndarray:
    """The first ``num_classes`` rows of ``[H_k; −H_k]`` (``H_k`` the Sylvester Hadamard matrix):
    distinct rows are ``k/2`` bits apart, except a row and its negation (``k``)."""
    if not _is_power_of_two(bits):
        raise ValueError(f"dim: Hadamard centres need a power-of-two number of bits, got {bits}")
    if num_classes > 2 * bits:
        raise ValueError(
            f"num_classes: Hadamard centres of {bits} bits give at most {2 * bits} centres, "
            f"got {num_classes} classes (use centres='random')")
    h = scipy.linalg.hadamard(bits).astype(np.int64)
    return np.concatenate([h, -h])[:num_classes]


def random_centres(num_classes: int, bits: int, seed: int = 0,
                   min_distance: float | None = None, max_draws: int = 100
                   ) -> tuple[np.ndarray, int]:
    """Bernoulli(½) ±1 centres ``[C, k]`` and their minimum pairwise Hamming distance.

    The whole set is re-drawn (up to ``max_draws`` times, from ``np.random.default_rng(seed)``)
    until its minimum pairwise distance reaches ``min_distance`` (default ``k/4``); the set with
    the largest minimum distance drawn is kept."""
    target = bits / 4 if min_distance is None else min_distance
    rng = np.random.default_rng(seed)
    best, best_min = None, -1
    for _ in range(max_draws):
        c = rng.integers(0, 2, size=(num_classes, bits)) * 2 - 1
        d = min_pairwise_hamming(c)
        if d > best_min:
            best, best_min = c, d
        if best_min >= target:
            break
    return best, best_min


def hash_centres(num_classes: int, bits: int, kind: str = "auto", seed: int = 0,
                 min_distance: float | None = None, max_draws: int = 100
                 ) -> tuple[np.ndarray, int]:
    """Centres ``[C, k]`` (int ±1) and their minimum pairwise Hamming distance.

    ``kind``: ``"hadamard"`` (:func:`hadamard_centres`), ``"random"`` (:func:`random_centres`) or
    ``"auto"``: Hadamard when ``k`` is a power of two and ``C <= 2k``, else random (CSQ's rule)."""
    check_choice("centres", kind, CENTRE_KINDS)
    num_classes, bits = check_int(num_classes, "num_classes"), check_int(bits, "dim")
    check_int(max_draws, "max_draws")
    if min_distance is not None:
        check_nonnegative(min_distance, "min_distance")
    if kind == "auto":
        kind = "hadamard" if _is_power_of_two(bits) and num_classes <= 2 * bits else "random"
    if kind == "hadamard":
        c = hadamard_centres(num_classes, bits)
        return c, min_pairwise_hamming(c)
    return random_centres(num_classes, bits, seed, min_distance, max_draws)


def multi_label_centres(labels: torch.Tensor, centres: torch.Tensor,
                        tie_breaker: torch.Tensor) -> torch.Tensor:
    """CSQ's centre of a multi-label item: ``sgn(mean of its labels' centres)``, bit by bit; a
    tie (0, also for an item without labels) takes the bit of the fixed random ±1 ``tie_breaker``.

    ``labels`` multi-hot ``[B, C]`` (non-zero = has the label); returns ``[B, k]``."""
    total = (labels != 0).to(centres.dtype) @ centres  # exact: integers, sign of mean = of sum
    return torch.where(total == 0, tie_breaker.expand_as(total), torch.sign(total))


def check_centre_labels(codes: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        multi_label: bool) -> None:
    """``labels``: int class ids ``[B]`` in ``[0, C)``, or (``multi_label``) multi-hot
    ``[B, C]``."""
    if labels.ndim == 0 or labels.shape[0] != codes.shape[0]:
        raise ValueError(f"labels must have {codes.shape[0]} rows (one per code), got shape "
                         f"{tuple(labels.shape)}")
    if labels.ndim == 2 and multi_label:
        if labels.shape[1] != num_classes:
            raise ValueError(f"labels: multi-hot labels must have {num_classes} columns, got "
                             f"shape {tuple(labels.shape)}")
        return
    if labels.ndim != 1:
        expected = "[batch] or multi-hot [batch, classes]" if multi_label else "[batch]"
        raise ValueError(f"labels must have shape {expected}, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


class CentreLoss(nn.Module):
    """Base of the losses with fixed ±1 class centres (a buffer ``centres [C, k]``, saved in
    checkpoints): input checks, the ±1 mapping of the codes, and the Hamming logits."""

    multi_label = False

    def __init__(self, num_classes: int, dim: int, centres: str, seed: int,
                 min_distance: float | None, max_draws: int, quantization_weight: float,
                 code_range: str) -> None:
        super().__init__()
        check_choice("code_range", code_range, CODE_RANGES)
        self.quantization_weight = check_nonnegative(quantization_weight, "quantization_weight")
        self.code_range, self.seed = code_range, check_int(seed, "seed", minimum=0)
        c, self.min_distance_ = hash_centres(num_classes, dim, centres, seed, min_distance,
                                             max_draws)
        self.num_classes, self.dim, self.centre_kind = int(num_classes), int(dim), centres
        self.register_buffer("centres", torch.as_tensor(c, dtype=torch.float32))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, centres={self.centre_kind!r}, "
                f"min_distance_={self.min_distance_}, "
                f"quantization_weight={self.quantization_weight}, "
                f"code_range={self.code_range!r}")

    def prepare(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Check the inputs; the codes in ``[−1, 1]`` (see :func:`to_pm1`)."""
        check_codes(codes, self.dim)
        if labels is not None:
            check_centre_labels(codes, labels, self.num_classes, self.multi_label)
        return to_pm1(codes, self.code_range)

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """``−D_H(v, c_y) = −½ (k − vᵀc_y)`` for every class: the nearest centre scores highest."""
        v = self.prepare(codes, None)
        return -0.5 * (self.dim - v @ self.centres.to(v.dtype).T)

    def quantization(self, v: torch.Tensor) -> torch.Tensor | float:
        return self.quantization_weight * quantization_penalty(v) if self.quantization_weight \
            else 0.0


# --------------------------------------------------------------------------- CSQ


@LOSSES.register("csq")
class CSQLoss(CentreLoss):
    """CSQ (Yuan et al. 2020): binary cross-entropy of every bit to the item's hash centre +
    λ · quantization.

    With ``v`` the ±1-relaxed code, ``c`` the item's centre (its class's; for multi-hot labels
    ``sgn`` of the mean of its labels' centres, ties broken by a fixed seeded random vector)::

        L = −1/(B k) Σ_i Σ_j [ c'_ij log h_ij + (1 − c'_ij) log(1 − h_ij) ]  +  λ mean((|v| − 1)²)

    with ``h = (v + 1)/2``, ``c' = (c + 1)/2``. Centres (``centres=``): ``"hadamard"`` rows of
    ``[H_k; −H_k]``; ``"random"`` Bernoulli ±1, re-drawn to reach a minimum pairwise distance
    (``min_distance``, default ``k/4``); ``"auto"`` (default) Hadamard when ``k`` is a power of
    two and ``C <= 2k``. ``min_distance_`` is the achieved minimum pairwise Hamming distance.

    ``λ = quantization_weight`` defaults to 1e-4, the ``lambda`` of the authors' code, which uses
    this squared penalty (the paper writes a ``log cosh`` one).
    """

    multi_label = True

    def __init__(self, num_classes: int, dim: int, quantization_weight: float = 1e-4,
                 centres: str = "auto", seed: int = 0, min_distance: float | None = None,
                 max_draws: int = 100, code_range: str = "pm1") -> None:
        super().__init__(num_classes, dim, centres, seed, min_distance, max_draws,
                         quantization_weight, code_range)
        g = np.random.default_rng([seed, 1])
        self.register_buffer(
            "tie_breaker", torch.as_tensor(g.integers(0, 2, size=dim) * 2 - 1,
                                           dtype=torch.float32))

    def item_centres(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The hash centre of each item ``[B, k]`` (class ids or multi-hot labels)."""
        centres = self.centres.to(dtype)
        if labels.ndim == 2:
            return multi_label_centres(labels, centres, self.tie_breaker.to(dtype))
        return centres[labels]

    def central_loss(self, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The central similarity term alone, on ±1-relaxed codes."""
        c = self.item_centres(labels, v.dtype)
        return F.binary_cross_entropy((v + 1) / 2, (c + 1) / 2)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        v = self.prepare(codes, labels)
        return self.central_loss(v, labels) + self.quantization(v)
