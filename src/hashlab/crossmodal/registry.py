"""The cross-modal method registry.

``CROSSMODAL_METHODS`` maps ``method.name`` of a cross-modal config to a
:class:`~hashlab.crossmodal.base.CrossModalMethod` subclass, built as
``factory(dim=bits, **method.args)``. A method is one module of :mod:`hashlab.crossmodal` that
registers itself with ``@CROSSMODAL_METHODS.register("name")``; the generic trainer
(:mod:`hashlab.crossmodal.trainer`) names none of them.
"""

from __future__ import annotations

from typing import Any

from hashlab.registry import Registry

CROSSMODAL_METHODS: Registry[Any] = Registry(
    "cross-modal-method", packages=("hashlab.crossmodal",),
    description="cross-modal (image <-> text) hashing methods: objectives and schedule")

__all__ = ["CROSSMODAL_METHODS"]
