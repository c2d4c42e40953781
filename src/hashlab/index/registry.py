"""The registries of index kinds: one :class:`hashlab.index.kinds.IndexKind` spec per kind."""

from __future__ import annotations

from typing import Any

from hashlab.registry import Registry

BINARY_KINDS: Registry[Any] = Registry(
    "binary index kind", plural="binary-index-kinds", packages=("hashlab.index",),
    description="FAISS binary (Hamming) index kinds for BinaryIndex")
FLOAT_KINDS: Registry[Any] = Registry(
    "float index kind", plural="float-index-kinds", packages=("hashlab.index",),
    description="FAISS float (cosine / inner-product) index kinds for FloatIndex")
