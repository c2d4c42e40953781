"""Fine-grained image datasets in their published on-disk layouts: CUB-200-2011, FGVC-Aircraft,
Stanford Cars and Food-101, each with its standard train/test split.

Nothing is downloaded: unpack the official archives and point hashlab at them (``root``, else
``$HASHLAB_DATA/<key>``, ``$HASHLAB_DATA``, then ``$HASHLAB_CACHE/<key>``, default
``~/.cache/hashlab/<key>``; the first folder holding the files wins). The docs:
``docs/data-and-models.md#fine-grained-datasets``.

**CUB-200-2011** (``cub-200-2011``; 5,994 train / 5,794 test, 200 bird species).
``CUB_200_2011/`` (or its files directly in the root): ``images.txt``
(``<image_id> <path under images/>``), ``image_class_labels.txt`` (``<image_id> <class_id>``,
1-based), ``train_test_split.txt`` (``<image_id> <1 = train, 0 = test>``), ``classes.txt``
(``<class_id> <name>``, names such as ``001.Black_footed_Albatross``), images under
``images/``. ``bounding_boxes.txt``, ``parts/`` and ``attributes/`` are not read.

**FGVC-Aircraft** (``fgvc-aircraft``; train = the ``trainval`` list, 6,667; test, 3,333).
``fgvc-aircraft-2013b/data/`` (or ``data/``, or the files in the root): ``images/<id>.jpg``,
``images_<level>_trainval.txt`` / ``images_<level>_test.txt`` (``<image_id> <class name>``, the
name may hold spaces) and the class list ``variants.txt`` (100), ``families.txt`` (70) or
``manufacturers.txt`` (30), one name a line, in label order; ``level`` is ``variant`` (the
standard protocol, default), ``family`` or ``manufacturer``. The images keep the 20-pixel
copyright banner at their bottom (not cropped here).

**Stanford Cars** (``stanford-cars``; 8,144 train / 8,041 test, 196 models). The original
release: ``devkit/cars_meta.mat`` (``class_names``, a 1×196 cell), ``devkit/cars_train_annos.mat``
and ``cars_test_annos_withlabels.mat`` (in ``devkit/`` or the root; the devkit's own
``cars_test_annos.mat`` has no classes), MATLAB v5 struct arrays ``annotations`` with fields
``bbox_x1, bbox_y1, bbox_x2, bbox_y2, class`` (1-based) and ``fname``; images in ``cars_train/``
and ``cars_test/``. The root may also hold them in ``stanford_cars/`` (torchvision's folder).
The bounding boxes are not used.

**Food-101** (``food-101``; 75,750 train / 25,250 test, 101 dishes). ``food-101/`` (or its
files in the root): ``meta/classes.txt`` (one class a line, in label order), the split lists
``meta/train.txt`` / ``meta/test.txt`` (lines ``<class>/<image_id>``) or ``meta/train.json`` /
``meta/test.json`` (class -> list of ``<class>/<image_id>``; read when the ``.txt`` is absent),
images ``images/<class>/<image_id>.jpg``.

Each loader returns an :class:`~hashlab.data.image_folder.ImageFolderDataset` over the split's
images (read lazily, converted to RGB, resized to ``image_size``, default 224×224, normalised
with the ImageNet mean and std), its ``classes`` the class names in label order. Every listed
image must exist (the error names the first missing ones); a malformed line is an error naming
the file and the line number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hashlab.data.crossmodal_files import IMAGENET_MEAN, IMAGENET_STD
from hashlab.data.fashion_mnist import DATA_ENV, dataset_roots
from hashlab.data.image_folder import ImageFolderDataset
from hashlab.data.registry import DATASETS
from hashlab.errors import DataError

__all__ = [
    "AIRCRAFT_LEVELS",
    "FINEGRAINED",
    "SPLITS",
    "FineGrained",
    "aircraft_samples",
    "cars_samples",
    "cub_samples",
    "data_roots",
    "food_samples",
]

#: the split names of every fine-grained dataset
SPLITS: tuple[str, ...] = ("train", "test")
#: FGVC-Aircraft's label levels -> (split-list name part, class-list file)
AIRCRAFT_LEVELS: dict[str, tuple[str, str]] = {
    "variant": ("variant", "variants.txt"),
    "family": ("family", "families.txt"),
    "manufacturer": ("manufacturer", "manufacturers.txt"),
}
#: how many missing image paths an error message shows
SHOW_MISSING = 5

Samples = list[tuple[Path, int]]


@dataclass(frozen=True)
class FineGrained:
    """One dataset: where its files may be and where they come from."""

    key: str
    title: str
    nested: tuple[str, ...]  # sub-folders of a root that may hold the files ("" = the root)
    layout: str  # the files, in words
    source: str  # where to get them
    sizes: dict[str, int]  # split -> published number of images
    classes: int


FINEGRAINED: dict[str, FineGrained] = {
    "cub-200-2011": FineGrained(
        "cub-200-2011", "CUB-200-2011", ("CUB_200_2011", ""),
        "CUB_200_2011/images.txt, image_class_labels.txt, train_test_split.txt, classes.txt "
        "and images/<class>/<name>.jpg (the folder CUB_200_2011/ or its files in the root)",
        "CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
        "(data.caltech.edu/records/65de6-vzc31)",
        {"train": 5994, "test": 5794}, 200),
    "fgvc-aircraft": FineGrained(
        "fgvc-aircraft", "FGVC-Aircraft", ("fgvc-aircraft-2013b/data", "data", ""),
        "fgvc-aircraft-2013b/data/images/<id>.jpg, images_<level>_trainval.txt, "
        "images_<level>_test.txt and variants.txt / families.txt / manufacturers.txt (the "
        "folder fgvc-aircraft-2013b/data/, data/ or its files in the root)",
        "fgvc-aircraft-2013b.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        {"train": 6667, "test": 3333}, 100),
    "stanford-cars": FineGrained(
        "stanford-cars", "Stanford Cars", ("", "stanford_cars"),
        "devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat "
        "(in devkit/ or the root), cars_train/*.jpg and cars_test/*.jpg",
        "car_devkit.tgz, cars_train.tgz, cars_test.tgz and cars_test_annos_withlabels.mat, "
        "released at https://ai.stanford.edu/~jkrause/cars/car_dataset.html (that page is no "
        "longer served; copies of the same files are mirrored elsewhere)",
        {"train": 8144, "test": 8041}, 196),
    "food-101": FineGrained(
        "food-101", "Food-101", ("food-101", ""),
        "food-101/meta/classes.txt, meta/train.txt and meta/test.txt (or meta/train.json and "
        "meta/test.json) and images/<class>/<image_id>.jpg (the folder food-101/ or its files "
        "in the root)",
        "food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        {"train": 75750, "test": 25250}, 101),
}


# ------------------------------------------------------------------------------ finding files
def data_roots(key: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched (:func:`~hashlab.data.fashion_mnist.dataset_roots`)."""
    return dataset_roots(key, root)


def _first(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _locate(spec: FineGrained, root: str | os.PathLike[str] | None,
            needed: Sequence[Sequence[str]]) -> Path:
    """The first folder (a searched root or one of its ``spec.nested`` sub-folders) holding
    every file of ``needed`` (each a list of alternative relative paths)."""
    problems = []
    for base in data_roots(spec.key, root):
        if not base.is_dir():
            problems.append(f"{base}: no such folder")
            continue
        for sub in spec.nested:
            folder = base / sub if sub else base
            if not folder.is_dir():
                continue
            missing = [" or ".join(alts) for alts in needed if _first(folder, alts) is None]
            if not missing:
                return folder
            problems.append(f"{folder}: no {', '.join(missing)}")
    raise DataError(
        f"{spec.title}: cannot find its files. Expected {spec.layout}; searched: "
        f"{'; '.join(problems)}. Nothing is downloaded: get {spec.source}, unpack it and pass "
        f"root=<folder> (or set ${DATA_ENV}); see docs/data-and-models.md#fine-grained-datasets.")


def _check_split(spec: FineGrained, split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"{spec.key}: unknown split {split!r}; known: {', '.join(SPLITS)}")


def _check_images(spec: FineGrained, split: str, samples: Samples, where: Path) -> None:
    """Every listed image exists; else an error naming the first missing ones."""
    missing = [str(p) for p, _ in samples if not p.is_file()]
    if missing:
        raise DataError(
            f"{spec.title} {split}: {len(missing)} of the {len(samples)} listed images are "
            f"missing under {where}, e.g. {', '.join(missing[:SHOW_MISSING])}; unpack the "
            f"images of {spec.source} there")
    if not samples:
        raise DataError(f"{spec.title} {split}: no images listed in {where}")


# ------------------------------------------------------------------------------ text files
def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) of the non-blank lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _malformed(path: Path, n: int, line: str, expected: str) -> DataError:
    return DataError(f"{path}, line {n}: expected '{expected}', got {line!r}")


def _id_table(path: Path, expected: str, value_is_int: bool = True) -> dict[int, tuple[Any, int]]:
    """``<integer id> <value>`` lines -> {id: (value, line number)}; ids must be unique."""
    table: dict[int, tuple[Any, int]] = {}
    for n, line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise _malformed(path, n, line, expected)
        value: Any = parts[1]
        if value_is_int:
            if not parts[1].isdigit():
                raise _malformed(path, n, line, expected)
            value = int(parts[1])
        key = int(parts[0])
        if key in table:
            raise DataError(f"{path}, line {n}: id {key} is listed again (first on line "
                            f"{table[key][1]})")
        table[key] = (value, n)
    if not table:
        raise DataError(f"{path}: the file is empty")
    return table


def _name_list(path: Path) -> list[str]:
    """One class name a line (blank lines skipped); names must be unique."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for n, line in _lines(path):
        if line in seen:
            raise DataError(f"{path}, line {n}: class {line!r} is listed again (first on line "
                            f"{seen[line]})")
        seen[line] = n
        names.append(line)
    if not names:
        raise DataError(f"{path}: the file is empty")
    return names


# ------------------------------------------------------------------------------ CUB-200-2011
CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def cub_samples(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """CUB-200-2011's ``split`` from ``folder`` (the one holding ``images.txt``): the
    (image path, 0-based class) pairs in ``images.txt`` order, and the class names."""
    images = _id_table(folder / "images.txt", "<image_id> <image_name>", value_is_int=False)
    labels = _id_table(folder / "image_class_labels.txt", "<image_id> <class_id>")
    flags = _id_table(folder / "train_test_split.txt", "<image_id> <is_training_image>")
    class_file = folder / "classes.txt"
    class_table = _id_table(class_file, "<class_id> <class_name>", value_is_int=False)
    if sorted(class_table) != list(range(1, len(class_table) + 1)):
        raise DataError(f"{class_file}: class ids must be 1..{len(class_table)}, got "
                        f"{sorted(class_table)[:SHOW_MISSING]}...")
    classes = [class_table[i][0] for i in range(1, len(class_table) + 1)]
    for path, table in ((folder / "image_class_labels.txt", labels),
                        (folder / "train_test_split.txt", flags)):
        extra = sorted(set(table) - set(images))
        if extra:
            raise DataError(f"{path}, line {table[extra[0]][1]}: image id {extra[0]} is not in "
                            f"{folder / 'images.txt'}")
        absent = sorted(set(images) - set(table))
        if absent:
            raise DataError(f"{path}: no entry for image ids {absent[:SHOW_MISSING]} (listed in "
                            f"{folder / 'images.txt'}, line {images[absent[0]][1]})")
    for label, n in labels.values():
        if not 1 <= label <= len(classes):
            raise DataError(f"{folder / 'image_class_labels.txt'}, line {n}: class id {label} "
                            f"is outside 1..{len(classes)} ({class_file})")
    for image_id, (flag, n) in flags.items():
        if flag not in (0, 1):
            raise DataError(f"{folder / 'train_test_split.txt'}, line {n}: the flag of image "
                            f"{image_id} must be 1 (train) or 0 (test), got {flag}")
    want = 1 if split == "train" else 0
    samples = [(folder / "images" / name, labels[i][0] - 1)
               for i, (name, _) in images.items() if flags[i][0] == want]
    return samples, classes


# ------------------------------------------------------------------------------ FGVC-Aircraft
def _aircraft_level(level: str) -> tuple[str, str]:
    if level not in AIRCRAFT_LEVELS:
        raise DataError(f"fgvc-aircraft: level must be one of {', '.join(AIRCRAFT_LEVELS)}, "
                        f"got {level!r}")
    return AIRCRAFT_LEVELS[level]


def _aircraft_list(level: str, split: str) -> str:
    return f"images_{_aircraft_level(level)[0]}_{'trainval' if split == 'train' else 'test'}.txt"


def aircraft_samples(folder: Path, split: str, level: str = "variant"
                     ) -> tuple[Samples, list[str]]:
    """FGVC-Aircraft's ``split`` (train = ``trainval``) at ``level`` from ``folder`` (the
    ``data/`` folder): (image path, class index in the class list) pairs, and the classes."""
    class_file = folder / _aircraft_level(level)[1]
    classes = _name_list(class_file)
    index = {name: i for i, name in enumerate(classes)}
    list_file = folder / _aircraft_list(level, split)
    samples: Samples = []
    for n, line in _lines(list_file):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise _malformed(list_file, n, line, f"<image_id> <{level} name>")
        if parts[1] not in index:
            raise DataError(f"{list_file}, line {n}: {level} {parts[1]!r} is not in "
                            f"{class_file}")
        samples.append((folder / "images" / f"{parts[0]}.jpg", index[parts[1]]))
    return samples, classes


# ------------------------------------------------------------------------------ Stanford Cars
CARS_META = "devkit/cars_meta.mat"
CARS_ANNOS = {"train": ("devkit/cars_train_annos.mat",),
              "test": ("devkit/cars_test_annos_withlabels.mat",
                       "cars_test_annos_withlabels.mat")}
CARS_FOLDERS = {"train": "cars_train", "test": "cars_test"}


def _loadmat(path: Path, name: str) -> np.ndarray:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(str(path))
    except (OSError, ValueError, NotImplementedError, MatReadError) as exc:
        raise DataError(f"{path}: not a readable MAT file: {exc}") from exc
    if name not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise DataError(f"{path}: no variable {name!r} (holds {found})")
    return mat[name]


def _mat_scalar(value: Any) -> Any:
    """The single value inside a loadmat cell or field (``[[39]]``, ``['00001.jpg']``)."""
    arr = np.asarray(value).reshape(-1)
    return arr[0] if arr.size == 1 else None


def cars_samples(folder: Path, split: str, annotations: Path) -> tuple[Samples, list[str]]:
    """Stanford Cars' ``split`` from ``folder`` (holding ``devkit/`` and the image folders)
    and its annotation file: (image path, 0-based class) pairs in file order, and the class
    names of ``cars_meta.mat``."""
    meta = folder / CARS_META
    names = _loadmat(meta, "class_names").reshape(-1)
    classes = []
    for i, cell in enumerate(names):
        name = _mat_scalar(cell)
        if not isinstance(name, str):
            raise DataError(f"{meta}: class_names{{{i + 1}}} is not a string: {cell!r}")
        classes.append(name)
    annos = _loadmat(annotations, "annotations")
    fields = annos.dtype.names or ()
    if "class" not in fields or "fname" not in fields:
        raise DataError(f"{annotations}: 'annotations' must be a struct array with fields "
                        f"class and fname (as cars_test_annos_withlabels.mat; the devkit's "
                        f"cars_test_annos.mat has no class), got fields {list(fields)}")
    samples: Samples = []
    for i, item in enumerate(annos.reshape(-1)):
        label, fname = _mat_scalar(item["class"]), _mat_scalar(item["fname"])
        if not isinstance(fname, str) or not fname:
            raise DataError(f"{annotations}: annotations({i + 1}).fname is not a file name: "
                            f"{item['fname']!r}")
        if (label is None or not np.issubdtype(np.asarray(label).dtype, np.number)
                or label != int(label) or not 1 <= int(label) <= len(classes)):
            raise DataError(f"{annotations}: annotations({i + 1}).class must be a class id in "
                            f"1..{len(classes)} ({meta}), got {item['class']!r}")
        samples.append((folder / CARS_FOLDERS[split] / fname, int(label) - 1))
    return samples, classes


# ------------------------------------------------------------------------------ Food-101
def food_samples(folder: Path, split: str) -> tuple[Samples, list[str]]:
    """Food-101's ``split`` from ``folder`` (holding ``meta/`` and ``images/``): (image path,
    class index in ``meta/classes.txt``) pairs in list order, and the classes. The ``.txt``
    list is read if present, else the ``.json``."""
    class_file = folder / "meta" / "classes.txt"
    classes = _name_list(class_file)
    index = {name: i for i, name in enumerate(classes)}
    txt, js = folder / "meta" / f"{split}.txt", folder / "meta" / f"{split}.json"
    entries: list[tuple[str, str, str]] = []  # (class, "class/id", where)
    if txt.is_file():
        for n, line in _lines(txt):
            parts = line.split("/")
            if len(parts) != 2 or not all(parts) or " " in line:
                raise _malformed(txt, n, line, "<class>/<image_id>")
            entries.append((parts[0], line, f"{txt}, line {n}"))
    else:
        try:
            listed = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{js}: cannot read ({exc})") from exc
        if not isinstance(listed, dict):
            raise DataError(f"{js}: expected an object class -> list of '<class>/<image_id>', "
                            f"got {type(listed).__name__}")
        for name, items in listed.items():
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise DataError(f"{js}: class {name!r}: expected a list of "
                                f"'<class>/<image_id>' strings")
            for item in items:
                if item.split("/")[0] != name or item.count("/") != 1:
                    raise DataError(f"{js}: class {name!r}: entry {item!r} is not "
                                    f"'{name}/<image_id>'")
                entries.append((name, item, f"{js}, class {name!r}"))
    samples: Samples = []
    for name, item, where in entries:
        if name not in index:
            raise DataError(f"{where}: class {name!r} is not in {class_file}")
        samples.append((folder / "images" / f"{item}.jpg", index[name]))
    return samples, classes


# ------------------------------------------------------------------------------ registered
def _dataset(spec: FineGrained, split: str, samples: Samples, classes: list[str],
             folder: Path, image_size: int | tuple[int, int] | None,
             normalize: bool) -> ImageFolderDataset:
    _check_images(spec, split, samples, folder)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize else (None, None)
    return ImageFolderDataset.from_samples(samples, classes, folder, image_size, "RGB", mean,
                                           std)


@DATASETS.register("cub-200-2011", "cub", "cub200")
def cub_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | tuple[int, int] | None = 224,
    normalize: bool = True,
) -> ImageFolderDataset:
    """CUB-200-2011 birds, the published files: 5,994 train / 5,794 test, 200 classes.

    ``download`` is ignored: the files must be fetched by hand (see the docs). Bounding boxes
    (``bounding_boxes.txt``), parts and attributes are not read."""
    spec = FINEGRAINED["cub-200-2011"]
    _check_split(spec, split)
    folder = _locate(spec, root, [(f,) for f in CUB_FILES])
    samples, classes = cub_samples(folder, split)
    return _dataset(spec, split, samples, classes, folder, image_size, normalize)


@DATASETS.register("fgvc-aircraft", "aircraft")
def aircraft_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | tuple[int, int] | None = 224,
    normalize: bool = True,
    level: str = "variant",
) -> ImageFolderDataset:
    """FGVC-Aircraft, the published files: trainval 6,667 / test 3,333, 100 variants.

    ``level``: ``variant`` (100 classes, the standard protocol), ``family`` (70) or
    ``manufacturer`` (30). ``download`` is ignored: the files must be fetched by hand (see the
    docs)."""
    spec = FINEGRAINED["fgvc-aircraft"]
    _check_split(spec, split)
    needed = [(_aircraft_list(level, split),), (_aircraft_level(level)[1],)]
    folder = _locate(spec, root, needed)
    samples, classes = aircraft_samples(folder, split, level)
    return _dataset(spec, split, samples, classes, folder, image_size, normalize)


@DATASETS.register("stanford-cars", "cars")
def stanford_cars_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | tuple[int, int] | None = 224,
    normalize: bool = True,
) -> ImageFolderDataset:
    """Stanford Cars, the original devkit files: 8,144 train / 8,041 test, 196 classes.

    ``download`` is ignored: the files must be fetched by hand (see the docs). The bounding
    boxes are not used."""
    spec = FINEGRAINED["stanford-cars"]
    _check_split(spec, split)
    folder = _locate(spec, root, [(CARS_META,), CARS_ANNOS[split]])
    annotations = _first(folder, CARS_ANNOS[split]) or folder / CARS_ANNOS[split][0]
    samples, classes = cars_samples(folder, split, annotations)
    return _dataset(spec, split, samples, classes, folder, image_size, normalize)


@DATASETS.register("food-101", "food101")
def food101_loader(
    split: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    image_size: int | tuple[int, int] | None = 224,
    normalize: bool = True,
) -> ImageFolderDataset:
    """Food-101, the published files: 75,750 train / 25,250 test, 101 classes.

    ``download`` is ignored: the files must be fetched by hand (see the docs)."""
    spec = FINEGRAINED["food-101"]
    _check_split(spec, split)
    needed = [("meta/classes.txt",), (f"meta/{split}.txt", f"meta/{split}.json")]
    folder = _locate(spec, root, needed)
    samples, classes = food_samples(folder, split)
    return _dataset(spec, split, samples, classes, folder, image_size, normalize)
