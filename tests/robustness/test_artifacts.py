"""Issue 10: artifacts hashlab reads back (model.pt, checkpoint.pt, codes caches, ``--out``
codes, indexes and their ``source.json``) are checked before use.

A damaged user file ends in exit code 2 / a HashlabError naming the file, never a traceback;
a damaged or stale codes cache is re-encoded with a warning (oracle: a fresh
``encode(..., cache=False)``); a stale index is refused; nothing in a file ever runs code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import struct
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hashlab.artifacts import (
    ArtifactError,
    arrays_sha256,
    check_checkpoint_state,
    check_model_state,
)
from hashlab.cli import app
from hashlab.config import load_config
from hashlab.encode import Codes, TrainedRun
from hashlab.errors import CheckpointError, HashlabError
from hashlab.eval.common import load_run_index, read_index_source, save_run_index
from hashlab.index import BinaryIndex, FloatIndex, IndexFileError, load_index, store
from hashlab.train.engine import Trainer
from tests.conftest import tiny_config

runner = CliRunner()
DAMAGE = settings(max_examples=15, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------- fixtures
def _train(run_dir: Path, seed: int = 0) -> Path:
    cfg = load_config(tiny_config(run_dir.parent, seed=seed, train={"epochs": 1}))
    Trainer(cfg, run_dir, progress=False).fit()
    return run_dir


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A finished tiny run; tests that damage it work on a copy (:func:`_copy_run`)."""
    return _train(tmp_path_factory.mktemp("good") / "run")


@pytest.fixture(scope="module")
def fresh(good_run) -> dict[str, Codes]:
    """The oracle: codes encoded from scratch, no cache involved."""
    run = TrainedRun(good_run)
    return {"test": run.encode("test", progress=False, cache=False)}


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("config.yaml", "checkpoint.pt", "model.pt"):
        shutil.copy2(src / name, dst / name)
    return dst


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_codes_equal(a: Codes, b: Codes) -> None:
    np.testing.assert_array_equal(a.float, b.float)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert (a.bits is None) == (b.bits is None) and a.nbits == b.nbits
    if a.bits is not None:
        np.testing.assert_array_equal(a.bits, b.bits)


def _cli(*args: str):
    result = runner.invoke(app, [*map(str, args)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _read_plain(data: bytes) -> dict[str, np.ndarray] | None:
    """An independent reader (numpy alone): the arrays of ``data``, None when unreadable."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:
        return None


# --------------------------------------------------------------- class 2: the codes cache
def test_cache_records_the_model_and_is_reused(good_run, fresh, tmp_path, monkeypatch):
    run_dir = _copy_run(good_run, tmp_path / "run")
    run = TrainedRun(run_dir)
    assert run.model_sha256 == _sha256(run_dir / "model.pt")
    first = run.encode("test", progress=False)
    _assert_codes_equal(first, fresh["test"])
    with np.load(run_dir / "codes" / "test.npz", allow_pickle=False) as z:
        assert str(z["model_sha256"]) == run.model_sha256 and str(z["split"]) == "test"
        assert str(z["sha256"]) == arrays_sha256(
            {k: z[k] for k in ("float", "labels", "bits", "nbits")})
    assert not list((run_dir / "codes").glob(".*.stamp"))  # the mtime stamp is gone

    def no_encoding(*args, **kwargs):
        raise AssertionError("a valid cache must be used, not re-encoded")

    monkeypatch.setattr(TrainedRun, "encode_dataset", no_encoding)
    _assert_codes_equal(TrainedRun(run_dir).encode("test", progress=False), fresh["test"])


def _array_damage(arrays: dict[str, np.ndarray], data) -> tuple[dict[str, np.ndarray], bool]:
    """One change of a codes npz, drawn by hypothesis; whether the file is now invalid (else it
    is a valid codes file that is not this model's cache of this split)."""
    arrays = dict(arrays)
    op = data.draw(st.sampled_from(["drop", "dtype", "rows", "cols", "nbits", "value", "foreign",
                                    "stale", "split", "padding"]))
    key = None
    if op == "drop":
        key = data.draw(st.sampled_from(sorted(arrays)))
        del arrays[key]
    elif op == "dtype":
        key, dtype = data.draw(st.sampled_from([("float", np.float64), ("labels", np.int32),
                                                ("bits", np.int8), ("float", np.float16)]))
        arrays[key] = arrays[key].astype(dtype)
    elif op == "rows":
        key = data.draw(st.sampled_from(["float", "labels", "bits"]))
        arrays[key] = arrays[key][:-data.draw(st.integers(1, 5))]
    elif op == "cols":
        key = data.draw(st.sampled_from(["float", "bits"]))
        arrays[key] = arrays[key][:, :-1]
    elif op == "nbits":
        arrays["nbits"] = np.int64(data.draw(st.sampled_from([0, 8, 15, 17, 32, -16])))
    elif op == "value":
        key = data.draw(st.sampled_from(["float", "labels", "bits"]))
        arrays[key] = arrays[key].copy()
        arrays[key].reshape(-1)[data.draw(st.integers(0, arrays[key].size - 1))] += 1
    elif op == "foreign":
        arrays = {"x": np.arange(10), "y": np.ones((3, 3))}
    elif op == "stale":
        arrays["model_sha256"] = np.str_("0" * 64)
    elif op == "split":
        arrays["split"] = np.str_("train")
    else:  # a padding bit set: 16-bit codes have none, so shrink nbits to 12
        arrays["nbits"] = np.int64(12)
        arrays["float"] = arrays["float"][:, :12]
        arrays["bits"] = arrays["bits"].copy()
        arrays["bits"][0, 1] |= 0x80
    if op not in ("stale", "split", "foreign", "value") and "sha256" in arrays \
            and data.draw(st.booleans()):
        # re-sign the damaged content: the structure checks alone must catch it
        content = {k: v for k, v in arrays.items() if k in ("float", "labels", "bits", "nbits")}
        arrays["sha256"] = np.str_(arrays_sha256(content))
    valid = op in ("stale", "split") or (op == "drop" and key in ("model_sha256", "split"))
    return arrays, not valid


@pytest.fixture(scope="module")
def cache_run(good_run, tmp_path_factory, fresh) -> tuple[TrainedRun, Path, dict]:
    run_dir = _copy_run(good_run, tmp_path_factory.mktemp("cache") / "run")
    run = TrainedRun(run_dir)
    run.encode("test", progress=False)
    path = run_dir / "codes" / "test.npz"
    with np.load(path, allow_pickle=False) as z:
        good = {k: z[k] for k in z.files}
    return run, path, good


def _encode_with_damaged_cache(run: TrainedRun, path: Path, damaged: bytes) -> tuple[Codes, str]:
    path.write_bytes(damaged)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        codes = run.encode("test", progress=False)
    return codes, err.getvalue()


@DAMAGE
@given(data=st.data())
def test_damaged_cache_arrays_are_rebuilt(cache_run, fresh, data):
    run, path, good = cache_run
    arrays, invalid = _array_damage(good, data)
    damaged = _npz_bytes(arrays)
    path.write_bytes(damaged)
    if invalid:  # as a user-given file: refused, naming it
        with pytest.raises(ArtifactError, match=re.escape(str(path))):
            Codes.load(path)
    else:  # a valid codes file, but not this model's codes of this split
        loaded = Codes.load(path)
        assert (loaded.model_sha256, loaded.split) != (run.model_sha256, "test")
    codes, err = _encode_with_damaged_cache(run, path, damaged)
    assert str(path) in err and "warning" in err, err
    _assert_codes_equal(codes, fresh["test"])
    _assert_codes_equal(Codes.load(path), fresh["test"])  # the rebuilt cache is valid


@DAMAGE
@given(data=st.data())
def test_damaged_cache_bytes_are_rebuilt(cache_run, fresh, data):
    run, path, good = cache_run
    raw = bytearray(_npz_bytes(good))
    op = data.draw(st.sampled_from(["truncate", "flip", "random", "empty", "npy", "pickle"]))
    if op == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif op == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[pos] ^= data.draw(st.integers(1, 255))
    elif op == "random":
        raw = bytearray(data.draw(st.binary(min_size=1, max_size=2000)))
    elif op == "empty":
        raw = bytearray()
    elif op == "npy":
        buf = io.BytesIO()
        np.save(buf, good["float"])
        raw = bytearray(buf.getvalue())
    else:
        raw = bytearray(pickle.dumps(good))
    damaged = bytes(raw)
    plain = _read_plain(damaged)
    intact = plain is not None and plain.keys() == good.keys() and all(
        np.array_equal(plain[k], good[k]) and plain[k].dtype == good[k].dtype for k in good)
    path.write_bytes(damaged)
    if intact:  # the damage hit bytes no reader uses (a zip timestamp): still the same codes
        _assert_codes_equal(Codes.load(path), fresh["test"])
    else:
        with pytest.raises(ArtifactError, match=re.escape(str(path))):
            Codes.load(path)
    codes, err = _encode_with_damaged_cache(run, path, damaged)
    assert (str(path) in err) != intact, (op, err)
    _assert_codes_equal(codes, fresh["test"])
    _assert_codes_equal(Codes.load(path), fresh["test"])


def test_unwritable_cache_costs_a_warning_not_the_codes(good_run, fresh, tmp_path, capsys):
    run_dir = _copy_run(good_run, tmp_path / "run")
    (run_dir / "codes" / "test.npz").mkdir(parents=True)  # in the way of the cache file
    codes = TrainedRun(run_dir).encode("test", progress=False)
    _assert_codes_equal(codes, fresh["test"])
    err = capsys.readouterr().err
    assert "test.npz" in err and "not cached" in err


def test_encode_out_records_the_model_and_refuses_a_directory(good_run, fresh, tmp_path):
    run_dir = _copy_run(good_run, tmp_path / "run")
    out = tmp_path / "codes.npz"
    assert _cli("encode", run_dir, "--out", out, "--no-progress").exit_code == 0
    codes = Codes.load(out)
    _assert_codes_equal(codes, fresh["test"])
    assert codes.model_sha256 == _sha256(run_dir / "model.pt") and codes.split == "test"
    before = out.read_bytes()
    result = _cli("encode", run_dir, "--out", tmp_path, "--no-progress")
    assert result.exit_code == 2 and str(tmp_path) in result.output
    # a damaged model: refused, the previous --out file untouched
    (run_dir / "model.pt").write_bytes(b"")
    result = _cli("encode", run_dir, "--out", out, "--no-progress")
    assert result.exit_code == 2 and "model.pt" in result.output
    assert out.read_bytes() == before


def test_codes_load_refuses_other_files(tmp_path):
    for name, data in [("missing.npz", None), ("text.npz", b"hello"), ("empty.npz", b"")]:
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(ArtifactError, match=name):
            Codes.load(path)
    with pytest.raises(ArtifactError, match="is a directory"):
        Codes(np.zeros((1, 8), np.float32), None, np.zeros(1, np.int64), None).save(tmp_path)


# ----------------------------------------------------------- class 2: model.pt, checkpoint.pt
def _model_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "model.pt", weights_only=True)


def _foreign_model(kind: str, good_run: Path) -> bytes | dict | list:
    state = _model_state(good_run)
    if kind == "checkpoint":
        return (good_run / "checkpoint.pt").read_bytes()
    if kind == "missing-key":
        del state["loss"]
    elif kind == "wrong-dim":
        state["config"]["model"]["dim"] = 32
    elif kind == "extra-weight":
        state["model"]["head.extra"] = torch.zeros(3)
    elif kind == "not-a-tensor":
        state["model"]["head.proj.weight"] = [1.0, 2.0]
    elif kind == "bad-config":
        state["config"]["model"]["backbone"] = "no-such-backbone"
    elif kind == "bad-shape":
        state["dataset"]["image_shape"] = [1, 8]
    elif kind == "list":
        return [1, 2, 3]
    elif kind == "tensor":
        return torch.zeros(3)
    return state


@pytest.mark.parametrize("kind", ["checkpoint", "missing-key", "wrong-dim", "extra-weight",
                                  "not-a-tensor", "bad-config", "bad-shape", "list", "tensor"])
def test_foreign_torch_file_as_model_is_refused(good_run, tmp_path, kind):
    run_dir = _copy_run(good_run, tmp_path / "run")
    foreign = _foreign_model(kind, good_run)
    if isinstance(foreign, bytes):
        (run_dir / "model.pt").write_bytes(foreign)
    else:
        torch.save(foreign, run_dir / "model.pt")
    with pytest.raises(CheckpointError, match=re.escape(str(run_dir / "model.pt"))):
        TrainedRun(run_dir)
    result = _cli("encode", run_dir, "--no-progress")
    assert result.exit_code == 2 and "model.pt" in result.output
    if kind == "checkpoint":
        assert "training checkpoint" in result.output and "--resume" in result.output


@DAMAGE
@given(data=st.data())
def test_damaged_model_bytes_are_refused_or_identical(good_run, tmp_path_factory, data):
    raw = bytearray((good_run / "model.pt").read_bytes())
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        for pos in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=3)):
            raw[pos] ^= data.draw(st.integers(1, 255))
    run_dir = _copy_run(good_run, tmp_path_factory.mktemp("damaged") / "run")
    (run_dir / "model.pt").write_bytes(bytes(raw))
    try:
        run = TrainedRun(run_dir)
    except CheckpointError as exc:
        assert str(run_dir / "model.pt") in str(exc)
        return
    # loaded: only bytes no reader checks were hit, so the weights are exactly the good ones
    want = TrainedRun(good_run).model.state_dict()
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, want[key]), key


def test_a_flipped_weight_is_caught(good_run, tmp_path):
    """torch.load does not check CRCs: a flipped byte in the weights would load silently."""
    run_dir = _copy_run(good_run, tmp_path / "run")
    raw = bytearray((run_dir / "model.pt").read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor's data
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 7] ^= 0x10
    (run_dir / "model.pt").write_bytes(bytes(raw))
    loaded = torch.load(io.BytesIO(bytes(raw)), weights_only=True)["model"]
    good = _model_state(good_run)["model"]
    assert any(not torch.equal(loaded[k], good[k]) for k in good)  # torch alone accepts it
    with pytest.raises(CheckpointError, match="CRC-32"):
        TrainedRun(run_dir)


def test_structure_checks_of_model_and_checkpoint_dicts(good_run):
    """What engine.load_checkpoint's callers run on checkpoint.pt before resuming."""
    model = _model_state(good_run)
    ckpt = torch.load(good_run / "checkpoint.pt", weights_only=True)
    check_model_state(model, "m.pt")
    check_checkpoint_state(ckpt, "c.pt")
    with pytest.raises(CheckpointError, match="c.pt: holds a finished model"):
        check_checkpoint_state(model, "c.pt")
    with pytest.raises(CheckpointError, match="m.pt: holds a training checkpoint"):
        check_model_state(ckpt, "m.pt")
    for key, value in [("optimizer", None), ("epoch", True), ("epoch", -1), ("history", {}),
                       ("model", {"w": 1.0}), ("torch_rng", [1, 2])]:
        with pytest.raises(CheckpointError, match=f"c.pt: not a valid .*{key}"):
            check_checkpoint_state({**ckpt, key: value}, "c.pt")
    with pytest.raises(CheckpointError, match="c.pt: not a valid .*missing scheduler"):
        check_checkpoint_state({k: v for k, v in ckpt.items() if k != "scheduler"}, "c.pt")


# ------------------------------------------------------------ class 7a: no code from files
class Payload:
    """Unpickling this touches ``marker``: the proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_payload_control_runs_code_when_unpickled(tmp_path):
    # guards the tests below: the payload does run code when a loader trusts it
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    marker.unlink()
    torch.save({"model": Payload(marker)}, tmp_path / "m.pt")
    torch.load(tmp_path / "m.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    np.savez(tmp_path / "c.npz", float=np.array([Payload(marker)], dtype=object))
    with np.load(tmp_path / "c.npz", allow_pickle=True) as z:
        z["float"]
    assert marker.exists()


def test_code_in_model_and_checkpoint_never_runs(good_run, tmp_path):
    marker = tmp_path / "ran"
    run_dir = _copy_run(good_run, tmp_path / "run")
    state = _model_state(good_run)
    state["dataset"]["payload"] = Payload(marker)
    torch.save(state, run_dir / "model.pt")
    with pytest.raises(CheckpointError, match=re.escape(str(run_dir / "model.pt"))):
        TrainedRun(run_dir)
    result = _cli("encode", run_dir, "--no-progress")
    assert result.exit_code == 2 and "model.pt" in result.output
    assert not marker.exists()

    (run_dir / "model.pt").unlink()  # an unfinished run whose checkpoint carries the payload
    ckpt = torch.load(good_run / "checkpoint.pt", weights_only=True)
    ckpt["epoch"] = 0
    ckpt["history"] = [Payload(marker)]
    torch.save(ckpt, run_dir / "checkpoint.pt")
    result = _cli("train", run_dir / "config.yaml", "--resume", "--run-dir", run_dir,
                  "--no-progress")
    assert result.exit_code == 2 and "checkpoint.pt" in result.output
    assert not marker.exists()


def test_code_in_codes_and_index_files_never_runs(good_run, tmp_path):
    marker = tmp_path / "ran"
    run_dir = _copy_run(good_run, tmp_path / "run")
    payload = np.array([Payload(marker)], dtype=object)
    cache = run_dir / "codes" / "test.npz"
    cache.parent.mkdir()
    np.savez(cache, float=payload, labels=payload)
    with pytest.raises(ArtifactError, match=re.escape(str(cache))):
        Codes.load(cache)
    assert _cli("encode", run_dir, "--no-progress").exit_code == 0  # the cache is rebuilt
    assert not marker.exists()

    index = BinaryIndex(16)
    index.add(np.zeros((4, 2), np.uint8))
    idx = store.save_index(index, tmp_path / "idx", source={"run": "r"})
    pickled = pickle.dumps(Payload(marker))
    for name in ("manifest.json", "source.json", "index.faiss"):
        before = (idx / name).read_bytes()
        (idx / name).write_bytes(pickled)
        with pytest.raises(IndexFileError, match=re.escape(name)):
            load_index(idx)
        (idx / name).write_bytes(before)
    assert not marker.exists()


# ---------------------------------------------- class 8: stale artifacts, index + sidecar
@pytest.fixture
def indexed_run(good_run, tmp_path) -> tuple[Path, Path]:
    run_dir = _copy_run(good_run, tmp_path / "run")
    result = _cli("index", run_dir, "--kind", "flat", "--no-progress")
    assert result.exit_code == 0, result.output
    return run_dir, run_dir / "index-train-flat"


def _retrain(run_dir: Path) -> None:
    """What retraining at the same path does to the files hashlab checks: a new model.pt with
    the same config, code width and splits but other weights (cheaper than a real training)."""
    state = _model_state(run_dir)
    weight = state["model"]["head.proj.weight"]
    weight.copy_(torch.flip(weight, dims=[0]))  # bit i of the code becomes bit dim-1-i
    torch.save(state, run_dir / "model.pt")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_index_records_the_model_in_one_atomic_unit(indexed_run):
    run_dir, idx = indexed_run
    source = read_index_source(idx)
    assert source == {"run": str(run_dir.resolve()), "split": "train", "code": "binary",
                      "model_sha256": _sha256(run_dir / "model.pt")}
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["source_sha256"] == _sha256(idx / "source.json")
    assert sorted(os.listdir(run_dir)) == sorted(
        ["checkpoint.pt", "codes", "config.yaml", "index-train-flat", "model.pt"])


def test_stale_index_is_refused_after_retraining(indexed_run, fresh):
    run_dir, idx = indexed_run
    before = _snapshot(idx)
    _retrain(run_dir)
    for args in (["search", idx, "--ids", "3", "--k", "5"],
                 ["eval", run_dir, "--protocol", "retrieval", "--index", idx]):
        result = _cli(*args, "--no-progress")
        assert result.exit_code == 2, result.output
        assert str(idx) in result.output and "another model.pt" in result.output
        assert "hashlab index" in result.output
    with pytest.raises(IndexFileError, match="rebuild it"):
        load_run_index(TrainedRun(run_dir), idx)
    assert _snapshot(idx) == before  # refused, not modified
    # the stale codes cache is re-encoded too, and the rebuilt index is accepted
    new = TrainedRun(run_dir)
    assert not np.array_equal(new.encode("test", progress=False).float, fresh["test"].float)
    _assert_codes_equal(new.encode("train", progress=False),
                        new.encode("train", progress=False, cache=False))
    assert _cli("index", run_dir, "--kind", "flat", "--no-progress").exit_code == 0
    assert _cli("search", idx, "--ids", "3", "--no-progress").exit_code == 0


@pytest.mark.parametrize("content", [
    b"", b"not json", b"[1, 2]", b"\xff\xfe",
    json.dumps({"run": "r", "split": "train", "code": "binary"}).encode(),       # no model
    json.dumps({"run": "r", "split": "train", "code": "binary", "model_sha256": 5}).encode(),
    json.dumps({"run": "r", "split": "train", "code": "hamming",
                "model_sha256": "0" * 64}).encode(),
    json.dumps({"run": "r", "split": "train", "code": "float",
                "model_sha256": "0" * 64}).encode(),                             # not this index
])
def test_bad_source_json_is_refused(indexed_run, content):
    run_dir, idx = indexed_run
    (idx / "source.json").write_bytes(content)
    result = _cli("search", idx, "--ids", "3", "--no-progress")
    assert result.exit_code == 2 and "source.json" in result.output
    result = _cli("eval", run_dir, "--protocol", "retrieval", "--index", idx, "--no-progress")
    assert result.exit_code == 2 and "source.json" in result.output
    # the checksum in the manifest is what catches a well-formed foreign sidecar; without it
    # the field checks do
    manifest = json.loads((idx / "manifest.json").read_text())
    del manifest["source_sha256"]
    (idx / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HashlabError, match="source.json"):
        read_index_source(idx)


def test_sidecar_of_another_index_is_refused(indexed_run):
    """The mix two unlocked writers could leave: one index's files beside another's sidecar."""
    run_dir, idx = indexed_run
    other = run_dir / "index-test"
    assert _cli("index", run_dir, "--split", "test", "--out", other,
                "--no-progress").exit_code == 0
    shutil.copy2(other / "source.json", idx / "source.json")  # well-formed, this model's
    result = _cli("search", idx, "--ids", "3", "--no-progress")
    assert result.exit_code == 2 and "source.json: SHA-256 does not match" in result.output
    with pytest.raises(IndexFileError, match="source.json"):
        load_index(idx)


def test_failed_index_save_keeps_the_previous_index_and_sidecar(indexed_run, monkeypatch):
    run_dir, idx = indexed_run
    before = _snapshot(idx)
    run = TrainedRun(run_dir)
    codes = run.encode("train", progress=False)
    new = FloatIndex(codes.float.shape[1])
    new.add(codes.float)

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store, "_write_manifest", boom)
    with pytest.raises(OSError, match="simulated"):
        save_run_index(run, new, idx, split="train", code="float")
    assert _snapshot(idx) == before
    assert load_run_index(run, idx)[1]["code"] == "binary"
    assert sorted(p.name for p in idx.parent.iterdir() if p.name.startswith(".")) == []


def test_concurrent_index_saves_leave_a_consistent_pair(good_run, tmp_path, monkeypatch):
    run = TrainedRun(good_run)
    replace = os.replace

    def slow_replace(src, dst):  # widen the window between checking and renaming
        if "idx" in Path(dst).name:
            time.sleep(0.05)
        replace(src, dst)

    monkeypatch.setattr(store.os, "replace", slow_replace)
    codes = run.encode("test", progress=False, cache=False)
    binary, floats = BinaryIndex(codes.nbits), FloatIndex(codes.float.shape[1])
    binary.add(codes.bits)
    floats.add(codes.float)
    path = tmp_path / "idx"
    def save(index, code, barrier, errors):
        barrier.wait()
        try:
            save_run_index(run, index, path, split="test", code=code)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for _ in range(5):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []
        threads = [threading.Thread(target=save, args=(binary, "binary", barrier, errors)),
                   threading.Thread(target=save, args=(floats, "float", barrier, errors))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        source = read_index_source(path)  # checks the pair agrees
        assert isinstance(load_index(path), BinaryIndex if source["code"] == "binary"
                          else FloatIndex)
        assert sorted(os.listdir(tmp_path)) == ["idx"]
