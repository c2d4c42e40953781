"""MIRFLICKR-25K, NUS-WIDE and IAPR TC-12 in the DCMH layout: paired data stored as MATLAB
variables, as released with DCMH (Jiang & Li, CVPR 2017) and the cross-modal hashing code
derived from it.

**Variables.** Three arrays over the same ``N`` items, each under the first of these names that
a file holds: images ``IAll`` or ``images`` (uint8, MATLAB shape ``[H, W, C, N]``, 224×224×3 in
the releases), tags ``YAll`` or ``tags`` (``[N, V]`` bag of words), labels ``LAll`` or ``labels``
(``[N, L]``, 0/1; any value > 0 counts as 1).

**Files.** Either one file holding all three (``FLICKR-25K.mat``, ``mirflickr25k.mat``,
``nus-wide-tc10.mat``, ``IAPR-TC12.mat``, ...) or one file per variable (``<name>-iall.mat``,
``<name>-yall.mat``, ``<name>-lall.mat``), or a mix: each variable is taken from the first
candidate file (its own file first, then the combined ones) that holds it. See :data:`DATASETS`
for the names of each dataset; names are matched case-insensitively, in ``root`` and up to two
folder levels below it (the releases nest them, e.g. ``Cleared-Set/IAll/mirflickr25k-iall.mat``).
Without ``root``: ``$HASHLAB_DATA/<key>``, ``$HASHLAB_DATA``, then ``$HASHLAB_CACHE/<key>``
(default ``~/.cache/hashlab/<key>``); the first folder holding all three variables wins.

**Formats.** MAT v7.3 files are HDF5 (read with h5py): MATLAB writes column-major arrays, so an
HDF5 dataset carrying MATLAB's ``MATLAB_class`` attribute has its axes reversed
(``[N, C, W, H]`` for images, ``[L, N]`` for labels) and is transposed back to the MATLAB shape;
a dataset without it (written from Python) is taken in its stored order. Older MAT files (v5,
``scipy.io.loadmat``) give the MATLAB shape directly. The item axis of each variable is then
found from the sizes the three share (first or last axis; images ``[N, C, H, W]`` or
``[N, H, W, C]`` are accepted when written from Python).

**Splits** (DCMH): a permutation of the ``N`` items drawn with
``numpy.random.default_rng(seed)``; ``query`` = its first ``n_query`` items, ``database`` = the
rest, ``train`` = the first ``n_train`` of the database. Each split's ``indices`` are its items'
positions in the files, sorted. Only the split's items are read (HDF5 files in contiguous runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from hashlab.data.arrays import ArrayDataset, resize_images
from hashlab.data.fashion_mnist import DATA_ENV, dataset_roots
from hashlab.data.paired import SPLITS, PairedData
from hashlab.data.registry import PAIRED_DATASETS
from hashlab.errors import DataError

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIRFLICKR_LABELS",
    "VARIABLES",
    "DCMHDataset",
    "MatFile",
    "dcmh_splits",
    "load_dcmh",
]

Convert = Callable[[np.ndarray], np.ndarray]

#: variable -> the names it may have in a file, in order of preference
VARIABLES: dict[str, tuple[str, ...]] = {
    "images": ("IAll", "images"),
    "tags": ("YAll", "tags"),
    "labels": ("LAll", "labels"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: how many folder levels below a root are searched for the files
SEARCH_DEPTH = 2
#: the most bytes read from an HDF5 file at once
READ_BYTES = 1 << 26

#: MIRFLICKR-25K's 24 labels in the column order of ``LAll`` (the annotation files' order)
MIRFLICKR_LABELS: tuple[str, ...] = (
    "animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor",
    "lake", "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky",
    "structures", "sunset", "transport", "tree", "water",
)


@dataclass(frozen=True)
class DCMHDataset:
    """Where one dataset's variables may be, and what it usually holds."""

    key: str
    title: str
    files: dict[str, tuple[str, ...]]  # variable -> the files of that variable alone
    combined: tuple[str, ...]  # files that may hold every variable
    items: int
    tag_dim: int
    label_dim: int
    source: str
    label_names: tuple[str, ...] | None = None

    def candidates(self, variable: str) -> tuple[str, ...]:
        return (*self.files[variable], *self.combined)

    def expected(self) -> str:
        """The files and variables looked for, in words (for error messages and docs)."""
        keys = {v: " or ".join(names) for v, names in VARIABLES.items()}
        own = ", ".join(f"{'/'.join(self.files[v])} ({keys[v]})" for v in VARIABLES)
        return (f"one of {', '.join(self.combined)} holding {keys['images']}, {keys['tags']} "
                f"and {keys['labels']}, or one file per variable: {own} (names matched "
                f"case-insensitively, up to {SEARCH_DEPTH} folder levels below the root)")


def _separate(prefix: str) -> dict[str, tuple[str, ...]]:
    return {"images": (f"{prefix}-iall.mat",), "tags": (f"{prefix}-yall.mat",),
            "labels": (f"{prefix}-lall.mat",)}


_DCMH = "github.com/jiangqy/DCMH-CVPR2017"
#: the datasets: key (``nus-wide`` by its number of concepts) -> description
DATASETS: dict[str, DCMHDataset] = {
    "mirflickr25k": DCMHDataset(
        "mirflickr25k", "MIRFLICKR-25K", _separate("mirflickr25k"),
        ("FLICKR-25K.mat", "mirflickr25k.mat"), 20015, 1386, 24,
        f"the DCMH authors' FLICKR-25K.mat ({_DCMH}) or the mirflickr25k-iall/-yall/-lall.mat "
        "release of later DCMH-derived code; the original photos and tags: "
        "press.liacs.nl/mirflickr", MIRFLICKR_LABELS),
    "nus-wide-tc10": DCMHDataset(
        "nus-wide", "NUS-WIDE (10 concepts)", _separate("nus-wide-tc10"),
        ("nus-wide-tc10.mat",), 186577, 1000, 10,
        f"the NUS-WIDE-TC10 files of DCMH ({_DCMH}) and DCMH-derived code "
        "(nus-wide-tc10-iall/-yall/-lall.mat); the original data: NUS's LMS lab "
        "(lms.comp.nus.edu.sg)"),
    "nus-wide-tc21": DCMHDataset(
        "nus-wide", "NUS-WIDE (21 concepts)", _separate("nus-wide-tc21"),
        ("nus-wide-tc21.mat",), 195834, 1000, 21,
        f"the NUS-WIDE top-21-concept files of DCMH ({_DCMH}); the original data: NUS's LMS "
        "lab (lms.comp.nus.edu.sg)"),
    "iapr-tc12": DCMHDataset(
        "iapr-tc12", "IAPR TC-12", _separate("iapr-tc12"), ("IAPR-TC12.mat",), 20000, 2912, 255,
        "IAPR-TC12.mat (IAll, YAll, LAll) as used by DCMH-derived code; the original photos "
        "and captions: ImageCLEF (imageclef.org/photodata)"),
}


# ------------------------------------------------------------------------------ MAT files
class MatFile:
    """One MAT file, v7.3 (HDF5, through h5py) or older (v5/v4, through ``scipy.io``).

    Shapes and reads are in the *logical* (MATLAB) axis order; variables are listed without
    reading them, and only the requested items are read from HDF5 files."""

    def __init__(self, path: Path) -> None:
        import h5py
        from scipy.io.matlab import MatReadError

        self.path = path
        self.hdf5 = bool(h5py.is_hdf5(path))
        self._loaded: dict[str, np.ndarray] = {}
        try:
            if self.hdf5:
                self._h5 = h5py.File(path, "r")
                self._shapes = {k: tuple(v.shape) for k, v in self._h5.items()
                                if isinstance(v, h5py.Dataset) and not k.startswith("#")}
                self._shapes = {k: s[::-1] if self.matlab_order(k) else s
                                for k, s in self._shapes.items()}
            else:
                from scipy.io import whosmat

                self._shapes = {name: tuple(shape) for name, shape, _ in whosmat(str(path))}
        except (OSError, ValueError, NotImplementedError, MatReadError) as exc:
            raise DataError(f"{path}: not a readable MAT file: {exc}") from exc

    @property
    def variables(self) -> list[str]:
        return sorted(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def matlab_order(self, name: str) -> bool:
        """Whether the stored axes are MATLAB's reversed (an HDF5 dataset written by MATLAB)."""
        return self.hdf5 and "MATLAB_class" in self._h5[name].attrs

    def _full(self, name: str) -> np.ndarray:
        if name not in self._loaded:
            from scipy.io import loadmat
            from scipy.io.matlab import MatReadError

            try:
                value = loadmat(str(self.path), variable_names=[name])[name]
            except (OSError, ValueError, NotImplementedError, MatReadError) as exc:
                raise DataError(f"{self.path}: cannot read {name}: {exc}") from exc
            self._loaded[name] = value.toarray() if hasattr(value, "toarray") else value
        return self._loaded[name]

    def read_items(self, name: str, axis: int, rows: np.ndarray) -> Iterator[np.ndarray]:
        """The items ``rows`` (sorted) along logical ``axis`` of variable ``name``, in chunks,
        each with the item axis first and the others in logical order."""
        if not self.hdf5:
            full = np.moveaxis(self._full(name), axis, 0)
            step = max(1, READ_BYTES // max(1, full[:1].nbytes))
            for start in range(0, len(rows), step):
                yield full[rows[start : start + step]]
            return
        dataset = self._h5[name]
        shape = self.shape(name)
        reverse = self.matlab_order(name)
        stored_axis = len(shape) - 1 - axis if reverse else axis
        per_item = int(np.prod(shape)) // max(1, shape[axis]) * dataset.dtype.itemsize
        for start, stop in _runs(rows, max(1, READ_BYTES // max(1, per_item))):
            where = [slice(None)] * len(shape)
            where[stored_axis] = slice(start, stop)
            try:
                chunk = dataset[tuple(where)]
            except OSError as exc:
                raise DataError(f"{self.path}: cannot read {name}: {exc}") from exc
            yield np.moveaxis(chunk.T if reverse else chunk, axis, 0)

    def close(self) -> None:
        if self.hdf5:
            self._h5.close()


def _runs(rows: np.ndarray, longest: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of the runs of consecutive values in sorted ``rows``, each at most
    ``longest`` long."""
    if not len(rows):
        return
    for run in np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1):
        for i in range(0, len(run), longest):
            part = run[i : i + longest]
            yield int(part[0]), int(part[-1]) + 1


class _Files:
    """The MAT files opened while loading, closed together."""

    def __init__(self) -> None:
        self._open: dict[Path, MatFile] = {}

    def __getitem__(self, path: Path) -> MatFile:
        if path not in self._open:
            self._open[path] = MatFile(path)
        return self._open[path]

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for f in self._open.values():
            f.close()


# ------------------------------------------------------------------------------ finding files
def data_roots(spec: DCMHDataset, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched: ``root`` alone if given, else ``$HASHLAB_DATA/<key>``,
    ``$HASHLAB_DATA`` and ``$HASHLAB_CACHE/<key>``."""
    return dataset_roots(spec.key, root)


def _scan(base: Path, wanted: set[str]) -> dict[str, list[Path]]:
    """Lower-cased file name -> the files of that name in ``base`` and up to SEARCH_DEPTH
    levels below (shallower first)."""
    found: dict[str, list[Path]] = {}
    level = [base]
    for _ in range(SEARCH_DEPTH + 1):
        below = []
        for folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if e.name.lower() in wanted and e.is_file():
                    found.setdefault(e.name.lower(), []).append(Path(e.path))
                elif e.is_dir() and not e.name.startswith("."):
                    below.append(Path(e.path))
        level = below
    return found


def _locate(spec: DCMHDataset, roots: list[Path], files: _Files) -> dict[str, tuple[Path, str]]:
    """variable -> (file, name in the file), from the first root that holds all three."""
    wanted = {name.lower() for v in VARIABLES for name in spec.candidates(v)}
    problems = []
    for base in roots:
        found = _scan(base, wanted) if base.is_dir() else {}
        if not found:
            problems.append(f"{base}: {'no data files' if base.is_dir() else 'no such folder'}")
            continue
        located: dict[str, tuple[Path, str]] = {}
        for var, keys in VARIABLES.items():
            paths = [p for name in spec.candidates(var) for p in found.get(name.lower(), [])]
            hits = ((p, k) for p in paths for k in keys if k in files[p].variables)
            hit = next(hits, None)
            if hit is None:
                if paths:
                    seen = ", ".join(f"{p} (holds {', '.join(files[p].variables) or 'nothing'})"
                                     for p in paths)
                    problems.append(f"{base}: no {' or '.join(keys)} ({var}) in {seen}")
                else:
                    problems.append(f"{base}: no file for the {var} "
                                    f"({', '.join(spec.candidates(var))})")
                break
            located[var] = hit
        else:
            return located
    raise DataError(
        f"{spec.title} (DCMH layout): no complete set of files. Looked for {spec.expected()}; "
        f"searched: "
        f"{'; '.join(problems)}. The files come from {spec.source}; pass root=<folder> "
        f"(or set ${DATA_ENV}).")


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class _Layout:
    items: int
    axes: dict[str, int]  # variable -> its item axis (logical order)
    channels_first: bool  # images [N, C, H, W] once the item axis is first


def _layout(shapes: dict[str, tuple[int, ...]], where: dict[str, str]) -> _Layout:
    """The number of items and each variable's item axis, from the logical shapes."""
    for var, ndim in (("images", 4), ("tags", 2), ("labels", 2)):
        if len(shapes[var]) != ndim:
            raise DataError(f"{where[var]}: expected a {ndim}-D array, got shape {shapes[var]}")
    labels, tags, images = shapes["labels"], shapes["tags"], shapes["images"]
    common = set(labels) & set(tags) & {images[0], images[3]}
    if not common:
        raise DataError(f"the variables do not share a number of items: {where['images']} "
                        f"{images}, {where['tags']} {tags}, {where['labels']} {labels}")
    n = labels[0] if labels[0] in common else labels[1]  # MATLAB's [N, L] first
    axes = {"labels": 0 if labels[0] == n else 1, "tags": 0 if tags[0] == n else 1,
            "images": 3 if images[3] == n else 0}  # MATLAB's [H, W, C, N] first
    rest = images[:3] if axes["images"] == 3 else images[1:]
    channels_first = axes["images"] == 0 and rest[0] in (1, 3) and rest[2] not in (1, 3)
    channels = rest[0] if channels_first else rest[2]
    if channels not in (1, 3):
        raise DataError(f"{where['images']}: expected images with 1 or 3 channels, got shape "
                        f"{images}")
    return _Layout(n, axes, channels_first)


def _read(file: MatFile, name: str, axis: int, rows: np.ndarray,
          convert: Convert) -> np.ndarray:
    """The converted items ``rows`` of a variable, chunk by chunk into one array."""
    out: np.ndarray | None = None
    pos = 0
    for chunk in file.read_items(name, axis, rows):
        part = convert(chunk)
        if out is None:
            out = np.empty((len(rows), *part.shape[1:]), dtype=part.dtype)
        out[pos : pos + len(part)] = part
        pos += len(part)
    assert out is not None and pos == len(rows)
    return out


def _check_values(chunk: np.ndarray, where: str, low: float, high: float | None) -> None:
    if chunk.dtype.kind not in "biuf":
        raise DataError(f"{where}: expected numbers, got {chunk.dtype}")
    if chunk.size and (not np.isfinite(chunk).all() or chunk.min() < low
                       or (high is not None and chunk.max() > high)):
        limits = f"{low}..{high}" if high is not None else f">= {low}"
        raise DataError(f"{where}: values must be finite and {limits}")


def _image_converter(where: str, channels_first: bool,
                     image_size: int | tuple[int, int] | None) -> Convert:
    def convert(chunk: np.ndarray) -> np.ndarray:
        if channels_first:
            chunk = chunk.transpose(0, 2, 3, 1)
        if chunk.dtype != np.uint8:
            _check_values(chunk, where, 0, 255)
            chunk = np.rint(chunk).astype(np.uint8)
        chunk = np.ascontiguousarray(chunk)
        return chunk if image_size is None else resize_images(chunk, image_size)

    return convert


def _labels01(where: str) -> Convert:
    def convert(chunk: np.ndarray) -> np.ndarray:
        _check_values(chunk, where, 0, None)
        return (chunk > 0).astype(np.uint8)

    return convert


def _tags(where: str) -> Convert:
    def convert(chunk: np.ndarray) -> np.ndarray:
        _check_values(chunk, where, -np.inf, None)
        return chunk.astype(np.float32)

    return convert


def dcmh_splits(n_items: int, seed: int = 0, n_query: int = 2000,
                n_train: int = 10000) -> dict[str, np.ndarray]:
    """DCMH's split of ``n_items`` items: a ``default_rng(seed)`` permutation; ``query`` = its
    first ``n_query``, ``database`` = the rest, ``train`` = the database's first ``n_train``
    (each sorted)."""
    if not 0 < n_query < n_items:
        raise DataError(f"n_query must be in 1..{n_items - 1} ({n_items} items), got {n_query}")
    if not 0 < n_train <= n_items - n_query:
        raise DataError(f"n_train must be in 1..{n_items - n_query} (the database), got "
                        f"{n_train}")
    order = np.random.default_rng(seed).permutation(n_items)
    database = order[n_query:]
    return {"query": np.sort(order[:n_query]), "database": np.sort(database),
            "train": np.sort(database[:n_train])}


def load_dcmh(
    spec: DCMHDataset,
    split: str,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_query: int = 2000,
    n_train: int = 10000,
    normalize: bool = True,
    image_size: int | tuple[int, int] | None = None,
) -> PairedData:
    """One split of a DCMH-layout dataset as :class:`PairedData` (see the module docstring)."""
    if split not in SPLITS:
        raise DataError(f"{spec.key}: unknown split {split!r}; known: {', '.join(SPLITS)}")
    with _Files() as files:
        located = _locate(spec, data_roots(spec, root), files)
        where = {v: f"{p}:{k}" for v, (p, k) in located.items()}
        layout = _layout({v: files[p].shape(k) for v, (p, k) in located.items()}, where)
        idx = dcmh_splits(layout.items, seed, n_query, n_train)[split]

        def read(var: str, convert: Convert) -> np.ndarray:
            path, key = located[var]
            return _read(files[path], key, layout.axes[var], idx, convert)

        labels = read("labels", _labels01(where["labels"]))
        tags = read("tags", _tags(where["tags"]))
        images = read("images", _image_converter(where["images"], layout.channels_first,
                                                 image_size))
    names = spec.label_names
    label_names = list(names) if names and len(names) == labels.shape[1] else [
        f"label{j}" for j in range(labels.shape[1])]
    mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if images.shape[3] == 3 else
                 (float(np.mean(IMAGENET_MEAN)), float(np.mean(IMAGENET_STD))))
    return PairedData(
        images=ArrayDataset(images, labels.argmax(axis=1), label_names,
                            *((mean, std) if normalize else (None, None))),
        texts=tags, labels=labels, vocabulary=[f"tag{j}" for j in range(tags.shape[1])],
        label_names=label_names, indices=idx.astype(np.int64))


# ------------------------------------------------------------------------------ registered
_NOT_DOWNLOADED = "``download`` is ignored: the files must be fetched by hand (see the docs)."


def _fixed_loader(key: str, summary: str) -> Callable[..., PairedData]:
    """The loader of the dataset ``DATASETS[key]`` (one file set, DCMH's 2,000 / 10,000)."""

    def loader(
        split: str,
        root: str | os.PathLike[str] | None = None,
        seed: int = 0,
        n_query: int = 2000,
        n_train: int = 10000,
        normalize: bool = True,
        image_size: int | tuple[int, int] | None = None,
        download: bool = True,
    ) -> PairedData:
        return load_dcmh(DATASETS[key], split, root, seed, n_query, n_train, normalize,
                         image_size)

    loader.__name__ = loader.__qualname__ = f"{key.replace('-', '_')}_loader"
    loader.__doc__ = f"{summary}\n\n{_NOT_DOWNLOADED}"
    return loader


mirflickr25k_loader = PAIRED_DATASETS.register("mirflickr25k", "mirflickr")(_fixed_loader(
    "mirflickr25k",
    "MIRFLICKR-25K, DCMH files: 20,015 images, 1,386-d tag BoW, 24 labels; 2,000 queries."))
iapr_tc12_loader = PAIRED_DATASETS.register("iapr-tc12")(_fixed_loader(
    "iapr-tc12",
    "IAPR TC-12, DCMH files: 20,000 images, 2,912-d tag BoW, 255 labels; 2,000 queries."))


@PAIRED_DATASETS.register("nus-wide")
def nus_wide_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    concepts: int = 10,
    n_query: int = 2100,
    n_train: int = 10500,
    normalize: bool = True,
    image_size: int | tuple[int, int] | None = None,
    download: bool = True,
) -> PairedData:
    """NUS-WIDE, DCMH files (10 or 21 concepts): 1,000-d tag BoW; 2,100 queries.

    ``download`` is ignored: the files must be fetched by hand (see the docs)."""
    if concepts not in (10, 21):
        raise DataError(f"nus-wide: concepts must be 10 or 21, got {concepts!r}")
    return load_dcmh(DATASETS[f"nus-wide-tc{concepts}"], split, root, seed, n_query, n_train,
                     normalize, image_size)
