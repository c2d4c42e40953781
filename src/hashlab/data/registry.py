"""Datasets by name: ``load_dataset("fashion-mnist", "train")`` and friends.

``DATASETS`` is the dataset registry: a loader ``loader(split, root=None, download=True,
**data_args)`` registered with ``@DATASETS.register("name", *aliases)`` from any module of
:mod:`hashlab.data` (the built-in ones are in :mod:`hashlab.data.loaders`). Unknown names raise
:class:`~hashlab.errors.DataError`.

``PAIRED_DATASETS`` is the registry of paired image–text datasets for cross-modal hashing: a
loader ``loader(split, root=None, seed=0, **args) -> PairedData`` for ``split`` in
:data:`~hashlab.data.paired.SPLITS` (``fmnist-captions`` in :mod:`hashlab.data.captions`, the
DCMH-format MIRFLICKR-25K / NUS-WIDE / IAPR TC-12 in :mod:`hashlab.data.crossmodal_files`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hashlab.data.arrays import ArrayDataset
from hashlab.data.image_folder import ImageFolderDataset
from hashlab.data.paired import SPLITS, PairedData
from hashlab.errors import DataError
from hashlab.registry import Registry

AnyDataset = ArrayDataset | ImageFolderDataset
DatasetLoader = Callable[..., AnyDataset]
PairedLoader = Callable[..., PairedData]

DATASETS: Registry[AnyDataset] = Registry(
    "dataset", packages=("hashlab.data",), error=DataError,
    description="image datasets: loader(split, root=None, download=True, **args)")

PAIRED_DATASETS: Registry[PairedData] = Registry(
    "paired-dataset", plural="paired-datasets", packages=("hashlab.data",), error=DataError,
    description="paired image-text datasets (cross-modal hashing): "
                "loader(split, root=None, seed=0, **args) -> PairedData")


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


def paired_dataset_names() -> list[str]:
    """Canonical paired-dataset names, sorted."""
    return PAIRED_DATASETS.names()


def load_paired(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    **kwargs: object,
) -> PairedData:
    """Load paired dataset ``name``'s ``split`` (one of :data:`SPLITS`: query, database,
    train); extra keyword arguments (``seed``, sizes, ...) go to its loader."""
    loader = PAIRED_DATASETS.get(name)
    if split not in SPLITS:
        raise DataError(f"paired dataset {name!r}: unknown split {split!r}; known: "
                        f"{', '.join(SPLITS)}")
    return loader(split, root=root, **kwargs)
