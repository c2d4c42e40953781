"""In-memory image datasets backed by a uint8 array, with a fast batched accessor."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hashlab.errors import DataError

Norm = float | Sequence[float] | None


def norm_tensor(value: Norm, channels: int, name: str) -> torch.Tensor | None:
    """A (1, C, 1, 1) float32 tensor from a scalar or per-channel sequence (None stays None)."""
    if value is None:
        return None
    vals = [float(value)] if np.isscalar(value) else [float(v) for v in value]  # type: ignore[union-attr]
    if len(vals) not in (1, channels):
        raise DataError(f"{name} has {len(vals)} values but the images have {channels} channels")
    if name == "std" and any(v <= 0 for v in vals):
        raise DataError(f"std must be > 0, got {vals}")
    t = torch.tensor(vals, dtype=torch.float32)
    return t.expand(channels).reshape(1, channels, 1, 1).clone()


def index_tensor(indices: torch.Tensor | np.ndarray | Sequence[int], n: int) -> torch.Tensor:
    """Validate batch indices against a dataset of size ``n``; returns an int64 1-D tensor."""
    idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean mask has shape {tuple(idx.shape)}, expected ({n},)")
        return idx.nonzero().flatten()
    if idx.dtype.is_floating_point or idx.dtype.is_complex:
        raise IndexError(f"indices must be integers, got {idx.dtype}")
    idx = idx.to(torch.int64).reshape(-1) if idx.ndim == 0 else idx.to(torch.int64)
    if idx.ndim != 1:
        raise IndexError(f"indices must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -n or hi >= n:
            raise IndexError(f"index out of range for a dataset of {n} items ({lo}..{hi})")
        if lo < 0:
            idx = torch.where(idx < 0, idx + n, idx)
    return idx


def resize_images(images: np.ndarray, size: int | Sequence[int], chunk: int = 4096) -> np.ndarray:
    """Bilinearly resize uint8 images [N, H, W] or [N, H, W, C] to ``size`` ((height, width))."""
    hw = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)  # type: ignore[arg-type]
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"image_size must be a positive int or (height, width), got {size!r}")
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(f"expected uint8 images [N, H, W(, C)], got {images.dtype} {images.shape}")
    if tuple(images.shape[1:3]) == hw:
        return images
    out = np.empty((len(images), *hw, *images.shape[3:]), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        t = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk]))
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        r = F.interpolate(t.float(), size=hw, mode="bilinear", align_corners=False, antialias=True)
        r = r.round_().clamp_(0, 255).to(torch.uint8)
        r = r[:, 0] if images.ndim == 3 else r.permute(0, 2, 3, 1)
        out[start : start + chunk] = r.numpy()
    return out


class ArrayDataset(Dataset):
    """Images uint8 ``[N, H, W]`` or ``[N, H, W, C]`` with int labels ``[N]``.

    Items are ``(float32 tensor [C, H, W], int)``: pixels scaled to [0, 1], then normalised as
    ``(x - mean) / std`` when ``mean``/``std`` are given (scalars or one value per channel).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str] | None = None,
        mean: Norm = None,
        std: Norm = None,
    ) -> None:
        if isinstance(images, torch.Tensor):
            images = images.numpy()
        if isinstance(labels, torch.Tensor):
            labels = labels.numpy()
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8:
            raise DataError(f"images must be uint8, got {images.dtype}")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] == 0):
            raise DataError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(
                f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
            )
        if len(labels) != len(images):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        labels = labels.astype(np.int64)
        if len(labels) and labels.min() < 0:
            raise DataError(f"labels must be >= 0, found {labels.min()}")
        self.classes: list[str] | None = list(classes) if classes is not None else None
        if self.classes is not None:
            if len(labels) and labels.max() >= len(self.classes):
                raise DataError(
                    f"label {labels.max()} out of range for {len(self.classes)} classes"
                )
            self.num_classes = len(self.classes)
        else:
            self.num_classes = int(labels.max()) + 1 if len(labels) else 0

        channels = 1 if images.ndim == 3 else images.shape[3]
        self.image_shape: tuple[int, int, int] = (channels, images.shape[1], images.shape[2])
        if (mean is None) != (std is None):
            mean = 0.0 if mean is None else mean
            std = 1.0 if std is None else std
        self.mean, self.std = mean, std
        self._mean = norm_tensor(mean, channels, "mean")
        self._std = norm_tensor(std, channels, "std")

        if not images.flags.writeable:
            images = images.copy()  # torch.from_numpy needs a writable buffer
        images = np.ascontiguousarray(images)
        self.images = images
        self.labels = labels
        data = torch.from_numpy(images)
        self._data = (
            data.unsqueeze(1) if images.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()
        )
        self._labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        x, y = self.get_batch(torch.tensor([i]))
        return x[0], int(y[0])

    def get_batch(
        self, indices: torch.Tensor | np.ndarray | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 [B, C, H, W], int64 [B]) for ``indices``, sliced from one uint8 tensor."""
        idx = index_tensor(indices, len(self))
        x = self._data.index_select(0, idx).to(torch.float32).div_(255.0)
        if self._mean is not None and self._std is not None:
            x.sub_(self._mean).div_(self._std)
        return x, self._labels.index_select(0, idx)

    def subset(self, indices: torch.Tensor | np.ndarray | Sequence[int]) -> ArrayDataset:
        """A new ArrayDataset holding only ``indices`` (same classes and normalisation)."""
        idx = index_tensor(indices, len(self)).numpy()
        return ArrayDataset(self.images[idx], self.labels[idx], self.classes, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )
