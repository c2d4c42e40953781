"""Spectral hashing, Weiss, Torralba & Fergus, "Spectral hashing", NIPS 2008.

A faithful port of the authors' MATLAB code (``trainSH.m`` / ``compressSH.m``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hashlab.hashers.base import BaseHasher
from hashlab.hashers.pca import fit_pca
from hashlab.hashers.registry import HASHERS

__all__ = ["SpectralHashing", "spectral_modes"]

_EPS = float(np.finfo(np.float64).eps)  # MATLAB's eps


def spectral_modes(ranges: np.ndarray, n_bits: int) -> np.ndarray:
    """The ``n_bits`` single-dimension modes with the smallest analytical eigenvalues.

    For data uniform on ``[a_i, b_i]`` along PCA direction ``i``, the 1-D Laplacian
    eigenfunctions are ``Φ_k(x) = sin(π/2 + kπ (x − a_i) / (b_i − a_i))`` with eigenvalue
    ``λ_k = 1 − exp(−ε²/2 · |kπ / (b_i − a_i)|²)``, increasing in ``ω = kπ / (b_i − a_i)``.
    Modes ``k = 1 .. ceil((n_bits + 1) R_i / max R) − 1`` are enumerated per direction (the
    widest direction alone holds ``n_bits`` of them, so there are always enough), direction by
    direction, sorted by ``ω²`` with a stable sort (ties keep enumeration order, as MATLAB's
    ``sort``), the constant mode ``k = 0`` is dropped and the first ``n_bits`` are kept.

    Returns int64 ``[n_bits, len(ranges)]``: row ``b`` is the mode vector of bit ``b`` (one
    non-zero entry ``k`` in the column of its direction).
    """
    ranges = np.asarray(ranges, dtype=np.float64)
    npca = ranges.size
    max_mode = np.ceil((n_bits + 1) * ranges / ranges.max()).astype(np.int64)
    n_modes = int(max_mode.sum() - npca + 1)
    modes = np.zeros((n_modes, npca), dtype=np.int64)
    m = 1
    for i in range(npca):
        modes[m : m + max_mode[i] - 1, i] = np.arange(1, max_mode[i])
        m += max_mode[i] - 1
    omegas = modes * (np.pi / ranges)
    order = np.argsort(np.sum(omegas**2, axis=1), kind="stable")
    return modes[order[1 : n_bits + 1]]


@HASHERS.register("sh")
class SpectralHashing(BaseHasher):
    """Spectral hashing (SH), Weiss, Torralba & Fergus, NIPS 2008.

    1. PCA to ``npca = min(n_bits, n_features)`` directions: ``y = Wᵀ(x − μ)``.
    2. Fit a uniform distribution ``[a_i, b_i]`` per direction: ``a = min(y) − eps``,
       ``b = max(y) + eps`` over the training data.
    3. Pick the ``n_bits`` single-dimension eigenfunctions with the smallest analytical
       eigenvalues ``λ = 1 − exp(−ε²/2 |kπ/(b_i − a_i)|²)`` (see :func:`spectral_modes`),
       skipping the constant one.
    4. Bit ``b`` with mode ``k`` on direction ``i``:
       ``h_b(x) = sgn(sin(π/2 + kπ (y_i − a_i) / (b_i − a_i)))``.

    As in the authors' code, only 1-D eigenfunctions are used (never outer products), one
    direction may give several bits (``n_bits`` may exceed ``n_features``), and
    ``decision_function`` returns the eigenfunction values ``Π_i sin(π/2 + ω_{b,i} (y_i − a_i))``
    whose signs are the bits.

    Parameters
    ----------
    n_bits : int, default=64
        Code length.
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform``.

    Attributes
    ----------
    mean_ : ndarray [n_features]
    components_ : ndarray [npca, n_features]
        PCA directions ``Wᵀ``.
    min_, max_ : ndarray [npca]
        The box ``[a, b]`` per direction.
    modes_ : ndarray [n_bits, npca]
        Mode vector of each bit.
    """

    _min_samples = 2

    def __init__(self, n_bits: int = 64, output: str = "packed") -> None:
        self.n_bits = n_bits
        self.output = output

    def _fit(self, X: np.ndarray, y: Any) -> None:
        npca = min(int(self.n_bits), X.shape[1])
        self.mean_, self.components_, _ = fit_pca(X, npca)
        Y = (X - self.mean_) @ self.components_.T
        self.min_ = Y.min(axis=0) - _EPS
        self.max_ = Y.max(axis=0) + _EPS
        self.modes_ = spectral_modes(self.max_ - self.min_, int(self.n_bits))

    def _project(self, X: np.ndarray) -> np.ndarray:
        Y = (X - self.mean_) @ self.components_.T - self.min_
        omegas = self.modes_ * (np.pi / (self.max_ - self.min_))  # [n_bits, npca]
        # each mode has one non-zero k, so the product over directions has one factor != 1
        dims = np.argmax(self.modes_ != 0, axis=1)
        return np.sin(np.pi / 2 + Y[:, dims] * omegas[np.arange(len(dims)), dims])
