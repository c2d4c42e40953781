"""Issue 10, the command line and the config: a user's mistake or a damaged file ends in
``error: ...`` and exit status 2 naming the key or the file, never in a traceback, a silent
wrong answer or lost work. Every test drives the real CLI (``hashlab.cli.app``)."""

from __future__ import annotations

import errno
import importlib
import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from hashlab import cli
from hashlab.cli import BUG_HINT, app
from hashlab.errors import WriteError
from hashlab.io import atomic_torch_save, atomic_write_text
from tests.conftest import tiny_config

runner = CliRunner()
# two batches of 32 per epoch: a run takes a fraction of a second
FAST = {"epochs": 2, "batch_size": 32, "max_batches_per_epoch": 2}
HYPOTHESIS = settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])


def write_config(folder: Path, **sections) -> Path:
    data = tiny_config(folder, **{"train": FAST, "scheduler": {"name": "cosine"}, **sections})
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_refused(result, *names: str | Path) -> None:
    """Exit status 2, one ``error:`` line naming each of ``names``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and BUG_HINT not in result.output, result.output
    assert "error: " in result.output, result.output
    for name in names:
        assert str(name) in result.output, (name, result.output)


def assert_ok(result) -> None:
    assert result.exit_code == 0, result.output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# ---------------------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robustness")


@pytest.fixture(scope="module")
def interrupted_run(workdir) -> Path:
    """A run stopped by Ctrl-C during its second epoch: checkpoint.pt holds epoch 1."""
    from hashlab.train.engine import Trainer

    config = write_config(workdir)
    run = workdir / "interrupted"
    run.mkdir()  # an existing empty folder is a fine run directory
    original = Trainer._train_epoch

    def interrupt_at_epoch_2(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, epoch)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_train_epoch", interrupt_at_epoch_2)
        result = invoke("train", config, "--run-dir", run, "--no-progress")
    assert result.exit_code == 130, result.output
    assert "continue with --resume" in result.output and "Traceback" not in result.output
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (run / "model.pt").exists()
    return run


@pytest.fixture
def interrupted(interrupted_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of the interrupted run, and its config (the resolved one it wrote)."""
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    return run, run / "config.yaml"


@pytest.fixture(scope="module")
def indexed_run(workdir) -> tuple[Path, Path]:
    """A finished run and a flat index of its training codes."""
    config = write_config(workdir, name="finished", train={**FAST, "epochs": 1})
    assert_ok(invoke("train", config, "--no-progress"))
    run = workdir / "runs" / "finished"
    assert_ok(invoke("index", run, "--kind", "flat", "--no-progress"))
    return run, run / "index-train-flat"


# ------------------------------------------------ 1. tracebacks become keyed errors
def test_invalid_yaml_in_set_names_the_key(tmp_path):
    config = write_config(tmp_path)
    result = invoke("train", config, "--set", "train.epochs=[1")
    assert_refused(result, "train.epochs", "not a valid YAML value")
    result = invoke("train", config, "--set", "=3")
    assert_refused(result, "KEY=VALUE")
    assert not (tmp_path / "runs").exists()


def test_diverging_run_is_an_error_naming_the_learning_rate(tmp_path):
    config = write_config(tmp_path, scheduler={"name": "none"})
    result = invoke("train", config, "--set", "optim.lr=1e30", "--no-progress")
    assert_refused(result, "training diverged", "optim.lr", "lower optim.lr")
    assert not (tmp_path / "runs" / "tiny" / "model.pt").exists()


@pytest.mark.parametrize("override, key", [
    ("model.head_args={activation: foo}", "model.head_args"),
    ("model.backbone_args={width: -1, feature_dim: 32}", "model.backbone_args"),
    ("model.backbone_args={width: abc}", "model.backbone_args.width"),
    ("loss.args={quantization_weight: -1}", "loss.args"),
    ("loss.args={quantization_weight: abc}", "loss.args.quantization_weight"),
    ("loss.name=arcface", None),  # with the next override: s is a number
    ("data.image_size=2", "model.backbone"),  # too small for the CNN's pooling
    ("data.augment.crop_padding=100", "data.augment.crop_padding"),
])
def test_bad_method_argument_values_name_the_key(tmp_path, override, key):
    config = write_config(tmp_path)
    extra = ["--set", "loss.args={s: abc}"] if key is None else []
    result = invoke("train", config, "--set", override, *extra, "--no-progress")
    assert_refused(result, key or "loss.args.s")
    assert not (tmp_path / "runs" / "tiny" / "checkpoint.pt").exists()


def test_a_onecycle_schedule_too_short_to_warm_up_names_the_key(tmp_path):
    config = write_config(tmp_path, scheduler={"name": "onecycle", "warmup_fraction": 0.25})
    result = invoke("train", config, "--no-progress")  # 2 epochs × 2 batches: 1 warm-up step
    assert_refused(result, "scheduler.warmup_fraction", "needs more than 1")
    result = invoke("train", config, "--set", "scheduler.warmup_fraction=0.5", "--no-progress")
    assert_ok(result)


def test_one_error_path_for_files_bugs_and_the_entry_point(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path)
    secret = tmp_path / "locked.yaml"

    def denied(_):
        raise PermissionError(errno.EACCES, "Permission denied", str(secret))

    monkeypatch.setattr(cli, "resolve_config_path", denied)
    assert_refused(invoke("train", config), "permission denied", secret)

    def bug(_):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "resolve_config_path", bug)
    result = invoke("train", config)
    assert result.exit_code == 1 and "Traceback" in result.output
    assert "ZeroDivisionError: a bug" in result.output and BUG_HINT in result.output

    # the console script: what escapes typer is reported the same way
    monkeypatch.setattr(cli, "app", lambda: (_ for _ in ()).throw(RuntimeError("escaped")))
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1 and BUG_HINT in capsys.readouterr().err
    monkeypatch.setattr(cli, "app", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 130


def _image_folder(root: Path) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("limit", [20, 40])  # 64 pixels: > 2 * limit is an error, else a warning
def test_decompression_bomb_in_an_image_folder(tmp_path, monkeypatch, limit):
    folder = _image_folder(tmp_path / "images")
    config = write_config(tmp_path, data={"dataset": "image-folder", "root": str(folder),
                                          "augment": {"crop_padding": 0}},
                          train={**FAST, "epochs": 1, "batch_size": 2})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    result = invoke("train", config, "--no-progress")
    assert_refused(result, folder / "a" / "0.png", "decompression bomb", "MAX_IMAGE_PIXELS")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # a sane limit: the same folder trains
    assert_ok(invoke("train", config, "--no-progress"))


@pytest.mark.parametrize("limit", [20, 40])
def test_decompression_bomb_as_a_query_image(indexed_run, tmp_path, monkeypatch, limit):
    _, index_dir = indexed_run
    query = tmp_path / "q.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(query)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    result = invoke("search", index_dir, "--image", query, "--no-progress")
    assert_refused(result, query, "decompression bomb")
    query.write_bytes(b"not an image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert_refused(invoke("search", index_dir, "--image", query, "--no-progress"), query)
    assert_refused(invoke("search", index_dir, "--image", tmp_path / "missing.png"),
                   tmp_path / "missing.png")


def _full_after(limit: int):
    """A torch.save whose file fills up after ``limit`` bytes, as on a full disk."""
    real_save = torch.save

    class Full(io.RawIOBase):
        def __init__(self, f):
            self.f, self.n = f, 0

        def writable(self):
            return True

        def write(self, data):
            self.n += len(data)
            if self.n > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

    return lambda obj, f: real_save(obj, Full(f))


def test_atomic_write_turns_a_full_disk_into_a_write_error(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save(path, {"w": torch.arange(10)})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _full_after(100))  # torch's own "inline_container" error
    with pytest.raises(WriteError) as info:
        atomic_torch_save(path, {"w": torch.zeros(10_000)})
    message = str(info.value)
    assert message.startswith(f"cannot write {path}: no space left on device")
    assert "free some space" in message and info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)  # best-effort writers that catch OSError still do
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    with pytest.raises(WriteError, match=str(blocked / "out.json")):
        atomic_write_text(blocked / "out.json", "{}")


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file is synced")
    config = write_config(tmp_path)
    run = tmp_path / "runs" / "tiny"
    real_fsync, saves, previous = os.fsync, [], []

    def fsync(fd):  # the second checkpoint write hits a full disk
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".checkpoint.pt."):
            saves.append(fd)
            if len(saves) == 2:
                previous.append((run / "checkpoint.pt").read_bytes())
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = invoke("train", config, "--no-progress")
    assert_refused(result, f"cannot write {run / 'checkpoint.pt'}: no space left on device",
                   "the previous checkpoint.pt is unchanged", "--resume")
    assert (run / "checkpoint.pt").read_bytes() == previous[0]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the run continues
    assert_ok(invoke("train", config, "--resume", "--no-progress"))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2 and (run / "model.pt").is_file()


# ------------------------------------------------ 5. every numeric key is range-checked
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def _reals(lo: float | None = None, hi: float | None = None):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)


# key → strategy of values outside its valid range
BAD_FLOATS = {
    "optim.lr": _reals(hi=0.0),  # > 0
    "optim.momentum": _reals(hi=-1e-9) | _reals(lo=1.0),  # [0, 1)
    "optim.weight_decay": _reals(hi=-1e-9),  # >= 0
    "scheduler.gamma": _reals(hi=0.0) | _reals(lo=1.0 + 1e-9),  # (0, 1]
    "scheduler.warmup_fraction": _reals(hi=0.0) | _reals(lo=1.0),  # (0, 1)
    "data.partial_labels.both": _reals(hi=-1e-9) | _reals(lo=1.0 + 1e-9),  # [0, 1]
    "data.partial_labels.category": _reals(hi=-1e-9) | _reals(lo=1.0 + 1e-9),
    "loss.args.quantization_weight": st.nothing(),  # only NaN / inf are config errors
}
INT_RANGES = {  # key → (min, max or None)
    "seed": (0, 2**32 - 1), "data.partial_labels.seed": (0, 2**32 - 1),
    "train.epochs": (1, None), "train.batch_size": (2, None), "model.dim": (1, 65536),
    "data.image_size": (1, 4096), "scheduler.step_size": (1, None), "train.sampler.p": (2, None),
    "train.sampler.k": (2, None), "train.threads": (1, 1024),
    "train.max_batches_per_epoch": (1, None), "train.limit_train_samples": (1, None),
    "eval.batch_size": (1, None), "data.augment.crop_padding": (0, None),
}


@st.composite
def bad_numeric(draw):
    key = draw(st.sampled_from(sorted(BAD_FLOATS) + sorted(INT_RANGES)))
    if key in BAD_FLOATS:
        return key, draw(NONFINITE | BAD_FLOATS[key])
    lo, hi = INT_RANGES[key]
    too_big = st.integers(min_value=hi + 1) if hi is not None else st.integers(min_value=2**63)
    return key, draw(st.integers(max_value=lo - 1) | too_big | NONFINITE)


def _nested(key: str, value) -> dict:
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


@pytest.fixture(scope="module")
def not_a_run(workdir) -> Path:
    """A user's folder: a config that passes validation is refused there before any work."""
    folder = workdir / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    return folder


@HYPOTHESIS
@given(bad=bad_numeric(), via_file=st.booleans())
def test_out_of_range_and_non_finite_numbers_name_the_key(workdir, not_a_run, bad, via_file):
    key, value = bad
    if via_file:  # in the YAML file, or as --set KEY=VALUE
        data = tiny_config(workdir)
        for section, items in _nested(key, value).items():
            data[section] = ({**data.get(section, {}), **items}
                             if isinstance(items, dict) else items)
        if key.startswith("data.partial_labels"):
            data["data"]["partial_labels"] = {key.rsplit(".", 1)[1]: value}
        fd, name = tempfile.mkstemp(suffix=".yaml", dir=workdir)
        os.close(fd)
        Path(name).write_text(yaml.safe_dump(data))
        args = [name]
    else:
        text = yaml.safe_dump(value).splitlines()[0]  # .nan, -.inf, 1.0e+300, ...
        args = [write_config(workdir), "--set", f"{key}={text}"]
    result = invoke("train", *args, "--run-dir", not_a_run, "--no-progress")
    assert_refused(result, f"{key}:")


KEYS = sorted(INT_RANGES) + sorted(BAD_FLOATS) + [
    "name", "optim.name", "train.device", "data.classes", "model.backbone_args", "train"]


@HYPOTHESIS
@given(key=st.sampled_from(KEYS), garbage=st.text(max_size=30))
def test_garbage_in_set_is_an_error_not_a_traceback(workdir, not_a_run, key, garbage):
    result = invoke("train", write_config(workdir), "--set", f"{key}={garbage}",
                    "--run-dir", not_a_run, "--no-progress")
    # a value that happens to be valid stops at the (refused) run folder instead
    assert_refused(result)
    assert key in result.output or "not a hashlab run" in result.output, result.output


@HYPOTHESIS
@given(content=st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_garbage_config_files_are_errors_not_tracebacks(workdir, not_a_run, content):
    fd, name = tempfile.mkstemp(suffix=".yaml", dir=workdir)
    os.write(fd, content)
    os.close(fd)
    assert_refused(invoke("train", name, "--run-dir", not_a_run, "--no-progress"))


def test_resume_names_the_key_that_changed(interrupted):
    run, config = interrupted
    result = invoke("train", config, "--resume", "--run-dir", run, "--set", "optim.lr=0.01")
    assert_refused(result, "config differs", "optim.lr: 0.05 in the checkpoint, 0.01 now")


# ------------------------------------------------ 6. no litter from a killed run
def test_stale_temp_files_are_removed_when_the_run_starts_again(interrupted):
    run, config = interrupted
    stale = [".checkpoint.pt.k3j4h5g6.tmp", ".metrics.json.abc_1234.tmp"]
    kept = [".checkpoint.pt.tmp", "notes.tmp", ".mine.12345678.tmp.bak", ".x.short.tmp"]
    for name in stale + kept:
        (run / name).write_bytes(b"partial")
    (run / ".dir.abcdefgh.tmp").mkdir()  # only files are hashlab's temporaries
    assert_ok(invoke("train", config, "--resume", "--run-dir", run, "--no-progress"))
    assert not [name for name in stale if (run / name).exists()]
    assert all((run / name).read_bytes() == b"partial" for name in kept)
    assert (run / ".dir.abcdefgh.tmp").is_dir() and (run / "model.pt").is_file()


# ------------------------------------------------ 7b. names stay inside the output folder
@pytest.mark.parametrize("name", ["../../escape", "ABSOLUTE", "..", "a/b", "", " "])
def test_run_names_cannot_leave_the_output_folder(tmp_path, name):
    name = str(tmp_path / "escape") if name == "ABSOLUTE" else name
    (tmp_path / "cfg").mkdir()
    config = write_config(tmp_path / "cfg")  # runs go to tmp_path/cfg/runs
    result = invoke("train", config, "--name", name, "--no-progress")
    assert_refused(result, "name: must be a single folder name")
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "cfg" / "runs").exists()
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "name": name}))
    assert_refused(invoke("train", config), "name:")


@HYPOTHESIS
@given(name=st.sampled_from(["", " ", ".", "..", " .. "])
       | st.builds(lambda a, sep, b: a + sep + b, st.text(max_size=6),
                   st.sampled_from(["/", "\\", "/../", "\0"]), st.text(max_size=6)))
def test_any_name_with_a_separator_is_refused(workdir, name):
    assert_refused(invoke("train", write_config(workdir), "--name", name), "name:")


def test_a_numeric_name_is_a_name(tmp_path):
    config = write_config(tmp_path, train={**FAST, "epochs": 1})
    assert_ok(invoke("train", config, "--name", "2024", "--no-progress"))
    assert (tmp_path / "runs" / "2024" / "model.pt").is_file()


# ------------------------------------------------ 9. user files are never overwritten
def test_a_folder_that_is_not_a_run_is_refused_before_any_work(tmp_path, monkeypatch):
    engine = importlib.import_module("hashlab.train.engine")  # hashlab.train is also a function

    def no_work(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the run folder was checked")

    monkeypatch.setattr(engine, "load_dataset", no_work)
    config = write_config(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    (mine / "metrics.json").write_text('{"mine": true}\n')
    before = snapshot(mine)
    for extra in ([], ["--resume"]):
        result = invoke("train", config, "--run-dir", mine, *extra, "--no-progress")
        assert_refused(result, mine, "not a hashlab run")
        assert snapshot(mine) == before
    named = tmp_path / "runs" / "tiny"  # output_dir/NAME that a user filled
    named.mkdir(parents=True)
    (named / "results.csv").write_text("1,2\n")
    assert_refused(invoke("train", config, "--no-progress"), named, "results.csv")
    a_file = tmp_path / "file-run"
    a_file.write_text("x")
    assert_refused(invoke("train", config, "--run-dir", a_file), a_file, "not a folder")


@pytest.fixture
def no_work(monkeypatch):
    """Any output check that comes after loading the run fails the test."""
    import hashlab.encode
    import hashlab.eval.protocols

    def work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(hashlab.encode, "TrainedRun", work)
    monkeypatch.setattr(hashlab.eval.protocols, "read_index_source", work)


@pytest.mark.parametrize("command", [["encode", "RUN"], ["eval", "RUN"], ["search", "RUN",
                                                                            "--ids", "1"]])
def test_out_pointing_at_a_folder_is_refused_before_the_work(tmp_path, no_work, command):
    folder = tmp_path / "results"
    folder.mkdir()
    args = [tmp_path / "run" if a == "RUN" else a for a in command]
    assert_refused(invoke(*args, "--out", folder), folder, "is a folder")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_refused(invoke(*args, "--out", blocker / "out.json"), blocker, "not a folder")


def test_index_out_must_be_a_new_or_index_folder(tmp_path, no_work):
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    for out in (occupied, occupied / "keep.txt"):
        assert_refused(invoke("index", tmp_path / "run", "--out", out), out,
                       "not an index folder")
    assert_refused(invoke("index", tmp_path / "run", "--kind", "nope"), "--kind", "nope")


# ------------------------------------------------ resuming from a foreign checkpoint
def _older_format(state):
    del state["optimizer"]
    return state


def _other_structure(state):
    state["model"] = {k: torch.zeros(3, 3) for k in state["model"]}
    return state


@pytest.mark.parametrize("damage", [_older_format, _other_structure, lambda state: [1, 2]],
                         ids=["older-format", "other-structure", "not-a-dict"])
def test_resume_from_a_checkpoint_of_another_structure(interrupted, damage):
    run, config = interrupted
    ckpt = run / "checkpoint.pt"
    torch.save(damage(torch.load(ckpt, weights_only=True)), ckpt)
    before = snapshot(run)
    result = invoke("train", config, "--resume", "--run-dir", run, "--no-progress")
    assert_refused(result, ckpt)
    assert any(reason in result.output for reason in (
        "does not match this config/model", "not a hashlab checkpoint",
        "not a valid training checkpoint"))
    assert snapshot(run) == before
