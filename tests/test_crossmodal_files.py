"""The DCMH-layout loaders (MIRFLICKR-25K, NUS-WIDE, IAPR TC-12) on tiny files written in the
exact on-disk formats: MAT v7.3 (HDF5, MATLAB's column-major axes), HDF5 written from Python,
and MAT v5 (scipy.io)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io as sio

from hashlab.data import crossmodal_files
from hashlab.data.crossmodal_files import IMAGENET_MEAN, IMAGENET_STD, MIRFLICKR_LABELS, dcmh_splits
from hashlab.data.registry import PAIRED_DATASETS, load_paired
from hashlab.errors import DataError

N, H, W, C, V, L = 40, 5, 4, 3, 7, 24  # H != W: a swapped height and width would show
SIZES = {"n_query": 6, "n_train": 10}
_MATLAB_CLASS = {np.dtype(np.uint8): "uint8", np.dtype(np.float64): "double"}


@pytest.fixture(autouse=True)
def _no_user_data(tmp_path, monkeypatch):
    monkeypatch.delenv("HASHLAB_DATA", raising=False)
    monkeypatch.setenv("HASHLAB_CACHE", str(tmp_path / "cache"))


def make_data(seed: int = 0, n: int = N, labels: int = L) -> dict[str, np.ndarray]:
    """images uint8 [N, H, W, C], tags float64 [N, V] counts, labels float64 [N, L] 0/1."""
    rng = np.random.default_rng(seed)
    return {
        "images": rng.integers(0, 256, (n, H, W, C), dtype=np.uint8),
        "tags": rng.integers(0, 3, (n, V)).astype(np.float64),
        "labels": (rng.random((n, labels)) < 0.2).astype(np.float64),
    }


def matlab(data: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, np.ndarray]:
    """The variables as MATLAB holds them: images [H, W, C, N], tags [N, V], labels [N, L]."""
    arrays = {"images": data["images"].transpose(1, 2, 3, 0), "tags": data["tags"],
              "labels": data["labels"]}
    return {names[k]: v for k, v in arrays.items() if k in names}


def write_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MAT v7.3 file as MATLAB writes it: a 512-byte header, then HDF5 datasets whose axes
    are the MATLAB array's reversed (column-major), each tagged with MATLAB_class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            f.create_dataset(name, data=value.T).attrs["MATLAB_class"] = np.bytes_(
                _MATLAB_CLASS[value.dtype])
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def write_v5(path: Path, variables: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.savemat(path, variables)


def write_separate(root: Path, prefix: str, data: dict[str, np.ndarray],
                   nested: bool = True) -> None:
    """The common release: <prefix>-iall.mat (v7.3), -yall.mat and -lall.mat (v5), each in
    its own folder (``Cleared-Set/IAll/...``) when ``nested``."""
    folder = (lambda sub: root / "Cleared-Set" / sub) if nested else (lambda sub: root)
    write_v73(folder("IAll") / f"{prefix}-iall.mat", matlab(data, {"images": "IAll"}))
    write_v5(folder("YAll") / f"{prefix}-yall.mat", matlab(data, {"tags": "YAll"}))
    write_v5(folder("LAll") / f"{prefix}-lall.mat", matlab(data, {"labels": "LAll"}))


def assert_matches(d, data: dict[str, np.ndarray]) -> None:
    """The loaded split holds exactly the written items ``d.indices``, axes in place."""
    idx = d.indices
    np.testing.assert_array_equal(d.images.images, data["images"][idx])
    np.testing.assert_array_equal(d.texts, data["tags"][idx].astype(np.float32))
    np.testing.assert_array_equal(d.labels, data["labels"][idx].astype(np.uint8))
    assert d.texts.dtype == np.float32 and d.labels.dtype == np.uint8
    x, _ = d.images.get_batch(np.arange(len(d)))  # [B, C, H, W], ImageNet-normalised
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, 3, 1, 1)
                 for v in (IMAGENET_MEAN, IMAGENET_STD))
    pixels = (x.numpy() * std + mean) * 255
    np.testing.assert_allclose(pixels, data["images"][idx].transpose(0, 3, 1, 2), atol=1e-3)


# ------------------------------------------------------------------------------ formats
def test_separate_release_v73_images_and_v5_tags_labels(tmp_path):
    data = make_data()
    write_separate(tmp_path, "mirflickr25k", data)
    seen = {}
    for split in ("query", "database", "train"):
        d = load_paired("mirflickr25k", split, root=tmp_path, **SIZES)
        assert_matches(d, data)
        assert d.label_names == list(MIRFLICKR_LABELS) and len(d.vocabulary) == V
        assert d.classes is None and d.sentences is None
        np.testing.assert_array_equal(d.images.labels, data["labels"][d.indices].argmax(1))
        seen[split] = d.indices
    assert [len(seen[s]) for s in ("query", "database", "train")] == [6, N - 6, 10]
    assert not set(seen["query"]) & set(seen["database"])
    assert set(seen["query"]) | set(seen["database"]) == set(range(N))
    assert set(seen["train"]) <= set(seen["database"])
    assert all(np.all(np.diff(v) > 0) for v in seen.values())
    again = load_paired("mirflickr", "query", root=tmp_path, **SIZES)  # alias, same draw
    np.testing.assert_array_equal(again.indices, seen["query"])
    other = load_paired("mirflickr", "query", root=tmp_path, seed=1, **SIZES)
    assert not np.array_equal(other.indices, seen["query"])


def test_one_v73_file_with_the_dcmh_pytorch_names(tmp_path):
    # jiangqy/DCMH-CVPR2017's FLICKR-25K.mat: images, YAll, LAll (one HDF5 file)
    data = make_data(1)
    write_v73(tmp_path / "FLICKR-25K.mat",
              matlab(data, {"images": "images", "tags": "YAll", "labels": "LAll"}))
    with h5py.File(tmp_path / "FLICKR-25K.mat", "r") as f:  # the stored, reversed axes
        assert f["images"].shape == (N, C, W, H) and f["LAll"].shape == (L, N)
    assert_matches(load_paired("mirflickr25k", "train", root=tmp_path, **SIZES), data)


def test_one_v5_file_and_case_insensitive_names(tmp_path):
    data = make_data(2, labels=5)
    write_v5(tmp_path / "iapr-tc12.MAT",
             matlab(data, {"images": "IAll", "tags": "YAll", "labels": "LAll"}))
    d = load_paired("iapr-tc12", "query", root=tmp_path, **SIZES)
    assert_matches(d, data)
    assert d.label_names == [f"label{j}" for j in range(5)]
    assert d.vocabulary == [f"tag{j}" for j in range(V)]


def test_hdf5_written_from_python_is_taken_in_stored_order(tmp_path):
    # no MATLAB_class: images [N, C, H, W], tags [N, V], labels [N, L] as numpy wrote them
    data = make_data(3)
    with h5py.File(tmp_path / "mirflickr25k.mat", "w") as f:
        f["IAll"] = data["images"].transpose(0, 3, 1, 2)
        f["YAll"] = data["tags"]
        f["LAll"] = data["labels"]
    assert_matches(load_paired("mirflickr25k", "database", root=tmp_path, **SIZES), data)


def test_mixed_files_nus_wide_concepts_and_default_sizes(tmp_path):
    # DCMH's NUS-WIDE: tags and labels in nus-wide-tc21.mat (v7.3), images in their own file
    data = make_data(4, labels=21)
    write_v73(tmp_path / "IAll" / "IAll" / "nus-wide-tc21-iall.mat",
              matlab(data, {"images": "IAll"}))
    write_v73(tmp_path / "nus-wide-tc21.mat", matlab(data, {"tags": "YAll", "labels": "LAll"}))
    write_separate(tmp_path / "tc10", "nus-wide-tc10", make_data(5, labels=10), nested=False)
    d = load_paired("nus-wide", "query", root=tmp_path, concepts=21, **SIZES)
    assert_matches(d, data)
    d10 = load_paired("nus-wide", "query", root=tmp_path, **SIZES)  # concepts=10 by default
    assert d10.labels.shape[1] == 10
    with pytest.raises(DataError, match="concepts must be 10 or 21"):
        load_paired("nus-wide", "query", root=tmp_path, concepts=81)
    with pytest.raises(DataError, match=r"n_query must be in 1\.\.39 \(40 items\), got 2100"):
        load_paired("nus-wide", "query", root=tmp_path, concepts=21)


def test_reading_in_many_small_runs_gives_the_same_arrays(tmp_path, monkeypatch):
    data = make_data(6)
    write_separate(tmp_path, "mirflickr25k", data, nested=False)
    monkeypatch.setattr(crossmodal_files, "READ_BYTES", H * W * C * 2)  # two images a read
    for split in ("query", "database"):
        assert_matches(load_paired("mirflickr25k", split, root=tmp_path, **SIZES), data)


def test_image_size_normalize_and_label_values(tmp_path):
    data = make_data(7)
    data["labels"][:, 0] = 2.0  # any positive value is a label
    write_separate(tmp_path, "mirflickr25k", data)
    d = load_paired("mirflickr25k", "train", root=tmp_path, image_size=(8, 6), normalize=False,
                    **SIZES)
    assert d.images.image_shape == (3, 8, 6) and d.images.mean is None
    np.testing.assert_array_equal(d.labels[:, 0], 1)


def test_search_order_without_root(tmp_path, monkeypatch):
    data = make_data(8)
    write_separate(tmp_path / "data" / "mirflickr25k", "mirflickr25k", data)
    write_separate(tmp_path / "cache" / "mirflickr25k", "mirflickr25k", make_data(9))
    monkeypatch.setenv("HASHLAB_DATA", str(tmp_path / "data"))
    assert_matches(load_paired("mirflickr25k", "query", **SIZES), data)
    monkeypatch.delenv("HASHLAB_DATA")
    assert_matches(load_paired("mirflickr25k", "query", **SIZES), make_data(9))  # the cache


# ------------------------------------------------------------------------------ errors
def test_missing_files_name_the_files_the_root_and_the_source(tmp_path):
    with pytest.raises(DataError) as err:
        load_paired("mirflickr25k", "query", root=tmp_path / "nowhere")
    msg = str(err.value)
    for text in ("FLICKR-25K.mat", "mirflickr25k-iall.mat", "mirflickr25k-yall.mat",
                 "mirflickr25k-lall.mat", "IAll or images", "YAll or tags", "LAll or labels",
                 str(tmp_path / "nowhere"), "no such folder", "jiangqy/DCMH-CVPR2017"):
        assert text in msg, text
    data = make_data()
    write_separate(tmp_path, "iapr-tc12", data, nested=False)
    (tmp_path / "iapr-tc12-lall.mat").unlink()
    with pytest.raises(DataError, match=r"no file for the labels \(iapr-tc12-lall.mat, "
                                        r"IAPR-TC12.mat\).*imageclef"):
        load_paired("iapr-tc12", "query", root=tmp_path)


def test_a_file_without_the_variable_lists_what_it_holds(tmp_path):
    data = make_data()
    write_separate(tmp_path, "mirflickr25k", data, nested=False)
    write_v5(tmp_path / "mirflickr25k-yall.mat", {"Y": data["tags"], "extra": np.zeros(2)})
    with pytest.raises(DataError, match=r"no YAll or tags \(tags\) in .*mirflickr25k-yall.mat "
                                        r"\(holds Y, extra\)"):
        load_paired("mirflickr25k", "query", root=tmp_path, **SIZES)


def test_inconsistent_or_malformed_arrays_are_refused(tmp_path):
    data = make_data()
    write_separate(tmp_path, "mirflickr25k", data, nested=False)
    write_v5(tmp_path / "mirflickr25k-lall.mat", {"LAll": make_data(n=N - 1)["labels"]})
    with pytest.raises(DataError, match="do not share a number of items"):
        load_paired("mirflickr25k", "query", root=tmp_path, **SIZES)
    write_v5(tmp_path / "mirflickr25k-lall.mat", {"LAll": -data["labels"]})
    with pytest.raises(DataError, match="LAll: values must be finite and >= 0"):
        load_paired("mirflickr25k", "query", root=tmp_path, **SIZES)
    write_v5(tmp_path / "mirflickr25k-lall.mat", {"LAll": data["labels"]})
    write_v5(tmp_path / "mirflickr25k-iall.mat", {"IAll": np.zeros((H, W, 2, N), np.uint8)})
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_paired("mirflickr25k", "query", root=tmp_path, **SIZES)
    (tmp_path / "mirflickr25k-iall.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a readable MAT file"):
        load_paired("mirflickr25k", "query", root=tmp_path, **SIZES)


def test_dcmh_splits_and_registry():
    s = dcmh_splits(100, seed=3, n_query=10, n_train=50)
    assert [len(s[k]) for k in ("query", "database", "train")] == [10, 90, 50]
    order = np.random.default_rng(3).permutation(100)  # DCMH: query first, train = database[:n]
    np.testing.assert_array_equal(s["query"], np.sort(order[:10]))
    np.testing.assert_array_equal(s["train"], np.sort(order[10:60]))
    with pytest.raises(DataError, match="n_train must be in 1..90"):
        dcmh_splits(100, n_query=10, n_train=91)
    assert {"mirflickr25k", "nus-wide", "iapr-tc12"} <= set(PAIRED_DATASETS)
    assert PAIRED_DATASETS.canonical("mirflickr") == "mirflickr25k"
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_paired("iapr-tc12", "val")
