"""The fine-grained loaders (CUB-200-2011, FGVC-Aircraft, Stanford Cars, Food-101) on tiny copies
written in the exact published layouts: the text lists, the MATLAB v5 struct arrays of the cars
devkit (scipy.io.savemat, read back as loadmat reads the real files) and small JPEG images. The
expected (path, label) lists are built here from what was written, not by the loaders' code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from hashlab.data.crossmodal_files import IMAGENET_MEAN, IMAGENET_STD
from hashlab.data.finegrained_files import FINEGRAINED
from hashlab.data.image_folder import ImageFolderDataset
from hashlab.data.registry import DATASETS, load_dataset
from hashlab.errors import DataError

SIZE = (6, 8)  # (height, width) the tests resize to; H != W so a swapped axis would show


@pytest.fixture(autouse=True)
def _no_user_data(tmp_path, monkeypatch):
    monkeypatch.delenv("HASHLAB_DATA", raising=False)
    monkeypatch.setenv("HASHLAB_CACHE", str(tmp_path / "cache"))


def colour(i: int) -> tuple[int, int, int]:
    """A distinct solid colour for image ``i`` (JPEG keeps solid colours within a few levels)."""
    return (40 + 23 * i % 200, 200 - 17 * i % 180, 60 + 31 * i % 190)


def write_image(path: Path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (5 + i % 3, 4 + i % 2)  # sizes differ: the loader must resize
    Image.new("RGB", size, colour(i)).save(path, format="JPEG", quality=95)


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def assert_split(ds, expected: list[tuple[Path, int]], classes: list[str],
                 colours: dict[Path, int] | None = None) -> None:
    """The dataset lists exactly ``expected`` in order, with ``classes``; the pixels of the
    first images are their written colours once the ImageNet normalisation is undone."""
    assert isinstance(ds, ImageFolderDataset)
    assert [(Path(p), label) for p, label in ds.samples] == expected
    assert ds.labels.tolist() == [label for _, label in expected]
    assert ds.classes == classes and ds.num_classes == len(classes)
    assert ds.image_shape == (3, *SIZE)
    idx = list(range(min(3, len(ds))))
    x, y = ds.get_batch(idx)
    assert tuple(x.shape) == (len(idx), 3, *SIZE)
    assert y.tolist() == [expected[i][1] for i in idx]
    if colours is not None:
        mean, std = (np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1)
                     for v in (IMAGENET_MEAN, IMAGENET_STD))
        pixels = (x.numpy() * std + mean) * 255
        want = np.array([colour(colours[expected[i][0]]) for i in idx], dtype=np.float32)
        np.testing.assert_allclose(pixels, np.broadcast_to(want[:, :, None, None], pixels.shape),
                                   atol=6)


# ------------------------------------------------------------------------------ CUB-200-2011
CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# (image_id, class_id 1-based, is_training_image)
CUB_RECORDS = [(1, 1, 1), (2, 1, 0), (3, 2, 1), (4, 2, 0), (5, 3, 1), (6, 3, 0), (7, 1, 1),
               (8, 3, 1), (9, 2, 0)]


def write_cub(base: Path, nested: bool = True) -> tuple[Path, dict[Path, int]]:
    folder = base / "CUB_200_2011" if nested else base
    names, colours = {}, {}
    for image_id, cls, _ in CUB_RECORDS:
        label = CUB_CLASSES[cls - 1]
        names[image_id] = f"{label}/{label.split('.', 1)[1]}_{image_id:04d}_796111.jpg"
        write_image(folder / "images" / names[image_id], image_id)
        colours[folder / "images" / names[image_id]] = image_id
    write_lines(folder / "images.txt", [f"{i} {names[i]}" for i, _, _ in CUB_RECORDS])
    write_lines(folder / "image_class_labels.txt", [f"{i} {c}" for i, c, _ in CUB_RECORDS])
    write_lines(folder / "train_test_split.txt", [f"{i} {t}" for i, _, t in CUB_RECORDS])
    write_lines(folder / "classes.txt", [f"{j} {n}" for j, n in enumerate(CUB_CLASSES, 1)])
    write_lines(folder / "bounding_boxes.txt",
                [f"{i} 60.0 27.0 325.0 304.0" for i, _, _ in CUB_RECORDS])
    return folder, colours


def cub_expected(folder: Path, split: str) -> list[tuple[Path, int]]:
    flag = 1 if split == "train" else 0
    out = []
    for line_img, line_cls, line_split in zip(
            (folder / "images.txt").read_text().splitlines(),
            (folder / "image_class_labels.txt").read_text().splitlines(),
            (folder / "train_test_split.txt").read_text().splitlines(), strict=True):
        if int(line_split.split()[1]) == flag:
            out.append((folder / "images" / line_img.split()[1], int(line_cls.split()[1]) - 1))
    return out


@pytest.mark.parametrize("nested", [True, False])
def test_cub_splits_labels_and_classes(tmp_path, nested):
    folder, colours = write_cub(tmp_path, nested)
    train = load_dataset("cub-200-2011", "train", root=tmp_path, image_size=SIZE)
    test = load_dataset("cub", "test", root=tmp_path, image_size=SIZE)
    assert_split(train, cub_expected(folder, "train"), CUB_CLASSES, colours)
    assert_split(test, cub_expected(folder, "test"), CUB_CLASSES, colours)
    assert len(train) == 5 and len(test) == 4
    assert train.labels.tolist() == [0, 1, 2, 0, 2]  # class ids 1, 2, 3, 1, 3 in the files
    assert {p for p, _ in train.samples}.isdisjoint(p for p, _ in test.samples)


def test_cub_defaults_from_hashlab_data_and_cache(tmp_path, monkeypatch):
    write_cub(tmp_path / "data" / "cub-200-2011")
    monkeypatch.setenv("HASHLAB_DATA", str(tmp_path / "data"))
    ds = load_dataset("cub200", "train")
    assert ds.image_shape == (3, 224, 224)  # the default image_size
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD
    monkeypatch.delenv("HASHLAB_DATA")
    folder, _ = write_cub(tmp_path / "cache" / "cub-200-2011", nested=False)
    ds = load_dataset("cub", "test", normalize=False)
    assert ds.samples[0][0].parent.parent.parent == folder and ds.mean is None


def test_cub_malformed_and_inconsistent_files(tmp_path):
    folder, _ = write_cub(tmp_path)
    labels = folder / "image_class_labels.txt"
    good = labels.read_text()

    def fails(path: Path, text: str, match: str) -> None:
        path.write_text(text)
        with pytest.raises(DataError, match=match):
            load_dataset("cub", "train", root=tmp_path)

    fails(labels, good.replace("3 2\n", "3 two\n"),
          r"image_class_labels\.txt, line 3: expected '<image_id> <class_id>', got '3 two'")
    fails(labels, good.replace("3 2\n", "3\n"), r"image_class_labels\.txt, line 3")
    fails(labels, good.replace("3 2\n", "3 4\n"),
          r"image_class_labels\.txt, line 3: class id 4 is outside 1\.\.3")
    fails(labels, good.replace("3 2\n", "3 0\n"), r"class id 0 is outside 1\.\.3")
    fails(labels, good.replace("3 2\n", "1 2\n"),
          r"image_class_labels\.txt, line 3: id 1 is listed again \(first on line 1\)")
    fails(labels, good.replace("9 2\n", ""), r"image_class_labels\.txt: no entry for image ids "
                                             r"\[9\].*images\.txt, line 9")
    fails(labels, good + "10 1\n", r"image_class_labels\.txt, line 10: image id 10 is not in")
    labels.write_text(good)
    split = folder / "train_test_split.txt"
    fails(split, split.read_text().replace("2 0\n", "2 2\n"),
          r"train_test_split\.txt, line 2: the flag of image 2 must be 1 \(train\) or 0")
    split.write_text("".join(f"{i} {t}\n" for i, _, t in CUB_RECORDS))
    classes = folder / "classes.txt"
    fails(classes, "1 a\n3 c\n", r"classes\.txt: class ids must be 1\.\.2")
    fails(classes, "", r"classes\.txt: the file is empty")


def test_cub_missing_files_and_images(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cub", "train", root=tmp_path / "nowhere")
    msg = str(err.value)
    for text in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
                 str(tmp_path / "nowhere"), "no such folder",
                 "https://www.vision.caltech.edu/datasets/cub_200_2011/", "CUB_200_2011.tgz",
                 "fine-grained-datasets"):
        assert text in msg, text
    folder, _ = write_cub(tmp_path)
    (folder / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match=rf"{folder}: no train_test_split\.txt"):
        load_dataset("cub", "train", root=tmp_path)
    (folder / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in CUB_RECORDS))
    gone = [p for p, _ in cub_expected(folder, "test")[:2]]
    for p in gone:
        p.unlink()
    assert len(load_dataset("cub", "train", root=tmp_path)) == 5  # train is complete
    with pytest.raises(DataError) as err:
        load_dataset("cub", "test", root=tmp_path)
    msg = str(err.value)
    assert "2 of the 4 listed images are missing" in msg and all(str(p) in msg for p in gone)
    with pytest.raises(DataError, match=r"unknown split 'val'; known: train, test"):
        load_dataset("cub", "val", root=tmp_path)


# ------------------------------------------------------------------------------ FGVC-Aircraft
AIR_VARIANTS = ["707-320", "737-700", "A320", "F-16A/B", "Cessna 172"]
AIR_FAMILIES = ["Boeing 707", "Boeing 737", "A320", "F-16", "Cessna 172"]
AIR_MAKERS = ["Boeing", "Airbus", "Lockheed Martin", "Cessna"]
# (image id, variant, family, manufacturer, trainval?)
AIR_RECORDS = [
    ("1025794", "707-320", "Boeing 707", "Boeing", True),
    ("0034309", "Cessna 172", "Cessna 172", "Cessna", True),
    ("2200483", "F-16A/B", "F-16", "Lockheed Martin", False),
    ("0062765", "737-700", "Boeing 737", "Boeing", True),
    ("1518405", "A320", "A320", "Airbus", False),
    ("0803148", "F-16A/B", "F-16", "Lockheed Martin", True),
    ("1236289", "707-320", "Boeing 707", "Boeing", False),
]
AIR_LEVELS = {"variant": (1, AIR_VARIANTS), "family": (2, AIR_FAMILIES),
              "manufacturer": (3, AIR_MAKERS)}


def write_aircraft(base: Path, folder_name: str = "fgvc-aircraft-2013b/data"
                   ) -> tuple[Path, dict[Path, int]]:
    folder = base / folder_name if folder_name else base
    colours = {}
    for i, rec in enumerate(AIR_RECORDS):
        write_image(folder / "images" / f"{rec[0]}.jpg", i)
        colours[folder / "images" / f"{rec[0]}.jpg"] = i
    write_lines(folder / "variants.txt", AIR_VARIANTS)
    write_lines(folder / "families.txt", AIR_FAMILIES)
    write_lines(folder / "manufacturers.txt", AIR_MAKERS)
    for level, (col, _) in AIR_LEVELS.items():
        trainval = [r for r in AIR_RECORDS if r[4]]
        for part, recs in (("trainval", trainval), ("train", trainval[:2]),
                           ("val", trainval[2:]), ("test", [r for r in AIR_RECORDS if not r[4]])):
            write_lines(folder / f"images_{level}_{part}.txt", [f"{r[0]} {r[col]}" for r in recs])
    write_lines(folder / "images_box.txt", [f"{r[0]} 3 144 998 431" for r in AIR_RECORDS])
    return folder, colours


@pytest.mark.parametrize("folder_name", ["fgvc-aircraft-2013b/data", "data", ""])
@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_aircraft_trainval_test_and_levels(tmp_path, folder_name, level):
    folder, colours = write_aircraft(tmp_path, folder_name)
    col, classes = AIR_LEVELS[level]
    for split, in_trainval in (("train", True), ("test", False)):
        expected = [(folder / "images" / f"{r[0]}.jpg", classes.index(r[col]))
                    for r in AIR_RECORDS if r[4] == in_trainval]
        args = {} if level == "variant" else {"level": level}
        ds = load_dataset("fgvc-aircraft", split, root=tmp_path, image_size=SIZE, **args)
        assert_split(ds, expected, classes, colours if level == "variant" else None)
    assert len(ds) == 3


def test_aircraft_errors(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("aircraft", "test", root=tmp_path)
    msg = str(err.value)
    for text in ("images_variant_test.txt", "variants.txt", str(tmp_path),
                 "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"):
        assert text in msg, text
    folder, _ = write_aircraft(tmp_path)
    with pytest.raises(DataError, match=r"level must be one of variant, family, manufacturer, "
                                        r"got 'model'"):
        load_dataset("aircraft", "test", root=tmp_path, level="model")
    listing = folder / "images_family_test.txt"
    listing.write_text("2200483 F-16\n\n1518405\n")
    with pytest.raises(DataError, match=r"images_family_test\.txt, line 3: expected "
                                        r"'<image_id> <family name>', got '1518405'"):
        load_dataset("aircraft", "test", root=tmp_path, level="family")
    listing.write_text("2200483 F-16\n1518405 A321\n")
    with pytest.raises(DataError, match=r"images_family_test\.txt, line 2: family 'A321' is not "
                                        r"in .*families\.txt"):
        load_dataset("aircraft", "test", root=tmp_path, level="family")
    (folder / "manufacturers.txt").write_text("Boeing\nAirbus\nBoeing\n")
    with pytest.raises(DataError, match=r"manufacturers\.txt, line 3: class 'Boeing' is listed "
                                        r"again \(first on line 1\)"):
        load_dataset("aircraft", "test", root=tmp_path, level="manufacturer")
    (folder / "images" / "1025794.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of the 4 listed images are missing .*1025794\.jpg"):
        load_dataset("aircraft", "train", root=tmp_path)


# ------------------------------------------------------------------------------ Stanford Cars
CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012",
                "smart fortwo Convertible 2012"]
CARS_TRAIN = [("00001.jpg", 4), ("00002.jpg", 1), ("00003.jpg", 2), ("00004.jpg", 4)]
CARS_TEST = [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 4)]
_ANNO = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]


def annotations(records: list[tuple[str, int]], with_class: bool = True) -> np.ndarray:
    """A 1×N MATLAB struct array as in the devkit: uint8/uint16 scalars, char file names."""
    fields = _ANNO if with_class else [f for f in _ANNO if f[0] != "class"]
    out = np.zeros((1, len(records)), dtype=fields)
    for i, (fname, cls) in enumerate(records):
        values = {"bbox_x1": np.uint8(39), "bbox_y1": np.uint8(116), "bbox_x2": np.uint16(569),
                  "bbox_y2": np.uint16(375), "class": np.uint8(cls), "fname": fname}
        out[0, i] = tuple(values[name] for name, _ in fields)
    return out


def write_cars(base: Path, test_annos_at_root: bool = False) -> tuple[Path, dict[Path, int]]:
    names = np.empty((1, len(CARS_CLASSES)), dtype=object)
    names[0, :] = CARS_CLASSES
    (base / "devkit").mkdir(parents=True)
    sio.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    sio.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": annotations(CARS_TRAIN)})
    sio.savemat(base / "devkit" / "cars_test_annos.mat",  # the devkit's: no classes
                {"annotations": annotations(CARS_TEST, with_class=False)})
    withlabels = base / ("" if test_annos_at_root else "devkit") / "cars_test_annos_withlabels.mat"
    sio.savemat(withlabels, {"annotations": annotations(CARS_TEST)})
    colours = {}
    for k, (folder, records) in enumerate((("cars_train", CARS_TRAIN), ("cars_test", CARS_TEST))):
        for i, (fname, _) in enumerate(records):
            write_image(base / folder / fname, 10 * k + i)
            colours[base / folder / fname] = 10 * k + i
    return base, colours


def test_cars_mat_files_read_like_the_devkit(tmp_path):
    write_cars(tmp_path)
    mat = sio.loadmat(tmp_path / "devkit" / "cars_train_annos.mat")
    assert mat["annotations"].shape == (1, len(CARS_TRAIN))
    assert mat["annotations"]["class"][0, 0].tolist() == [[4]]
    assert mat["annotations"]["fname"][0, 1].tolist() == ["00002.jpg"]
    assert sio.whosmat(tmp_path / "devkit" / "cars_meta.mat") == [
        ("class_names", (1, len(CARS_CLASSES)), "cell")]


@pytest.mark.parametrize("layout", ["devkit", "root", "stanford_cars"])
def test_cars_splits_and_one_based_classes(tmp_path, layout):
    base = tmp_path / "stanford_cars" if layout == "stanford_cars" else tmp_path
    _, colours = write_cars(base, test_annos_at_root=layout == "root")
    if layout == "root":
        assert not (base / "devkit" / "cars_test_annos_withlabels.mat").exists()
    for split, folder, records in (("train", "cars_train", CARS_TRAIN),
                                   ("test", "cars_test", CARS_TEST)):
        expected = [(base / folder / f, c - 1) for f, c in records]
        ds = load_dataset("stanford-cars", split, root=tmp_path, image_size=SIZE)
        assert_split(ds, expected, CARS_CLASSES, colours)
    assert ds.labels.tolist() == [2, 0, 3]  # class 4 (the last) -> 3, class 1 -> 0


def test_cars_errors(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cars", "test", root=tmp_path)
    msg = str(err.value)
    for text in ("devkit/cars_meta.mat", "devkit/cars_test_annos_withlabels.mat or "
                 "cars_test_annos_withlabels.mat", "car_dataset.html", str(tmp_path)):
        assert text in msg, text
    write_cars(tmp_path)
    withlabels = tmp_path / "devkit" / "cars_test_annos_withlabels.mat"
    sio.savemat(withlabels, {"annotations": annotations(CARS_TEST, with_class=False)})
    with pytest.raises(DataError, match=r"cars_test_annos_withlabels\.mat: 'annotations' must be "
                                        r"a struct array with fields class and fname"):
        load_dataset("cars", "test", root=tmp_path)
    sio.savemat(withlabels, {"annotations": annotations([("00001.jpg", 5)])})
    with pytest.raises(DataError, match=r"cars_test_annos_withlabels\.mat: annotations\(1\)\.class "
                                        r"must be a class id in 1\.\.4"):
        load_dataset("cars", "test", root=tmp_path)
    sio.savemat(withlabels, {"annos": annotations(CARS_TEST)})
    with pytest.raises(DataError, match=r"cars_test_annos_withlabels\.mat: no variable "
                                        r"'annotations' \(holds annos\)"):
        load_dataset("cars", "test", root=tmp_path)
    withlabels.write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"cars_test_annos_withlabels\.mat: not a readable MAT"):
        load_dataset("cars", "test", root=tmp_path)
    (tmp_path / "cars_train" / "00003.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of the 4 listed images are missing .*"
                                        r"cars_train/00003\.jpg"):
        load_dataset("cars", "train", root=tmp_path)


# ------------------------------------------------------------------------------ Food-101
# not alphabetical, to show the order of classes.txt is kept
FOOD_CLASSES = ["waffles", "apple_pie", "baby_back_ribs", "tiramisu"]
FOOD = {"train": {"waffles": ["1002", "2040"], "apple_pie": ["1005649", "1014775"],
                  "baby_back_ribs": ["1005293"], "tiramisu": ["1004581", "2093"]},
        "test": {"waffles": ["3001"], "apple_pie": ["1011328"], "baby_back_ribs": [],
                 "tiramisu": ["3003", "3004"]}}


def write_food(base: Path, nested: bool = True, txt: bool = True, js: bool = True
               ) -> tuple[Path, dict[Path, int]]:
    folder = base / "food-101" if nested else base
    write_lines(folder / "meta" / "classes.txt", FOOD_CLASSES)
    write_lines(folder / "meta" / "labels.txt", [c.replace("_", " ").capitalize()
                                                 for c in FOOD_CLASSES])
    colours, k = {}, 0
    for split, listing in FOOD.items():
        entries = {c: [f"{c}/{i}" for i in ids] for c, ids in listing.items()}
        if txt:
            write_lines(folder / "meta" / f"{split}.txt",
                        [e for es in entries.values() for e in es])
        if js:
            (folder / "meta" / f"{split}.json").write_text(json.dumps(entries))
        for es in entries.values():
            for e in es:
                write_image(folder / "images" / f"{e}.jpg", k)
                colours[folder / "images" / f"{e}.jpg"], k = k, k + 1
    return folder, colours


def food_expected(folder: Path, split: str) -> list[tuple[Path, int]]:
    return [(folder / "images" / c / f"{i}.jpg", FOOD_CLASSES.index(c))
            for c, ids in FOOD[split].items() for i in ids]


@pytest.mark.parametrize(("nested", "txt", "js"),
                         [(True, True, True), (False, True, False), (True, False, True)])
def test_food_splits_from_txt_or_json(tmp_path, nested, txt, js):
    folder, colours = write_food(tmp_path, nested, txt, js)
    for split in ("train", "test"):
        ds = load_dataset("food-101", split, root=tmp_path, image_size=SIZE)
        assert_split(ds, food_expected(folder, split), FOOD_CLASSES, colours)
    assert ds.labels.tolist() == [0, 1, 3, 3]


def test_food_errors(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("food101", "train", root=tmp_path)
    msg = str(err.value)
    for text in ("meta/classes.txt", "meta/train.txt or meta/train.json",
                 "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/", str(tmp_path)):
        assert text in msg, text
    folder, _ = write_food(tmp_path)
    listing = folder / "meta" / "test.txt"
    listing.write_text("waffles/3001\napple_pie\n")
    with pytest.raises(DataError, match=r"test\.txt, line 2: expected '<class>/<image_id>', got "
                                        r"'apple_pie'"):
        load_dataset("food101", "test", root=tmp_path)
    listing.write_text("waffles/3001\n\npancakes/77\n")
    with pytest.raises(DataError, match=r"test\.txt, line 3: class 'pancakes' is not in "
                                        r".*classes\.txt"):
        load_dataset("food101", "test", root=tmp_path)
    listing.unlink()
    js = folder / "meta" / "test.json"
    js.write_text('{"waffles": ["waffles/3001"],')
    with pytest.raises(DataError, match=r"test\.json: cannot read"):
        load_dataset("food101", "test", root=tmp_path)
    js.write_text('{"waffles": ["apple_pie/1011328"]}')
    with pytest.raises(DataError, match=r"test\.json: class 'waffles': entry 'apple_pie/1011328' "
                                        r"is not 'waffles/<image_id>'"):
        load_dataset("food101", "test", root=tmp_path)
    (folder / "images" / "tiramisu" / "2093.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of the 7 listed images are missing .*"
                                        r"images/tiramisu/2093\.jpg"):
        load_dataset("food101", "train", root=tmp_path)


# ------------------------------------------------------------------------------ registry
def test_registered_with_published_sizes_and_defaults():
    for key, alias in (("cub-200-2011", "cub"), ("fgvc-aircraft", "aircraft"),
                       ("stanford-cars", "cars"), ("food-101", "food101")):
        assert DATASETS.canonical(alias) == key
        entry = DATASETS.entry(key)
        assert entry.defaults["image_size"] == 224 and entry.defaults["normalize"] is True
        spec = FINEGRAINED[key]
        sizes = f"{spec.sizes['train']:,}"
        assert sizes in entry.description and str(spec.classes) in entry.description
    assert DATASETS.entry("fgvc-aircraft").defaults["level"] == "variant"


def test_from_samples_checks_labels(tmp_path):
    with pytest.raises(DataError, match=r"label 2 is outside 0\.\.1"):
        ImageFolderDataset.from_samples([(tmp_path / "a.jpg", 2)], ["a", "b"], tmp_path)
    with pytest.raises(DataError, match="no images listed"):
        ImageFolderDataset.from_samples([], ["a", "b"], tmp_path)
