"""What an index kind is: one :class:`IndexKind` spec per kind, registered in a registry.

Every kind of :class:`~hashlab.index.BinaryIndex` and :class:`~hashlab.index.FloatIndex` is
described by one frozen :class:`IndexKind`: its FAISS factory string, its parameters, how they
are checked and set on the FAISS object, and what the kind can do (train, remove, range search,
exact search). ``BinaryIndex`` / ``FloatIndex`` read only the spec and name no kind. The
built-in specs live in :mod:`hashlab.index.kinds_binary` and :mod:`hashlab.index.kinds_float`.

Adding a kind takes one module that registers one spec, in ``hashlab/index/`` (found by the
registry's auto-discovery) or in a plug-in package (see :func:`hashlab.registry.load_plugins`)::

    from hashlab.index.kinds import IndexKind, check_ints, register_kind

    register_kind(IndexKind(
        name="ivf-exact", family="binary",
        description="IndexBinaryIVF probing every list: exact, trained",
        factory="BIVF{nlist}", faiss_class="IndexBinaryIVF",
        defaults={"nlist": 16},
        resolve=lambda p, nbits: check_ints(p, nlist=1),
        build_params={"nlist": "nprobe"},          # base.nprobe = params["nlist"]
        train_minimum=lambda p: p["nlist"],
        exact_radius=lambda nbits, p: nbits,
    ))

after which ``BinaryIndex(nbits, "ivf-exact")`` works, and so do ``save_index`` / ``load_index``
(the manifest records the factory string).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import faiss

from hashlab.index.registry import BINARY_KINDS, FLOAT_KINDS
from hashlab.validation import check_int

__all__ = [
    "FAMILIES", "HNSW", "MAX_EF", "MAX_M", "MAX_NLIST", "Family", "IndexKind", "Setter",
    "capped", "check_ints", "downcast", "register_kind",
]

#: A way to put a parameter on the FAISS index: a dotted attribute path of the wrapped index
#: (``"nprobe"``, ``"hnsw.efSearch"``) or a function ``f(faiss_index, value)``.
Setter = str | Callable[[Any, Any], None]


class Family(NamedTuple):
    """What the kinds of one family share."""

    registry: Any  #: the registry of its kinds
    factory: Callable[[int, str], Any]  #: FAISS index factory ``f(d, factory_string)``
    defaults: Mapping[str, Any]  #: params every kind of the family takes, with defaults
    exhaustive: str  #: the exact, exhaustive kind that ``flat_copy`` builds


FAMILIES: dict[str, Family] = {
    "binary": Family(BINARY_KINDS, faiss.index_binary_factory, MappingProxyType({}), "flat"),
    "float": Family(
        FLOAT_KINDS, lambda d, s: faiss.index_factory(d, s, faiss.METRIC_INNER_PRODUCT),
        MappingProxyType({"metric": "cosine"}), "flat"),  # see hashlab.index.floats.METRICS
}


def downcast(family: str, index: Any) -> Any:
    """``index`` as its concrete FAISS class (a non-owning proxy: keep ``index`` alive)."""
    return faiss.downcast_IndexBinary(index) if family == "binary" else faiss.downcast_index(index)


def _set(index: Any, setter: Setter, value: Any) -> None:
    if callable(setter):
        setter(index, value)
        return
    *path, attr = setter.split(".")
    for part in path:
        index = getattr(index, part)
    setattr(index, attr, value)


def check_ints(params: dict[str, Any], **bounds: int | tuple[int, int]) -> dict[str, Any]:
    """Check ``params[name]`` is an int ``>= minimum`` for each ``name=minimum``, or within
    ``minimum..maximum`` for each ``name=(minimum, maximum)`` (in place).

    A maximum keeps a mistyped value from reaching FAISS, which would allocate by it (an IVF's
    ``nlist`` lists, an HNSW search heap of ``ef_search`` entries) or overflow a C ``int``.
    """
    for name, bound in bounds.items():
        lo, hi = bound if isinstance(bound, tuple) else (bound, None)
        value = params[name] = check_int(params[name], name, lo)
        if hi is not None and value > hi:
            raise ValueError(f"{name}: expected an int <= {hi}, got {value}")
    return params


#: largest ``nlist`` of an IVF kind: 4M lists (FAISS allocates every list when it builds the
#: index, and training needs at least ``nlist`` rows anyway)
MAX_NLIST = 2**22
#: largest ``ef_search`` / ``ef_construction`` of HNSW (FAISS allocates a heap of that size)
MAX_EF = 2**20
#: largest HNSW ``M`` (each node stores about ``2 * M`` neighbour links per level)
MAX_M = 256


def _hnsw_resolve(params: dict[str, Any], size: int) -> dict[str, Any]:
    return check_ints(params, M=(2, MAX_M), ef_construction=(1, MAX_EF), ef_search=(1, MAX_EF))


#: what the binary and the float HNSW kinds share: ``IndexKind(**HNSW, name=..., ...)``
HNSW: dict[str, Any] = {
    "defaults": {"M": 16, "ef_construction": 40, "ef_search": 64},
    "resolve": _hnsw_resolve,
    "build_params": {"ef_construction": "hnsw.efConstruction"},  # no factory-string syntax
    "runtime": {"ef_search": "hnsw.efSearch"},
    "storage": lambda base: base,  # reconstructs from its flat storage
}


def capped(attr: str, cap: str) -> Callable[[Any, Any], None]:
    """A runtime :data:`Setter` putting ``min(value, index.<cap>)`` on ``index.<attr>``.

    For values past which FAISS does no more (``nprobe`` beyond ``nlist``) or misbehaves
    (``nflip`` beyond the key width ``b`` never finishes): the index also stays safe when a
    manifest written before the params were checked carries such a value.
    """
    def setter(index: Any, value: Any) -> None:
        setattr(index, attr, min(int(value), int(getattr(index, cap))))
    return setter


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


@dataclass(frozen=True, eq=False)  # a registered singleton: compared by identity
class IndexKind:
    """The complete description of one index kind (see the module docstring).

    Args:
        name: registry key (lower-case words joined by ``-``).
        family: ``"binary"`` (Hamming, :class:`~hashlab.index.BinaryIndex`) or ``"float"``
            (inner product / cosine, :class:`~hashlab.index.FloatIndex`).
        description: one line for ``hashlab list``.
        factory: FAISS factory string, a :meth:`str.format` template over the resolved params
            (``"BHash{nhash}x{b}"``, ``"IVF{nlist},PQ{m}x{pq_bits}np"``); built with
            ``faiss.index_binary_factory(d, s)`` / ``faiss.index_factory(d, s,
            METRIC_INNER_PRODUCT)`` unless ``builder`` is given. Recorded in saved manifests.
        faiss_class: class name of the wrapped FAISS index after loading (checked on load).
        defaults: the kind's constructor parameters and their defaults (``None``: filled in by
            ``resolve``).
        resolve: ``f(params, size) -> params``: check and complete the merged params; ``size``
            is ``nbits`` (binary) or ``dim`` (float). Raises ValueError naming the parameter.
        build_params: construction-time params the factory string cannot express, and where
            each goes on the FAISS index (``{"ef_construction": "hnsw.efConstruction"}``).
        runtime: search-time params (changeable with ``set_params``) and where each goes; set
            after building, after loading and on every ``set_params``.
        builder: ``f(d, params) -> faiss index``, used instead of the factory string when the
            factory cannot give the same object.
        train_minimum: for kinds that need training: ``f(params) -> int``, the fewest training
            rows; ``None``: no training.
        removable: FAISS can remove ids from it through ``IDMap2`` (positions are renumbered).
        range_search: FAISS has a range search for it.
        exact_radius: binary: ``f(nbits, params) -> int``, the largest Hamming radius for which
            ``range_search`` is exact (and ``search`` rows whose k-th distance is within it);
            ``None``: never exact.
        exact: float: ``search`` is exact (ties at the k-th similarity are completed by id).
        insertion_order_ties: binary: the index keeps the first-inserted codes among ties and
            returns them by (distance, position), so with ids increasing in insertion order
            its rows are final (no tie completion).
        before_search: ``f(faiss_index, k)`` called before every ``search``.
        exact_params: binary: ``f(nbits, params, radius) -> params``: the runtime params under
            which a range search at ``radius`` (and a top-k row whose k-th distance is within
            it) is exact (``hash``: ``nflip = radius``); ``None``: no such params. Used by
            :func:`hashlab.index.query.run_query` with ``exact=True``.
        probes: ``f(params) -> int``: bucket probes per query with these params (hash tables),
            so that ``run_query`` can prefer a scan of ``storage`` when probing costs more.
        storage: ``f(faiss_index) -> faiss index`` whose ``reconstruct_n`` returns the stored
            codes / vectors exactly, in insertion order (:meth:`IdMapIndex.flat_copy`, the
            exhaustive path of ``run_query``); ``None``: not recoverable (hash buckets,
            compressed vectors).
        aliases: older names accepted by look-ups.
    """

    name: str
    family: str
    description: str
    factory: str
    faiss_class: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    resolve: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    build_params: Mapping[str, Setter] = field(default_factory=dict)
    runtime: Mapping[str, Setter] = field(default_factory=dict)
    builder: Callable[[int, Mapping[str, Any]], Any] | None = None
    train_minimum: Callable[[Mapping[str, Any]], int] | None = None
    removable: bool = False
    range_search: bool = True
    exact_radius: Callable[[int, Mapping[str, Any]], int] | None = None
    exact: bool = False
    insertion_order_ties: bool = False
    before_search: Callable[[Any, int], None] | None = None
    exact_params: Callable[[int, Mapping[str, Any], int], dict[str, Any]] | None = None
    probes: Callable[[Mapping[str, Any]], int] | None = None
    storage: Callable[[Any], Any] | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"index kind {self.name!r}: family must be one of "
                             f"{sorted(FAMILIES)}, got {self.family!r}")
        for attr in ("defaults", "build_params", "runtime"):
            object.__setattr__(self, attr, MappingProxyType(dict(getattr(self, attr))))
        for what, names in (("factory", _fields(self.factory)), ("build_params",
                            set(self.build_params)), ("runtime", set(self.runtime))):
            unknown = names - set(self.defaults)
            if unknown:
                raise ValueError(f"index kind {self.name!r}: {what} names {sorted(unknown)}, "
                                 f"which are not in its defaults {sorted(self.defaults)}")
        wrong = [a for a, fam in (("exact_radius", "binary"), ("insertion_order_ties", "binary"),
                                  ("exact_params", "binary"), ("exact", "float"))
                 if getattr(self, a) and self.family != fam]
        if wrong:
            raise ValueError(f"index kind {self.name!r}: {wrong} do not apply to a "
                             f"{self.family} index")
        if self.exact and not self.range_search:
            raise ValueError(f"index kind {self.name!r}: exact search completes ties with a "
                             "range search, so it needs range_search=True")

    # -- params ------------------------------------------------------------------------------

    def resolve_params(self, params: dict[str, Any], size: int) -> dict[str, Any]:
        """Checked and completed ``params`` (``size``: ``nbits`` or ``dim``)."""
        return params if self.resolve is None else self.resolve(params, size)

    def factory_string(self, params: Mapping[str, Any]) -> str:
        """The FAISS factory string of an index with these (resolved) params."""
        return self.factory.format(**params)

    def radius(self, nbits: int, params: Mapping[str, Any]) -> int:
        """Largest exact Hamming radius (binary; -1: never exact)."""
        return -1 if self.exact_radius is None else self.exact_radius(nbits, params)

    # -- FAISS objects -----------------------------------------------------------------------

    def build(self, d: int, params: Mapping[str, Any]) -> Any:
        """A new, empty FAISS index of this kind (``d``: FAISS dimension, bits for binary).

        Returns the owning proxy; the build-time params are set on it, the runtime ones not.
        """
        if self.builder is not None:
            index = self.builder(d, params)
        else:
            index = FAMILIES[self.family].factory(d, self.factory_string(params))
        base = downcast(self.family, index)
        for name, setter in self.build_params.items():
            _set(base, setter, params[name])
        return index

    def apply_runtime(self, base: Any, params: Mapping[str, Any]) -> None:
        """Put the search-time params on the (downcast) FAISS index ``base``."""
        for name, setter in self.runtime.items():
            _set(base, setter, params[name])

    def check_loaded(self, base: Any) -> None:
        """Raise ValueError unless the deserialized (downcast) ``base`` is this kind's index."""
        if type(base).__name__ != self.faiss_class:
            raise ValueError(
                f"kind {self.name!r} needs a {self.faiss_class}, got {type(base).__name__}")
        if self.family == "float" and base.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("the index does not use inner-product similarity")


def register_kind(spec: IndexKind) -> IndexKind:
    """Register ``spec`` in its family's registry (``BINARY_KINDS`` / ``FLOAT_KINDS``); the
    entry's defaults are the kind's and its family's (``metric`` of the float kinds)."""
    family = FAMILIES[spec.family]
    family.registry.register(
        spec.name, *spec.aliases, description=spec.description,
        defaults={**spec.defaults, **family.defaults},
        factory=spec.factory, faiss_class=spec.faiss_class,
    )(spec)
    return spec
