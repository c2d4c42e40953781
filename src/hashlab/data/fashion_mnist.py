"""Fashion-MNIST: find the four IDX files locally (or download them), verify and load them.

Search order (the first folder holding all four files wins):

1. ``root`` if given — and only there (a download, if allowed, goes into it);
2. ``$HASHLAB_DATA`` and ``$HASHLAB_DATA/fashion-mnist``;
3. the cache, ``$HASHLAB_CACHE/fashion-mnist`` (default ``~/.cache/hashlab/fashion-mnist``);
4. :data:`SYSTEM_DIRS` (the Debian package ``dataset-fashion-mnist``);
5. a download from :data:`FASHION_MNIST_URL` into the cache, verified by SHA-256.

Checksums are of the *decompressed* content: Debian re-gzips the files, so the compressed bytes
differ from the official ones while the content is identical.
"""

from __future__ import annotations

import functools
import http.client
import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal
from urllib.request import urlopen

import numpy as np
from tqdm.auto import tqdm

from hashlab.data.idx import PathLike, content_sha256, read_idx, read_idx_header
from hashlab.errors import DataError

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
#: split -> (images file, labels file)
FASHION_MNIST_SPLITS: dict[str, tuple[str, str]] = {
    "train": (FASHION_MNIST_FILES[0], FASHION_MNIST_FILES[1]),
    "test": (FASHION_MNIST_FILES[2], FASHION_MNIST_FILES[3]),
}
#: SHA-256 of each file's decompressed content.
FASHION_MNIST_SHA256: dict[str, str] = dict(
    zip(
        FASHION_MNIST_FILES,
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        strict=True,
    )
)
#: Expected array shape of each file (all are uint8).
FASHION_MNIST_SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte.gz": (60000, 28, 28),
    "train-labels-idx1-ubyte.gz": (60000,),
    "t10k-images-idx3-ubyte.gz": (10000, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (10000,),
}
#: Pixel mean and std of the training images scaled to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
APT_PACKAGE = "dataset-fashion-mnist"
#: System-wide folders searched after the cache (overridable, e.g. in tests).
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
SYSTEM_DIRS: tuple[Path, ...] = (DEBIAN_DIR,)
DOWNLOAD_TIMEOUT = 30.0
DATA_ENV = "HASHLAB_DATA"
CACHE_ENV = "HASHLAB_CACHE"

Split = Literal["train", "test"]


def cache_root() -> Path:
    """hashlab's cache folder: ``$HASHLAB_CACHE`` if set, else ``~/.cache/hashlab``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hashlab"


def dataset_roots(key: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for a dataset's files: ``root`` alone if given, else
    ``$HASHLAB_DATA/<key>``, ``$HASHLAB_DATA`` and ``$HASHLAB_CACHE/<key>``."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    env = os.environ.get(DATA_ENV)
    if env:
        roots += [Path(env).expanduser() / key, Path(env).expanduser()]
    return [*roots, cache_root() / key]


def fashion_mnist_cache_dir() -> Path:
    """Where downloads go: ``cache_root() / "fashion-mnist"``."""
    return cache_root() / "fashion-mnist"


def candidate_dirs(root: PathLike | None = None) -> list[Path]:
    """The folders searched, in order (``root`` alone when given)."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs: list[Path] = []
    data = os.environ.get(DATA_ENV)
    if data:
        base = Path(data).expanduser()
        dirs += [base, base / "fashion-mnist"]
    dirs.append(fashion_mnist_cache_dir())
    dirs.extend(SYSTEM_DIRS)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def check_file(path: Path, name: str, verify: bool = False) -> None:
    """Raise DataError unless ``path`` holds Fashion-MNIST file ``name``.

    Always checks the header (dtype and shape; cheap); ``verify`` also hashes the whole content.
    """
    dtype, shape = read_idx_header(path)
    expected = FASHION_MNIST_SHAPES[name]
    if dtype != np.uint8 or shape != expected:
        raise DataError(
            f"{path}: expected a uint8 array of shape {expected} ({name}), "
            f"the header says {dtype.name} {shape}"
        )
    if verify:
        digest = content_sha256(path)
        if digest != FASHION_MNIST_SHA256[name]:
            raise DataError(
                f"{path}: SHA-256 of the decompressed content is {digest}, expected "
                f"{FASHION_MNIST_SHA256[name]} ({name} is corrupt or not Fashion-MNIST)"
            )


def _content_length(resp: object) -> int | None:
    headers = getattr(resp, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _download_file(url: str, dest: Path, name: str) -> None:
    """Download ``url`` to ``dest`` via a temp file; verify its checksum, then os.replace."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp:
            total = _content_length(resp)
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                disable=None,
                leave=False,
            ) as bar:
                size = 0
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and size != total:
            raise DataError(f"{url}: incomplete download ({size} of {total} bytes)")
        try:
            check_file(tmp, name, verify=True)
        except DataError as exc:
            raise DataError(f"{url}: downloaded file failed verification: {exc}") from exc
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_fashion_mnist(target: PathLike | None = None, verify: bool = False) -> Path:
    """Download the missing or invalid files into ``target`` (default: the cache) and return it.

    Each file is checked against its SHA-256 before it is moved into place, so an interrupted or
    bad download leaves nothing behind. Raises DataError on any failure.
    """
    target = Path(target).expanduser() if target is not None else fashion_mnist_cache_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {target}: {exc.strerror or exc}") from exc
    for name in FASHION_MNIST_FILES:
        dest = target / name
        if dest.is_file():
            try:
                check_file(dest, name, verify=verify)
                continue
            except DataError:
                pass  # replaced below by a verified download
        url = FASHION_MNIST_URL + name
        try:
            _download_file(url, dest, name)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DataError(f"downloading {url} failed: {type(exc).__name__}: {exc}") from exc
    return target


def _not_found_message(
    looked: list[str], target: Path, download: bool, download_error: str | None
) -> str:
    files = ", ".join(FASHION_MNIST_FILES)
    lines = ["Fashion-MNIST not found.", "Looked in:"]
    lines += [f"  - {entry}" for entry in looked]
    lines += [
        "Get it in one of three ways:",
        f"  (a) set {DATA_ENV} to a folder holding the four files {files} "
        f"(or a 'fashion-mnist' sub-folder of it);",
        f"  (b) sudo apt-get install {APT_PACKAGE}  (installs them in {DEBIAN_DIR});",
        f"  (c) allow the download (needs internet access) from {FASHION_MNIST_URL} "
        f"into {target} (download=True).",
    ]
    if download_error is not None:
        lines.append(f"The download failed: {download_error}")
    elif not download:
        lines.append("The download was not attempted (download=False).")
    return "\n".join(lines)


def find_fashion_mnist(
    root: PathLike | None = None, download: bool = True, verify: bool = False
) -> Path:
    """Return the folder holding the four Fashion-MNIST files, downloading them if allowed.

    Found files get a cheap header check (dtype, shape); ``verify=True`` also checks the full
    SHA-256. A folder whose files fail is skipped with a warning. Raises one DataError naming
    every way to get the data when nothing works.
    """
    looked: list[str] = []
    skipped: list[str] = []
    for d in candidate_dirs(root):
        missing = [n for n in FASHION_MNIST_FILES if not (d / n).is_file()]
        if missing:
            if d.is_dir():
                why = f"missing {', '.join(missing)}"
            else:
                why = "not a folder" if d.exists() else "does not exist"
            looked.append(f"{d} ({why})")
            continue
        try:
            for name in FASHION_MNIST_FILES:
                check_file(d / name, name, verify=verify)
        except DataError as exc:
            looked.append(f"{d} (unusable: {exc})")
            skipped.append(str(exc))
            continue
        if skipped:
            warnings.warn(
                f"using Fashion-MNIST from {d}; skipped unusable files: {'; '.join(skipped)}",
                stacklevel=2,
            )
        return d
    target = Path(root).expanduser() if root is not None else fashion_mnist_cache_dir()
    download_error: str | None = None
    if download:
        try:
            return download_fashion_mnist(target, verify=verify)
        except DataError as exc:
            download_error = str(exc)
    raise DataError(_not_found_message(looked, target, download, download_error))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _load_pair(
    images_path: str, labels_path: str, _stamps: tuple[object, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one split; cached on the resolved paths (and their mtime/size)."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path}: expected 1-D integer labels, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path} holds {len(images)} images"
        )
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise DataError(
            f"{labels_path}: labels must be in 0..{len(FASHION_MNIST_CLASSES) - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    images.flags.writeable = False  # shared by every caller through the cache
    labels.flags.writeable = False
    return images, labels


def load_fashion_mnist(
    split: Split = "train",
    root: PathLike | None = None,
    download: bool = True,
    verify: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split: (images uint8 [N, 28, 28], labels int64 [N]), both read-only.

    Arrays are cached in-process, so repeated calls are free; copy before modifying.
    """
    if split not in FASHION_MNIST_SPLITS:
        raise DataError(
            f"unknown Fashion-MNIST split {split!r}; known: {', '.join(FASHION_MNIST_SPLITS)}"
        )
    folder = find_fashion_mnist(root, download=download, verify=verify)
    images_path, labels_path = (folder / n for n in FASHION_MNIST_SPLITS[split])
    try:
        stamps = (_stamp(images_path), _stamp(labels_path))
        images_path, labels_path = images_path.resolve(), labels_path.resolve()
    except OSError as exc:
        raise DataError(f"cannot read Fashion-MNIST in {folder}: {exc}") from exc
    return _load_pair(str(images_path), str(labels_path), stamps)


def clear_cache() -> None:
    """Forget the arrays cached by :func:`load_fashion_mnist`."""
    _load_pair.cache_clear()
