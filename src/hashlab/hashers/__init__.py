"""Classical learning-to-hash methods as scikit-learn transformers.

Hash functions (learning-to-hash survey): linear ``h(x) = sgn(wᵀx + b)`` (:class:`LSH`,
:class:`PCAHash`, :class:`ITQ`), eigenfunction-based (:class:`SpectralHashing`), kernel
``h(x) = sgn(Σ_t ω_t K(s_t, x) + b)`` (:class:`KernelLSH`, supervised :class:`SDH`) and
quantization ``h(x) = argmin_k ‖x − c_k‖`` (:class:`PQHash`, compared by ADC/SDC, not Hamming).
Formulas in ``docs/hashing.md``; each class registers itself in :data:`HASHERS`.

All take ``n_bits`` and ``output`` (``"packed"`` uint8 codes as
:func:`hashlab.index.codes.pack_bits` makes them, ``"bits"`` or ``"signs"``) and work in
:class:`sklearn.pipeline.Pipeline`::

    from hashlab.hashers import make_hasher
    itq = make_hasher("itq", n_bits=64, random_state=0).fit(X_train)
    codes = itq.transform(X)            # uint8 [n, 8]
"""

from __future__ import annotations

from typing import Any

from hashlab.hashers.base import OUTPUTS, BaseHasher
from hashlab.hashers.kernel import KernelLSH
from hashlab.hashers.lsh import LSH
from hashlab.hashers.pca import ITQ, PCAHash
from hashlab.hashers.quantization import PQHash
from hashlab.hashers.registry import HASHERS
from hashlab.hashers.spectral import SpectralHashing
from hashlab.hashers.supervised import SDH

__all__ = [
    "HASHERS",
    "ITQ",
    "LSH",
    "OUTPUTS",
    "SDH",
    "BaseHasher",
    "KernelLSH",
    "PCAHash",
    "PQHash",
    "SpectralHashing",
    "hasher_names",
    "make_hasher",
]


def hasher_names() -> list[str]:
    """The names :func:`make_hasher` accepts, sorted."""
    return HASHERS.names()


def make_hasher(name: str, **params: Any) -> BaseHasher:
    """A new (unfitted) hasher by name, e.g. ``make_hasher("itq", n_bits=32)``.

    ``name`` is case-insensitive. Raises :class:`hashlab.errors.ConfigError` (a ValueError)
    naming the valid names for an unknown name; invalid ``params`` raise a TypeError from the
    constructor (unknown keyword) or a ValueError at ``fit``.
    """
    return HASHERS.get(name)(**params)
