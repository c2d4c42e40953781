"""Supervised discrete hashing (SDH), Shen, Shen, Liu & Shen, CVPR 2015.

A port of the authors' MATLAB code (``SDH.m`` and its demo): RBF anchor features, ridge
regressions for the classifier ``W`` and the hash projection ``P``, and discrete cyclic
coordinate descent (DCC) for the codes ``B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets

from hashlab.hashers.base import BaseHasher
from hashlab.hashers.registry import HASHERS
from hashlab.validation import check_int, check_real

__all__ = ["SDH", "dcc"]

_CHUNK = 8192  # rows per anchor-feature evaluation


def _signs(v: np.ndarray) -> np.ndarray:
    """``+1 if v > 0 else −1`` (the bit convention of :func:`hashlab.index.codes.pack_bits`)."""
    return np.where(v > 0, 1.0, -1.0)


def _ridge(A: np.ndarray, T: np.ndarray, reg: float) -> np.ndarray:
    """``argmin_W ‖T − A W‖² + reg ‖W‖² = (AᵀA + reg I)⁻¹ AᵀT``."""
    gram = A.T @ A
    gram[np.diag_indices_from(gram)] += reg
    return cho_solve(cho_factor(gram), A.T @ T)


def dcc(
    B: np.ndarray, Q: np.ndarray, W: np.ndarray, max_sweeps: int = 10, tol: float = 1e-6
) -> tuple[np.ndarray, int]:
    """Discrete cyclic coordinate descent for ``min_{B ∈ {±1}} ‖BW‖² − 2 tr(BᵀQ)``.

    Column ``l`` at a time (the others fixed) the exact minimiser is
    ``b_l = sgn(q_l − B_{−l} W_{−l} w_lᵀ)``, so the objective never increases. Sweeps over
    all columns until ``‖B − B_prev‖ < tol ‖B_prev‖`` or ``max_sweeps``. Returns a new B
    and the number of sweeps.
    """
    B = B.copy()
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        B0 = B.copy()
        for ell in range(B.shape[1]):
            w = W[ell]
            # B_{−l} W_{−l} w_lᵀ = B (W w_lᵀ) − b_l (w_l w_lᵀ)
            rest = B @ (W @ w) - B[:, ell] * (w @ w)
            B[:, ell] = _signs(Q[:, ell] - rest)
        if np.linalg.norm(B - B0) < tol * np.linalg.norm(B0):
            break
    return B, sweeps


@HASHERS.register("sdh")
class SDH(BaseHasher):
    """Supervised discrete hashing (SDH), Shen et al., CVPR 2015.

    Solves, with ``B ∈ {−1, +1}^{n×L}``, ``Y`` the one-hot labels ``[n, C]``:

        min_{B, W, P}  ‖Y − B W‖² + λ ‖W‖² + ν ‖B − φ(X) P‖² (+ δ ‖P‖²)

    where ``φ(x) = [exp(−γ‖x − a_1‖²), …, exp(−γ‖x − a_m‖²), 1]`` are RBF features on ``m``
    anchors ``a_j`` drawn from the training data. Starting from random ``B``, ``n_iter`` times:

    * W-step: ``W = (BᵀB + λI)⁻¹ BᵀY`` (``λ = reg_w``);
    * P-step: ``P = (φᵀφ + δI)⁻¹ φᵀB`` (``δ = reg_p``);
    * B-step: with ``Q = Y Wᵀ + ν φ(X) P``, the problem is ``min ‖BW‖² − 2 tr(BᵀQ)``, solved
      bit by bit (discrete cyclic coordinate descent, up to 10 sweeps):
      ``b_l = sgn(q_l − B_{−l} W_{−l} w_lᵀ)`` (``B_{−l}``, ``W_{−l}``: B without column l, W
      without row l, ``w_l`` row l of W).

    The hash function is ``h(x) = sgn(Pᵀ φ(x))``; the steps follow the authors' code (W first,
    then P, then alternating B, W, P), whose demo uses ``λ = 1``, ``ν = 1e-5``, ``δ = 1e-2``,
    1000 anchors and 5 iterations.

    Parameters
    ----------
    n_bits : int, default=64
        Code length L.
    n_anchors : int, default=1000
        Number of anchors m (at most n_samples).
    gamma : float or None, default=None
        RBF parameter ``γ = 1 / (2σ²)``; None sets σ to the mean distance from a training
        point to its nearest anchor (the heuristic in the authors' demo code).
    reg_w : float, default=1.0
        λ, ridge penalty of the label regression W.
    nu : float, default=1e-5
        ν, weight of the hash-function fitting term.
    reg_p : float, default=1e-2
        δ, ridge penalty of the projection P.
    n_iter : int, default=5
        Outer iterations.
    output : {"packed", "bits", "signs"}, default="packed"
        Format of ``transform``.
    random_state : int, RandomState or None, default=None
        Seed of the anchors and of the initial codes.

    Attributes
    ----------
    classes_ : ndarray [C]
    anchors_ : ndarray [m, n_features]
    gamma_ : float
    projection_ : ndarray [m + 1, n_bits]
        P (last row: bias).
    label_weights_ : ndarray [n_bits, C]
        W.
    objective_ : ndarray [n_iter + 1]
        The objective after the initial W, P steps and after each iteration (non-increasing:
        every step is an exact minimisation over its block).
    n_sweeps_ : list of int
        DCC sweeps used in each iteration.
    """

    _min_samples = 2

    def __init__(
        self,
        n_bits: int = 64,
        n_anchors: int = 1000,
        gamma: float | None = None,
        reg_w: float = 1.0,
        nu: float = 1e-5,
        reg_p: float = 1e-2,
        n_iter: int = 5,
        output: str = "packed",
        random_state: Any = None,
    ) -> None:
        self.n_bits = n_bits
        self.n_anchors = n_anchors
        self.gamma = gamma
        self.reg_w = reg_w
        self.nu = nu
        self.reg_p = reg_p
        self.n_iter = n_iter
        self.output = output
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.n_anchors, "n_anchors")
        check_int(self.n_iter, "n_iter")
        if self.gamma is not None:
            check_real(self.gamma, "gamma")
        check_real(self.reg_w, "reg_w")
        check_real(self.nu, "nu", strict=False)
        check_real(self.reg_p, "reg_p")

    def fit(self, X: Any, y: Any = None) -> SDH:
        """Learn the hash function from ``X`` and integer class labels ``y``; returns self."""
        X, y = self._validate_fit(X, y, supervised=True)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        self._fit(X, yi)
        return self

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _features(self, X: np.ndarray) -> np.ndarray:
        d2 = euclidean_distances(X, self.anchors_, squared=True)
        phi = np.empty((X.shape[0], d2.shape[1] + 1))
        np.exp(-self.gamma_ * d2, out=phi[:, :-1])
        phi[:, -1] = 1.0
        return phi

    def _fit(self, X: np.ndarray, y: Any) -> None:
        rng = check_random_state(self.random_state)
        n, L = X.shape[0], int(self.n_bits)
        m = min(int(self.n_anchors), n)
        self.anchors_ = X[np.sort(rng.choice(n, m, replace=False))]
        if self.gamma is not None:
            self.gamma_ = float(self.gamma)
        else:
            nearest = np.concatenate(
                [
                    euclidean_distances(X[s : s + _CHUNK], self.anchors_).min(axis=1)
                    for s in range(0, n, _CHUNK)
                ]
            )
            sigma = float(nearest.mean())
            self.gamma_ = 1.0 / (2.0 * sigma**2) if sigma > 0 else 1.0
        phi = np.concatenate([self._features(X[s : s + _CHUNK]) for s in range(0, n, _CHUNK)])
        Y = np.zeros((n, len(self.classes_)))
        Y[np.arange(n), y] = 1.0
        B = _signs(rng.standard_normal((n, L)))

        gram = phi.T @ phi
        gram[np.diag_indices_from(gram)] += float(self.reg_p)
        chol = cho_factor(gram)
        W = _ridge(B, Y, float(self.reg_w))
        P = cho_solve(chol, phi.T @ B)
        phi_p = phi @ P
        objective = [self._objective(Y, B, W, P, phi_p)]
        self.n_sweeps_: list[int] = []
        for _ in range(int(self.n_iter)):
            B, sweeps = dcc(B, Y @ W.T + float(self.nu) * phi_p, W)
            self.n_sweeps_.append(sweeps)
            W = _ridge(B, Y, float(self.reg_w))
            P = cho_solve(chol, phi.T @ B)
            phi_p = phi @ P
            objective.append(self._objective(Y, B, W, P, phi_p))
        self.label_weights_ = W
        self.projection_ = P
        self.objective_ = np.asarray(objective)

    def _objective(
        self, Y: np.ndarray, B: np.ndarray, W: np.ndarray, P: np.ndarray, phi_p: np.ndarray
    ) -> float:
        """``‖Y − BW‖² + λ‖W‖² + ν (‖B − φ(X)P‖² + δ‖P‖²)``."""
        return float(
            np.sum((Y - B @ W) ** 2)
            + float(self.reg_w) * np.sum(W**2)
            + float(self.nu) * (np.sum((B - phi_p) ** 2) + float(self.reg_p) * np.sum(P**2))
        )

    def _project(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((X.shape[0], int(self.n_bits)))
        for s in range(0, X.shape[0], _CHUNK):
            out[s : s + _CHUNK] = self._features(X[s : s + _CHUNK]) @ self.projection_
        return out
