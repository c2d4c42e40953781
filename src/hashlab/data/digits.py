"""scikit-learn's bundled digits (1797 8x8 images): a small dataset that is always present."""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np

from hashlab.errors import DataError

DIGITS_CLASSES: list[str] = [str(i) for i in range(10)]
#: Pixel mean and std of all 1797 images after scaling to [0, 1].
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3759

DigitsSplit = Literal["train", "test", "all"]


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_digits_split(
    split: DigitsSplit = "train", test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 8, 8] in 0..255, labels int64 [N]) for one split.

    The train/test split is stratified by class and deterministic for a given
    ``(test_fraction, seed)``; ``"all"`` returns every image in the original order.
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"unknown digits split {split!r}; known: train, test, all")
    images, labels = _all_digits()
    if split == "all":
        return images.copy(), labels.copy()
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.model_selection import train_test_split

    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
        )
    except ValueError as exc:
        raise DataError(f"cannot split digits with test_fraction={test_fraction}: {exc}") from exc
    idx = np.sort(train_idx if split == "train" else test_idx)
    return images[idx], labels[idx]
