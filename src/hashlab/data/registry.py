"""Datasets by name: ``load_dataset("fashion-mnist", "train")`` and friends.

``DATASETS`` is the dataset registry: a loader ``loader(split, root=None, download=True,
**data_args)`` registered with ``@DATASETS.register("name", *aliases)`` from any module of
:mod:`hashlab.data` (the built-in ones are in :mod:`hashlab.data.loaders`). Unknown names raise
:class:`~hashlab.errors.DataError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hashlab.data.arrays import ArrayDataset
from hashlab.data.image_folder import ImageFolderDataset
from hashlab.errors import DataError
from hashlab.registry import Registry

AnyDataset = ArrayDataset | ImageFolderDataset
DatasetLoader = Callable[..., AnyDataset]

DATASETS: Registry[AnyDataset] = Registry(
    "dataset", packages=("hashlab.data",), error=DataError,
    description="image datasets: loader(split, root=None, download=True, **args)")


def dataset_names() -> list[str]:
    """Canonical dataset names, sorted."""
    return DATASETS.names()


def resolve_dataset_name(name: str) -> str:
    """Canonical name for ``name`` (case-, ``_``/``-``-insensitive; aliases allowed)."""
    return DATASETS.canonical(name)


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    **kwargs: object,
) -> AnyDataset:
    """Load dataset ``name``'s ``split``; extra keyword arguments go to its loader."""
    return DATASETS.get(name)(split, root=root, download=download, **kwargs)
