"""Shared argument checks: one home for the validators every family uses.

Each returns the value converted to its plain Python type, or raises a ``ValueError`` whose
message starts with the argument's name (``"k: expected an int >= 1, got 0"``), so callers can
pass it on unchanged. Tensor-shape checks of the losses live here too.
"""

from __future__ import annotations

from collections.abc import Collection
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = [
    "check_batch",
    "check_choice",
    "check_int",
    "check_nonnegative",
    "check_real",
]


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def check_real(value: Any, name: str, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a finite float ``> minimum`` (``>=`` when not ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    if (value <= minimum) if strict else (value < minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name}: expected a number {op} {minimum}, got {value}")
    return float(value)


def check_nonnegative(value: Any, name: str) -> float:
    """``value`` as a float ``>= 0`` (NaN is refused)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def check_choice(name: str, value: Any, known: Collection[str]) -> str:
    """``value`` if it is one of ``known`` (a tuple, dict or registry), else a ValueError."""
    if value not in known:
        names = known.names() if hasattr(known, "names") else list(known)
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(names)}")
    return value


def check_batch(embeddings: Any, labels: Any, dim: int | None = None) -> None:
    """``embeddings`` is ``[batch, dim]`` and ``labels`` is ``[batch]`` (torch tensors)."""
    if embeddings.ndim != 2 or (dim is not None and embeddings.shape[1] != dim):
        expected = f"[batch, {dim}]" if dim is not None else "[batch, dim]"
        raise ValueError(f"embeddings must have shape {expected}, got {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"labels must have shape [{embeddings.shape[0]}], got {tuple(labels.shape)}"
        )
