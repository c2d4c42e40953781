"""Datasets: IDX files, Fashion-MNIST, scikit-learn digits, image folders, paired image–text
data (cross-modal), and their registries."""

from __future__ import annotations

from hashlab.data.arrays import ArrayDataset
from hashlab.data.digits import DIGITS_CLASSES, load_digits_split
from hashlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
)
from hashlab.data.idx import content_sha256, read_idx, read_idx_header, write_idx
from hashlab.data.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset
from hashlab.data.paired import SPLITS, PairedData
from hashlab.data.registry import (
    DATASETS,
    PAIRED_DATASETS,
    dataset_names,
    load_dataset,
    load_paired,
    paired_dataset_names,
    resolve_dataset_name,
)

__all__ = [
    "DATASETS",
    "DIGITS_CLASSES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGE_EXTENSIONS",
    "PAIRED_DATASETS",
    "SPLITS",
    "ArrayDataset",
    "ImageFolderDataset",
    "PairedData",
    "content_sha256",
    "dataset_names",
    "download_fashion_mnist",
    "find_fashion_mnist",
    "load_dataset",
    "load_digits_split",
    "load_fashion_mnist",
    "load_paired",
    "paired_dataset_names",
    "read_idx",
    "read_idx_header",
    "resolve_dataset_name",
    "write_idx",
]
