"""Config factories for loss classes whose constructor does not take the framework's
``(num_classes, dim)`` first: one generic wrapper instead of a hand-written function per loss
that restates every default of its class."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["factory_for"]

_SHAPES = ("num_classes", "dim")


def factory_for(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    """``factory(num_classes, dim, **args) -> cls(**args)``, with the signature
    ``(num_classes, dim, <cls's other arguments and defaults>)``, so that the registry shows the
    class's defaults and unknown arguments are refused by name. ``num_classes`` and ``dim`` are
    passed on only if ``cls`` takes them (e.g. ``dim`` to check the input width)."""
    params = inspect.signature(cls).parameters
    takes = [name for name in _SHAPES if name in params]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [inspect.Parameter(name, kind, annotation=int) for name in _SHAPES]
        + [p for name, p in params.items() if name not in _SHAPES],
        return_annotation=cls,
    )

    def factory(*args: Any, **kwargs: Any) -> nn.Module:
        bound = signature.bind(*args, **kwargs)  # TypeError naming an unknown argument
        arguments = dict(bound.arguments)
        shapes = {name: arguments.pop(name) for name in _SHAPES}
        return cls(**{name: shapes[name] for name in takes}, **arguments)

    factory.__signature__ = signature  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = f"{cls.__name__}.factory"
    factory.__module__ = cls.__module__
    factory.__doc__ = cls.__doc__
    factory.loss_class = cls  # type: ignore[attr-defined]  (the class, one hop from the key)
    return factory
