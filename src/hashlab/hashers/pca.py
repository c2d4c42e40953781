"""PCA hashing (PCA-H) and iterative quantization (ITQ).

* PCA-H: ``h(x) = sgn(Wᵀ(x − μ))`` with ``W`` the top ``n_bits`` principal directions.
* ITQ: Gong & Lazebnik, "Iterative quantization: a Procrustean approach to learning binary
  codes", CVPR 2011 (and TPAMI 2013): ``h(x) = sgn(Rᵀ Wᵀ (x − μ))`` with the orthogonal
  rotation ``R`` minimising the quantization loss ``Q(B, R) = ‖B − V R‖_F²`` over
  ``B ∈ {−1, +1}^{n×c}``, ``V = (X − μ) W``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
from sklearn.utils import check_random_state

from hashlab.hashers.base import BaseHasher, random_orthogonal
from hashlab.hashers.registry import HASHERS
from hashlab.validation import check_int

__all__ = ["PCAHash", "ITQ", "fit_pca", "quantization_loss"]


def fit_pca(X: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, top principal directions ``[n_components, n_features]`` and their variances.

    Eigen-decomposition of the covariance ``(X − μ)ᵀ(X − μ) / (n − 1)`` (``n >= 2``),
    directions sorted by variance descending. Each direction's sign is fixed so that its
    entry of largest magnitude is positive, which makes the result reproducible.
    """
    mean = X.mean(axis=0)
    xc = X - mean
    cov = xc.T @ xc
    cov /= max(X.shape[0] - 1, 1)
    d = cov.shape[0]
    # only the top n_components eigenpairs (ascending order), much faster than a full eigh
    evals, evecs = scipy.linalg.eigh(cov, subset_by_index=[d - n_components, d - 1])
    order = np.arange(n_components)[::-1]  # eigenvalues descending (ties: eigh's order)
    components = evecs[:, order].T.copy()
    flip = np.sign(components[np.arange(n_components), np.argmax(np.abs(components), axis=1)])
    components *= np.where(flip == 0, 1.0, flip)[:, None]
    return mean, components, np.maximum(evals[order], 0.0)


def quantization_loss(V: np.ndarray) -> float:
    """``‖sgn(V) − V‖_F²`` with ``sgn(v) = +1 if v > 0 else −1`` (ITQ's loss at fixed R).

    Computed as ``Σ (1 − |v|)²``, which is the same entry by entry (also for ``v = 0``).
    """
    a = np.abs(V).ravel()
    a -= 1.0
    return float(a @ a)


@HASHERS.register("pcah")
class PCAHash(BaseHasher):
    """PCA hashing (PCA-H): the signs of the top ``n_bits`` principal components.

    ``h(x) = sgn(Wᵀ(x − μ))`` with μ the training mean and ``W`` ``[n_features, n_bits]`` the
    eigenvectors of the training covariance with the largest eigenvalues (e.g. Wang, Kumar &
    Chang, "Semi-supervised hashing for large-scale search", TPAMI 2012, the PCAH baseline).
    Takes one bit per principal direction, so ``n_bits <= n_features``.

    Parameters
    ----------
    n_bits : int, default=64
        Code length (number of principal directions).
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform``.

    Attributes
    ----------
    mean_ : ndarray [n_features]
    components_ : ndarray [n_bits, n_features]
        Principal directions, by variance descending.
    explained_variance_ : ndarray [n_bits]
    """

    _bits_le_features = True
    _min_samples = 2

    def __init__(self, n_bits: int = 64, output: str = "packed") -> None:
        self.n_bits = n_bits
        self.output = output

    def _fit(self, X: np.ndarray, y: Any) -> None:
        self.mean_, self.components_, self.explained_variance_ = fit_pca(X, int(self.n_bits))

    def _project(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.components_.T


@HASHERS.register("itq")
class ITQ(BaseHasher):
    """Iterative quantization (PCA-ITQ), Gong & Lazebnik, CVPR 2011.

    1. PCA: ``V = (X − μ) W`` with ``W`` the top ``c = n_bits`` principal directions.
    2. Start from a random orthogonal ``R`` (``random_state``) and alternate ``n_iter`` times

       * fix R, update B: ``B = sgn(V R)``;
       * fix B, update R (orthogonal Procrustes): ``Bᵀ V = S Ω Ŝᵀ`` (SVD), ``R = Ŝ Sᵀ``,
         which maximises ``tr(Bᵀ V R)``, i.e. minimises ``‖B − V R‖_F²`` over orthogonal R.

    3. ``h(x) = sgn(Rᵀ Wᵀ (x − μ))`` (row vector form: ``sgn((x − μ) W R)``).

    Both steps minimise ``Q(B, R) = ‖B − V R‖_F²`` exactly, so the loss never increases;
    ``quantization_loss_[t]`` is ``Q(sgn(V R_t), R_t)`` for the rotation after ``t`` updates
    (``t = 0``: the random initial rotation). ``sgn(v) = +1`` if ``v > 0`` else ``−1``.

    Parameters
    ----------
    n_bits : int, default=64
        Code length; ``n_bits <= n_features``.
    n_iter : int, default=50
        Number of rotation updates (the paper uses 50).
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform``.
    random_state : int, RandomState or None, default=None
        Seed of the initial random rotation.

    Attributes
    ----------
    mean_ : ndarray [n_features]
    components_ : ndarray [n_bits, n_features]
        Principal directions ``Wᵀ``.
    explained_variance_ : ndarray [n_bits]
    rotation_ : ndarray [n_bits, n_bits]
        The learned orthogonal ``R``.
    quantization_loss_ : ndarray [n_iter + 1]
        Loss history, non-increasing.
    """

    _bits_le_features = True
    _min_samples = 2

    def __init__(
        self,
        n_bits: int = 64,
        n_iter: int = 50,
        output: str = "packed",
        random_state: Any = None,
    ) -> None:
        self.n_bits = n_bits
        self.n_iter = n_iter
        self.output = output
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.n_iter, "n_iter", minimum=0)

    def _fit(self, X: np.ndarray, y: Any) -> None:
        c = int(self.n_bits)
        self.mean_, self.components_, self.explained_variance_ = fit_pca(X, c)
        V = (X - self.mean_) @ self.components_.T
        R = random_orthogonal(c, check_random_state(self.random_state))
        Z = V @ R
        losses = [quantization_loss(Z)]
        for _ in range(int(self.n_iter)):
            B = np.where(Z > 0, 1.0, -1.0)
            S, _, Sh_t = np.linalg.svd(B.T @ V)  # Bᵀ V = S Ω Ŝᵀ
            R = Sh_t.T @ S.T
            Z = V @ R
            losses.append(quantization_loss(Z))
        self.rotation_ = R
        self.quantization_loss_ = np.asarray(losses)
        self.projection_ = self.components_.T @ R

    def _project(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.projection_
