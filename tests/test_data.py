"""Tests for hashlab.data: IDX files, Fashion-MNIST discovery/download, digits, datasets."""

from __future__ import annotations

import gzip
import hashlib
import io
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from hashlab.data import (
    DATASETS,
    DIGITS_CLASSES,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    ArrayDataset,
    ImageFolderDataset,
    content_sha256,
    dataset_names,
    find_fashion_mnist,
    load_dataset,
    load_digits_split,
    load_fashion_mnist,
    read_idx,
    read_idx_header,
    write_idx,
)
from hashlab.data import fashion_mnist as fm
from hashlab.data.arrays import resize_images
from hashlab.data.digits import DIGITS_MEAN, DIGITS_STD
from hashlab.errors import DataError

IDX_DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.sampled_from(IDX_DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
    compress=st.booleans(),
    big_endian_input=st.booleans(),
)
def test_idx_round_trip(arr: np.ndarray, compress: bool, big_endian_input: bool) -> None:
    if big_endian_input:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("x.idx.gz" if compress else "x.idx")
        write_idx(path, arr)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") is compress
        out = read_idx(path)
        assert read_idx_header(path) == (out.dtype, arr.shape)
    assert out.shape == arr.shape
    assert out.dtype == arr.dtype.newbyteorder("=")
    assert out.dtype.isnative
    assert out.flags.writeable
    # bitwise equality (NaN payloads included)
    assert out.tobytes() == arr.astype(out.dtype).tobytes()


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
def test_idx_every_dtype(tmp_path: Path, dtype: str, suffix: str) -> None:
    arr = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / f"a{suffix}", arr)
    np.testing.assert_array_equal(read_idx(path), arr)
    assert read_idx(path).dtype == np.dtype(dtype)


def test_idx_byte_layout_is_big_endian(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a.idx", np.array([[1, -2, 258]], dtype=np.int16))
    assert path.read_bytes() == (
        b"\x00\x00\x0b\x02" + b"\x00\x00\x00\x01\x00\x00\x00\x03" + b"\x00\x01\xff\xfe\x01\x02"
    )
    # a hand-made float32 file
    hand = tmp_path / "f.idx"
    hand.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02" + np.array([1.5, -2.0], ">f4").tobytes())
    out = read_idx(hand)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.5, -2.0])


def test_idx_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    arr = np.arange(10, dtype=np.uint8)
    raw_named_gz = write_idx(tmp_path / "raw.gz", arr, compress=False)
    gz_named_raw = write_idx(tmp_path / "packed.idx", arr, compress=True)
    assert raw_named_gz.read_bytes()[:2] == b"\x00\x00"
    assert gz_named_raw.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)
    # checksums are of the decompressed content, whatever the compression
    assert content_sha256(raw_named_gz) == content_sha256(gz_named_raw)
    assert content_sha256(gz_named_raw) == hashlib.sha256(raw_named_gz.read_bytes()).hexdigest()


@pytest.mark.parametrize("dtype", ["int64", "bool", "uint16", "complex64"])
def test_write_idx_rejects_unsupported_dtype(tmp_path: Path, dtype: str) -> None:
    with pytest.raises(DataError, match="cannot write dtype"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=dtype))
    assert not list(tmp_path.iterdir())


def _gz_idx(n: int = 4000) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, n, dtype=np.uint8)
    header = b"\x00\x00\x08\x01" + n.to_bytes(4, "big")
    return gzip.compress(header + arr.tobytes())


def _corrupt_cases() -> dict[str, tuple[bytes | None, str]]:
    good_gz = _gz_idx()
    bad_crc = bytearray(good_gz)
    bad_crc[-8] ^= 0xFF
    u8_5 = b"\x00\x00\x08\x01\x00\x00\x00\x05"
    return {
        "truncated_gzip": (good_gz[: len(good_gz) // 2], "truncated gzip"),
        "bad_crc": (bytes(bad_crc), "corrupt gzip"),
        "truncated_payload": (u8_5 + b"\x01\x02\x03", "truncated"),
        "trailing_payload": (u8_5 + b"\x01" * 9, "trailing data"),
        "wrong_declared_size": (b"\x00\x00\x0c\x01\x00\x00\x00\x05" + b"\x00" * 8, "declares"),
        "bad_magic": (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "bad magic"),
        "unknown_dtype": (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x07", "unknown IDX dtype code 0x0A"),
        "short_header": (b"\x00\x00\x08\x03\x00\x00\x00", "truncated header"),
        "tiny": (b"\x00\x00", "too short"),
        "empty": (b"", "empty"),
        "empty_gzip": (gzip.compress(b""), "0 bytes"),
        "garbage": (bytes(range(255, 0, -1)) * 3, "bad magic"),
        "gzipped_garbage": (gzip.compress(b"PK\x03\x04 not idx at all"), "bad magic"),
        "missing": (None, "no such file"),
    }


@pytest.mark.parametrize("case", sorted(_corrupt_cases()))
def test_read_idx_corrupt_files_raise_data_error(tmp_path: Path, case: str) -> None:
    content, expected = _corrupt_cases()[case]
    path = tmp_path / f"{case}-file.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    msg = str(info.value)
    assert f"{case}-file.gz" in msg
    assert expected in msg
    if case in ("truncated_gzip", "bad_crc", "missing"):
        assert info.value.__cause__ is not None  # chained, not swallowed


@pytest.mark.parametrize("case", ["truncated_gzip", "bad_crc"])
def test_content_sha256_corrupt_gzip_raises_data_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "c.gz"
    path.write_bytes(_corrupt_cases()[case][0] or b"")
    with pytest.raises(DataError, match="c.gz"):
        content_sha256(path)


def test_read_idx_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def test_read_idx_header_is_cheap_on_truncated_payload(tmp_path: Path) -> None:
    path = tmp_path / "t.idx"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c\x00")
    assert read_idx_header(path) == (np.dtype(np.uint8), (2, 28, 28))
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST discovery and download (small fake files)
# --------------------------------------------------------------------------------------------

FAKE_SHAPES = {
    "train-images-idx3-ubyte.gz": (12, 28, 28),
    "train-labels-idx1-ubyte.gz": (12,),
    "t10k-images-idx3-ubyte.gz": (6, 28, 28),
    "t10k-labels-idx1-ubyte.gz": (6,),
}


def _fake_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {}
    for name, shape in FAKE_SHAPES.items():
        high = 10 if "labels" in name else 256
        out[name] = rng.integers(0, high, shape, dtype=np.uint8)
    return out


FAKE = _fake_arrays()


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(s.to_bytes(4, "big") for s in arr.shape)
    return header + arr.tobytes()


def write_fake(folder: Path, names: tuple[str, ...] = FASHION_MNIST_FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_idx(folder / name, FAKE[name])
    return folder


class FakeResponse:
    def __init__(
        self,
        data: bytes,
        fail_after: int | None = None,
        exc: BaseException | None = None,
        length: int | None = None,
    ) -> None:
        self._buf = io.BytesIO(data)
        self._fail_after = fail_after
        self._exc = exc
        self.headers = {"Content-Length": str(len(data) if length is None else length)}

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None:
            pos = self._buf.tell()
            if pos >= self._fail_after:
                assert self._exc is not None
                raise self._exc
            n = self._fail_after - pos if n < 0 else min(n, self._fail_after - pos)
        return self._buf.read(n)

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self._buf.close()


class FakeServer:
    """Serves the fake files (gzip, with an mtime so bytes differ from local copies)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []
        self.files = {n: gzip.compress(_idx_bytes(a), mtime=12345) for n, a in FAKE.items()}
        self.fail: dict[str, tuple[int, BaseException]] = {}
        self.lengths: dict[str, int] = {}

    def __call__(self, url: str, timeout: float | None = None) -> FakeResponse:
        self.calls.append((url, timeout))
        assert url.startswith(fm.FASHION_MNIST_URL)
        name = url[len(fm.FASHION_MNIST_URL) :]
        if name not in self.files:
            raise URLError("404")
        fail_after, exc = self.fail.get(name, (None, None))
        return FakeResponse(self.files[name], fail_after, exc, self.lengths.get(name))


def _no_network(url: str, timeout: float | None = None) -> None:
    raise AssertionError(f"unexpected network access: {url}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Isolated search paths: fake shapes/checksums, tmp cache and system dir, no network."""
    monkeypatch.setattr(fm, "FASHION_MNIST_SHAPES", dict(FAKE_SHAPES))
    sums = {n: hashlib.sha256(_idx_bytes(a)).hexdigest() for n, a in FAKE.items()}
    monkeypatch.setattr(fm, "FASHION_MNIST_SHA256", sums)
    paths = {
        "data": tmp_path / "data",
        "cache_root": tmp_path / "cache",
        "cache": tmp_path / "cache" / "fashion-mnist",
        "system": tmp_path / "system" / "fashion-mnist",
        "home": tmp_path / "home",
    }
    monkeypatch.delenv("HASHLAB_DATA", raising=False)
    monkeypatch.setenv("HASHLAB_CACHE", str(paths["cache_root"]))
    monkeypatch.setenv("HOME", str(paths["home"]))
    monkeypatch.setattr(fm, "SYSTEM_DIRS", (paths["system"],))
    monkeypatch.setattr(fm, "urlopen", _no_network)
    fm.clear_cache()
    yield paths
    fm.clear_cache()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_search_order_data_env_then_cache_then_system(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("data", "cache", "system"):
        write_fake(env[key])
    monkeypatch.setenv("HASHLAB_DATA", str(env["data"]))
    assert find_fashion_mnist(download=False) == env["data"]
    monkeypatch.delenv("HASHLAB_DATA")
    assert find_fashion_mnist(download=False) == env["cache"]
    for name in FASHION_MNIST_FILES[:1]:
        (env["cache"] / name).unlink()  # an incomplete cache does not count
    assert find_fashion_mnist(download=False) == env["system"]


def test_data_env_subfolder(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake(env["data"] / "fashion-mnist")
    write_fake(env["cache"])
    monkeypatch.setenv("HASHLAB_DATA", str(env["data"]))
    assert find_fashion_mnist(download=False) == env["data"] / "fashion-mnist"
    write_fake(env["data"])  # files directly in $HASHLAB_DATA come first
    assert find_fashion_mnist(download=False) == env["data"]


def test_cache_defaults_to_home_without_hashlab_cache(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HASHLAB_CACHE")
    home_cache = write_fake(env["home"] / ".cache" / "hashlab" / "fashion-mnist")
    write_fake(env["system"])
    assert fm.fashion_mnist_cache_dir() == home_cache
    assert find_fashion_mnist(download=False) == home_cache


def test_root_is_the_only_place_searched(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_fake(env["data"])
    write_fake(env["system"])
    monkeypatch.setenv("HASHLAB_DATA", str(env["data"]))
    root = tmp_path / "mine"
    with pytest.raises(DataError, match="mine"):
        find_fashion_mnist(root=root, download=False)
    write_fake(root)
    assert find_fashion_mnist(root=str(root), download=False) == root


def test_nothing_found_names_all_three_ways(env: dict[str, Path]) -> None:
    with pytest.raises(DataError) as info:
        find_fashion_mnist(download=False)
    msg = str(info.value)
    assert "HASHLAB_DATA" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "download" in msg
    assert str(env["cache"]) in msg and str(env["system"]) in msg
    assert all(name in msg for name in FASHION_MNIST_FILES)


def test_download_failure_is_reported_with_the_three_ways(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(url: str, timeout: float | None = None) -> None:
        raise URLError("no route to host (offline test)")

    monkeypatch.setattr(fm, "urlopen", refuse)
    with pytest.raises(DataError) as info:
        find_fashion_mnist()
    msg = str(info.value)
    assert "no route to host (offline test)" in msg
    assert "HASHLAB_DATA" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert _leftovers(env["cache"]) == []


def test_bad_header_in_found_folder_is_skipped_with_warning(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake(env["data"])
    write_idx(env["data"] / FASHION_MNIST_FILES[0], np.zeros((12, 28, 27), np.uint8))
    write_fake(env["cache"])
    monkeypatch.setenv("HASHLAB_DATA", str(env["data"]))
    with pytest.warns(UserWarning, match="train-images-idx3-ubyte.gz"):
        assert find_fashion_mnist(download=False) == env["cache"]
    (env["cache"] / FASHION_MNIST_FILES[0]).unlink()
    with pytest.raises(DataError, match=r"\(12, 28, 27\)"):
        find_fashion_mnist(download=False)


def test_verify_checks_full_content_hash(env: dict[str, Path]) -> None:
    write_fake(env["cache"])
    tampered = FAKE[FASHION_MNIST_FILES[2]].copy()
    tampered[0, 0, 0] ^= 1  # same header, different content
    write_idx(env["cache"] / FASHION_MNIST_FILES[2], tampered)
    assert find_fashion_mnist(download=False) == env["cache"]  # cheap check passes
    with pytest.raises(DataError, match="SHA-256"):
        find_fashion_mnist(download=False, verify=True)


def test_download_into_cache(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer()
    monkeypatch.setattr(fm, "urlopen", server)
    assert find_fashion_mnist() == env["cache"]
    assert [u for u, _ in server.calls] == [fm.FASHION_MNIST_URL + n for n in FASHION_MNIST_FILES]
    assert all(t is not None and 0 < t <= 60 for _, t in server.calls)
    assert _leftovers(env["cache"]) == sorted(FASHION_MNIST_FILES)
    for name in FASHION_MNIST_FILES:
        np.testing.assert_array_equal(read_idx(env["cache"] / name), FAKE[name])
    # the second time it is found in the cache without any network access
    monkeypatch.setattr(fm, "urlopen", _no_network)
    assert find_fashion_mnist() == env["cache"]


def test_download_fetches_only_missing_files(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake(env["cache"], FASHION_MNIST_FILES[:2])
    server = FakeServer()
    monkeypatch.setattr(fm, "urlopen", server)
    assert find_fashion_mnist() == env["cache"]
    expected = [fm.FASHION_MNIST_URL + n for n in FASHION_MNIST_FILES[2:]]
    assert [u for u, _ in server.calls] == expected


def test_download_into_root(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root = env["data"] / "here"
    monkeypatch.setattr(fm, "urlopen", FakeServer())
    assert find_fashion_mnist(root=root) == root
    assert _leftovers(root) == sorted(FASHION_MNIST_FILES)
    assert not env["cache"].exists()


def test_download_bad_checksum_leaves_nothing(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = FASHION_MNIST_FILES[1]
    monkeypatch.setitem(fm.FASHION_MNIST_SHA256, bad, "0" * 64)
    monkeypatch.setattr(fm, "urlopen", FakeServer())
    with pytest.raises(DataError) as info:
        find_fashion_mnist()
    assert "SHA-256" in str(info.value) and bad in str(info.value)
    assert bad not in _leftovers(env["cache"])
    assert not [n for n in _leftovers(env["cache"]) if n.endswith(".part")]


@pytest.mark.parametrize(
    ("exc", "expect"),
    [
        (ConnectionResetError("peer reset (test)"), DataError),
        (TimeoutError("timed out (test)"), DataError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
)
def test_interrupted_download_leaves_no_partial_file(
    env: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    exc: BaseException,
    expect: type[BaseException],
) -> None:
    server = FakeServer()
    name = FASHION_MNIST_FILES[0]
    server.fail[name] = (len(server.files[name]) // 2, exc)
    monkeypatch.setattr(fm, "urlopen", server)
    with pytest.raises(expect) as info:
        find_fashion_mnist()
    if expect is DataError:
        assert str(exc) in str(info.value)
    assert _leftovers(env["cache"]) == []


def test_short_download_is_rejected(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer()
    name = FASHION_MNIST_FILES[3]
    server.lengths[name] = len(server.files[name]) + 100
    monkeypatch.setattr(fm, "urlopen", server)
    with pytest.raises(DataError, match="incomplete download"):
        find_fashion_mnist()
    assert name not in _leftovers(env["cache"])


def test_load_fashion_mnist_fake(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake(env["system"])
    images, labels = load_fashion_mnist("train", download=False)
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (12,)
    np.testing.assert_array_equal(images, FAKE[FASHION_MNIST_FILES[0]])
    np.testing.assert_array_equal(labels, FAKE[FASHION_MNIST_FILES[1]])
    assert not images.flags.writeable  # shared through the cache
    again = load_fashion_mnist("train", download=False)
    assert again[0] is images  # cached in-process
    test_images, _ = load_fashion_mnist("test", download=False)
    assert test_images.shape == (6, 28, 28)
    with pytest.raises(DataError, match="split"):
        load_fashion_mnist("validation", download=False)  # type: ignore[arg-type]


def test_load_fashion_mnist_count_mismatch(
    env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake(env["system"])
    monkeypatch.setitem(fm.FASHION_MNIST_SHAPES, FASHION_MNIST_FILES[1], (11,))
    write_idx(env["system"] / FASHION_MNIST_FILES[1], np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="11 labels"):
        load_fashion_mnist("train", download=False)


def test_load_fashion_mnist_label_out_of_range(env: dict[str, Path]) -> None:
    write_fake(env["system"])
    write_idx(env["system"] / FASHION_MNIST_FILES[3], np.full(6, 10, np.uint8))
    with pytest.raises(DataError, match="labels must be in 0..9"):
        load_fashion_mnist("test", download=False)


REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not REAL.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist() -> None:
    assert find_fashion_mnist(root=REAL, download=False, verify=True) == REAL
    train_x, train_y = load_fashion_mnist("train", root=REAL, download=False)
    test_x, test_y = load_fashion_mnist("test", root=REAL, download=False)
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == np.uint8
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10
    assert abs(train_x.mean() / 255 - fm.FASHION_MNIST_MEAN) < 1e-3
    ds = load_dataset("fmnist", "test", root=REAL, download=False)
    x, y = ds.get_batch(np.arange(0, 10000, 7))
    assert x.shape == (len(y), 1, 28, 28)
    assert abs(float(x.mean())) < 0.1  # normalised


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_split_sizes_values_and_union() -> None:
    from sklearn.datasets import load_digits

    train_x, train_y = load_digits_split("train")
    test_x, test_y = load_digits_split("test")
    all_x, all_y = load_digits_split("all")
    assert (len(train_y), len(test_y), len(all_y)) == (1437, 360, 1797)
    assert train_x.shape == (1437, 8, 8) and train_x.dtype == np.uint8
    assert train_y.dtype == np.int64
    ref = load_digits()
    np.testing.assert_array_equal(all_x, np.rint(ref.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(all_y, ref.target)
    assert all_x.max() == 255 and all_x.min() == 0

    def items(x: np.ndarray, y: np.ndarray) -> Counter:
        return Counter((img.tobytes(), int(lbl)) for img, lbl in zip(x, y, strict=True))

    assert items(train_x, train_y) + items(test_x, test_y) == items(all_x, all_y)


def test_digits_stratified() -> None:
    _, all_y = load_digits_split("all")
    _, test_y = load_digits_split("test", test_fraction=0.25, seed=3)
    expected = np.bincount(all_y) * 0.25
    assert np.all(np.abs(np.bincount(test_y, minlength=10) - expected) <= 1)


def test_digits_deterministic() -> None:
    a = load_digits_split("test", seed=5)
    b = load_digits_split("test", seed=5)
    c = load_digits_split("test", seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert len(load_digits_split("train", test_fraction=0.5)[1]) == 898


@pytest.mark.parametrize(("split", "frac"), [("val", 0.2), ("train", 0.0), ("test", 1.5)])
def test_digits_bad_arguments(split: str, frac: float) -> None:
    with pytest.raises(DataError):
        load_digits_split(split, test_fraction=frac)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# ArrayDataset
# --------------------------------------------------------------------------------------------


def _rng_images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_array_dataset_gray_items() -> None:
    images = _rng_images((10, 5, 7))
    labels = np.arange(10) % 3
    ds = ArrayDataset(images, labels)
    assert len(ds) == 10 and ds.num_classes == 3 and ds.image_shape == (1, 5, 7)
    assert ds.classes is None
    x, y = ds[4]
    assert x.dtype == torch.float32 and x.shape == (1, 5, 7)
    assert y == 1 and isinstance(y, int)
    torch.testing.assert_close(x[0], torch.from_numpy(images[4]).float() / 255)
    assert ds[-1][1] == labels[-1]


def test_array_dataset_rgb_normalised() -> None:
    images = _rng_images((6, 4, 3, 3))
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    ds = ArrayDataset(images, np.zeros(6, np.int64), classes=["a", "b"], mean=mean, std=std)
    assert ds.image_shape == (3, 4, 3) and ds.num_classes == 2
    x, _ = ds[2]
    ref = (images[2].transpose(2, 0, 1) / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[
        :, None, None
    ]
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_get_batch_equals_stacked_items(channels: int | None) -> None:
    shape = (9, 6, 5) if channels is None else (9, 6, 5, channels)
    ds = ArrayDataset(_rng_images(shape, 1), np.arange(9) % 4, mean=0.3, std=0.7)
    for idx in (torch.tensor([3, 0, 8, 3]), np.array([1, -1]), [2], np.arange(9)):
        x, y = ds.get_batch(idx)
        items = [ds[int(i)] for i in np.asarray(idx)]
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, torch.stack([a for a, _ in items]))
        assert y.tolist() == [b for _, b in items]
    x, y = ds.get_batch(torch.tensor([], dtype=torch.int64))
    assert x.shape == (0, *ds.image_shape) and y.shape == (0,)


def test_array_dataset_works_with_dataloader() -> None:
    ds = ArrayDataset(_rng_images((10, 4, 4)), np.arange(10) % 2)
    xs, ys = zip(*torch.utils.data.DataLoader(ds, batch_size=4), strict=True)
    x, y = ds.get_batch(np.arange(10))
    assert torch.equal(torch.cat(xs), x) and torch.equal(torch.cat(ys), y)


def test_array_dataset_read_only_input_and_subset() -> None:
    images = _rng_images((8, 3, 3))
    images.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = ArrayDataset(images, np.arange(8) % 2, classes=["x", "y"])
        x, _ = ds.get_batch([0, 1])
    sub = ds.subset([5, 1])
    assert len(sub) == 2 and sub.classes == ["x", "y"]
    assert torch.equal(sub.get_batch([0, 1])[0], ds.get_batch([5, 1])[0])


@pytest.mark.parametrize(
    ("images", "labels", "kwargs", "match"),
    [
        (np.zeros((3, 4, 4), np.float32), np.zeros(3, np.int64), {}, "uint8"),
        (np.zeros((3, 4), np.uint8), np.zeros(3, np.int64), {}, "shape"),
        (np.zeros((3, 4, 4, 2, 1), np.uint8), np.zeros(3, np.int64), {}, "shape"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros((3, 1), np.int64), {}, "1-D"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.float32), {}, "integer"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(2, np.int64), {}, "3 images but 2 labels"),
        (np.zeros((3, 4, 4), np.uint8), np.array([0, -1, 0]), {}, ">= 0"),
        (np.zeros((3, 4, 4), np.uint8), np.array([0, 2, 0]), {"classes": ["a", "b"]}, "label 2"),
        (np.zeros((3, 4, 4, 3), np.uint8), np.zeros(3, np.int64), {"mean": (0.1, 0.2)}, "mean"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int64), {"mean": 0.5, "std": 0.0}, "std"),
    ],
)
def test_array_dataset_validation(
    images: np.ndarray, labels: np.ndarray, kwargs: dict, match: str
) -> None:
    with pytest.raises(DataError, match=match):
        ArrayDataset(images, labels, **kwargs)


def test_array_dataset_index_errors() -> None:
    ds = ArrayDataset(_rng_images((3, 2, 2)), np.zeros(3, np.int64))
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds.get_batch([0, 3])
    with pytest.raises(IndexError):
        ds.get_batch(np.array([0.5]))


# --------------------------------------------------------------------------------------------
# ImageFolderDataset
# --------------------------------------------------------------------------------------------


def _save(path: Path, arr: np.ndarray, **kw: object) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return arr


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """cat: 3 RGB PNG, dog: 2 RGB JPEG, fish: 2 grayscale PNG, empty: no images; all 12x10."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(7)
    pngs: dict[str, np.ndarray] = {}
    for i in range(3):
        rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
        pngs[f"cat/{i}.png"] = _save(root / "cat" / f"{i}.png", rgb)
    for i in range(2):
        smooth = np.full((10, 12, 3), 40 * (i + 1), np.uint8)
        _save(root / "dog" / f"{i}.JPG", smooth, quality=95)
    for i in range(2):
        gray = rng.integers(0, 256, (10, 12), dtype=np.uint8)
        pngs[f"fish/sub/{i}.png"] = _save(root / "fish" / "sub" / f"{i}.png", gray)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("not an image")
    _save(root / ".hidden" / "x.png", np.zeros((10, 12), np.uint8))
    (root / "README.txt").write_text("top-level files are ignored")
    return root, pngs


def _open(root: Path, **kwargs: object) -> ImageFolderDataset:
    with pytest.warns(UserWarning, match="empty.*no images"):
        return ImageFolderDataset(root, **kwargs)


def test_image_folder_discovery(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    ds = _open(root)
    assert ds.classes == ["cat", "dog", "fish"]
    assert ds.class_to_idx == {"cat": 0, "dog": 1, "fish": 2}
    assert ds.num_classes == 3 and len(ds) == 7
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert [p.relative_to(root).as_posix() for p, _ in ds.samples] == [
        "cat/0.png", "cat/1.png", "cat/2.png", "dog/0.JPG", "dog/1.JPG",
        "fish/sub/0.png", "fish/sub/1.png",
    ]  # fmt: skip
    assert ds.image_shape == (3, 10, 12)


def test_image_folder_rgb_values(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, pngs = folder
    ds = _open(root)
    x, y = ds[1]
    assert x.dtype == torch.float32 and x.shape == (3, 10, 12) and y == 0
    torch.testing.assert_close(x, torch.from_numpy(pngs["cat/1.png"]).permute(2, 0, 1) / 255)
    gray_as_rgb, y = ds[5]
    assert y == 2
    for c in range(3):
        torch.testing.assert_close(gray_as_rgb[c], torch.from_numpy(pngs["fish/sub/0.png"]) / 255)
    jpeg, y = ds[4]
    assert y == 1 and abs(float(jpeg.mean()) - 80 / 255) < 0.02  # lossy, but close


def test_image_folder_gray_mode_and_resize(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, pngs = folder
    ds = _open(root, mode="L")
    x, _ = ds[6]
    assert x.shape == (1, 10, 12)
    torch.testing.assert_close(x[0], torch.from_numpy(pngs["fish/sub/1.png"]) / 255)
    expected_l = np.asarray(Image.fromarray(pngs["cat/0.png"]).convert("L"))
    torch.testing.assert_close(ds[0][0][0], torch.from_numpy(expected_l.copy()) / 255)

    square = _open(root, image_size=8)
    assert square.image_shape == (3, 8, 8) and square[3][0].shape == (3, 8, 8)
    rect = _open(root, image_size=(6, 4), mode="L")
    assert rect.image_shape == (1, 6, 4) and rect[0][0].shape == (1, 6, 4)
    gray = Image.fromarray(pngs["cat/0.png"]).convert("L")
    resized = gray.resize((4, 6), Image.Resampling.BILINEAR)
    torch.testing.assert_close(rect[0][0][0], torch.from_numpy(np.array(resized)) / 255)


def test_image_folder_batch_and_to_arrays(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    ds = _open(root, mean=0.5, std=0.25)
    x, y = ds.get_batch(np.array([6, 0, 4]))
    assert x.shape == (3, 3, 10, 12) and y.tolist() == [2, 0, 1]
    assert torch.equal(x, torch.stack([ds[6][0], ds[0][0], ds[4][0]]))
    arrays = ds.to_arrays(progress=False)
    assert isinstance(arrays, ArrayDataset)
    assert arrays.images.shape == (7, 10, 12, 3) and arrays.classes == ds.classes
    ax, ay = arrays.get_batch(np.arange(7))
    bx, by = ds.get_batch(np.arange(7))
    assert torch.equal(ax, bx) and torch.equal(ay, by)


def test_image_folder_mixed_sizes(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    _save(root / "dog" / "odd.png", np.zeros((5, 7, 3), np.uint8))
    ds = _open(root)
    odd = next(i for i, (p, _) in enumerate(ds.samples) if p.name == "odd.png")
    assert ds[odd][0].shape == (3, 5, 7)  # single items are fine
    with pytest.raises(DataError, match="odd.png.*image_size"):
        ds.get_batch(np.arange(len(ds)))
    with pytest.raises(DataError, match="odd.png"):
        ds.to_arrays(progress=False)
    fixed = _open(root, image_size=(10, 12))
    assert fixed.get_batch(np.arange(len(fixed)))[0].shape == (8, 3, 10, 12)


@pytest.mark.parametrize(
    "content",
    [b"this is not an image", "truncated_png", "truncated_jpeg"],
)
def test_image_folder_corrupt_image(
    folder: tuple[Path, dict[str, np.ndarray]], content: bytes | str
) -> None:
    root, _ = folder
    bad = root / "cat" / ("bad.jpg" if content == "truncated_jpeg" else "bad.png")
    if content == "truncated_png":
        _save(bad, _rng_images((10, 12, 3)))
        bad.write_bytes(bad.read_bytes()[:200])
    elif content == "truncated_jpeg":
        _save(bad, _rng_images((10, 12, 3)), quality=90)
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        assert isinstance(content, bytes)
        bad.write_bytes(content)
    ds = _open(root)  # lazy: construction does not read pixels
    i = next(i for i, (p, _) in enumerate(ds.samples) if p == bad)
    with pytest.raises(DataError, match=bad.name) as info:
        ds[i]
    assert str(bad) in str(info.value)
    with pytest.raises(DataError, match=bad.name):
        ds.get_batch([0, i])


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        ImageFolderDataset(tmp_path / "file.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no images found"):
        ImageFolderDataset(tmp_path)
    _save(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="mode"):
        ImageFolderDataset(tmp_path, mode="CMYK")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="image_size"):
        ImageFolderDataset(tmp_path, image_size=(0, 3))


def test_image_folder_explicit_classes(folder: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = folder
    with pytest.warns(UserWarning, match="whale"):
        ds = ImageFolderDataset(root, classes=["fish", "whale", "cat", "dog"])
    assert ds.class_to_idx["fish"] == 0 and ds.num_classes == 4
    assert ds.labels.tolist() == [0, 0, 2, 2, 2, 3, 3]
    assert [p.parent.name for p, _ in ds.samples[:3]] == ["sub", "sub", "cat"]
    with pytest.raises(DataError, match="dog"):
        ImageFolderDataset(root, classes=["cat", "fish"])


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def test_registry_names() -> None:
    assert dataset_names() == ["cub-200-2011", "digits", "fashion-mnist", "fgvc-aircraft",
                               "food-101", "image-folder", "stanford-cars"]
    assert set(DATASETS) == set(dataset_names())
    with pytest.raises(ValueError, match="twice"):
        DATASETS.register("fmnist")(lambda split, **kw: None)


def test_load_dataset_unknown_name() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar-10", "train")
    msg = str(info.value)
    assert "cifar-10" in msg
    assert all(n in msg for n in ("fashion-mnist", "fmnist", "digits", "image-folder"))


def test_load_dataset_digits() -> None:
    ds = load_dataset("digits", "train")
    assert isinstance(ds, ArrayDataset) and len(ds) == 1437 and ds.classes == DIGITS_CLASSES
    raw, labels = load_digits_split("train")
    x, y = ds.get_batch(np.arange(len(ds)))
    expected = (torch.from_numpy(raw).float()[:, None] / 255 - DIGITS_MEAN) / DIGITS_STD
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, torch.from_numpy(labels))
    plain = load_dataset("Digits", "test", normalize=False, seed=1)
    assert len(plain) == 360 and float(plain.get_batch(np.arange(360))[0].min()) >= 0.0
    with pytest.raises(DataError, match="split"):
        load_dataset("digits", "validation")


def test_load_dataset_resizes_array_datasets() -> None:
    big = load_dataset("digits", "test", image_size=16, normalize=False)
    same = load_dataset("digits", "test", image_size=(8, 8), normalize=False)
    small = load_dataset("digits", "test", normalize=False)
    assert big.image_shape == (1, 16, 16) and big.images.shape == (360, 16, 16)
    assert np.array_equal(same.images, small.images)
    # upsampling then averaging 2x2 blocks gives back (a blurred version of) the original
    pooled = big.images.reshape(360, 8, 2, 8, 2).astype(float).mean(axis=(2, 4))
    assert np.corrcoef(pooled.ravel(), small.images.ravel())[0, 1] > 0.95
    flat = resize_images(np.full((2, 4, 4, 3), 77, np.uint8), (2, 6))
    assert flat.shape == (2, 2, 6, 3) and flat.dtype == np.uint8 and np.all(flat == 77)
    with pytest.raises(DataError, match="image_size"):
        load_dataset("digits", "test", image_size=(0, 4))


def test_load_dataset_fashion_aliases(env: dict[str, Path]) -> None:
    write_fake(env["cache"])
    a = load_dataset("fmnist", "train", download=False)
    b = load_dataset("Fashion_MNIST", "train", root=env["cache"], download=False)
    assert isinstance(a, ArrayDataset) and len(a) == 12
    assert a.classes == FASHION_MNIST_CLASSES and a.mean == pytest.approx(0.2860)
    assert a.std == pytest.approx(0.3530)
    assert torch.equal(a.get_batch([0, 5])[0], b.get_batch([0, 5])[0])
    x, _ = a.get_batch([0])
    ref = (FAKE[FASHION_MNIST_FILES[0]][0] / 255.0 - 0.2860) / 0.3530
    np.testing.assert_allclose(x[0, 0].numpy(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="split"):
        load_dataset("fashion-mnist", "all", download=False)


def test_load_dataset_image_folder(tmp_path: Path) -> None:
    for split, classes in (("train", ["a", "b", "c"]), ("test", ["a", "c"])):
        for c in classes:
            _save(tmp_path / "split" / split / c / "0.png", np.full((4, 4), 7, np.uint8))
    train = load_dataset("image-folder", "train", root=tmp_path / "split", image_size=4)
    with pytest.warns(UserWarning, match="b"):
        test = load_dataset("image-folder", "test", root=tmp_path / "split", mode="L")
    assert isinstance(train, ImageFolderDataset) and train.root == tmp_path / "split" / "train"
    assert train.classes == test.classes == ["a", "b", "c"]  # indices agree between splits
    assert test.labels.tolist() == [0, 2]
    # no split sub-folders: the root itself is used for any split
    for c in ("x", "y"):
        _save(tmp_path / "flat" / c / "0.png", np.zeros((3, 3), np.uint8))
    flat = load_dataset("image-folder", "test", root=tmp_path / "flat")
    assert flat.root == tmp_path / "flat" and flat.classes == ["x", "y"]
    with pytest.raises(DataError, match="root"):
        load_dataset("image-folder", "train")


def test_environment_is_clean_after_env_fixture() -> None:
    # guards against a fixture leaking patched search paths into other tests
    assert fm.SYSTEM_DIRS == (fm.DEBIAN_DIR,)
    assert len(fm.FASHION_MNIST_SHAPES) == 4
    assert fm.FASHION_MNIST_SHAPES[FASHION_MNIST_FILES[0]] == (60000, 28, 28)
    assert fm.urlopen.__module__ == "urllib.request"
