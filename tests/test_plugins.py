"""A new loss, hasher and index kind, each written as one new module of a plug-in package,
work through the config, the CLI and the Python API with no other file touched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hashlab.cli import app
from hashlab.registry import FAMILIES, load_plugins
from tests.conftest import tiny_config

runner = CliRunner()
PLUGIN = "my_plugin"

CONTRIBUTING = Path(__file__).parent.parent / "docs" / "contributing.md"


def example_modules() -> dict[str, str]:
    """The code blocks of docs/contributing.md marked ``<!-- file: my_plugin/NAME.py -->``."""
    text = CONTRIBUTING.read_text()
    blocks = re.findall(r"<!-- file: my_plugin/(\w+\.py) -->\n```python\n(.*?)```", text, re.S)
    return dict(blocks)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The plug-in package on sys.path, imported once for the whole module."""
    import sys

    root = tmp_path_factory.mktemp("plugins")
    pkg = root / PLUGIN
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    modules = example_modules()
    assert {"scaled_ce.py", "median_threshold.py", "ivf_exact.py"} <= set(modules)
    for name, code in modules.items():
        (pkg / name).write_text(code)
    sys.path.insert(0, str(root))
    try:
        yield PLUGIN
    finally:
        sys.path.remove(str(root))


def test_new_loss_trains_from_the_config_and_the_cli(plugin, tmp_path):
    cfg = tiny_config(tmp_path, plugins=[plugin], train={"epochs": 2},
                      loss={"name": "scaled-ce", "args": {"scale": 3.0}})
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["train", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())["history"]
    assert len(metrics) == 2 and metrics[-1]["loss"] < metrics[0]["loss"]
    # the trained run rebuilds the plug-in loss with the configured argument
    from hashlab.encode import TrainedRun

    trained = TrainedRun(run)
    assert type(trained.loss_fn).__name__ == "ScaledCrossEntropy"
    assert trained.loss_fn.scale == 3.0
    result = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval" / "retrieval.json").read_text())
    assert report["metrics"]["binary"]["mAP@all"] > 0.3  # chance is ~0.1 on 10 classes
    # and `hashlab list` shows it, loaded with --plugin
    result = runner.invoke(app, ["--plugin", plugin, "list", "losses"])
    assert result.exit_code == 0, result.output
    assert "scaled-ce: Cross-entropy of a linear classifier" in result.output
    assert "scale=4.0" in result.output


def test_unknown_loss_is_a_config_error_naming_the_key(tmp_path):
    cfg = tiny_config(tmp_path, loss={"name": "no-such-loss"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert "loss.name" in result.output and "no-such-loss" in result.output
    result = runner.invoke(app, ["--plugin", "no_such_module_xyz", "list"])
    assert result.exit_code == 2 and "no_such_module_xyz" in result.output


def test_new_hasher_fits_by_name(plugin):
    load_plugins([plugin])
    from hashlab.hashers import make_hasher

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(200, 20)), rng.normal(size=(50, 20))
    hasher = make_hasher("median-threshold", n_bits=12).fit(X)
    # oracle: numpy's median and packbits with FAISS's (little-endian) bit order
    bits = Y[:, :12] > np.median(X[:, :12], axis=0)
    expected = np.packbits(bits, axis=1, bitorder="little")
    np.testing.assert_array_equal(hasher.transform(Y), expected)
    assert "median-threshold" in FAMILIES["hashers"]



def test_new_index_kind_searches_through_the_cli(plugin, tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": 1})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert runner.invoke(app, ["train", str(path), "--no-progress"]).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    result = runner.invoke(app, ["--plugin", plugin, "index", str(run), "--kind", "ivf-exact",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    index_dir = run / "index-train-ivf-exact"
    from hashlab.index import read_manifest

    assert read_manifest(index_dir)["factory"] == "BIVF16"
    # the kind probes every list, so searching it equals the exhaustive evaluation (the oracle)
    result = runner.invoke(app, ["--plugin", plugin, "eval", str(run), "--protocol", "retrieval",
                                 "--index", str(index_dir), "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(run), "--protocol", "retrieval", "--no-progress"])
    assert result.exit_code == 0, result.output
    through_index = json.loads((run / "eval" / "retrieval-index-ivf-exact.json").read_text())
    exhaustive = json.loads((run / "eval" / "retrieval.json").read_text())
    for key in ("mAP@all", "mAP@1000", "P@100"):
        assert through_index["metrics"]["binary"][key] == pytest.approx(
            exhaustive["metrics"]["binary"][key], abs=1e-12)
