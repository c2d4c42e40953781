from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hashlab.cli import app
from tests.conftest import assert_cli_search_is_brute_force, needs_fmnist, tiny_config

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["train"], ["encode"], ["eval"], ["demo"], ["presets"],
                                     ["index"], ["search"], ["list"], ["serve"], ["report"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _write_config(tmp_path, **sections):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, **sections)))
    return path


def test_train_encode_eval_round_trip(tmp_path):
    config = _write_config(tmp_path, train={"epochs": 2})
    result = runner.invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny"
    assert (run / "model.pt").exists()

    result = runner.invoke(app, ["encode", str(run), "--split", "test", "--out",
                                 str(tmp_path / "codes.npz"), "--no-progress"])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "codes.npz") as z:
        assert z["float"].shape == (360, 16) and z["bits"].shape == (360, 2)
        assert z["float"].dtype == np.float32 and z["bits"].dtype == np.uint8
        assert int(z["nbits"]) == 16 and z["labels"].shape == (360,)

    result = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "mAP@all" in result.output
    report = json.loads((run / "eval" / "retrieval.json").read_text())
    assert report["n_queries"] == 360 and report["n_database"] == 1437
    assert 0.0 <= report["metrics"]["binary"]["mAP@all"] <= 1.0

    # training the same name again is refused with a clear message, not a traceback
    result = runner.invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 2 and "already holds a run" in result.output


def test_bad_config_exits_with_the_key(tmp_path):
    config = _write_config(tmp_path, optim={"lrr": 0.1})
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2
    assert "optim.lrr: unknown key" in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "neither a file nor a preset" in result.output


def test_set_overrides_and_protocol_mismatch(tmp_path):
    config = _write_config(tmp_path)
    result = runner.invoke(app, ["train", str(config), "--set", "train.epochs=1", "--name", "one",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "one"
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 1
    result = runner.invoke(app, ["eval", str(run), "--protocol", "fmnist-retrieval"])
    assert result.exit_code == 2 and "needs a Fashion-MNIST run" in result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no finished model" in result.output


@needs_fmnist
def test_demo_end_to_end_on_fashion_mnist(tmp_path):
    """The demo's whole path on real data, shortened to a few batches."""
    run = tmp_path / "demo"
    short = ["--set", "train.epochs=1", "--set", "train.max_batches_per_epoch=20",
             "--set", "model.backbone_args={width: 8, feature_dim: 64}"]
    result = runner.invoke(app, ["demo", "--run-dir", str(run), "--no-progress", *short])
    assert result.exit_code == 0, result.output
    for row in ("float mAP@all", "64-bit mAP@all", "64-bit mAP@1000", "64-bit P@100",
                "precision within radius 2", "time taken"):
        assert row in result.output, row
    report = json.loads((run / "eval" / "demo.json").read_text())
    assert report["n_queries"] == 1000 and report["n_database"] == 60000
    # 20 batches of training already beat the chance level (0.1) by far
    assert report["metrics"]["binary"]["mAP@all"] > 0.3
    # re-running a finished demo re-evaluates it instead of training again
    again = runner.invoke(app, ["demo", "--run-dir", str(run), "--no-progress"])
    assert again.exit_code == 0 and "already holds a finished run" in again.output


def test_index_and_search_commands(tmp_path):
    from PIL import Image

    from hashlab.encode import TrainedRun
    from hashlab.index.codes import hamming_distances

    config = _write_config(tmp_path, train={"epochs": 1})
    assert runner.invoke(app, ["train", str(config), "--no-progress"]).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    result = runner.invoke(app, ["index", str(run), "--kind", "flat", "--no-progress"])
    assert result.exit_code == 0, result.output
    index_dir = run / "index-train-flat"
    assert (index_dir / "manifest.json").is_file() and (index_dir / "source.json").is_file()

    out = tmp_path / "hits.json"
    assert_cli_search_is_brute_force(runner, app, str(index_dir), run, out)
    train = TrainedRun(run).encode("train", progress=False)
    test = TrainedRun(run).encode("test", progress=False)

    # an image file is encoded like the dataset's own images
    ds = TrainedRun(run).load_split("test")
    Image.fromarray(ds.images[0]).save(tmp_path / "q.png")
    result = runner.invoke(app, ["search", str(index_dir), "--image", str(tmp_path / "q.png"),
                                 "--k", "3", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    expected = np.lexsort((np.arange(len(train)), hamming_distances(test.bits[:1], train.bits)[0]))
    assert json.loads(out.read_text())["results"][0]["ids"] == expected[:3].tolist()

    bad = runner.invoke(app, ["search", str(index_dir), "--ids", "99999"])
    assert bad.exit_code == 2 and "not in the train split" in bad.output
    bad = runner.invoke(app, ["search", str(index_dir), "--ids", "1", "--split", "test"])
    assert bad.exit_code == 2 and "exactly one of" in bad.output
    bad = runner.invoke(app, ["search", str(run)])
    assert bad.exit_code == 2 and "source.json" in bad.output

    # eval through a saved index: flat equals the exhaustive ranking; a hash table agrees
    # within its exact radius and ranks only what its buckets hold
    plain = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--no-progress"])
    assert plain.exit_code == 0, plain.output
    want = json.loads((run / "eval" / "retrieval.json").read_text())["metrics"]["binary"]
    got = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--index",
                              str(index_dir), "--no-progress"])
    assert got.exit_code == 0, got.output
    report = json.loads((run / "eval" / "retrieval-index-flat.json").read_text())
    assert report["index"]["kind"] == "flat"
    for key in ("mAP@all", "P@100", "P@r2"):
        assert report["metrics"]["binary"][key] == pytest.approx(want[key], abs=1e-12)
    assert runner.invoke(app, ["index", str(run), "--kind", "hash", "--no-progress"]).exit_code == 0
    got = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--index",
                              str(run / "index-train-hash"), "--no-progress"])
    assert got.exit_code == 0, got.output
    hashed = json.loads((run / "eval" / "retrieval-index-hash.json").read_text())["metrics"]
    assert hashed["binary"]["P@r2"] == pytest.approx(want["P@r2"], abs=1e-12)
    test_index = runner.invoke(app, ["index", str(run), "--split", "test", "--no-progress"])
    assert test_index.exit_code == 0
    bad = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--index",
                              str(run / "index-test-flat"), "--no-progress"])
    assert bad.exit_code == 2 and "holds the 'test' split" in bad.output
