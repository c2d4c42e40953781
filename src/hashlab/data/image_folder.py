"""A folder of images, one sub-folder per class, loaded lazily with Pillow."""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from hashlab.data.arrays import ArrayDataset, Norm, index_tensor, norm_tensor
from hashlab.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
               Image.DecompressionBombWarning)


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn whatever Pillow raises on a damaged, foreign or oversized file into a DataError
    naming ``path``; an image over Pillow's decompression-bomb limit is refused too (Pillow
    only warns below twice the limit)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: cannot read image: it has more pixels than Pillow's limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}), which guards against "
            "decompression bombs; shrink the image, or raise the limit only if you trust the "
            f"file ({exc})") from exc
    except _PIL_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def read_image(path: str | os.PathLike[str], mode: Literal["RGB", "L"],
               size: tuple[int, int] | None = None,
               resample: Image.Resampling = Image.Resampling.BILINEAR) -> np.ndarray:
    """An image file as uint8 [H, W] ("L") or [H, W, 3] ("RGB"), resized to ``size``
    ((height, width)) when given; a damaged, foreign or oversized file is a DataError."""
    path = Path(path)
    with _decoding(path), Image.open(path) as img:
        img = img.convert(mode)
        if size is not None:
            img = img.resize((size[1], size[0]), resample)
        return np.array(img, dtype=np.uint8)


def _image_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """Normalise ``image_size`` to (height, width)."""
    if size is None:
        return None
    hw = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"image_size must be a positive int or (height, width), got {size!r}")
    return hw  # type: ignore[return-value]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__")


def scan_class_folders(root: Path, extensions: Sequence[str]) -> dict[str, list[Path]]:
    """Map each (non-hidden) sub-folder of ``root`` to its image files, searched recursively."""
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or _is_hidden(entry.name):
            continue
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
            files += [
                Path(dirpath, f)
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(exts)
            ]
        found[entry.name] = files
    return found


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` files; items are (float32 tensor [C, H, W] in [0, 1], label).

    Classes are the sorted sub-folder names (or ``classes`` if given, which fixes the label of
    each name, e.g. to share indices between a train and a test folder). Images are read lazily,
    converted to ``mode`` ("RGB" or "L"), resized bilinearly to ``image_size`` ((height, width),
    or an int for square) when given, then normalised by ``mean``/``std`` when given.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int | tuple[int, int] | None = None,
        mode: Literal["RGB", "L"] = "RGB",
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        classes: Sequence[str] | None = None,
        mean: Norm = None,
        std: Norm = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise DataError(f"{self.root}: image folder does not exist")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder (expected one sub-folder per class)")
        if mode not in ("RGB", "L"):
            raise DataError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.mode = mode
        self.image_size = _image_size(image_size)
        self.extensions = tuple(extensions)
        found = scan_class_folders(self.root, self.extensions)
        if not found:
            raise DataError(
                f"{self.root}: no class sub-folders; expected one folder per class, "
                f"e.g. {self.root / 'cat' / '0001.png'}"
            )
        if classes is None:
            for name in sorted(n for n, files in found.items() if not files):
                warnings.warn(
                    f"{self.root / name}: class folder has no images "
                    f"({', '.join(self.extensions)}); skipped",
                    stacklevel=2,
                )
            self.classes = [n for n in sorted(found) if found[n]]
        else:
            self.classes = list(classes)
            if len(set(self.classes)) != len(self.classes):
                raise DataError(f"duplicate class names in {self.classes}")
            extra = sorted(n for n, files in found.items() if files and n not in self.classes)
            if extra:
                raise DataError(
                    f"{self.root}: folders {extra} hold images but are not among the "
                    f"classes {self.classes}"
                )
            for name in self.classes:
                if not found.get(name):
                    warnings.warn(f"{self.root / name}: class has no images", stacklevel=2)
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = [
            (path, self.class_to_idx[c]) for c in self.classes for path in found.get(c, [])
        ]
        if not self.samples:
            raise DataError(
                f"{self.root}: no images found in any class folder "
                f"(looked for {', '.join(self.extensions)})"
            )
        self._finish(mean, std)

    @classmethod
    def from_samples(
        cls,
        samples: Sequence[tuple[str | os.PathLike[str], int]],
        classes: Sequence[str],
        root: str | os.PathLike[str],
        image_size: int | tuple[int, int] | None = None,
        mode: Literal["RGB", "L"] = "RGB",
        mean: Norm = None,
        std: Norm = None,
    ) -> ImageFolderDataset:
        """A dataset over an explicit list of (image path, label in ``0..len(classes)-1``)
        pairs, for datasets whose split files list their images; ``root`` names the dataset
        in messages. The files are not checked here."""
        self = cls.__new__(cls)
        self.root = Path(root).expanduser()
        if mode not in ("RGB", "L"):
            raise DataError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.mode = mode
        self.image_size = _image_size(image_size)
        self.extensions = IMAGE_EXTENSIONS
        self.classes = list(classes)
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"duplicate class names in {self.classes}")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(Path(p), int(label)) for p, label in samples]
        if not self.samples:
            raise DataError(f"{self.root}: no images listed")
        bad = next((lab for _, lab in self.samples if not 0 <= lab < len(self.classes)), None)
        if bad is not None:
            raise DataError(f"{self.root}: label {bad} is outside 0..{len(self.classes) - 1}")
        self._finish(mean, std)
        return self

    def _finish(self, mean: Norm, std: Norm) -> None:
        """Labels, channels and normalisation, once ``samples`` and ``classes`` are set."""
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)
        self.num_classes = len(self.classes)
        self.channels = 3 if self.mode == "RGB" else 1
        self.mean, self.std = mean, std
        if (mean is None) != (std is None):
            self.mean = 0.0 if mean is None else mean
            self.std = 1.0 if std is None else std
        self._mean = norm_tensor(self.mean, self.channels, "mean")
        self._std = norm_tensor(self.std, self.channels, "std")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W): from ``image_size``, else from the first image's header."""
        if self.image_size is not None:
            return (self.channels, *self.image_size)
        path = self.samples[0][0]
        with _decoding(path), Image.open(path) as img:
            width, height = img.size
        return (self.channels, height, width)

    def __len__(self) -> int:
        return len(self.samples)

    def load_array(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 [H, W] ("L") or [H, W, 3] ("RGB"), resized if configured."""
        return read_image(self.samples[i][0], self.mode, self.image_size)

    def _to_tensor(self, arrays: np.ndarray) -> torch.Tensor:
        """uint8 [B, H, W(, C)] -> normalised float32 [B, C, H, W]."""
        t = torch.from_numpy(arrays)
        t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        x = t.to(torch.float32).div_(255.0)
        if self._mean is not None and self._std is not None:
            x.sub_(self._mean).div_(self._std)
        return x

    def _stack(self, idx: Sequence[int], progress: bool = False) -> np.ndarray:
        arrays: list[np.ndarray] = []
        for i in tqdm(idx, desc=f"loading {self.root.name}", disable=None if progress else True):
            arr = self.load_array(i)
            if arrays and arr.shape != arrays[0].shape:
                path, first = self.samples[i][0], self.samples[idx[0]][0]
                raise DataError(
                    f"{path}: image is {arr.shape[1]}x{arr.shape[0]} (WxH) but {first} is "
                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass image_size=... to resize "
                    "all images to one size"
                )
            arrays.append(arr)
        if not arrays:
            h, w = self.image_shape[1:]
            shape = (0, h, w) if self.mode == "L" else (0, h, w, 3)
            return np.zeros(shape, dtype=np.uint8)
        return np.stack(arrays)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} items")
        return self._to_tensor(self.load_array(i)[None])[0], int(self.samples[i][1])

    def get_batch(
        self, indices: torch.Tensor | np.ndarray | Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 [B, C, H, W], int64 [B]); all images must share one size (or set image_size)."""
        idx = index_tensor(indices, len(self)).tolist()
        x = self._to_tensor(self._stack(idx))
        return x, torch.from_numpy(self.labels[idx])

    def to_arrays(self, progress: bool = True) -> ArrayDataset:
        """Load every image into an in-memory :class:`ArrayDataset` (for small folders)."""
        images = self._stack(list(range(len(self))), progress=progress)
        return ArrayDataset(images, self.labels.copy(), self.classes, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={str(self.root)!r}, n={len(self)}, "
            f"num_classes={self.num_classes}, mode={self.mode!r}, image_size={self.image_size})"
        )
