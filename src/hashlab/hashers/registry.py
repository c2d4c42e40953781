"""The registry of classical learning-to-hash methods (scikit-learn estimators)."""

from __future__ import annotations

from typing import Any

from hashlab.registry import Registry

HASHERS: Registry[Any] = Registry(
    "hasher", packages=("hashlab.hashers",),
    description="classical learning-to-hash estimators (fit / transform to bits)")
