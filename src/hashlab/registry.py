"""One registry mechanism for every family of plug-ins (datasets, backbones, heads, losses,
miners, distances, reductions, hashers, index kinds, protocols, recipes, ...).

A family is a :class:`Registry`. A method joins it from its own module with a decorator::

    from hashlab.losses.registry import LOSSES

    @LOSSES.register("my-loss", "my_old_name")      # canonical key, then aliases
    class MyLoss(nn.Module):
        '''One line that ``hashlab list losses`` prints.'''

and nothing else is edited: each registry knows the package its methods live in and imports
every module of it the first time it is asked for a name (*auto-discovery*), so a new file in
``hashlab/losses/`` registers itself. Code outside the package (a user's own methods) is loaded
as a *plug-in*: a module or package named in the ``HASHLAB_PLUGINS`` environment variable
(comma-separated), in a run config's ``plugins:`` list, in ``hashlab --plugin MOD``, or
advertised by an installed distribution under the ``hashlab.plugins`` entry-point group. A plug-in
package has every module imported, like the built-in packages. See ``docs/contributing.md``.

**Keys.** One naming rule: lower-case words joined by hyphens (``hm-softmax``,
``small-cnn``, ``fmnist-retrieval``). Look-ups are case-insensitive and treat ``_`` as ``-``, so
the older spellings (``hm_softmax``, ``small_cnn``) keep working; explicit aliases
(``fmnist`` for ``fashion-mnist``) are listed by ``hashlab list``.

**Entries.** Each registered object gets an :class:`Entry`: its key, aliases, a one-line
description (the ``description=`` argument, else the first line of the object's docstring),
its defaults (``defaults=``, else the keyword defaults of its signature, less the arguments the
framework supplies, such as ``num_classes`` and ``dim``) and any family-specific metadata
(``needs=`` of a loss, ``rows=`` of a protocol, ...).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from hashlab.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "FAMILIES",
    "PLUGIN_ENV",
    "Entry",
    "Registry",
    "all_families",
    "canonical_key",
    "check_kwargs",
    "load_plugins",
]

#: family name -> its registry, filled as registry modules are imported (see all_families)
FAMILIES: dict[str, Registry[Any]] = {}

#: environment variable naming plug-in modules or packages to import (comma-separated)
PLUGIN_ENV = "HASHLAB_PLUGINS"
#: entry-point group of installed plug-in distributions
PLUGIN_GROUP = "hashlab.plugins"

#: the modules that define hashlab's registries (imported by all_families, in this order)
_REGISTRY_MODULES = (
    "hashlab.data.registry",
    "hashlab.models.registry",
    "hashlab.losses.registry",
    "hashlab.hashers.registry",
    "hashlab.index.registry",
    "hashlab.eval.registry",
    "hashlab.train.recipes.registry",
    "hashlab.crossmodal.registry",
)

#: arguments the framework passes itself; they are not a method's user-settable defaults
FRAMEWORK_ARGS = frozenset({
    "self", "num_classes", "dim", "in_dim", "in_channels", "split", "root", "download", "data",
    "run", "progress", "batch_size", "index", "config", "run_dir", "callbacks",
})

_KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def canonical_key(name: str) -> str:
    """The look-up form of a key: stripped, lower-case, ``_`` read as ``-``."""
    if not isinstance(name, str):
        raise ConfigError(f"a name must be a string, got {name!r}")
    return name.strip().lower().replace("_", "-")


@dataclass(frozen=True)
class Entry:
    """One registered method: its key, the registered object and what ``hashlab list`` shows."""

    name: str
    obj: Any
    family: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    paragraph = doc.strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def signature_defaults(obj: Any, skip: frozenset[str] = FRAMEWORK_ARGS) -> dict[str, Any]:
    """Keyword defaults of ``obj``'s signature (a class: its ``__init__``), less ``skip``;
    required arguments show as ``"<required>"``. A class passing ``**kwargs`` to its bases
    shows theirs too (:func:`factory_parameters`)."""
    try:
        params = factory_parameters(obj) or inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return {}
    out: dict[str, Any] = {}
    for p in params.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = "<required>" if p.default is p.empty else p.default
    return out


class Registry(Generic[T]):
    """Maps the names used in configs and on the command line to factories of one family.

    Args:
        family: singular name used in messages (``"loss"``).
        plural: the name ``hashlab list`` uses (default ``family + "s"``).
        packages: dotted names of the packages (or modules) whose modules register into this
            family; they are imported on the first look-up.
        description: one line about the family, for ``hashlab list``.
        skip: argument names left out of the signature defaults (framework-supplied).
        error: the exception class of an unknown name (default :class:`ConfigError`).
    """

    def __init__(
        self,
        family: str,
        *,
        plural: str | None = None,
        packages: Sequence[str] = (),
        description: str = "",
        skip: frozenset[str] = FRAMEWORK_ARGS,
        error: type[Exception] = ConfigError,
    ) -> None:
        self.family = family
        self.plural = plural or f"{family}s"
        self.packages = tuple(packages)
        self.description = description
        self._skip = skip
        self._error = error
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}
        self._discovered = not self.packages
        self._discovering = False
        if self.plural in FAMILIES:
            raise ValueError(f"a registry named {self.plural!r} exists already")
        FAMILIES[self.plural] = self

    # ---------------------------------------------------------------------------- register
    def register(
        self,
        name: str,
        *aliases: str,
        description: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        **meta: Any,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register the decorated class or function under ``name`` (and aliases).

        ``name`` must follow the key rule (lower-case words joined by ``-``); aliases may be
        any older spelling. ``meta`` is family-specific (documented by each family)."""
        key = name.strip()
        if not _KEY.match(key):
            raise ValueError(f"{self.family} key {name!r} must be lower-case words joined by "
                             "'-' (e.g. 'hm-softmax')")
        alias_keys = tuple(canonical_key(a) for a in aliases)

        def decorator(obj: Callable[..., T]) -> Callable[..., T]:
            for k in (key, *alias_keys):
                if k in self._entries or k in self._aliases:
                    raise ValueError(f"{self.family} {k!r} is registered twice")
            self._entries[key] = Entry(
                name=key, obj=obj, family=self.family, aliases=alias_keys,
                description=_first_line(obj) if description is None else description,
                defaults=MappingProxyType(dict(
                    signature_defaults(obj, self._skip) if defaults is None else defaults)),
                meta=MappingProxyType(dict(meta)),
            )
            self._aliases.update({a: key for a in alias_keys if a != key})
            return obj

        return decorator

    # ---------------------------------------------------------------------------- discover
    def discover(self) -> None:
        """Import every module of this family's packages and the plug-ins (once)."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            for package in self.packages:
                import_all(package)
            load_plugins()
            self._discovered = True
        finally:
            self._discovering = False

    # ---------------------------------------------------------------------------- look up
    def canonical(self, name: str, key: str | None = None) -> str:
        """The registered key for ``name`` (aliases and ``_``/case variants accepted).

        Unknown names raise the family's error, naming ``key`` (a config key) when given."""
        self.discover()
        k = canonical_key(name)
        k = self._aliases.get(k, k)
        if k not in self._entries:
            where = f"{key}: " if key else ""
            raise self._error(f"{where}unknown {self.family} {name!r}; known: "
                              f"{self.known()}")
        return k

    def known(self) -> str:
        """``a, b (alias c), d``: the keys and their aliases, for error messages."""
        return ", ".join(e.name + "".join(f" (alias {a})" for a in e.aliases)
                         for e in self.entries())

    def entry(self, name: str, key: str | None = None) -> Entry:
        return self._entries[self.canonical(name, key)]

    def get(self, name: str, key: str | None = None) -> Callable[..., T]:
        """The registered factory (class or function) for ``name``."""
        return self.entry(name, key).obj

    def build(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Canonical keys, sorted."""
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Every entry, sorted by key."""
        return [self._entries[k] for k in self.names()]

    def aliases(self) -> dict[str, str]:
        """alias -> canonical key."""
        self.discover()
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self.discover()
        k = canonical_key(name)
        return self._aliases.get(k, k) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {len(self._entries)} entries)"


def import_all(package: str) -> None:
    """Import ``package`` and, if it is a package, every module in it (recursively; modules
    whose name starts with ``_`` are skipped)."""
    module = importlib.import_module(package)
    path = getattr(module, "__path__", None)
    if path is None:
        return
    for info in pkgutil.iter_modules(path, prefix=f"{package}."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        import_all(info.name)


_loaded_plugins: set[str] = set()


def load_plugins(modules: Sequence[str] = ()) -> list[str]:
    """Import the plug-ins: ``modules``, those in ``$HASHLAB_PLUGINS`` and the installed
    ``hashlab.plugins`` entry points. Each is imported once; returns the newly imported ones."""
    names = list(modules)
    names += [m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()]
    from importlib.metadata import entry_points

    names += [ep.value.split(":")[0] for ep in entry_points(group=PLUGIN_GROUP)]
    new = []
    for name in names:
        if name in _loaded_plugins:
            continue
        _loaded_plugins.add(name)
        try:
            import_all(name)
        except ImportError as exc:
            _loaded_plugins.discard(name)
            raise ConfigError(f"plug-in {name!r} cannot be imported: {exc} (is its folder on "
                              "PYTHONPATH?)") from exc
        new.append(name)
    return new


def all_families() -> dict[str, Registry[Any]]:
    """Every registry hashlab defines (importing their modules), by plural name."""
    for module in _REGISTRY_MODULES:
        importlib.import_module(module)
    return dict(FAMILIES)


def factory_parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters ``factory`` accepts, or None when it accepts any. A class whose
    ``__init__`` passes ``**kwargs`` on to its base classes' (a recipe built on an engine
    class) accepts its own parameters plus theirs, followed along the MRO."""
    params: dict[str, inspect.Parameter] = {}
    chain = ([c.__init__ for c in factory.__mro__ if "__init__" in vars(c)]  # type: ignore[misc]
             if inspect.isclass(factory) else [factory])
    for function in chain:
        own = inspect.signature(function).parameters
        for name, param in own.items():
            if param.kind is not inspect.Parameter.VAR_KEYWORD and name != "self":
                params.setdefault(name, param)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values()):
            return params
    return None


def check_kwargs(factory: Callable[..., Any], kwargs: Mapping[str, Any], key: str) -> None:
    """Raise ConfigError naming ``key.arg`` if ``kwargs`` has an argument ``factory`` lacks."""
    params = factory_parameters(factory)
    if params is None:
        return
    for name in kwargs:
        if name not in params:
            allowed = ", ".join(p for p in params if p not in FRAMEWORK_ARGS)
            raise ConfigError(f"{key}.{name}: unknown argument; allowed: {allowed or 'none'}")
