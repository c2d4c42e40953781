"""Kernelized locality-sensitive hashing (KLSH) with an RBF kernel.

Kulis & Grauman, "Kernelized locality-sensitive hashing for scalable image search", ICCV 2009
(and TPAMI 2012).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.utils import check_random_state

from hashlab.hashers.base import BaseHasher
from hashlab.hashers.registry import HASHERS
from hashlab.validation import check_int, check_real

__all__ = ["KernelLSH", "default_gamma"]

_CHUNK = 8192  # rows per kernel evaluation in transform


def default_gamma(X: np.ndarray) -> float:
    """``1 / (n_features · Var(X))`` (scikit-learn's ``gamma="scale"``); 1.0 if Var(X) = 0."""
    var = float(X.var())
    return 1.0 / (X.shape[1] * var) if var > 0 else 1.0


@HASHERS.register("klsh")
class KernelLSH(BaseHasher):
    """KLSH: random hyperplanes in the RBF kernel's feature space, Kulis & Grauman 2009.

    ``h(x) = sgn(Σ_{t=1}^{p} w_t κ̄(s_t, x))`` with ``κ(a, x) = exp(−γ ‖a − x‖²)``.

    ``p = min(n_anchors, n_samples)`` anchors ``s_t`` are drawn from the training data
    (``random_state``); ``K̄ = H K H`` (``H = I − 11ᵀ/p``) is their kernel matrix centred in
    feature space and ``κ̄(s_t, x)`` the correspondingly centred kernel value. For each bit a
    random subset ``S`` of ``t = n_samples_per_bit`` anchors is drawn; by the central limit
    theorem the whitened mean of their feature vectors approximates a standard Gaussian
    direction, which in kernel form is ``w = K̄^{−1/2} e_S`` (``e_S`` the indicator of ``S``,
    ``K̄^{−1/2}`` the pseudo-inverse square root: eigenvalues below ``1e-10 · λ_max`` are
    dropped). Like LSH the codes approximate angles, here between centred feature vectors.

    Parameters
    ----------
    n_bits : int, default=64
        Code length.
    n_anchors : int, default=300
        Number of anchor points ``p`` (the paper uses a few hundred).
    n_samples_per_bit : int, default=30
        Subset size ``t`` (the paper uses 30); at most ``p − 1`` is used.
    gamma : float or None, default=None
        RBF width; None means ``1 / (n_features · Var(X))``.
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform``.
    random_state : int, RandomState or None, default=None
        Seed of the anchors and of the subsets.

    Attributes
    ----------
    anchors_ : ndarray [p, n_features]
    gamma_ : float
    weights_ : ndarray [p, n_bits]
        The ``w`` of each bit (columns).
    kernel_col_mean_ : ndarray [p]
        Column means of the anchor kernel matrix (for centring).
    kernel_mean_ : float
        Mean of the anchor kernel matrix.
    """

    _min_samples = 2

    def __init__(
        self,
        n_bits: int = 64,
        n_anchors: int = 300,
        n_samples_per_bit: int = 30,
        gamma: float | None = None,
        output: str = "packed",
        random_state: Any = None,
    ) -> None:
        self.n_bits = n_bits
        self.n_anchors = n_anchors
        self.n_samples_per_bit = n_samples_per_bit
        self.gamma = gamma
        self.output = output
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.n_anchors, "n_anchors", minimum=2)
        check_int(self.n_samples_per_bit, "n_samples_per_bit")
        if self.gamma is not None:
            check_real(self.gamma, "gamma")

    def _fit(self, X: np.ndarray, y: Any) -> None:
        rng = check_random_state(self.random_state)
        n = X.shape[0]
        p = min(int(self.n_anchors), n)
        self.anchors_ = X[np.sort(rng.choice(n, p, replace=False))]
        self.gamma_ = float(self.gamma) if self.gamma is not None else default_gamma(X)
        K = rbf_kernel(self.anchors_, gamma=self.gamma_)
        self.kernel_col_mean_ = K.mean(axis=0)
        self.kernel_mean_ = float(K.mean())
        Kc = K - self.kernel_col_mean_[None, :] - self.kernel_col_mean_[:, None]
        Kc += self.kernel_mean_
        evals, evecs = np.linalg.eigh((Kc + Kc.T) / 2)
        keep = evals > 1e-10 * max(float(evals.max()), 0.0)
        if not keep.any():
            inv_sqrt = np.zeros_like(K)
        else:
            u = evecs[:, keep]
            inv_sqrt = (u / np.sqrt(evals[keep])) @ u.T
        t = min(int(self.n_samples_per_bit), p - 1)
        e = np.zeros((p, int(self.n_bits)))
        for b in range(int(self.n_bits)):
            e[rng.choice(p, t, replace=False), b] = 1.0
        self.weights_ = inv_sqrt @ e

    def _centred_kernel(self, X: np.ndarray) -> np.ndarray:
        """Centred kernel values ``[n, p]``:

        ``κ̄(x, s_t) = κ(x, s_t) − mean_j κ(x, s_j) − mean_j κ(s_j, s_t) + mean_ij κ(s_i, s_j)``.
        (The row-mean term does not change the projections, ``1ᵀw = 0``, but keeps κ̄ exact.)
        """
        k = rbf_kernel(X, self.anchors_, gamma=self.gamma_)
        row_mean = k.mean(axis=1, keepdims=True)
        k -= self.kernel_col_mean_[None, :]
        k -= row_mean
        k += self.kernel_mean_
        return k

    def _project(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], int(self.n_bits)))
        for start in range(0, X.shape[0], _CHUNK):
            stop = start + _CHUNK
            out[start:stop] = self._centred_kernel(X[start:stop]) @ self.weights_
        return out
