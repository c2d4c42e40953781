"""Common machinery of the classical hashers: parameters, validation and code formats.

Every hasher is a scikit-learn transformer. ``fit(X, y=None)`` learns the hash functions;
``decision_function(X)`` returns the real-valued projections ``[n, n_bits]`` whose signs are
the bits (bit ``j`` is 1 exactly when projection ``j`` is ``> 0``, the convention of
:func:`hashlab.index.codes.pack_bits`); ``transform(X)`` returns the codes in the format named
by ``output``:

* ``"packed"`` (default): uint8 ``[n, ceil(n_bits / 8)]``, bits packed little-endian within
  each byte, exactly :func:`hashlab.index.codes.pack_bits` of the bits, ready for FAISS binary
  indexes and :func:`hashlab.index.codes.hamming_distances`;
* ``"bits"``: uint8 {0, 1} ``[n, n_bits]``;
* ``"signs"``: float32 {-1, +1} ``[n, n_bits]`` (``2 * bits - 1``).

``output`` is read at transform time only, so ``est.set_params(output="bits")`` on a fitted
hasher changes the format without refitting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from hashlab.index.codes import code_bytes, pack_bits
from hashlab.validation import check_int

__all__ = ["OUTPUTS", "BaseHasher", "format_codes", "random_orthogonal"]

#: The code formats ``transform`` can return.
OUTPUTS: tuple[str, ...] = ("packed", "bits", "signs")
_FLOAT_DTYPES = [np.float64, np.float32]


def format_codes(bits: np.ndarray, output: str) -> np.ndarray:
    """Boolean bits ``[n, n_bits]`` in the format ``output`` (see the module docstring)."""
    if output == "packed":
        return pack_bits(bits)
    if output == "bits":
        return bits.astype(np.uint8)
    if output == "signs":
        return np.where(bits, np.float32(1.0), np.float32(-1.0))
    raise ValueError(f"output: expected one of {', '.join(map(repr, OUTPUTS))}, got {output!r}")


def random_orthogonal(n: int, rng: np.random.RandomState) -> np.ndarray:
    """A Haar-distributed random orthogonal ``[n, n]`` matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


class BaseHasher(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class: a hasher whose bits are the signs of ``decision_function``.

    Subclasses implement ``_fit(X, y)`` (``X`` validated float64, fitted attributes set there)
    and ``_project(X)`` (validated float64 ``X`` to float64 projections ``[n, n_bits]``), and
    extend ``_check_params`` for their own hyper-parameters.
    """

    #: PCA-based hashers take at most one bit per principal direction.
    _bits_le_features: bool = False
    #: Minimum number of training samples.
    _min_samples: int = 1
    #: Whether the bits are signs of real projections (False for quantization codes).
    _has_projection: bool = True

    def __init__(self, n_bits: int = 64, output: str = "packed") -> None:
        self.n_bits = n_bits
        self.output = output

    # ---------------------------------------------------------------------------- validation

    def _check_params(self) -> None:
        check_int(self.n_bits, "n_bits")
        self._check_output()

    def _check_output(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(
                f"output: expected one of {', '.join(map(repr, OUTPUTS))}, got {self.output!r}"
            )

    def _check_fit_shape(self, X: np.ndarray) -> None:
        n, d = X.shape
        if n < self._min_samples:
            raise ValueError(
                f"{type(self).__name__} needs at least {self._min_samples} samples to fit, "
                f"got n_samples={n}"
            )
        if self._bits_le_features and self.n_bits > d:
            raise ValueError(
                f"n_bits={self.n_bits} exceeds n_features={d}: {type(self).__name__} takes one "
                "bit per principal direction, so n_bits must be <= n_features"
            )

    def _validate_fit(self, X: Any, y: Any = None, supervised: bool = False) -> Any:
        self._check_params()
        if supervised:
            X, y = validate_data(self, X, y, dtype=_FLOAT_DTYPES)
        else:
            X = validate_data(self, X, dtype=_FLOAT_DTYPES)
        X = X.astype(np.float64, copy=False)
        self._check_fit_shape(X)
        return (X, y) if supervised else X

    def _validate_transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=_FLOAT_DTYPES, reset=False)
        return X.astype(np.float64, copy=False)

    # ---------------------------------------------------------------------------- public API

    def fit(self, X: Any, y: Any = None) -> BaseHasher:
        """Learn the hash functions from ``X`` ``[n_samples, n_features]``; returns self."""
        X = self._validate_fit(X)
        self._fit(X, y)
        return self

    @available_if(lambda self: self._has_projection)
    def decision_function(self, X: Any) -> np.ndarray:
        """Real-valued projections ``[n, n_bits]`` (float64); bit ``j`` = projection ``j > 0``."""
        return self._project(self._validate_transform(X))

    def transform(self, X: Any) -> np.ndarray:
        """Hash codes of ``X`` in the format given by ``output``."""
        self._check_output()
        return format_codes(self.decision_function(X) > 0, self.output)

    @property
    def _n_features_out(self) -> int:
        """Number of output columns (bytes for packed codes, else bits)."""
        return code_bytes(self.n_bits) if self.output == "packed" else int(self.n_bits)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        # codes are uint8 (packed, bits) or float32 (signs) whatever the input dtype
        tags.transformer_tags.preserves_dtype = []
        return tags

    # ---------------------------------------------------------------------------- to override

    def _fit(self, X: np.ndarray, y: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _project(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
