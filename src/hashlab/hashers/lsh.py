"""Random-hyperplane locality-sensitive hashing (SimHash).

Charikar, "Similarity estimation techniques from rounding algorithms", STOC 2002.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from hashlab.hashers.base import BaseHasher
from hashlab.hashers.registry import HASHERS

__all__ = ["LSH"]


@HASHERS.register("lsh")
class LSH(BaseHasher):
    """Sign random projections: ``h_j(x) = sgn(w_jᵀ (x − μ))`` with ``w_j ~ N(0, I)``.

    For two vectors at angle θ, each bit differs with probability ``θ / π``, so the expected
    normalised Hamming distance between their codes is ``θ / π`` (Charikar 2002). The method
    is data-independent; ``fit`` only draws the hyperplanes (and, with ``center=True``, the
    mean μ of the training data, so that angles are measured about the data's centre; with
    ``center=False`` μ = 0 and angles are about the origin). ``n_bits`` may exceed
    ``n_features``.

    Parameters
    ----------
    n_bits : int, default=64
        Code length.
    center : bool, default=False
        Subtract the training mean before projecting.
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform`` (see :mod:`hashlab.hashers.base`).
    random_state : int, RandomState or None, default=None
        Seed of the Gaussian hyperplanes.

    Attributes
    ----------
    projections_ : ndarray [n_features, n_bits]
        The hyperplane normals ``w_j`` (columns).
    mean_ : ndarray [n_features]
        μ (zeros when ``center=False``).
    """

    def __init__(
        self,
        n_bits: int = 64,
        center: bool = False,
        output: str = "packed",
        random_state: Any = None,
    ) -> None:
        self.n_bits = n_bits
        self.center = center
        self.output = output
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.center, (bool, np.bool_)):
            raise ValueError(f"center: expected a bool, got {self.center!r}")

    def _fit(self, X: np.ndarray, y: Any) -> None:
        rng = check_random_state(self.random_state)
        d = X.shape[1]
        self.mean_ = X.mean(axis=0) if self.center else np.zeros(d)
        self.projections_ = rng.standard_normal((d, int(self.n_bits)))

    def _project(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.projections_
