"""The built-in dataset loaders: Fashion-MNIST, scikit-learn digits and image folders.

Each registers itself in :data:`hashlab.data.registry.DATASETS`; see ``docs/data-and-models.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hashlab.data.arrays import ArrayDataset, Norm, resize_images
from hashlab.data.digits import DIGITS_CLASSES, DIGITS_MEAN, DIGITS_STD, load_digits_split
from hashlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
)
from hashlab.data.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset, scan_class_folders
from hashlab.data.registry import DATASETS
from hashlab.errors import DataError

#: sub-folder names of an image folder treated as splits when collecting class names
SPLIT_FOLDERS: tuple[str, ...] = ("train", "test", "val")


@DATASETS.register("fashion-mnist", "fmnist")
def fashion_mnist_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    normalize: bool = True,
    verify: bool = False,
    image_size: int | tuple[int, int] | None = None,
) -> ArrayDataset:
    """Fashion-MNIST ``train``/``test``; normalised with mean 0.2860, std 0.3530 by default.

    ``image_size`` (int or (height, width)) resizes the 28x28 images once, bilinearly.
    """
    images, labels = load_fashion_mnist(split, root=root, download=download, verify=verify)  # type: ignore[arg-type]
    if image_size is not None:
        images = resize_images(images, image_size)
    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if normalize else (None, None)
    return ArrayDataset(images, labels, FASHION_MNIST_CLASSES, mean, std)


@DATASETS.register("digits")
def digits_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    normalize: bool = True,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
) -> ArrayDataset:
    """scikit-learn digits ``train``/``test``/``all`` (``root`` and ``download`` are unused).

    ``image_size`` (int or (height, width)) resizes the 8x8 images once, bilinearly.
    """
    images, labels = load_digits_split(split, test_fraction=test_fraction, seed=seed)  # type: ignore[arg-type]
    if image_size is not None:
        images = resize_images(images, image_size)
    mean, std = (DIGITS_MEAN, DIGITS_STD) if normalize else (None, None)
    return ArrayDataset(images, labels, DIGITS_CLASSES, mean, std)


def _split_classes(base: Path, split: str, extensions: Sequence[str]) -> list[str]:
    """Sorted union of the non-empty class folders over the split sub-folders of ``base``."""
    names: set[str] = set()
    for name in dict.fromkeys((*SPLIT_FOLDERS, split)):
        if (base / name).is_dir():
            found = scan_class_folders(base / name, extensions)
            names.update(n for n, files in found.items() if files)
    return sorted(names)


@DATASETS.register("image-folder")
def image_folder_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | tuple[int, int] | None = None,
    mode: str = "RGB",
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    classes: Sequence[str] | None = None,
    mean: Norm = None,
    std: Norm = None,
) -> ImageFolderDataset:
    """``root/<split>/<class>/*`` if ``root/<split>`` exists, else ``root/<class>/*``.

    With split sub-folders, class indices come from the union of their class names, so they
    agree between splits.
    """
    if root is None:
        raise DataError("dataset 'image-folder' needs root=<folder with one sub-folder per class>")
    base = Path(root).expanduser()
    folder = base / split if split and (base / split).is_dir() else base
    if classes is None and folder != base:
        classes = _split_classes(base, split, extensions) or None
    return ImageFolderDataset(folder, image_size, mode, extensions, classes, mean, std)  # type: ignore[arg-type]
